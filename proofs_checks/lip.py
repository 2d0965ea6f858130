"""LIP. Lipschitz constants (verification layer; DESIGN section 5, ANCHORS 4.6).

For f = the logit vector (||f(x) - f(y)||_2 <= L ||x - y||_2) and for a margin f_0 - f_1, on random small
ReLU and softplus MLPs:

    sampled gradient-norm estimate  <=  LipSDP-Neuron  <=  LipSDP-Layer  <=  product of layer norms   (l2).

The first inequality is a theorem for any certified constant (every local gradient norm is at most the
Lipschitz constant); the rigorous LipSDP values are re-derived from the SCS multipliers, so they are
certified and the first inequality must hold exactly. Neuron <= Layer and Layer <= product hold for exact
optima (the Layer multipliers are feasible for Neuron; Fazlyab et al. 2019, the product bound corresponds
to a feasible Layer multiplier), but the re-derived values come from inexact solves and may cross by the
solver tolerance: asserted with relative tolerance 1e-3, and the crossings are reported.
"""
from __future__ import annotations

import torch
from hypothesis import strategies as st

from certify.bounds.lipschitz import lipschitz_estimate, lipschitz_product
from certify.bounds.lipsdp import lipsdp
from certify.bounds.network import from_module
from proofs_checks.framework import CheckContext, Report, run_property, theorem
from proofs_checks.nets import net_specs

SOLVER_RTOL = 1e-3


@theorem("LIP", "sampled <= LipSDP-Neuron <= LipSDP-Layer <= product of norms (l2)", "Fazlyab et al. 2019; DESIGN section 5")
def check(ctx: CheckContext, report: Report) -> None:
    estimate_le = report.tally("gradient-norm estimate <= LipSDP-Neuron (certified)")
    neuron_le_layer = report.tally(f"LipSDP-Neuron <= LipSDP-Layer (rtol {SOLVER_RTOL})")
    layer_le_product = report.tally(f"LipSDP-Layer <= product of norms (rtol {SOLVER_RTOL})")
    crossings = report.tally("relative excess of LipSDP over the product bound (> 0 is a crossing)", role="evidence", kind="measurement")
    tightness = report.tally("LipSDP-Neuron / product", role="evidence", kind="measurement")
    refusals = report.tally("LipSDP refusals (solver not optimal or multipliers not certifying)", role="evidence", kind="measurement")

    def case(args) -> None:
        spec, seed = args
        net = from_module(spec.build(), (spec.inputs,))
        margin = torch.zeros(1, spec.classes, dtype=torch.float64)
        margin[0, 0], margin[0, 1] = 1.0, -1.0
        x = torch.randn(4, spec.inputs, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        for label, c in (("logits", None), ("margin 0-1", margin)):
            neuron, layer = lipsdp(net, "neuron", c), lipsdp(net, "layer", c)
            refusals.observe(float(neuron.refused) + float(layer.refused))
            if neuron.refused or layer.refused:
                report.note(f"{spec} {label}: refused: {neuron.reason or layer.reason}")
                continue
            product = float(lipschitz_product(net, 2, c).value.reshape(-1)[0])
            estimate = float(lipschitz_estimate(net, x, 2, c, radius=1.0, samples=32, steps=10, seed=seed).value.reshape(-1)[0])
            n_value, l_value = float(neuron.value.reshape(-1)[0]), float(layer.value.reshape(-1)[0])
            case_id = f"{spec} {label}"
            estimate_le.record(estimate, n_value, case_id)
            neuron_le_layer.record(n_value, l_value, case_id, rtol=SOLVER_RTOL)
            layer_le_product.record(l_value, product, case_id, rtol=SOLVER_RTOL)
            crossings.observe(l_value / product - 1.0)
            tightness.observe(n_value / product)

    run_property(st.tuples(net_specs(max_width=12), st.integers(0, 2**31 - 1)), case, ctx.examples(10, 60))
