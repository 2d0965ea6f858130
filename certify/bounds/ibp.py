"""Interval bound propagation (IBP; Gowal et al. 2018, as in auto_LiRPA's IBP mode).

For z = W h + b with h in the box [l, u], centre m = (l + u)/2 and radius r = (u - l)/2:

    z in [W m + b - |W| r,  W m + b + |W| r]     (exact for a box),

and an activation maps [l, u] into its rigorous image (`Activation.image`: [sigma(l), sigma(u)] for a
nondecreasing one; GELU and SiLU reach their minimum inside). Each step is widened by its float64
rounding error (`certify.bounds.sets.rounding_margin`), so the boxes are rigorous for the float64 network.
"""
from __future__ import annotations

import torch
from torch import Tensor

from certify.bounds.network import AffineNetwork
from certify.bounds.sets import InputSet, rounding_margin

Box = tuple[Tensor, Tensor]


def affine_interval(weight: Tensor, bias: Tensor, lower: Tensor, upper: Tensor) -> Box:
    """Box of W h + b over h in [lower, upper] ([N, n]). weight is [m, n] or per example [N, m, n],
    bias [m] or [N, m]."""
    mid, rad = (upper + lower) / 2, (upper - lower) / 2
    w_abs = weight.abs()
    if weight.dim() == 2:
        centre = mid @ weight.T + bias
        spread = rad @ w_abs.T
        magnitude = mid.abs() @ w_abs.T + bias.abs() + spread
    else:
        centre = (weight @ mid[..., None])[..., 0] + bias
        spread = (w_abs @ rad[..., None])[..., 0]
        magnitude = (w_abs @ mid.abs()[..., None])[..., 0] + bias.abs() + spread
    slack = rounding_margin(magnitude, weight.shape[-1] + 2)
    return centre - spread - slack, centre + spread + slack


def interval_bounds(net: AffineNetwork, input_set: InputSet, spec: Tensor | None = None,
                    layers: int | None = None, box: Box | None = None) -> list[Box]:
    """Boxes of every pre-activation z_0..z_{L-1} ([N, width] each; the last are the logits), or of the first
    `layers` of them (e.g. L - 1: the hidden ones only); `box` is `input_set.box()` where the caller has it.
    With `spec` C [N, m, classes] the last box bounds C z_{L-1} (e.g. the margins) instead of the logits,
    through the merged map (C W, C b). A layer with skips, z_k = W_k h_k + b_k + sum_j S_kj h_j, is one
    affine map of the stacked boxes of h_k and the h_j it reads (the matrix [W_k, S_kj, ...]), so its box
    is as exact as a chain layer's."""
    lower, upper = input_set.box() if box is None else box
    values: list[Box] = [(lower, upper)]  # boxes of h_0 = x, h_1, ...
    boxes: list[Box] = []
    for k, (weight, bias) in enumerate(zip(net.weights[:layers], net.biases)):
        skips = net.skips.get(k, {})
        if skips:
            weight = torch.cat([weight, *skips.values()], dim=1)
            lower = torch.cat([lower, *(values[j][0] for j in skips)], dim=-1)
            upper = torch.cat([upper, *(values[j][1] for j in skips)], dim=-1)
        if k == net.depth - 1 and spec is not None:
            weight, bias = spec @ weight, spec @ bias
        lower, upper = affine_interval(weight, bias, lower, upper)
        boxes.append((lower, upper))
        if k < len(net.activations) and k + 1 != layers:
            lower, upper = net.activations[k].image(lower, upper)
            values.append((lower, upper))
    return boxes
