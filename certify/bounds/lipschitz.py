"""Lipschitz constants of the logits and of linear functions of them (margins), in l2 and linf.

Convention (shared with `certify.bounds.lipsdp`): `c` is None or a float64 matrix [K, num_classes].

* c given: the value is a tensor [K]; row k bounds the scalar function f_k = c_k . logits:
  |f_k(x) - f_k(y)| <= L_k ||x - y||_p.
* c None: the value is a 0-dim tensor bounding the logit map itself: ||f(x) - f(y)||_p <= L ||x - y||_p.

Bound (path sum over the graph of `AffineNetwork`: h_0 = x, z_k = W_k h_k + b_k + sum_{j in skips[k]}
S_kj h_j, h_{k+1} = sigma_k(z_k), logits = z_{L-1}). An elementwise activation with sup |sigma_k'| <=
a_k (`Activation.lipschitz`: 1 for ReLU, leaky ReLU with slope <= 1, softplus and tanh, 1/4 for sigmoid,
about 1.13 for GELU and 1.1 for SiLU) scales any p-norm of a difference by at most a_k. With ||.|| the
p -> p operator norm and L(v) a Lipschitz constant of the value v as a function of x:

    L(h_0) = 1,
    L(z_k) <= ||W_k|| L(h_k) + sum_{j in skips[k]} ||S_kj|| L(h_j)                    (triangle inequality)
    L(h_{k+1}) <= a_k L(z_k)                                                        (k < L-1)
    L      <= ||W_{L-1}|| L(h_{L-1}) + sum_j ||S_{L-1,j}|| L(h_j)                    (c None: the logit map)
    L_r    <= ||W_{L-1}^T c_r||_q L(h_{L-1}) + sum_j ||S_{L-1,j}^T c_r||_q L(h_j)    (row r of c; q dual to p)

On a chain (no skips) with a_k = 1 this is the classical product of operator norms (Szegedy et al. 2014):
L <= prod_k ||W_k||, L_r <= ||W_{L-1}^T c_r||_q prod_{k < L-1} ||W_k||.

||W||_{2->2} is the largest singular value, ||W||_{inf->inf} the largest absolute row sum.

Rounding: singular values come from LAPACK's SVD (backward stable), so the computed sigma_max is within a
small multiple of n u ||W||_2 of the exact one; we add `rounding_margin(||W||_F, m n)` (2 gamma_{mn}
||W||_F, a generous bound on that error); every norm is thus an upper bound. The recursion then only adds
and multiplies nonnegative numbers, so each rounding scales the exact value by at most (1 + u): the result
plus `rounding_margin(result, n)`, n the number of multiplications and additions performed (a
multiplication by a_k = 1 is exact and not counted), is an upper bound.

The estimate (`lipschitz_estimate`) maximises the local gradient (Jacobian) norm over points around the
inputs; any gradient norm is a lower bound on the true constant, so it never exceeds a certified value.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from certify.bounds.network import AffineNetwork
from certify.bounds.results import BoundResult, Kind
from certify.bounds.sets import project_ball, rounding_margin, sample_ball
from certify.errors import UnsupportedError, UsageError
from certify.vocabulary import dual_norm, norm_name, parse_norm

ROW_METHODS = {2.0: "spectral norm", math.inf: "max absolute row sum"}


def lipschitz_norm_order(p: float | int | str) -> float:
    """p as a float in {2, inf} (the norms this module bounds); anything else raises UnsupportedError."""
    order = parse_norm(p)
    if order not in ROW_METHODS:
        raise UnsupportedError(f"Lipschitz bounds are implemented for p = 2 and p = inf, not p = {p!r}")
    return order


def output_rows(net: AffineNetwork, c: Tensor | None) -> Tensor | None:
    """`c` as a float64 [K, num_classes] matrix on the network's device (None stays None)."""
    if c is None:
        return None
    rows = torch.as_tensor(c, dtype=torch.float64, device=net.weights[-1].device)
    rows = rows.reshape(1, -1) if rows.dim() == 1 else rows
    if rows.dim() != 2 or rows.shape[1] != net.num_classes:
        raise UsageError(f"c must have shape [K, {net.num_classes}], got {tuple(rows.shape)}")
    if not torch.isfinite(rows).all():
        raise UsageError("c contains NaN or Inf")
    return rows


