"""The checker's own re-derivation of LOCAL curvature bounds: certified bounds lower <= lambda_min(Hess f(y)) and
lambda_max(Hess f(y)) <= upper for every y in the l2 ball B(x, radius), f = row . N (N the checker's own
translation, exact softplus). DESIGN section 11; the Hessian formula is Singla & Feizi (ICML 2020), Lemma 1.
Written independently of `certify.bounds.local` (the issuer's code, which this module must not import); the
tests compare the two.

Network (a chain, `Stages` without skips): z_0 = W_0 y + b_0, a_k = sigma_k(z_k), z_{k+1} = W_{k+1} a_k + b_{k+1},
N = z_{L-1}.

1. Region boxes. z_0,i lies in W_0,i x + b_0,i +- radius ||W_0,i||_2 (Cauchy-Schwarz, attained), then each
   sigma_k maps a box to the box between its values at the ends (softplus, sigmoid and tanh increase) and each
   affine layer maps a centre-radius box (m, r) to (W m + b, |W| r). Every computed quantity is widened by
   its float64 rounding (`_margin`: 2 gamma_{n+2} of the magnitude summed) and box ends are rounded outward
   (nextafter), so the boxes contain z_k(y) for every y of the ball in exact arithmetic.

2. Derivative ranges. On a box [l, u], sigma' and sigma'' are monotone between their critical points
   (softplus: sigma' = S(beta t) increases, sigma'' = beta S(beta t) S(-beta t) peaks at t = 0; sigmoid:
   sigma' = S(t) S(-t) peaks at 0, sigma'' = -S(t) S(-t) tanh(t/2) has extremes at t = -+ln(2 + sqrt 3);
   tanh: sigma' = sech^2 t peaks at 0, sigma'' = -2 tanh(t) sech^2(t) has extremes at t = -+atanh(1/sqrt 3)),
   so each range is the hull of the values at l, u and the critical points inside, each value widened by
   32 u (1 + |argument|) of itself (library accuracy, amplified by the rounding of the argument).

3. Hessian. With D_k = diag sigma_k'(z_k), the Jacobians J_0 = W_0, J_k = W_k D_{k-1} J_{k-1} and the backward
   vectors g_{L-2} = W_{L-1}^T row, g_{k-1} = W_k^T D_k g_k give Hess f = sum_k J_k^T diag(w_k) J_k with
   w_k = g_k * sigma_k''(z_k). Interval arithmetic gives J_k in Jc_k +- Jr_k and w_k in wc_k +- wr_k on the
   whole ball; then Hess f(y) = T_0(y) + M + Delta(y) with T_0 = W_0^T diag(w_0) W_0 (J_0 exact), M =
   sum_{k>=1} Jc_k^T diag(wc_k) Jc_k and |Delta(y)| <= P elementwise,
       P = sum_{k>=1} |Jc_k|^T diag(wr_k) |Jc_k| + Jr_k^T diag(wa_k) |Jc_k| + |Jc_k|^T diag(wa_k) Jr_k
                 + Jr_k^T diag(wa_k) Jr_k,        wa_k = |wc_k| + wr_k,
   (expand (Jc + E)^T diag(wc + e) (Jc + E)), and W_0^T diag(w_0,lo) W_0 <= T_0(y) <= W_0^T diag(w_0,hi) W_0 in
   the semidefinite order (congruence preserves diag(w_lo) <= diag(w_0) <= diag(w_hi)). For a symmetric Delta
   with |Delta| <= P, ||Delta||_2 <= ||P||_2 = lambda_max(P) (P nonnegative symmetric: Perron-Frobenius), so by
   Weyl, with L = W_0^T diag(w_0,lo) W_0 + M and U = W_0^T diag(w_0,hi) W_0 + M,
       lambda_min(L) - ||P||_2 <= eig(Hess f(y)) <= lambda_max(U) + ||P||_2   for every y in the ball.
   Eigenvalues by eigvalsh, widened by 2 gamma_{t + n^2} ||mag||_F (t the length of the sums forming the
   matrix, n^2 a generous backward-error constant of the symmetric eigensolver, mag the matrix of the summed
   magnitudes); P is rounded up elementwise before its eigenvalue.

4. Gradient. grad f(y) = W_0^T D_0 g_0 lies in the interval vector of the same backward pass, so the norm
   of its magnitude bounds ||grad f|| on the ball (`gradient_bound`, the local Lipschitz constant L(r) of
   lemma MG-LOC's shrinking radii).

5. Input splitting (`covering_balls`). With n <= SPLIT_MAX_FEATURES inputs, the ball B(x, r) is covered by
   balls B(x + r g, r sqrt(n)/k (1 + 1e-9) + 1e-12 sqrt(n) (max|x| + r)), g the centres of the cells of the
   grid of k cells per axis over [-1, 1]^n (k the largest power of two with k^n <= SPLIT_CELLS) that meet the
   unit ball (a cell is dropped only when its l2 distance to the origin exceeds 1 + 1e-9); a ball of radius
   sqrt(n)/k holds its cell, and the absolute term exceeds the rounding of the centres. Rules 1-4 on each
   covering ball, the worst taken, bound the constants on B(x, r); so do rules 1-4 on B(x, r) itself, and the
   tighter of the two is kept (the covering balls stick out of B(x, r)).
"""
from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from certify.certificates import semantics
from certify.certificates._common import Invalid
from certify.vocabulary import SPLIT_CELLS, SPLIT_MAX_FEATURES

