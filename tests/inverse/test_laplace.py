"""The closed-form Laplace-prior denoisers (certify.inverse.laplace) against the ANCHORS 5.1 table and quadrature."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from certify.errors import UsageError
from certify.inverse.laplace import map_estimate, posterior_cdf, posterior_mean, posterior_median

# ANCHORS 5.1: x ~ Laplace(0, 1), sigma = 1
TABLE = {0.5: (0.0, 0.2410, 0.1901), 1.0: (0.0, 0.5032, 0.4288), 2.0: (1.0, 1.1611, 1.1067), 3.0: (2.0, 2.0258, 2.0125)}


def _posterior_grid(y: float, b: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(y - 15 * sigma - 5 * b, y + 15 * sigma + 5 * b, 400_001)
    log_p = -((y - x) ** 2) / (2 * sigma**2) - np.abs(x) / b
    p = np.exp(log_p - log_p.max())
    return x, p / np.trapezoid(p, x)


@pytest.mark.parametrize("y", sorted(TABLE))
def test_table(y: float) -> None:
    values = torch.tensor([y, -y], dtype=torch.float64)
    for fn, want in zip((map_estimate, posterior_mean, posterior_median), TABLE[y]):
        got = fn(values)
        assert abs(float(got[0]) - want) < 5e-5, (fn.__name__, y, float(got[0]), want)
        assert float(got[1]) == pytest.approx(-float(got[0]), abs=1e-12)  # odd in y


@pytest.mark.parametrize("b,sigma", [(1.0, 1.0), (0.5, 1.0), (2.0, 0.3), (1.0, 2.5)])
def test_mean_and_median_match_quadrature(b: float, sigma: float) -> None:
    ys = [-4.0, -1.3, 0.0, 0.2, 0.9, 2.7, 6.0]
    mean = posterior_mean(torch.tensor(ys, dtype=torch.float64), b, sigma)
    median = posterior_median(torch.tensor(ys, dtype=torch.float64), b, sigma)
    for k, y in enumerate(ys):
        x, p = _posterior_grid(y, b, sigma)
        assert float(mean[k]) == pytest.approx(np.trapezoid(x * p, x), abs=1e-6)
        cdf = np.cumsum(p) * (x[1] - x[0])
        assert float(median[k]) == pytest.approx(x[np.searchsorted(cdf, 0.5)], abs=2e-4)


def test_cdf_is_a_cdf() -> None:
    y = torch.tensor([[-2.0], [0.3], [4.0]], dtype=torch.float64)
    t = torch.linspace(-20, 20, 2001, dtype=torch.float64).unsqueeze(0)
    cdf = posterior_cdf(t, y)
    assert torch.all(cdf[:, 1:] - cdf[:, :-1] >= -1e-15)  # non-decreasing
    assert torch.allclose(cdf[:, 0], torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(cdf[:, -1], torch.ones(3, dtype=torch.float64), atol=1e-12)
    # continuous at t = 0 (the two pieces meet)
    left = posterior_cdf(torch.tensor([-1e-12], dtype=torch.float64), y)
    right = posterior_cdf(torch.tensor([1e-12], dtype=torch.float64), y)
    assert torch.allclose(left, right, atol=1e-9)


def test_large_y_is_stable_and_shrinks_by_a() -> None:
    y = torch.tensor([40.0, -60.0], dtype=torch.float64)
    for fn in (posterior_mean, posterior_median):
        out = fn(y, 1.0, 1.0)
        assert torch.isfinite(out).all()
        assert torch.allclose(out, y - torch.sign(y), atol=1e-6)  # posterior ~ N(y - sign(y) sigma^2/b, sigma^2)


def test_vectorised_shape_and_errors() -> None:
    y = torch.randn(3, 4, 5, dtype=torch.float64)
    assert posterior_median(y).shape == y.shape and posterior_mean(y).shape == y.shape
    with pytest.raises(UsageError):
        posterior_mean(y, b=0.0)
    with pytest.raises(UsageError):
        map_estimate(y, sigma=-1.0)
