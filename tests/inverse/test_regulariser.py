"""R recovery with a certified interval (certify.inverse.regulariser) on closed forms and a small LPN."""
from __future__ import annotations

import pytest
import torch

from certify.errors import InvalidInputError, UsageError
from certify.inverse.lpn import LPN
from certify.inverse.regulariser import QuadraticPotential, SoftThresholdPotential, regulariser

CLOSED_FORMS = [QuadraticPotential(0.5), QuadraticPotential(2.0), SoftThresholdPotential(1.0),
                SoftThresholdPotential(1.0, alpha=0.01), SoftThresholdPotential(0.3, alpha=0.5)]


def _points(seed: int, batch: int = 16, dim: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, generator=gen, dtype=torch.float64) * 2.0


@pytest.mark.parametrize("potential", CLOSED_FORMS, ids=lambda p: f"{type(p).__name__}-{p.alpha}")
def test_exact_on_closed_forms(potential) -> None:
    x = _points(0)
    result = regulariser(potential, x)
    truth = potential.exact(x)
    assert bool(result.converged.all())
    assert torch.allclose(result.value, truth, atol=1e-9)
    assert torch.all(result.lower <= truth)
    if potential.alpha > 0:
        assert result.upper is not None and torch.all(result.upper >= truth)
        assert float((result.upper - result.lower).max()) < 1e-6
        # y* solves f(y*) = x
        assert torch.allclose(potential(result.y_star), x, atol=1e-8)
    else:
        assert result.upper is None and "alpha = 0" in result.upper_reason


def test_closed_form_oracles_are_consistent() -> None:
    """The oracles' R is the prox's regulariser: f(y) minimises 1/2 (y - z)^2 + R(z) over a grid of z (1-D)."""
    z = torch.linspace(-8, 8, 16001, dtype=torch.float64).unsqueeze(1)
    for potential in CLOSED_FORMS:
        r = potential.exact(z)
        for y in (-2.5, -0.4, 0.0, 0.7, 3.1):
            objective = 0.5 * (y - z.squeeze(1)) ** 2 + r
            best = float(z[objective.argmin(), 0])
            want = float(potential(torch.tensor([[y]], dtype=torch.float64)))
            assert abs(best - want) <= 1.5e-3, (type(potential).__name__, y, best, want)


def test_bad_starting_point_gives_a_valid_wider_interval() -> None:
    potential = SoftThresholdPotential(1.0, alpha=0.05)
    x = _points(1, batch=8)
    truth = potential.exact(x)
    good = regulariser(potential, x)
    bad = regulariser(potential, x, max_iter=0, y0=x + 3.0)
    assert bad.iterations == 0 and not bool(bad.converged.any())
    assert torch.all(bad.lower <= truth) and torch.all(bad.upper >= truth)
    assert torch.all(bad.upper - bad.lower > 10 * (good.upper - good.lower))
    # a few iterations: still valid, narrower than none
    some = regulariser(potential, x, max_iter=2, y0=x + 3.0)
    assert torch.all(some.lower <= truth) and torch.all(some.upper >= truth)
    assert float((some.upper - some.lower).sum()) < float((bad.upper - bad.lower).sum())


@pytest.mark.parametrize("seed", range(5))
def test_lower_bound_never_above_truth(seed: int) -> None:
    """Tamper-ish: from random starting points and truncated solves, the lower end never exceeds R(x)."""
    gen = torch.Generator().manual_seed(100 + seed)
    potential = SoftThresholdPotential(float(torch.rand(1, generator=gen)) * 2, alpha=0.0)
    x = torch.randn(32, 4, generator=gen, dtype=torch.float64) * 3
    y0 = torch.randn(32, 4, generator=gen, dtype=torch.float64) * 5
    truth = potential.exact(x)
    for iters in (0, 1, 3, 50):
        result = regulariser(potential, x, max_iter=iters, y0=y0)
        assert torch.all(result.lower <= truth)


def test_claimed_alpha_above_the_true_modulus_is_not_trusted_silently() -> None:
    """The upper end relies on alpha: with the true alpha it holds from a bad point; the override is honoured."""
    potential = QuadraticPotential(1.0)  # alpha = 1
    x = _points(2, batch=4)
    result = regulariser(potential, x, max_iter=0, y0=x + 1.0, alpha=0.5)  # a smaller alpha: still valid, wider
    tight = regulariser(potential, x, max_iter=0, y0=x + 1.0)
    truth = potential.exact(x)
    assert torch.all(result.upper >= tight.upper) and torch.all(tight.upper >= truth)


def test_small_lpn_interval_and_prox_optimality() -> None:
    torch.manual_seed(0)
    lpn = LPN(1, hidden=16, layers=3, alpha=0.1).double()
    with torch.no_grad():  # make the non-negative weights non-trivial
        for _, w in lpn.constrained():
            w.uniform_(0.0, 1.0)
    x = torch.linspace(-2, 2, 41, dtype=torch.float64).unsqueeze(1)
    result = regulariser(lpn, x)
    assert bool(result.converged.all())
    assert torch.all(result.lower <= result.value) and torch.all(result.value <= result.upper)
    assert float((result.upper - result.lower).max()) < 1e-6
    with torch.no_grad():
        assert torch.allclose(lpn(result.y_star), x, atol=1e-8)
    # prox optimality: f(y) minimises 1/2 (y - z)^2 + R(z) over the grid points z (R from the solver)
    for y in (-5.0, -1.0, 0.5, 4.0):
        with torch.no_grad():
            fy = lpn(torch.tensor([[y]], dtype=torch.float64))
        r_fy = regulariser(lpn, fy).value
        objective_f = 0.5 * (y - fy.squeeze()) ** 2 + r_fy
        objective_grid = 0.5 * (y - x.squeeze(1)) ** 2 + result.value
        assert float(objective_f) <= float(objective_grid.min()) + 1e-9
    # the caller's model is untouched (float64 copy inside, same parameters)
    assert next(lpn.parameters()).dtype == torch.float64


def test_image_shaped_input_and_float32_model() -> None:
    lpn = LPN(4, hidden=8, layers=2, alpha=0.5)  # float32 model: copied to float64 inside
    x = torch.rand(3, 1, 2, 2)
    result = regulariser(lpn, x)
    assert result.y_star.shape == (3, 1, 2, 2) and result.value.dtype == torch.float64
    assert bool(result.converged.all())
    assert next(lpn.parameters()).dtype == torch.float32


def test_errors() -> None:
    potential = QuadraticPotential(1.0)
    with pytest.raises(UsageError):
        regulariser(potential, _points(0), tol=0.0)
    with pytest.raises(UsageError):
        regulariser(object(), _points(0))
    with pytest.raises(InvalidInputError):
        regulariser(potential, torch.tensor([[float("nan")]]))
    with pytest.raises(InvalidInputError):
        regulariser(potential, torch.ones(3))
    with pytest.raises(UsageError):
        QuadraticPotential(0.0)