def operator_norm_upper(weight: Tensor, p: float) -> Tensor:
    """Rigorous upper bound on ||W||_{p -> p} for p in {2, inf} (float64, 0-dim)."""
    m, n = weight.shape
    if p == 2.0:
        sigma = torch.linalg.svdvals(weight)[0]
        return sigma + rounding_margin(torch.linalg.matrix_norm(weight), m * n)
    row_sums = weight.abs().sum(dim=1)
    return (row_sums + rounding_margin(row_sums, n)).max()


def row_norm_upper(weight: Tensor, rows: Tensor, q: float) -> Tensor:
    """Rigorous upper bound on ||W^T c_k||_q for each row c_k of `rows` [K, out]: [K]."""
    v = rows @ weight
    err = rounding_margin(rows.abs() @ weight.abs(), weight.shape[0])
    norm = torch.linalg.vector_norm(v.abs() + err, ord=q, dim=1)
    return norm + rounding_margin(norm, weight.shape[1])


def lipschitz_product(net: AffineNetwork, p: float | int | str = 2, c: Tensor | None = None) -> BoundResult:
    """Certified Lipschitz bound by the path sum of layer operator norms over the network's graph (the
    product of layer norms on a chain; see the module docstring). value: 0-dim (c None) or [K]."""
    order = lipschitz_norm_order(p)
    rows = output_rows(net, c)
    last = net.depth - 1
    hidden = net.weights[:-1] if rows is not None else net.weights
    norms = [operator_norm_upper(w, order) for w in hidden]
    one = torch.ones((), dtype=torch.float64, device=net.weights[0].device)
    values = [one]  # L(h_0), L(h_1), ...
    operations = 0

    def path_sum(k: int, weight_norm: Tensor, norm_of) -> Tensor:
        """||W_k|| L(h_k) + sum_j ||S_kj|| L(h_j), the norms of the skips by `norm_of`."""
        nonlocal operations
        total = weight_norm * values[k]
        operations += 1
        for j, skip in net.skips.get(k, {}).items():
            total = total + norm_of(skip) * values[j]
            operations += 2
        return total

    def operator(w: Tensor) -> Tensor:
        return operator_norm_upper(w, order)

    for k in range(last):
        z = path_sum(k, norms[k], operator)
        slope = net.activations[k].lipschitz
        if slope != 1.0:
            z = z * slope
            operations += 1
        values.append(z)
    if rows is not None:
        row_norm = lambda w: row_norm_upper(w, rows, dual_norm(order))  # noqa: E731
        bound = path_sum(last, row_norm(net.weights[last]), row_norm)
    else:
        bound = path_sum(last, norms[last], operator)
    bound = bound + rounding_margin(bound, operations)
    label = norm_name(order)
    slopes = sorted({f"{a.name} {a.lipschitz:.6g}" for a in net.activations})
    return BoundResult(
        value=bound,
        kind=Kind.CERTIFIED,
        method=f"lipschitz-product-l{label}",
        assumptions=[
            f"Lipschitz in the l{label} norm of the input, over all of R^n",
            f"elementwise activations with sup |sigma'| <= {', '.join(slopes) or 'none'}",
            "row k bounds c_k . logits" if rows is not None else f"bounds the logit vector in the l{label} norm",
        ],
        details={"p": order, "layer_norms": [float(v) for v in norms], "norm": ROW_METHODS[order]},
    )


