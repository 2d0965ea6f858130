"""LD-SOUND, second half (verification; DESIGN section 6, ANCHORS 4.12): on tiny ReLU networks, for every
input and every certified lower-bound method,

    certified lower bound on r*  <=  exact r* (MILP)  <=  ||delta||_p of every verified witness,

with r*(x) = min { ||delta||_p : x + delta in [0, 1]^d, argmax f(x + delta) != c }, p in {1, inf}.
The MILP value is solver-reported (HiGHS, relative MIP gap 1e-9 and feasibility tolerance 1e-9), so both
inequalities are checked with an absolute slack of 1e-7 (far above the solver's tolerances on radii of
order 1e-2 .. 1, far below any real violation). 0 violations are required.

Not registered as a row: `radius_soundness(ctx, report)` is wired into the LD-SOUND row by the lead.
The tiny networks follow ANCHORS 4.10: 6-12-12-3 ReLU MLPs (default init, weights x4, biases x2),
inputs x ~ U[0.3, 0.7]^6, domain [0, 1]^6; seeds are recorded in every case name.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from certify.radius_bounds import RadiusBounds, minimal_radius_bounds
from certify.models.builders import mlp
from proofs_checks.framework import CheckContext, Report

SLACK = 1e-7
DOMAIN = (0.0, 1.0)


def tiny_relu_net(seed: int) -> nn.Sequential:
    """A 6-12-12-3 ReLU MLP in float64 (PyTorch's default init from `seed`, weights x4, biases x2)."""
    with torch.random.fork_rng():  # leave the global RNG as it was
        torch.manual_seed(seed)
        net = mlp(6, 3, (12, 12), "relu").double()
    with torch.no_grad():
        for module in net:
            if isinstance(module, nn.Linear):
                module.weight.mul_(4.0)
                module.bias.mul_(2.0)
    return net.eval()


def tiny_inputs(seed: int, count: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1000 + seed)
    return 0.3 + 0.4 * torch.rand(count, 6, generator=generator, dtype=torch.float64)


def tiny_net_bounds(
    seed: int, count: int, p: float, lower_methods: tuple[str, ...], max_iter: int = 200
) -> tuple[torch.Tensor, RadiusBounds]:
    """Inputs and all bounds on r* for the tiny net of `seed` (the MILP always runs)."""
    x = tiny_inputs(seed, count)
    bounds = minimal_radius_bounds(
        tiny_relu_net(seed), x, p=p, domain=DOMAIN, lower_methods=lower_methods, exact=True, max_iter=max_iter
    )
    return x, bounds


def radius_soundness(ctx: CheckContext, report: Report) -> None:
    """certified lower <= exact <= witnessed upper, per lower-bound method, on tiny ReLU nets."""
    methods = ("lipschitz", "ibp", "crown") if ctx.quick else ("lipschitz", "ibp", "crown", "lp")
    lower_tally = report.tally("certified lower bound <= exact r* (MILP)", kind="property")
    upper_tally = report.tally("exact r* (MILP) <= verified witness norm", kind="property")
    checked = report.tally("every example had an optimal MILP and a verified witness", kind="property")
    for seed in range(ctx.examples(1, 6)):
        for p in (math.inf, 1.0):
            _, bounds = tiny_net_bounds(seed, ctx.examples(3, 8), p, methods)
            exact = bounds.exact
            for i in range(exact.shape[0]):
                case = f"tiny net seed {seed}, p={p}, example {i}"
                checked.record_true(bool(torch.isfinite(exact[i])) and bool(torch.isfinite(bounds.upper[i])), case)
                if not torch.isfinite(exact[i]):
                    continue
                for method in methods:
                    result = bounds.results[method]
                    if result.refused:
                        continue
                    lower_tally.record(float(result.value[i]), float(exact[i]), f"{case}, {result.method}", atol=SLACK)
                upper_tally.record(float(exact[i]), float(bounds.upper[i]), case, atol=SLACK)
    report.note("Exact r* is solver-reported (HiGHS MILP, gap 1e-9); slack 1e-7 absolute on both inequalities.")