LOCAL_ACTIVATIONS = ("softplus", "sigmoid", "tanh")
_U = 2.0**-53
_FLOOR = 2.0**-1000  # absolute floor of every margin (underflow)
_SIGMOID_T = math.log(2.0 + math.sqrt(3.0))
_TANH_T = math.atanh(1.0 / math.sqrt(3.0))


def _margin(magnitude: Tensor, terms: int) -> Tensor:
    """Twice the worst-case float64 error of a sum of `terms` products whose magnitudes sum to `magnitude`."""
    n = terms + 2
    return 2.0 * (n * _U / (1.0 - n * _U)) * magnitude + _FLOOR


def _down(t: Tensor) -> Tensor:
    return torch.nextafter(t, torch.full_like(t, -math.inf))


def _up(t: Tensor) -> Tensor:
    return torch.nextafter(t, torch.full_like(t, math.inf))


# ------------------------------------------------------------------ activations: values and derivatives

def _derivatives(act: tuple, t: Tensor) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """((lo, hi) of sigma'(t), (lo, hi) of sigma''(t)): rigorous enclosures of the exact values at t."""
    name = act[0]
    if name == "softplus":
        beta = float(act[1])
        y = beta * t
        d = torch.sigmoid(y)
        s = beta * d * torch.sigmoid(-y)
    elif name == "sigmoid":
        y = t
        d = torch.sigmoid(t) * torch.sigmoid(-t)
        s = -d * torch.tanh(t / 2)
    else:  # tanh
        y = t
        sech2 = 1.0 / torch.cosh(t) ** 2  # 0 where cosh overflows (|t| > 710): the exact value is < 1e-600
        d = sech2
        s = -2.0 * torch.tanh(t) * sech2
    scale = 32 * _U * (1.0 + y.abs())
    dm, sm = scale * d.abs() + _FLOOR, scale * s.abs() + _FLOOR
    return (d - dm, d + dm), (s - sm, s + sm)


