"""One implementation of each closed-form bound (issue 10, item 4): the issuers call
`certify.bounds.stability` / `certify.bounds.smoothing`, the theorem rows call the same functions, and the
checker keeps its own copy; here the two copies agree on random inputs (the checker's rounds outward by
CHECKER_SAFETY per step, so it may only be larger for upper bounds and equal within 1e-10 relative)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from certify.bounds import stability
from certify.bounds.smoothing import proposition1_constant, vector_mean_deviation
from certify.certificates import checker
from certify.certificates.checker import Invalid
from certify.errors import UsageError

pos = st.floats(1e-6, 1e3)


def _close_above(ours, theirs):
    assert theirs >= ours * (1 - 1e-15) and theirs <= ours * (1 + 1e-10) + 1e-250


@settings(max_examples=200, deadline=None)
@given(pos, pos, st.floats(0, 1), st.floats(0, 1e-2), st.floats(0, 1e-2), st.floats(0, 0.999))
def test_moreaugrad_stability_agrees(eps, rho, frac, err, tol, beta_frac):
    lam = frac / rho * 0.999  # rho lambda < 1
    beta = beta_frac / rho
    _close_above(stability.corollary1(eps, rho, lam), checker.corollary1(eps, rho, lam))
    _close_above(stability.corollary2_corrected(eps, rho, beta), checker.corollary2(eps, rho, beta))
    _close_above(stability.solver_terms(err, tol, rho, lam), checker.solver_terms(err, tol, rho, lam))
    issued = stability.moreaugrad_stability(eps, rho, tol, lam, err)
    _close_above(issued, checker.corollary1(eps, rho, lam) + checker.solver_terms(err, tol, rho, lam))
    _close_above(stability.prox_curvature_bound(eps, rho, lam, beta), checker.prox_curvature(eps, rho, lam, beta))
    issued = stability.moreaugrad_stability(eps, rho, tol, lam, err, beta)  # vanilla with a curvature bound
    _close_above(issued, min(checker.corollary1(eps, rho, lam), checker.prox_curvature(eps, rho, lam, beta))
                 + checker.solver_terms(err, tol, rho, lam))
    sparse = stability.moreaugrad_stability(eps, rho, tol, lam, err, beta, sparse=True)
    _close_above(sparse, checker.corollary2(eps, rho, beta) + checker.solver_terms(err, tol, rho, lam))


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1e2), st.floats(0, 1e-2), pos, st.floats(0, 0.999), st.floats(0, 1e-3))
def test_solver_error_agrees(residual, deviation, rho, frac, rounding):
    lam = frac / rho  # rho lambda < 1
    _close_above(stability.solver_error(residual, deviation, rho, lam, rounding),
                 checker.solver_error(residual, deviation, rho, lam, rounding))
    with pytest.raises(UsageError, match="rho \\* lambda"):
        stability.solver_error(residual, deviation, rho, 2.0 / rho, rounding)
    with pytest.raises(Invalid, match="rho \\* lambda"):
        checker.solver_error(residual, deviation, rho, 2.0 / rho, rounding)


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1e3), st.integers(1, 10**6), st.floats(0.5, 1 - 1e-9))
def test_mcdiarmid_deviation_agrees(bound, samples, confidence):
    """The issuers pass alpha = 1 - confidence to `vector_mean_deviation`; the checker takes the confidence."""
    _close_above(vector_mean_deviation(bound, samples, 1.0 - confidence), checker.mean_deviation(bound, samples, confidence))


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1e4), st.floats(1e-4, 1e2))
def test_proposition1_agrees(lipschitz, sigma):
    _close_above(proposition1_constant(lipschitz, sigma), checker.proposition1(lipschitz, sigma))
    assert proposition1_constant(1.0, 1.0) == pytest.approx(math.sqrt(2 / math.pi))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 19), st.floats(0, 1))
def test_topk_margin_agrees(seed, k, bound):
    a = torch.randn(20, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ours, theirs = stability.topk_kept(a, k, bound), checker.topk_kept(a, k, bound)
    assert theirs <= ours  # the checker's margin is rounded up: never more features kept
    assert theirs == stability.topk_kept(a, k, bound * (1 + 1e-12) + 1e-300)


def test_out_of_range_inputs_are_refused_by_both():
    with pytest.raises(UsageError):
        stability.corollary1(0.1, 1.0, 1.0)  # rho lambda = 1
    with pytest.raises(Invalid):
        checker.corollary1(0.1, 1.0, 1.0)
    with pytest.raises(UsageError):
        stability.corollary2_corrected(0.1, 2.0, 0.5)
    with pytest.raises(Invalid):
        checker.corollary2(0.1, 2.0, 0.5)
    with pytest.raises(UsageError):
        stability.corollary1(math.inf, 0.1, 0.1)
    with pytest.raises(UsageError):
        stability.solver_error(-1e-3, 0.0, 0.5, 0.1, 0.0)  # a negative residual norm is not a norm
    with pytest.raises(UsageError):
        stability.solver_error(0.1, math.nan, 0.5, 0.1, 0.0)
