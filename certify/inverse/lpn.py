"""Learned proximal networks (Fang, Buchanan & Sulam, ICLR 2024, arXiv 2310.14344, section 3; the Sulam talk
"What did my model learn?", Part I; ANCHORS 5.1).

psi is an input-convex network of y in R^n (shapes: y is [B, n] or [B, *shape] with prod(shape) = n):

    z_1     = s(W_0 y + b_0)                          W_0 free
    z_{k+1} = s(W_k z_k + H_k y + b_k),  k = 1..K-1   W_k >= 0 (projected after every optimiser step), H_k free
    psi(y)  = w^T z_K + h^T y + c + (alpha/2) ||y||^2  w >= 0, alpha >= 0

with s(t) = log(1 + exp(beta t)) / beta, the softplus of sharpness beta, computed as logaddexp(beta t, 0)/beta:
exactly convex and non-decreasing, with NO linear threshold (torch's nn.Softplus switches to the identity at
beta t > 20, a jump of about 2e-9/beta that makes the computed psi neither convex nor monotone there).
The denoiser is f(y) = grad psi(y), by autograd. By Gribonval & Nikolova (2020, Corollary 1), a gradient
of a convex lsc function is the proximal operator of some (possibly nonconvex) R:
f(y) in argmin_x 1/2 ||y - x||^2 + R(x); with alpha > 0, psi is alpha-strongly convex and f is onto R^n.

Conventions vs the public code (ZhenghanFang/learned-proximal-networks at cbc3cfa): the code adds
alpha ||y||^2 (f gains 2 alpha y); here, as in the talk, the term is (alpha/2) ||y||^2 (f gains alpha y).
The code initialises the non-negative weights as exp(N(-10, 0.1)); so does `reset_parameters` here.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from certify.errors import InvalidInputError, UsageError


class _Softplus(torch.autograd.Function):
    """log(1 + exp(beta t)) / beta by logaddexp, with the derivative sigmoid(beta t) written out: autograd's own
    second derivative of logaddexp is NaN for beta t below about -88 (float32; -745 in float64), and training
    differentiates f = grad psi once more."""

    @staticmethod
    def forward(ctx, t: Tensor, beta: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(t)
        ctx.beta = beta
        return torch.logaddexp(beta * t, torch.zeros((), dtype=t.dtype, device=t.device)) / beta

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (t,) = ctx.saved_tensors
        return grad * torch.sigmoid(ctx.beta * t), None


def softplus(t: Tensor, beta: float) -> Tensor:
    """log(1 + exp(beta t)) / beta without a threshold (convex, non-decreasing, smooth); same shape as t; twice
    differentiable by autograd at every finite t."""
    return _Softplus.apply(t, beta)


class LPN(nn.Module):
    """A learned proximal network: `psi(y)` [B] is convex in y; `forward(y)` = grad psi(y), shape of y.

    Args:
        dim: n, the number of features of one input.
        hidden: width of every hidden layer.
        layers: K >= 1, the number of hidden layers.
        beta: softplus sharpness (> 0); the paper uses 10.
        alpha: weight of the strongly convex term (alpha/2)||y||^2 (>= 0); alpha > 0 makes f onto and is an
            assumption of the PnP convergence theorem.

    Raises UsageError for a non-positive dim/hidden/layers/beta or a negative alpha."""

    def __init__(self, dim: int, hidden: int = 64, layers: int = 4, beta: float = 10.0, alpha: float = 0.0) -> None:
        super().__init__()
        if dim < 1 or hidden < 1 or layers < 1:
            raise UsageError(f"LPN needs dim, hidden and layers >= 1 (got {dim}, {hidden}, {layers})")
        if not (beta > 0 and math.isfinite(beta)) or not (alpha >= 0 and math.isfinite(alpha)):
            raise UsageError(f"LPN needs beta > 0 and alpha >= 0, finite (got beta={beta}, alpha={alpha})")
        self.dim, self.hidden, self.layers = int(dim), int(hidden), int(layers)
        self.beta, self.alpha = float(beta), float(alpha)
        self.first = nn.Linear(dim, hidden)  # W_0, b_0 (free)
        self.convex = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(layers - 1))  # W_k >= 0
        self.skips = nn.ModuleList(nn.Linear(dim, hidden) for _ in range(layers - 1))  # H_k, b_k (free)
        self.out = nn.Linear(hidden, 1, bias=False)  # w >= 0
        self.out_skip = nn.Linear(dim, 1)  # h, c (free)
        self.reset_parameters()

    def constrained(self) -> list[tuple[str, Tensor]]:
        """The weights that must be non-negative for psi to be convex: (name, parameter) pairs."""
        named = [(f"convex.{k}.weight", layer.weight) for k, layer in enumerate(self.convex)]
        return named + [("out.weight", self.out.weight)]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Free layers: torch's default initialisation; non-negative weights: exp(N(-10, 0.1)) as the code."""
        for layer in [self.first, self.out_skip, *self.skips]:
            layer.reset_parameters()
        for _, weight in self.constrained():
            weight.copy_(torch.exp(torch.randn_like(weight) * 0.1 - 10.0))

    @torch.no_grad()
    def project_(self) -> None:
        """Clamp the constrained weights at 0 (called after every optimiser step)."""
        for _, weight in self.constrained():
            weight.clamp_(min=0.0)

    def _flat(self, y: Tensor) -> Tensor:
        if y.dim() < 2 or y[0].numel() != self.dim:
            raise InvalidInputError(f"LPN of dim {self.dim} expects inputs [B, ...] with {self.dim} features each, "
                                    f"got shape {tuple(y.shape)}")
        return y.reshape(y.shape[0], self.dim)

    def psi(self, y: Tensor) -> Tensor:
        """psi(y) for a batch: y [B, ...] -> [B] (differentiable)."""
        flat = self._flat(y)
        z = softplus(self.first(flat), self.beta)
        for convex, skip in zip(self.convex, self.skips):
            z = softplus(convex(z) + skip(flat), self.beta)
        value = self.out(z).squeeze(1) + self.out_skip(flat).squeeze(1)
        if self.alpha:
            value = value + 0.5 * self.alpha * (flat * flat).sum(dim=1)
        return value

    def forward(self, y: Tensor) -> Tensor:
        """f(y) = grad psi(y), [B, ...] -> same shape. Differentiable (create_graph) when grad mode is on, so
        training and Jacobian evidence can back-propagate through it; a plain evaluation under no_grad."""
        keep_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            inner = y if (keep_graph and y.requires_grad) else y.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.psi(inner).sum(), inner, create_graph=keep_graph)
        return grad if keep_graph else grad.detach()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, hidden={self.hidden}, layers={self.layers}, beta={self.beta:g}, alpha={self.alpha:g}"
