"""Reconstruction quality against the clean image (issue 14, item 4): PSNR here, SSIM from
certify.metrics.similarity (reused, not rewritten).

PSNR(x_hat, x) = 10 log10(R^2 / MSE), MSE the mean squared error over all pixels and channels of one image,
R = `data_range` (1 for images in [0, 1]); +inf for identical images (MSE = 0). Shapes: [N, ...] -> [N],
float64. Raises InvalidInputError for shapes that differ, UsageError for data_range <= 0.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from certify.errors import InvalidInputError, UsageError
from certify.metrics.similarity import ssim as _ssim

__all__ = ["psnr", "ssim", "mse"]


def mse(x_hat: Tensor, x: Tensor) -> Tensor:
    """Mean squared error per image: [N, ...] -> [N] (float64)."""
    if x_hat.shape != x.shape or x.dim() < 1:
        raise InvalidInputError(f"images must have the same shape, got {tuple(x_hat.shape)} and {tuple(x.shape)}")
    diff = (x_hat.double() - x.double()).reshape(x.shape[0], -1)
    return (diff * diff).mean(dim=1)


def psnr(x_hat: Tensor, x: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB per image [N] (float64); +inf where x_hat == x exactly."""
    if not (data_range > 0 and math.isfinite(data_range)):
        raise UsageError(f"data_range must be finite and > 0, got {data_range}")
    err = mse(x_hat, x)
    out = 10.0 * torch.log10(data_range**2 / err.clamp_min(1e-300))
    return torch.where(err == 0, torch.full_like(out, math.inf), out)


def ssim(x_hat: Tensor, x: Tensor, data_range: float = 1.0, window: int = 3) -> Tensor:
    """Mean SSIM per image [N] (certify.metrics.similarity.ssim with a fixed data range: Wang et al. 2004,
    eq. 13, 3 x 3 uniform windows as suits 8 x 8 images). Inputs [N, C, H, W] or [N, H, W]."""
    return _ssim(x_hat.double(), x.double(), window=window, data_range=data_range)
