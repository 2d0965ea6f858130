"""Independent re-check of relaxation lower bounds on the minimal flipping radius (claim type
"radius-lower"): r*(x) >= value, i.e. every margin m_cj = f_c - f_j stays > 0 on

    S = {x' : ||x' - x||_p <= value} (intersected with the domain box [lo, hi] when the witness states one)

for a ReLU network z_1 = W_1 x + b_1, a_k = relu(z_k), z_{k+1} = W_{k+1} a_k + b_{k+1}, or a ReLU GRAPH with
skip terms (z_k = W_k h_k + b_k + sum_j S_kj h_j: residual nets, MaxPool as ReLU layers; the back-substitution
gathers each h_j's coefficients from every layer that reads it before relaxing it). It imports no
bound code: it re-derives everything from the weights, the input and the witness, in exact arithmetic.

Exact arithmetic. Every float64 is a dyadic rational m 2^e, and sums and products of dyadic rationals
stay dyadic, so arrays are held as Python integers times one shared power of two (`Exact`): exact
rational arithmetic (the special case of `fractions.Fraction` with power-of-two denominators), ~100x
faster than Fraction objects. The one square root (the L2 support, below) is rounded up by an integer
square root, so even the L2 case is exact up to that outward step. Hidden boxes are rounded outwards to
float64 after each layer (a wider box is still a valid box), which keeps the integers short.

Relaxation of relu on a box [l, u] (DESIGN section 5; the checker's own, from the re-derived box):
lower line a >= alpha z (alpha = 1 if l >= 0, 0 if u <= 0, else the witness's alpha, which must lie in
[0, 1]); upper line a <= s z + t with s = u/(u - l) in float64 (1 if l >= 0, 0 if u <= 0) and the exact
intercept t = max(relu(l) - s l, relu(u) - s u), valid for any s since relu is convex.

Schemes (the claim's params.relaxation; the norm p and the domain box are params too, never witness fields):

* "crown": boxes are NOT read from the witness. Layer by layer, the box of z_k is the intersection of
  interval arithmetic (from the input box through the interval boxes below) and CROWN back-substitution
  of +-I through the layers below with the re-derived boxes and the stored alphas; the margins' lower
  bound is the same back-substitution of the rows e_c - e_j (Zhang et al. 2018; Salman et al. 2019).
  witness["alphas"][k] is either one slope per unit [n_k] (used for the boxes and every margin) or a table
  [K, n_k] over the classes: row c (the target, which has no margin) holds the slopes of the boxes, row
  j != c the slopes with which margin f_c - f_j is back-substituted (each row is a valid choice, so each
  margin may use its own: certify's CROWN keeps per margin the better of the parallel and adaptive rules).
* "lp": the CROWN boxes as above, then each box listed in witness["tightening"] is intersected with the
  LP dual bound of +-z_k[unit] from the stored multipliers, over the tightened boxes below; each
  margin's bound is the larger of its CROWN bound and (for the classes witness["final"] lists) the dual
  bound from the final multipliers, both valid. The dual bound (DESIGN section 5 and certify.bounds.lp):
  for min c^T z_top over the triangle relaxation, any w (free) and y1, y2 >= 0 (negative entries are
  clipped to 0) give
      c^T b_top + sum_k w_k^T b_k - sum_k y2_k^T t_k + sum_k [min_{z_k in box} r_z^T z_k
      + min_{a_k in [relu l_k, relu u_k]} r_a^T a_k] + min_{x in S} (W_1^T w_1)^T x,
      r_z = -w_k + y1_k - s_k y2_k,  r_a = W_{k+1}^T w_{k+1} (W_top^T c for the last) - y1_k + y2_k,
  (on a graph, r_a and the input's coefficient sum A_mj^T w_m over every layer m <= top reading that value),
  so tampered multipliers can only loosen it.

Support of a linear function r^T x over S: for p = inf the box sum min(r_j l_j, r_j u_j) (exact); for
p = 2 (or 1) r^T x0 - value ||r||_2 (||r||_inf), with ||r||_2 rounded up by an integer square root, and
with a domain the larger of the ball and box values (both are valid lower bounds).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from certify.certificates._common import Invalid
from certify.certificates.document import decode_array
from certify.errors import UsageError
from certify.vocabulary import Domain, parse_norm

SCHEMES = ("crown", "lp")


@dataclass
class Exact:
    """An array of dyadic rationals `ints * 2**exp` (ints: numpy object array of Python ints)."""

    ints: np.ndarray
    exp: int

    @classmethod
    def of(cls, values: Any) -> "Exact":
        """The exact value of a float64 array (NaN or Inf raise ValueError)."""
        a = np.asarray(values, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ValueError("non-finite value in exact arithmetic")
        mantissa, expo = np.frexp(a)
        ints = (mantissa * 2.0**53).astype(np.int64)  # exact: |mantissa| < 1
        expo = expo.astype(np.int64) - 53
        base = int(expo.min()) if a.size else 0
        out = np.empty(a.size, dtype=object)
        out[:] = [i << s for i, s in zip(ints.ravel().tolist(), (expo - base).ravel().tolist())]
        return cls(out.reshape(a.shape), base)

    def _aligned(self, other: "Exact") -> tuple[np.ndarray, np.ndarray, int]:
        if self.exp == other.exp:
            return self.ints, other.ints, self.exp
        if self.exp > other.exp:
            return self.ints * (1 << (self.exp - other.exp)), other.ints, other.exp
        return self.ints, other.ints * (1 << (other.exp - self.exp)), self.exp

    def __add__(self, other: "Exact") -> "Exact":
        a, b, e = self._aligned(other)
        return Exact(a + b, e)

    def __sub__(self, other: "Exact") -> "Exact":
        a, b, e = self._aligned(other)
        return Exact(a - b, e)

    def __neg__(self) -> "Exact":
        return Exact(-self.ints, self.exp)

    def __mul__(self, other: "Exact") -> "Exact":
        return Exact(self.ints * other.ints, self.exp + other.exp)

    def __matmul__(self, other: "Exact") -> "Exact":
        return Exact(self.ints @ other.ints, self.exp + other.exp)

    def sum(self, axis: int = -1) -> "Exact":
        return Exact(self.ints.sum(axis=axis), self.exp)

    def positive(self) -> "Exact":
        return Exact(np.where(self.ints > 0, self.ints, 0), self.exp)

    def negative(self) -> "Exact":
        return Exact(np.where(self.ints < 0, self.ints, 0), self.exp)

    def minimum(self, other: "Exact") -> "Exact":
        a, b, e = self._aligned(other)
        return Exact(np.where(a <= b, a, b), e)

    def maximum(self, other: "Exact") -> "Exact":
        a, b, e = self._aligned(other)
        return Exact(np.where(a >= b, a, b), e)

    def floor(self) -> np.ndarray:
        """Largest float64 array <= the values (elementwise)."""
        return np.array([_floor_float(int(i), self.exp) for i in self.ints.ravel()]).reshape(self.ints.shape)

    def ceil(self) -> np.ndarray:
        return -(-self).floor()


def _floor_float(m: int, e: int) -> float:
    """Largest float64 <= m 2^e (keeps 53 leading bits, rounding the mantissa towards -inf)."""
    shift = max(m.bit_length() - 53, 0)
    try:
        value = math.ldexp(m >> shift, e + shift)
    except OverflowError:
        return sys.float_info.max if m > 0 else -math.inf
    if abs(value) >= 2.2250738585072014e-308 or Fraction(value) <= Fraction(m) * Fraction(2) ** e:
        return value
    return math.nextafter(value, -math.inf)  # below the normal range ldexp rounded upwards


def _relu(values: np.ndarray) -> np.ndarray:
    return np.maximum(values, 0.0)


@dataclass
class ExactSet:
    """S = {x : ||x - x0||_p <= eps} (intersected with [lo, hi] when given), exactly."""

    x0: Exact
    eps: Exact
    p: float
    lower: Exact  # outer box of S
    upper: Exact
    has_domain: bool

    @classmethod
    def build(cls, x0: np.ndarray, eps: float, p: float, domain: tuple[np.ndarray, np.ndarray] | None) -> "ExactSet":
        centre, radius = Exact.of(x0), Exact.of(eps)
        lower, upper = centre - Exact.of(np.full(x0.shape, eps)), centre + Exact.of(np.full(x0.shape, eps))
        if domain is not None:
            lower, upper = lower.maximum(Exact.of(domain[0])), upper.minimum(Exact.of(domain[1]))
        return cls(centre, radius, p, lower, upper, domain is not None)

    def lower_support(self, r: Exact) -> Exact:
        """Exact lower bound on min_{x in S} r_i^T x for each row r_i of r [R, n]: [R]."""
        box_value = (r * self.lower).minimum(r * self.upper).sum()
        if math.isinf(self.p):
            return box_value
        if self.p == 2:
            squares = (r.ints * r.ints).sum(axis=-1)
            norm = Exact(np.array([_ceil_sqrt(int(s)) for s in np.atleast_1d(squares)], dtype=object), r.exp)
        else:
            norm = Exact(np.abs(r.ints).max(axis=-1), r.exp)
        ball_value = (r @ self.x0) - norm * self.eps
        return ball_value.maximum(box_value) if self.has_domain else ball_value


def _ceil_sqrt(n: int) -> int:
    root = math.isqrt(n)
    return root if root * root == n else root + 1


@dataclass
class Line:
    """Relu relaxation of one layer on its box: alpha z <= a <= s z + t (module doc)."""

    lower_slope: Exact
    upper_slope: Exact
    upper_intercept: Exact


def relu_lines(lower: np.ndarray, upper: np.ndarray, alpha: np.ndarray | None) -> Line:
    """The checker's relaxation on the float box [lower, upper]; alpha (needed for CROWN) in [0, 1]."""
    unstable = (lower < 0) & (upper > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        chord = np.where(unstable, upper / (upper - lower), 0.0)
    s = np.where(lower >= 0, 1.0, chord)
    if alpha is None:
        alpha = s
    slope_l = np.where(lower >= 0, 1.0, np.where(upper <= 0, 0.0, alpha))
    s_exact, lo, hi = Exact.of(s), Exact.of(lower), Exact.of(upper)
    intercept = (Exact.of(_relu(lower)) - s_exact * lo).maximum(Exact.of(_relu(upper)) - s_exact * hi)
    return Line(Exact.of(slope_l), s_exact, intercept)


class ReluNetwork:
    """The exact network: weights[k] [out, in], biases[k] and skips[k][j] [out_k, size(h_j)] as Exact, for the
    graph IR z_k = W_k h_k + b_k + sum_j S_kj h_j, h_0 = x, h_{k+1} = relu(z_k) (a chain has no skips)."""

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor],
                 skips: dict[int, dict[int, torch.Tensor]] | None = None) -> None:
        self.weights = [Exact.of(w.detach().cpu().numpy()) for w in weights]
        self.biases = [Exact.of(b.detach().cpu().numpy()) for b in biases]
        self.skips = {int(k): {int(j): Exact.of(torch.as_tensor(s).detach().cpu().numpy()) for j, s in sorted(row.items())}
                      for k, row in (skips or {}).items() if row}
        self.widths = [w.ints.shape[0] for w in self.weights]

    @property
    def depth(self) -> int:
        return len(self.weights)

    def inputs_of(self, k: int) -> list[tuple[int, Exact]]:
        """(j, A_kj) for every h_j that z_k reads: its own h_k (W_k), then the skips."""
        return [(k, self.weights[k])] + list(self.skips.get(k, {}).items())

    def backward(self, input_set: ExactSet, layer: int, coeffs: Exact, lines: list[Line]) -> Exact:
        """Exact CROWN lower bound on coeffs @ z_layer over S ([R]), with lines[k] for hidden layers < layer:
        the coefficients of each h_j are gathered from every layer that reads it (its own and the skips)
        before h_j = relu(z_{j-1}) is relaxed."""
        lam = coeffs
        value = Exact(np.zeros(coeffs.ints.shape[0], dtype=object), 0)
        gathered: dict[int, Exact] = {}
        for k in range(layer, -1, -1):
            value = value + lam @ self.biases[k]
            for j, a in self.inputs_of(k):
                gathered[j] = lam @ a if j not in gathered else gathered[j] + lam @ a
            lam = gathered.pop(k)
            if k == 0:
                break
            line = lines[k - 1]
            pos, neg = lam.positive(), lam.negative()
            value = value + (neg * line.upper_intercept).sum()
            lam = pos * line.lower_slope + neg * line.upper_slope
        return value + input_set.lower_support(lam)

    def interval(self, k: int, boxes: list[tuple[Exact, Exact]]) -> tuple[Exact, Exact]:
        """Exact box of z_k = W_k h_k + b_k + sum_j S_kj h_j over h_j in boxes[j] = (lower, upper)."""
        low = high = self.biases[k]
        for j, a in self.inputs_of(k):
            a_t = Exact(a.ints.T.copy(), a.exp)
            pos, neg = a_t.positive(), a_t.negative()
            lower, upper = boxes[j]
            low = low + lower @ pos + upper @ neg
            high = high + upper @ pos + lower @ neg
        return low, high

    def dual_bound(self, input_set: ExactSet, top: int, c: Exact, duals: dict[str, list[Exact]],
                   boxes: list[tuple[np.ndarray, np.ndarray]], lines: list[Line]) -> Exact:
        """The LP dual lower bound on c @ z_top (rows of c [R, n_top]) from multipliers w, y1, y2 (module doc);
        on a graph the coefficient of each h_j sums the multipliers of every layer m <= top that reads it
        (W_m^T w_m or S_mj^T w_m, w_top := c)."""
        w = duals["w"]
        y1, y2 = ([y.positive() for y in duals[key]] for key in ("y1", "y2"))
        reads: dict[int, Exact] = {}  # j -> sum over readers m of w_m A_mj
        for m in range(top + 1):
            for j, a in self.inputs_of(m):
                part = (c if m == top else w[m]) @ a
                reads[j] = part if j not in reads else reads[j] + part
        value = c @ self.biases[top]
        for k in range(top):
            line, (lower, upper) = lines[k], boxes[k]
            value = value + (w[k] * self.biases[k]).sum() - (y2[k] * line.upper_intercept).sum()
            r_z = y1[k] - w[k] - y2[k] * line.upper_slope
            r_a = reads[k + 1] - y1[k] + y2[k]
            for r, lo, hi in ((r_z, lower, upper), (r_a, _relu(lower), _relu(upper))):
                value = value + (r * Exact.of(lo)).minimum(r * Exact.of(hi)).sum()
        return value + input_set.lower_support(reads[0])


