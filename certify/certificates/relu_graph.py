"""The checker's ReLU graph and its outward-rounded float64 bounds, shared by the re-checks of "property-holds"
(`property_check`) and "radius-lower" (`relaxation_check`). It imports no bound code (certify.bounds).

The network (the graph IR of the checker's translation, `semantics.translate`):

    h_0 = x,  z_k = W_k h_k + b_k + sum_{j in skips[k]} S_kj h_j,  h_{k+1} = sigma_k(z_k) (k < L-1),  y = z_{L-1}

and for the bound sigma is relu or leaky_relu with slope a in [0, 1] (below, relu stands for sigma(z) = max(z, a z),
convex: lower lines of slope in [a, 1] through 0, upper chord).

The lower bound (`lower_bound`). For ANY row vectors g_k (k = 0 .. top, g_top = c, the objective) the identity

    c . z_top = sum_k g_k . b_k + Q_0 . x + sum_{j=1..top} (Q_j . relu(z_{j-1}) - g_{j-1} . z_{j-1}),
    Q_j = sum_{k reads h_j} g_k A_kj      (A_kj = W_k when j = k, else S_kj)

holds exactly, so over a region where each z_{j-1} lies in a box [l, u] and x in an input set S,
c . z_top >= sum_k g_k . b_k + min_{x in S} Q_0 . x + sum_{j, i} min_{z in [l_i, u_i]} (Q_ji relu(z) - g_{j-1,i} z).
Each one-dimensional minimum is attained at l, u or 0 (a piecewise-linear function), so it is computed
exactly, up to outward rounding (Q_j is enclosed in a midpoint-radius interval [c - r, c + r]: q sigma(z) is
taken at its worst end). Which g
is used decides only how good the bound is, never whether it is valid: g comes from a CROWN back-substitution
(Zhang et al. 2018) with the caller's lower ReLU slopes alpha and optional split multipliers beta (beta-CROWN,
Wang et al. 2021: the coefficient of a split unit's z gains -beta s), g_{j-1} = Q_j^+ alpha' + Q_j^- (sigma(u) -
sigma(l))/(u - l) - beta s with lower slope alpha' = a + (1 - a) alpha (alpha for relu), computed in plain
float64. The bound is never lower than the CROWN relaxation's value for the same g (the relaxation minimises the
same terms over a larger set: for Q_ji >= 0 the term is >= 0, for Q_ji < 0 it equals Q_ji times the chord's
intercept), so it re-derives CROWN's bound up to the outward rounding.

Outward rounding (float64, round-to-nearest hardware): a correctly rounded product or sum is within half
an ulp of the exact value, so `nextafter` towards -inf / +inf gives a rigorous bound (subnormal results
included; the nonnegative error terms use `up_nonneg`, never below nextafter and 18x cheaper); a dot product or
matrix product of n terms, in any summation order (blocked, pairwise, with or without fused multiply-add),
errs by at most gamma_n |a| . |b| + n eta (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed.,
section 3.1 and eq. (3.5), with underflow; gamma_n = n u / (1 - n u), u = 2^-53,
eta = 2^-1074), enclosed as [fl(ab) - E, fl(ab) + E] with E = 2 gamma_{n+2} fl(|a||b|) + 4 (n + 2) eta, itself
rounded up. Elementwise terms are not rounded one by one: each carries an a priori error bound of the float
expression that computed it, and a row's terms and bounds are summed once (`settle`). `flush_to_zero` refuses to work when the arithmetic flushes subnormals to zero (this analysis then
does not hold).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from certify.certificates import semantics
from certify.certificates._common import Invalid

U64 = 2.0**-53
ETA = 2.0**-1074

# ------------------------------------------------------------------ outward-rounded float64 primitives

def down(a: np.ndarray) -> np.ndarray:
    return np.nextafter(a, -np.inf)


def up(a: np.ndarray) -> np.ndarray:
    return np.nextafter(a, np.inf)


def up_nonneg(a: np.ndarray) -> np.ndarray:
    """A float >= nextafter(a, +inf) for every a >= 0 (+inf stays +inf), with two multiply-adds (nextafter is about
    18x slower here): t = fl(fl(a 2^-52) + eta) >= max(fl(a 2^-52), eta) (rounding to nearest is monotone), and the
    gap between a and the next float is at most a 2^-52 for normal a (the shift by 2^-52 is exact down to 2^-1022,
    within eta / 2 below, which the next float absorbs) and eta otherwise; so a + t >= nextafter(a) exactly, and
    so does its rounded value."""
    return a + (a * 2.0**-52 + ETA)


def gamma(n: int) -> float:
    """gamma_n = n u / (1 - n u), u = 2^-53 (infinite when n u >= 1/2)."""
    if n * U64 >= 0.5:
        return math.inf
    return n * U64 / (1.0 - n * U64)


def _product_error(magnitude: np.ndarray, n: int) -> np.ndarray:
    """Rounded-up bound on |fl(a . b) - a . b| for n-term products, from magnitude = fl(|a| . |b|)."""
    return up_nonneg(2.0 * gamma(n + 2) * (1 + 8 * U64) * magnitude + 4.0 * (n + 2) * ETA)


def matmul_enclosure(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(c, r): c = fl(a @ b) and a rounded-up radius r with |a @ b - c| <= r exactly (elementwise)."""
    c = a @ b
    return c, _product_error(np.abs(a) @ np.abs(b), a.shape[-1])


