"""How much an explanation changed: normalised L2 distance, top-k intersection and SSIM, per example.

All functions take two batches a, b of shape [N, ...] and return a tensor [N] (float64)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from certify.errors import InvalidInputError, UsageError


def _pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    if a.shape != b.shape or a.dim() < 2:
        raise InvalidInputError(f"explanations must be batches of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return a.detach().flatten(1).double(), b.detach().flatten(1).double()


def normalized_l2_distance(a: Tensor, b: Tensor) -> Tensor:
    """|| a/||a|| - b/||b|| ||_2 in [0, 2] (MoreauGrad paper, eq. 6); scale invariant. A zero map is
    normalised to zero, so its distance to any unit map is 1."""
    a, b = _pair(a, b)
    unit = lambda t: t / t.norm(dim=1, keepdim=True).clamp_min(1e-300)  # noqa: E731
    return (unit(a) - unit(b)).norm(dim=1)


def topk_count(k: int | float, n: int) -> int:
    """The number of features a top-k of n features keeps: k itself for a count (int, 1 <= k <= n), or
    ceil(k n) for a fraction 0 < k < 1. Anything else raises UsageError."""
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise UsageError(f"k must be a count in 1..{n} or a fraction in (0, 1), got {k!r}")
    count = k if isinstance(k, int) else int(math.ceil(float(k) * n)) if 0 < k < 1 else 0
    if not 1 <= count <= n:
        raise UsageError(f"k must be a count in 1..{n} or a fraction in (0, 1), got {k!r}")
    return count


def topk_mask(t: Tensor, k: int | float, signed: bool = False) -> Tensor:
    """Boolean mask [N, D] of the top-k features of each example of t [N, ...] (ranked by |value|, or by
    signed value with `signed=True`); `k` a count or a fraction (`topk_count`). Ties go to the lower index
    (a stable sort), so the result is deterministic. The one definition of a top-k set in the package."""
    flat = t.detach().flatten(1)
    count = topk_count(k, flat.shape[1])
    order = torch.sort(flat if signed else flat.abs(), dim=1, descending=True, stable=True).indices[:, :count]
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, order, True)


def topk_intersection(a: Tensor, b: Tensor, k: int | float, signed: bool = False) -> Tensor:
    """|top_k(a) & top_k(b)| / k, ranking by |value| (or by signed value with `signed=True`, as the public
    MoreauGrad code does: for signed maps that keeps only the largest positive entries). `k` is a count
    (int >= 1) or a fraction of the features (0 < k < 1). Identical maps give 1."""
    a, b = _pair(a, b)
    both = topk_mask(a, k, signed) & topk_mask(b, k, signed)
    return both.sum(dim=1).double() / topk_count(k, a.shape[1])


def ssim(a: Tensor, b: Tensor, window: int = 3, data_range: float | None = None) -> Tensor:
    """Mean structural similarity (Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 2004, eq. 13) of 2-D maps:

        SSIM(p, q) = (2 mu_p mu_q + C1)(2 s_pq + C2) / ((mu_p^2 + mu_q^2 + C1)(s_p^2 + s_q^2 + C2)),

    with local means, variances and covariance over `window` x `window` uniform windows (valid positions
    only; sample covariances with the n/(n-1) correction, as scikit-image does), C1 = (0.01 R)^2,
    C2 = (0.03 R)^2, R = `data_range` (default: the larger of the two maps' value ranges per example),
    averaged over positions. Inputs [N, H, W] or [N, C, H, W] (channels averaged first); flat maps whose
    length is a square are folded into squares. Identical maps give 1."""
    if a.shape != b.shape:
        raise InvalidInputError(f"explanations must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    p, q = _as_images(a), _as_images(b)
    if window < 2 or window > min(p.shape[-2:]):
        raise UsageError(f"window must lie in 2..{min(p.shape[-2:])}, got {window}")
    if data_range is None:
        flat = torch.cat([p.flatten(1), q.flatten(1)], dim=1)
        r = (flat.max(dim=1).values - flat.min(dim=1).values).clamp_min(1e-12).view(-1, 1, 1, 1)
    else:
        r = torch.full((p.shape[0], 1, 1, 1), float(data_range), dtype=torch.float64)
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    mean = lambda t: F.avg_pool2d(t, window, stride=1)  # noqa: E731
    n = window * window
    mu_p, mu_q = mean(p), mean(q)
    var_p = (mean(p * p) - mu_p**2) * n / (n - 1)
    var_q = (mean(q * q) - mu_q**2) * n / (n - 1)
    cov = (mean(p * q) - mu_p * mu_q) * n / (n - 1)
    score = ((2 * mu_p * mu_q + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_q**2 + c1) * (var_p + var_q + c2))
    return score.flatten(1).mean(dim=1)


def _as_images(t: Tensor) -> Tensor:
    """[N, 1, H, W] float64 from [N, H, W], [N, C, H, W] (channel mean) or [N, H*W] with a square H*W."""
    t = t.detach().double()
    if t.dim() == 4:
        return t.mean(dim=1, keepdim=True)
    if t.dim() == 3:
        return t.unsqueeze(1)
    side = math.isqrt(t[0].numel())
    if t.dim() == 2 and side * side == t.shape[1]:
        return t.view(-1, 1, side, side)
    raise InvalidInputError(f"SSIM needs image-shaped maps, got shape {tuple(t.shape)}")
