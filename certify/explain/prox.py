"""Proximal maps and minimal-norm subgradients of the MoreauGrad penalties (DESIGN section 4.1).

The inner problem of MoreauGrad over the displacement u = z - x is

    F_x(u) = s(u) + eta * P(u),    s(u) = f_c(x + u) + ||u||^2 / (2 rho),

with P = 0 (vanilla), P = ||.||_1 (sparse, paper Definition 4) or P = sum_S ||u_S||_2 over non-overlapping
groups S (group-sparse, the L_{2,1} envelope of Definition 4). This module holds what depends on P:

* the proximal maps (paper Theorem 2 and Algorithm 1's SoftThreshold step):
  soft threshold ST_a(v)_i = sign(v_i) max(|v_i| - a, 0) = prox_{a ||.||_1}(v) and group soft threshold
  GST_a(v)_S = max(0, 1 - a / ||v_S||_2) v_S = prox_{a ||.||_2}(v_S) on each group;
* the minimal-norm element r of the subdifferential of F_x at u, given g = grad s(u) (one gradient):
  vanilla r = g; sparse r_i = g_i + eta sign(u_i) where u_i != 0, else ST_eta(g_i); group-sparse
  r_S = g_S + eta u_S / ||u_S|| where u_S != 0, else GST_eta(g_S) (the distance from g_S to the ball of
  radius eta, since the subdifferential of ||.||_2 at 0 is the unit ball).

Groups (DESIGN section 3): for images [N, C, H, W], `group_size` x `group_size` spatial patches across all
channels; for any other input shape, contiguous blocks of `group_size` entries of the flattened example.
Sizes that the blocks do not divide are refused (UsageError) rather than padded: a padded edge group would
be smaller than the others and be penalised differently, which a user would not expect.

All maps are batched over the first dimension; thresholds may be a float or a per-example tensor [N].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from certify.errors import UsageError

PenaltyKind = Literal["none", "l1", "group"]


def _per_example(a: float | Tensor, like: Tensor) -> float | Tensor:
    """Reshape a per-example threshold [N] so that it broadcasts against `like` [N, ...]."""
    if isinstance(a, Tensor) and a.dim() == 1:
        return a.view((-1,) + (1,) * (like.dim() - 1))
    return a


def soft_threshold(v: Tensor, a: float | Tensor) -> Tensor:
    """ST_a(v) = sign(v) max(|v| - a, 0), the prox of a ||.||_1 (exact zeros below the threshold)."""
    a = _per_example(a, v)
    return torch.sign(v) * torch.clamp(v.abs() - a, min=0.0)


def check_groups(shape: torch.Size | tuple[int, ...], group_size: int) -> None:
    """Refuse an input shape [N, ...] whose size the groups of `group_size` do not divide."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise UsageError(f"group_size must be a positive integer, got {group_size!r}")
    if len(shape) == 4:
        h, w = shape[2], shape[3]
        if h % group_size or w % group_size:
            raise UsageError(
                f"group_size {group_size} does not divide the image size {h}x{w}; "
                "choose a divisor (groups are not padded)"
            )
        return
    size = 1
    for dim in shape[1:]:
        size *= dim
    if size % group_size:
        raise UsageError(
            f"group_size {group_size} does not divide the input size {size}; choose a divisor (groups are not padded)"
        )


def _grouped(v: Tensor, group_size: int) -> tuple[Tensor, tuple[int, ...]]:
    """A view of v in which each group is spanned by the returned dimensions (reduce over them)."""
    n = v.shape[0]
    if v.dim() == 4:
        c, h, w = v.shape[1:]
        return v.reshape(n, c, h // group_size, group_size, w // group_size, group_size), (1, 3, 5)
    return v.reshape(n, -1, group_size), (2,)


def group_norms(v: Tensor, group_size: int) -> Tensor:
    """||v_S||_2 for every group, broadcastable against the grouped view (see `_grouped`)."""
    view, dims = _grouped(v, group_size)
    return view.square().sum(dim=dims, keepdim=True).sqrt()


def group_soft_threshold(v: Tensor, a: float | Tensor, group_size: int) -> Tensor:
    """GST_a(v)_S = max(0, 1 - a/||v_S||_2) v_S on every group S, the prox of a sum_S ||.||_2."""
    check_groups(v.shape, group_size)
    view, dims = _grouped(v, group_size)
    norms = view.square().sum(dim=dims, keepdim=True).sqrt()
    a = _per_example(a, norms)
    scale = torch.clamp(1.0 - a / torch.clamp(norms, min=torch.finfo(v.dtype).tiny), min=0.0)
    return (view * scale).reshape(v.shape)


@dataclass(frozen=True)
class Penalty:
    """The penalty P of the MoreauGrad inner problem: "none", "l1" or "group" (with `group_size`)."""

    kind: PenaltyKind = "none"
    group_size: int | None = None

    def __post_init__(self) -> None:
        if self.kind == "group" and self.group_size is None:
            raise UsageError("a group penalty needs group_size")

    def prox(self, v: Tensor, threshold: float | Tensor) -> Tensor:
        """prox_{threshold * P}(v)."""
        if self.kind == "l1":
            return soft_threshold(v, threshold)
        if self.kind == "group":
            return group_soft_threshold(v, threshold, self.group_size)
        return v

    def value(self, u: Tensor) -> Tensor:
        """P(u) per example, shape [N]."""
        if self.kind == "l1":
            return u.abs().flatten(1).sum(dim=1)
        if self.kind == "group":
            return group_norms(u, self.group_size).flatten(1).sum(dim=1)
        return u.new_zeros(u.shape[0])

    def subgradient_choice(self, g: Tensor, u: Tensor, eta: float) -> Tensor:
        """The element eta * xi of eta * dP(u) that minimises ||g + eta * xi||; the minimal-norm subgradient
        of F_x at u is g + eta * xi when g = grad s(u) (see the module docstring)."""
        if self.kind == "l1":
            # u_i != 0: xi_i = sign(u_i); u_i == 0: xi_i = -clip(g_i/eta, -1, 1), i.e. g_i + eta xi_i = ST_eta(g_i)
            free = soft_threshold(g, eta) - g
            return torch.where(u != 0, eta * torch.sign(u), free)
        if self.kind == "group":
            gu, dims = _grouped(u, self.group_size)
            gg, _ = _grouped(g, self.group_size)
            u_norm = gu.square().sum(dim=dims, keepdim=True).sqrt()
            g_norm = gg.square().sum(dim=dims, keepdim=True).sqrt()
            tiny = torch.finfo(u.dtype).tiny
            on_support = eta * gu / torch.clamp(u_norm, min=tiny)
            # u_S == 0: xi_S = -proj_{ball eta}(g_S) / eta, so that g_S + eta xi_S = GST_eta(g_S)
            off_support = -gg * torch.clamp(eta / torch.clamp(g_norm, min=tiny), max=1.0)
            return torch.where(u_norm > 0, on_support, off_support).reshape(u.shape)
        return torch.zeros_like(g)

    def minimal_subgradient(self, g: Tensor, u: Tensor, eta: float) -> Tensor:
        """r = the minimal-norm element of g + eta * dP(u), where g = grad s(u) (DESIGN section 4.1)."""
        if self.kind == "none":
            return g
        return g + self.subgradient_choice(g, u, eta)
