"""The regulariser a learned proximal network implies, with a certified interval (Fang, Buchanan & Sulam, ICLR 2024,
arXiv 2310.14344, section 3.1 (Proposition 3.1 / the R recovery formula) and Appendix; ANCHORS 5.1).

If f = grad psi with psi convex, f is the proximal operator of R(x) = psi^*(x) - ||x||^2/2 on the range of f
(Gribonval & Nikolova 2020), i.e.

    R(x) = <y*, x> - ||x||^2/2 - psi(y*),    y* = argmin_y phi(y),   phi(y) = psi(y) - <x, y>,

so R(x) = -||x||^2/2 - min phi. The minimisation is a convex problem, solved here in float64 by a batched
L-BFGS (per-example two-loop recursion and Armijo backtracking), stopped when ||grad psi(y) - x|| <= tol.

Certified interval (for any point y_hat the solver stops at):

* lower: min phi <= phi(y_hat), so R(x) >= -||x||^2/2 - phi(y_hat) (always valid, whatever alpha);
* upper: if psi is alpha-strongly convex (alpha > 0, e.g. an LPN with its (alpha/2)||y||^2 term), so is phi, and
  min phi >= phi(y_hat) - ||grad phi(y_hat)||^2/(2 alpha), so R(x) <= -||x||^2/2 - phi(y_hat) + ||f(y_hat) - x||^2/(2 alpha).
  With alpha = 0 no upper end is certified (`upper` is None, `upper_reason` says why): psi is then not certified
  strongly convex, and R may even be +inf off the range of f.

Floating point: psi is evaluated in float64 by ordinary arithmetic, not interval arithmetic. The interval is widened
by `EVAL_RTOL` (1e-10) times the magnitude of the terms (|psi(y_hat)| + |<x, y_hat>| + ||x||^2/2) and the gradient
norm by `EVAL_RTOL` (||f(y_hat)|| + ||x||), then rounded outward (`certify.vocabulary.round_down/round_up`): valid
provided the float64 evaluation of psi and its gradient is accurate to that relative slack (a documented
assumption, comfortably met by small networks: their float64 rounding error is ~1e-14 relative).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from certify.errors import InvalidInputError, UsageError
from certify.vocabulary import round_down, round_up

EVAL_RTOL = 1e-10


@dataclass
class RegulariserResult:
    """R(x) for a batch: value (the estimate -||x||^2/2 - phi(y_hat)), the certified interval [lower, upper]
    (upper None with `upper_reason` when alpha = 0), y_star (the solver's minimiser, shape of x), residual
    ||f(y_star) - x|| per example, iterations (of the batched solver) and converged (residual <= tol). All [B]
    float64 tensors except y_star ([B, ...]) and iterations (int)."""

    value: Tensor
    lower: Tensor
    upper: Tensor | None
    y_star: Tensor
    residual: Tensor
    iterations: int
    converged: Tensor
    upper_reason: str = ""


def _float64(model: Any) -> Any:
    """A float64 copy of an nn.Module (the caller's model is untouched); other objects are used as they are."""
    if isinstance(model, nn.Module):
        return copy.deepcopy(model).double().eval()
    return model


def _value_and_grad(model: Any, x: Tensor, y: Tensor, shape: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """phi(y) = psi(y) - <x, y> [B], its gradient f(y) - x [B, n] and psi(y) [B], for flat y, x [B, n]; psi sees y as [B, *shape]."""
    with torch.enable_grad():
        leaf = y.detach().requires_grad_(True)
        psi = model.psi(leaf.reshape(x.shape[0], *shape))
        if psi.shape != (x.shape[0],):
            raise InvalidInputError(f"psi must return one value per example ([B]), got shape {tuple(psi.shape)}")
        (grad,) = torch.autograd.grad(psi.sum(), leaf)
    psi = psi.detach()
    return psi - (x * y).sum(dim=1), grad.detach() - x, psi


def _direction(grad: Tensor, s_hist: Tensor, y_hist: Tensor, rho: Tensor) -> Tensor:
    """Per-example L-BFGS two-loop recursion: -H grad, with history [m, B, n] (rho = 0 marks an empty slot)."""
    q = grad.clone()
    m = s_hist.shape[0]
    a = torch.zeros(m, grad.shape[0], dtype=grad.dtype, device=grad.device)
    for i in range(m - 1, -1, -1):  # newest first (slot m-1 is the newest)
        a[i] = rho[i] * (s_hist[i] * q).sum(dim=1)
        q = q - a[i, :, None] * y_hist[i]
    # initial scaling s^T y / y^T y of the newest valid pair (1 where none)
    sy = (s_hist[-1] * y_hist[-1]).sum(dim=1)
    yy = (y_hist[-1] * y_hist[-1]).sum(dim=1)
    scale = torch.where((rho[-1] > 0) & (yy > 0), sy / torch.where(yy > 0, yy, torch.ones_like(yy)), torch.ones_like(yy))
    r = scale[:, None] * q
    for i in range(m):
        b = rho[i] * (y_hist[i] * r).sum(dim=1)
        r = r + (a[i] - b)[:, None] * s_hist[i]
    return -r


def regulariser(
    model: Any,
    x: Tensor,
    tol: float = 1e-9,
    max_iter: int = 500,
    history: int = 20,
    y0: Tensor | None = None,
    alpha: float | None = None,
) -> RegulariserResult:
    """R(x) = <y*, x> - ||x||^2/2 - psi(y*) with a certified interval, for a batch x [B, ...].

    Args:
        model: an object with `psi(y)` ([B, ...] -> [B], convex in y, differentiable by autograd) and an attribute
            `alpha` >= 0, the certified strong-convexity modulus of psi (an `LPN`, or any object so built).
            An nn.Module is copied to float64; the caller's model is not modified.
        x: [B, ...] points (the shape psi expects for one batch).
        tol: stop when ||f(y) - x||_2 <= tol for every example (f = grad psi).
        max_iter: solver iterations (0 evaluates the interval at the starting point).
        history: L-BFGS memory.
        y0: starting point (default x); any point gives a valid interval, a worse one a wider interval.
        alpha: override of model.alpha (must not exceed it to stay certified; None = model.alpha).

    Returns a `RegulariserResult`. Raises UsageError for bad parameters (tol <= 0, max_iter < 0, alpha < 0),
    InvalidInputError for non-finite or badly shaped x."""
    if not (tol > 0) or max_iter < 0 or history < 1:
        raise UsageError(f"regulariser needs tol > 0, max_iter >= 0 and history >= 1 (got {tol}, {max_iter}, {history})")
    if not hasattr(model, "psi"):
        raise UsageError("regulariser needs a model with psi(y) (a learned proximal network)")
    alpha = float(getattr(model, "alpha", 0.0) if alpha is None else alpha)
    if not (alpha >= 0 and math.isfinite(alpha)):
        raise UsageError(f"alpha must be finite and >= 0, got {alpha}")
    if x.dim() < 2 or x.shape[0] < 1:
        raise InvalidInputError(f"x must be [B, ...] with B >= 1, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise InvalidInputError("x contains NaN or Inf")
    work = _float64(model)
    shape, batch = tuple(x.shape[1:]), x.shape[0]
    xf = x.detach().to(torch.float64).reshape(batch, -1)
    y = (xf.clone() if y0 is None else y0.detach().to(torch.float64).reshape(batch, -1).clone())
    if y.shape != xf.shape or not torch.isfinite(y).all():
        raise InvalidInputError(f"y0 must be finite with the shape of x, got {tuple(y0.shape) if y0 is not None else None}")
    n = xf.shape[1]
    s_hist = torch.zeros(history, batch, n, dtype=torch.float64, device=xf.device)
    y_hist = torch.zeros_like(s_hist)
    rho = torch.zeros(history, batch, dtype=torch.float64, device=xf.device)
    phi, grad, psi = _value_and_grad(work, xf, y, shape)
    iterations = 0
    for iterations in range(1, max_iter + 1):
        active = grad.norm(dim=1) > tol
        if not bool(active.any()):
            iterations -= 1
            break
        d = _direction(grad, s_hist, y_hist, rho)
        slope = (d * grad).sum(dim=1)
        bad = ~(slope < 0) | ~torch.isfinite(slope)
        d = torch.where(bad[:, None], -grad, d)
        slope = torch.where(bad, -(grad * grad).sum(dim=1), slope)
        step = torch.where(active, torch.ones_like(slope), torch.zeros_like(slope))
        new_phi, new_grad, new_psi = phi, grad, psi
        pending = active.clone()
        for _ in range(60):  # Armijo backtracking, per example
            trial = y + step[:, None] * d
            t_phi, t_grad, t_psi = _value_and_grad(work, xf, trial, shape)
            armijo = t_phi <= phi + 1e-4 * step * slope
            # at float64 resolution phi cannot show the decrease: accept a step that reduces the gradient norm
            flat = (t_phi - phi).abs() <= 1e-13 * (phi.abs() + psi.abs() + 1.0)
            ok = pending & torch.isfinite(t_phi) & (armijo | (flat & (t_grad.norm(dim=1) < grad.norm(dim=1))))
            new_phi = torch.where(ok, t_phi, new_phi)
            new_grad = torch.where(ok[:, None], t_grad, new_grad)
            new_psi = torch.where(ok, t_psi, new_psi)
            pending = pending & ~ok
            if not bool(pending.any()):
                break
            step = torch.where(pending, step / 2, step)
        moved = active & ~pending
        s = torch.where(moved[:, None], step[:, None] * d, torch.zeros_like(d))
        dy = new_grad - grad
        curvature = (s * dy).sum(dim=1)
        keep = moved & (curvature > 1e-20 * (s * s).sum(dim=1).sqrt() * dy.norm(dim=1))
        if bool(keep.any()):
            s_hist = torch.cat([s_hist[1:], torch.where(keep[:, None], s, s_hist[-1])[None]])
            y_hist = torch.cat([y_hist[1:], torch.where(keep[:, None], dy, y_hist[-1])[None]])
            rho = torch.cat([rho[1:], torch.where(keep, 1.0 / torch.where(keep, curvature, torch.ones_like(curvature)), rho[-1])[None]])
        y = y + s
        phi, grad, psi = new_phi, new_grad, new_psi
        if not bool(moved.any()):
            break  # no example can make progress any more (at float64 resolution)
    half_sq = 0.5 * (xf * xf).sum(dim=1)
    value = -half_sq - phi
    residual = grad.norm(dim=1)
    magnitude = psi.abs() + (xf * y).sum(dim=1).abs() + half_sq
    slack = EVAL_RTOL * magnitude
    lower = torch.tensor([round_down(v) for v in (value - slack).tolist()], dtype=torch.float64, device=xf.device)
    upper: Tensor | None = None
    reason = ""
    if alpha > 0:
        f_norm = (grad + xf).norm(dim=1)
        res_up = residual + EVAL_RTOL * (f_norm + xf.norm(dim=1))
        gap = res_up * res_up / (2 * alpha)
        upper = torch.tensor([round_up(v) for v in (value + slack + gap).tolist()], dtype=torch.float64,
                             device=xf.device)
    else:
        reason = "alpha = 0: psi is not certified strongly convex, so min phi has no certified lower bound"
    return RegulariserResult(value=value, lower=lower, upper=upper, y_star=y.reshape(batch, *shape),
                             residual=residual, iterations=iterations, converged=residual <= tol, upper_reason=reason)


# ------------------------------------------------------------------------------------------ closed-form oracles


class QuadraticPotential(nn.Module):
    """psi(y) = (a/2)||y||^2 (a > 0): f(y) = a y, R(x) = (1/(2a) - 1/2)||x||^2 (ANCHORS 5.1); alpha = a."""

    def __init__(self, a: float) -> None:
        super().__init__()
        if not (a > 0 and math.isfinite(a)):
            raise UsageError(f"QuadraticPotential needs a > 0, got {a}")
        self.a = self.alpha = float(a)

    def psi(self, y: Tensor) -> Tensor:
        flat = y.reshape(y.shape[0], -1)
        return 0.5 * self.a * (flat * flat).sum(dim=1)

    def forward(self, y: Tensor) -> Tensor:
        return self.a * y

    def exact(self, x: Tensor) -> Tensor:
        """R(x) [B] in closed form."""
        flat = x.reshape(x.shape[0], -1)
        return (0.5 / self.a - 0.5) * (flat * flat).sum(dim=1)


class SoftThresholdPotential(nn.Module):
    """psi(y) = sum_i 1/2 (|y_i| - lam)_+^2 + (alpha/2)||y||^2 (lam >= 0, alpha >= 0): f(y) = ST_lam(y) + alpha y.

    alpha = 0: f is soft thresholding and R(x) = lam ||x||_1 (ANCHORS 5.1). alpha > 0 (certified alpha-strongly
    convex): per coordinate, with x = f(y), R(x) = x^2/(2 alpha) - x^2/2 for |x| <= alpha lam, and otherwise
    R(x) = |x| u - 1/2 (u - lam)^2 - alpha u^2/2 - x^2/2 with u = (|x| + lam)/(1 + alpha)."""

    def __init__(self, lam: float, alpha: float = 0.0) -> None:
        super().__init__()
        if not (lam >= 0 and math.isfinite(lam)) or not (alpha >= 0 and math.isfinite(alpha)):
            raise UsageError(f"SoftThresholdPotential needs lam >= 0 and alpha >= 0, got {lam}, {alpha}")
        self.lam, self.alpha = float(lam), float(alpha)

    def psi(self, y: Tensor) -> Tensor:
        flat = y.reshape(y.shape[0], -1)
        excess = torch.clamp(flat.abs() - self.lam, min=0.0)
        return 0.5 * (excess * excess).sum(dim=1) + 0.5 * self.alpha * (flat * flat).sum(dim=1)

    def forward(self, y: Tensor) -> Tensor:
        return torch.sign(y) * torch.clamp(y.abs() - self.lam, min=0.0) + self.alpha * y

    def exact(self, x: Tensor) -> Tensor:
        """R(x) [B] in closed form."""
        flat = x.reshape(x.shape[0], -1).abs()
        if self.alpha == 0:
            return self.lam * flat.sum(dim=1)
        inner = flat * flat / (2 * self.alpha) - flat * flat / 2
        u = (flat + self.lam) / (1 + self.alpha)
        outer = flat * u - 0.5 * (u - self.lam) ** 2 - 0.5 * self.alpha * u * u - flat * flat / 2
        return torch.where(flat <= self.alpha * self.lam, inner, outer).sum(dim=1)
