"""Exact dyadic-rational oracle for the relaxation re-check (tests only): the CROWN back-substitution, interval
boxes and LP dual bound of a ReLU graph in exact arithmetic (Python integers times one shared power of two), as
`certify.certificates.relaxation_check` computed them before it moved to outward-rounded float64. The tests
compare the checker's float64 bounds with these exact values: never above them (soundness), and within a few
ulps of the scale (tightness)."""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

import numpy as np
import torch

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
