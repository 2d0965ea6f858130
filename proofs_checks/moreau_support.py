"""Shared pieces of the MoreauGrad theorem rows: closed-form score modules, exact curvature constants of
one-hidden-layer softplus networks, and float64 reference solves. Not a theorem row itself."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from certify.bounds.network import from_module
from certify.certificates.issuers.common import unit_row
from certify.certificates.issuers.moreaugrad import exact_solver_error
from certify.explain.base import Explanation
from certify.explain.moreaugrad import MoreauGrad
from proofs_checks.nets import NetSpec


class QuadraticScore(nn.Module):
    """f(x) = 1/2 x^T A x + w^T x as a one-logit classifier (A symmetric), for closed-form envelopes."""

    def __init__(self, a: Tensor, w: Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a)
        self.register_buffer("w", w)

    def forward(self, x: Tensor) -> Tensor:
        return (0.5 * (x * (x @ self.a)).sum(dim=1) + x @ self.w).unsqueeze(1)


def one_hidden_curvature(net: nn.Sequential, c: int, beta: float) -> tuple[float, float]:
    """(lambda, beta_up) of f_c for a softplus network Linear -> Softplus(beta) -> Linear, in float64.

    The Hessian is W1^T diag(v * s''(W1 x + b1)) W1 with v = W2[c] and s'' in (0, beta/4], so
    W1^T diag(min(v, 0) beta/4) W1 <= Hessian <= W1^T diag(max(v, 0) beta/4) W1 everywhere: lambda (weak
    convexity) = max(0, -lambda_min) of the first, beta_up (upper curvature) = max(0, lambda_max) of the second."""
    w1, v = net[0].weight.detach().double(), net[2].weight.detach().double()[c]
    lower = w1.T @ torch.diag(torch.clamp(v, max=0.0) * beta / 4.0) @ w1
    upper = w1.T @ torch.diag(torch.clamp(v, min=0.0) * beta / 4.0) @ w1
    lam = max(0.0, -float(torch.linalg.eigvalsh(lower)[0]))
    beta_up = max(0.0, float(torch.linalg.eigvalsh(upper)[-1]))
    return lam, beta_up


def rho_below(lam: float, fraction: float, cap: float = 1.0) -> float:
    """A rho with rho * lambda = fraction < 1 (capped), so that F_x is strongly convex."""
    return cap if lam * cap <= fraction else fraction / lam


def reference(model: nn.Module, x: Tensor, target: int, rho: float, sparsity: float = 0.0,
              group_size: int | None = None, tol: float = 1e-11):
    """A float64 accelerated solve to residual `tol` (the reference z*, up to ||r|| / (1/rho - lambda))."""
    solver = MoreauGrad(model, rho=rho, sparsity=sparsity, group_size=group_size, tol=tol, max_iter=20000)
    return solver, solver.explain(x, target)


def solver_errors(model: nn.Module, solver: MoreauGrad, explanation: Explanation, lam: float) -> Tensor:
    """Per example, the value the certificate's solver-error claim gets (`exact_solver_error`, which the
    MoreauGrad issuer calls; formula `certify.bounds.stability.solver_error`) for lambda = `lam`: a bound on
    ||MG_computed - MG_exact|| for the model's exact translation N (inf for a diverged example)."""
    d = explanation.diagnostics
    x, z = d["inputs"], d["z"]
    net = from_module(model, tuple(x.shape[1:])).to("cpu")
    classes = net.weights[-1].shape[0]
    return torch.tensor([
        float("inf") if bool(d["diverged"][i]) else
        exact_solver_error(net, unit_row(classes, int(explanation.target[i])), solver, x[i : i + 1], z[i : i + 1],
                           explanation.attributions[i : i + 1], lam)
        for i in range(x.shape[0])
    ], dtype=torch.float64)


def envelope_values(model: nn.Module, x: Tensor, z: Tensor, target: int, solver: MoreauGrad) -> Tensor:
    """F_x(z) = f_c(z) + ||z - x||^2/(2 rho) + eta P(z - x) per row: the envelope value at the solver's z."""
    with torch.no_grad():
        u = z - x
        score = model(z)[:, target]
        return score + u.flatten(1).square().sum(dim=1) / (2 * solver.rho) + solver.sparsity * solver.penalty.value(u)


def envelope_directional_derivatives(
    model: nn.Module, x: Tensor, directions: Tensor, target: int, rho: float, sparsity: float = 0.0,
    step: float = 1e-4,
) -> Tensor:
    """Central differences (e(x + h d) - e(x - h d)) / (2h) of the envelope value e along unit `directions`
    [D, n] at the single point x [1, n], from float64 reference solves at the 2D shifted points."""
    shifted = torch.cat([x + step * directions, x - step * directions])
    solver, explanation = reference(model, shifted, target, rho, sparsity)
    values = envelope_values(model, shifted, explanation.diagnostics["z"], target, solver)
    d = directions.shape[0]
    return (values[:d] - values[d:]) / (2 * step)


@dataclass
class SlopeCase:
    """A random point x on a random softplus net, the envelope's finite-difference slopes along unit
    directions, and the reference solve at x itself."""

    rho: float
    lam: float
    net: nn.Module
    center: Explanation
    directions: Tensor
    slopes: Tensor

    def describe(self, spec: NetSpec) -> str:
        return f"{spec}, rho={self.rho:.4g}, lambda={self.lam:.4g}"


def envelope_slope_case(spec: NetSpec, fraction: float, seed: int, sparsity: float = 0.0, directions: int = 3) -> SlopeCase:
    """Build the net of `spec`, take rho = fraction/lambda (capped at 1), a random x and unit directions,
    and return the finite-difference slopes of the (sparse) envelope there with the solve at x."""
    net = spec.build()
    lam, _ = one_hidden_curvature(net, 0, spec.beta)
    rho = rho_below(lam, fraction)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, spec.inputs, generator=gen, dtype=torch.float64)
    d = torch.randn(directions, spec.inputs, generator=gen, dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True)
    _, center = reference(net, x, 0, rho, sparsity)
    slopes = envelope_directional_derivatives(net, x, d, 0, rho, sparsity)
    return SlopeCase(rho, lam, net, center, d, slopes)


def one_hidden_hessian(net: nn.Sequential, c: int, beta: float, z: Tensor) -> Tensor:
    """Hessian of f_c at z [n] for Linear -> Softplus(beta) -> Linear: W1^T diag(v * s''(W1 z + b1)) W1 with
    s''(t) = beta sigmoid(beta t)(1 - sigmoid(beta t))."""
    w1, b1, v = net[0].weight.detach(), net[0].bias.detach(), net[2].weight.detach()[c]
    sig = torch.sigmoid(beta * (w1 @ z + b1))
    return w1.T @ torch.diag(v * beta * sig * (1 - sig)) @ w1
