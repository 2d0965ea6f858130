"""Prox evidence for any denoiser (certify.inverse.evidence): plain MLPs are refuted with a rigorous cycle,
LPNs and symmetric PSD linear maps show no violation, non-symmetric and indefinite maps are caught, and the
float64 error bound of a cycle sum is small yet conservative."""
import math

import pytest
import torch
from torch import nn

from certify.errors import InvalidInputError, UsageError
from certify.inverse.evidence import (
    F64,
    U32,
    adversarial_jacobian_search,
    check_cycle,
    cycle_error_bound,
    cyclic_monotonicity,
    exact_cycle_sum,
    jacobian_evidence,
    prox_evidence,
    sample_points,
)
from certify.inverse.lpn import LPN

N = 12


def _mlp(seed: int = 0, act: nn.Module | None = None) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(N, 32), act or nn.ReLU(), nn.Linear(32, N))


def _lpn(seed: int = 0, alpha: float = 0.1) -> LPN:
    torch.manual_seed(seed)
    model = LPN(N, hidden=16, layers=3, alpha=alpha)
    with torch.no_grad():
        for _, weight in model.constrained():
            weight.uniform_(-0.2, 0.5)
    model.project_()
    return model


def _points(count: int = 8, seed: int = 0) -> torch.Tensor:
    data = torch.rand(20, N, generator=torch.Generator().manual_seed(seed))
    return sample_points(data, sigma=0.1, count=count, seed=seed)


def _linear(M: torch.Tensor):
    return lambda y: y @ M.T


def _exact_check(f, witness: torch.Tensor) -> float:
    """The exact rational sum of the witness's float64 values of f (a fresh evaluation)."""
    pts = witness.reshape(witness.shape[0], -1).to(F64)
    with torch.no_grad():
        fv = f(pts) if not isinstance(f, nn.Module) else f.double()(pts)
    return float(exact_cycle_sum(fv, pts))


def test_random_mlp_is_refuted_by_a_cycle_beyond_its_error_bound():
    mlp = _mlp(0)
    ev = cyclic_monotonicity(mlp, _points(), cycles=16, seed=0)
    assert ev.verdict == "violation" and ev.kind == "proof" and ev.proof == "rigorous"
    assert ev.details["sum"] > 10 * ev.details["sum_bound"] > 0
    assert ev.value > 0 and ev.error_bound < 1e-6 * ev.value
    # re-check: the exact rational sum of fresh float64 values, and check_cycle, agree
    import copy

    exact = _exact_check(copy.deepcopy(mlp), ev.witness)
    assert exact > 10 * ev.details["sum_bound"]
    assert math.isclose(exact, ev.details["sum"], rel_tol=1e-9)
    again = check_cycle(mlp, ev.witness)
    assert again.verdict == "violation" and math.isclose(again.value, ev.value, rel_tol=1e-12)
    # the caller's module is untouched (still float32, gradients still on)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in mlp.parameters())


def test_random_mlp_jacobian_is_asymmetric_and_confirmed_by_a_cycle():
    je = jacobian_evidence(_mlp(1, nn.Softplus()), _points())
    assert je.symmetry.verdict == "violation" and je.symmetry.value > 0.1
    assert je.proven and je.confirmation.details["sum"] > 10 * je.confirmation.details["sum_bound"]
    assert je.symmetry.witness.shape == (1, N)


def test_lpn_shows_no_violation():
    lpn = _lpn(0)
    pts = _points()
    je = jacobian_evidence(lpn, pts)
    assert je.verdict == "no violation found" and je.confirmation is None
    assert je.symmetry.value < 1e-13
    assert je.psd.value >= 0.1 - 1e-9  # lambda_min >= alpha
    search = adversarial_jacobian_search(lpn, pts[:2], steps=3)
    assert search.verdict == "no violation found" and search.symmetry.value < 1e-13
    assert search.symmetry.details["gradient_steps"] > 0  # smooth: gradient ascent through the Jacobian
    ev = cyclic_monotonicity(lpn, pts, cycles=16, seed=0, search_steps=5)
    assert ev.verdict == "no violation found" and ev.kind == "estimated" and ev.tried > 100
    assert ev.details["sum"] <= -0.05 * ev.details["denominator"] + ev.details["sum_bound"]  # strong convexity


def test_symmetric_psd_linear_map_passes():
    g = torch.Generator().manual_seed(0)
    B = torch.randn(N, N, generator=g, dtype=F64)
    M = B @ B.T / N
    f = _linear(M)
    pts = _points()
    je = jacobian_evidence(f, pts)
    assert je.verdict == "no violation found" and je.psd.value > -1e-12
    ev = cyclic_monotonicity(f, pts, cycles=16, seed=0, search_steps=5)
    assert ev.verdict == "no violation found" and ev.value <= ev.error_bound


def test_non_symmetric_linear_map_fails_jacobian_and_cycles():
    g = torch.Generator().manual_seed(1)
    K = torch.randn(N, N, generator=g, dtype=F64)
    M = torch.eye(N, dtype=F64) + 0.2 * (K - K.T)  # monotone (symmetric part I) but not a gradient
    f = _linear(M)
    pts = _points()
    je = jacobian_evidence(f, pts)
    assert je.symmetry.verdict == "violation" and je.psd.verdict == "no violation found"
    assert je.proven and je.confirmation.details["origin"].startswith("loop")
    ev = cyclic_monotonicity(f, pts, cycles=16, seed=0)
    assert ev.verdict == "violation" and ev.details["length"] > 2  # monotone: no 2-cycle can violate
    assert _exact_check(f, ev.witness) > 10 * ev.details["sum_bound"]


