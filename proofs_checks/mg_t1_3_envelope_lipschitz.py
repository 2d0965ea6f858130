"""MG-T1.3. Zhang & Farnia, MoreauGrad, Theorem 1(3).

If g is lambda-weakly convex and 0 < rho < 1/lambda, grad g^rho is 1/min(rho, 1/lambda - rho)-Lipschitz:

    ||grad g^rho(x) - grad g^rho(x')||_2 <= ||x - x'||_2 / min(rho, 1/lambda - rho).

Checked (i) on random one-hidden-layer softplus networks (exact lambda from W1^T diag(min(v, 0) beta/4) W1)
over sampled pairs at several distances and over adversarial pairs along the eigenvector of f_c's most
extreme curvature at z*, through the solver, adding both solver-error bounds (the certificate's solver-error claim,
certified) to the right-hand side; (ii) tightness in closed form:
g = -lambda/2 ||x||^2 gives MG = -lambda x/(1 - rho lambda), slope 1/(1/lambda - rho), which equals the
bound when rho >= 1/(2 lambda) (also measured through the solver); g = |x1| - lambda/2 x2^2 gives
MG = (clip(x1/rho, -1, 1), -lambda x2/(1 - rho lambda)), Lipschitz constant max(1/rho, lambda/(1 - rho lambda))
= 1/rho, the bound, when rho < 1/(2 lambda) (checked symbolically and on pairs with |x1|, |x1'| < rho,
through the prox ST_rho since z* sits on the kink of |x1| when |x1| < rho).
"""
from __future__ import annotations

import sympy as sp
import torch
from hypothesis import strategies as st

from certify.explain.moreaugrad import MoreauGrad
from certify.explain.prox import soft_threshold
from proofs_checks.framework import CheckContext, Report, run_property, theorem
from proofs_checks.moreau_support import (QuadraticScore, one_hidden_curvature, one_hidden_hessian, reference, rho_below,
                                         solver_errors)
from proofs_checks.nets import NetSpec, net_specs


def _bound(rho: float, lam: float) -> float:
    return 1.0 / (rho if lam == 0 else min(rho, 1.0 / lam - rho))


def _random_pairs(report: Report, ctx: CheckContext) -> None:
    tally = report.tally("||MG(x) - MG(x')|| <= ||x - x'|| / min(rho, 1/lambda - rho) + solver errors")

    def case(args: tuple[NetSpec, float, int]) -> None:
        spec, fraction, seed = args
        net = spec.build()
        lam, _ = one_hidden_curvature(net, 0, spec.beta)
        rho = rho_below(lam, fraction)
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(4, spec.inputs, generator=gen, dtype=torch.float64)
        scales = torch.tensor([1e-2, 1e-1, 1.0, 3.0], dtype=torch.float64).unsqueeze(1)
        shifted = x + scales * torch.randn(4, spec.inputs, generator=gen, dtype=torch.float64)
        solver, explanation = reference(net, torch.cat([x, shifted]), 0, rho, tol=1e-9)
        errors = solver_errors(net, solver, explanation, lam)
        mg = explanation.attributions
        for i in range(4):
            distance = float((x[i] - shifted[i]).norm())
            observed = float((mg[i] - mg[4 + i]).norm())
            bound = distance * _bound(rho, lam) + float(errors[i] + errors[4 + i])
            tally.record(observed, bound, f"{spec}, rho={rho:.4g}, lambda={lam:.4g}, |dx|={distance:.3g}")

    strategy = st.tuples(net_specs(act="softplus", max_depth=1, max_width=16), st.floats(0.1, 0.95), st.integers(0, 10**6))
    run_property(strategy, case, ctx.examples(10, 80))


