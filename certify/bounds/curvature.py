"""Certified curvature of f = c . logits for softplus networks: eigenvalue bounds on the Hessian, the weak-
convexity constant lambda and the two-sided smoothness beta; and a Lanczos (Hessian-vector) estimate.

Hessian (Singla & Feizi, "Second-Order Provable Defenses against Adversarial Attacks", ICML 2020, Lemma 1),
for z_1 = W_1 x + b_1, a_k = sigma(z_k), z_{k+1} = W_{k+1} a_k + b_{k+1}, f = c^T z_L:

    Hess f(x) = sum_{I=1}^{L-1} J_I^T diag(g_I * sigma''(z_I)) J_I,
    J_I = dz_I/dx = W_I diag(sigma'(z_{I-1})) ... W_1,   g_I = df/da_I = W_{I+1}^T diag(sigma'(z_{I+1})) ... W_L^T c.

For softplus of sharpness b, sigma' in (0, 1) and sigma'' in (0, b/4]; over a region with pre-activation
intervals [l, u] both narrow (sigma'' is largest at the point of [l, u] nearest 0 and smallest at the end
farthest from 0). Interval bounds w_lo <= g_I * sigma''(z_I) <= w_hi (g_I by backward interval
arithmetic from the exact g_{L-1} = W_L^T c) give, per term:

* I = 1 (J_1 = W_1 is constant; exact symmetric eigendecomposition, Singla-Feizi Theorem 3 for two layers):
  lambda_min(W_1^T diag(w_lo) W_1) <= eigenvalues of the term <= lambda_max(W_1^T diag(w_hi) W_1),
  because diag(w_lo) <= diag(w) <= diag(w_hi) is preserved by congruence.
* I >= 2 (Singla-Feizi Theorem 4, the product-of-norms route): ||J_I|| <= r_I = ||W_1|| prod_{k=2..I}
  max(sigma'_{k-1}) ||W_k||, so the term's eigenvalues lie in [min(min w_lo, 0) r_I^2, max(max w_hi, 0) r_I^2].

Summing (Weyl): m <= lambda_min(Hess f) and lambda_max(Hess f) <= M everywhere in the region. Then the weak-
convexity constant is lambda = max(0, -m) (f + lambda/2 ||x||^2 is convex on the region) and the two-sided
curvature bound is beta = max(M, -m, 0) (||Hess f|| <= beta). Eigenvalues come from `torch.linalg.eigvalsh`
(never power iteration, which underestimates), widened by `rounding_margin` of the Frobenius magnitude;
interval arithmetic is widened likewise.

Scope: softplus chains (a graph with skip terms, or another smooth activation, is refused naming it).
ReLU networks: f is piecewise linear; at a kink where the slope decreases it is not weakly convex for any
lambda (its Hessian is a negative Dirac mass), so there is no certified lambda; only Gaussian smoothing
(`certify.bounds.smoothing`) gives one. The exception is a region on which no ReLU changes state: f is
affine there and lambda = beta = 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from certify.bounds.lipschitz import output_rows
from certify.bounds.local import norm_up
from certify.bounds.activations import Activation
from certify.bounds.network import AffineNetwork
from certify.bounds.requirements import activation_refusal, chain_refusal
from certify.bounds.results import BoundResult, Kind
from certify.bounds.sets import InputSet, rounding_margin, sample_ball
from certify.errors import UsageError


PIECEWISE_LINEAR = ("relu", "leaky_relu")
RELU_REFUSAL = (
    "f is a ReLU (or leaky ReLU) network, piecewise linear: where a kink lowers the slope f is not weakly convex for any "
    "lambda and its Hessian is unbounded, so no curvature bound exists in general; only the Gaussian-"
    "smoothed route (certify.bounds.smoothing.smoothed_weak_convexity) applies"
)


@dataclass
class Interval:
    lo: Tensor
    hi: Tensor

    def scale_nonneg(self, lo: Tensor, hi: Tensor) -> "Interval":
        """Interval of the product with a factor in [lo, hi], lo >= 0."""
        ends = torch.stack([self.lo * lo, self.lo * hi, self.hi * lo, self.hi * hi])
        return Interval(ends.amin(0), ends.amax(0))

    def matmul(self, weight: Tensor) -> "Interval":
        """Rigorous interval of v @ weight for v in the interval (center-radius form, outward rounded)."""
        mid, rad = (self.lo + self.hi) / 2, (self.hi - self.lo) / 2
        out_mid, out_rad = mid @ weight, rad @ weight.abs()
        slack = out_rad + rounding_margin(mid.abs() @ weight.abs() + out_rad, weight.shape[0] + 2)
        return Interval(out_mid - slack, out_mid + slack)


def _sigmoid_range(act: Activation, z: Interval) -> Interval:
    """sigma' = sigmoid(b z) is increasing: its range over [l, u]."""
    return Interval(torch.sigmoid(act.beta * z.lo), torch.sigmoid(act.beta * z.hi))


