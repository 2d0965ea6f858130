"""Linear relaxation bounds by back-substitution: CROWN (Zhang et al. 2018) = the Wong-Kolter dual
network with lower slopes alpha (Salman et al. 2019; ANCHORS 4.1-4.2).

Every activation h = sigma(z) on a box [l, u] is replaced by the sound lines of `activations.relax`,

    lower line  sigma(z) >= a_l z + c_l,   upper line  sigma(z) <= a_u z + c_u   (for z in [l, u]),

(ReLU: a_l = alpha in [0, 1], c_l = 0 for an unstable unit, the chord above; softplus: a tangent at
l + alpha (u - l) below, the chord above; leaky ReLU, sigmoid, tanh, GELU, SiLU: see that module); the
back-substitution never looks at the activation's name (only `layer_bounds`' screening does: piecewise-linear
activations are exact lines off their kink).

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

Rigour in float64 (Higham, "Accuracy and Stability of Numerical Algorithms", 2002, sections 2.2 and 3.1:
fl(x op y) = (x op y)(1 + d), |d| <= u = 2^-53, and a sum of n products is off by at most gamma_n times the
sum of their absolute values, gamma_n = n u / (1 - n u), in any summation order). The lines are rigorous
(`activations.relax` rounds them outward). Each coefficient matrix the pass computes (Lambda W_k, a skip's
Lambda S_kj, the relaxed pos * a_l + neg * a_u) is taken as EXACT from then on: the bound stays valid for
it, and the gap to the exact product it stands for, at most gamma_n |Lambda| |W_k| elementwise (u |result|
for the relaxation's products and for a sum of two coefficient matrices), is charged once against a bound
on the variable it multiplies: the box of z_k (max(|l|, |u|)), the image box of h_k = sigma(z_{k-1}), or the
input box. Each charge is a matrix-vector product (|Lambda| (|W_k| r_k) with r_k = max |h_k|), so the pass
needs ONE matrix chain; the constant's sums (biases, intercepts) add their absolute values. The charges of
a relaxation and of the next layer's products are folded into one product with |Lambda| before the
relaxation, since |pos a_l + neg a_u| <= |Lambda| max(|a_l|, |a_u|) elementwise. The total is
subtracted as `rounding_margin(magnitude, terms)`, 2 gamma_T magnitude with T the number of roundings along
the longest chain (>= every n above); the factor 2 covers the rounding of the magnitude itself. Intercepts
below 2^-600 in size are widened outward to 2^-600 (a valid, negligibly looser line) so that no product
lands in the subnormal range, which is many times slower on CPUs. Below the normal range the model
gains an ABSOLUTE term (Higham 2002, section 2.1: fl(x y) = x y (1 + d) + e, |e| <= 2^-1075 with gradual
underflow, < 2^-1022 = tiny if results are flushed to zero; sums are exact there): a coefficient entry
that is a sum of n products may be off by n tiny however small its terms, and that error multiplies the
variable (a bound of 1e300 on it turns tiny into 2e-8), so each computed coefficient matrix is also charged
n tiny per entry against the sum of its variable's bounds, and each constant's product tiny (`lost`,
subtracted as 2 tiny lost); this is below the 1e-300 floor of `rounding_margin` unless the variables are
huge. (This replaced a second chain |Lambda| |W| ... that tracked the coefficients' absolute values
through every layer; `test_crown` checks the bound against its exact rational value on weights spanning
16 orders of magnitude.)

Cost: intermediate boxes back-substitute only the rows +-e_u of units that the interval box leaves
unstable (`layer_bounds`), batched over examples.
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


def _aligned(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Per-unit [N, n] and per-row [N, m or 1, n] tensors made broadcastable (the per-unit one gets the row axis)."""
    if a.dim() < b.dim():
        return a.unsqueeze(-2), b
    if b.dim() < a.dim():
        return a, b.unsqueeze(-2)
    return a, b


