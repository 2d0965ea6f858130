"""Certified Hessian eigenvalue bounds (weak convexity lambda, curvature beta) and the Lanczos estimate."""
import pytest
import torch

from certify.bounds.curvature import curvature_bound, curvature_estimate, weak_convexity
from certify.bounds.network import from_module
from certify.bounds.sets import InputSet
from proofs_checks.nets import NetSpec

C_ROW = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)


def _net(hidden=(10,), act="softplus", beta=2.0, seed=1):
    model = NetSpec(4, hidden, 3, act, beta, 2.0, seed).build()
    return model, from_module(model, (4,))


def _hessian_eigs(model, points, c_row=C_ROW):
    points = points.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((model(points) @ c_row).sum(), points, create_graph=True)
    hess = torch.stack([torch.autograd.grad(grad[:, i].sum(), points, retain_graph=True)[0] for i in range(points.shape[1])], 1)
    return torch.linalg.eigvalsh(hess)


def test_two_layer_matches_singla_feizi_theorem_3():
    _, net = _net()
    w1, v = net.weights[0], C_ROW @ net.weights[1]
    b = net.activations[0].beta
    neg = torch.linalg.eigvalsh(w1.T @ torch.diag(v.clamp_max(0) * b / 4) @ w1)[0]
    pos = torch.linalg.eigvalsh(w1.T @ torch.diag(v.clamp_min(0) * b / 4) @ w1)[-1]
    lam, beta = weak_convexity(net, C_ROW), curvature_bound(net, C_ROW)
    assert float(lam.value) == pytest.approx(float(-neg), rel=1e-10) and lam.value >= -neg
    assert float(beta.value) == pytest.approx(float(max(pos, -neg)), rel=1e-10)
    assert lam.details["max_eigenvalue_upper"] >= pos


@pytest.mark.parametrize("hidden", [(10,), (8, 6)])
def test_bounds_hold_at_sampled_points_globally_and_on_a_region(hidden):
    model, net = _net(hidden)
    g = torch.Generator().manual_seed(0)
    eig = _hessian_eigs(model, 3 * torch.randn(300, 4, generator=g, dtype=torch.float64))
    lam, beta = weak_convexity(net, C_ROW), curvature_bound(net, C_ROW)
    assert -eig[:, 0].min() <= lam.value and eig.abs().max() <= beta.value
    center = torch.randn(2, 4, generator=g, dtype=torch.float64)
    region = InputSet.build(center, 0.2, 2)
    lam_r, beta_r = weak_convexity(net, C_ROW, region), curvature_bound(net, C_ROW, region)
    assert lam_r.value.shape == (2,) and (lam_r.value <= lam.value + 1e-12).all() and (beta_r.value <= beta.value + 1e-12).all()
    for n in range(2):
        offsets = torch.nn.functional.normalize(torch.randn(200, 4, generator=g, dtype=torch.float64), dim=-1)
        inside = center[n] + 0.2 * offsets * torch.rand(200, 1, generator=g, dtype=torch.float64)
        eig = _hessian_eigs(model, inside)
        assert -eig[:, 0].min() <= lam_r.value[n] and eig.abs().max() <= beta_r.value[n]


def test_rows_and_region_shapes():
    _, net = _net()
    rows = torch.stack([C_ROW, torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64)])
    assert weak_convexity(net, rows).value.shape == (2,)
    region = InputSet.build(torch.zeros(3, 4, dtype=torch.float64), 0.1, "inf")
    assert curvature_bound(net, rows, region).value.shape == (3, 2)
    assert torch.allclose(weak_convexity(net, rows).value[0], weak_convexity(net, C_ROW).value)


def test_relu_is_refused_unless_the_region_is_linear():
    _, net = _net(act="relu")
    refused = weak_convexity(net, C_ROW)
    assert refused.refused and "not weakly convex" in refused.reason and "smooth" in refused.reason
    assert curvature_bound(net, C_ROW).refused
    x = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    z = net.pre_activations(x)[0]
    tiny = float(z.abs().min()) / (10 * float(torch.linalg.matrix_norm(net.weights[0], ord=2)))
    stable = weak_convexity(net, C_ROW, InputSet.build(x, tiny, 2))
    assert not stable.refused and (stable.value == 0).all()


def test_lanczos_estimate_is_exact_at_a_point_and_below_the_certificate():
    model, net = _net((8, 6))
    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    estimate = curvature_estimate(net, x, C_ROW, steps=4)
    eig = _hessian_eigs(model, x)
    assert torch.allclose(estimate.details["min_eigenvalue"], eig[:, 0], atol=1e-9)
    assert torch.allclose(estimate.details["max_eigenvalue"], eig[:, -1], atol=1e-9)
    around = curvature_estimate(model, x, C_ROW, radius=1.0, samples=16)
    assert (around.value >= estimate.value - 1e-9).all()
    assert (around.value <= weak_convexity(net, C_ROW).value).all()
    assert estimate.kind.value == "estimated"
