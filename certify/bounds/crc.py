"""Curvature-based certified l2 radius for softplus networks (Singla & Feizi, "Second-Order Provable
Defenses against Adversarial Attacks", ICML 2020, Theorem 1), evaluated rigorously.

For an example x0 of class c and each other class j, let m(x) = f_c(x) - f_j(x) (> 0 at x0). The
decision flips to j only where m <= 0, and for any eta >= 0 (weak duality)

    min_{m(x) <= 0} 1/2 ||x - x0||^2  >=  d(eta) = min_x phi_eta(x),   phi_eta = 1/2 ||x - x0||^2 + eta m(x).

With m <= lambda_min(Hess m) <= lambda_max(Hess m) <= M everywhere (`certify.bounds.curvature`), phi_eta is
mu-strongly convex with mu = 1 + eta min(m, 0) > 0 for 0 <= eta < 1/max(-m, 0), and (1 + eta max(M, 0))-
smooth. For any point x_hat (the inner problem solved inexactly by Nesterov's method),

    d(eta) >= phi_eta(x_hat) - ||grad phi_eta(x_hat)||^2 / (2 mu)                  (strong convexity)

(the code of the paper uses sqrt(||x_hat - x0||^2 + 2 eta m(x_hat)), an upper bound on d: not used). The
radius for class j is sqrt(2 max_eta d(eta)), over a grid of eta refined once around its best point; the
certified radius is the minimum over j (0 if x0 is not classified as c).

Rounding: phi is evaluated with exact softplus (log-add-exp) and a running float64 error bound (gamma_n of
the absolute magnitudes, layer by layer); torch's Softplus switches to the identity above beta t > threshold,
a difference of at most log1p(e^{-threshold})/beta per unit (`Activation.threshold_gap`, from the model's
own threshold), also carried in that bound so that the radius holds for the
model as torch computes it. The gradient norm is inflated by gamma_n times the backpropagated magnitudes.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from certify.bounds.curvature import hessian_eigen_bounds
from certify.bounds.network import AffineNetwork
from certify.bounds.requirements import activation_refusal, chain_refusal
from certify.bounds.results import BoundResult, Kind
from certify.bounds.sets import UNIT_ROUNDOFF, rounding_margin
from certify.errors import TargetError, UsageError



def forward_with_error(net: AffineNetwork, x: Tensor) -> tuple[Tensor, Tensor]:
    """Exact-softplus logits of x [B, n] and a bound on |computed - model's logits| (rounding plus torch's
    threshold switch), both [B, classes]."""
    h, err = x, torch.zeros_like(x)
    for k, (w, b) in enumerate(zip(net.weights, net.biases)):
        z = h @ w.T + b
        err = err @ w.abs().T + rounding_margin(h.abs() @ w.abs().T + b.abs(), w.shape[1] + 1)
        h = z
        if k < len(net.activations):
            act = net.activations[k]
            beta = act.beta
            h = torch.logaddexp(torch.zeros_like(z), beta * z) / beta
            err = err + rounding_margin(h.abs() + 1.0, 8) + act.threshold_gap
    return h, err


def _pairs(target: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """For targets [N]: the other classes [N, C-1] and the margin rows e_c - e_j [N, C-1, C]."""
    offsets = torch.arange(num_classes - 1, device=target.device)[None, :]
    others = offsets + (offsets >= target[:, None]).long()
    rows = torch.zeros(target.shape[0], num_classes - 1, num_classes, dtype=torch.float64, device=target.device)
    rows.scatter_(2, target[:, None, None].expand(-1, num_classes - 1, 1), 1.0)
    rows.scatter_(2, others[:, :, None], -1.0)
    return others, rows


def _phi_and_grad(net: AffineNetwork, x: Tensor, x0: Tensor, rows: Tensor, eta: Tensor) -> tuple[Tensor, Tensor]:
    x = x.detach().requires_grad_(True)
    logits = net.forward(x)
    margin = (logits * rows).sum(-1)
    phi = 0.5 * ((x - x0) ** 2).sum(-1) + eta * margin
    (grad,) = torch.autograd.grad(phi.sum(), x)
    return phi.detach(), grad


def _inner_minimise(
    net: AffineNetwork, x0: Tensor, rows: Tensor, eta: Tensor, mu: Tensor, smooth: Tensor, iterations: int
) -> Tensor:
    """Nesterov's method for the mu-strongly convex, smooth phi_eta (one problem per row, batched)."""
    kappa = smooth / mu
    momentum = ((kappa.sqrt() - 1) / (kappa.sqrt() + 1))[:, None]
    x, y = x0.clone(), x0.clone()
    for _ in range(iterations):
        _, grad = _phi_and_grad(net, y, x0, rows, eta)
        x_next = y - grad / smooth[:, None]
        y = x_next + momentum * (x_next - x)
        x = x_next
    return x


def _dual_lower_bound(net: AffineNetwork, x_hat: Tensor, x0: Tensor, rows: Tensor, eta: Tensor, mu: Tensor) -> Tensor:
    """Rigorous lower bound on d(eta) at the inexact minimiser x_hat."""
    _, grad = _phi_and_grad(net, x_hat, x0, rows, eta)
    logits, err = forward_with_error(net, x_hat)
    margin = (logits * rows).sum(-1)
    margin_err = (err * rows.abs()).sum(-1) + rounding_margin(logits.abs() @ torch.ones(logits.shape[1], dtype=logits.dtype, device=logits.device), logits.shape[1])
    dist2 = ((x_hat - x0) ** 2).sum(-1)
    phi_low = 0.5 * dist2 - rounding_margin(dist2, x0.shape[1]) + eta * (margin - margin_err)
    backprop = rows.abs() @ net.weights[-1].abs()
    for w in reversed(net.weights[:-1]):
        backprop = backprop @ w.abs()
    terms = sum(w.shape[1] for w in net.weights) + 8 * net.depth
    grad_err = rounding_margin(eta[:, None] * backprop + (x_hat - x0).abs() + grad.abs(), terms)
    grad_norm = torch.linalg.vector_norm(grad.abs() + grad_err, dim=-1)
    return phi_low - grad_norm**2 / (2 * mu) * (1 + 8 * UNIT_ROUNDOFF)