def _local_norms(net: AffineNetwork, points: Tensor, rows: Tensor | None, p: float) -> Tensor:
    """Local gradient norms at each point: [M, K] (dual norm of grad c_k . f) or [M] (Jacobian p->p norm).

    Differentiable in `points` (built with create_graph) so it can be maximised."""
    outputs = net.forward(points)
    weights = rows if rows is not None else torch.eye(net.num_classes, dtype=points.dtype, device=points.device)
    grads = [
        torch.autograd.grad((outputs @ w).sum(), points, create_graph=True)[0] for w in weights
    ]
    jacobian = torch.stack(grads, dim=1)  # [M, K, n]
    if rows is not None:
        return torch.linalg.vector_norm(jacobian, ord=dual_norm(p), dim=-1)
    if p == 2.0:
        return torch.linalg.matrix_norm(jacobian, ord=2)
    return jacobian.abs().sum(-1).amax(-1)


def lipschitz_estimate(
    net: AffineNetwork,
    x: Tensor,
    p: float | int | str = 2,
    c: Tensor | None = None,
    radius: float = 0.5,
    samples: int = 64,
    steps: int = 20,
    step_size: float = 0.05,
    seed: int = 0,
) -> BoundResult:
    """Estimated Lipschitz constant: the largest local gradient norm found around the inputs x [N, ...].

    Draws `samples` points uniformly in the l_p ball of `radius` around each input, then runs `steps` of
    projected gradient ascent on the local norm (effective for smooth activations; a ReLU network's
    local norm is piecewise constant and only the sampling explores it). Same shape convention as
    `lipschitz_product`; `details["per_example"]` holds the maximum found around each input. Every value
    is the norm of an actual gradient, so it is a lower bound on the true constant (kind: estimated)."""
    order = lipschitz_norm_order(p)
    rows = output_rows(net, c)
    if radius < 0 or samples < 1 or steps < 0:
        raise UsageError("radius must be >= 0, samples >= 1 and steps >= 0")
    centers = x.detach().reshape(x.shape[0], -1).to(torch.float64).to(net.weights[0].device)
    if centers.shape[1] != net.input_size:
        raise UsageError(f"inputs have {centers.shape[1]} features, the network expects {net.input_size}")
    generator = torch.Generator().manual_seed(seed)
    points = torch.cat([centers, sample_ball(centers, radius, order, samples, generator)])
    anchors = torch.cat([centers, centers.repeat_interleave(samples, dim=0)])
    best = None
    for step in range(steps + 1):
        points = points.detach().requires_grad_(True)
        norms = _local_norms(net, points, rows, order)
        found = norms.detach()
        best = found if best is None else torch.maximum(best, found)
        if step == steps or not norms.requires_grad:  # piecewise linear (leaky ReLU): no second derivative
            break
        (ascent,) = torch.autograd.grad(norms.sum(), points, allow_unused=True)
        if ascent is None:
            break
        with torch.no_grad():
            direction = ascent / torch.linalg.vector_norm(ascent, dim=-1, keepdim=True).clamp_min(1e-300)
            points = project_ball(points + step_size * radius * direction, anchors, radius, order)
    n_ex = centers.shape[0]
    owner = torch.cat([torch.arange(n_ex), torch.arange(n_ex).repeat_interleave(samples)]).to(best.device)
    per_example = _max_by_owner(best, owner, n_ex)
    label = norm_name(order)
    return BoundResult(
        value=per_example.amax(0),
        kind=Kind.ESTIMATED,
        method=f"lipschitz-gradient-ascent-l{label}",
        assumptions=[f"largest local gradient norm found in the l{label} ball of radius {radius} around the inputs"],
        details={"p": order, "per_example": per_example, "radius": radius, "samples": samples, "steps": steps},
    )


def _max_by_owner(values: Tensor, owner: Tensor, groups: int) -> Tensor:
    """Group-wise maximum of values [M, ...] by owner index [M]: [groups, ...]."""
    shape = (groups,) + tuple(values.shape[1:])
    out = torch.full(shape, -math.inf, dtype=values.dtype, device=values.device)
    index = owner.reshape(-1, *([1] * (values.dim() - 1))).expand_as(values)
    return out.scatter_reduce(0, index, values, reduce="amax")