def _selection_enclosure(g: np.ndarray) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """matmul_enclosure for the left factor g [R, n], faster when each row of g has at most one nonzero entry,
    +1 or -1 (the rows +-e_i that bound a box): then g @ b is that signed row of b, exactly (radius 0)."""
    if g.ndim != 2 or (np.count_nonzero(g, axis=1) > 1).any() or not (np.abs(g[g != 0]) == 1.0).all():
        return matmul_enclosure
    index = np.abs(g).argmax(axis=1)
    sign = g[np.arange(g.shape[0]), index]  # the entry itself: +1, -1, or 0 for a zero row

    def enclose(_: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = sign.reshape((-1,) + (1,) * (b.ndim - 1)) * b[index]
        return c, np.zeros_like(c)

    return enclose


def sum_down(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """A lower bound of the exact sum along `axis` (summation error gamma_n sum |v|, rounded outwards)."""
    n = values.shape[axis]
    return down(values.sum(axis=axis) - _product_error(np.abs(values).sum(axis=axis), n))


def sum_up(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return -sum_down(-values, axis)


def require_finite(*arrays: np.ndarray) -> None:
    if not all(np.isfinite(a).all() for a in arrays):
        raise Invalid("a bound overflowed float64 (non-finite value in the re-check)")


def settle(values: np.ndarray, slack: np.ndarray) -> np.ndarray:
    """A rigorous lower bound [R] of the row sums of exact numbers e [R, n] known only through floats with
    e >= values - s, where s >= 0 is the exact value of the float expression `slack` evaluated with at most 8
    roundings per entry (so s <= slack (1 + u)^8 + 8 eta): the sum of `values` rounded down, less the sum of
    `slack` inflated by 1 + 2 gamma_{n+10} (covering those roundings and the summation's) and 10 (n + 10) eta."""
    n = values.shape[-1]
    charge = up_nonneg(slack.sum(axis=-1) * (1.0 + 2.0 * gamma(n + 10)) + 10.0 * (n + 10) * ETA)
    return down(sum_down(values) - charge)


# ------------------------------------------------------------------ the network

@dataclass
class GraphNet:
    """The checker's network: weights[k] [out_k, size(h_k)], biases[k], skips[k][j] [out_k, size(h_j)] and the
    activations (semantics' tuples: ("relu",), ("sigmoid",), ...)."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    skips: dict[int, dict[int, np.ndarray]]
    acts: list[tuple]

    @classmethod
    def build(cls, weights: list[Any], biases: list[Any], skips: dict[int, dict[int, Any]] | None,
              acts: list[tuple]) -> "GraphNet":
        """From tensors or arrays (copied to float64 NumPy arrays; biases flattened)."""
        as_np = lambda t: np.asarray(torch.as_tensor(t).detach().cpu().double().numpy(), dtype=np.float64)  # noqa: E731
        rows = {int(k): {int(j): as_np(s) for j, s in row.items()} for k, row in (skips or {}).items() if row}
        return cls([as_np(w) for w in weights], [as_np(b).reshape(-1) for b in biases], rows, [tuple(a) for a in acts])

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def widths(self) -> list[int]:
        return [w.shape[0] for w in self.weights]

    @property
    def num_inputs(self) -> int:
        return self.weights[0].shape[1]

    def inputs_of(self, k: int) -> list[tuple[int, np.ndarray]]:
        """(j, A_kj) for every h_j that z_k reads (its own h_k first)."""
        return [(k, self.weights[k])] + sorted(self.skips.get(k, {}).items())

    def require_relu(self) -> "GraphNet":
        """self, when every activation is relu or leaky_relu with slope in [0, 1] (piecewise linear and convex:
        the relaxation here); else Invalid naming the others."""
        bad = sorted({str(a[0]) if a[0] != "leaky_relu" else f"leaky_relu({a[1]})" for a in self.acts
                      if not (a[0] == "relu" or (a[0] == "leaky_relu" and 0.0 <= float(a[1]) <= 1.0))})
        if bad:
            raise Invalid(f"the property-holds re-check covers ReLU and LeakyReLU (slope in [0, 1]) networks; this one "
                          f"has {', '.join(bad)} (no outward-rounded relaxation of it here)")
        return self

    def negative_slope(self, k: int) -> float:
        """The slope of activation k below 0: 0 for relu, a for leaky_relu(a)."""
        return float(self.acts[k][1]) if self.acts[k][0] == "leaky_relu" else 0.0

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(y, e): N at points x [M, n] in float64 and a rigorous bound e on |y - N(x)| (the forward error of
        this very computation: gamma_n (|A| |h| + |b|) per layer plus |A| times the inputs' errors; an
        activation carries lipschitz(sigma) e_z plus its own float64 error `semantics.act_rounding`)."""
        hs, es = [x], [np.zeros_like(x)]
        z = e = x
        for k in range(self.depth):
            z = np.zeros((x.shape[0], self.widths[k])) + self.biases[k]
            mag = np.abs(z).copy()
            e = np.zeros_like(z)
            terms = 1
            for j, a in self.inputs_of(k):
                z = z + hs[j] @ a.T
                mag = mag + np.abs(hs[j]) @ np.abs(a).T
                e = e + es[j] @ np.abs(a).T
                terms += a.shape[1]
            e = (e + 2 * gamma(terms + 2) * mag) * (1 + 1e-10) + (terms + 2) * 4 * ETA
            if k < self.depth - 1:
                act, zt = self.acts[k], torch.from_numpy(z)
                h = semantics.activate(act, zt)
                hs.append(h.numpy())
                es.append((semantics.lipschitz(act) * e + semantics.act_rounding(act, zt, h, U64).numpy()) * (1 + 1e-10))
        return z, e


def graph_of(raw: Any) -> GraphNet:
    """The checker's translation (`semantics.translate`) as a GraphNet; Invalid when the model's output is not N
    (a dropped softmax head)."""
    if getattr(raw, "head", None):
        raise Invalid(f"the model ends in a {raw.head} that N drops (N is its logits): the property speaks of the "
                      "model's outputs, so N does not decide it")
    return GraphNet.build(raw.mats, raw.biases, getattr(raw, "skips", None), raw.acts)


# ------------------------------------------------------------------ the bound

Box = tuple[np.ndarray, np.ndarray]


def _unit_minimum(centre: np.ndarray, radius: np.ndarray, g: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                  slope: float) -> np.ndarray:
    """Lower bound [R] of sum_i min_{z in [l_i, u_i]} (q_i sigma(z) - g_i z) for every q_i in [c_i - r_i, c_i + r_i],
    sigma(z) = z for z >= 0 and slope z below (slope in [0, 1]).

    The minimum over z of a function linear on each side of 0 lies at l, u or 0 (when l < 0 < u), and
    min_q q sigma(z) = c sigma(z) - r |sigma(z)| >= c sigma(z) - r Z, Z = max(|l|, |u|) >= |z| >= |sigma(z)|. The
    float value v = fl(fl(c fl(sigma(z))) - fl(g z)) errs from c sigma(z) - g z by at most
    4 u Z (|c| + |g|) + (|c| + 2) eta (one rounding each in sigma, the two products and the difference; an
    underflowing product loses at most eta / 2), so each unit's term is >= min over the candidates of v less
    Z (4 u (|c| + |g|) + r + eta) + (|c| + 2) eta, summed by `settle` (the Z eta covers the difference's
    rounding when 4 u (|c| + |g|) underflows: subnormal c and g against a huge Z)."""
    sigma = (lambda z: np.maximum(z, 0.0)) if slope == 0.0 else (lambda z: np.maximum(z, slope * z))
    best = np.minimum(centre * sigma(lower) - g * lower, centre * sigma(upper) - g * upper)
    np.minimum(best, 0.0, out=best, where=(lower < 0) & (upper > 0))  # the value at z = 0 is exactly 0
    reach = np.maximum(np.abs(lower), np.abs(upper))
    magnitude = np.abs(centre)
    slack = reach * ((4.0 * U64) * (magnitude + np.abs(g)) + radius + ETA) + (magnitude + 2.0) * ETA
    return settle(best, slack)


def signed_units(width: int, units: np.ndarray) -> np.ndarray:
    """Rows [2 |units|, width]: +e_i for each listed unit, then -e_i."""
    rows = np.zeros((2 * units.size, width))
    rows[np.arange(units.size), units] = 1.0
    rows[units.size + np.arange(units.size), units] = -1.0
    return rows


def lower_bound(net: GraphNet, top: int, rows: np.ndarray, const: np.ndarray, boxes: list[Box],
                support: Callable[[np.ndarray, np.ndarray], np.ndarray], alphas: list[np.ndarray],
                betas: list[np.ndarray | None]) -> np.ndarray:
    """Rigorous lower bounds [R] of rows . z_top + const over {x in S, z_j in boxes[j] for j < top} (module
    doc). rows [R, n_top]; boxes[j] = (l, u) [R or 1, n_j]; `support`(c, r) [R, n_0] -> [R] a lower bound of
    min_{x in S} q . x for every q in [c - r, c + r] (`box_support` for a box); alphas[j] [R or 1, n_j] (used on
    unstable units); betas[j] [R, n_j] or None: added to the coefficient of z_j (the split multipliers' -beta s).
    Raises Invalid when the arithmetic flushes subnormals (`require_subnormals`) or a bound is not finite."""
    require_subnormals()
    g: dict[int, np.ndarray] = {top: rows}
    q: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # j -> (centre, radius) of Q_j
    pieces = [const.astype(np.float64)]
    for k in range(top, -1, -1):
        gk = g[k]
        enclose = _selection_enclosure(gk) if k == top else matmul_enclosure
        c, radius = enclose(gk, net.biases[k])
        pieces.append(down(c - radius))
        for j, a in net.inputs_of(k):
            c, radius = enclose(gk, a)
            if j in q:  # fl(c1 + c2) errs by at most u |fl(c1 + c2)| (no error when it is subnormal)
                c = q[j][0] + c
                radius = up_nonneg(up_nonneg(q[j][1] + radius) + up_nonneg(U64 * np.abs(c) + ETA))
            q[j] = (c, radius)
        if k == 0:
            break
        centre, radius = q.pop(k)
        lower, upper = boxes[k - 1]  # [1 or R, n]: the box's own facts stay at its shape
        unstable = (lower < 0) & (upper > 0)
        a = net.negative_slope(k - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            chord = np.where(unstable, (upper - a * lower) / np.where(unstable, upper - lower, 1.0), a)
        slope_up = np.where(lower >= 0, 1.0, chord)
        slope_lo = np.where(lower >= 0, 1.0, np.where(upper <= 0, a, a + (1.0 - a) * alphas[k - 1]))
        gnext = np.maximum(centre, 0.0) * slope_lo + np.minimum(centre, 0.0) * slope_up
        if betas[k - 1] is not None:
            gnext = gnext + betas[k - 1]
        g[k - 1] = gnext
        pieces.append(_unit_minimum(centre, radius, gnext, lower, upper, a))
    pieces.append(support(*q.pop(0)))
    total = sum_down(np.stack(pieces, axis=-1))
    require_finite(total)
    return total




def box_support(lower: np.ndarray, upper: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The support function of the box [lower, upper] ([n_0] each) for `lower_bound`: a lower bound [R] of
    min_x q . x over the box for every q in [c - r, c + r] ([R, n_0] each): per coordinate min(c l, c u) - r X,
    X = max(|l|, |u|), its float value within u |c| X + eta / 2, summed by `settle`."""
    reach = np.maximum(np.abs(lower), np.abs(upper))

    def support(centre: np.ndarray, radius: np.ndarray) -> np.ndarray:
        values = np.minimum(centre * lower, centre * upper)
        return settle(values, reach * (U64 * np.abs(centre) + radius) + ETA)

    return support


def require_subnormals() -> None:
    """Invalid when float64 products or sums flush subnormals to zero here (e.g. after
    torch.set_flush_denormal(True)): the error bounds of this module assume gradual underflow."""
    tiny = np.array([2.0**-1022, ETA])
    if not ((tiny * 0.5)[0] == 2.0**-1023 and (tiny @ np.array([0.5, 0.0])) == 2.0**-1023 and (tiny[1:] + 0.0)[0] > 0):
        raise Invalid("float64 arithmetic flushes subnormal numbers to zero in this process (flush-to-zero / "
                      "denormals-are-zero is on), so the outward rounding of the re-check is not rigorous; turn it "
                      "off (torch.set_flush_denormal(False)) and verify again")
