"""Local constants of f = c . logits over a region R (an l2 or l-infinity ball around x): certified bounds on
the Hessian's extreme eigenvalues (hence the weak-convexity constant lambda_R and the curvature beta_R),
on the gradient (a local Lipschitz constant L_R), and, for ReLU networks, the unstable units (f is affine on
R when there are none, so its gradient is constant there). DESIGN section 11; the idea of propagating the
region through the forward and the backward pass is that of Wicker et al. (ICLR 2023, "Robust Explanation
Constraints for Neural Networks").

Network: a chain z_0 = W_0 x + b_0, a_k = sigma_k(z_k), z_{k+1} = W_{k+1} a_k + b_{k+1}, f = c . z_{L-1}.

Forward pass (`region_boxes`): the first layer exactly, z_0,i in W_0,i x0 + b_0,i +- r ||W_0,i||_q (q the dual
norm of the ball), then interval arithmetic through sigma_k's image and the affine layers (centre-radius
form, outward rounded). These boxes are re-derived by the checker with its own code (the same rule).

Backward pass. With D_k = diag(sigma_k'(z_k)) and S_k = diag(sigma_k''(z_k)), the Jacobians J_0 = W_0,
J_k = W_k D_{k-1} J_{k-1} (dz_k/dx) and the backward vectors g_{L-2} = W_{L-1}^T c, g_{k-1} = W_k^T D_k g_k
(df/da_k) give (Singla & Feizi, ICML 2020, Lemma 1)

    grad f(x) = J_0^T D_0 g_0,        Hess f(x) = sum_k J_k^T diag(g_k * s_k) J_k,  s_k = sigma_k''(z_k).

Over R each sigma_k' and sigma_k'' lies in the range of the derivative on z_k's box (`derivative_ranges`),
so J_k, g_k and w_k = g_k * s_k lie in interval matrices / vectors [centre - radius, centre + radius]
computed by interval arithmetic. For every x in R, write J_k = Jc_k + E_k, w_k = wc_k + e_k with |E_k| <= Jr_k
and |e_k| <= wr_k elementwise. Then

    Hess f(x) = T_0 + M + Delta,  T_0 = W_0^T diag(w_0) W_0,  M = sum_{k>=1} Jc_k^T diag(wc_k) Jc_k,
    Delta = sum_{k>=1} Jc_k^T diag(e_k) Jc_k + E_k^T diag(w_k) Jc_k + Jc_k^T diag(w_k) E_k + E_k^T diag(w_k) E_k,

and |Delta| <= P elementwise with the nonnegative symmetric matrix
P = sum_{k>=1} |Jc_k|^T diag(wr_k) |Jc_k| + Jr_k^T diag(wa_k) |Jc_k| + |Jc_k|^T diag(wa_k) Jr_k + Jr_k^T diag(wa_k) Jr_k,
wa_k = |wc_k| + wr_k. For matrices, |A| <= B elementwise implies ||A||_2 <= || |A| ||_2 <= ||B||_2. The first
Jacobian J_0 = W_0 is exact, so its term is bounded by congruence (Singla & Feizi, Theorem 3):
W_0^T diag(w_0,lo) W_0 <= T_0 <= W_0^T diag(w_0,hi) W_0 in the semidefinite order. By Weyl

    lambda_min(W_0^T diag(w_0,lo) W_0 + M) - ||P||_2 <= lambda_min(Hess f(x)),
    lambda_max(Hess f(x)) <= lambda_max(W_0^T diag(w_0,hi) W_0 + M) + ||P||_2

for every x in R (for one hidden layer: M = P = 0, Singla & Feizi's bound on the region). lambda_R = max(0, -lower) and beta_R = max(upper, -lower, 0) follow. As R shrinks to {x},
the bound tends to the exact extreme eigenvalues of Hess f(x) (P -> 0), unlike the product of layer norms.
Eigenvalues by `torch.linalg.eigvalsh` with a rounding margin of the Frobenius magnitude (as in
certify.bounds.curvature); ||P||_2 = lambda_max(P) (Perron-Frobenius) likewise rounded up.

Activations: softplus (any beta), sigmoid and tanh (their sigma' and sigma'' are monotone between known
critical points, so their ranges on a box are attained at the ends or at those points); ReLU networks get
the unstable-unit count only; any other activation (and graphs with skip connections) is refused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from certify.bounds.activations import Activation
from certify.bounds.network import AffineNetwork
from certify.bounds.requirements import chain_refusal
from certify.bounds.sets import UNIT_ROUNDOFF, rounding_margin
from certify.errors import UnsupportedError, UsageError
from certify.vocabulary import SPLIT_CELLS, SPLIT_MAX_FEATURES, dual_norm, parse_norm

CURVATURE_ACTIVATIONS = ("softplus", "sigmoid", "tanh")

# critical points of sigma' (where sigma'' = 0) and of sigma'' (where sigma''' = 0), in units of the argument
# (softplus: of beta z). sigmoid'' = S(1 - S)(1 - 2S) is extreme where S = (3 +- sqrt 3)/6, t = -+ln(2 + sqrt 3);
# tanh'' = -2 tanh sech^2 where tanh^2 = 1/3, t = -+atanh(1/sqrt 3).
_CRITICAL = {
    "softplus": ((), (0.0,)),
    "sigmoid": ((0.0,), (-math.log(2.0 + math.sqrt(3.0)), 0.0, math.log(2.0 + math.sqrt(3.0)))),
    "tanh": ((0.0,), (-math.atanh(1.0 / math.sqrt(3.0)), 0.0, math.atanh(1.0 / math.sqrt(3.0)))),
}


@dataclass
class Interval:
    """centre-radius interval tensors (radius >= 0)."""

    mid: Tensor
    rad: Tensor

    @classmethod
    def of(cls, lo: Tensor, hi: Tensor) -> "Interval":
        """[lo, hi] (an unbounded end gives centre 0 and an infinite radius)."""
        finite = torch.isfinite(lo) & torch.isfinite(hi)
        mid = torch.where(finite, (lo + hi) / 2, 0.0)
        rad = torch.where(finite, (hi - lo) / 2 + rounding_margin(mid.abs() + (hi - lo).abs(), 2), math.inf)
        return cls(mid, rad)

    @property
    def lo(self) -> Tensor:
        return self.mid - self.rad

    @property
    def hi(self) -> Tensor:
        return self.mid + self.rad

    @property
    def mag(self) -> Tensor:
        return self.mid.abs() + self.rad


def norm_up(v: Tensor, dim: int | tuple[int, ...] = -1) -> Tensor:
    """An upper bound on the l2 (Frobenius over a tuple of dims) norm of v along dim that never underflows: the
    norm of v / s times s, s = max |v| (the squares of tiny entries would flush to 0 and give 0), rounded up by
    (terms + 4) u plus an absolute floor for the entries that v / s loses to underflow."""
    mag = v.abs()
    scale = mag.amax(dim=dim, keepdim=True)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    terms = mag.numel() // max(1, scale.numel())
    value = torch.linalg.vector_norm(mag / safe, dim=dim) * safe.squeeze(dim)
    return value * (1 + (terms + 4) * UNIT_ROUNDOFF) + terms * 2.0**-1074 * (1 + safe.squeeze(dim))


def _range(values: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    lo = torch.stack([v[0] for v in values]).amin(0)
    hi = torch.stack([v[1] for v in values]).amax(0)
    return lo, hi


def _second_enclosure(act: Activation, z: Tensor) -> tuple[Tensor, Tensor]:
    """Rigorous enclosure of sigma''(z): the float64 value widened by 64 u (1 + |beta z|) of its magnitude (a
    handful of roundings, each amplified at most by the argument's size) plus an absolute floor far above the
    error of evaluating at a critical point rounded to float64 (sigma'' is flat there)."""
    value = act.second_derivative(z)  # the limit 0 at +-inf
    scale = act.beta * z.abs() if act.name == "softplus" else z.abs()
    relative = torch.where(torch.isinf(z), 0.0, 64 * UNIT_ROUNDOFF * value.abs() * (1.0 + scale))
    margin = relative + 1e-15 * act.max_second_derivative
    return value - margin, value + margin


def derivative_ranges(act: Activation, lower: Tensor, upper: Tensor) -> tuple[Interval, Interval]:
    """(range of sigma', range of sigma'') over [lower, upper], elementwise, rigorous: the values at the ends and
    at the critical points inside (`_CRITICAL`), each enclosed outward. UnsupportedError for activations
    other than `CURVATURE_ACTIVATIONS`."""
    if act.name not in _CRITICAL:
        raise UnsupportedError(f"local curvature bounds cover {', '.join(CURVATURE_ACTIVATIONS)} activations, not {act.name}")
    first, second = _CRITICAL[act.name]
    unit = act.beta if act.name == "softplus" else 1.0
    points = [lower, upper]
    d_pts = points + [torch.clamp(torch.full_like(lower, c / unit), lower, upper) for c in first]
    s_pts = points + [torch.clamp(torch.full_like(lower, c / unit), lower, upper) for c in second]
    d_lo, d_hi = _range([act.derivative_enclosure(p) for p in d_pts])
    s_lo, s_hi = _range([_second_enclosure(act, p) for p in s_pts])
    return Interval.of(d_lo, d_hi), Interval.of(s_lo, s_hi)


def _affine(box: Interval, weight: Tensor, bias: Tensor) -> Interval:
    """Interval of W h + b for h in the box ([N, n] -> [N, m]), outward rounded."""
    mid = box.mid @ weight.T + bias
    rad = box.rad @ weight.abs().T
    magnitude = box.mid.abs() @ weight.abs().T + bias.abs() + rad
    return Interval(mid, rad + rounding_margin(magnitude, weight.shape[1] + 2))


def region_boxes(net: AffineNetwork, center: Tensor, radius: Tensor, p: float | str = 2) -> list[Interval]:
    """Boxes [N, n_k] of the hidden pre-activations z_0 .. z_{L-2} over the balls ||x - center||_p <= radius
    (center [N, n], radius [N]) by the rule of the module docstring. UnsupportedError for graphs."""
    order = parse_norm(p)
    reason = chain_refusal(net, "local constants")
    if reason is not None:
        raise UnsupportedError(reason)
    if torch.is_tensor(radius) and radius.dtype != torch.float64:
        raise UsageError("the radius must be float64 (a float32 copy may round it down)")
    center = center.reshape(center.shape[0], -1).to(torch.float64)
    radius = torch.as_tensor(radius, dtype=torch.float64).reshape(-1, 1).expand(center.shape[0], 1)
    if not bool((radius >= 0).all()):  # NaN fails too
        raise UsageError("the radius must be >= 0 (and not NaN)")
    if center.shape[1] != net.input_size:
        raise UsageError(f"the region has {center.shape[1]} features, the network expects {net.input_size}")
    if net.depth == 1:
        return []  # no hidden layer
    w0, b0 = net.weights[0], net.biases[0]
    dual = dual_norm(order)
    row_norm = norm_up(w0, 1) if dual == 2 else torch.linalg.vector_norm(w0, ord=dual, dim=1)
    mid = center @ w0.T + b0
    spread = radius * row_norm * (1 + 4 * UNIT_ROUNDOFF * w0.shape[1])
    magnitude = center.abs() @ w0.abs().T + b0.abs() + spread
    z = Interval(mid, spread + rounding_margin(magnitude, w0.shape[1] + 2))
    boxes = [z]
    for k in range(1, net.depth - 1):
        a_lo, a_hi = net.activations[k - 1].image(z.lo, z.hi)
        z = _affine(Interval.of(a_lo, a_hi), net.weights[k], net.biases[k])
        boxes.append(z)
    return boxes


def _imatmul(a: Interval, b: Interval) -> Interval:
    """Interval product a @ b (batched), outward rounded: centre a.mid @ b.mid, radius |a.mid| b.rad + a.rad |b.mid|
    + a.rad b.rad."""
    mid = a.mid @ b.mid
    rad = a.mid.abs() @ b.rad + a.rad @ b.mid.abs() + a.rad @ b.rad
    magnitude = a.mid.abs() @ b.mid.abs() + rad
    return Interval(mid, rad + rounding_margin(magnitude, a.mid.shape[-1] + 3))


def _scale(v: Interval, d: Interval) -> Interval:
    """Interval of the elementwise product v * d."""
    mid = v.mid * d.mid
    rad = v.mid.abs() * d.rad + v.rad * d.mid.abs() + v.rad * d.rad
    return Interval(mid, rad + rounding_margin(mid.abs() + rad, 3))


@dataclass
class LocalCurvature:
    """Per example [N]: lower <= lambda_min(Hess f) and lambda_max(Hess f) <= upper on the region; the gradient
    enclosure (gradient [N, n] interval); lam = max(0, -lower), beta = max(upper, -lower, 0), lipschitz =
    max over the region of ||grad f||_2 (bounded by the enclosure)."""

    lower: Tensor
    upper: Tensor
    gradient: Interval

    @property
    def lam(self) -> Tensor:
        return (-self.lower).clamp_min(0.0)

    @property
    def beta(self) -> Tensor:
        return torch.maximum(self.upper, -self.lower).clamp_min(0.0)

    @property
    def lipschitz(self) -> Tensor:
        return norm_up(self.gradient.mag, -1)


def _eig_extremes(matrix: Tensor, magnitude: Tensor, terms: int) -> tuple[Tensor, Tensor]:
    eig = torch.linalg.eigvalsh(matrix)
    n = matrix.shape[-1]
    slack = rounding_margin(norm_up(magnitude, (-2, -1)), terms + n * n) + n * 1e-300
    return eig[..., 0] - slack, eig[..., -1] + slack


def local_curvature(net: AffineNetwork, row: Tensor, boxes: list[Interval]) -> LocalCurvature:
    """Hessian eigenvalue and gradient bounds of f = row . logits (row [C], or [N, C] one per example) on the
    region whose hidden boxes are `boxes` (`region_boxes`), by the module docstring's theorem.
    UnsupportedError for activations other than `CURVATURE_ACTIVATIONS`."""
    if not boxes:  # a linear network: Hessian 0, gradient row . W exactly (up to its rounding)
        rows = torch.as_tensor(row, dtype=torch.float64).reshape(-1, net.num_classes)
        w = net.weights[0]
        gradient = Interval(rows @ w, rounding_margin(rows.abs() @ w.abs(), w.shape[0] + 2))
        zero = torch.zeros(rows.shape[0], dtype=torch.float64)
        return LocalCurvature(zero, zero.clone(), gradient)
    n_ex = boxes[0].mid.shape[0]
    row = torch.as_tensor(row, dtype=torch.float64).reshape(-1, net.num_classes).expand(n_ex, -1)
    ranges = [derivative_ranges(act, b.lo, b.hi) for act, b in zip(net.activations, boxes)]
    # backward vectors g_k = df/da_k, [N, n_k]
    top = net.weights[-1]
    g_mid = row @ top
    g = Interval(g_mid, rounding_margin(row.abs() @ top.abs(), top.shape[0] + 2))
    gs: list[Interval] = [None] * len(boxes)  # type: ignore[list-item]
    for k in range(len(boxes) - 1, -1, -1):
        gs[k] = g
        if k > 0:
            scaled = _scale(g, ranges[k][0])
            g = _affine(scaled, net.weights[k].T, torch.zeros(net.weights[k].shape[1], dtype=torch.float64))
    first = _scale(gs[0], ranges[0][0])
    gradient = _affine(first, net.weights[0].T, torch.zeros(net.weights[0].shape[1], dtype=torch.float64))
    # Jacobians J_k [N, n_k, n0] and the two matrices of the theorem
    w0 = net.weights[0]
    jac = Interval(w0.expand(n_ex, -1, -1), torch.zeros_like(w0).expand(n_ex, -1, -1))
    n0 = w0.shape[1]
    centre = torch.zeros(n_ex, n0, n0, dtype=torch.float64)
    magnitude = torch.zeros_like(centre)
    spread = torch.zeros_like(centre)
    for k in range(len(boxes)):
        if k > 0:
            d = ranges[k - 1][0]
            scaled = Interval(jac.mid * d.mid[..., None], jac.mid.abs() * d.rad[..., None] + jac.rad * d.mag[..., None])
            weight = net.weights[k]
            jac = _imatmul(Interval(weight.expand(n_ex, -1, -1), torch.zeros_like(weight).expand(n_ex, -1, -1)), scaled)
        w = _scale(gs[k], ranges[k][1])
        if k == 0:  # J_0 = W_0 is exact: its term is bounded by congruence below, w_0 by its ends
            w_first = w
            continue
        jm, jr, ja = jac.mid, jac.rad, jac.mid.abs()
        centre = centre + jm.transpose(1, 2) @ (w.mid[..., None] * jm)
        magnitude = magnitude + ja.transpose(1, 2) @ (w.mid.abs()[..., None] * ja)
        wa = w.mag[..., None]
        cross = jr.transpose(1, 2) @ (wa * ja)
        spread = spread + ja.transpose(1, 2) @ (w.rad[..., None] * ja) + cross + cross.transpose(1, 2) \
            + jr.transpose(1, 2) @ (wa * jr)
    lower_matrix = centre + w0.T @ (w_first.lo[..., None] * w0)
    upper_matrix = centre + w0.T @ (w_first.hi[..., None] * w0)
    magnitude = magnitude + w0.abs().T @ (w_first.mag[..., None] * w0.abs())
    lower_matrix = (lower_matrix + lower_matrix.transpose(1, 2)) / 2
    upper_matrix = (upper_matrix + upper_matrix.transpose(1, 2)) / 2
    spread = (spread + spread.transpose(1, 2)) / 2
    finite = torch.ones(n_ex, dtype=torch.bool)
    for m in (lower_matrix, upper_matrix, spread, magnitude):
        finite &= torch.isfinite(m).flatten(1).all(1)
    keep = finite[:, None, None]  # an unbounded box (a huge region) gives the vacuous bound (-inf, inf)
    lower_matrix, upper_matrix, magnitude, spread = (torch.where(keep, m, 0.0)
                                                     for m in (lower_matrix, upper_matrix, magnitude, spread))
    width = max(int(b.mid.shape[1]) for b in boxes)
    low, _ = _eig_extremes(lower_matrix, magnitude, width * len(boxes))
    _, high = _eig_extremes(upper_matrix, magnitude, width * len(boxes))
    spread_mag = spread + rounding_margin(spread, width * len(boxes) + 4)  # P, rounded up elementwise
    _, p_norm = _eig_extremes(spread_mag, spread_mag, n0)
    p_norm = p_norm.clamp_min(0.0)
    lower = torch.where(finite, low - p_norm, -math.inf)
    upper = torch.where(finite, high + p_norm, math.inf)
    return LocalCurvature(lower, upper, gradient)


def unstable_units(boxes: list[Interval]) -> Tensor:
    """Per example [N]: the number of hidden units whose box contains 0 in its interior (for a ReLU network, the
    units that may change state on the region; none means f is affine there)."""
    if not boxes:
        raise UsageError("a network without hidden units has no units to count")
    return sum(((b.lo < 0) & (b.hi > 0)).sum(-1) for b in boxes)


def cover_cells(n: int) -> tuple[Tensor, float]:
    """The input-splitting cover of the unit l2 ball in R^n (n <= SPLIT_MAX_FEATURES; DESIGN section 11): the
    centres g [C, n] of the cells of the grid of k = SPLIT_CELLS ** (1/n) cells per axis over [-1, 1]^n (k a power
    of two, so centres and cell edges are exact in binary) whose l2 distance to the origin is at most 1 (each
    cell meeting the ball is kept; a cell is dropped only when the ball misses it), and the relative radius
    h sqrt(n) (1 + 1e-9), h = 1/k, of the l2 ball around a centre that holds its cell. So B(x, r) lies in the
    union over g of B(x + r g, r h sqrt(n))."""
    k = 1 << int(math.floor(math.log2(SPLIT_CELLS) / n + 1e-12))
    axis = (2 * torch.arange(k, dtype=torch.float64) + 1) / k - 1
    grid = torch.stack(torch.meshgrid(*([axis] * n), indexing="ij"), -1).reshape(-1, n)
    distance = (grid.abs() - 1.0 / k).clamp_min(0.0).norm(dim=1)
    return grid[distance <= 1.0 + 1e-9], math.sqrt(n) / k * (1 + 1e-9)


def _split_constants(net: AffineNetwork, center: Tensor, rows: Tensor, radius: Tensor) -> LocalCurvature:
    """`local_curvature` on B(x, r) for few inputs: the worst over the covering balls of `cover_cells` (lower: min,
    upper: max, gradient: the hull), intersected with the bounds on the whole ball (both hold; the covering balls
    stick out of B(x, r), so neither is always tighter). The centres x + r g are rounded; each covering radius
    carries an absolute slack 1e-12 sqrt(n) (max |x| + r), far above that rounding."""
    n_ex, n = center.shape
    grid, relative = cover_cells(n)
    cells = grid.shape[0]
    centres = (center[:, None, :] + radius[:, None, None] * grid[None]).reshape(n_ex * cells, n)
    slack = 1e-12 * math.sqrt(n) * (center.abs().amax(1) + radius)
    sub = (radius * relative + slack).repeat_interleave(cells)
    found = local_curvature(net, rows.repeat_interleave(cells, 0), region_boxes(net, centres, sub, 2))
    whole = local_curvature(net, rows, region_boxes(net, center, radius, 2))  # both are sound: keep the tighter
    lo = torch.maximum(found.gradient.lo.reshape(n_ex, cells, n).amin(1), whole.gradient.lo)
    hi = torch.minimum(found.gradient.hi.reshape(n_ex, cells, n).amax(1), whole.gradient.hi)
    lower = torch.maximum(found.lower.reshape(n_ex, cells).amin(1), whole.lower)
    upper = torch.minimum(found.upper.reshape(n_ex, cells).amax(1), whole.upper)
    return LocalCurvature(lower, upper, Interval.of(lo, hi))


def local_constants(net: AffineNetwork, x: Tensor, rows: Tensor, radius: Tensor) -> LocalCurvature:
    """`local_curvature` of f = rows . logits (rows [N, C]) on the l2 balls B(x, radius), x [N, ...], radius [N] (float64),
    in chunks of examples so that memory stays bounded (the matrices are [examples, n, n], n the input size).
    With at most SPLIT_MAX_FEATURES inputs the ball is split (`cover_cells`): the interval boxes of a small cell
    are far tighter than those of the whole ball (on the 2-D moons model at l2 eps 0.1, 95% of MoreauGrad
    certificates say something instead of 77%)."""
    center = x.reshape(x.shape[0], -1).to(torch.float64)
    rows = torch.as_tensor(rows, dtype=torch.float64).reshape(-1, net.num_classes).expand(center.shape[0], -1)
    radius = torch.as_tensor(radius, dtype=torch.float64).reshape(-1).expand(center.shape[0])
    n = center.shape[1]
    if n <= SPLIT_MAX_FEATURES and net.depth > 1 and bool(torch.isfinite(radius).all()):
        return _split_constants(net, center, rows, radius)
    chunk = max(1, CHUNK_ENTRIES // n ** 2)  # the [chunk, n, n] matrices stay ~64 MB each
    parts = [local_curvature(net, rows[i : i + chunk], region_boxes(net, center[i : i + chunk], radius[i : i + chunk], 2))
             for i in range(0, center.shape[0], chunk)]
    if len(parts) == 1:
        return parts[0]
    gradient = Interval(torch.cat([p.gradient.mid for p in parts]), torch.cat([p.gradient.rad for p in parts]))
    return LocalCurvature(torch.cat([p.lower for p in parts]), torch.cat([p.upper for p in parts]), gradient)


CHUNK_ENTRIES = 2**23  # float64 entries of one [examples, n, n] matrix of `local_constants` (64 MB)
REGION_STEPS = 4  # shrinking steps of `prox_region` (the radii converge geometrically; 4 get most of the gain)
REGION_SLACK = 1e-9  # relative slack of each radius over the bound it must exceed (the checker recomputes it)


def prox_region(net: AffineNetwork, x: Tensor, rows: Tensor, eps: float, rho: float, lipschitz: Tensor,
                steps: int = REGION_STEPS) -> Tensor:
    """Radii [N, steps + 1] of balls B(x, r_k) holding every stationary point of F_x'(z) = f(z) + ||z - x'||^2/(2 rho)
    for every x' in B(x, eps) (lemma MG-LOC, DESIGN section 11), f = rows . logits (rows [N, C]), x [N, ...]:

        r_0 = eps + rho L  (L [N] the global l2 Lipschitz constant: a stationary point has ||z - x'|| = rho ||grad f(z)||)
        r_(k+1) = min(r_k, eps + rho L(r_k)),  L(r) = max over B(x, r) of ||grad f|| (`local_curvature`'s enclosure)

    by induction: if every stationary point lies in B(x, r_k), its gradient norm is at most L(r_k), so it lies in
    B(x', rho L(r_k)), inside B(x, eps + rho L(r_k)). Each radius carries a relative slack REGION_SLACK."""
    if torch.is_tensor(lipschitz) and lipschitz.dtype != torch.float64:
        raise UsageError("the Lipschitz constants must be float64 (a float32 copy rounds them down)")
    lipschitz = torch.as_tensor(lipschitz, dtype=torch.float64).reshape(-1)
    radius = (eps + rho * lipschitz) * (1 + REGION_SLACK)
    radii = [radius]
    for _ in range(steps):
        shrunk = (eps + rho * local_constants(net, x, rows, radius).lipschitz) * (1 + REGION_SLACK)
        radius = torch.minimum(radius, shrunk)
        radii.append(radius)
    return torch.stack(radii, 1)


RHO_GRID = tuple(10.0 ** (k / 4) for k in range(-16, 5))  # 1e-4 .. 10, four per decade


@dataclass
class RhoChoice:
    """Per example [N]: the chosen rho (nan where none is admissible), its region radius eps + rho L, lambda on
    that region (min of the global and the local value), the Corollary 1 bound eps / min(rho, 1/lambda - rho)
    (inf where none), and the largest admissible rho of the grid (nan where none)."""

    rho: Tensor
    radius: Tensor
    lam: Tensor
    bound: Tensor
    largest: Tensor


def choose_rho(net: AffineNetwork, x: Tensor, rows: Tensor, eps: float, lipschitz: Tensor, lam_global: Tensor,
               grid: tuple[float, ...] = RHO_GRID) -> RhoChoice:
    """The rho of `grid` minimising Corollary 1's certified stability bound of MoreauGrad per example (DESIGN
    section 11): for each rho the region R = B(x, r) of `prox_region` (L the global l2 Lipschitz constant [N] of
    f = rows . logits, lemma MG-LOC), lambda = min(lam_global, lambda_R) and the bound eps / min(rho, 1/lambda -
    rho) where rho lambda < 1 (without the region the best rho would be 1/(2 lambda), bound 2 lambda eps).
    Corollary 1 is the bound that reflects the envelope's smoothing: the certificate may state a smaller one
    (certify.bounds.stability.vanilla_stability), which alone would favour rho -> 0, the plain gradient.
    x [N, ...], rows [N, C], lipschitz and lam_global [N] (inf: none). UnsupportedError as `local_curvature`."""
    n_ex = x.shape[0]
    lipschitz = torch.as_tensor(lipschitz, dtype=torch.float64).reshape(n_ex)
    lam_global = torch.as_tensor(lam_global, dtype=torch.float64).reshape(n_ex)
    nan = torch.full((n_ex,), math.nan, dtype=torch.float64)
    best = RhoChoice(nan.clone(), nan.clone(), nan.clone(), torch.full((n_ex,), math.inf, dtype=torch.float64), nan.clone())
    for rho in grid:
        radius = prox_region(net, x, rows, eps, rho, lipschitz)[:, -1]
        lam = torch.minimum(lam_global, local_constants(net, x, rows, radius).lam)
        admissible = rho * lam < 1
        margin = torch.where(lam > 0, 1.0 / lam.clamp_min(1e-300) - rho, torch.full_like(lam, math.inf))
        bound = torch.where(admissible, eps / torch.minimum(torch.full_like(lam, rho), margin), torch.full_like(lam, math.inf))
        better = bound < best.bound
        for field_, value in (("rho", torch.full_like(lam, rho)), ("radius", radius), ("lam", lam), ("bound", bound)):
            setattr(best, field_, torch.where(better, value, getattr(best, field_)))
        best.largest = torch.where(admissible, torch.full_like(lam, rho), best.largest)
    return best