def _second_derivative(act: Activation, z: Tensor) -> Tensor:
    s = torch.sigmoid(act.beta * z)
    return act.beta * s * (1 - s)


def _second_derivative_range(act: Activation, z: Interval) -> Interval:
    """sigma'' = b s (1 - s) peaks at 0 and decreases in |z|; the range over [l, u] (widened by 4 ulps)."""
    nearest = torch.clamp(torch.zeros_like(z.lo), z.lo, z.hi)
    hi = _second_derivative(act, nearest)
    lo = torch.minimum(_second_derivative(act, z.lo), _second_derivative(act, z.hi))
    slack = rounding_margin(hi, 2)
    return Interval((lo - slack).clamp_min(0.0), hi + slack)


def preactivation_intervals(net: AffineNetwork, region: InputSet | None) -> list[Interval]:
    """Interval bounds [N, n_k] on the hidden pre-activations z_1..z_{L-1} over the region (N = 1 and
    infinite bounds when region is None), by interval arithmetic from the region's outer box."""
    device, dtype = net.weights[0].device, torch.float64
    if region is None:
        return [Interval(torch.full((1, w.shape[0]), -math.inf, dtype=dtype, device=device),
                         torch.full((1, w.shape[0]), math.inf, dtype=dtype, device=device)) for w in net.weights[:-1]]
    if region.size != net.input_size:
        raise UsageError(f"region has {region.size} features, the network expects {net.input_size}")
    lo, hi = region.box()
    box, out = Interval(lo.to(device), hi.to(device)), []
    for w, b, act in zip(net.weights[:-1], net.biases[:-1], net.activations):
        z = box.matmul(w.T)
        z = Interval(z.lo + b, z.hi + b)
        z = Interval(z.lo - rounding_margin(z.lo.abs() + b.abs(), 2), z.hi + rounding_margin(z.hi.abs() + b.abs(), 2))
        out.append(z)
        a_lo, a_hi = act.image(z.lo, z.hi)  # covers the exact softplus and torch's thresholded one
        box = Interval(a_lo - rounding_margin(a_lo.abs(), 4), a_hi + rounding_margin(a_hi.abs(), 4))
    return out


def _sym_eig_bounds(matrix: Tensor, magnitude: Tensor, terms: int) -> tuple[Tensor, Tensor]:
    """(lower bound on lambda_min, upper bound on lambda_max) of symmetric matrices [..., n, n] formed
    with sums of `terms` products of absolute size `magnitude` [..., n, n]."""
    n = matrix.shape[-1]
    finite = torch.isfinite(matrix).flatten(-2).all(-1) & torch.isfinite(magnitude).flatten(-2).all(-1)
    keep = finite[..., None, None]  # an overflowed matrix gives the vacuous pair (-inf, inf), refused upstream
    eig = torch.linalg.eigvalsh(torch.where(keep, matrix, 0.0))
    slack = rounding_margin(norm_up(torch.where(keep, magnitude, 0.0), (-2, -1)), terms + n * n)  # no underflow
    return torch.where(finite, eig[..., 0] - slack, -math.inf), torch.where(finite, eig[..., -1] + slack, math.inf)


