"""Interpretation attacks: validity of every returned point, strength against random noise, the gradients
the attack follows, batching and bad input."""
import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certify.attacks.interpretation import AttackResult, interpretation_attack, random_perturbation, topk_mass
from certify.errors import InvalidInputError, ModelModeError, UnsupportedError, UsageError
from certify.explain import Gradient, IntegratedGradients, LagrangeDual, MoreauGrad, SmoothGrad
from certify.metrics import normalized_l2_distance
from certify.models import zoo

ZOO = [
    "digits-softplus-mlp", "digits-relu-mlp", "digits-softplus-cnn", "breast-cancer-softplus-mlp", "moons-softplus-mlp"
]
EXPLAINERS = {
    "gradient": lambda m: Gradient(m),
    "ig": lambda m: IntegratedGradients(m, n_steps=8),
    "smoothgrad": lambda m: SmoothGrad(m, sigma=0.1, samples=8),
    "moreaugrad": lambda m: MoreauGrad(m, rho=0.2, max_iter=200),
    "sparse-moreaugrad": lambda m: MoreauGrad(m, rho=0.2, sparsity=0.2, max_iter=200),
    "group-moreaugrad": lambda m: MoreauGrad(m, rho=0.2, sparsity=0.2, group_size=2, max_iter=200),
}


def _load(name):
    model, data = zoo.load(name)
    return model, data


def _check_returned(result: AttackResult, model, x, eps, lo, hi):
    """Independent re-check of what the attack returned."""
    x64, p64 = x.double(), result.perturbed.double()
    assert torch.all(torch.linalg.vector_norm((p64 - x64).flatten(1), dim=1) <= eps)
    assert torch.all(result.perturbed >= lo) and torch.all(result.perturbed <= hi)
    with torch.no_grad():
        assert torch.equal(model(result.perturbed).argmax(1), model(x).argmax(1))
        model64 = copy.deepcopy(model).double()
        assert torch.equal(model64(p64).argmax(1), model64(x64).argmax(1))
    assert torch.equal(result.perturbed - x, result.delta)
    assert bool(result.valid.all())
    # an example without success is returned unchanged
    assert torch.all(result.delta[~result.success] == 0)


@settings(max_examples=12, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(
    name=st.sampled_from(ZOO),
    method=st.sampled_from(sorted(EXPLAINERS)),
    eps=st.floats(1e-3, 4.0),
    start=st.integers(0, 40),
    seed=st.integers(0, 2**16),
    objective=st.sampled_from(["topk-mass", "distance"]),
)
def test_attack_never_flips_the_class_nor_leaves_the_ball_or_domain(name, method, eps, start, seed, objective):
    model, data = _load(name)
    x = data.x_test[start : start + 4]
    explainer = EXPLAINERS[method](model)
    result = interpretation_attack(
        explainer, x, eps, k=0.25, steps=4, restarts=2, domain=data.domain, seed=seed, objective=objective
    )
    lo, hi = data.domain
    _check_returned(result, model, x, eps, lo, hi)
    assert torch.all(result.objective[result.success] < result.initial_objective[result.success])
    baseline = random_perturbation(explainer, x, eps, domain=data.domain, seed=seed, k=0.25)
    _check_returned(baseline, model, x, eps, lo, hi)


def test_attack_beats_random_noise_on_gradient_explanations():
    model, data = _load("digits-softplus-mlp")
    x, eps = data.x_test[:20], 1.0
    explainer = Gradient(model)
    attack = interpretation_attack(explainer, x, eps, k=0.2, steps=20, restarts=2, domain=data.domain)
    noise = random_perturbation(explainer, x, eps, domain=data.domain, k=0.2)
    assert attack.success.float().mean() >= 0.9  # it finds something on (almost) every input
    assert attack.topk_intersection.mean() < noise.topk_intersection.mean() - 0.02
    assert attack.objective.mean() < noise.objective.mean()
    # the returned explanation is the explainer's own at the returned point
    assert torch.allclose(attack.attributions, explainer.attribute(attack.perturbed), atol=1e-6)
    assert torch.allclose(attack.objective, topk_mass(attack.attributions.double(), _mask(attack, 0.2)))
    far = interpretation_attack(explainer, x, eps, steps=20, restarts=2, domain=data.domain, objective="distance")
    moved = normalized_l2_distance(far.original_attributions, far.attributions)
    assert torch.allclose(far.objective, -moved) and far.success.float().mean() >= 0.9
    assert moved.mean() > normalized_l2_distance(noise.original_attributions, noise.attributions).mean() + 0.02


def _mask(result, k):
    flat = result.original_attributions.abs().flatten(1)
    count = int(torch.tensor(k * flat.shape[1]).ceil())
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :count]
    return torch.zeros_like(flat).scatter_(1, order, 1.0)


