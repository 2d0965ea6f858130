"""Gaussian smoothing: the weak convexity / smoothness constant of Proposition 1 (MoreauGrad), and the
Monte Carlo concentration bounds that make sampled estimates of the smoothed function usable.

Proposition 1 (Zhang & Farnia, MoreauGrad, Sec. 4), sharpened: if f is L-Lipschitz in l2, then
h(x) = E f(x + sigma Z), Z ~ N(0, I), is twice differentiable with, by Stein's lemma,

    Hess h(x) = E[grad f(x + sigma Z) Z^T] / sigma,
    |u^T Hess h(x) u| = |E[(grad f . u)(Z . u)]| / sigma <= L E|Z . u| / sigma = sqrt(2/pi) L / sigma

for every unit u. So ||Hess h|| <= sqrt(2/pi) L / sigma: h is that weakly convex and that smooth (the
paper states L / sigma; sqrt(2/pi) ~ 0.798). The constant is attained in 1-D by f = |x| at x = 0
(proofs_checks/mg_p1_gaussian_smoothing.py).

Concentration (for estimates of h and grad h from m iid samples Z_i):

* vectors X_i with ||X_i|| <= B (e.g. grad f(x + sigma Z_i), B = L): with probability >= 1 - alpha,
  ||mean - E X|| <= (B / sqrt(m)) (1 + sqrt(2 log(1/alpha))): E||mean - EX|| <= B/sqrt(m) (variance) and
  McDiarmid with bounded differences 2B/m.
* the Stein estimate of u^T Hess h u, mean of X_i = (grad f(x + sigma Z_i) . u)(Z_i . u)/sigma for a unit
  u fixed independently of the samples: |X_i| <= (L/sigma)|g_i|, g_i ~ N(0, 1), and E|g|^q <= q!/2 for
  q >= 2, so E X_i^2 <= (L/sigma)^2 and E|X_i|^q <= q! (L/sigma)^q / 2. Bernstein's inequality in the
  moment form (Boucheron, Lugosi & Massart, Concentration Inequalities, Thm 2.10, v = m (L/sigma)^2,
  c = L/sigma), applied to X and -X with t = log(2/alpha): with probability >= 1 - alpha,
  |mean - E X| <= (L/sigma) (sqrt(2 t / m) + t / m).
"""
from __future__ import annotations

import math

import torch

from certify.bounds.results import BoundResult, Kind
from certify.bounds.sets import rounding_margin
from certify.errors import UsageError

from certify.vocabulary import STEIN_CONSTANT


def proposition1_constant(lipschitz: float, sigma: float) -> float:
    """sqrt(2/pi) L / sigma: the curvature (and weak-convexity) constant of h = E f(. + sigma Z) for an
    L-Lipschitz (l2) f; the one implementation the issuers and the theorem row MG-P1 call."""
    if not (math.isfinite(sigma) and sigma > 0):
        raise UsageError(f"sigma must be a finite number > 0, got {sigma}")
    if not (math.isfinite(lipschitz) and lipschitz >= 0):
        raise UsageError(f"the Lipschitz constant must be a finite number >= 0, got {lipschitz}")
    return STEIN_CONSTANT * lipschitz / sigma


def smoothed_weak_convexity(lipschitz: BoundResult, sigma: float) -> BoundResult:
    """sqrt(2/pi) L / sigma for h = E f(. + sigma Z): both its weak-convexity constant and its two-sided
    curvature bound. Certified when `lipschitz` (an l2 constant of f) is certified; otherwise it keeps the
    input's kind (and confidence); a refused input gives a refusal."""
    method = "gaussian-smoothing-prop1"
    if not sigma > 0:
        raise UsageError(f"sigma must be positive, got {sigma}")
    if lipschitz.details.get("p", 2.0) != 2.0:
        raise UsageError("Proposition 1 needs an l2 Lipschitz constant")
    if lipschitz.refused:
        return BoundResult.refuse(method, f"no Lipschitz constant: {lipschitz.reason}")
    lip = torch.as_tensor(lipschitz.value, dtype=torch.float64)
    value = torch.tensor([proposition1_constant(float(v), sigma) for v in lip.flatten()], dtype=torch.float64).reshape(lip.shape)
    value = value + rounding_margin(value, 3)
    return BoundResult(
        value,
        lipschitz.kind,
        method,
        [f"h(x) = E f(x + sigma Z), Z ~ N(0, I), sigma = {sigma}", *lipschitz.assumptions],
        confidence=lipschitz.confidence,
        details={"sigma": sigma, "lipschitz": lipschitz.value, "lipschitz_method": lipschitz.method},
    )


def vector_mean_deviation(bound: float, samples: int, alpha: float) -> float:
    """r with P(||mean of `samples` iid vectors - their expectation|| > r) <= alpha when every vector has
    norm <= `bound` (module docstring)."""
    _check(samples, alpha)
    return bound / math.sqrt(samples) * (1.0 + math.sqrt(2.0 * math.log(1.0 / alpha)))


def stein_hessian_deviation(lipschitz: float, sigma: float, samples: int, alpha: float) -> float:
    """r with P(|Stein estimate of u^T Hess h u - u^T Hess h u| > r) <= alpha, for a fixed unit u chosen
    independently of the samples (Bernstein; module docstring)."""
    _check(samples, alpha)
    t = math.log(2.0 / alpha)
    return lipschitz / sigma * (math.sqrt(2.0 * t / samples) + t / samples)


def _check(samples: int, alpha: float) -> None:
    if samples < 1 or not 0 < alpha < 1:
        raise UsageError(f"need samples >= 1 and 0 < alpha < 1, got {samples}, {alpha}")
