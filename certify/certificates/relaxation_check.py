"""Independent re-check of relaxation lower bounds on the minimal flipping radius (claim type
"radius-lower"): r*(x) >= value, i.e. every margin m_cj = f_c - f_j stays > 0 on

    S = {x' : ||x' - x||_p <= value} (intersected with the domain box [lo, hi] when the claim states one)

for a ReLU network z_1 = W_1 x + b_1, a_k = relu(z_k), z_{k+1} = W_{k+1} a_k + b_{k+1}, or a ReLU GRAPH with
skip terms (z_k = W_k h_k + b_k + sum_j S_kj h_j: residual nets, MaxPool as ReLU layers). It imports no
bound code: it re-derives everything from the weights, the input and the witness, in float64 with rigorous
outward rounding (`relu_graph`: every product and sum is enclosed with an a priori error bound, Higham 2002
section 3.1, so each re-derived number is a true lower or upper bound of the exact real quantity it stands for).

Relaxation of relu on a box [l, u] (DESIGN section 5): lower line a >= alpha z (alpha = 1 if l >= 0, 0 if
u <= 0, else the witness's alpha, which must lie in [0, 1]); upper chord a <= s z + t with s = u/(u - l) (1 if
l >= 0, 0 if u <= 0) and t = max(relu(l) - s l, relu(u) - s u), valid for any s since relu is convex. The
back-substitution is `relu_graph.lower_bound`: its bound is never lower than this relaxation's value for the
same slopes, up to outward rounding.

Schemes (the claim's params.relaxation; the norm p and the domain box are params too, never witness fields):

* "crown": boxes are NOT read from the witness. Layer by layer, the box of z_k is the intersection of
  interval arithmetic (from the input box through the interval boxes below) and, for the units interval
  arithmetic leaves unstable (l < 0 < u), CROWN back-substitution of +-e_i through the layers below with the
  re-derived boxes and the stored alphas (a unit interval arithmetic already proves stable keeps its interval
  box: its relaxation is the same line for every box of that sign); the margins' lower bound is the same
  back-substitution of the rows e_c - e_j (Zhang et al. 2018; Salman et al. 2019).
  witness["alphas"][k] is either one slope per unit [n_k] (used for the boxes and every margin) or a table
  [K, n_k] over the classes: row c (the target, which has no margin) holds the slopes of the boxes, row
  j != c the slopes with which margin f_c - f_j is back-substituted (each row is a valid choice, so each
  margin may use its own: certify's CROWN keeps per margin the better of the parallel and adaptive rules).
* "lp": the CROWN boxes as above (with every unit back-substituted: the dual bound reads every box), then
  each box listed in witness["tightening"] is intersected with the LP dual bound of +-z_k[unit] from the
  stored multipliers, over the tightened boxes below; each margin's bound is the larger of its CROWN bound and
  (for the classes witness["final"] lists) the dual bound from the final multipliers, both valid. The dual
  bound (DESIGN section 5 and certify.bounds.lp): for min c^T z_top over the triangle relaxation, any w (free)
  and y1, y2 >= 0 (negative entries are clipped to 0) give
      c^T b_top + sum_k w_k^T b_k - sum_k y2_k^T t_k + sum_k [min_{z_k in box} r_z^T z_k
      + min_{a_k in [relu l_k, relu u_k]} r_a^T a_k] + min_{x in S} (W_1^T w_1)^T x,
      r_z = -w_k + y1_k - s_k y2_k,  r_a = W_{k+1}^T w_{k+1} (W_top^T c for the last) - y1_k + y2_k,
  (on a graph, r_a and the input's coefficient sum A_mj^T w_m over every layer m <= top reading that value),
  so tampered multipliers can only loosen it. Here r_z, r_a and the input's coefficients are enclosed in
  intervals and each minimum is taken at the interval's worst end.

Support of a linear function q^T x over S, for every q in an enclosure [c - r, c + r]: for p = inf the box sum
of min(q_j l_j, q_j u_j) (`relu_graph.box_support`); for p = 2 (or 1) c^T x0 - r^T |x0| - value ||m||_2
(||m||_inf), m = |c| + r >= |q|, the norm rounded up (Hoelder); with a domain the larger of the ball and box values (both are
valid lower bounds).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from certify.certificates._common import Invalid
from certify.certificates.document import decode_array
from certify.certificates.relu_graph import (ETA, U64, Box, GraphNet, box_support, down, lower_bound, matmul_enclosure,
                                             require_finite, settle, signed_units, sum_down, sum_up, up)
from certify.errors import UsageError
from certify.vocabulary import Domain, parse_norm

SCHEMES = ("crown", "lp")
CHUNK = 512  # rows back-substituted at once (memory: rows x widest layer)

Fail = Callable[[str], Exception]
Support = Callable[[np.ndarray, np.ndarray], np.ndarray]


class InputSet:
    """S = {x : ||x - x0||_p <= eps} (intersected with [lo, hi] when given): its outer box (lower, upper) [n_0],
    rounded outwards, and its support function for `relu_graph.lower_bound` (module doc)."""

    def __init__(self, x0: np.ndarray, eps: float, p: float, domain: tuple[np.ndarray, np.ndarray] | None) -> None:
        self.x0, self.eps, self.p, self.has_domain = x0, eps, p, domain is not None
        lower, upper = down(x0 - eps), up(x0 + eps)
        if domain is not None:
            lower, upper = np.maximum(lower, domain[0]), np.minimum(upper, domain[1])
        self.lower, self.upper = lower, upper
        self._box = box_support(lower, upper)

    def support(self, centre: np.ndarray, radius: np.ndarray) -> np.ndarray:
        """A lower bound [R] of min_{x in S} q . x for every q in [c - r, c + r] ([R, n_0] each)."""
        box_value = self._box(centre, radius)
        if math.isinf(self.p):
            return box_value
        # q . x0 >= c . x0 - r |x0|, the float c x0 within u |c x0| + eta / 2
        at_centre = settle(centre * self.x0, np.abs(self.x0) * (U64 * np.abs(centre) + radius) + ETA)
        m = up(np.abs(centre) + radius)  # >= |q|
        if self.p == 2:
            scale = m.max(axis=-1, keepdims=True)
            ratio = up(m / np.where(scale > 0, scale, 1.0))  # scaled: no squares that underflow
            norm = up(scale[..., 0] * up(np.sqrt(sum_up(up(ratio * ratio)))))
        else:
            norm = m.max(axis=-1)
        ball_value = down(at_centre - up(self.eps * norm))
        return np.maximum(ball_value, box_value) if self.has_domain else ball_value


def relu_graph(weights: list[torch.Tensor], biases: list[torch.Tensor],
               skips: dict[int, dict[int, torch.Tensor]] | None = None) -> GraphNet:
    """The network as the checker's ReLU graph (float64 arrays)."""
    return GraphNet.build(weights, biases, skips, [("relu",)] * (len(weights) - 1))


