"""LD-SOUND. Verification-layer soundness (DESIGN section 5; ANCHORS 4.10, 4.12).

First half, margin bounds:

For a network f, an input x0 with class c, the set S = {x : ||x - x0||_p <= eps} intersected with the
domain [0, 1]^n, and every j != c, each certified lower bound B_j of the margin m_cj = f_c - f_j over S
(IBP, CROWN, the triangle LP with LP-tightened intermediate bounds) satisfies

    B_j <= min_{x in S} m_cj(x)  (the exact value by MILP for ReLU nets, p in {1, inf})
    B_j <= m_cj(x)               for every x in S observed (random samples and a PGD attack),

and, for exact optima, LP(LP-tightened boxes) >= CROWN on the same set (the LP's feasible set lies inside
the region CROWN bounds, with boxes at least as tight): asserted up to the solver tolerance, every
crossing reported. How often IBP beats CROWN is reported without assertion.

Second half, radii (`proofs_checks.ld_sound_radius`): on tiny ReLU nets, every certified lower bound on
the minimal flipping radius r* <= exact r* (MILP) <= the norm of every verified flipping witness.
"""
from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

from certify.bounds.crown import margin_lower_bounds
from certify.bounds.lp import lp_margin_lower_bounds
from certify.bounds.milp import exact_margin_lower_bounds
from certify.bounds.network import from_module
from certify.bounds.sets import InputSet
from proofs_checks.framework import CheckContext, Report, run_property, theorem
from proofs_checks.ld_sound_radius import radius_soundness
from proofs_checks.nets import net_specs

LP_TOLERANCE = 1e-7  # relative/absolute slack for LP >= CROWN (solver accuracy of the duals)


def _observed_min_margins(net, input_set: InputSet, target: torch.Tensor, seed: int) -> torch.Tensor:
    """Smallest margins [N, K] seen at random points of S and along a PGD attack on each margin."""
    g = torch.Generator().manual_seed(seed)
    n, size = input_set.center.shape
    p = input_set.p

    def project(points: torch.Tensor) -> torch.Tensor:
        d = points - input_set.center
        if p == math.inf:
            d = d.clamp(-input_set.eps[:, None], input_set.eps[:, None])
        elif p == 2:
            norm = d.norm(dim=-1, keepdim=True).clamp(min=1e-300)
            d = d * (input_set.eps[:, None] / norm).clamp(max=1)
        else:  # L1: shrink towards the centre (stays feasible; not the exact projection)
            norm = d.abs().sum(-1, keepdim=True).clamp(min=1e-300)
            d = d * (input_set.eps[:, None] / norm).clamp(max=1)
        # clipping into the domain keeps points in the ball (the domain contains the centre)
        return (input_set.center + d).clamp(input_set.lo, input_set.hi)

    def margins(points: torch.Tensor) -> torch.Tensor:
        out = net.forward(points)  # [..., N, K]
        return out.gather(-1, target[:, None].expand(*out.shape[:-1], 1)) - out

    samples = project(input_set.center + torch.randn(256, n, size, generator=g, dtype=torch.float64) * input_set.eps[:, None])
    best = margins(samples).min(0).values
    for j in range(net.num_classes):
        point = samples[0].clone().requires_grad_(True)
        step = (input_set.eps / 10).clamp(min=1e-6)[:, None]
        for _ in range(20):
            value = margins(point)[:, j].sum()
            (grad,) = torch.autograd.grad(value, point)
            direction = grad.sign() if p == math.inf else grad / grad.norm(dim=-1, keepdim=True).clamp(min=1e-300)
            point = project(point.detach() - step * direction).requires_grad_(True)
        best = torch.minimum(best, margins(point.detach()))
    return best


@theorem("LD-SOUND", "Certified margin lower bounds <= exact (MILP) and observed margins", "verification (DESIGN 5)")
def check(ctx: CheckContext, report: Report) -> None:
    below_observed = {m: report.tally(f"{m} bound <= observed margin (samples, PGD)") for m in ("IBP", "CROWN", "LP")}
    below_exact = {m: report.tally(f"{m} bound <= exact MILP margin (ReLU, p in 1, inf)") for m in ("IBP", "CROWN", "LP")}
    lp_vs_crown = report.tally("CROWN <= LP with LP-tightened boxes (up to solver tolerance)")
    ibp_wins = report.tally("fraction of margins where IBP beats CROWN", role="evidence", kind="measurement")
    crossings: list[str] = []

    def case(args) -> None:
        spec, p, eps, seed = args
        net = from_module(spec.build(), (spec.inputs,))
        g = torch.Generator().manual_seed(seed)
        x = 0.2 + 0.6 * torch.rand(2, spec.inputs, generator=g, dtype=torch.float64)
        target = net.forward(x).argmax(1)
        domain = (torch.zeros(spec.inputs, dtype=torch.float64), torch.ones(spec.inputs, dtype=torch.float64))
        input_set = InputSet.build(x, eps, p, domain)
        bounds = {m: margin_lower_bounds(net, x, target, eps, p, domain, m.lower()).value for m in ("IBP", "CROWN")}
        if spec.act == "relu":
            lp = lp_margin_lower_bounds(net, x, target, eps, p, domain)
            if not lp.refused:
                bounds["LP"] = lp.value
        off = torch.isfinite(bounds["CROWN"])
        observed = _observed_min_margins(net, input_set, target, seed)
        exact = None
        if spec.act == "relu" and p != 2:
            exact = exact_margin_lower_bounds(net, x, target, eps, p, domain).value
        label = f"{spec}, p={p}, eps={eps:.4g}"
        for method, value in bounds.items():
            for v, o in zip(value[off].tolist(), observed[off].tolist()):
                below_observed[method].record(v, o, label)
            if exact is not None:
                for v, e in zip(value[off].tolist(), exact[off].tolist()):
                    if math.isfinite(e):
                        below_exact[method].record(v, e, label, atol=1e-6)
        if "LP" in bounds:
            for c, l in zip(bounds["CROWN"][off].tolist(), bounds["LP"][off].tolist()):
                lp_vs_crown.record(c, l, label, rtol=LP_TOLERANCE, atol=LP_TOLERANCE)
                if c > l:
                    crossings.append(f"{label}: CROWN {c:.10g} > LP {l:.10g}")
        ibp_wins.observe(float((bounds["IBP"][off] > bounds["CROWN"][off]).double().mean()))

    strategy = st.tuples(
        net_specs(max_inputs=6, max_width=12, max_depth=2, classes=(2, 3)),
        st.sampled_from([1.0, 2.0, math.inf]),
        st.floats(0.01, 0.3),
        st.integers(0, 2**16),
    )
    run_property(strategy, case, ctx.examples(8, 80))
    report.note(f"LP below CROWN (within tolerance) in {len(crossings)} margins" + (f": {crossings[:5]}" if crossings else ""))
    radius_soundness(ctx, report)