Fail = Callable[[str], Exception]


def _pm_identity(width: int) -> Exact:
    eye = np.eye(width)
    return Exact.of(np.concatenate([eye, -eye]))


def crown_boxes(net: ReluNetwork, input_set: ExactSet, alphas: list[np.ndarray], fail: Fail
                ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[Line]]:
    """Re-derived float64 boxes of z_1..z_{L-1} (interval arithmetic intersected with CROWN, rounded
    outwards) and the lines built on them with the witness's alphas."""
    if len(alphas) != net.depth - 1:
        raise fail(f"{len(alphas)} alpha vectors for {net.depth - 1} hidden layers")
    boxes: list[tuple[np.ndarray, np.ndarray]] = []
    lines: list[Line] = []
    ibp = [(input_set.lower, input_set.upper)]  # interval boxes of h_0, h_1, ...
    for k in range(net.depth - 1):
        ibp_lower, ibp_upper = net.interval(k, ibp)
        width = net.widths[k]
        bound = net.backward(input_set, k, _pm_identity(width), lines)
        lower = Exact(bound.ints[:width], bound.exp).maximum(ibp_lower).floor()
        upper = (-Exact(bound.ints[width:], bound.exp)).minimum(ibp_upper).ceil()
        alpha = np.asarray(alphas[k], dtype=np.float64).reshape(-1)
        if alpha.shape != (width,) or not ((alpha >= 0) & (alpha <= 1)).all():
            raise fail(f"alphas of hidden layer {k} must be {width} values in [0, 1]")
        boxes.append((lower, upper))
        lines.append(relu_lines(lower, upper, alpha))
        ibp.append((ibp_lower.positive(), ibp_upper.positive()))
    return boxes, lines


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


