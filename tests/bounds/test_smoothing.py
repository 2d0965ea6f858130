"""Proposition 1 constant and the Monte Carlo concentration bounds."""
import math

import pytest
import torch

from certify.bounds.results import BoundResult, Kind
from certify.bounds.smoothing import (
    STEIN_CONSTANT,
    smoothed_weak_convexity,
    stein_hessian_deviation,
    vector_mean_deviation,
)
from certify.errors import UsageError


def test_constant_and_kind_propagation():
    certified = BoundResult(torch.tensor([2.0, 4.0], dtype=torch.float64), Kind.CERTIFIED, "lipschitz-product-l2", details={"p": 2.0})
    out = smoothed_weak_convexity(certified, 0.5)
    assert out.kind is Kind.CERTIFIED
    assert torch.allclose(out.value, STEIN_CONSTANT * torch.tensor([4.0, 8.0], dtype=torch.float64), rtol=1e-14)
    assert (out.value >= math.sqrt(2 / math.pi) * torch.tensor([4.0, 8.0], dtype=torch.float64)).all()
    estimated = BoundResult(1.0, Kind.ESTIMATED, "lipschitz-gradient-ascent-l2", details={"p": 2.0})
    assert smoothed_weak_convexity(estimated, 1.0).kind is Kind.ESTIMATED
    assert smoothed_weak_convexity(BoundResult.refuse("x", "no"), 1.0).refused


def test_bad_inputs():
    linf = BoundResult(1.0, Kind.CERTIFIED, "lipschitz-product-linf", details={"p": math.inf})
    with pytest.raises(UsageError, match="l2"):
        smoothed_weak_convexity(linf, 1.0)
    with pytest.raises(UsageError, match="sigma"):
        smoothed_weak_convexity(BoundResult(1.0, Kind.CERTIFIED, "l"), 0.0)
    with pytest.raises(UsageError):
        vector_mean_deviation(1.0, 10, 1.5)


def test_vector_mean_deviation_covers_sampling_error():
    """Unit vectors in 5-D with a non-zero mean: the deviation bound holds in (far) more than 1 - alpha of trials."""
    g = torch.Generator().manual_seed(0)
    trials, samples, alpha = 400, 50, 0.1
    mean = torch.tensor([0.6, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    vectors = torch.nn.functional.normalize(mean + torch.randn(trials, samples, 5, generator=g, dtype=torch.float64), dim=-1)
    reference = torch.nn.functional.normalize(mean + torch.randn(200_000, 5, generator=g, dtype=torch.float64), dim=-1).mean(0)
    errors = torch.linalg.vector_norm(vectors.mean(1) - reference, dim=-1)
    assert (errors > vector_mean_deviation(1.0, samples, alpha)).float().mean() <= alpha


def test_stein_estimate_of_abs_at_zero():
    """h(x) = E|x + sigma G|: h''(0) = sqrt(2/pi)/sigma; the Stein estimates fall within the deviation."""
    g = torch.Generator().manual_seed(1)
    sigma, trials, samples, alpha = 0.5, 300, 400, 0.1
    noise = torch.randn(trials, samples, generator=g, dtype=torch.float64)
    estimates = (torch.sign(sigma * noise) * noise).mean(1) / sigma
    misses = ((estimates - STEIN_CONSTANT / sigma).abs() > stein_hessian_deviation(1.0, sigma, samples, alpha)).float().mean()
    assert misses <= alpha
    assert estimates.mean() == pytest.approx(STEIN_CONSTANT / sigma, rel=0.01)
