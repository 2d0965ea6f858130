"""MoreauGrad (the solver layer): closed forms, sign, Algorithm 1, batching, divergence, bad input, smoothed mode.
Its certified solver-error bound is issued above this layer: tests/certificates/issuers/test_issue_moreaugrad.py."""
import copy
import math

import pytest
import torch
from torch import nn

from certify.errors import UsageError
from certify.explain import MoreauGrad
from certify.explain.prox import group_soft_threshold, soft_threshold
from certify.scores import score_gradients


class Quartic(nn.Module):
    """f(x) = x_1^4 / 4 + w^T x: curvature 3 x_1^2 grows with |x_1| (fixed steps diverge far out)."""

    def forward(self, x):
        return (x[:, 0] ** 4 / 4 + x.sum(dim=1)).unsqueeze(1)


def _linear(n: int, seed: int = 0) -> tuple[nn.Linear, torch.Tensor]:
    layer = nn.Linear(n, 3).double().eval()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(3, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return layer, layer.weight.detach()


def _softplus_net(inputs: int, width: int, seed: int, scale: float = 1.0, beta: float = 1.0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(inputs, width), nn.Softplus(beta), nn.Linear(width, 3)).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    return net


@pytest.mark.parametrize("method", ["accelerated", "fixed-step"])
def test_linear_score_gives_its_weights_and_sparse_gives_soft_threshold(method):
    model, w = _linear(6)
    x = torch.randn(4, 6, dtype=torch.float64)
    mg = MoreauGrad(model, rho=0.7, tol=1e-10, method=method, max_iter=2000).attribute(x, 1)
    assert torch.allclose(mg, w[1].expand_as(mg), atol=1e-6)
    smg = MoreauGrad(model, rho=0.7, sparsity=0.8, tol=1e-10, method=method, max_iter=2000).attribute(x, 1)
    assert torch.allclose(smg, soft_threshold(w[1], 0.8).expand_as(smg), atol=1e-6)
    gsmg = MoreauGrad(model, rho=0.7, sparsity=0.8, group_size=3, tol=1e-10, method=method, max_iter=2000).attribute(x, 1)
    assert torch.allclose(gsmg, group_soft_threshold(w[1:2], 0.8, 3).expand_as(gsmg), atol=1e-6)


def test_quadratic_score_closed_form():
    a = torch.tensor([[2.0, 0.5], [0.5, -0.8]], dtype=torch.float64)  # I + rho A > 0 for rho = 1

    class Quadratic(nn.Module):
        def forward(self, x):
            return 0.5 * (x * (x @ a)).sum(dim=1, keepdim=True)

    x = torch.randn(5, 2, dtype=torch.float64)
    mg = MoreauGrad(Quadratic().eval(), rho=1.0, tol=1e-10, max_iter=5000).attribute(x, 0)
    expected = torch.linalg.solve(torch.eye(2, dtype=torch.float64) + a, a @ x.T).T
    assert torch.allclose(mg, expected, atol=1e-6)


def test_sign_follows_the_gradient_as_rho_goes_to_zero(digits_mlp):
    model, data = digits_mlp
    model64 = copy.deepcopy(model).double()
    x = data.x_test[:4].double()
    target = torch.tensor([0, 1, 2, 3])
    grad = score_gradients(model64, x, target)[1]
    for rho, tol in ((1e-2, 1e-3), (1e-4, 1e-5)):
        mg = MoreauGrad(model64, rho=rho, tol=1e-10).attribute(x, target)
        assert float((mg - grad).norm() / grad.norm()) < 20 * rho


def test_fixed_step_is_algorithm_1_exactly():
    net = _softplus_net(5, 8, seed=3)
    x = torch.randn(2, 5, dtype=torch.float64)
    rho, gamma, eta, steps = 0.8, 0.1, 0.05, 25
    explanation = MoreauGrad(net, rho=rho, sparsity=eta, step=gamma, max_iter=steps, tol=1e-300,
                             method="fixed-step").explain(x, 0)
    for i in range(2):  # Algorithm 1, one example at a time: x_{t+1} = x + ST_{gamma eta}(x_t - gamma (g_t + (x_t - x)/rho) - x)
        xt = x[i : i + 1].clone()
        for _ in range(steps):
            g = score_gradients(net, xt, torch.zeros(1, dtype=torch.long))[1]
            xt = x[i : i + 1] + soft_threshold(xt - gamma * (g + (xt - x[i : i + 1]) / rho) - x[i : i + 1], gamma * eta)
        paper_output = (xt - x[i : i + 1]) / rho  # Algorithm 1's sign
        assert torch.allclose(explanation.attributions[i], -paper_output[0], atol=1e-12)
    assert explanation.diagnostics["iterations"].tolist() == [steps, steps]
    assert explanation.diagnostics["gradient_evaluations"].tolist() == [steps + 1, steps + 1]


def test_accelerated_is_fista_with_secant_steps_and_gradient_restart():
    """The accelerated method against its documented iteration, one example at a time: gamma_0 = rho, then
    gamma_k = 1/(1/rho + beta_k) with beta_k the largest secant ||g_j - g_{j-1}|| / ||y_j - y_{j-1}|| so far,
    FISTA's weights (t_{a-1} - 1)/t_a after a steps without restart, restart when <grad s(y), u_{k+1} - u_k> > 0,
    and the evaluated point of smallest residual returned."""
    net = _softplus_net(5, 8, seed=5, scale=6.0)
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    rho, steps = 1.0, 15  # residuals stay far above rounding, so that the comparison is meaningful
    explanation = MoreauGrad(net, rho=rho, max_iter=steps, tol=1e-300).explain(x, 0)
    t_seq = [1.0]
    for _ in range(steps + 1):
        t_seq.append((1 + math.sqrt(1 + 4 * t_seq[-1] ** 2)) / 2)
    total_restarts = 0
    for i in range(3):
        y = u = torch.zeros(1, 5, dtype=torch.float64)
        beta, age, best, restarts = 0.0, 0, (math.inf, None), 0
        for k in range(steps + 1):
            g = score_gradients(net, x[i : i + 1] + y, torch.zeros(1, dtype=torch.long))[1]
            s = g + y / rho
            if float(s.norm()) < best[0]:
                best = (float(s.norm()), y)
            if k == steps:
                break
            if k > 0:
                beta = max(beta, float((g - g_prev).norm() / (y - y_prev).norm()))
            u_next = y - (rho if k == 0 else 1 / (1 / rho + beta)) * s
            age = 0 if float((s * (u_next - u)).sum()) > 0 else age + 1
            restarts += k > 0 and age == 0
            weight = (t_seq[age - 1] - 1) / t_seq[age] if age else 0.0
            y_prev, g_prev, u, y = y, g, u_next, u_next + weight * (u_next - u)
        assert torch.allclose(explanation.attributions[i], -best[1][0] / rho, rtol=0, atol=1e-10)
        assert best[0] > 1e-6
        assert math.isclose(float(explanation.diagnostics["residual_norm"][i]), best[0], rel_tol=1e-8)
        total_restarts += restarts
    assert total_restarts > 0  # the restart rule was exercised


@pytest.mark.parametrize("kw", [{}, {"sparsity": 0.05}, {"sparsity": 0.05, "group_size": 2}, {"method": "fixed-step"}])
def test_batched_equals_per_example(kw):
    net = _softplus_net(6, 10, seed=4, scale=2.0)
    x = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 1, 2, 0, 1])
    solver = MoreauGrad(net, rho=0.5, tol=1e-8, **kw)
    batched = solver.explain(x, target)
    for i in range(5):
        single = solver.explain(x[i : i + 1], target[i : i + 1])
        assert torch.allclose(batched.attributions[i], single.attributions[0], atol=1e-12)
        assert batched.diagnostics["iterations"][i] == single.diagnostics["iterations"][0]


