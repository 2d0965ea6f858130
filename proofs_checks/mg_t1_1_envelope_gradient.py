"""MG-T1.1. Zhang & Farnia, MoreauGrad, Theorem 1(1).

If g is lambda-weakly convex and 0 < rho < 1/lambda, the Moreau envelope
g^rho(x) = min_z g(z) + ||z - x||^2/(2 rho) is differentiable and its gradient lies in the Clarke
subdifferential of g at the minimiser z*(x); where g is differentiable at z*:

    grad g^rho(x) = grad g(z*(x)).

Checked on random one-hidden-layer softplus networks g = f_c (differentiable everywhere), with lambda
computed exactly from the Hessian bound W1^T diag(min(v, 0) beta/4) W1, rho = lambda-safe: central finite
differences of the envelope value (float64 reference solves at x +- h d, h = 1e-4) against
<grad f_c(z*), d> along random unit directions d. ReLU networks (Clarke subgradients) are not checked here.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from certify.scores import score_gradients
from proofs_checks.framework import CheckContext, Report, run_property, theorem
from proofs_checks.moreau_support import envelope_slope_case
from proofs_checks.nets import NetSpec, net_specs


@theorem("MG-T1.1", "Envelope gradient equals the gradient at the proximal point", "Zhang & Farnia, Theorem 1(1)")
def check(ctx: CheckContext, report: Report) -> None:
    tally = report.tally("finite-difference envelope slope == <grad f_c(z*), d>", kind="property")

    def case(args: tuple[NetSpec, float, int]) -> None:
        spec, fraction, seed = args
        c = envelope_slope_case(spec, fraction, seed)
        z = c.center.diagnostics["z"]
        grad_at_z = score_gradients(c.net, z, torch.zeros(1, dtype=torch.long))[1][0]
        for slope, predicted in zip(c.slopes.tolist(), (c.directions @ grad_at_z).tolist()):
            tally.record_close(slope, predicted, 1e-6 * (1 + abs(predicted)), c.describe(spec))

    strategy = st.tuples(net_specs(act="softplus", max_depth=1, max_width=16), st.floats(0.1, 0.9), st.integers(0, 10**6))
    run_property(strategy, case, ctx.examples(10, 80))
