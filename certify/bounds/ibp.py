"""Interval bound propagation (IBP; Gowal et al. 2018, as in auto_LiRPA's IBP mode).

For z = W h + b with h in the box [l, u], centre m = (l + u)/2 and radius r = (u - l)/2:

    z in [W m + b - |W| r,  W m + b + |W| r]     (exact for a box),

and a monotone activation maps [l, u] to [sigma(l), sigma(u)]. Each step is widened by its float64
rounding error (`certify.bounds.sets.rounding_margin`), so the boxes are rigorous for the float64 network.
"""
from __future__ import annotations

from torch import Tensor

from certify.bounds.network import AffineNetwork
from certify.bounds.sets import InputSet, rounding_margin

Box = tuple[Tensor, Tensor]


def affine_interval(weight: Tensor, bias: Tensor, lower: Tensor, upper: Tensor) -> Box:
    """Box of W h + b over h in [lower, upper] ([N, n]). weight is [m, n] or per example [N, m, n],
    bias [m] or [N, m]."""
    mid, rad = (upper + lower) / 2, (upper - lower) / 2
    if weight.dim() == 2:
        centre = mid @ weight.T + bias
        spread = rad @ weight.abs().T
        magnitude = mid.abs() @ weight.abs().T + bias.abs() + spread
    else:
        centre = (weight @ mid[..., None])[..., 0] + bias
        spread = (weight.abs() @ rad[..., None])[..., 0]
        magnitude = (weight.abs() @ mid.abs()[..., None])[..., 0] + bias.abs() + spread
    slack = rounding_margin(magnitude, weight.shape[-1] + 2)
    return centre - spread - slack, centre + spread + slack


def interval_bounds(net: AffineNetwork, input_set: InputSet, spec: Tensor | None = None) -> list[Box]:
    """Boxes of every pre-activation z_1..z_L ([N, width] each). With `spec` C [N, m, classes] the last
    box bounds C z_L (e.g. the margins) instead of the logits, through the merged map (C W_L, C b_L)."""
    lower, upper = input_set.box()
    boxes: list[Box] = []
    for k, (weight, bias) in enumerate(zip(net.weights, net.biases)):
        if k == net.depth - 1 and spec is not None:
            weight, bias = spec @ weight, spec @ bias
        lower, upper = affine_interval(weight, bias, lower, upper)
        boxes.append((lower, upper))
        if k < len(net.activations):
            lo_lo, _ = net.activations[k].enclosure(lower)
            _, up_hi = net.activations[k].enclosure(upper)
            lower, upper = lo_lo, up_hi
    return boxes