def _margin_rows(num_classes: int, target: int) -> tuple[Exact, list[int]]:
    others = [j for j in range(num_classes) if j != target]
    rows = np.zeros((len(others), num_classes))
    rows[:, target] = 1.0
    rows[np.arange(len(others)), others] = -1.0
    return Exact.of(rows), others


def _unit_rows(width: int, units: list[int], sign: float) -> Exact:
    rows = np.zeros((len(units), width))
    rows[np.arange(len(units)), units] = sign
    return Exact.of(rows)


def lp_boxes(net: ReluNetwork, input_set: ExactSet, boxes: list[tuple[np.ndarray, np.ndarray]],
             tightening: list[dict], decode: Callable[[Any], np.ndarray], fail: Fail
             ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[Line]]:
    """The CROWN boxes intersected, layer by layer, with the LP dual bounds of the listed units."""
    by_layer = {int(entry["layer"]): entry for entry in tightening}
    tight: list[tuple[np.ndarray, np.ndarray]] = []
    lines: list[Line] = []
    for k, (lower, upper) in enumerate(boxes):
        lower, upper = lower.copy(), upper.copy()
        entry = by_layer.get(k)
        if entry is not None and entry["units"]:
            if k == 0:
                raise fail("the first hidden layer's box is exact; it has no LP tightening")
            units = [int(u) for u in entry["units"]]
            for sign, key in ((1.0, "lower"), (-1.0, "upper")):
                duals = _duals(entry[key], k, decode)
                value = net.dual_bound(input_set, k, _unit_rows(net.widths[k], units, sign), duals, tight, lines)
                if sign > 0:
                    lower[units] = np.maximum(lower[units], value.floor())
                else:
                    upper[units] = np.minimum(upper[units], (-value).ceil())
        if (lower > upper).any():
            raise fail(f"hidden layer {k}: the re-derived box is empty (contradictory multipliers or an empty set)")
        tight.append((lower, upper))
        lines.append(relu_lines(lower, upper, None))
    return tight, lines


