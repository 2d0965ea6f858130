"""MG-A1. Zhang & Farnia, MoreauGrad, Algorithm 1 (fixed-step proximal gradient), and its certificate.

For f_c with curvature between -lambda and beta (Hessian eigenvalues in [-lambda, beta]), rho < 1/lambda and
step gamma <= 1/(beta + 1/rho), the smooth part s(u) = f_c(x + u) + ||u||^2/(2 rho) is mu-strongly convex
(mu = 1/rho - lambda) and (beta + 1/rho)-smooth, so each gradient step contracts by max |1 - gamma h| over
h in [mu, beta + 1/rho], i.e. by 1 - gamma mu, and the prox of gamma eta P is nonexpansive:

    ||z_k - z*|| <= (1 - gamma mu)^k ||z_0 - z*||,   z_0 = x,         (vanilla and sparse modes)

a linear rate. Checked on random one-hidden-layer softplus networks with lambda and beta exact from the
Hessian bounds W1^T diag(min(v, 0) beta_act/4) W1 <= H <= W1^T diag(max(v, 0) beta_act/4) W1, against a
float64 reference z*_ref (accelerated, residual 1e-12; ||z*_ref - z*|| <= e = ||r_ref||/mu added on both sides).

Also checked here, as the package's solver certificate (DESIGN section 4.1): for any computed z with
minimal subgradient r, ||MG_computed - MG_exact|| <= ||r||/(1 - rho lambda) (the value of the certificate's
solver-error claim, `certify.certificates.issuers.moreaugrad.exact_solver_error`), against a reference
solve to residual 1e-10 (its own error bound added), on runs stopped early at residual 1e-2 .. 1e-6.
"""
from __future__ import annotations

import torch
from hypothesis import strategies as st

from certify.explain.moreaugrad import MoreauGrad
from proofs_checks.framework import CheckContext, Report, run_property, theorem
from proofs_checks.moreau_support import one_hidden_curvature, reference, rho_below, solver_errors
from proofs_checks.nets import NetSpec, net_specs

STEPS = (5, 10, 20, 40)


@theorem("MG-A1", "Linear convergence of Algorithm 1; solver-error certificate", "Zhang & Farnia, Algorithm 1")
def check(ctx: CheckContext, report: Report) -> None:
    rate = report.tally("||z_k - z*|| <= (1 - gamma mu)^k ||x - z*|| (fixed step <= 1/(beta + 1/rho))")
    certificate = report.tally("||MG - MG_ref|| <= solver-error claim + reference error (residual 1e-10)")

    def case(args: tuple[NetSpec, float, float, float, int]) -> None:
        spec, fraction, step_fraction, eta, seed = args
        net = spec.build()
        lam, beta = one_hidden_curvature(net, 0, spec.beta)
        rho = rho_below(lam, fraction)
        mu, gamma = 1.0 / rho - lam, step_fraction / (beta + 1.0 / rho)
        x = torch.randn(3, spec.inputs, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        ref_solver, ref = reference(net, x, 0, rho, eta, tol=1e-10)
        ref_error = ref.diagnostics["residual_norm"] / mu
        z_ref = ref.diagnostics["z"]
        start = (x - z_ref).norm(dim=1)
        label = f"{spec}, rho={rho:.4g}, lambda={lam:.4g}, beta={beta:.4g}, gamma={gamma:.4g}, eta={eta:.3g}"
        for k in STEPS:
            solver = MoreauGrad(net, rho=rho, sparsity=eta, step=gamma, max_iter=k, tol=1e-300, method="fixed-step")
            z_k = solver.explain(x, 0).diagnostics["z"]
            observed = (z_k - z_ref).norm(dim=1)
            bound = (1 - gamma * mu) ** k * (start + ref_error) + ref_error
            for i in range(3):
                rate.record(float(observed[i]), float(bound[i]), f"{label}, k={k}", rtol=1e-9)
        ref_bound = solver_errors(net, ref_solver, ref, lam)
        for tol in (1e-2, 1e-4, 1e-6):
            solver = MoreauGrad(net, rho=rho, sparsity=eta, tol=tol)
            explanation = solver.explain(x, 0)
            bound = solver_errors(net, solver, explanation, lam) + ref_bound
            observed = (explanation.attributions - ref.attributions).norm(dim=1)
            for i in range(3):
                certificate.record(float(observed[i]), float(bound[i]), f"{label}, tol={tol:g}")

    strategy = st.tuples(
        net_specs(act="softplus", max_depth=1, max_width=16), st.floats(0.1, 0.95), st.floats(0.2, 1.0),
        st.sampled_from([0.0, 0.05, 0.3]), st.integers(0, 10**6),
    )
    run_property(strategy, case, ctx.examples(10, 80))