def test_finished_examples_stop_costing_gradients():
    net = _softplus_net(4, 8, seed=5)
    x = torch.cat([torch.zeros(1, 4), 5 * torch.randn(3, 4)]).double()
    batch_sizes = []
    hook = net[0].register_forward_hook(lambda m, inp, out: batch_sizes.append(inp[0].shape[0]))
    explanation = MoreauGrad(net, rho=1.0, tol=1e-9, method="fixed-step", max_iter=3000).explain(x, 0)
    hook.remove()
    evals = explanation.diagnostics["gradient_evaluations"]
    assert bool(explanation.diagnostics["converged"].all())
    assert torch.equal(evals, explanation.diagnostics["iterations"] + 1)
    assert batch_sizes[1:] == sorted(batch_sizes[1:], reverse=True)  # the active set only shrinks
    assert sum(batch_sizes[1:]) == int(evals.sum())  # one row per example per evaluation, none after it finished


def test_accelerated_needs_fewer_gradients_than_fixed_step(digits_mlp):
    model, data = digits_mlp
    model64 = copy.deepcopy(model).double()
    x = data.x_test[:2].double()
    fast = MoreauGrad(model64, rho=1.0, tol=1e-6).explain(x)
    slow = MoreauGrad(model64, rho=1.0, tol=1e-6, step=0.1, method="fixed-step", max_iter=2000).explain(x)
    assert bool(fast.diagnostics["converged"].all()) and bool(slow.diagnostics["converged"].all())
    assert fast.diagnostics["gradient_evaluations"].sum() * 3 <= slow.diagnostics["gradient_evaluations"].sum()
    assert (fast.attributions - slow.attributions).norm(dim=1).max() < 1e-5