def _eta_grid(low: Tensor, points: int) -> Tensor:
    """Grid of eta in (0, 1/max(-m, 0)) per pair [P, points]; a geometric grid up to 1e3 when m >= 0."""
    t = torch.arange(1, points + 1, dtype=torch.float64, device=low.device) / (points + 1)
    cap = 1.0 / (-low).clamp_min(1e-3)
    return cap[:, None] * t[None, :]


def curvature_radius(
    net: AffineNetwork,
    x: Tensor,
    target: int | Tensor | list[int],
    grid: int = 24,
    iterations: int = 300,
) -> BoundResult:
    """Certified l2 radius [N] per example (module docstring): no l2 perturbation smaller than it changes
    the predicted class away from `target`. Softplus networks only (ReLU: a refusal)."""
    method = "curvature-certificate-l2"
    if net.depth < 2:
        return BoundResult.refuse(method, "the curvature certificate needs a network with softplus hidden layers")
    what = "the curvature certificate"
    reason = chain_refusal(net, what) or activation_refusal(net, what, ("softplus",))
    if reason is not None:
        return BoundResult.refuse(method, reason)
    if grid < 2 or iterations < 1:
        raise UsageError("grid must be >= 2 and iterations >= 1")
    device = net.weights[0].device
    x0 = x.detach().reshape(x.shape[0], -1).to(torch.float64).to(device)
    if x0.shape[1] != net.input_size:
        raise UsageError(f"inputs have {x0.shape[1]} features, the network expects {net.input_size}")
    tgt = torch.as_tensor(target, device=device).long().reshape(-1).expand(x0.shape[0])
    if ((tgt < 0) | (tgt >= net.num_classes)).any():
        raise TargetError(f"target out of range [0, {net.num_classes})")
    others, rows = _pairs(tgt, net.num_classes)  # [N, J], [N, J, C]
    n_ex, n_pairs = others.shape
    all_rows = torch.eye(net.num_classes, dtype=torch.float64, device=device)
    pair_rows = (all_rows[:, None, :] - all_rows[None, :, :]).reshape(-1, net.num_classes)
    low_all, high_all = (v[0].reshape(net.num_classes, net.num_classes) for v in hessian_eigen_bounds(net, pair_rows, None))
    low, high = low_all[tgt[:, None], others].reshape(-1), high_all[tgt[:, None], others].reshape(-1)
    flat_rows = rows.reshape(-1, net.num_classes)
    centers = x0.repeat_interleave(n_pairs, dim=0)
    etas = _eta_grid(low, grid)
    best_d = torch.full((n_ex * n_pairs,), -math.inf, dtype=torch.float64, device=device)
    best_eta = torch.zeros_like(best_d)
    for _ in range(2):  # a grid, then a finer grid around its best point
        eta = etas.reshape(-1)
        mu = 1.0 + eta * low.repeat_interleave(grid).clamp_max(0.0)
        smooth = 1.0 + eta * high.repeat_interleave(grid).clamp_min(0.0)
        rep_rows, rep_x0 = flat_rows.repeat_interleave(grid, 0), centers.repeat_interleave(grid, 0)
        x_hat = _inner_minimise(net, rep_x0, rep_rows, eta, mu, smooth, iterations)
        bound = _dual_lower_bound(net, x_hat, rep_x0, rep_rows, eta, mu).reshape(-1, grid)
        value, index = bound.max(dim=1)
        improved = value > best_d
        best_d = torch.where(improved, value, best_d)
        best_eta = torch.where(improved, etas.gather(1, index[:, None])[:, 0], best_eta)
        step = etas[:, 1:2] - etas[:, 0:1]
        t = torch.linspace(-1, 1, grid, dtype=torch.float64, device=device)[None, :]
        cap = 1.0 / (-low).clamp_min(1e-3)
        etas = (best_eta[:, None] + t * step).clamp(min=1e-12)
        etas = torch.minimum(etas, cap[:, None] * (1 - 1e-6))
    pair_radius = (2 * best_d.clamp_min(0.0)).sqrt() * (1 - 4 * UNIT_ROUNDOFF)
    pair_radius = pair_radius.reshape(n_ex, n_pairs)
    logits, err = forward_with_error(net, x0)
    margins = (logits[:, None, :] * rows).sum(-1) - (err[:, None, :] * rows.abs()).sum(-1)
    pair_radius = torch.where(margins > 0, pair_radius, torch.zeros_like(pair_radius))
    radius, closest = pair_radius.min(dim=1)
    return BoundResult(
        radius,
        Kind.CERTIFIED,
        method,
        [
            "l2 perturbations over all of R^n (no input-domain constraint)",
            "softplus network; Hessian eigenvalue bounds of each margin valid globally",
        ],
        witness={
            "classes": others,
            "eta": best_eta.reshape(n_ex, n_pairs),
            "min_eigenvalue_lower": low.reshape(n_ex, n_pairs),
            "max_eigenvalue_upper": high.reshape(n_ex, n_pairs),
        },
        details={"pair_radius": pair_radius, "closest_class": others.gather(1, closest[:, None])[:, 0], "grid": grid, "iterations": iterations},
    )