def hessian_eigen_bounds(net: AffineNetwork, rows: Tensor, region: InputSet | None) -> tuple[Tensor, Tensor]:
    """(m, M) [N, K]: m <= lambda_min(Hess f_k(x)), lambda_max(Hess f_k(x)) <= M for every x in the
    region (N = 1 when region is None) and each row f_k = rows[k] . logits (softplus networks)."""
    z = preactivation_intervals(net, region)
    n_ex = z[0].lo.shape[0]
    g_exact = (rows @ net.weights[-1]).expand(n_ex, -1, -1)  # [N, K, n_{L-1}]
    g_err = rounding_margin(rows.abs() @ net.weights[-1].abs(), net.num_classes)
    g = Interval(g_exact - g_err, g_exact + g_err)
    weights_per_layer: list[Interval] = [None] * len(z)  # type: ignore[list-item]
    for idx in range(len(z) - 1, -1, -1):
        act, zi = net.activations[idx], Interval(z[idx].lo[:, None, :], z[idx].hi[:, None, :])
        second = _second_derivative_range(act, zi)
        weights_per_layer[idx] = g.scale_nonneg(second.lo, second.hi)
        if idx > 0:
            first = _sigmoid_range(act, zi)
            g = g.scale_nonneg(first.lo, first.hi).matmul(net.weights[idx])
    w1 = net.weights[0]
    term = weights_per_layer[0]
    upper_matrix = (w1.T * term.hi[..., None, :]) @ w1
    lower_matrix = (w1.T * term.lo[..., None, :]) @ w1
    magnitude = (w1.abs().T * torch.maximum(term.hi.abs(), term.lo.abs())[..., None, :]) @ w1.abs()
    low, _ = _sym_eig_bounds(lower_matrix, magnitude, w1.shape[0])
    _, high = _sym_eig_bounds(upper_matrix, magnitude, w1.shape[0])
    jac_norm = torch.linalg.svdvals(w1)[0] + rounding_margin(torch.linalg.matrix_norm(w1), w1.numel())
    for idx in range(1, len(z)):
        w = net.weights[idx]
        slope = _sigmoid_range(net.activations[idx - 1], z[idx - 1]).hi.amax(-1)  # [N]
        w_norm = torch.linalg.svdvals(w)[0] + rounding_margin(torch.linalg.matrix_norm(w), w.numel())
        jac_norm = jac_norm * slope * w_norm
        jac_norm = jac_norm + rounding_margin(jac_norm, 3)
        square = jac_norm**2
        r2 = (square + rounding_margin(square, 1))[:, None]  # >= 1e-300 even where the square underflows to 0
        term = weights_per_layer[idx]
        high = high + term.hi.amax(-1).clamp_min(0.0) * r2
        low = low + term.lo.amin(-1).clamp_max(0.0) * r2
    slack_low, slack_high = rounding_margin(low.abs(), len(z)), rounding_margin(high.abs(), len(z))
    return low - slack_low, high + slack_high


def _relu_stable(net: AffineNetwork, region: InputSet | None) -> bool:
    """True when, over the region, no ReLU unit's pre-activation interval contains 0 (f affine there)."""
    if region is None:
        return False
    z = preactivation_intervals(net, region)
    return all(((iv.lo > 0) | (iv.hi < 0)).all() for iv, act in zip(z, net.activations) if act.name == "relu")


def _shape(value: Tensor, rows_given_2d: bool, region: InputSet | None) -> Tensor:
    value = value if region is not None else value[0]
    return value if rows_given_2d else value[..., 0]