def interval(net: GraphNet, k: int, boxes: list[Box]) -> Box:
    """Rigorous box of z_k = W_k h_k + b_k + sum_j S_kj h_j over h_j in boxes[j] = (lower, upper) [n_j]."""
    lows, highs = [net.biases[k]], [net.biases[k]]
    for j, a in net.inputs_of(k):
        pos, neg = np.maximum(a, 0.0), np.minimum(a, 0.0)
        lower, upper = boxes[j]
        for mat, low_end, high_end in ((pos, lower, upper), (neg, upper, lower)):
            c, r = matmul_enclosure(mat, low_end)
            lows.append(down(c - r))
            c, r = matmul_enclosure(mat, high_end)
            highs.append(up(c + r))
    box = sum_down(np.stack(lows, axis=-1)), sum_up(np.stack(highs, axis=-1))
    require_finite(*box)
    return box


def _back_substitute(net: GraphNet, top: int, rows: np.ndarray, boxes: list[Box], support: Support,
                     alphas: list[np.ndarray]) -> np.ndarray:
    """Lower bounds [R] of rows . z_top ([R, n_top]), CHUNK rows at a time; alphas[j] [1 or R, n_j]."""
    out = []
    for start in range(0, rows.shape[0], CHUNK):
        part = slice(start, start + CHUNK)
        slopes = [a if a.shape[0] == 1 else a[part] for a in alphas]
        out.append(lower_bound(net, top, rows[part], np.zeros(rows[part].shape[0]), boxes, support, slopes,
                               [None] * top))
    return np.concatenate(out) if out else np.zeros(0)


