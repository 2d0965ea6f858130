"""Closed-form Bayes denoisers for a Laplace prior in Gaussian noise (the oracle of the LPN Laplace experiment:
Fang, Buchanan & Sulam, ICLR 2024, arXiv 2310.14344, section 5.1; ANCHORS 5.1).

Model: x ~ Laplace(0, b) (density exp(-|x|/b)/(2b)), y = x + sigma v with v ~ N(0, 1), all scalar and applied
elementwise. The posterior is p(x | y) ∝ exp(-(y - x)^2/(2 sigma^2) - |x|/b); with a = sigma^2/b and
m+ = y - a, m- = y + a it is, on x > 0, a N(m+, sigma^2) piece of weight w+ = e^{-y/b} Phi(m+/sigma) and, on
x < 0, a N(m-, sigma^2) piece of weight w- = e^{y/b} Phi(-m-/sigma) (both up to the same factor
e^{a/(2b)}/(2b)).

* MAP: soft thresholding at a = sigma^2/b (the prox of a|.|);
* posterior mean: [w+ (m+ + sigma phi(m+/sigma)/Phi(m+/sigma)) + w- (m- - sigma phi(m-/sigma)/Phi(-m-/sigma))]/(w+ + w-)
  (truncated-normal means), computed in log space (log Phi, and the Mills ratio through log phi - log Phi);
* posterior median: the root of the posterior CDF F(t | y) = 1/2, found by vectorised bisection on the closed
  form F(t) = [w- Phi((t - m-)/sigma)/Phi(-m-/sigma) ... ] (see `posterior_cdf`).

All functions take a tensor y of any shape and return the same shape (float64 recommended); they are odd in y.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from certify.errors import UsageError

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _check(b: float, sigma: float) -> None:
    if not (b > 0 and math.isfinite(b)) or not (sigma > 0 and math.isfinite(sigma)):
        raise UsageError(f"the Laplace oracle needs b > 0 and sigma > 0, finite (got b={b}, sigma={sigma})")


def _log_phi(t: Tensor) -> Tensor:
    return -0.5 * t * t - _LOG_SQRT_2PI


def _log_Phi(t: Tensor) -> Tensor:
    return torch.special.log_ndtr(t)


def map_estimate(y: Tensor, b: float = 1.0, sigma: float = 1.0) -> Tensor:
    """The MAP denoiser prox_{(sigma^2/b)|.|}(y) = sign(y) max(|y| - sigma^2/b, 0); same shape as y."""
    _check(b, sigma)
    a = sigma**2 / b
    return torch.sign(y) * torch.clamp(y.abs() - a, min=0.0)


def _log_weights(y: Tensor, b: float, sigma: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    a = sigma**2 / b
    m_plus, m_minus = y - a, y + a
    log_w_plus = -y / b + _log_Phi(m_plus / sigma)
    log_w_minus = y / b + _log_Phi(-m_minus / sigma)
    return m_plus, m_minus, log_w_plus, log_w_minus


def posterior_mean(y: Tensor, b: float = 1.0, sigma: float = 1.0) -> Tensor:
    """E[x | y], the minimiser of the expected squared error (ANCHORS 5.1 formula, in log space); shape of y."""
    _check(b, sigma)
    m_plus, m_minus, log_w_plus, log_w_minus = _log_weights(y, b, sigma)
    # truncated-normal means: E[N(m, s^2) | > 0] = m + s phi(m/s)/Phi(m/s); E[. | < 0] = m - s phi(m/s)/Phi(-m/s)
    mean_plus = m_plus + sigma * torch.exp(_log_phi(m_plus / sigma) - _log_Phi(m_plus / sigma))
    mean_minus = m_minus - sigma * torch.exp(_log_phi(m_minus / sigma) - _log_Phi(-m_minus / sigma))
    p_plus = torch.sigmoid(log_w_plus - log_w_minus)  # w+ / (w+ + w-)
    return p_plus * mean_plus + (1 - p_plus) * mean_minus


def posterior_cdf(t: Tensor, y: Tensor, b: float = 1.0, sigma: float = 1.0) -> Tensor:
    """P(x <= t | y), broadcasting t against y.

    For t <= 0: p- Phi((t - m-)/sigma)/Phi(-m-/sigma); for t > 0: p- + p+ [Phi((t - m+)/sigma) - Phi(-m+/sigma)]/Phi(m+/sigma),
    with p+- = w+-/(w+ + w-)."""
    _check(b, sigma)
    m_plus, m_minus, log_w_plus, log_w_minus = _log_weights(y, b, sigma)
    p_plus = torch.sigmoid(log_w_plus - log_w_minus)
    p_minus = 1 - p_plus
    neg = p_minus * torch.exp(_log_Phi((torch.clamp(t, max=0.0) - m_minus) / sigma) - _log_Phi(-m_minus / sigma))
    # the x > 0 piece: P(0 < x <= t) for a N(m+, sigma^2) truncated to x > 0 = 1 - Phi((m+ - t)/sigma)/Phi(m+/sigma)
    upper_tail = torch.exp(_log_Phi((m_plus - torch.clamp(t, min=0.0)) / sigma) - _log_Phi(m_plus / sigma))
    pos = p_minus + p_plus * (1 - upper_tail)
    return torch.where(t <= 0, neg, pos)


def posterior_median(y: Tensor, b: float = 1.0, sigma: float = 1.0, iterations: int = 100) -> Tensor:
    """The posterior median (the minimiser of the expected absolute error): the root of posterior_cdf = 1/2 by
    vectorised bisection on [y - 10 sigma - sigma^2/b, y + 10 sigma + sigma^2/b] (the posterior puts mass
    < 1e-20 outside it), `iterations` halvings (100 reach float64 resolution); shape of y."""
    _check(b, sigma)
    a = sigma**2 / b
    lo = y - 10 * sigma - a
    hi = y + 10 * sigma + a
    for _ in range(iterations):
        mid = (lo + hi) / 2
        below = posterior_cdf(mid, y, b, sigma) < 0.5
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return (lo + hi) / 2
