"""Linear relaxation bounds by back-substitution: CROWN (Zhang et al. 2018) = the Wong-Kolter dual
network with lower slopes alpha (Salman et al. 2019; ANCHORS 4.1-4.2).

Every activation h = sigma(z) on a box [l, u] is replaced by the sound lines of `activations.relax`,

    lower line  sigma(z) >= a_l z + c_l,   upper line  sigma(z) <= a_u z + c_u   (for z in [l, u]),

(ReLU: a_l = alpha in [0, 1], c_l = 0 for an unstable unit, the chord above; softplus: a tangent at
l + alpha (u - l) below, the chord above; leaky ReLU, sigmoid, tanh, GELU, SiLU: see that module); the
code here never looks at the activation's name.

For a linear objective Lambda z_k (rows of Lambda), back-substitution replaces z_k = W_k h_k + b_k +
sum_j S_kj h_j (the graph of `AffineNetwork`: h_0 = x, h_{k+1} = sigma_k(z_k), skips S_kj from earlier h_j)
and each h = sigma(z) by its lower line where the coefficient is >= 0 and its upper line where it is < 0,
down to the input. On a graph the pass keeps one coefficient per h_j: substituting z_k adds Lambda_k W_k to
h_k's coefficient and Lambda_k S_kj to h_j's, and h_j is relaxed only after every consumer of it (z_j
and the skips of later layers) was substituted, which going down in layer order guarantees (a chain,
without skips, runs exactly the chain pass). The remaining linear function Lambda_0 x + const is
minimised over the input set by its lower support (sets.py). Any alpha in [0, 1] gives a valid bound,
so a checker re-runs one backward pass from the stored boxes and lines (`backward_lower_bound`) and needs
no optimality. Intermediate boxes come from the same pass applied to +-I at each layer, intersected with
the IBP boxes.

Rigour in float64: the lines are rigorous (`activations.relax` rounds them outward), and the pass
tracks |Lambda| through |W|, |S| and the slopes to subtract Higham's gamma_n bound on the accumulated
rounding error (including a coefficient whose sign rounding may flip, bounded by gamma_n |Lambda| times
the gap between the two lines).
"""
from __future__ import annotations

import torch
from torch import Tensor

from certify.bounds.activations import SLOPE_RULES, Relaxation, default_alpha, relax
from certify.bounds.ibp import Box, interval_bounds
from certify.bounds.network import AffineNetwork
from certify.bounds.results import BoundResult, Kind
from certify.bounds.sets import InputSet, rounding_margin
from certify.errors import UsageError
from certify.validation import check_target

METHODS = ("crown", "ibp")


def _rows(t: Tensor, like: Tensor) -> Tensor:
    """A per-unit tensor [N, n] viewed against coefficients [N, m, n]."""
    return t if t.dim() == like.dim() else t.unsqueeze(-2)


def backward_lower_bound(
    net: AffineNetwork,
    input_set: InputSet,
    layer: int,
    coeffs: Tensor,
    relaxations: list[Relaxation],
    boxes: list[Box],
    const: Tensor | None = None,
    layer_terms: dict[int, Tensor] | None = None,
) -> Tensor:
    """Rigorous lower bound on coeffs @ z_layer + const over the input set, [N, m].

    coeffs [N, m, n_layer]; relaxations[k] and boxes[k] (k < layer) for the activations below `layer`
    (their lines may be per unit [N, n_k] or per objective row [N, m, n_k]). Skip terms of the network are
    substituted into the coefficient of the h_j they read (module docstring); `terms`, the length of the
    longest chain of roundings, counts each skip's products and the addition that merges them.
    `layer_terms` {k: t_k [N, m, n_k]} (k < layer) adds sum_k t_k @ z_k to the objective (the split
    multipliers of branch and bound, certify.bounds.bab); None (the default) adds nothing."""
    lam = coeffs
    lam_abs = coeffs.abs()
    value = torch.zeros(coeffs.shape[:-1], dtype=coeffs.dtype, device=coeffs.device) if const is None else const
    magnitude = value.abs()
    terms = 0
    skipped: dict[int, tuple[Tensor, Tensor]] = {}  # coefficients of h_j gathered from the skips S_kj (k > j)
    for k in range(layer, -1, -1):
        if layer_terms is not None and k < layer and k in layer_terms:
            lam = lam + layer_terms[k]
            lam_abs = lam_abs + layer_terms[k].abs()
            terms += 1
        weight, bias = net.weights[k], net.biases[k]
        value = value + lam @ bias
        magnitude = magnitude + lam_abs @ bias.abs()
        for j, skip in net.skips.get(k, {}).items():
            part, part_abs = lam @ skip, lam_abs @ skip.abs()
            if j in skipped:
                part, part_abs = skipped[j][0] + part, skipped[j][1] + part_abs
            skipped[j] = (part, part_abs)
            terms += skip.shape[0] + 1
        lam, lam_abs = lam @ weight, lam_abs @ weight.abs()
        terms += weight.shape[1] + 1
        if k in skipped:  # every consumer of h_k (z_k and the later layers' skips) is substituted by now
            part, part_abs = skipped.pop(k)
            lam, lam_abs = lam + part, lam_abs + part_abs
        if k == 0:
            break
        rel, (lower, upper) = relaxations[k - 1], boxes[k - 1]
        pos, neg = lam.clamp(min=0), lam.clamp(max=0)
        value = value + (pos * _rows(rel.lower_intercept, lam)).sum(-1) + (neg * _rows(rel.upper_intercept, lam)).sum(-1)
        intercepts = _rows(rel.lower_intercept.abs() + rel.upper_intercept.abs() + rel.gap(lower, upper), lam)
        magnitude = magnitude + (lam_abs * intercepts).sum(-1)
        lam = pos * _rows(rel.lower_slope, lam) + neg * _rows(rel.upper_slope, lam)
        lam_abs = lam_abs * _rows(torch.maximum(rel.lower_slope.abs(), rel.upper_slope.abs()), lam)
        terms += lam.shape[-1]
    box_lo, box_hi = input_set.box()
    magnitude = magnitude + (lam_abs * torch.maximum(box_lo.abs(), box_hi.abs())[:, None, :]).sum(-1)
    return value + input_set.lower_support(lam) - rounding_margin(magnitude, terms)