def test_divergence_is_reported_per_example_never_as_an_explanation():
    x = torch.tensor([[0.1, 0.0], [10.0, 0.0]], dtype=torch.float64)
    solver = MoreauGrad(Quartic().eval(), rho=1.0, step=0.1, method="fixed-step", max_iter=200, tol=1e-8)
    explanation = solver.explain(x, 0)
    d = explanation.diagnostics
    assert d["diverged"].tolist() == [False, True]
    assert d["converged"].tolist() == [True, False]
    assert torch.isfinite(explanation.attributions[0]).all() and torch.isnan(explanation.attributions[1]).all()
    assert math.isfinite(float(d["residual_norm"][0])) and math.isinf(float(d["residual_norm"][1]))


def test_device_and_dtype_follow_the_input(digits_mlp):
    model, data = digits_mlp
    x = data.x_test[:3]
    explanation = MoreauGrad(model, rho=0.5, tol=1e-4).explain(x)
    assert explanation.attributions.dtype == x.dtype and explanation.attributions.device == x.device
    for value in explanation.diagnostics.values():
        assert value.device == x.device and value.shape[0] == 3


def test_group_mode_on_images_requires_a_dividing_group_size():
    from certify.models import zoo

    model, data = zoo.load("digits-softplus-cnn")
    x = data.x_test[:2]
    explanation = MoreauGrad(model, sparsity=0.1, group_size=2, tol=1e-2, max_iter=100).explain(x)
    blocks = explanation.attributions.reshape(2, 1, 4, 2, 4, 2).abs().sum(dim=(1, 3, 5))
    patch_zero = explanation.attributions.reshape(2, 1, 4, 2, 4, 2).eq(0).all(dim=3).all(dim=4).all(dim=1)
    assert torch.equal(blocks == 0, patch_zero)  # whole patches vanish together
    with pytest.raises(UsageError, match="does not divide"):
        MoreauGrad(model, sparsity=0.1, group_size=3).explain(x)