def crown_boxes(net: GraphNet, input_set: InputSet, alphas: list[np.ndarray], fail: Fail, every_unit: bool = False
                ) -> list[Box]:
    """Re-derived boxes of z_1..z_{L-1} ([n_k] each): interval arithmetic intersected with CROWN with the
    witness's box slopes alphas[k] [n_k] (on the units interval arithmetic leaves unstable, or on every unit)."""
    if len(alphas) != net.depth - 1:
        raise fail(f"{len(alphas)} alpha vectors for {net.depth - 1} hidden layers")
    boxes: list[Box] = []
    ibp: list[Box] = [(input_set.lower, input_set.upper)]  # interval boxes of h_0, h_1, ...
    slopes: list[np.ndarray] = []
    for k in range(net.depth - 1):
        width = net.widths[k]
        alpha = np.asarray(alphas[k], dtype=np.float64).reshape(-1)
        if alpha.shape != (width,) or not ((alpha >= 0) & (alpha <= 1)).all():
            raise fail(f"alphas of hidden layer {k} must be {width} values in [0, 1]")
        lower, upper = interval(net, k, ibp)
        ibp.append((np.maximum(lower, 0.0), np.maximum(upper, 0.0)))
        units = np.arange(width) if every_unit else np.flatnonzero((lower < 0) & (upper > 0))
        bound = _back_substitute(net, k, signed_units(width, units), boxes, input_set.support, slopes)
        lower, upper = lower.copy(), upper.copy()
        lower[units] = np.maximum(lower[units], bound[: units.size])
        upper[units] = np.minimum(upper[units], -bound[units.size:])
        boxes.append((lower, upper))
        slopes.append(alpha[None])
    return boxes


