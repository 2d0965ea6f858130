"""MG-T2. Zhang & Farnia, MoreauGrad, Theorem 2 (sparse and group-sparse envelopes).

For g^{rho,eta}(x) = min_z g(z) + ||z - x||^2/(2 rho) + eta ||z - x||_1 with minimiser z*, and the soft
threshold ST_a(v)_i = sign(v_i) max(|v_i| - a, 0):

    ST_{rho eta}(-rho grad g^{rho,eta}(x)) = z* - x,

and with non-overlapping groups S and GST_a(v)_S = max(0, 1 - a/||v_S||_2) v_S the same identity holds
for the group-sparse envelope (penalty eta sum_S ||(z - x)_S||_2).

Both rest on the proximal identities checked here (symbolic half):

    ST_a  = prox_{a |.|_1}      i.e. ST_a(v)  = argmin_z a ||z||_1 + ||z - v||^2 / 2,
    GST_a = prox_{a ||.||_2}    i.e. GST_a(v) = argmin_z a ||z||_2 + ||z - v||^2 / 2,

proved by the optimality condition 0 in a d||z|| + z - v on every region (the objectives are 1-strongly
convex, so a point satisfying it is the unique minimiser), and checked numerically against an exact
convex solve (CVXPY) on random vectors: the closed form's objective is never above the solver's.

Solver half: at computed optima of the sparse and group-sparse problems on random one-hidden-layer softplus
networks (float64, residual 1e-11, rho below 1/lambda with lambda exact), grad g^{rho,eta}(x) = grad f_c(z*)
(inf-convolution with a smooth f_c; checked by central finite differences of the sparse envelope value), and

    ST_{rho eta}(-rho grad f_c(z*)) = z* - x,   GST_{rho eta}(-rho grad f_c(z*)) = z* - x (contiguous groups),

which with S-MG = (x - z*)/rho is S-MG = ST_eta(grad g^{rho,eta}(x)) (DESIGN section 4.1; ST is odd and
positively homogeneous). Tolerance 1e-8 (the fixed-point map is rho-Lipschitz in the residual).
"""
from __future__ import annotations

import cvxpy as cp
import numpy as np
import sympy as sp
import torch
from hypothesis import strategies as st

from certify.explain.prox import group_soft_threshold, soft_threshold
from certify.scores import score_gradients
from proofs_checks.framework import CheckContext, Report, run_property, theorem
from proofs_checks.moreau_support import envelope_slope_case, one_hidden_curvature, reference, rho_below
from proofs_checks.nets import NetSpec, net_specs


def soft_threshold_np(v: np.ndarray, a: float) -> np.ndarray:
    return np.sign(v) * np.maximum(np.abs(v) - a, 0.0)


def group_soft_threshold_np(v: np.ndarray, a: float) -> np.ndarray:
    norm = np.linalg.norm(v)
    return np.zeros_like(v) if norm <= a else (1.0 - a / norm) * v


def _symbolic_soft_threshold(report: Report) -> None:
    t = report.tally("ST_a = prox_{a|.|} (optimality on each region)", kind="symbolic")
    a, s = sp.symbols("a s", positive=True)
    v = sp.Symbol("v", real=True)
    closed_form = sp.sign(v) * sp.Max(sp.Abs(v) - a, 0)
    # v = a + s > a: z = v - a > 0, derivative a*sign(z) + z - v = a + z - v
    z = closed_form.subs(v, a + s)
    t.record_true(sp.simplify(z - s) == 0, "v > a: ST gives v - a")
    t.record_true(sp.simplify(a * 1 + z - (a + s)) == 0, "v > a: stationarity a + z - v = 0")
    # v = -(a + s) < -a: z = v + a < 0, derivative -a + z - v
    z = closed_form.subs(v, -(a + s))
    t.record_true(sp.simplify(z + s) == 0, "v < -a: ST gives v + a")
    t.record_true(sp.simplify(-a + z + (a + s)) == 0, "v < -a: stationarity -a + z - v = 0")
    # |v| <= a: z = 0, and 0 in a[-1, 1] - v  <=>  v/a in [-1, 1]
    w = sp.Symbol("w", real=True)  # v = a*w with |w| <= 1
    inside = closed_form.subs(v, a * w)
    t.record_true(
        sp.simplify(inside.subs(w, sp.Rational(1, 3))) == 0 and sp.simplify(inside.subs(w, -1)) == 0,
        "|v| <= a: ST gives 0",
    )