def _curvature(net: AffineNetwork, c_row: Tensor, region: InputSet | None, method: str) -> BoundResult | tuple:
    rows = output_rows(net, c_row)
    where = region.describe() if region is not None else "all of R^n"
    assumptions = [f"valid for x in {where}", "f = c . logits for each row c"]
    if net.depth == 1:
        zero = torch.zeros(1 if region is None else region.center.shape[0], rows.shape[0], dtype=torch.float64, device=rows.device)
        return zero, zero, assumptions + ["linear model: Hessian 0"]
    if any(a.name in PIECEWISE_LINEAR for a in net.activations):
        if net.is_chain and all(a.name == "relu" for a in net.activations) and _relu_stable(net, region):
            zero = torch.zeros(region.center.shape[0], rows.shape[0], dtype=torch.float64, device=rows.device)
            return zero, zero, assumptions + ["no ReLU changes state on the region: f is affine there"]
        if all(a.name in PIECEWISE_LINEAR for a in net.activations):
            return BoundResult.refuse(method, RELU_REFUSAL, assumptions)
        k, act = next((k, a) for k, a in enumerate(net.activations) if a.name in PIECEWISE_LINEAR)
        return BoundResult.refuse(method, (
            f"hidden layer {k} of this network has {act.name}, whose kinks leave f without a Hessian bound: where a "
            "kink lowers the slope f is not weakly convex for any lambda, so no curvature bound exists in general; "
            "only the Gaussian-smoothed route (certify.bounds.smoothing.smoothed_weak_convexity) applies"), assumptions)
    method_name = "the Hessian eigenvalue bounds"
    reason = activation_refusal(net, method_name, ("softplus",)) or chain_refusal(net, method_name)
    if reason is not None:
        return BoundResult.refuse(method, reason, assumptions)
    low, high = hessian_eigen_bounds(net, rows, region)
    betas = sorted({a.beta for a in net.activations})
    return low, high, assumptions + [f"softplus activations (beta {betas}): sigma'' in (0, beta/4]"]


def _hessian_result(net: AffineNetwork, c_row: Tensor, region: InputSet | None, method: str, value_of) -> BoundResult:
    out = _curvature(net, c_row, region, method)
    if isinstance(out, BoundResult):
        return out
    low, high, assumptions = out
    if not bool(torch.isfinite(value_of(low, high)).all()):
        return BoundResult.refuse(method, "the Hessian bound overflowed float64 (weights or activations too large)",
                                  assumptions)
    two_d = torch.as_tensor(c_row).dim() == 2
    return BoundResult(
        _shape(value_of(low, high).clamp_min(0.0) + 0.0, two_d, region), Kind.CERTIFIED, method, assumptions,
        details={"min_eigenvalue_lower": _shape(low, two_d, region), "max_eigenvalue_upper": _shape(high, two_d, region)},
    )


def weak_convexity(net: AffineNetwork, c_row: Tensor, region: InputSet | None = None) -> BoundResult:
    """Certified lambda >= 0 with f + lambda/2 ||x||^2 convex, f = c_row . logits (module docstring).

    c_row [C] gives a scalar (global) or [N] (per example of the region); c_row [K, C] gives [K] or [N, K].
    details carry m <= lambda_min and M >= lambda_max. ReLU networks: a refusal (not weakly convex in
    general), unless no unit changes state on the region."""
    return _hessian_result(net, c_row, region, "weak-convexity-hessian-bound", lambda low, high: -low)


def curvature_bound(net: AffineNetwork, c_row: Tensor, region: InputSet | None = None) -> BoundResult:
    """Certified two-sided beta with ||Hess f(x)||_2 <= beta (same shapes, details and refusals as
    weak_convexity)."""
    return _hessian_result(net, c_row, region, "curvature-hessian-bound", lambda low, high: torch.maximum(high, -low))


def _batched_function(net_or_model: AffineNetwork | nn.Module, c_row: Tensor, input_shape: tuple[int, ...]):
    """f(points) = c_row . logits for flat points [B, n] (one value per point)."""
    if isinstance(net_or_model, AffineNetwork):
        return lambda x: net_or_model.forward(x) @ c_row
    return lambda x: net_or_model(x.reshape(x.shape[0], *input_shape)) @ c_row


def _hessian_vector_product(f, points: Tensor):
    """v -> Hess f(points) v for [B, n] directions, by double backward through one retained gradient graph
    (plain autograd: torch.func's first call costs tens of seconds on a loaded CPU)."""
    points = points.detach().requires_grad_(True)
    with torch.enable_grad():
        (gradient,) = torch.autograd.grad(f(points).sum(), points, create_graph=True)

    def product(_: Tensor, v: Tensor) -> Tensor:
        with torch.enable_grad():
            return torch.autograd.grad((gradient * v).sum(), points, retain_graph=True)[0].detach()

    return product


