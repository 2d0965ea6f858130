"""Common corruptions of small images (Hendrycks & Dietterich, ICLR 2019, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations", ImageNet-C), at 5 severities each, seeded:
Gaussian noise, Gaussian blur, contrast and pixelation, with parameters scaled to the 8x8 digits.

Images are [N, ..., H, W] (a flat model's [N, 64] digits: pass `x.view(-1, 1, 8, 8)` and flatten the
result back); the result has their shape, dtype and device and lies in the `domain` box (default [0, 1]).
Severity 0 returns an unchanged copy. For one image and one seed, the distance to the clean image grows
with the severity: noise reuses the same draw scaled up, contrast shrinks towards the image's mean, blur
widens the kernel, and pixelation averages over nested blocks (each level an orthogonal projection onto a
subspace of the previous level's, so by Pythagoras the distance grows for every image).

A corruption benchmark of an explanation compares explain(corrupt(x, name, s)) with explain(x) by
`certify.metrics.normalized_l2_distance` or `topk_intersection`, for s = 1..5.
"""
from __future__ import annotations

import numbers
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from certify.errors import InvalidInputError, UsageError
from certify.vocabulary import Domain

SEVERITIES = (1, 2, 3, 4, 5)
PARAMETERS: dict[str, tuple] = {
    # standard deviation of the added noise, in units of the [0, 1] pixel range (ImageNet-C's values)
    "gaussian-noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    # standard deviation of the blur kernel in pixels (CIFAR-10-C's values: 32-pixel images, the closest in size)
    "gaussian-blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    # contrast factor c: x -> (x - mean) c + mean (ImageNet-C's values)
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    # block (rows, columns) in pixels, each a union of the previous level's blocks: on 8x8 images resizing by
    # ImageNet-C's side fractions misaligns the blocks (a 5x5 grid is farther from the image than a 4x4 one)
    "pixelate": ((1, 2), (2, 2), (2, 4), (4, 4), (4, 8)),
}
CORRUPTIONS = tuple(PARAMETERS)


def corrupt(images: Tensor, corruption: str, severity: int, seed: int = 0, domain: Any = (0.0, 1.0)) -> Tensor:
    """`images` [N, ..., H, W] under `corruption` at `severity` (0: unchanged, 1..5: `PARAMETERS`):

    * "gaussian-noise": x + s eps, eps ~ N(0, I) from a generator seeded by `seed` (the same draw at every
      severity, so the change grows with s);
    * "gaussian-blur": convolution with a normalised Gaussian of standard deviation s pixels, truncated at
      int(4 s + 0.5) pixels (scipy.ndimage's default), mirror padding (scipy's "mirror" mode);
    * "contrast": (x - m) s + m, m the mean of each image;
    * "pixelate": every block of s = (rows, columns) pixels replaced by its mean (blocks cut at the image's
      edge average the pixels they cover);

    then clamped to `domain` (a pair (lo, hi) or a `certify.vocabulary.Domain`; None: no clamp). Source:
    Hendrycks & Dietterich 2019, Sec. 3 and their code (`make_imagenet_c.py`). Returns a new tensor of the
    images' shape. Errors: UsageError for an unknown corruption or a severity outside 0..5;
    InvalidInputError for images that are not a finite floating tensor with at least 3 dimensions."""
    if corruption not in PARAMETERS:
        raise UsageError(f"corruption must be one of {CORRUPTIONS}, got {corruption!r}")
    if isinstance(severity, bool) or not isinstance(severity, numbers.Integral) or not 0 <= severity <= len(SEVERITIES):
        raise UsageError(f"severity must be an integer in 0..{len(SEVERITIES)}, got {severity!r}")
    if not isinstance(images, Tensor) or not images.is_floating_point() or images.dim() < 3:
        raise InvalidInputError(
            f"images must be a floating tensor [N, ..., H, W]; got {getattr(images, 'shape', type(images).__name__)} "
            "(reshape flat digits with x.view(-1, 1, 8, 8))"
        )
    if not bool(torch.isfinite(images).all()):
        raise InvalidInputError("images must be finite (no NaN or Inf)")
    x = images.detach()
    if severity == 0:
        return x.clone()
    strength = PARAMETERS[corruption][severity - 1]
    if corruption == "gaussian-noise":
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(int(seed)), dtype=x.dtype).to(x.device)
        out = x + strength * noise
    elif corruption == "gaussian-blur":
        out = _blur(x, strength)
    elif corruption == "contrast":
        mean = x.flatten(1).mean(dim=1).view(-1, *([1] * (x.dim() - 1)))
        out = (x - mean) * strength + mean
    else:
        out = _pixelate(x, strength)
    bounds = Domain.of(domain)
    if bounds is None:
        return out
    lo, hi = bounds.tensors(x.shape[1:], x.dtype, x.device)
    return torch.maximum(torch.minimum(out, hi), lo)


def _planes(x: Tensor) -> Tensor:
    """x [N, ..., H, W] as [M, 1, H, W] (every channel a separate image)."""
    return x.reshape(-1, 1, *x.shape[-2:])


def _blur(x: Tensor, sigma: float) -> Tensor:
    height, width = x.shape[-2:]
    radius = min(int(4 * sigma + 0.5), height - 1, width - 1)  # mirror padding needs radius < side
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(dtype=x.dtype, device=x.device)
    planes = F.pad(_planes(x), (radius, radius, radius, radius), mode="reflect")
    planes = F.conv2d(planes, kernel.view(1, 1, 1, -1))
    planes = F.conv2d(planes, kernel.view(1, 1, -1, 1))
    return planes.view(x.shape)


def _pixelate(x: Tensor, block: tuple[int, int]) -> Tensor:
    height, width = x.shape[-2:]
    coarse = F.avg_pool2d(_planes(x), block, stride=block, ceil_mode=True)
    fine = coarse.repeat_interleave(block[0], dim=2).repeat_interleave(block[1], dim=3)
    return fine[..., :height, :width].reshape(x.shape)
