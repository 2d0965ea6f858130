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

from certify.errors import InvalidInputError, UsageError
from certify.vocabulary import dual_norm, norm_name, parse_norm

UNIT_ROUNDOFF = 2.0**-53


def rounding_margin(magnitude: Tensor, terms: int) -> Tensor:
    """2 gamma_n * magnitude: twice the worst-case float64 error of a sum of `terms` products whose
    absolute values sum to `magnitude` (plus a floor for underflow)."""
    n = terms + 2
    gamma = n * UNIT_ROUNDOFF / (1.0 - n * UNIT_ROUNDOFF)
    return 2.0 * gamma * magnitude + 1e-300


def dual_norm_of(a: Tensor, q: float) -> Tensor:
    """||a||_q over the last axis [...], computed on a divided by the power of two 2^e nearest its largest
    entry (exact; e clamped to [-1000, 1000]) so that the squares of the 2-norm neither underflow nor
    overflow: torch's vector_norm does not scale (entries of 1e-170 give 0, and the support a^T x0 - eps ||a||
    would then drop eps). The squares lost below the normal range are then < n 2^-1022 against a sum
    >= 1/4, and a norm below 2^-1021 (rounded, or flushed, there) is raised to 2^-1020."""
    top = a.abs().amax(-1, keepdim=True)
    _, exponent = torch.frexp(torch.where((top > 0) & torch.isfinite(top), top, torch.ones_like(top)))
    scale = torch.pow(2.0, exponent.clamp(-1000, 1000).to(a.dtype))  # a power of two, so scaling is exact
    norm = (torch.linalg.vector_norm(a / scale, ord=q, dim=-1, keepdim=True) * scale).squeeze(-1)
    tiny = torch.finfo(a.dtype).tiny  # a result below the normal range may be rounded (or flushed) down: lift it
    return torch.where((top.squeeze(-1) > 0) & (norm < 2 * tiny), 4 * tiny, norm)


def project_simplex(v: Tensor, total: float | Tensor = 1.0) -> Tensor:
    """Euclidean projection of each row of v [B, D] onto {w >= 0, sum w = total} (total a float or [B];
    sort-based, Duchi, Shalev-Shwartz, Singer & Chandra, ICML 2008)."""
    u, _ = torch.sort(v, dim=-1, descending=True)
    cumulative = u.cumsum(dim=-1) - torch.as_tensor(total, dtype=v.dtype, device=v.device).reshape(-1, 1)
    ranks = torch.arange(1, v.shape[-1] + 1, dtype=v.dtype, device=v.device)
    positive = u - cumulative / ranks > 0
    rho = positive.to(torch.long).cumsum(dim=-1).argmax(dim=-1, keepdim=True)  # last index where positive
    theta = cumulative.gather(-1, rho) / (rho + 1).to(v.dtype)
    return (v - theta).clamp_min(0.0)


def project_ball(points: Tensor, centers: Tensor, radius: float | Tensor, p: float | int | str) -> Tensor:
    """Euclidean projection of each row of points [B, D] onto the l_p ball of `radius` (a float or [B])
    around the matching row of centers [B, D] (or [D]); exact for p = 1 (through the simplex projection of
    |delta|), 2 and inf. The one ball projection of the package."""
    order = parse_norm(p)
    delta = points - centers
    r = torch.as_tensor(radius, dtype=delta.dtype, device=delta.device).clamp_min(0.0).reshape(-1, 1)
    if order == math.inf:
        return centers + torch.maximum(torch.minimum(delta, r), -r)
    norm = torch.linalg.vector_norm(delta, ord=order, dim=-1, keepdim=True)
    if order == 2.0:
        return centers + delta * torch.where(norm > r, r / norm.clamp_min(torch.finfo(delta.dtype).tiny), torch.ones_like(norm))
    projected = torch.sign(delta) * project_simplex(delta.abs(), r.expand(delta.shape[0], 1).squeeze(-1))
    return centers + torch.where(norm <= r, delta, projected)


def sample_ball(centers: Tensor, radius: float, p: float | int | str, samples: int, generator: torch.Generator) -> Tensor:
    """`samples` points uniformly distributed in the l_p ball of `radius` around each row of centers [N, n]:
    [N * samples, n] (rows of one center together). p = 2: uniform direction, norm radius U^(1/n);
    p = inf: uniform in the box; p = 1: random signs times radius E_i / (E_0 + ... + E_n), E exponential
    (uniform on the l1 ball). The one ball sampler of the package."""
    order = parse_norm(p)
    n_ex, n = centers.shape
    shape = (n_ex, samples, n)
    dtype, device = centers.dtype, centers.device
    if order == 2.0:
        direction = torch.randn(shape, generator=generator, dtype=dtype, device=generator.device).to(device)
        direction = direction / torch.linalg.vector_norm(direction, dim=-1, keepdim=True).clamp_min(1e-300)
        scale = torch.rand((n_ex, samples, 1), generator=generator, dtype=dtype, device=generator.device).to(device) ** (1.0 / n)
        offset = radius * scale * direction
    elif order == math.inf:
        offset = radius * (2 * torch.rand(shape, generator=generator, dtype=dtype, device=generator.device).to(device) - 1)
    else:
        expo = -torch.log1p(-torch.rand((n_ex, samples, n + 1), generator=generator, dtype=dtype, device=generator.device)).to(device)
        signs = torch.randint(0, 2, shape, generator=generator, device=generator.device).to(device=device, dtype=dtype) * 2 - 1
        offset = radius * signs * expo[..., :n] / expo.sum(-1, keepdim=True)
    return (centers[:, None, :] + offset).reshape(-1, n)


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
        order = parse_norm(p)
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
        dual = dual_norm_of(a, dual_norm(self.p))
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
        text = f"input in the L{norm_name(self.p)} ball of radius eps around x"
        return text + (" intersected with the input domain box" if self.lo is not None else "")
