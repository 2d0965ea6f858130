"""Input sets for bound propagation: an Lp ball (p = 1, 2, inf) around each example, intersected with
the input domain box when one is given.

    S = {x : ||x - x0||_p <= eps} intersected with {lo <= x <= hi}.

Every bound method needs two things from S, both batched over examples:

* an outer box `[l, u]` containing S (exact for p = inf: max(x0 - eps, lo), min(x0 + eps, hi));
* the lower support `min_{x in S} a^T x` for linear functions a. For the ball alone it is
  `a^T x0 - eps ||a||_q` (Hoelder, q the dual norm); for the box alone `sum_j min(a_j l_j, a_j u_j)`. The
  intersection lies in both sets, so the larger of the two is a valid lower bound (exact for p = inf,
  where the box already is S).

Floating point: `outward` widens a computed value by a bound on its rounding error (gamma_n |terms|,
Higham's gamma_n = n u / (1 - n u), doubled as a margin), so box and support values are rigorous.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from certify.errors import InvalidInputError, UnsupportedError, UsageError

UNIT_ROUNDOFF = 2.0**-53
NORMS = (1.0, 2.0, math.inf)


def norm_order(p: float | int | str) -> float:
    """p as a float in {1, 2, inf}; anything else raises UnsupportedError."""
    value = math.inf if p in ("inf", "linf", "Linf") else float(p)
    if value not in NORMS:
        raise UnsupportedError(f"norm p={p!r} is not supported; choose 1, 2 or inf")
    return value


def dual_order(p: float) -> float:
    return {1.0: math.inf, 2.0: 2.0, math.inf: 1.0}[p]


def rounding_margin(magnitude: Tensor, terms: int) -> Tensor:
    """2 gamma_n * magnitude: twice the worst-case float64 error of a sum of `terms` products whose
    absolute values sum to `magnitude` (plus a floor for underflow)."""
    n = terms + 2
    gamma = n * UNIT_ROUNDOFF / (1.0 - n * UNIT_ROUNDOFF)
    return 2.0 * gamma * magnitude + 1e-300


@dataclass
class InputSet:
    """Per-example sets {x : ||x - center||_p <= eps} (intersected with [lo, hi] when given).

    center [N, n] float64, eps [N] float64, lo/hi [n] float64 or None."""

    center: Tensor
    eps: Tensor
    p: float
    lo: Tensor | None = None
    hi: Tensor | None = None

    @classmethod
    def build(
        cls,
        x: Tensor,
        eps: float | Tensor,
        p: float | int | str,
        domain: tuple[Tensor, Tensor] | None = None,
    ) -> "InputSet":
        """Flatten x [N, ...] to float64 [N, n]; eps a float or [N]; domain (lo, hi) broadcastable to one example."""
        order = norm_order(p)
        center = x.detach().reshape(x.shape[0], -1).to(torch.float64)
        if not torch.isfinite(center).all():
            raise InvalidInputError("inputs contain NaN or Inf")
        radius = torch.as_tensor(eps, dtype=torch.float64, device=center.device).reshape(-1)
        radius = radius.expand(center.shape[0]).clone() if radius.numel() == 1 else radius
        if radius.shape != (center.shape[0],):
            raise UsageError(f"eps must be a scalar or have one entry per example, got shape {tuple(radius.shape)}")
        if not (torch.isfinite(radius).all() and (radius >= 0).all()):
            raise UsageError("eps must be finite and >= 0")
        lo = hi = None
        if domain is not None:
            shape = x.shape[1:]
            lo, hi = (
                torch.as_tensor(d, dtype=torch.float64, device=center.device).expand(shape).reshape(-1).clone()
                for d in domain
            )
            if (lo > hi).any():
                raise UsageError("domain lower bound exceeds its upper bound")
            if ((center < lo) | (center > hi)).any():
                raise InvalidInputError("an input lies outside the input domain")
        return cls(center, radius, order, lo, hi)

    @property
    def size(self) -> int:
        return self.center.shape[1]

    def with_eps(self, eps: Tensor) -> "InputSet":
        return InputSet(self.center, eps, self.p, self.lo, self.hi)

    def box(self) -> tuple[Tensor, Tensor]:
        """Outer box [l, u] of the set, [N, n], rounded outwards."""
        e = self.eps[:, None]
        slack = rounding_margin(self.center.abs() + e, 1)
        lower, upper = self.center - e - slack, self.center + e + slack
        if self.lo is not None:
            lower, upper = torch.maximum(lower, self.lo), torch.minimum(upper, self.hi)
        return lower, upper

    def lower_support(self, a: Tensor) -> Tensor:
        """Rigorous lower bound on min_{x in S} a^T x for a [N, m, n] (one row per linear function): [N, m]."""
        lower, upper = self.box()
        lower, upper = lower[:, None, :], upper[:, None, :]
        box_terms = torch.minimum(a * lower, a * upper)
        box_value = box_terms.sum(-1)
        box_value = box_value - rounding_margin(box_terms.abs().sum(-1), self.size)
        if self.p == math.inf:
            return box_value
        center_terms = a * self.center[:, None, :]
        dual = torch.linalg.vector_norm(a, ord=dual_order(self.p), dim=-1)
        magnitude = center_terms.abs().sum(-1) + self.eps[:, None] * dual
        ball_value = center_terms.sum(-1) - self.eps[:, None] * dual - rounding_margin(magnitude, self.size + 2)
        return torch.maximum(ball_value, box_value) if self.lo is not None else ball_value

    def contains(self, points: Tensor, atol: float = 0.0) -> Tensor:
        """Whether points [N, n] (one per example) lie in the set, up to atol."""
        dist = torch.linalg.vector_norm(points - self.center, ord=self.p, dim=-1)
        inside = dist <= self.eps + atol
        if self.lo is not None:
            inside &= ((points >= self.lo - atol) & (points <= self.hi + atol)).all(-1)
        return inside

    def describe(self) -> str:
        p = "inf" if self.p == math.inf else str(int(self.p))
        text = f"input in the L{p} ball of radius eps around x"
        return text + (" intersected with the input domain box" if self.lo is not None else "")