def _critical(act: tuple) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(points where sigma'' = 0, points where sigma''' = 0): the extremes of sigma' and of sigma''."""
    name = act[0]
    if name == "softplus":
        return (), (0.0,)
    if name == "sigmoid":
        return (0.0,), (-_SIGMOID_T, _SIGMOID_T)
    return (0.0,), (-_TANH_T, _TANH_T)


@functools.lru_cache(maxsize=256)
def _critical_enclosure(act: tuple, c: float, shape: torch.Size, dtype: torch.dtype, which: int) -> tuple[Tensor, Tensor]:
    """`_derivatives(act, t)[which]` at t = c everywhere (a CPU tensor of `shape` and `dtype`): the same for every box,
    so computed once per activation, point, shape and dtype. Shared: callers must not modify it."""
    return _derivatives(act, torch.full(shape, c, dtype=dtype))[which]


def derivative_ranges(act: tuple, lo: Tensor, hi: Tensor) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """((centre, radius) of sigma' over [lo, hi], (centre, radius) of sigma'' over it), elementwise [n]: the
    hull of the enclosures at lo, hi and at the critical points (`_critical`) lying in [lo, hi]."""
    first, second = _critical(act)
    ends = [_derivatives(act, lo), _derivatives(act, hi)]
    d_lo = torch.minimum(ends[0][0][0], ends[1][0][0])
    d_hi = torch.maximum(ends[0][0][1], ends[1][0][1])
    s_lo = torch.minimum(ends[0][1][0], ends[1][1][0])
    s_hi = torch.maximum(ends[0][1][1], ends[1][1][1])
    for c, which in [(c, 0) for c in first] + [(c, 1) for c in second]:
        inside = (lo <= c) & (c <= hi)
        enc = _critical_enclosure(act, c, lo.shape, lo.dtype, which) if lo.device.type == "cpu" else _derivatives(act, torch.full_like(lo, c))[which]
        if which == 0:
            d_lo = torch.where(inside, torch.minimum(d_lo, enc[0]), d_lo)
            d_hi = torch.where(inside, torch.maximum(d_hi, enc[1]), d_hi)
        else:
            s_lo = torch.where(inside, torch.minimum(s_lo, enc[0]), s_lo)
            s_hi = torch.where(inside, torch.maximum(s_hi, enc[1]), s_hi)
    return _centred(d_lo, d_hi), _centred(s_lo, s_hi)


def _centred(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """[lo, hi] as (centre, radius), the radius rounded up to cover the rounding of the centre."""
    mid = (lo + hi) / 2
    return mid, (hi - lo) / 2 + _margin(mid.abs() + (hi - lo), 2)


def _image(act: tuple, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Rigorous range of the (nondecreasing) sigma over [lo, hi]: its values at the ends, widened by the
    rounding bound of the checker's semantics (`semantics.act_rounding`)."""
    a_lo = semantics.activate(act, lo)
    a_hi = semantics.activate(act, hi)
    return _down(a_lo - semantics.act_rounding(act, lo, a_lo, _U)), _up(a_hi + semantics.act_rounding(act, hi, a_hi, _U))


# ------------------------------------------------------------------ interval arithmetic (centre, radius)

def _affine(mid: Tensor, rad: Tensor, w: Tensor, b: Tensor | None) -> tuple[Tensor, Tensor]:
    """{W h + b : h in mid +- rad}, h [n] or [n, m] (columns), as (centre, radius)."""
    out, w_abs = w @ mid, w.abs()
    spread = w_abs @ rad
    magnitude = w_abs @ mid.abs() + spread
    if b is not None:
        bb = b if mid.dim() == 1 else b[:, None]
        out = out + bb
        magnitude = magnitude + bb.abs()
    return out, spread + _margin(magnitude, w.shape[1] + 2)


def _product(am: Tensor, ar: Tensor, bm: Tensor, br: Tensor) -> tuple[Tensor, Tensor]:
    """Elementwise (am +- ar) * (bm +- br) (broadcasting), as (centre, radius)."""
    mid = am * bm
    rad = am.abs() * br + ar * (bm.abs() + br)
    return mid, rad + _margin(mid.abs() + rad, 3)


def _chain(stages, allowed: tuple[str, ...] = LOCAL_ACTIVATIONS) -> tuple[list[Tensor], list[Tensor], list[tuple]]:
    skips = getattr(stages, "skips", None) or {}
    if any(len(row) for row in skips.values()):
        raise Invalid("local curvature bounds are re-derived for chains only: this network has skip connections (a graph)")
    bad = sorted({a[0] for a in stages.acts if a[0] not in allowed})
    if bad:
        raise Invalid(f"local curvature bounds cover {', '.join(allowed)} activations only, not {', '.join(bad)}")
    mats = [torch.as_tensor(m, dtype=torch.float64).cpu() for m in stages.mats]
    biases = [torch.as_tensor(b, dtype=torch.float64).cpu() for b in stages.biases]
    return mats, biases, [tuple(a) for a in stages.acts]


def region_boxes(stages, center: Tensor, radius: float, allowed: tuple[str, ...] = LOCAL_ACTIVATIONS) -> list[tuple[Tensor, Tensor]]:
    """(lower, upper) [n_k] of every hidden pre-activation z_0 .. z_{L-2} over the l2 ball B(center, radius)
    (center [n], flattened input): rule 1 of the module docstring. Invalid for graphs and activations not
    `allowed`."""
    return _region_boxes(*_chain(stages, allowed), center, radius)


def _region_boxes(mats: list[Tensor], biases: list[Tensor], acts: list[tuple], center: Tensor,
                  radius: float) -> list[tuple[Tensor, Tensor]]:
    """`region_boxes` of the chain (mats, biases, acts) from `_chain`."""
    center = torch.as_tensor(center, dtype=torch.float64).cpu().reshape(-1)
    if center.numel() != mats[0].shape[1]:
        raise Invalid(f"the region has {center.numel()} features, N expects {mats[0].shape[1]}")
    if not (radius >= 0 and math.isfinite(radius)):
        raise Invalid(f"radius {radius!r} is not a finite nonnegative number")
    w0, n0 = mats[0], mats[0].shape[1]
    norms = l2_up(w0, 1) * (1 + 2 * (n0 + 2) * _U)
    mid, spread = _affine(center, torch.zeros_like(center), w0, biases[0])
    scaled = radius * norms
    rad = _up(spread + scaled * (1 + 4 * _U) + _margin(scaled, 2))
    boxes = []
    for k in range(len(acts)):
        lo, hi = _down(mid - rad), _up(mid + rad)
        boxes.append((lo, hi))
        if k + 1 < len(acts):
            a_lo, a_hi = _image(acts[k], lo, hi)
            a_mid, a_rad = _centred(a_lo, a_hi)
            mid, rad = _affine(a_mid, a_rad, mats[k + 1], biases[k + 1])
    return boxes


def l2_up(v: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """An upper bound on the l2 (Frobenius) norm of v over `dim` (all dims: None) safe from underflow: where the
    largest entry is below 2^-400 the squares could flush to 0, so the sum of |v| (>= the l2 norm, no squares) is
    used instead; rounded up by (terms + 4) u plus the subnormal floor of every term."""
    mag = v.abs()
    dims = tuple(range(mag.dim())) if dim is None else dim
    terms = mag.numel() // max(1, mag.amax(dim=dims).numel())
    tiny = mag.amax(dim=dims) < 2.0**-400
    value = torch.where(tiny, mag.sum(dim=dims), torch.linalg.vector_norm(mag, dim=dims))
    return value * (1 + (terms + 4) * _U) + terms * 2.0**-1074


def _eig_slack(magnitude: Tensor, terms: int) -> float:
    """What `_eig_bounds` widens the eigenvalues of a symmetric [n, n] matrix by when it approximates the exact one
    to 2 gamma_terms `magnitude` [n, n] elementwise: that error's l2 norm plus eigvalsh's backward error."""
    n = magnitude.shape[0]
    return float(_margin(l2_up(magnitude) * (1 + 4 * n * _U), terms + n * n)) + n * 1e-300


def _eig_bounds(matrix: Tensor, slack: float) -> tuple[float, float]:
    """(lower bound on lambda_min, upper bound on lambda_max) of the exact symmetric matrix that `matrix` [n, n]
    approximates within `slack` (`_eig_slack`) in the l2 norm."""
    eig = torch.linalg.eigvalsh(matrix)
    return math.nextafter(float(eig[0]) - slack, -math.inf), math.nextafter(float(eig[-1]) + slack, math.inf)


def _spread_norm(p_mat: Tensor) -> float:
    """`_eig_bounds`' upper bound on lambda_max of the nonnegative symmetric P [n, n] (= ||P||_2). A constant P (a
    chain with one hidden layer: no term beyond T_0, so P is the rounding floor alone) is the same matrix for every
    ball: its bound is computed once per (n, value), from the same matrix."""
    first = float(p_mat[0, 0])
    if bool((p_mat == first).all()):
        return _constant_spread_norm(p_mat.shape[0], first)
    return _eig_bounds(p_mat, _eig_slack(p_mat, p_mat.shape[0]))[1]


@functools.lru_cache(maxsize=64)
def _constant_spread_norm(n: int, value: float) -> float:
    """`_spread_norm` of the [n, n] matrix whose entries all equal `value`."""
    p_mat = torch.full((n, n), value, dtype=torch.float64)
    return _eig_bounds(p_mat, _eig_slack(p_mat, n))[1]


def _backward(mats: list[Tensor], acts: list[tuple], boxes: list, row: Tensor) -> tuple[list, list]:
    """(ranges, gs): the (sigma', sigma'') ranges on every box and the backward vectors g_k = df/da_k
    (k = 0 .. L-2) as (centre, radius) over the region, f = row . N."""
    ranges = [derivative_ranges(a, lo, hi) for a, (lo, hi) in zip(acts, boxes)]
    top = mats[-1]
    gs = [(top.T @ row, _margin(top.abs().T @ row.abs(), top.shape[0] + 2))]
    for k in range(len(acts) - 1, 0, -1):
        t_mid, t_rad = _product(*gs[0], *ranges[k][0])
        gs.insert(0, _affine(t_mid, t_rad, mats[k].T, None))
    return ranges, gs


def covering_balls(center: Tensor, radius: float) -> list[tuple[Tensor, float]]:
    """Rule 5 of the module docstring: [(centre, radius)] of l2 balls whose union holds B(center, radius); the ball
    itself when it has more than SPLIT_MAX_FEATURES inputs or an infinite radius."""
    center = torch.as_tensor(center, dtype=torch.float64).cpu().reshape(-1)
    n = center.numel()
    if n > SPLIT_MAX_FEATURES or not math.isfinite(radius):
        return [(center, radius)]
    per_axis = 1
    while per_axis ** n * 2 ** n <= SPLIT_CELLS:  # the largest power of two k with k^n <= SPLIT_CELLS
        per_axis *= 2
    edges = [(2 * j + 1) / per_axis - 1 for j in range(per_axis)]
    cover = radius * math.sqrt(n) / per_axis * (1 + 1e-9) + 1e-12 * math.sqrt(n) * (float(center.abs().max()) + radius)
    balls = []
    for index in range(per_axis ** n):
        g = [edges[(index // per_axis ** d) % per_axis] for d in range(n)]
        gap = math.sqrt(sum(max(abs(v) - 1 / per_axis, 0.0) ** 2 for v in g))
        if gap <= 1 + 1e-9:
            balls.append((center + radius * torch.tensor(g, dtype=torch.float64), cover))
    return balls


@torch.inference_mode()  # float64 arithmetic on the checker's own tensors: no autograd bookkeeping
def gradient_bound(stages, center: Tensor, radius: float, row: Tensor) -> float:
    """An upper bound on max ||grad f(y)||_2 over the l2 ball B(center, radius), f = row . N (row [C], center
    [n]): the largest over the covering balls (rule 5) of the norm of the magnitude of the interval gradient
    W_0^T (D_0 g_0) (backward pass of rule 3), rounded up. Invalid for graphs and other activations."""
    balls = covering_balls(center, radius)
    whole = _ball_gradient_bound(stages, center, radius, row)
    return whole if len(balls) == 1 else min(whole, max(_ball_gradient_bound(stages, c, r, row) for c, r in balls))


def _ball_gradient_bound(stages, center: Tensor, radius: float, row: Tensor) -> float:
    mats, biases, acts = _chain(stages)
    boxes = _region_boxes(mats, biases, acts, center, radius)
    row = torch.as_tensor(row, dtype=torch.float64).cpu().reshape(-1)
    if not acts:
        g_mid, g_rad = _affine(row, torch.zeros_like(row), mats[0].T, None)
    else:
        ranges, gs = _backward(mats, acts, boxes, row)
        g_mid, g_rad = _affine(*_product(*gs[0], *ranges[0][0]), mats[0].T, None)
    mag = g_mid.abs() + g_rad
    value = float(l2_up(mag)) * (1 + 2 * (mag.numel() + 2) * _U)
    if not math.isfinite(value):
        raise Invalid("the local gradient bound is not finite (the region's boxes overflow)")
    return math.nextafter(value, math.inf)


def hessian_split(stages, center: Tensor, radius: float, row: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(L, U, mag, P), each [n, n], of rule 3 of the module docstring for f = row . N (row [C]) on the l2 ball
    B(center, radius) (center [n] flattened): for every y of the ball, Hess f(y) = T_0(y) + M + Delta(y) with
    W_0^T diag(w_0,lo) W_0 <= T_0(y) <= W_0^T diag(w_0,hi) W_0 (semidefinite order: J_0 = W_0 is exact),
    L = W_0^T diag(w_0,lo) W_0 + M, U = W_0^T diag(w_0,hi) W_0 + M, |Delta(y)| <= P elementwise, P >= 0 symmetric
    and rounded up; L, U as computed in float64, within 2 gamma_t mag (elementwise) of the exact matrices.
    Invalid for graphs and other activations."""
    mats, biases, acts = _chain(stages)
    boxes = _region_boxes(mats, biases, acts, center, radius)
    n0 = mats[0].shape[1]
    centre = torch.zeros(n0, n0, dtype=torch.float64)
    magnitude = torch.zeros_like(centre)
    spread = torch.zeros_like(centre)
    if not acts:
        return centre, centre.clone(), magnitude, spread
    row = torch.as_tensor(row, dtype=torch.float64).cpu().reshape(-1)
    ranges, gs = _backward(mats, acts, boxes, row)
    w0 = mats[0]
    j_mid, j_rad = w0, torch.zeros_like(w0)  # J_0 = W_0 exactly
    for k in range(len(acts)):
        if k > 0:  # J_k = W_k D_{k-1} J_{k-1}
            d_mid, d_rad = ranges[k - 1][0]
            s_mid, s_rad = _product(j_mid, j_rad, d_mid[:, None], d_rad[:, None])
            j_mid, j_rad = _affine(s_mid, s_rad, mats[k], None)
        w_mid, w_rad = _product(*gs[k], *ranges[k][1])
        if k == 0:  # its term by congruence with the ends of w_0, rounded outward
            w_lo, w_hi, w_mag = _down(w_mid - w_rad), _up(w_mid + w_rad), w_mid.abs() + w_rad
            continue
        ja, wa = j_mid.abs(), (w_mid.abs() + w_rad)[:, None]
        centre = centre + j_mid.T @ (w_mid[:, None] * j_mid)
        magnitude = magnitude + ja.T @ (w_mid.abs()[:, None] * ja)
        cross = j_rad.T @ (wa * ja)
        spread = spread + ja.T @ (w_rad[:, None] * ja) + cross + cross.T + j_rad.T @ (wa * j_rad)
    lower = centre + w0.T @ (w_lo[:, None] * w0)
    upper = centre + w0.T @ (w_hi[:, None] * w0)
    w0_abs = w0.abs()
    magnitude = magnitude + w0_abs.T @ (w_mag[:, None] * w0_abs)
    p_mat = torch.maximum(spread, spread.T)
    return (lower + lower.T) / 2, (upper + upper.T) / 2, magnitude, p_mat + _margin(p_mat, _terms(mats))


def _terms(mats: list[Tensor]) -> int:
    """Length of the longest float64 sum forming an entry of M or P: a sum over n_k, a product, and up to 4
    additions per layer."""
    return max(m.shape[0] for m in mats) + 4 * len(mats) + 4


@torch.inference_mode()  # float64 arithmetic on the checker's own tensors: no autograd bookkeeping
def hessian_bounds(stages, center: Tensor, radius: float, row: Tensor) -> tuple[float, float]:
    """(lower, upper): lower <= lambda_min(Hess f(y)) and lambda_max(Hess f(y)) <= upper for every y with
    ||y - center||_2 <= radius, f = row . N (row [C], center [n] flattened): rule 3 of the module docstring,
    lambda_min(L) - ||P||_2 and lambda_max(U) + ||P||_2 rounded outward (`hessian_split`), the worst over the
    covering balls of rule 5. A network without activation has Hessian 0. Invalid for graphs and activations
    other than softplus, sigmoid, tanh."""
    balls = covering_balls(center, radius)
    lower, upper = _ball_hessian_bounds(stages, center, radius, row)
    if len(balls) == 1:
        return lower, upper
    bounds = [_ball_hessian_bounds(stages, c, r, row) for c, r in balls]
    return max(lower, min(b[0] for b in bounds)), min(upper, max(b[1] for b in bounds))


def _ball_hessian_bounds(stages, center: Tensor, radius: float, row: Tensor) -> tuple[float, float]:
    lower_m, upper_m, magnitude, p_mat = hessian_split(stages, center, radius, row)
    if not stages.acts:
        return 0.0, 0.0
    slack = _eig_slack(magnitude, _terms(list(stages.mats)))  # L and U: the same magnitudes
    low, _ = _eig_bounds(lower_m, slack)
    _, high = _eig_bounds(upper_m, slack)
    p_norm = max(_spread_norm(p_mat), 0.0)
    lower, upper = math.nextafter(low - p_norm, -math.inf), math.nextafter(high + p_norm, math.inf)
    if not (math.isfinite(lower) and math.isfinite(upper)):
        raise Invalid("the local curvature bound is not finite (the region's boxes overflow)")
    return lower, upper


@torch.inference_mode()  # float64 arithmetic on the checker's own tensors: no autograd bookkeeping
def unstable_relu_units(stages, center: Tensor, radius: float) -> int:
    """How many units of a ReLU chain have a box (rule 1) with 0 inside on the l2 ball B(center, radius): with
    none, no unit changes state there, N is affine on the ball and its Hessian is 0. Invalid for graphs and
    other activations."""
    boxes = region_boxes(stages, center, radius, ("relu",))
    return int(sum(int(((lo < 0) & (hi > 0)).sum()) for lo, hi in boxes))