def _plus(a: Tensor, b: Tensor) -> Tensor:
    a, b = _aligned(a, b)
    return a + b


def _reach(box: Box) -> Tensor:
    """max(|l|, |u|): a bound on |z| over the box [l, u] (exact in floating point)."""
    return torch.maximum(box[0].abs(), box[1].abs())


SUBNORMAL_GUARD = 2.0**-600


def _widened(intercept: Tensor, direction: float) -> Tensor:
    """An intercept moved outwards (direction +1: up, for an upper line; -1: down, for a lower line) to at
    least 2^-600 in size where it is nonzero and smaller: a looser but still valid line (by at most 2^-600)
    whose products with the coefficients stay out of the subnormal range, where CPU arithmetic is many
    times slower (the 1e-300 underflow floor of `rounding_margin` would otherwise end up there)."""
    tiny = (intercept * direction > 0) & (intercept.abs() < SUBNORMAL_GUARD)
    return torch.where(tiny, direction * SUBNORMAL_GUARD, intercept)


UNDERFLOW = 2.0**-1022  # smallest normal float64: bounds the absolute error of a product below the normal range


def _total(v: Tensor) -> Tensor:
    """sum over the last axis of a per-unit [N, n] (-> [N, 1]) or per-row [N, m or 1, n] (-> [N, m or 1])
    tensor, broadcastable against [N, m]."""
    total = v.sum(-1)
    return total.unsqueeze(-1) if v.dim() == 2 else total


def _dot(coeff: Tensor, v: Tensor) -> Tensor:
    """sum_i coeff_i v_i over the last axis, [N, m], for coeff [N, m, n] and v per unit [N, n] (a batched
    matrix-vector product) or per row [N, m, n]."""
    if v.dim() == coeff.dim():
        return (coeff * v).sum(-1)
    return (coeff @ v.unsqueeze(-1)).squeeze(-1)


