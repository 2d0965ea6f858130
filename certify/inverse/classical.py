"""A classical prior for comparison with learned proximal networks: soft-thresholding in an orthogonal wavelet
basis (issue 14, item 4), usable as the `prox` of certify.inverse.pnp.pgd / admm.

For an orthogonal 2-D wavelet transform W (PyWavelets `wavedec2` / `waverec2` with an orthogonal wavelet,
"haar" or a Daubechies "dbN", mode "periodization", and image sides divisible by 2^level, so that W^T W = I
exactly up to rounding), the regulariser R(x) = lam ||D W x||_1, with D keeping the DETAIL coefficients (the
coarsest approximation is not penalised), is convex, proper and continuous, and

    prox_R(v) = argmin_x 1/2 ||x - v||^2 + lam ||D W x||_1 = W^T ST_lam(W v)    (ST on details only)

because ||x - v|| = ||W x - W v|| (Parseval) and the problem separates over coefficients (Donoho & Johnstone,
Biometrika 1994; Combettes & Wajs 2005, Example 2.20). Tensors: [B, C, H, W] on any device/dtype; the
transform runs in float64 numpy (pywt, batched over the leading axes through `axes=(-2, -1)`), and the result
comes back in the input's device and dtype.

The threshold is chosen per noise level and task by `fit_threshold`: a grid search of lam = c * sigma over a
grid of multipliers c on TRAINING images (never on the images reported), maximising the mean PSNR of the
PnP reconstruction; see certify.inverse.study for where the training images come from.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import pywt
import torch
from torch import Tensor

from certify.errors import InvalidInputError, UsageError

__all__ = ["WaveletSoftThreshold", "default_level", "fit_threshold"]


def default_level(height: int, width: int, wavelet: str = "haar") -> int:
    """The largest level L <= pywt's maximum for the wavelet such that 2^L divides both sides (so the
    periodised transform is orthogonal), at least 1. Raises UsageError when no level fits."""
    filt = pywt.Wavelet(wavelet).dec_len
    top = min(pywt.dwt_max_level(height, filt), pywt.dwt_max_level(width, filt))
    level = 0
    while level < top and height % (2 ** (level + 1)) == 0 and width % (2 ** (level + 1)) == 0:
        level += 1
    if level < 1:
        raise UsageError(f"no orthogonal periodised {wavelet} level fits a {height} x {width} image")
    return level


class WaveletSoftThreshold:
    """prox of lam ||D W x||_1 (see the module docstring): a map [B, C, H, W] -> [B, C, H, W].

    Args:
        lam: threshold (>= 0), in the units of the pixel values.
        wavelet: an orthogonal PyWavelets wavelet ("haar", "db2", ...). Biorthogonal ones are refused.
        level: decomposition level (default `default_level` of the first image seen).

    Attributes: `convex_regulariser = True` (the certificate then uses the convex PGD/ADMM theorems).
    Raises UsageError for a negative lam or a non-orthogonal wavelet, InvalidInputError for non-4-D inputs."""

    convex_regulariser = True

    def __init__(self, lam: float, wavelet: str = "haar", level: int | None = None) -> None:
        if not (lam >= 0 and math.isfinite(lam)):
            raise UsageError(f"the wavelet threshold must be finite and >= 0, got {lam}")
        w = pywt.Wavelet(wavelet)
        if not w.orthogonal:
            raise UsageError(f"wavelet {wavelet!r} is not orthogonal: W^T ST(W v) would not be a prox")
        self.lam, self.wavelet, self.level = float(lam), wavelet, level

    def _level(self, x: np.ndarray) -> int:
        return self.level if self.level is not None else default_level(x.shape[-2], x.shape[-1], self.wavelet)

    def coefficients(self, x: Tensor) -> list:
        """pywt.wavedec2 of x (float64 numpy), the transform W x."""
        if x.dim() != 4:
            raise InvalidInputError(f"wavelet prox expects images [B, C, H, W], got {tuple(x.shape)}")
        arr = x.detach().to("cpu", torch.float64).numpy()
        return pywt.wavedec2(arr, self.wavelet, mode="periodization", level=self._level(arr), axes=(-2, -1))

    def __call__(self, v: Tensor) -> Tensor:
        coeffs = self.coefficients(v)
        shrunk = [coeffs[0]] + [tuple(pywt.threshold(d, self.lam, mode="soft") for d in det) for det in coeffs[1:]]
        out = pywt.waverec2(shrunk, self.wavelet, mode="periodization", axes=(-2, -1))
        return torch.from_numpy(np.ascontiguousarray(out)).to(device=v.device, dtype=v.dtype)

    def regulariser(self, x: Tensor) -> Tensor:
        """R(x) = lam * sum of |detail coefficients| per image [B] (float64)."""
        coeffs = self.coefficients(x)
        total = sum(np.abs(d).sum(axis=(1, 2, 3)) for det in coeffs[1:] for d in det)
        return torch.as_tensor(self.lam * total, dtype=torch.float64)

    def describe(self) -> str:
        return f"wavelet soft-threshold ({self.wavelet}, periodization, lam={self.lam:.4g})"

    def __repr__(self) -> str:
        return f"WaveletSoftThreshold(lam={self.lam:g}, wavelet={self.wavelet!r}, level={self.level})"


DEFAULT_MULTIPLIERS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.4, 2.0, 3.0)


def fit_threshold(
    run: Callable[[WaveletSoftThreshold], Tensor],
    clean: Tensor,
    sigma: float,
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    wavelet: str = "haar",
) -> tuple[float, list[tuple[float, float]]]:
    """Grid search of lam = c * sigma: `run(prox)` reconstructs the TRAINING images `clean` [N, C, H, W] with
    the prox (the caller fixes operator, noise and algorithm); returns (best lam, [(lam, mean PSNR)]).

    Raises UsageError for sigma <= 0 or an empty grid."""
    from certify.inverse.quality import psnr

    if not (sigma > 0) or not multipliers:
        raise UsageError(f"fit_threshold needs sigma > 0 and a non-empty grid (got {sigma}, {list(multipliers)})")
    scores = []
    for c in multipliers:
        lam = float(c) * sigma
        x_hat = run(WaveletSoftThreshold(lam, wavelet=wavelet))
        scores.append((lam, float(psnr(x_hat, clean).mean())))
    best = max(scores, key=lambda t: t[1])
    return best[0], scores
