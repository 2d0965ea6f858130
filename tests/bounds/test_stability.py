"""certify.bounds.stability: the closed forms of the stability bounds, the top-k margin count, and the
refusals outside the corollaries' hypotheses."""
import math

import pytest
import torch

from certify.bounds import stability as S
from certify.errors import UsageError
from certify.vocabulary import SQRT2


@pytest.mark.parametrize("lam", [0.1, 1.0, 3.0])
def test_corollary1_at_rho_half_over_lambda_is_two_lambda_eps(lam):
    rho = 1 / (2 * lam)  # rho = 1/lambda - rho: both terms of the min agree
    assert S.corollary1_constant(rho, lam) == pytest.approx(2 * lam, rel=1e-12)
    assert S.corollary1(0.3, rho, lam) == pytest.approx(0.6 * lam, rel=1e-12)


def test_corollary1_takes_the_smaller_of_rho_and_one_over_lambda_minus_rho():
    assert S.corollary1_constant(0.1, 2.0) == pytest.approx(10.0)  # min(0.1, 0.4) = 0.1
    assert S.corollary1_constant(0.4, 2.0) == pytest.approx(10.0)  # min(0.4, 0.1) = 0.1
    assert S.corollary1_constant(0.25, 0.0) == pytest.approx(4.0)  # convex: 1/rho
    assert S.corollary1(0.0, 0.25, 1.0) == 0.0


def test_corollary2_corrected_closed_form():
    assert S.corollary2_corrected(0.1, 0.5, 1.0) == pytest.approx(0.2)  # 1 * 0.1 / (1 - 0.5)
    assert S.corollary2_corrected(2.0, 0.25, 2.0) == pytest.approx(8.0)  # 2 * 2 / 0.5
    assert S.corollary2_corrected(1.0, 0.5, 0.0) == 0.0


def test_solver_terms_and_solver_error_closed_forms():
    assert S.solver_terms(0.01, 0.1, 0.5, 1.0) == pytest.approx(0.01 + 0.2)
    assert S.solver_terms(0.0, 0.0, 0.5, 1.0) == 0.0
    assert S.solver_error(0.1, 0.02, 0.5, 1.0, 0.003) == pytest.approx(0.12 / 0.5 + 0.003)
    assert S.solver_error(0.1, 0.0, 1.0, 0.0, 0.0) == pytest.approx(0.1)  # convex: mu = 1/rho, ||r||/(1 - 0)


def test_moreaugrad_stability_is_the_corollary_plus_the_solver_terms():
    eps, rho, tol, lam, err = 0.1, 0.5, 1e-3, 1.0, 1e-4
    vanilla = S.moreaugrad_stability(eps, rho, tol, lam, err)
    assert vanilla == pytest.approx(S.corollary1(eps, rho, lam) + err + tol / (1 - rho * lam))
    assert vanilla == pytest.approx(eps / 0.5 + err + 2 * tol)
    sparse = S.moreaugrad_stability(eps, rho, tol, lam, err, beta=1.5, sparse=True)
    assert sparse == pytest.approx(1.5 * eps / (1 - 0.75) + err + 2 * tol)
    # vanilla with a curvature bound: the smaller of Corollary 1 (0.2) and beta eps / (1 - rho lambda)
    assert S.moreaugrad_stability(eps, rho, tol, lam, err, beta=0.5) == pytest.approx(0.5 * eps / 0.5 + err + 2 * tol)
    assert S.moreaugrad_stability(eps, rho, tol, lam, err, beta=3.0) == pytest.approx(vanilla)
    with pytest.raises(UsageError, match="curvature"):
        S.moreaugrad_stability(eps, rho, tol, lam, err, sparse=True)


def test_gradient_stability_closed_form():
    assert S.gradient_stability(0.1, 3.0, 0.02) == pytest.approx(0.32)
    assert S.gradient_stability(0.0, 3.0, 0.0) == 0.0


@pytest.mark.parametrize("call", [
    lambda: S.corollary1_constant(1.0, 1.0),
    lambda: S.corollary1(0.1, 2.0, 0.6),
    lambda: S.solver_terms(0.0, 0.1, 1.0, 1.0),
    lambda: S.solver_error(0.1, 0.0, 2.0, 0.5, 0.0),
    lambda: S.moreaugrad_stability(0.1, 1.0, 1e-3, 1.0, 0.0, beta=0.5),  # Cor. 2 applies, the solver terms do not
])
def test_rho_lambda_at_least_one_is_refused(call):
    with pytest.raises(UsageError, match=r"rho \* lambda = .* >= 1"):
        call()