def backward_lower_bound(
    net: AffineNetwork,
    input_set: InputSet,
    layer: int,
    coeffs: Tensor,
    relaxations: list[Relaxation],
    boxes: list[Box],
    const: Tensor | None = None,
    layer_terms: dict[int, Tensor] | None = None,
    units: Tensor | None = None,
) -> Tensor:
    """Rigorous lower bound on coeffs @ z_layer + const over the input set, [N, m].

    coeffs [N, m, n_layer]; relaxations[k] and boxes[k] (k < layer) for the activations below `layer`
    (their lines may be per unit [N, n_k] or per objective row [N, m, n_k]; boxes broadcastable the same
    way). Skip terms of the network are substituted into the coefficient of the h_j they read (module
    docstring). `layer_terms` {k: t_k [N, m, n_k]} (k < layer) adds sum_k t_k @ z_k to the objective (the
    split multipliers of branch and bound, certify.bounds.bab); None (the default) adds nothing. `units` [N, U]
    (int64) says that coeffs are the selector rows [+e_units; -e_units] (m = 2 U; `layer_bounds`): their
    first products with W_layer, b_layer and the skips are then row gathers, the same (exact) numbers.

    Rounding (module docstring, "Rigour"): each computed coefficient matrix is taken as exact from then
    on; the gap between it and the exact product it stands for is charged once, against a bound on the
    variable it multiplies (the box of z_k, or the image box of h_k = sigma(z_{k-1}), or the input box)."""
    lam = coeffs
    value = torch.zeros(coeffs.shape[:-1], dtype=coeffs.dtype, device=coeffs.device) if const is None else const
    magnitude = value.abs()
    lost = torch.zeros_like(magnitude)  # underflow charges in units of UNDERFLOW (module docstring)
    terms = 0
    reaches: dict[int, Tensor] = {}  # bound on |h_j| (j = 0: the input)

    def h_reach(j: int) -> Tensor:
        if j not in reaches:
            if j == 0:
                reaches[j] = _reach(input_set.box())
            else:
                reaches[j] = _reach(net.activations[j - 1].image(*boxes[j - 1]))
        return reaches[j]

    def product_charge(k: int) -> Tensor:
        """Per unit of z_k: |b_k| + |W_k| r_k + sum_j |S_kj| r_j, what |Lambda| times it bounds the rounding
        of Lambda's products with b_k, W_k and the skips (r = h_reach)."""
        charge = h_reach(k) @ net.weights[k].abs().T + net.biases[k].abs()
        for j, skip in net.skips.get(k, {}).items():
            charge = _plus(charge, h_reach(j) @ skip.abs().T)
        return charge

    def times(matrix: Tensor, k: int) -> Tensor:
        """lam @ matrix (a weight [out_k, n] or a bias [out_k]); a gather of +-rows for selector rows."""
        if k < layer or units is None:
            return lam @ matrix
        rows = matrix[units]
        return torch.cat([rows, -rows], dim=1)

    prepaid = False  # whether the relaxation below already charged this layer's products (folded, see there)
    skipped: dict[int, Tensor] = {}  # coefficients of h_j gathered from the skips S_kj (k > j)
    for k in range(layer, -1, -1):
        if layer_terms is not None and k < layer and k in layer_terms:
            lam = lam + layer_terms[k]  # charged with this layer's products, against the new lam
            magnitude = magnitude + _dot(lam.abs(), _plus(_reach(boxes[k]), product_charge(k)))
            terms += 1
        elif not prepaid:
            magnitude = magnitude + _dot(lam.abs(), product_charge(k))
        weight, bias = net.weights[k], net.biases[k]
        lost = lost + weight.shape[0] * (_total(h_reach(k)) + 1)  # lam @ W_k (against h_k) and lam @ b_k
        value = value + times(bias, k)
        for j, skip in net.skips.get(k, {}).items():
            lost = lost + skip.shape[0] * _total(h_reach(j))
            part = times(skip, k)
            if j in skipped:
                part = skipped[j] + part
                magnitude = magnitude + _dot(part.abs(), h_reach(j))
            skipped[j] = part
            terms += skip.shape[0] + 1
        lam = times(weight, k)
        terms += weight.shape[0] + 1
        charge: Tensor | None = None
        if k in skipped:  # every consumer of h_k (z_k and the later layers' skips) is substituted by now
            lam = lam + skipped.pop(k)
            charge = h_reach(k)  # the rounding of that sum, against h_k (charged below, or here at the input)
            if k == 0:
                magnitude = magnitude + _dot(lam.abs(), charge)
        if k == 0:
            break
        rel = relaxations[k - 1]
        lower_icpt, upper_icpt = _widened(rel.lower_intercept, -1.0), _widened(rel.upper_intercept, 1.0)
        # one charge for this relaxation and the next layer's products: |pos a_l + neg a_u| <= |lam| s with
        # s = max(|a_l|, |a_u|), so |Lambda'| (r_z + product_charge(k - 1)) <= |lam| s (r_z + ...)
        slope = torch.maximum(rel.lower_slope.abs(), rel.upper_slope.abs())
        below = _plus(_reach(boxes[k - 1]), product_charge(k - 1))
        slope, below = _aligned(slope, below)
        bound = _plus(lower_icpt.abs() + upper_icpt.abs(), slope * below)
        magnitude = magnitude + _dot(lam.abs(), bound if charge is None else _plus(bound, charge))
        prepaid = True
        lost = lost + _total(_reach(boxes[k - 1])) + 2 * lam.shape[-1]  # pos a_l + neg a_u (against z), intercepts
        pos, neg = lam.clamp(min=0), lam.clamp(max=0)
        value = value + _dot(pos, lower_icpt) + _dot(neg, upper_icpt)
        lam = pos * _rows(rel.lower_slope, lam) + neg * _rows(rel.upper_slope, lam)
        terms += lam.shape[-1] + 2
    return value + input_set.lower_support(lam) - rounding_margin(magnitude, terms) - 2 * UNDERFLOW * lost