def _symbolic_group_soft_threshold(report: Report) -> None:
    t = report.tally("GST_a = prox_{a||.||_2} in R^3 (optimality on each region)", kind="symbolic")
    a = sp.Symbol("a", positive=True)
    v = sp.Matrix(sp.symbols("v1:4", real=True))
    r = sp.sqrt(sum(c**2 for c in v))
    z = (1 - a / r) * v  # the case ||v|| > a
    z_norm = r - a  # ||z|| = (1 - a/r) r since 1 - a/r > 0 there
    t.record_true(sp.simplify(sum(c**2 for c in z) - z_norm**2) == 0, "||v|| > a: ||GST(v)|| = ||v|| - a")
    stationarity = a * z / z_norm + z - v
    t.record_true(all(sp.simplify(c) == 0 for c in stationarity), "||v|| > a: a z/||z|| + z - v = 0")
    # ||v|| <= a (z = 0, since the subdifferential of ||.|| at 0 is the unit ball) is covered numerically below
    # groups of size 1 reduce GST to ST
    x = sp.Symbol("x", real=True)
    gst_1d = sp.Piecewise((0, sp.Abs(x) <= a), ((1 - a / sp.Abs(x)) * x, True))
    st_1d = sp.sign(x) * sp.Max(sp.Abs(x) - a, 0)
    agree = all(sp.simplify((gst_1d - st_1d).subs({x: val, a: 1})) == 0 for val in (-3, -1, 0, sp.Rational(1, 2), 2, 5))
    t.record_true(agree, "groups of size 1: GST = ST")


def _numeric_prox(report: Report, ctx: CheckContext) -> None:
    t_st = report.tally("objective at ST_a(v) <= objective at the CVXPY (Clarabel) prox", kind="property")
    t_gst = report.tally("objective at GST_a(v) <= objective at the CVXPY (Clarabel) prox", kind="property")

    def case(args: tuple[list[float], float]) -> None:
        values, a = args
        v = np.array(values)
        z = cp.Variable(v.size)
        for penalty, norm, formula, tally in (
            (cp.norm1(z), lambda u: np.abs(u).sum(), soft_threshold_np(v, a), t_st),
            (cp.norm2(z), np.linalg.norm, group_soft_threshold_np(v, a), t_gst),
        ):
            problem = cp.Problem(cp.Minimize(a * penalty + 0.5 * cp.sum_squares(z - v)))
            problem.solve(solver=cp.CLARABEL)
            if problem.status != cp.OPTIMAL:
                continue  # an inaccurate solve is no reference; the case is not counted
            objective = lambda u: a * norm(u) + 0.5 * float(np.sum((u - v) ** 2))  # noqa: E731
            # the closed form is the minimiser, so no other point (the solver's included) may do better
            tally.record(objective(formula), objective(z.value), f"v={v.round(4).tolist()}, a={a:.4g}", atol=1e-12)

    vectors = st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=8)
    run_property(st.tuples(vectors, st.floats(0.01, 3.0)), case, ctx.examples(25, 200))


def _solver_optima(report: Report, ctx: CheckContext) -> None:
    t_st = report.tally("ST_{rho eta}(-rho grad f_c(z*)) == z* - x at computed sparse optima", kind="property")
    t_gst = report.tally("GST_{rho eta}(-rho grad f_c(z*)) == z* - x at computed group-sparse optima", kind="property")
    t_fd = report.tally("finite-difference slope of the sparse envelope == <grad f_c(z*), d>", kind="property")

    def case(args: tuple[NetSpec, float, float, int]) -> None:
        spec, fraction, eta, seed = args
        net = spec.build()
        lam, _ = one_hidden_curvature(net, 0, spec.beta)
        rho = rho_below(lam, fraction)
        x = torch.randn(4, spec.inputs, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        target = torch.zeros(4, dtype=torch.long)
        label = f"{spec}, rho={rho:.4g}, eta={eta:.3g}"
        group_size = next(g for g in (3, 2, 1) if spec.inputs % g == 0)
        for tally, prox, groups in (
            (t_st, lambda v: soft_threshold(v, rho * eta), None),
            (t_gst, lambda v: group_soft_threshold(v, rho * eta, group_size), group_size),
        ):
            _, explanation = reference(net, x, 0, rho, eta, groups)
            z = explanation.diagnostics["z"]
            identity = prox(-rho * score_gradients(net, z, target)[1]) - (z - x)
            tally.record_close(float(identity.abs().max()), 0.0, 1e-8, f"{label}, groups={groups}")
        c = envelope_slope_case(spec, fraction, seed, sparsity=eta)
        grad_at_z = score_gradients(c.net, c.center.diagnostics["z"], target[:1])[1][0]
        for slope, predicted in zip(c.slopes.tolist(), (c.directions @ grad_at_z).tolist()):
            t_fd.record_close(slope, predicted, 1e-6 * (1 + abs(predicted)), c.describe(spec))

    strategy = st.tuples(net_specs(act="softplus", max_depth=1, max_width=16), st.floats(0.1, 0.9),
                         st.floats(0.01, 1.0), st.integers(0, 10**6))
    run_property(strategy, case, ctx.examples(8, 60))


@theorem("MG-T2", "Sparse and group-sparse MoreauGrad: ST / GST identities", "Zhang & Farnia, Theorem 2")
def check(ctx: CheckContext, report: Report) -> None:
    _symbolic_soft_threshold(report)
    _symbolic_group_soft_threshold(report)
    _numeric_prox(report, ctx)
    _solver_optima(report, ctx)
