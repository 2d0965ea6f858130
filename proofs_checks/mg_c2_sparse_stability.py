"""MG-C2. Zhang & Farnia, MoreauGrad, Corollary 2 (stability of sparse / group-sparse MoreauGrad), and the
claim with Theorem 2 that Theorem 1(3) carries over to the sparse envelope.

Paper's claim: for lambda-weakly convex g and rho < 1/lambda, for all ||delta||_2 <= eps,

    ||S-MG(x + delta) - S-MG(x)||_2 <= eps / min(rho, 1/lambda - rho)        (and likewise GS-MG),

where S-MG(x) = (x - z*)/rho, z* = argmin_z g(z) + ||z - x||^2/(2 rho) + eta ||z - x||_1.

This is FALSE (DESIGN.md, Errata). Counterexample, convex g (lambda = 0): g(z) = 1/2 z^T A z with
A = [[1, 10], [10, 101]], rho = eta = 1, x = (-101.1, 10): coordinate 1 of z* - x is active and
coordinate 2 is not, and S-MG has local slope 5/rho in x2 against the claimed 1/rho (shown here by an
exact convex solve with CVXPY). Likewise, in 1-D with g = a/2 z^2, the sparse envelope's gradient equals
a x wherever |a x| <= eta, so its slope a exceeds the claimed 1/rho when a > 1/rho.

Corrected statement (checked, must hold): u* = z* - x is the fixed point of
T_x(u) = ST_{rho eta}(-rho grad g(x + u)) (GST for groups). If g is beta-smooth (||Hess g|| <= beta) and
rho beta < 1, T_x is a (rho beta)-contraction and moves by at most rho beta ||delta|| when x moves by
delta, so ||u*(x + delta) - u*(x)|| <= rho beta eps / (1 - rho beta), i.e.

    ||S-MG(x + delta) - S-MG(x)||_2 <= beta eps / (1 - rho beta).

Checked on random convex and non-convex quadratics (beta = ||A||_2, rho beta < 1) with many random and
coordinate directions per case; S-MG is computed by the contraction itself to a residual whose effect
(||T(u) - u|| / (1 - rho beta) per solve) is added to the bound, so the comparison is rigorous.
"""
from __future__ import annotations

import cvxpy as cp
import numpy as np
from hypothesis import strategies as st

from certify.bounds.stability import corollary2_corrected
from proofs_checks.framework import CheckContext, Report, run_property, theorem

COUNTEREXAMPLE_A = np.array([[1.0, 10.0], [10.0, 101.0]])
COUNTEREXAMPLE_X = np.array([-101.1, 10.0])
COROLLARY_2 = "Corollary 2 as stated: ||S-MG(x + delta) - S-MG(x)||_2 <= eps / min(rho, 1/lambda - rho) for ||delta||_2 <= eps"


def sparse_mg_exact(a_matrix: np.ndarray, x: np.ndarray, rho: float, eta: float) -> np.ndarray:
    """S-MG(x) = (x - z*)/rho for g = 1/2 z^T A z (A PSD) by an exact convex solve (CVXPY, Clarabel)."""
    z = cp.Variable(x.size)
    objective = 0.5 * cp.quad_form(z, cp.psd_wrap(a_matrix)) + cp.sum_squares(z - x) / (2 * rho) + eta * cp.norm1(z - x)
    problem = cp.Problem(cp.Minimize(objective))
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    if problem.status != cp.OPTIMAL:
        raise RuntimeError(f"reference solve not optimal: {problem.status}")
    return (x - z.value) / rho


def _threshold(v: np.ndarray, a: float, groups: int) -> np.ndarray:
    """ST_a on the last axis (groups = 1 coordinate each) or GST_a on contiguous groups of `groups` coordinates."""
    shaped = v.reshape(*v.shape[:-1], -1, groups)
    norms = np.linalg.norm(shaped, axis=-1, keepdims=True)
    scale = np.maximum(0.0, 1.0 - a / np.maximum(norms, 1e-300))
    return (scale * shaped).reshape(v.shape)


def sparse_mg_contraction(
    a_matrix: np.ndarray, x: np.ndarray, rho: float, eta: float, groups: int, iters: int = 400
) -> tuple[np.ndarray, np.ndarray]:
    """S-MG for g = 1/2 z^T A z at a batch of points x [M, n] by the contraction u <- T_x(u); returns
    (S-MG [M, n], a bound on each one's error: ||T(u) - u|| / (rho (1 - rho beta)))."""
    beta = np.linalg.norm(a_matrix, 2)
    u = np.zeros_like(x)
    for _ in range(iters):
        u = _threshold(-rho * (x + u) @ a_matrix.T, rho * eta, groups)
    step = _threshold(-rho * (x + u) @ a_matrix.T, rho * eta, groups) - u
    error = np.linalg.norm(step, axis=-1) / (1.0 - rho * beta) / rho
    return -u / rho, error


