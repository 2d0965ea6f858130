"""The closed-form stability bounds, each ONE function: the certificate issuers call these, and so do the
theorem rows that attack them (proofs_checks mg_a1, mg_c1, mg_c2, mg_t1_3, mg_p1); the independent checker
keeps its own copy (`certify.certificates.checker`), tested to agree (tests/certificates/test_stability_formulas.py).

For ||d||_2 <= eps (DESIGN section 5, MoreauGrad paper Sec. 4-5, Errata in DESIGN section 9):

* Corollary 1 (vanilla MoreauGrad, f_c lambda-weakly convex, rho lambda < 1): MG is
  1/min(rho, 1/lambda - rho)-Lipschitz, so ||MG(x + d) - MG(x)|| <= eps / min(rho, 1/lambda - rho).
* Corrected Corollary 2 (sparse / group-sparse, f_c beta-smooth, rho beta < 1): u* = z* - x is the fixed
  point of the contraction u -> ST(-rho grad f_c(x + u)), so ||S-MG(x + d) - S-MG(x)|| <= beta eps/(1 - rho beta).
* Solver error (DESIGN section 4.1): if f_c is lambda-weakly convex and rho lambda < 1, F_x(z) = f_c(z) +
  ||z - x||^2/(2 rho) + eta P(z - x) is mu-strongly convex, mu = 1/rho - lambda, so for any subgradient r
  of F_x at z, ||z - z*|| <= ||r|| / mu and ||(x - z)/rho - MG(x)|| <= ||r|| / (1 - rho lambda). With r known
  up to `deviation` (float64 rounding, or a Monte Carlo deviation in smoothed mode) and the stored
  attributions a off (x - z)/rho by `rounding`: ||a - MG(x)|| <= (||r|| + deviation)/(1 - rho lambda) + rounding.
* Computed explanations: the stored one is within `err` (the solver-error claim) of the exact MG(x), and a
  run at x + d stopped at residual <= tol within tol / (1 - rho lambda) of MG(x + d).
* Vanilla MG with curvature (f beta-smooth and lambda-weakly convex on a convex set holding the prox points,
  rho lambda < 1): MG(x) = grad f_c(z*) at the prox z* = (I + rho grad f_c)^-1(x) (Theorem 1(1)-(2)), and
  <x' - x'', z' - z''> = ||z' - z''||^2 + rho <grad f_c(z') - grad f_c(z''), z' - z''> >= (1 - rho lambda)
  ||z' - z''||^2, so ||z' - z''|| <= ||x' - x''|| / (1 - rho lambda) and ||MG(x') - MG(x'')|| <= beta eps /
  (1 - rho lambda) (`prox_curvature_bound`; as rho -> 0 it tends to the gradient's beta eps where Corollary 1's
  eps / rho blows up). The stability claim states the smaller of the two (`vanilla_stability`).
* Gradient explanations: ||grad f_c(x + d) - a|| <= beta eps + ||a - grad f_c(x)||.
* Top-k margin: feature i of the top-k of a (by |a|) stays in the top-k of any b with ||b - a||_2 <= B if
  |a_i| - |a_(k+1)| > sqrt(2) B (two coordinates move by at most B in total squared, so |b_i| drops and
  |b_j| rises by at most B sqrt(2) together); the count over k lower-bounds the top-k intersection ratio.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from certify.errors import UsageError
from certify.vocabulary import SQRT2


def _check(name: str, value: float, positive: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise UsageError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return value


def corollary1_constant(rho: float, lam: float) -> float:
    """1 / min(rho, 1/lambda - rho): the Lipschitz constant of vanilla MG (needs rho lambda < 1)."""
    rho, lam = _check("rho", rho, True), _check("lambda", lam)
    if not rho * lam < 1:
        raise UsageError(f"rho * lambda = {rho * lam} >= 1: Corollary 1 does not apply")
    return 1.0 / min(rho, 1.0 / lam - rho if lam > 0 else math.inf)


def corollary1(eps: float, rho: float, lam: float) -> float:
    """eps / min(rho, 1/lambda - rho)."""
    return _check("eps", eps) * corollary1_constant(rho, lam)


def corollary2_corrected(eps: float, rho: float, beta: float) -> float:
    """beta eps / (1 - rho beta), needs rho beta < 1 (the paper's Corollary 2 is false as stated)."""
    eps, rho, beta = _check("eps", eps), _check("rho", rho, True), _check("beta", beta)
    if not rho * beta < 1:
        raise UsageError(f"rho * beta = {rho * beta} >= 1: the corrected Corollary 2 does not apply")
    return beta * eps / (1.0 - rho * beta)


def solver_error(residual: float, deviation: float, rho: float, lam: float, rounding: float) -> float:
    """(||r|| + deviation) / (1 - rho lambda) + rounding: the bound on ||a - MG(x)||_2 of the solver-error claim
    (DESIGN section 4.1; F_x is (1/rho - lambda)-strongly convex when rho lambda < 1, module docstring).
    `residual` = ||r||, r a subgradient of F_x at the stored iterate z; `deviation` bounds the error of r
    (float64 rounding; in smoothed mode plus the Monte Carlo deviation); `rounding` = ||a - (x - z)/rho||."""
    residual, deviation = _check("residual", residual), _check("deviation", deviation)
    rho, lam, rounding = _check("rho", rho, True), _check("lambda", lam), _check("rounding", rounding)
    if not rho * lam < 1:
        raise UsageError(f"rho * lambda = {rho * lam} >= 1: F_x is not known to be strongly convex, no solver error bound")
    return (residual + deviation) / (1.0 - rho * lam) + rounding


def solver_terms(err: float, tol: float, rho: float, lam: float) -> float:
    """err + tol / (1 - rho lambda): the stored explanation's error and that of a run at x + d to residual tol."""
    err, tol, rho, lam = _check("err", err), _check("tol", tol), _check("rho", rho, True), _check("lambda", lam)
    if not rho * lam < 1:
        raise UsageError(f"rho * lambda = {rho * lam} >= 1: no solver error bound")
    return err + tol / (1.0 - rho * lam)


def prox_curvature_bound(eps: float, rho: float, lam: float, beta: float) -> float:
    """beta eps / (1 - rho lambda): vanilla MG with f beta-smooth and lambda-weakly convex (rho lambda < 1)."""
    eps, rho, lam, beta = _check("eps", eps), _check("rho", rho, True), _check("lambda", lam), _check("beta", beta)
    if not rho * lam < 1:
        raise UsageError(f"rho * lambda = {rho * lam} >= 1: the prox is not known to be Lipschitz")
    return beta * eps / (1.0 - rho * lam)


def vanilla_stability(eps: float, rho: float, lam: float, beta: float | None = None) -> float:
    """The smaller of Corollary 1 and, when a curvature bound beta is given, `prox_curvature_bound`."""
    core = corollary1(eps, rho, lam)
    return core if beta is None or not math.isfinite(beta) else min(core, prox_curvature_bound(eps, rho, lam, beta))


def moreaugrad_stability(eps: float, rho: float, tol: float, lam: float, err: float, beta: float | None = None,
                         sparse: bool = False) -> float:
    """The certified stability bound of a computed MoreauGrad explanation, plus the solver terms: vanilla
    (sparse False) `vanilla_stability` (Corollary 1, or beta eps / (1 - rho lambda) when beta is given and
    smaller); sparse / group-sparse the corrected Corollary 2 (beta required)."""
    if sparse and beta is None:
        raise UsageError("the sparse stability bound needs a curvature bound beta")
    core = corollary2_corrected(eps, rho, beta) if sparse else vanilla_stability(eps, rho, lam, beta)
    return core + solver_terms(err, tol, rho, lam)


def gradient_stability(eps: float, beta: float, explanation_error: float) -> float:
    """beta eps + ||a - grad f_c(x)||: bounds ||grad f_c(x + d) - a|| for ||d||_2 <= eps."""
    return _check("beta", beta) * _check("eps", eps) + _check("explanation_error", explanation_error)


def topk_kept(attributions: Tensor, k: int, bound: float) -> int:
    """How many of the top-k features of `attributions` (by |a|, ties broken against them) provably stay in
    the top-k of every b with ||b - a||_2 <= bound: those with |a_i| - |a_(k+1)| > sqrt(2) bound."""
    mags = attributions.detach().double().abs().flatten().sort(descending=True).values
    if not 1 <= k < mags.numel():
        raise UsageError(f"k must lie in 1..{mags.numel() - 1}, got {k}")
    return int((mags[:k] - mags[k] > SQRT2 * _check("bound", bound)).sum())