def _slope_tables(alphas: list[np.ndarray], classes: int, target: int, fail: Fail
                  ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """(the box slopes per hidden layer, the per-margin slopes [K - 1, n_k] per hidden layer or None) from
    the witness's alphas: all one vector per unit, or all tables [K, n_k] (module doc, "crown")."""
    arrays = [np.asarray(a, dtype=np.float64) for a in alphas]
    if all(a.ndim <= 1 for a in arrays):
        return arrays, None
    if not all(a.ndim == 2 and a.shape[0] == classes for a in arrays):
        raise fail(f"alphas must all be one vector per hidden layer or all tables with {classes} rows (one per class)")
    rows = [j for j in range(classes) if j != target]
    finals = [a[rows] for a in arrays]
    if not all(((f >= 0) & (f <= 1)).all() for f in finals):
        raise fail("the per-margin alphas must lie in [0, 1]")
    return [a[target] for a in arrays], finals


def _margin_rows(num_classes: int, target: int) -> tuple[np.ndarray, list[int]]:
    others = [j for j in range(num_classes) if j != target]
    rows = np.zeros((len(others), num_classes))
    rows[:, target] = 1.0
    rows[np.arange(len(others)), others] = -1.0
    return rows, others


def _chord(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(s, t_up): the upper line's slope (module doc) and a rigorous upper bound of its intercept t >= 0."""
    unstable = (lower < 0) & (upper > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(unstable, upper / np.where(unstable, upper - lower, 1.0), np.where(lower >= 0, 1.0, 0.0))
    t_up = np.maximum(up(-(s * lower)), up(upper - down(s * upper)))
    return s, np.where(unstable, t_up, 0.0)


def dual_bound(net: GraphNet, support: Support, top: int, c: np.ndarray, duals: dict[str, list[np.ndarray]],
               boxes: list[Box]) -> np.ndarray:
    """Rigorous lower bound [R] of c . z_top (rows of c [R, n_top]) from multipliers w, y1, y2 ([R, n_k] per
    layer k < top; the dual bound of the module doc, its coefficients enclosed in intervals): on a graph the
    coefficient of each h_j sums the multipliers of every layer m <= top that reads it (W_m^T w_m or S_mj^T
    w_m, w_top := c)."""
    w = duals["w"]
    y1, y2 = ([np.maximum(y, 0.0) for y in duals[key]] for key in ("y1", "y2"))
    reads: dict[int, list[np.ndarray]] = {}  # j -> enclosure [lower, upper] of sum over readers m of w_m A_mj
    for m in range(top + 1):
        for j, a in net.inputs_of(m):
            centre, radius = matmul_enclosure(c if m == top else w[m], a)
            lo, hi = down(centre - radius), up(centre + radius)
            reads[j] = [lo, hi] if j not in reads else [down(reads[j][0] + lo), up(reads[j][1] + hi)]
    pieces = [sum_down(down(c * net.biases[top]))]
    for k in range(top):
        (lower, upper), (s, t_up) = boxes[k], _chord(*boxes[k])
        pieces += [sum_down(down(w[k] * net.biases[k])), -sum_up(up(y2[k] * t_up))]
        r_z = (down(down(y1[k] - w[k]) - up(s * y2[k])), up(up(y1[k] - w[k]) - down(s * y2[k])))
        r_a = (down(down(reads[k + 1][0] - y1[k]) + y2[k]), up(up(reads[k + 1][1] - y1[k]) + y2[k]))
        pieces += [_corner_minimum(*r_z, lower, upper), _corner_minimum(*r_a, np.maximum(lower, 0.0), np.maximum(upper, 0.0))]
    lo, hi = reads[0]
    centre = lo + (hi - lo) / 2  # any centre: the radius below covers both ends
    pieces.append(support(centre, up(np.maximum(up(hi - centre), up(centre - lo)))))
    total = sum_down(np.stack(pieces, axis=-1))
    require_finite(total)
    return total


def _corner_minimum(r_lo: np.ndarray, r_hi: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """A lower bound [R] of sum_i min r_i z_i over r_i in [r_lo, r_hi] ([R, n]) and z_i in [lower, upper] ([n])."""
    corners = [down(a * b) for a in (r_lo, r_hi) for b in (lower, upper)]
    return sum_down(np.minimum(np.minimum(corners[0], corners[1]), np.minimum(corners[2], corners[3])))


def _unit_rows(width: int, units: list[int], sign: float) -> np.ndarray:
    rows = np.zeros((len(units), width))
    rows[np.arange(len(units)), units] = sign
    return rows


def lp_boxes(net: GraphNet, input_set: InputSet, boxes: list[Box], tightening: list[dict],
             decode: Callable[[Any], np.ndarray], fail: Fail) -> list[Box]:
    """The CROWN boxes intersected, layer by layer, with the LP dual bounds of the listed units."""
    by_layer = {int(entry["layer"]): entry for entry in tightening}
    tight: list[Box] = []
    for k, (lower, upper) in enumerate(boxes):
        lower, upper = lower.copy(), upper.copy()
        entry = by_layer.get(k)
        if entry is not None and entry["units"]:
            if k == 0:
                raise fail("the first hidden layer's box is exact; it has no LP tightening")
            units = [int(u) for u in entry["units"]]
            for sign, key in ((1.0, "lower"), (-1.0, "upper")):
                duals = _duals(entry[key], k, decode)
                value = dual_bound(net, input_set.support, k, _unit_rows(net.widths[k], units, sign), duals, tight)
                if sign > 0:
                    lower[units] = np.maximum(lower[units], value)
                else:
                    upper[units] = np.minimum(upper[units], -value)
        if (lower > upper).any():
            raise fail(f"hidden layer {k}: the re-derived box is empty (contradictory multipliers or an empty set)")
        tight.append((lower, upper))
    return tight


def _duals(record: dict, top: int, decode: Callable[[Any], np.ndarray]) -> dict[str, list[np.ndarray]]:
    duals = {key: [np.asarray(decode(a), dtype=np.float64) for a in record[key]] for key in ("w", "y1", "y2")}
    if any(len(v) != top for v in duals.values()):
        raise ValueError(f"multipliers for {top} layers expected")
    if not all(np.isfinite(a).all() for v in duals.values() for a in v):
        raise ValueError("a multiplier is not finite")
    return duals


def prove_margins(weights: list[torch.Tensor], biases: list[torch.Tensor], x0: np.ndarray, target: int, radius: float,
                  witness: dict, decode: Callable[[Any], np.ndarray], fail: Fail, p: Any, scheme: str,
                  domain: tuple[np.ndarray, np.ndarray] | None = None,
                  skips: dict[int, dict[int, torch.Tensor]] | None = None) -> list[float]:
    """Rigorous lower bounds (float64) of the margins f_target - f_j, j != target, over the ball of `radius` in
    the norm `p` (intersected with the `domain` box [lo, hi]), by the relaxation `scheme` with the witness's
    slopes and multipliers; raises fail(...) naming the first margin not proven > 0. p, scheme and domain are
    the claim's params, never read from the witness. `skips`: the graph's skip terms (module doc)."""
    try:
        p = parse_norm(p)
    except UsageError as exc:
        raise fail(str(exc)) from None
    if not (math.isfinite(radius) and radius >= 0):
        raise fail(f"radius {radius} is not a finite number >= 0")
    if scheme not in SCHEMES:
        raise fail(f"unknown relaxation scheme {scheme!r}; expected one of {SCHEMES}")
    if not np.isfinite(x0).all():
        raise fail("the input is not finite")
    if domain is not None:
        domain = tuple(np.broadcast_to(np.asarray(d, dtype=np.float64).reshape(-1), x0.shape) for d in domain)
        if ((x0 < domain[0]) | (x0 > domain[1])).any():
            raise fail("the input lies outside the stated domain")
    net = relu_graph(weights, biases, skips)
    input_set = InputSet(x0, radius, p, domain)  # type: ignore[arg-type]
    box_alphas, final_alphas = _slope_tables([decode(a) for a in witness["alphas"]], net.widths[-1], target, fail)
    try:
        boxes = crown_boxes(net, input_set, box_alphas, fail, every_unit=scheme == "lp")
        rows, others = _margin_rows(net.widths[-1], target)
        top = net.depth - 1
        finals = [a[None] for a in box_alphas] if final_alphas is None else final_alphas
        bound = _back_substitute(net, top, rows, boxes, input_set.support, finals)
        if scheme == "lp":
            boxes = lp_boxes(net, input_set, boxes, witness["tightening"], decode, fail)
            final = witness["final"]
            listed = [others.index(int(j)) if int(j) in others else -1 for j in final["classes"]]
            if listed and (min(listed) < 0 or len(set(listed)) != len(listed)):
                raise fail(f"final multipliers are for classes {final['classes']}; expected distinct classes among {others}")
            if listed:
                lp = dual_bound(net, input_set.support, top, rows[listed], _duals(final, top, decode), boxes)
                bound[listed] = np.maximum(bound[listed], lp)  # each margin: the better of its CROWN and LP bounds
    except Invalid as exc:  # a bound that overflowed float64
        raise fail(str(exc)) from None
    for j, value in zip(others, bound.tolist()):
        if not value > 0:
            raise fail(f"margin f_{target} - f_{j} is not proven > 0 on the ball of radius {radius:.10g} "
                       f"(lower bound {value:.6g})")
    return bound.tolist()


def check_radius_lower(ctx: Any, claim: Any, weights: list[torch.Tensor], biases: list[torch.Tensor], acts: list[tuple],
                       skips: dict[int, dict[int, torch.Tensor]] | None = None) -> float:
    """Rule for "radius-lower": max(claimed radius, the witness's radius) if every margin is proven > 0 on
    that ball (module doc). Norm, domain and scheme come from the claim's params, the weights and skips from
    the checker's own translation (a ReLU graph: residual ReLU nets, MaxPool as ReLU layers)."""
    if not acts or not all(a[0] == "relu" for a in acts):
        raise Invalid("the relaxation re-check covers ReLU networks with at least one hidden layer")
    x0 = ctx.x.reshape(-1).numpy().astype(np.float64)

    def decode(record: Any) -> np.ndarray:
        return decode_array(record, f"claim {claim.id} witness", ctx.base_dir)

    params = claim.params
    domain = None
    if params["domain"] is not None:
        box = Domain.from_json(params["domain"])
        if box is not None and box.bounded:
            lo, hi = box.tensors(tuple(ctx.x.shape[1:]), torch.float64)
            domain = (np.nan_to_num(lo.reshape(-1).numpy()), np.nan_to_num(hi.reshape(-1).numpy()))  # +-inf as +-DBL_MAX
    # proven at the radius the witness was built for when that is larger: a loosened claim then re-derives
    # to the original radius (so claims resting on it, such as a gap, stay valid); a raised one is proven
    # at its own, larger radius or fails
    extra = claim.witness.get("radius", claim.value)
    if isinstance(extra, bool) or not isinstance(extra, (int, float)):
        raise Invalid("witness radius is not a number")
    radius = max(float(claim.value), float(extra))
    prove_margins(weights, biases, x0, ctx.target, radius, claim.witness, decode, Invalid, params["p"],
                  params["relaxation"], domain, skips)
    return radius