def test_symmetric_indefinite_linear_map_fails_psd_and_two_cycles():
    g = torch.Generator().manual_seed(2)
    Q, _ = torch.linalg.qr(torch.randn(N, N, generator=g, dtype=F64))
    eig = torch.linspace(-0.5, 2.0, N, dtype=F64)
    M = Q @ torch.diag(eig) @ Q.T
    f = _linear(M)
    pts = _points()
    je = jacobian_evidence(f, pts)
    assert je.symmetry.verdict == "no violation found" and je.symmetry.value < 1e-14
    assert je.psd.verdict == "violation" and math.isclose(je.psd.value, -0.5, rel_tol=1e-9)
    # the 2-cycle along the negative eigenvector: S = -<M (y1 - y2), y1 - y2> = 0.5 h^2 > 0
    y = pts[0]
    e = Q[:, 0]
    two = check_cycle(f, torch.stack([y - 0.05 * e, y + 0.05 * e]))
    assert two.verdict == "violation" and math.isclose(two.value, 0.25, rel_tol=1e-9)  # S / (2 h^2)
    ev = cyclic_monotonicity(f, pts, cycles=16, length=2, seed=0)
    assert ev.verdict == "violation" and ev.details["length"] == 2


def test_error_bound_is_small_but_conservative_against_float32():
    """The bound evaluated at float32's unit roundoff covers the observed float32-vs-float64 difference of the
    cycle sums (same points, same network), while the float64 bound is tiny next to the sums."""
    mlp = _mlp(3, nn.Tanh())
    g = torch.Generator().manual_seed(3)
    cycles = torch.randn(50, 6, N, generator=g).to(F64)  # float32-representable points
    f64 = mlp.double()
    with torch.no_grad():
        v64 = f64(cycles.reshape(-1, N)).reshape(50, 6, N)
        mlp32 = _mlp(3, nn.Tanh())
        v32 = mlp32(cycles.float().reshape(-1, N)).reshape(50, 6, N)
    d64 = torch.roll(cycles, -1, 1) - cycles
    s64 = (v64 * d64).sum((1, 2))
    c32 = cycles.float()
    s32 = (v32 * (torch.roll(c32, -1, 1) - c32)).sum((1, 2)).to(F64)
    bound32 = cycle_error_bound(v32.to(F64), cycles, U32)
    bound64 = cycle_error_bound(v64, cycles)
    assert bool(((s32 - s64).abs() <= bound32).all())
    # conservative by about 3e4 here (C_EVAL = 4096 dominates), but not absurdly loose
    assert float(((s32 - s64).abs() / bound32).max()) > 1e-6
    assert float((bound64 / s64.abs()).median()) < 1e-10  # not vacuous in float64
    # and the float64 sums are within the dot-product part of the bound of the exact rational sums
    for k in range(3):
        exact = float(exact_cycle_sum(v64[k], cycles[k]))
        assert abs(exact - float(s64[k])) <= float(bound64[k])


def test_probes_for_large_inputs_and_image_shapes():
    torch.manual_seed(4)
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Softplus(), nn.Conv2d(4, 1, 3, padding=1))
    pts = torch.rand(3, 1, 4, 4)
    full = jacobian_evidence(conv, pts)
    probed = jacobian_evidence(conv, pts, max_full=4, probes=32)
    assert full.symmetry.details["method"] == "full" and probed.symmetry.details["method"] == "probes"
    assert full.symmetry.verdict == probed.symmetry.verdict == "violation"
    assert 0.5 < probed.symmetry.value / full.symmetry.value < 2.0  # Hutchinson estimate of the same ratio
    assert full.symmetry.witness.shape == (1, 1, 4, 4)
    lpn = _lpn(5)
    probed = jacobian_evidence(lpn, _points(3), max_full=4, probes=8)
    assert probed.verdict == "no violation found" and probed.symmetry.value < 1e-13
    assert probed.psd.value >= 0.1 - 1e-6  # power iteration estimate of lambda_min >= alpha


def test_adversarial_search_relu_uses_random_steps_and_keeps_the_worst():
    mlp = _mlp(6)
    pts = _points(2)
    start = jacobian_evidence(mlp, pts, confirm=False)
    found = adversarial_jacobian_search(mlp, pts, steps=4, seed=0)
    assert found.symmetry.value >= start.symmetry.value  # the starts are among the visited points
    assert found.psd.details["relative"] <= start.psd.details["relative"] + 1e-12
    assert found.symmetry.details["random_steps"] > 0  # piecewise linear: the Jacobian's gradient vanishes
    assert found.proven


def test_prox_evidence_summary():
    report = prox_evidence(_mlp(7), _points())
    assert report.proven_not_prox and report.witness is not None and report.witness.verdict == "violation"
    report = prox_evidence(_lpn(7), _points())
    assert not report.proven_not_prox and report.witness is None


def test_bad_inputs_are_refused():
    mlp = _mlp(0)
    bad = _points()
    bad[0, 0] = float("nan")
    with pytest.raises(InvalidInputError):
        jacobian_evidence(mlp, bad)
    with pytest.raises(InvalidInputError):
        cyclic_monotonicity(lambda y: y[:, :3], _points())
    with pytest.raises(UsageError):
        cyclic_monotonicity(mlp, _points(), cycles=0)
    with pytest.raises(UsageError):
        cyclic_monotonicity(mlp, _points(), length=1)
    with pytest.raises(UsageError):
        adversarial_jacobian_search(mlp, _points(), radius=0.0)
    with pytest.raises(InvalidInputError):
        check_cycle(mlp, _points(1))