def _intersect(a: Box, b: Box) -> Box:
    return torch.maximum(a[0], b[0]), torch.minimum(a[1], b[1])


def layer_bounds(
    net: AffineNetwork,
    input_set: InputSet,
    method: str = "crown",
    slopes: str = "adaptive",
    intersect_ibp: bool = True,
) -> tuple[list[Box], list[Relaxation]]:
    """Boxes of the hidden pre-activations z_1..z_{L-1} and the relaxations built on them.

    "ibp": interval boxes; "crown": each layer's box by back-substitution of +-I through the layers
    below, intersected with the interval box when `intersect_ibp` (both are sound, so their intersection
    is; switch it off to reproduce the plain dual network). `slopes` picks the ReLU lower slopes."""
    if method not in METHODS:
        raise UsageError(f"unknown bound method {method!r}; choose one of {METHODS}")
    if slopes not in SLOPE_RULES:
        raise UsageError(f"unknown slope rule {slopes!r}; choose one of {SLOPE_RULES}")
    ibp = interval_bounds(net, input_set)[:-1]
    boxes: list[Box] = []
    relaxations: list[Relaxation] = []
    n_examples = input_set.center.shape[0]
    for k, act in enumerate(net.activations):
        box = ibp[k]
        if method == "crown":
            width = net.weights[k].shape[0]
            eye = torch.eye(width, dtype=torch.float64, device=input_set.center.device)
            coeffs = torch.cat([eye, -eye]).expand(n_examples, 2 * width, width)
            bound = backward_lower_bound(net, input_set, k, coeffs, relaxations, boxes)
            crown_box = (bound[:, :width], -bound[:, width:])
            box = _intersect(box, crown_box) if intersect_ibp else crown_box
        boxes.append(box)
        relaxations.append(relax(act, *box, alpha=default_alpha(act, *box, rule=slopes)))
    return boxes, relaxations


def margin_spec(target: Tensor, num_classes: int) -> Tensor:
    """C [N, K, K] with row j = e_c - e_j (c = target), so C z_L are the margins f_c - f_j (row c is 0)."""
    eye = torch.eye(num_classes, dtype=torch.float64, device=target.device)
    return eye[target][:, None, :] - eye[None, :, :]


def margin_bounds_on_set(
    net: AffineNetwork, input_set: InputSet, target: Tensor, method: str = "crown"
) -> tuple[Tensor, dict]:
    """Lower bounds [N, K] on f_c - f_j over the set (+inf at j = c) and the witness that re-derives them."""
    target = check_target(target, input_set.center.shape[0], net.num_classes).to(input_set.center.device)
    spec = margin_spec(target, net.num_classes)
    if method == "ibp":
        value = interval_bounds(net, input_set, spec)[-1][0]
        witness: dict = {}
    else:
        boxes, relaxations = layer_bounds(net, input_set, method)
        value = backward_lower_bound(net, input_set, net.depth - 1, spec, relaxations, boxes)
        witness = {"boxes": boxes, "relaxations": relaxations, "spec": spec}
    value = value.masked_fill(spec.abs().sum(-1) == 0, float("inf"))
    return value, witness


def margin_lower_bounds(
    net: AffineNetwork,
    x: Tensor,
    target: Tensor,
    eps: float | Tensor,
    p: float | int | str,
    domain: tuple[Tensor, Tensor] | None = None,
    method: str = "crown",
) -> BoundResult:
    """Certified lower bounds [N, num_classes] of f_c - f_j over {||x' - x||_p <= eps} (intersected with
    the domain box), by CROWN or IBP; column c is +inf. Float64, on x's device."""
    if method not in METHODS:
        raise UsageError(f"unknown bound method {method!r}; choose one of {METHODS}")
    net = net.to(x.device)
    input_set = InputSet.build(x, eps, p, domain)
    value, witness = margin_bounds_on_set(net, input_set, target, method)
    return BoundResult(
        value=value,
        kind=Kind.CERTIFIED,
        method=method,
        assumptions=[input_set.describe(), "bounds hold for the float64 evaluation of the network"],
        witness=witness,
        details={"eps": input_set.eps, "p": input_set.p},
    )