def _intersect(a: Box, b: Box) -> Box:
    return torch.maximum(a[0], b[0]), torch.minimum(a[1], b[1])


PIECEWISE_LINEAR = ("relu", "leaky_relu")  # linear on a box that excludes the kink at 0: exact lines there


def _unstable_rows(lower: Tensor, upper: Tensor) -> Tensor:
    """Per example, the indices [N, U] of the units whose box contains 0 in its interior, then (to pad every
    example to the same U, the largest count) other units; the indices of a row are distinct."""
    unstable = (lower < 0) & (upper > 0)
    count = int(unstable.sum(-1).max()) if unstable.numel() else 0
    order = torch.argsort((~unstable).to(torch.int8), dim=-1, stable=True)
    return order[:, :count]


def _crown_box(net: AffineNetwork, input_set: InputSet, k: int, relaxations: list[Relaxation], boxes: list[Box],
               units: Tensor | None) -> Box:
    """CROWN box of z_k for the units [N, U] (None: all of them) by back-substitution of the rows +-e_unit."""
    width = net.weights[k].shape[0]
    device = input_set.center.device
    if units is None:
        units = torch.arange(width, device=device).expand(input_set.center.shape[0], width)
    picked = torch.eye(width, dtype=torch.float64, device=device)[units]
    bound = backward_lower_bound(net, input_set, k, torch.cat([picked, -picked], dim=1), relaxations, boxes,
                                 units=units)
    count = picked.shape[1]
    return bound[:, :count], -bound[:, count:]


def layer_bounds(
    net: AffineNetwork,
    input_set: InputSet,
    method: str = "crown",
    slopes: str = "adaptive",
    intersect_ibp: bool = True,
    screen: bool = False,
) -> tuple[list[Box], list[Relaxation]]:
    """Boxes of the hidden pre-activations z_1..z_{L-1} and the relaxations built on them.

    "ibp": interval boxes; "crown": each layer's box by back-substitution of +-e_u through the layers
    below, intersected with the interval box when `intersect_ibp` (both are sound, so their intersection
    is; switch it off to reproduce the plain dual network). `slopes` picks the ReLU lower slopes.

    With `screen` (and `intersect_ibp`), a ReLU / leaky-ReLU unit whose interval box already excludes 0
    keeps that box: its relaxation is the exact line there whichever box is used (only the box's size
    enters the rounding slack of its intercept), so the back-substitution runs only for the rows of the
    units the interval box leaves unstable (per example, padded to the largest count): the same CROWN
    bounds as all 2 n_k rows at a fraction of the cost (`margin_bounds_on_set` screens). Without it every
    box is the full intersection, which consumers that use the boxes themselves want (the LP's box
    constraints, certify.bounds.lp)."""
    if method not in METHODS:
        raise UsageError(f"unknown bound method {method!r}; choose one of {METHODS}")
    if slopes not in SLOPE_RULES:
        raise UsageError(f"unknown slope rule {slopes!r}; choose one of {SLOPE_RULES}")
    ibp = interval_bounds(net, input_set)[:-1]
    boxes: list[Box] = []
    relaxations: list[Relaxation] = []
    for k, act in enumerate(net.activations):
        box = ibp[k]
        if method == "crown" and not intersect_ibp:
            box = _crown_box(net, input_set, k, relaxations, boxes, None)
        elif method == "crown" and screen and act.name in PIECEWISE_LINEAR:
            units = _unstable_rows(*box)
            if units.shape[1]:
                lower, upper = _crown_box(net, input_set, k, relaxations, boxes, units)
                box = (box[0].scatter(1, units, torch.maximum(box[0].gather(1, units), lower)),
                       box[1].scatter(1, units, torch.minimum(box[1].gather(1, units), upper)))
        elif method == "crown":
            box = _intersect(box, _crown_box(net, input_set, k, relaxations, boxes, None))
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
        boxes, relaxations = layer_bounds(net, input_set, method, screen=True)
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