@pytest.mark.parametrize(
    "kw",
    [{"rho": 0}, {"rho": -1.0}, {"sparsity": -0.1}, {"smoothing_sigma": -1.0}, {"samples": 0}, {"tol": 0.0},
     {"tol": -1e-3}, {"max_iter": 0}, {"step": 0.0}, {"method": "newton"}, {"group_size": 0}, {"rho": math.nan}],
)
def test_bad_parameters_are_refused(kw):
    model, _ = _linear(4)
    with pytest.raises(UsageError):
        MoreauGrad(model, **kw)


def test_smoothed_mode_is_seeded_and_exact_for_a_linear_score():
    model, w = _linear(5)
    x = torch.randn(3, 5, dtype=torch.float64)
    solver = MoreauGrad(model, rho=1.0, smoothing_sigma=0.5, samples=8, tol=1e-6, seed=0)
    first, second = solver.explain(x, 2), solver.explain(x, 2)
    assert torch.equal(first.attributions, second.attributions)
    assert torch.allclose(first.attributions, w[2].expand_as(first.attributions), atol=1e-6)  # E grad of linear = w


def test_smoothed_mode_stops_on_a_residual_estimate(digits_mlp):
    model, data = digits_mlp
    solver = MoreauGrad(model, rho=1.0, smoothing_sigma=0.1, samples=8, tol=5e-2, max_iter=200, seed=1)
    explanation = solver.explain(data.x_test[:4])
    d = explanation.diagnostics
    assert bool(d["converged"].all())
    assert bool((d["gradient_evaluations"] >= 8 * (d["iterations"] + 1)).all())
    assert bool((d["residual_norm"] <= 5e-2).all())


def test_group_size_without_sparsity_is_a_usage_error():
    """group_size alone used to be ignored silently (penalty 'none') while the certificate said 'group size 2'."""
    with pytest.raises(UsageError, match="needs sparsity > 0"):
        MoreauGrad(nn.Sequential(nn.Linear(4, 2)), rho=0.1, group_size=2)


def test_work_budget_caps_the_gradient_evaluations_in_deterministic_mode():
    net = _softplus_net(5, 8, seed=6)
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    kw = dict(rho=0.5, tol=1e-300, method="fixed-step")  # linear convergence: the tolerance stays out of reach
    budgeted = MoreauGrad(net, max_evaluations=17, **kw).explain(x, 0)
    by_iterations = MoreauGrad(net, max_iter=16, **kw).explain(x, 0)
    assert budgeted.diagnostics["gradient_evaluations"].tolist() == [17, 17, 17]
    assert budgeted.diagnostics["iterations"].tolist() == [16, 16, 16]
    assert torch.equal(budgeted.attributions, by_iterations.attributions)
    assert budgeted.params["max_evaluations"] == 17


def test_work_budget_caps_the_sample_growth_of_the_smoothed_mode(digits_mlp):
    model, data = digits_mlp
    x = data.x_test[:4]
    kw = dict(rho=1.0, smoothing_sigma=0.1, samples=8, tol=1e-6, max_iter=200, seed=2)
    free = MoreauGrad(model, **kw).explain(x).diagnostics
    assert int(free["final_samples"][0]) > 8  # the tolerance sits below the noise floor: the sample grows
    capped = MoreauGrad(model, max_evaluations=100, **kw).explain(x).diagnostics
    assert capped["gradient_evaluations"].tolist() == [100] * 4  # the last iteration draws what is left
    assert int(free["gradient_evaluations"][0]) > 100
    assert not bool(capped["converged"].any())
    assert bool(torch.isfinite(capped["residual_norm"]).all())


@pytest.mark.parametrize("kw", [{"max_evaluations": 0}, {"max_evaluations": 2.5},
                                {"max_evaluations": 7, "smoothing_sigma": 0.1, "samples": 8}])
def test_bad_work_budgets_are_refused(kw):
    model, _ = _linear(4)
    with pytest.raises(UsageError, match="max_evaluations"):
        MoreauGrad(model, **kw)