def _counterexample(report: Report) -> None:
    paper = report.tally("Cor 2 as stated: ||dS-MG|| <= eps/min(rho, 1/lambda - rho) (exact CVXPY solve)", role="paper-claim",
                         kind="closed-form", claim=COROLLARY_2)
    rho = eta = 1.0
    base = sparse_mg_exact(COUNTEREXAMPLE_A, COUNTEREXAMPLE_X, rho, eta)
    for eps in (1e-3, 1e-2):
        moved = sparse_mg_exact(COUNTEREXAMPLE_A, COUNTEREXAMPLE_X + np.array([0.0, eps]), rho, eta)
        change = np.linalg.norm(moved - base)
        paper.record(change, eps / rho, f"A=[[1,10],[10,101]], rho=eta=1, x=(-101.1,10), delta=(0,{eps:g}): slope {change / eps:.4f}", rtol=1e-6)
    report.note(
        "Counterexample to Corollary 2 reproduced by an exact convex solve: the sparse explanation moves "
        f"{np.linalg.norm(sparse_mg_exact(COUNTEREXAMPLE_A, COUNTEREXAMPLE_X + np.array([0.0, 1e-3]), rho, eta) - base) / 1e-3:.4f}"
        " times eps where the paper claims at most 1 (lambda = 0, rho = 1). Here beta = ||A|| = "
        f"{np.linalg.norm(COUNTEREXAMPLE_A, 2):.2f} and rho beta > 1, so the corrected bound gives no claim, as it must."
    )


def _envelope_slope(report: Report) -> None:
    """1-D g = a/2 z^2: where |a x| <= eta the minimiser is z* = x and the sparse envelope is a x^2/2."""
    paper = report.tally("Thm 2 + Thm 1(3): sparse envelope gradient is 1/min(rho, 1/lambda - rho)-Lipschitz (1-D closed form)", role="paper-claim", kind="closed-form")
    for a, rho, eta in ((3.0, 1.0, 10.0), (0.5, 1.0, 1.0), (5.0, 0.5, 4.0)):
        xs = np.linspace(-0.99 * eta / a, 0.99 * eta / a, 5)
        # envelope value min_z a z^2/2 + (z-x)^2/(2 rho) + eta |z - x| is a x^2/2 there; gradient a x
        slope = abs(a * xs[-1] - a * xs[0]) / abs(xs[-1] - xs[0])
        paper.record(slope, 1.0 / rho, f"g = {a:g}/2 z^2, rho={rho:g}, eta={eta:g}, |a x| <= eta", rtol=1e-12)


def _corrected_bound(report: Report, ctx: CheckContext) -> None:
    sparse = report.tally("corrected: ||dS-MG|| <= beta eps/(1 - rho beta), rho beta < 1 (random quadratics)", kind="adversarial")
    group = report.tally("corrected: ||dGS-MG|| <= beta eps/(1 - rho beta), groups of 2", kind="adversarial")
    paper = report.tally("Cor 2 as stated on the same random cases", role="paper-claim", kind="adversarial", claim=COROLLARY_2)

    def case(args: tuple[int, int, float, float, float, float]) -> None:
        n_half, seed, rho_beta, eta, eps, shift = args
        n = 2 * n_half
        rng = np.random.default_rng(seed)
        m = rng.normal(size=(n, n))
        a_matrix = (m + m.T) / 2 + shift * np.eye(n)  # indefinite unless shifted: lambda = max(0, -lambda_min)
        beta = np.linalg.norm(a_matrix, 2)
        rho = rho_beta / beta
        lam = max(0.0, -np.linalg.eigvalsh(a_matrix)[0])
        x = rng.normal(scale=3.0, size=n)
        directions = np.concatenate([rng.normal(size=(256, n)), np.eye(n), -np.eye(n)])
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        points = np.concatenate([x[None], x + eps * directions])
        for groups, tally in ((1, sparse), (2, group)):
            smg, err = sparse_mg_contraction(a_matrix, points, rho, eta, groups)
            change = np.linalg.norm(smg[1:] - smg[0], axis=1)
            worst = int(np.argmax(change))
            bound = corollary2_corrected(eps, rho, beta) + err[0] + err[1 + worst]  # the issuers' function
            tally.record(change[worst], bound, f"n={n}, seed={seed}, rho*beta={rho_beta:.3f}, eta={eta:.3g}, eps={eps:.3g}")
            if groups == 1 and rho < 1 / max(lam, 1e-300):
                paper.record(change[worst], eps / min(rho, 1 / lam - rho if lam > 0 else np.inf) + err[0] + err[1 + worst],
                             f"n={n}, seed={seed}, rho={rho:.3g}, lambda={lam:.3g}")

    strategy = st.tuples(
        st.integers(1, 4), st.integers(0, 2**31 - 1), st.floats(0.05, 0.95), st.floats(0.01, 2.0),
        st.sampled_from([1e-3, 1e-1, 1.0]), st.floats(-2.0, 4.0),
    )
    run_property(strategy, case, ctx.examples(20, 300))


@theorem("MG-C2", "Sparse MoreauGrad stability: Corollary 2 refuted, corrected bound checked", "Zhang & Farnia, Corollary 2")
def check(ctx: CheckContext, report: Report) -> None:
    _counterexample(report)
    _envelope_slope(report)
    _corrected_bound(report, ctx)