def _adversarial_pairs(report: Report, ctx: CheckContext) -> None:
    """Pairs x, x + t e with e the eigenvector of the most extreme curvature of f_c at z*(x): the local slope
    of MG along e is |h / (1 + rho h)|, the largest the envelope can show there."""
    tally = report.tally("adversarial pairs along extreme curvature: same inequality", kind="adversarial")

    def case(args: tuple[NetSpec, float, int]) -> None:
        spec, fraction, seed = args
        net = spec.build()
        lam, _ = one_hidden_curvature(net, 0, spec.beta)
        rho = rho_below(lam, fraction)
        x = torch.randn(1, spec.inputs, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        _, center = reference(net, x, 0, rho, tol=1e-10)
        values, vectors = torch.linalg.eigh(one_hidden_hessian(net, 0, spec.beta, center.diagnostics["z"][0]))
        worst = int(torch.argmax((values / (1 + rho * values)).abs()))
        shifted = x + torch.tensor([[1e-3], [1e-2], [1e-1]], dtype=torch.float64) * vectors[:, worst]
        solver, explanation = reference(net, torch.cat([x, shifted]), 0, rho, tol=1e-10)
        errors = solver_errors(net, solver, explanation, lam)
        mg = explanation.attributions
        for i in range(1, 4):
            distance = float((shifted[i - 1] - x[0]).norm())
            bound = distance * _bound(rho, lam) + float(errors[0] + errors[i])
            tally.record(float((mg[i] - mg[0]).norm()), bound, f"{spec}, rho={rho:.4g}, lambda={lam:.4g}, |dx|={distance:.0e}")

    strategy = st.tuples(net_specs(act="softplus", max_depth=1, max_width=16), st.floats(0.1, 0.95), st.integers(0, 10**6))
    run_property(strategy, case, ctx.examples(10, 80))


def _symbolic_tightness(report: Report) -> None:
    tally = report.tally("closed-form tightness cases reach the bound", kind="symbolic")
    lam, rho, x, z = sp.symbols("lambda rho x z", positive=True)
    z_star = sp.solve(sp.diff(-lam / 2 * z**2 + (z - x) ** 2 / (2 * rho), z), z)[0]
    slope = sp.diff((x - z_star) / rho, x)  # MG of -lambda/2 x^2 is linear in x
    tally.record_true(sp.simplify(slope + lam / (1 - rho * lam)) == 0, "g = -lambda/2 x^2: MG slope = -lambda/(1 - rho lambda)")
    tally.record_true(sp.simplify(lam / (1 - rho * lam) - 1 / (1 / lam - rho)) == 0, "|slope| = 1/(1/lambda - rho)")
    # (1/lambda - rho) - rho = (1 - 2 rho lambda)/lambda <= 0 iff rho >= 1/(2 lambda): the bound is then 1/(1/lambda - rho)
    tally.record_true(sp.simplify((1 / lam - rho) - rho - (1 - 2 * rho * lam) / lam) == 0,
                      "min(rho, 1/lambda - rho) = 1/lambda - rho exactly when rho >= 1/(2 lambda)")
    # |x1| - lambda/2 x2^2 with rho < 1/(2 lambda): Huber slope 1/rho on |x1| < rho dominates lambda/(1 - rho lambda)
    gap = sp.simplify(1 / rho - lam / (1 - rho * lam))
    tally.record_true(sp.simplify(gap - (1 - 2 * rho * lam) / (rho * (1 - rho * lam))) == 0,
                      "1/rho - lambda/(1 - rho lambda) = (1 - 2 rho lambda)/(rho (1 - rho lambda)) > 0 for rho < 1/(2 lambda)")
    huber = sp.Piecewise((x**2 / (2 * rho), x <= rho), (x - rho / 2, True))
    tally.record_true(sp.simplify(sp.diff(huber.args[0][0], x, 2) - 1 / rho) == 0, "Huber envelope of |x|: slope 1/rho on |x| < rho")


def _measured_tightness(report: Report) -> None:
    tally = report.tally("measured Lipschitz ratio / bound == 1 on the tight cases", kind="closed-form")
    gen = torch.Generator().manual_seed(3)
    for lam, rho in ((1.0, 0.5), (2.0, 0.4), (1.0, 0.9)):  # rho >= 1/(2 lambda): g = -lambda/2 ||x||^2
        n = 3
        model = QuadraticScore(-lam * torch.eye(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)).eval()
        x = torch.randn(2, n, generator=gen, dtype=torch.float64)
        mg = MoreauGrad(model, rho=rho, tol=1e-12, max_iter=20000).attribute(x, 0)
        ratio = float((mg[0] - mg[1]).norm() / (x[0] - x[1]).norm()) / _bound(rho, lam)
        tally.record_close(ratio, 1.0, 1e-8, f"-lambda/2||x||^2, lambda={lam}, rho={rho}")
    for lam, rho in ((1.0, 0.3), (2.0, 0.1)):  # rho < 1/(2 lambda): g = |x1| - lambda/2 x2^2, |x1| < rho
        x = torch.tensor([[0.2 * rho, 1.0], [-0.5 * rho, -0.3]], dtype=torch.float64)
        mg1 = (x[:, 0] - soft_threshold(x[:, 0], rho)) / rho  # prox of rho |.| is ST_rho
        mg2 = -lam * x[:, 1] / (1 - rho * lam)
        ratio_1 = float((mg1[0] - mg1[1]).abs() / (x[0, 0] - x[1, 0]).abs()) / _bound(rho, lam)
        tally.record_close(ratio_1, 1.0, 1e-12, f"|x1| - lambda/2 x2^2 along x1, lambda={lam}, rho={rho}")
        ratio_2 = float((mg2[0] - mg2[1]).abs() / (x[0, 1] - x[1, 1]).abs()) / _bound(rho, lam)
        tally.record(ratio_2, 1.0, f"along x2 (strictly below the bound), lambda={lam}, rho={rho}")


@theorem("MG-T1.3", "Lipschitz constant of the envelope gradient", "Zhang & Farnia, Theorem 1(3)")
def check(ctx: CheckContext, report: Report) -> None:
    _random_pairs(report, ctx)
    _adversarial_pairs(report, ctx)
    _symbolic_tightness(report)
    _measured_tightness(report)
