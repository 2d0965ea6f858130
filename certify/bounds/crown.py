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

Slopes (`margin_bounds_on_set`): by default the boxes use the PARALLEL lower slope u / (u - l) (Wong & Kolter 2018's
dual network), with which a ReLU's lower and upper lines are parallel, so that the back-substituted
coefficients of -e_u are exactly the negation of those of +e_u and ONE pass bounds both sides of a unit
(`backward_lower_bound(mirrored=True)`); these boxes are never looser than the dual network's (the same
relaxation, intersected with IBP). The margins are bounded on those boxes with both the parallel and
CROWN's adaptive lower slopes (1 if u >= -l, else 0) in one pass of 2K rows, each margin keeping the larger
bound: never looser than the dual network's and as tight as CROWN where its slopes win. The witness holds
the winning slopes per margin (`relaxations`, [N, K, n_k]) and the boxes' (`layer_relaxations`). CROWN's
adaptive boxes (slopes="adaptive", two passes per layer) are often tighter than the parallel ones (on a
784-256-256-10 net about 10% larger certified radii) at about twice the cost of the boxes.

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
16 orders of magnitude.) Three steps change which floating-point sums are formed, never the argument: a
mirrored pass takes the negated rows' coefficient matrices as exactly the negation of the computed ones
(which they are: rounding to nearest commutes with negation), so they carry the same charges, and their
constants are sums with the same absolute values; a product over the live columns of Lambda only
(`_live_columns`) is a sum of fewer of the same terms (the others exact zeros); the input support over a
box (p = inf, `_support`) encloses the box in a midpoint-radius form and charges its own products.