@pytest.mark.parametrize("method", sorted(EXPLAINERS))
@pytest.mark.parametrize("unrolled", [10, 30])
def test_the_attack_follows_the_derivative_of_the_real_explanation(method, unrolled):
    """The derivative of J that the attack follows (double backprop, or the unrolled MoreauGrad surrogate)
    matches central differences of J computed on the real explanation; the surrogate's error shrinks
    geometrically with the number of unrolled steps (measured ~1e-3 relative at 10 steps, ~1e-6 at 20)."""
    from certify.attacks import interpretation as ia

    model, data = _load("digits-softplus-mlp")
    model64 = copy.deepcopy(model).double()
    x = data.x_test[:3].double()
    explainer = EXPLAINERS[method](model64)
    if isinstance(explainer, MoreauGrad):
        explainer = MoreauGrad(model64, rho=0.2, sparsity=explainer.sparsity, group_size=explainer.group_size,
                               tol=1e-11, max_iter=5000)
    rows, target = torch.arange(3), model64(x).argmax(1)
    oracle = ia._Differentiable(explainer, x, 0, unrolled)
    value = oracle.explain(x, target, rows)
    mask = ia._topk_mask(value, 0.2)
    point = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(topk_mass(oracle.differentiable(point, target, rows, value), mask).sum(), point)
    # IG_i = x_i * (...) vanishes at the zero pixels, where |IG_i| has a kink: central differences err by O(h)
    h = 1e-8 if isinstance(explainer, IntegratedGradients) else 1e-5
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    def objective(point):
        return topk_mass(oracle.explain(point, target, rows), mask)

    fd = (objective(x + h * v) - objective(x - h * v)) / (2 * h)
    ad = (grad * v).flatten(1).sum(1)
    exact = not isinstance(explainer, MoreauGrad)
    rtol = 1e-5 if exact or unrolled == 30 else 1e-2
    assert torch.allclose(ad, fd, rtol=rtol, atol=1e-9), (ad, fd)


def test_relu_gradient_explanations_give_the_attack_zero_gradient():
    model, data = _load("digits-relu-mlp")
    x = data.x_test[:5]
    result = interpretation_attack(Gradient(model), x, 0.5, steps=6, restarts=1, domain=data.domain)
    assert bool(result.zero_gradient.all())
    # restart 0 starts at x and can only move by the random-search fallback
    assert bool(result.success.any()) and bool(result.valid.all())
    softplus, _ = _load("digits-softplus-mlp")
    assert not bool(interpretation_attack(Gradient(softplus), x, 0.5, steps=3, restarts=1).zero_gradient.any())


@pytest.mark.parametrize("method", ["gradient", "moreaugrad"])
def test_batched_equals_per_example(method):
    model, data = _load("digits-softplus-mlp")
    model64 = copy.deepcopy(model).double()
    x = data.x_test[10:14].double()
    explainer = EXPLAINERS[method](model64)
    kwargs = dict(eps=0.8, k=6, steps=6, restarts=1, domain=data.domain)
    batched = interpretation_attack(explainer, x, **kwargs)
    for i in range(x.shape[0]):
        single = interpretation_attack(explainer, x[i : i + 1], **kwargs)
        assert bool(single.success[0]) == bool(batched.success[i])
        assert torch.allclose(single.perturbed[0], batched.perturbed[i], atol=1e-6)
        assert torch.allclose(single.objective[0], batched.objective[i], atol=1e-6)


def test_same_seed_same_result_and_restarts_use_the_seed():
    model, data = _load("digits-softplus-mlp")
    x = data.x_test[:4]
    explainer = SmoothGrad(model, sigma=0.1, samples=4, seed=None)
    first = interpretation_attack(explainer, x, 1.0, steps=3, restarts=3, seed=5)
    again = interpretation_attack(explainer, x, 1.0, steps=3, restarts=3, seed=5)
    assert torch.equal(first.perturbed, again.perturbed) and torch.equal(first.attributions, again.attributions)
    a = random_perturbation(model, x, 1.0, seed=1)
    b = random_perturbation(model, x, 1.0, seed=2)
    assert not torch.equal(a.perturbed, b.perturbed)
    assert a.attributions is None and a.objective is None