def _duals(record: dict, top: int, decode: Callable[[Any], np.ndarray]) -> dict[str, list[Exact]]:
    duals = {key: [Exact.of(decode(a)) for a in record[key]] for key in ("w", "y1", "y2")}
    if any(len(v) != top for v in duals.values()):
        raise ValueError(f"multipliers for {top} layers expected")
    return duals


def prove_margins(weights: list[torch.Tensor], biases: list[torch.Tensor], x0: np.ndarray, target: int, radius: float,
                  witness: dict, decode: Callable[[Any], np.ndarray], fail: Fail, p: Any, scheme: str,
                  domain: tuple[np.ndarray, np.ndarray] | None = None,
                  skips: dict[int, dict[int, torch.Tensor]] | None = None) -> list[float]:
    """Exact lower bounds (rounded down to float64) of the margins f_target - f_j, j != target, over the
    ball of `radius` in the norm `p` (intersected with the `domain` box [lo, hi]), by the relaxation
    `scheme` with the witness's slopes and multipliers; raises fail(...) naming the first margin not
    proven > 0. p, scheme and domain are the claim's params, never read from the witness. `skips`: the
    graph's skip terms (ReluNetwork)."""
    try:
        p = parse_norm(p)
    except UsageError as exc:
        raise fail(str(exc)) from None
    if not (math.isfinite(radius) and radius >= 0):
        raise fail(f"radius {radius} is not a finite number >= 0")
    if scheme not in SCHEMES:
        raise fail(f"unknown relaxation scheme {scheme!r}; expected one of {SCHEMES}")
    if domain is not None:
        domain = tuple(np.broadcast_to(np.asarray(d, dtype=np.float64).reshape(-1), x0.shape) for d in domain)
        if ((x0 < domain[0]) | (x0 > domain[1])).any():
            raise fail("the input lies outside the stated domain")
    net = ReluNetwork(weights, biases, skips)
    input_set = ExactSet.build(x0, radius, p, domain)  # type: ignore[arg-type]
    box_alphas, final_alphas = _slope_tables([decode(a) for a in witness["alphas"]], net.widths[-1], target, fail)
    boxes, lines = crown_boxes(net, input_set, box_alphas, fail)
    rows, others = _margin_rows(net.widths[-1], target)
    top = net.depth - 1
    final_lines = lines if final_alphas is None else [relu_lines(lo, hi, a) for (lo, hi), a in zip(boxes, final_alphas)]
    bound = net.backward(input_set, top, rows, final_lines)
    if scheme == "lp":
        boxes, lines = lp_boxes(net, input_set, boxes, witness["tightening"], decode, fail)
        final = witness["final"]
        listed = [others.index(int(j)) if int(j) in others else -1 for j in final["classes"]]
        if listed and (min(listed) < 0 or len(set(listed)) != len(listed)):
            raise fail(f"final multipliers are for classes {final['classes']}; expected distinct classes among {others}")
        if listed:
            lp = net.dual_bound(input_set, top, Exact(rows.ints[listed], rows.exp), _duals(final, top, decode), boxes, lines)
            full, best, exp = bound._aligned(Exact(bound.ints[listed], bound.exp).maximum(lp))
            full = full.copy()
            full[listed] = best
            bound = Exact(full, exp)  # each margin: the better of its CROWN and LP dual bounds
    values = bound.floor().tolist()
    for j, value, exact in zip(others, values, bound.ints):
        if not exact > 0:
            raise fail(f"margin f_{target} - f_{j} is not proven > 0 on the ball of radius {radius:.10g} "
                       f"(exact lower bound {value:.6g})")
    return values


def check_radius_lower(ctx: Any, claim: Any, weights: list[torch.Tensor], biases: list[torch.Tensor], acts: list[tuple],
                       skips: dict[int, dict[int, torch.Tensor]] | None = None) -> float:
    """Rule for "radius-lower": max(claimed radius, the witness's radius) if every margin is proven > 0 on
    that ball (module doc). Norm, domain and scheme come from the claim's params, the weights and skips from
    the checker's own translation (a ReLU graph: residual ReLU nets, MaxPool as ReLU layers)."""
    if not acts or not all(a[0] == "relu" for a in acts):
        raise Invalid("the exact relaxation re-check covers ReLU networks with at least one hidden layer")
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
