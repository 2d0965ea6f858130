"""MG-T1.2. Zhang & Farnia, MoreauGrad, Theorem 1(2) (sign as in DESIGN section 3).

If g is lambda-weakly convex and 0 < rho < 1/lambda, with z*(x) = argmin_z g(z) + ||z - x||^2/(2 rho):

    grad g^rho(x) = (x - z*(x)) / rho.

(The paper's Algorithm 1 and Definition 5 write the opposite sign; the package follows this theorem.)
Checked on random one-hidden-layer softplus networks g = f_c with exact lambda and rho = fraction/lambda:
central finite differences of the envelope value (float64 reference solves at x +- h d, h = 1e-4) against
<MG(x), d> with MG the package's explanation at x, along random unit directions d.
"""

from __future__ import annotations

from hypothesis import strategies as st

from proofs_checks.framework import CheckContext, Report, run_property, theorem
from proofs_checks.moreau_support import envelope_slope_case
from proofs_checks.nets import NetSpec, net_specs


@theorem("MG-T1.2", "Envelope gradient formula (x - z*)/rho", "Zhang & Farnia, Theorem 1(2)")
def check(ctx: CheckContext, report: Report) -> None:
    tally = report.tally("finite-difference envelope slope == <(x - z*)/rho, d>", kind="property")

    def case(args: tuple[NetSpec, float, int]) -> None:
        spec, fraction, seed = args
        c = envelope_slope_case(spec, fraction, seed)
        for slope, predicted in zip(c.slopes.tolist(), (c.directions @ c.center.attributions[0]).tolist()):
            tally.record_close(slope, predicted, 1e-6 * (1 + abs(predicted)), c.describe(spec))

    strategy = st.tuples(net_specs(act="softplus", max_depth=1, max_width=16), st.floats(0.1, 0.9), st.integers(0, 10**6))
    run_property(strategy, case, ctx.examples(10, 80))