def test_random_perturbation_lies_on_the_sphere_and_resets_where_every_draw_flips():
    model, data = _load("digits-softplus-mlp")
    x = data.x_test[:30]
    near = random_perturbation(model, x, 0.5, seed=0)
    assert bool(near.success.all())
    assert torch.allclose(near.delta_norm, torch.full_like(near.delta_norm, 0.5), rtol=1e-5)
    far = random_perturbation(model, x, 30.0, seed=0, tries=1)  # a huge radius flips most inputs
    assert bool((~far.success).any()) and bool(far.valid.all())
    assert torch.all(far.delta[~far.success] == 0) and torch.all(far.delta_norm[far.success] <= 30.0)


def test_bad_input_errors():
    model, data = _load("digits-softplus-mlp")
    x = data.x_test[:2]
    g = Gradient(model)
    for eps in (0.0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(UsageError):
            interpretation_attack(g, x, eps)
    with pytest.raises(UsageError):
        interpretation_attack(g, x, 1e-9)  # below the float32 resolution
    bad = [{"steps": -1}, {"restarts": 0}, {"surrogate_steps": 0}, {"step_size": 0.0}, {"objective": "ssim"},
           {"k": 0}, {"k": 1.5}, {"k": 65}, {"k": True}]
    for kwargs in bad:
        with pytest.raises(UsageError):
            interpretation_attack(g, x, 1.0, **kwargs)
    with pytest.raises(InvalidInputError):
        interpretation_attack(g, x + 2.0, 1.0, domain=data.domain)  # outside the box
    with pytest.raises(InvalidInputError):
        interpretation_attack(g, x, 1.0, domain=(torch.zeros(3), 1.0))
    with pytest.raises(InvalidInputError):
        interpretation_attack(g, x, 1.0, domain=(1.0, 0.0))
    with pytest.raises(InvalidInputError):
        interpretation_attack(g, torch.full_like(x, float("nan")), 1.0)
    with pytest.raises(UnsupportedError):
        interpretation_attack(LagrangeDual(model), x, 1.0)
    with pytest.raises(UsageError):
        interpretation_attack(model, x, 1.0)
    with pytest.raises(UsageError):
        random_perturbation("model", x, 1.0)
    with pytest.raises(UsageError):
        random_perturbation(model, x, 1.0, tries=0)
    trained = copy.deepcopy(model).train()
    with pytest.raises(ModelModeError):
        interpretation_attack(Gradient(trained), x, 1.0)


def test_rounding_margin_keeps_float32_points_in_the_ball():
    """For inputs of large norm, x + d in float32 is off by ulps of x; the step radius leaves room for that."""
    model, data = _load("moons-softplus-mlp")
    x, eps = data.x_test[:16] * 3000.0, 0.05  # ulp(3000) ~ 2.4e-4: unguarded points would leave the ball
    noise = random_perturbation(model, x, eps, seed=0)
    assert bool(noise.in_ball.all()) and torch.all(noise.delta_norm <= eps)
    assert not bool(noise.rejected.any())  # no candidate had to be reset by the final float64 check
    assert torch.all(noise.delta_norm[noise.success] > 0.9 * eps)
    attack = interpretation_attack(Gradient(model), x, eps, k=1, steps=5, restarts=2)
    assert torch.all(torch.linalg.vector_norm((attack.perturbed.double() - x.double()), dim=1) <= eps)
    assert not bool(attack.rejected.any())


def test_smoothed_moreaugrad_surrogate_moves_and_stays_valid():
    model, data = _load("digits-softplus-mlp")
    x = data.x_test[:3]
    explainer = MoreauGrad(model, rho=0.2, smoothing_sigma=0.1, samples=8, max_iter=50, tol=1e-3, seed=0)
    result = interpretation_attack(explainer, x, 0.5, steps=2, restarts=1, domain=data.domain, surrogate_steps=3)
    assert not bool(result.zero_gradient.any()) and bool(result.valid.all())
    assert torch.all(result.objective <= result.initial_objective)


def test_attacks_work_inside_inference_mode():
    model, data = _load("digits-softplus-mlp")
    x = data.x_test[:2]
    explainer = Gradient(model)
    expected = interpretation_attack(explainer, x, 0.5, steps=3, restarts=1, domain=data.domain)
    expected_noise = random_perturbation(explainer, x, 0.5, seed=0)
    with torch.inference_mode():
        inside = x.clone()
        attack = interpretation_attack(explainer, inside, 0.5, steps=3, restarts=1, domain=data.domain)
        noise = random_perturbation(explainer, inside, 0.5, seed=0)
    assert torch.equal(attack.perturbed, expected.perturbed) and torch.equal(noise.perturbed, expected_noise.perturbed)