def rayleigh_ritz_extremes(hvp, points: Tensor, steps: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Extreme Ritz values of H(x) for each point [B, n] from a Krylov basis of `steps` vectors (Lanczos with
    full reorthogonalisation; a breakdown restarts with a fresh random vector). Ritz values lie inside the
    spectrum, so these are estimates from inside: lambda_min <= low and high <= lambda_max."""
    batch, n = points.shape
    steps = min(steps, n)
    basis = torch.zeros(steps, batch, n, dtype=points.dtype, device=points.device)
    images = torch.zeros_like(basis)
    q = torch.randn((batch, n), generator=generator, dtype=points.dtype).to(points.device)
    for j in range(steps):
        if j > 0:
            q = q - torch.einsum("jb,jbn->bn", torch.einsum("jbn,bn->jb", basis[:j], q), basis[:j])
            q = q - torch.einsum("jb,jbn->bn", torch.einsum("jbn,bn->jb", basis[:j], q), basis[:j])
        norm = torch.linalg.vector_norm(q, dim=-1, keepdim=True)
        fresh = torch.randn((batch, n), generator=generator, dtype=points.dtype).to(points.device)
        if j > 0:
            fresh = fresh - torch.einsum("jb,jbn->bn", torch.einsum("jbn,bn->jb", basis[:j], fresh), basis[:j])
        q = torch.where(norm > 1e-10, q, fresh)
        q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
        basis[j] = q
        images[j] = hvp(points, q)
        q = images[j]
    projected = torch.einsum("ibn,jbn->bij", basis, images)
    ritz = torch.linalg.eigvalsh(0.5 * (projected + projected.transpose(1, 2)))
    return ritz[:, 0], ritz[:, -1]


def curvature_estimate(
    net_or_model: AffineNetwork | nn.Module,
    x: Tensor,
    c_row: Tensor,
    radius: float = 0.0,
    samples: int = 0,
    steps: int = 30,
    seed: int = 0,
) -> BoundResult:
    """Estimated curvature of f = c_row . logits at x [N, ...] and at `samples` random points of the l2
    ball of `radius` around each, by Hessian-vector products (double backward) and Lanczos / Rayleigh-Ritz.

    value [N]: estimated weak convexity max(0, -lambda_min) over the points of each example; details:
    min_eigenvalue, max_eigenvalue, curvature (max |eigenvalue|), each [N]. Kind: estimated (Ritz values
    lie inside the spectrum, so they never exceed the certified bounds)."""
    if radius < 0 or samples < 0 or steps < 1:
        raise UsageError("radius and samples must be >= 0 and steps >= 1")
    n_ex = x.shape[0]
    is_net = isinstance(net_or_model, AffineNetwork)
    dtype = torch.float64 if is_net else next(net_or_model.parameters()).dtype
    device = net_or_model.weights[0].device if is_net else next(net_or_model.parameters()).device
    flat = x.detach().reshape(n_ex, -1).to(dtype=dtype, device=device)
    row = torch.as_tensor(c_row, dtype=dtype, device=device)
    f = _batched_function(net_or_model, row, tuple(x.shape[1:]))
    generator = torch.Generator().manual_seed(seed)
    points = flat
    if samples:
        points = torch.cat([flat, sample_ball(flat, radius, 2.0, samples, generator)])
    low, high = rayleigh_ritz_extremes(_hessian_vector_product(f, points), points, steps, generator)
    owner = torch.cat([torch.arange(n_ex), torch.arange(n_ex).repeat_interleave(samples)]).to(device)
    low_ex = torch.full((n_ex,), math.inf, dtype=dtype, device=device).scatter_reduce(0, owner, low, "amin")
    high_ex = torch.full((n_ex,), -math.inf, dtype=dtype, device=device).scatter_reduce(0, owner, high, "amax")
    return BoundResult(
        (-low_ex).clamp_min(0.0), Kind.ESTIMATED, "curvature-lanczos-estimate",
        [f"Ritz values at x and {samples} points of the l2 ball of radius {radius} around it"],
        details={"min_eigenvalue": low_ex, "max_eigenvalue": high_ex, "curvature": torch.maximum(high_ex, -low_ex)},
    )