Cost: intermediate boxes back-substitute only the rows of units that the interval box leaves unstable
(`layer_bounds`' screening; none for z_0 over a box, whose interval box is exact), for both sides in one
pass (parallel slopes), batched over examples in groups of similar unstable counts (`_row_groups`, so that
padding every example to the largest count does not multiply the work), and the products skip the
columns that the relaxation zeroed (ReLU units off on their box). Fixed cost per call (issue 18: on small
networks it is most of the time): the passes of one call share what does not depend on their objective
(`backward_lower_bound`'s `facts`: the input box and its midpoint-radius form, the bounds on |h_j|, the
product charges, the widened intercepts, the relaxations' charges; never kept across calls, where a weight
written through `.data` would not say it changed), an all-zero intercept (relu's lower line) is neither widened nor multiplied, the
adaptive relaxation reuses the parallel one's upper line (`relax_with_alpha`), the selector rows are never
built (row gathers), and the interval boxes stop at the last hidden layer. Each computes the same numbers
as the work it replaces (tests/bounds/test_crown_fixed_costs.py).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from certify.bounds.activations import SLOPE_RULES, Activation, Relaxation, default_alpha, relax, relax_with_alpha
from certify.bounds.ibp import Box, interval_bounds
from certify.bounds.network import AffineNetwork
from certify.bounds.results import BoundResult, Kind
from certify.bounds.sets import InputSet, rounding_margin
from certify.errors import UsageError
from certify.validation import check_target

METHODS = ("crown", "ibp")
RELAXATION_FIELDS = ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept")


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
    outward = intercept > 0 if direction > 0 else intercept < 0
    return intercept.masked_fill(outward & (intercept.abs() < SUBNORMAL_GUARD), direction * SUBNORMAL_GUARD)


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


LIVE_GAIN = 16  # products skip lam's dead columns when each gathered entry saves this many multiplications ...
LIVE_MIN_ENTRIES = 2**15  # ... and lam is large enough to repay the gathers (cost only)


def _live_columns(lam: Tensor) -> tuple[Tensor, Tensor] | None:
    """(lam [N, m, A] on the columns [N, A] that are nonzero in some row of their example, padded per example
    with columns that are zero throughout, to the largest count A) when m (n - A) >= LIVE_GAIN A (the
    multiplications saved per entry of M gathered): lam @ M then
    equals lam[.., cols] @ M[cols] exactly in real arithmetic (the dropped terms are exact zeros: ReLU units
    that are off on their box, for instance, have slope 0 on both lines), and a sum of fewer terms stays
    within the rounding bound of the full sum. None when too few columns are dead to pay for the gathers."""
    if lam.numel() < LIVE_MIN_ENTRIES:
        return None
    live = (lam.amax(-2) != 0) | (lam.amin(-2) != 0)  # (lam != 0).any(-2), NaN included, with no copy of lam
    count = int(live.sum(-1).max()) if live.numel() else 0
    if lam.shape[-2] * (lam.shape[-1] - count) < LIVE_GAIN * count:
        return None
    cols = torch.argsort((~live).to(torch.int8), dim=-1, stable=True)[:, :count]
    return lam.gather(-1, cols.unsqueeze(1).expand(-1, lam.shape[1], -1)), cols


def _take(matrix: Tensor, index: Tensor) -> Tensor:
    """matrix[index]: the rows (entries, for a vector) of `matrix` at index [N, A], [N, A, ...] (index_select, a
    copy of the same numbers, several times faster than advanced indexing on the CPU)."""
    return matrix.index_select(0, index.reshape(-1)).view(*index.shape, *matrix.shape[1:])


def _support(input_set: InputSet, lam: Tensor, mirrored: bool, facts: dict | None = None) -> Tensor:
    """Rigorous lower bounds [N, m] on min over the input set of lam x (lam [N, m, n]), followed when `mirrored`
    by those of -lam x ([N, 2 m]). Overwrites lam (the caller's last use of it). `facts`: `backward_lower_bound`'s,
    which keep the midpoint-radius form of the box (None: none kept).

    For p = inf the set is its (outward-rounded) box [l, u], enclosed in [c - r, c + r] with c = l/2 + u/2
    and r = max(u - c, c - l) rounded up (one step up from the nearest float covers the subtraction's
    rounding; subtractions are exact below the normal range), over which min +-lam x = +-lam c - |lam| r:
    batched matrix-vector products serve both signs, off by at most gamma_{n+2} |lam| (|c| + r) (Higham
    2002, section 3.1), subtracted as `rounding_margin` (its 1e-300 floor covers the n 2^-1022 of products
    below the normal range for n < 4e7). Other norms: `InputSet.lower_support`."""
    facts = {} if facts is None else facts

    def midpoint_radius() -> tuple[Tensor, Tensor] | None:
        lower, upper = _input_box(input_set, facts)
        if input_set.p != math.inf or not (torch.isfinite(lower).all() and torch.isfinite(upper).all()):
            return None
        centre = lower / 2 + upper / 2
        radius = torch.nextafter(torch.maximum(upper - centre, centre - lower), torch.full_like(centre, math.inf))
        return centre.unsqueeze(-1), torch.stack([radius, centre.abs()], dim=-1)

    form = _kept(facts, ("midpoint-radius",), None, midpoint_radius)
    if form is None:
        return input_set.lower_support(torch.cat([lam, -lam], dim=-2) if mirrored else lam)
    centre, spans = form
    value = (lam @ centre).squeeze(-1)
    spread, size = (lam.abs_() @ spans).unbind(-1)
    slack = spread + rounding_margin(size + spread, lam.shape[-1])
    return torch.cat([value - slack, -value - slack], dim=-1) if mirrored else value - slack


def _kept(facts: dict, key: tuple, owner: object, make: Callable[[], Any]) -> Any:
    """facts' value for `key` and the object `owner` it derives from (a box, a relaxation; None: the input set
    and the network of the pass), made by `make` on the first request (the owner is kept with it, so that its
    id is not reused by another object while the dict lives)."""
    entry = facts.get((key, id(owner)))
    if entry is None:
        entry = facts[key, id(owner)] = (owner, make())
    return entry[1]


def _input_box(input_set: InputSet, facts: dict) -> Box:
    return _kept(facts, ("input box",), None, input_set.box)


def _parallel(rel: Relaxation, facts: dict) -> bool:
    """Whether the lower and upper slopes of `rel` are equal (a mirrored pass can run through it)."""
    return _kept(facts, ("parallel",), rel, lambda: torch.equal(rel.lower_slope, rel.upper_slope))


def _relaxation_charge(rel: Relaxation, lower_icpt: Tensor, upper_icpt: Tensor, below: Tensor) -> Tensor:
    """|c_l| + |c_u| + max(|a_l|, |a_u|) below (per unit, or per row where the intercepts are): what |Lambda| times
    it bounds the rounding of substituting the relaxation's lines (intercepts `lower_icpt`, `upper_icpt`, widened)
    and of the next layer's products, `below` = r_z + product_charge (`backward_lower_bound`). Slopes given per
    row count with their largest size over the rows (a charge per unit, never below any row's: its product with
    |Lambda| is then one matrix-vector product instead of an elementwise product over [N, m, n])."""
    slope = torch.maximum(_unit_reach(rel.lower_slope), _unit_reach(rel.upper_slope))
    slope, below = _aligned(slope, below)
    return _plus(_plus(lower_icpt.abs(), upper_icpt.abs()), slope * below)


def _unit_reach(slope: Tensor) -> Tensor:
    """max |slope| per unit [N, n]: the tensor's own sizes per unit, or over the rows of a per-row [N, m, n] one
    (max(|max|, |min|), exact; NaN propagates)."""
    if slope.dim() == 2:
        return slope.abs()
    return torch.maximum(slope.amin(-2).abs(), slope.amax(-2).abs())


def backward_lower_bound(
    net: AffineNetwork,
    input_set: InputSet,
    layer: int,
    coeffs: Tensor | None,
    relaxations: list[Relaxation],
    boxes: list[Box],
    const: Tensor | None = None,
    layer_terms: dict[int, Tensor] | None = None,
    units: Tensor | None = None,
    mirrored: bool = False,
    facts: dict | None = None,
) -> Tensor:
    """Rigorous lower bound on coeffs @ z_layer + const over the input set, [N, m].

    coeffs [N, m, n_layer]; relaxations[k] and boxes[k] (k < layer) for the activations below `layer`
    (their lines may be per unit [N, n_k] or per objective row [N, m, n_k]; boxes broadcastable the same
    way). Skip terms of the network are substituted into the coefficient of the h_j they read (module
    docstring). `layer_terms` {k: t_k [N, m, n_k]} (k < layer) adds sum_k t_k @ z_k to the objective (the
    split multipliers of branch and bound, certify.bounds.bab); None (the default) adds nothing. `units` [N, U]
    (int64) says that the rows are the selector rows [+e_units; -e_units] (m = 2 U; `layer_bounds`), which
    coeffs then need not hold (None): their first products with W_layer, b_layer and the skips, and their
    first charge |e_u| . c = c_u (a sum of exact zeros and one exact product), are row gathers, the same
    numbers (where c is finite).

    `mirrored`: returns [N, 2 m], the lower bounds of coeffs @ z + const and then of -(coeffs @ z + const),
    from ONE coefficient chain (`units` [N, U] then selects the rows +e_units only, m = U). Valid when every
    relaxation below has equal lower and upper slopes (the parallel rule on ReLU; UsageError otherwise):
    then each coefficient matrix of the negated rows is exactly the negation of the one computed here
    (pos a + neg a = lam a either way, and rounding to nearest commutes with negation), so both objectives
    carry the same charges (magnitude, terms, lost); only the constants differ, the negated rows taking
    the upper intercepts where lam > 0 and the lower ones where lam < 0, sums with the same absolute
    values (covered by the same charges).

    `facts`: a dict shared by passes over the same input set and the same `boxes` (the same tensors, all
    examples), in which each keeps what does not depend on its objective (`_kept`: the input box, the bounds
    on |h_j|, the charges of the products, the widened intercepts), so that later passes reuse them; None
    (the default): this pass's own.

    Rounding (module docstring, "Rigour"): each computed coefficient matrix is taken as exact from then
    on; the gap between it and the exact product it stands for is charged once, against a bound on the
    variable it multiplies (the box of z_k, or the image box of h_k = sigma(z_{k-1}), or the input box)."""
    facts = {} if facts is None else facts
    lam = coeffs
    if const is not None:
        value = const
    elif units is not None:
        value = torch.zeros(units.shape[0], units.shape[1] * (1 if mirrored else 2), dtype=torch.float64,
                            device=units.device)
    else:
        value = torch.zeros(coeffs.shape[:-1], dtype=coeffs.dtype, device=coeffs.device)
    mirror = -value  # the constant of the negated objective (mirrored only)
    magnitude = value.abs()
    lost = torch.zeros_like(magnitude)  # underflow charges in units of UNDERFLOW (module docstring)
    terms = 0

    def h_reach(j: int) -> Tensor:
        """A bound on |h_j| per unit (j = 0: the input)."""
        if j == 0:
            return _kept(facts, ("reach h", 0), None, lambda: _reach(_input_box(input_set, facts)))
        return _kept(facts, ("reach h", j), boxes[j - 1][0],
                     lambda: _reach(net.activations[j - 1].image(*boxes[j - 1])))

    def product_charge(k: int) -> Tensor:
        """Per unit of z_k: |b_k| + |W_k| r_k + sum_j |S_kj| r_j, what |Lambda| times it bounds the rounding
        of Lambda's products with b_k, W_k and the skips (r = h_reach)."""
        def make() -> Tensor:
            charge = h_reach(k) @ net.weights[k].abs().T + net.biases[k].abs()
            for j, skip in net.skips.get(k, {}).items():
                charge = _plus(charge, h_reach(j) @ skip.abs().T)
            return charge
        return _kept(facts, ("charge", k), boxes[k - 1][0] if k > 0 else None, make)

    def total(j: int) -> Tensor:
        return _kept(facts, ("total h", j), boxes[j - 1][0] if j > 0 else None, lambda: _total(h_reach(j)))

    def times(matrix: Tensor, k: int) -> Tensor:
        """lam @ matrix (a weight [out_k, n] or a bias [out_k]); a gather of +-rows for selector rows; over
        the live columns of lam only where `_live_columns` found enough dead ones."""
        if k == layer and units is not None:
            rows = _take(matrix, units)
            return rows if mirrored else torch.cat([rows, -rows], dim=1)
        if live is None:
            return lam @ matrix
        part, cols = live
        picked = _take(matrix, cols)
        return part @ picked if picked.dim() == 3 else (part @ picked.unsqueeze(-1)).squeeze(-1)

    prepaid = False  # whether the relaxation below already charged this layer's products (folded, see there)
    skipped: dict[int, Tensor] = {}  # coefficients of h_j gathered from the skips S_kj (k > j)
    for k in range(layer, -1, -1):
        if layer_terms is not None and k < layer and k in layer_terms:
            lam = lam + layer_terms[k]  # charged with this layer's products, against the new lam
            magnitude = magnitude + _dot(lam.abs(), _plus(_reach(boxes[k]), product_charge(k)))
            terms += 1
        elif k == layer and units is not None:
            charge = product_charge(k).gather(-1, units)
            magnitude = magnitude + (charge if mirrored else torch.cat([charge, charge], dim=-1))
        elif not prepaid:
            magnitude = magnitude + _dot(lam.abs(), product_charge(k))
        live = None if k == layer and units is not None else _live_columns(lam)
        weight, bias = net.weights[k], net.biases[k]
        lost = lost + weight.shape[0] * (total(k) + 1)  # lam @ W_k (against h_k) and lam @ b_k
        shift = times(bias, k)
        value = value + shift
        if mirrored:
            mirror = mirror - shift
        for j, skip in net.skips.get(k, {}).items():
            lost = lost + skip.shape[0] * total(j)
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
        if mirrored and not _parallel(rel, facts):
            raise UsageError(f"a mirrored back-substitution needs equal lower and upper slopes (layer {k - 1})")
        # an all-zero intercept (relu's lower line) is its own widening and adds exact zeros: skipped below
        through_zero = _kept(facts, ("vanishes",), rel.lower_intercept, lambda: not bool(rel.lower_intercept.any()))
        lower_icpt = rel.lower_intercept if through_zero else _kept(
            facts, ("widened", -1), rel.lower_intercept, lambda: _widened(rel.lower_intercept, -1.0))
        upper_icpt = _kept(facts, ("widened", 1), rel.upper_intercept, lambda: _widened(rel.upper_intercept, 1.0))
        # one charge for this relaxation and the next layer's products: |pos a_l + neg a_u| <= |lam| s with
        # s = max(|a_l|, |a_u|), so |Lambda'| (r_z + product_charge(k - 1)) <= |lam| s (r_z + ...)
        reach = _kept(facts, ("reach z", k - 1), boxes[k - 1][0], lambda: _reach(boxes[k - 1]))
        bound = _kept(facts, ("relaxation charge", k), rel, lambda: _relaxation_charge(
            rel, lower_icpt, upper_icpt, _plus(reach, product_charge(k - 1))))
        size = lam.abs()
        magnitude = magnitude + _dot(size, bound if charge is None else _plus(bound, charge))
        prepaid = True
        lost = lost + _kept(facts, ("total z", k - 1), boxes[k - 1][0], lambda: _total(reach))
        lost = lost + 2 * lam.shape[-1]  # pos a_l + neg a_u (against z), intercepts
        # lam is this pass's own (a fresh product or sum above): its parts are formed in place from here on, in
        # lam and in the buffer of |lam|, the same roundings as out of place without copies of [N, m, n]
        if mirrored:  # the negated rows -lam: positive part -neg, negative part -pos
            pos = torch.clamp(lam, min=0, out=size)
            pos_lower = None if through_zero else _dot(pos, lower_icpt)
            pos_upper = _dot(pos, upper_icpt)
            neg = torch.clamp(lam, max=0, out=size)
            if pos_lower is not None:
                value = value + pos_lower
            value = value + _dot(neg, upper_icpt)
            if not through_zero:
                mirror = mirror - _dot(neg, lower_icpt)
            mirror = mirror - pos_upper
            # equal slopes a: pos a + neg a = lam a (one of the two terms is a zero)
            lam = lam.mul_(_rows(rel.lower_slope, lam))
        else:
            pos = torch.clamp(lam, min=0, out=size)
            neg = lam.clamp_(max=0)
            if not through_zero:
                value = value + _dot(pos, lower_icpt)
            value = value + _dot(neg, upper_icpt)
            lam = pos.mul_(_rows(rel.lower_slope, pos)).add_(neg.mul_(_rows(rel.upper_slope, neg)))
        terms += lam.shape[-1] + 2
    slack = rounding_margin(magnitude, terms) + 2 * UNDERFLOW * lost
    if mirrored:
        value, slack = torch.cat([value, mirror], dim=-1), torch.cat([slack, slack], dim=-1)
    return value + _support(input_set, lam, mirrored, facts) - slack


def _intersect(a: Box, b: Box) -> Box:
    return torch.maximum(a[0], b[0]), torch.minimum(a[1], b[1])


PIECEWISE_LINEAR = ("relu", "leaky_relu")  # linear on a box that excludes the kink at 0: exact lines there


def _unstable_rows(unstable: Tensor) -> Tensor:
    """Per example, the indices [N, U] of the unstable units (the mask [N, n]: the box contains 0 in its
    interior), then (to pad every example to the same U, the largest count) other units; the indices of a row
    are distinct."""
    count = int(unstable.sum(-1).max()) if unstable.numel() else 0
    order = torch.argsort((~unstable).to(torch.int8), dim=-1, stable=True)
    return order[:, :count]


def _crown_box(net: AffineNetwork, input_set: InputSet, k: int, relaxations: list[Relaxation], boxes: list[Box],
               units: Tensor | None, facts: dict | None) -> Box:
    """CROWN box of z_k for the units [N, U] (None: all of them) by back-substitution of the rows +-e_unit
    (`facts`: `backward_lower_bound`'s)."""
    facts = {} if facts is None else facts
    width = net.weights[k].shape[0]
    device = input_set.center.device
    if units is None:
        units = torch.arange(width, device=device).expand(input_set.center.shape[0], width)
    mirrored = all(_parallel(r, facts) for r in relaxations)  # one chain for both sides
    bound = backward_lower_bound(net, input_set, k, None, relaxations, boxes, units=units, mirrored=mirrored,
                                 facts=facts)
    count = units.shape[1]
    return bound[:, :count], -bound[:, count:]


GROUP_WORK = 2**17  # examples are grouped until a group's padded rows times `size` reach this (cost only)


def _row_groups(counts: Tensor, size: int) -> list[Tensor]:
    """The examples with counts [N] > 0 (their unstable units) in groups [G] (indices) whose padding to the
    group's largest count stays small: by ceil(log2 count) (a group's rows are then at least half its padded
    rows), groups whose padded rows times `size` (the widths a row is multiplied through) stay below
    GROUP_WORK merged into the next larger one (each group is one batched back-substitution, whose fixed
    cost a small group would not repay). When even all examples padded to the largest count stay below
    GROUP_WORK and none has count 0, that is one group of them all, found without the grouping's ops."""
    if counts.numel():
        fewest, most = (int(c) for c in counts.aminmax())
        if fewest > 0 and counts.numel() * (1 << (most - 1).bit_length()) * size < GROUP_WORK:
            return [torch.arange(counts.numel(), device=counts.device)]
    level = torch.ceil(torch.log2(counts.clamp(min=1).to(torch.float64))).masked_fill(counts == 0, -1)
    groups: list[Tensor] = []
    pending: Tensor | None = None
    for value in torch.unique(level).tolist():  # ascending
        if value < 0:
            continue
        members = torch.nonzero(level == value).reshape(-1)
        pending = members if pending is None else torch.cat([pending, members])
        if pending.numel() * 2**value * size >= GROUP_WORK:
            groups.append(pending)
            pending = None
    return groups if pending is None else groups + [pending]


def _screened_box(net: AffineNetwork, input_set: InputSet, k: int, relaxations: list[Relaxation],
                  boxes: list[Box], box: Box, facts: dict) -> Box:
    """The interval box of z_k with its unstable units tightened by CROWN (`layer_bounds`' screening), the
    examples bounded in groups of similar unstable counts (`_row_groups`; `facts`, `backward_lower_bound`'s
    for all examples, serve when one group holds them all)."""
    lower, upper = box
    size = sum(w.shape[1] for w in net.weights[: k + 1])
    unstable = (lower < 0) & (upper > 0)
    groups = _row_groups(unstable.sum(-1), size)
    if not groups:
        return box
    if len(groups) == 1 and groups[0].numel() == lower.shape[0]:  # the whole batch: no copies
        return _tightened(net, input_set, k, relaxations, boxes, (lower, upper), facts, unstable)
    lower, upper = lower.clone(), upper.clone()
    for group in groups:
        part = InputSet(input_set.center[group], input_set.eps[group], input_set.p, input_set.lo, input_set.hi)
        rels = [Relaxation(*(getattr(r, f)[group] for f in RELAXATION_FIELDS)) for r in relaxations]
        sub_boxes = [(b[0][group], b[1][group]) for b in boxes]
        lower[group], upper[group] = _tightened(net, part, k, rels, sub_boxes, (lower[group], upper[group]), None,
                                                unstable[group])
    return lower, upper


def _tightened(net: AffineNetwork, input_set: InputSet, k: int, relaxations: list[Relaxation], boxes: list[Box],
               box: Box, facts: dict | None, unstable: Tensor) -> Box:
    """The box of z_k with the units it leaves unstable (the mask `unstable`) intersected with their CROWN
    bounds."""
    lower, upper = box
    units = _unstable_rows(unstable)
    crown_lo, crown_hi = _crown_box(net, input_set, k, relaxations, boxes, units, facts)
    return (lower.scatter(1, units, torch.maximum(lower.gather(1, units), crown_lo)),
            upper.scatter(1, units, torch.minimum(upper.gather(1, units), crown_hi)))


def layer_bounds(
    net: AffineNetwork,
    input_set: InputSet,
    method: str = "crown",
    slopes: str = "adaptive",
    intersect_ibp: bool = True,
    screen: bool = False,
    facts: dict | None = None,
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
    constraints, certify.bounds.lp).

    `facts`: `backward_lower_bound`'s dict for the passes here, which the caller may pass on to later passes
    on the returned boxes (None: the passes' own)."""
    if method not in METHODS:
        raise UsageError(f"unknown bound method {method!r}; choose one of {METHODS}")
    if slopes not in SLOPE_RULES:
        raise UsageError(f"unknown slope rule {slopes!r}; choose one of {SLOPE_RULES}")
    facts = {} if facts is None else facts
    ibp = interval_bounds(net, input_set, layers=len(net.activations), box=_input_box(input_set, facts))
    boxes: list[Box] = []
    relaxations: list[Relaxation] = []
    for k, act in enumerate(net.activations):
        box = ibp[k]
        if method == "crown" and not intersect_ibp:
            box = _crown_box(net, input_set, k, relaxations, boxes, None, facts)
        elif method == "crown" and screen and act.name in PIECEWISE_LINEAR:
            if k > 0 or input_set.p != math.inf:  # over a box (p = inf) the interval box of z_0 is exact
                box = _screened_box(net, input_set, k, relaxations, boxes, box, facts)
        elif method == "crown":
            box = _intersect(box, _crown_box(net, input_set, k, relaxations, boxes, None, facts))
        boxes.append(box)
        relaxations.append(relax(act, *box, alpha=_alpha(act, box, slopes, facts)))
    return boxes, relaxations


def margin_spec(target: Tensor, num_classes: int) -> Tensor:
    """C [N, K, K] with row j = e_c - e_j (c = target), so C z_L are the margins f_c - f_j (row c is 0)."""
    eye = torch.eye(num_classes, dtype=torch.float64, device=target.device)
    return eye[target][:, None, :] - eye[None, :, :]


def _per_row(t: Tensor, rows: int) -> Tensor:
    """A per-unit tensor [N, n] repeated for `rows` objective rows, [N, rows, n] (a view)."""
    return t.unsqueeze(1).expand(-1, rows, -1)


def _alpha(act: Activation, box: Box, rule: str, facts: dict) -> Tensor:
    """`default_alpha` of the rule on the box, kept in `facts` (`backward_lower_bound`)."""
    return _kept(facts, ("alpha", rule), box[0], lambda: default_alpha(act, *box, rule=rule))


def _best_of_slopes(net: AffineNetwork, input_set: InputSet, spec: Tensor, boxes: list[Box],
                    relaxations: list[Relaxation], rule: str, facts: dict) -> tuple[Tensor, list[Relaxation]]:
    """Lower bounds [N, K] of spec @ z_L on the given boxes, each row the larger of its bounds with the
    parallel lower slopes (the Wong-Kolter dual network's) and with CROWN's adaptive ones (both valid, in one
    pass of 2K rows with per-row lines), and the per-row relaxations [N, K, n_k] of the winner (a rerun of
    `backward_lower_bound` with them gives the same bounds up to the rounding of differently shaped products).
    `relaxations` are the boxes' own lines, those of the slope rule `rule`; the other rule's are built on the
    same boxes. When the two rules agree on every layer (no ReLU or leaky ReLU unit is unstable, or smooth
    activations only), one pass of K rows. `facts`: `backward_lower_bound`'s, for these boxes."""
    parallel: list[Relaxation] = []
    adaptive: list[Relaxation] = []
    for act, box, rel in zip(net.activations, boxes, relaxations):
        alphas = {r: _alpha(act, box, r, facts) for r in SLOPE_RULES}
        if torch.equal(alphas["parallel"], alphas["adaptive"]):
            parallel.append(rel)
            adaptive.append(rel)
            continue
        other = "adaptive" if rule == "parallel" else "parallel"
        built = relax_with_alpha(act, rel, *box, alphas[other])
        parallel.append(rel if rule == "parallel" else built)
        adaptive.append(built if rule == "parallel" else rel)
    top = net.depth - 1
    if all(a is p for a, p in zip(adaptive, parallel)):
        return backward_lower_bound(net, input_set, top, spec, parallel, boxes, facts=facts), parallel
    rows = spec.shape[1]
    both = [Relaxation(*(_stacked(getattr(p, f), getattr(a, f), rows) for f in RELAXATION_FIELDS))
            for p, a in zip(parallel, adaptive)]
    value = backward_lower_bound(net, input_set, top, torch.cat([spec, spec], dim=1), both, boxes, facts=facts)
    first, second = value[:, :rows], value[:, rows:]
    won = (second > first).unsqueeze(-1)  # the adaptive slopes give the larger bound
    final = [Relaxation(*(_winner(getattr(r, f), won) for f in RELAXATION_FIELDS)) for r in both]
    return torch.maximum(first, second), final


def _stacked(first: Tensor, second: Tensor, rows: int) -> Tensor:
    """One line field for 2 `rows` objective rows: per unit [N, n] when both rules agree (ReLU's intercepts
    and upper slopes), else per row [N, 2 rows, n] (`first` for the first rows, `second` for the others)."""
    if first is second or torch.equal(first, second):
        return first
    return torch.cat([_per_row(first, rows), _per_row(second, rows)], dim=1)


def _winner(field: Tensor, won: Tensor) -> Tensor:
    """A field of `_stacked` restricted to each row's winning rule ([N, rows, 1]: the second one)."""
    if field.dim() == 2:
        return field
    rows = won.shape[1]
    return torch.where(won, field[:, rows:], field[:, :rows])


def margin_bounds_on_set(
    net: AffineNetwork, input_set: InputSet, target: Tensor, method: str = "crown", slopes: str = "parallel"
) -> tuple[Tensor, dict]:
    """Lower bounds [N, K] on f_c - f_j over the set (+inf at j = c) and the witness that re-derives them:
    CROWN on the boxes of the slope rule `slopes` ("parallel": one pass per layer, the default; "adaptive":
    CROWN's own boxes, often tighter, two passes per layer), each margin the better of the parallel and
    adaptive slopes on those boxes (module docstring, "Slopes"). Witness: "boxes", "layer_relaxations" (the
    boxes' lines, per unit), "relaxations" (the margins' lines, per row [N, K, n_k] where the rules differ)
    and "spec"; {} for IBP."""
    target = check_target(target, input_set.center.shape[0], net.num_classes).to(input_set.center.device)
    spec = margin_spec(target, net.num_classes)
    if method == "ibp":
        value = interval_bounds(net, input_set, spec)[-1][0]
        witness: dict = {}
    else:
        facts: dict = {}
        boxes, relaxations = layer_bounds(net, input_set, method, slopes=slopes, screen=True, facts=facts)
        value, final = _best_of_slopes(net, input_set, spec, boxes, relaxations, slopes, facts)
        witness = {"boxes": boxes, "layer_relaxations": relaxations, "relaxations": final, "spec": spec}
    value = value.masked_fill(torch.isnan(value), -math.inf)  # an overflow (inf - inf) proves nothing: -inf, never NaN
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
    slopes: str = "parallel",
) -> BoundResult:
    """Certified lower bounds [N, num_classes] of f_c - f_j over {||x' - x||_p <= eps} (intersected with
    the domain box), by CROWN or IBP; column c is +inf. Float64, on x's device. `slopes`: the rule of the
    intermediate boxes (`margin_bounds_on_set`)."""
    if method not in METHODS:
        raise UsageError(f"unknown bound method {method!r}; choose one of {METHODS}")
    net = net.to(x.device)
    input_set = InputSet.build(x, eps, p, domain)
    value, witness = margin_bounds_on_set(net, input_set, target, method, slopes)
    return BoundResult(
        value=value,
        kind=Kind.CERTIFIED,
        method=method,
        assumptions=[input_set.describe(), "bounds hold for the float64 evaluation of the network"],
        witness=witness,
        details={"eps": input_set.eps, "p": input_set.p},
    )