def test_rho_beta_at_least_one_is_refused():
    with pytest.raises(UsageError, match=r"rho \* beta = 1.0 >= 1"):
        S.corollary2_corrected(0.1, 0.5, 2.0)
    with pytest.raises(UsageError, match=r"rho \* beta"):
        S.moreaugrad_stability(0.1, 0.5, 1e-3, 0.5, 0.0, beta=3.0, sparse=True)


@pytest.mark.parametrize("call, name", [
    (lambda: S.corollary1(-0.1, 0.5, 1.0), "eps"),
    (lambda: S.corollary1(math.inf, 0.5, 1.0), "eps"),
    (lambda: S.corollary1(0.1, 0.0, 1.0), "rho"),
    (lambda: S.corollary1(0.1, math.nan, 1.0), "rho"),
    (lambda: S.corollary1_constant(0.5, -1.0), "lambda"),
    (lambda: S.corollary2_corrected(0.1, 0.5, math.inf), "beta"),
    (lambda: S.solver_error(-1e-9, 0.0, 0.5, 1.0, 0.0), "residual"),
    (lambda: S.solver_error(0.0, math.inf, 0.5, 1.0, 0.0), "deviation"),
    (lambda: S.solver_error(0.0, 0.0, 0.5, 1.0, -1.0), "rounding"),
    (lambda: S.solver_terms(-0.1, 0.0, 0.5, 1.0), "err"),
    (lambda: S.solver_terms(0.0, math.inf, 0.5, 1.0), "tol"),
    (lambda: S.gradient_stability(0.1, 1.0, -0.5), "explanation_error"),
    (lambda: S.gradient_stability(0.1, -1.0, 0.0), "beta"),
])
def test_negative_or_nonfinite_inputs_are_refused_by_name(call, name):
    with pytest.raises(UsageError, match=rf"^{name} must be a finite number"):
        call()


def test_topk_kept_counts_margins_over_sqrt2_bound():
    a = torch.tensor([3.0, -2.0, 1.0, 0.5, 0.0])  # magnitudes sorted: 3, 2, 1, 0.5, 0
    assert S.topk_kept(a, 2, 0.0) == 2
    # margins over |a_(3)| = 1: 2 and 1; kept iff margin > sqrt(2) B
    assert S.topk_kept(a, 2, 1 / SQRT2 - 1e-9) == 2
    assert S.topk_kept(a, 2, 1 / SQRT2) == 1  # 1 > 1 is false: strict
    assert S.topk_kept(a, 2, 2 / SQRT2) == 0
    assert S.topk_kept(a.reshape(1, 5), 3, 0.1) == 3  # flattened; margins over 0.5: 2.5, 1.5, 0.5 > 0.1414
    assert S.topk_kept(-a, 2, 0.5) == S.topk_kept(a, 2, 0.5), "by magnitude, not signed value"


def test_topk_kept_ties_at_the_boundary_count_against_the_feature():
    tied = torch.tensor([1.0, -1.0, 1.0, 0.2])  # k = 2: the third feature ties the second, margin 0
    assert S.topk_kept(tied, 2, 0.0) == 0
    assert S.topk_kept(tied, 3, 0.0) == 3
    assert S.topk_kept(torch.tensor([5.0, 1.0, 1.0]), 1, 0.0) == 1
    assert S.topk_kept(torch.tensor([5.0, 1.0, 1.0]), 1, 4 / SQRT2 + 1e-9) == 0


@pytest.mark.parametrize("k", [0, 4, -1])
def test_topk_kept_refuses_k_outside_one_to_n_minus_one(k):
    with pytest.raises(UsageError, match=r"k must lie in 1\.\.3"):
        S.topk_kept(torch.ones(4), k, 0.1)


def test_topk_kept_refuses_a_negative_bound():
    with pytest.raises(UsageError, match="bound must be a finite number"):
        S.topk_kept(torch.arange(4.0), 1, -0.1)
