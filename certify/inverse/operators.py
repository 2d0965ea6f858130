"""Linear forward operators A for imaging inverse problems y = A x + sigma v (issue 14, item 4).

Every operator acts on batches of images [B, C, H, W] (the trailing [C, H, W] fixed at construction), on the
input's device and dtype, and provides

* `apply(x)` = A x and `adjoint(y)` = A^T y (same shape: every operator here maps R^n to R^n);
* `sigma_max()`, the exact largest singular value of A as a float (the step conditions of plug-and-play:
  ||A^T A|| = sigma_max(A)^2 is the Lipschitz constant of the gradient of 1/2 ||y - A x||^2);
* `solve_normal(rhs, rho)` = (A^T A + rho I)^{-1} rhs, exact (no iterative solve), the x-step of ADMM.

Operators:

* `Identity`: denoising. A = I, sigma_max = 1.
* `GaussianBlur`: convolution with a normalised Gaussian kernel with CIRCULAR (periodic) boundary, so A is
  diagonalised by the 2-D DFT: A = F^* diag(K) F with K the kernel's DFT. The kernel is even on the torus
  (k[i, j] = k[-i, -j]), so K is real and A is symmetric; sigma_max = max |K| (= 1 for a normalised
  non-negative kernel: K(0) = sum k = 1 >= |K(w)|), and (A^T A + rho I)^{-1} = F^* diag(1/(K^2 + rho)) F.
* `Inpainting`: A = diag(mask) with a seeded random 0/1 mask keeping a given fraction of the pixels (the same
  mask for every channel and image). sigma_max = 1 (0 when nothing is kept), (A^T A + rho I)^{-1} =
  diag(1/(mask + rho)).
* `Scaled(op, c)`: c A (sigma_max |c| sigma_max(A)); used to exercise step conditions where sigma_max != 1.

Raises `UsageError` for bad parameters (non-positive sizes or blur width, a kept fraction outside (0, 1],
rho <= 0) and `InvalidInputError` for inputs whose trailing shape is not the operator's image shape.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from certify.errors import InvalidInputError, UsageError

__all__ = ["LinearOperator", "Identity", "GaussianBlur", "Inpainting", "Scaled", "make_operator"]


class LinearOperator:
    """A linear map A: R^{C x H x W} -> R^{C x H x W} acting on batches [B, C, H, W]. Subclasses implement
    `_apply`, `_adjoint`, `_solve_normal` and `sigma_max`."""

    name = "linear"

    def __init__(self, shape: tuple[int, int, int]) -> None:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise UsageError(f"an operator's image shape must be (C, H, W) with positive sizes, got {shape}")
        self.shape: tuple[int, int, int] = shape  # type: ignore[assignment]

    def _check(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.shape:
            raise InvalidInputError(f"{self.name} expects images [B, {', '.join(map(str, self.shape))}], "
                                    f"got shape {tuple(x.shape)}")
        return x

    def apply(self, x: Tensor) -> Tensor:
        """A x: [B, C, H, W] -> [B, C, H, W]."""
        return self._apply(self._check(x))

    def adjoint(self, y: Tensor) -> Tensor:
        """A^T y: [B, C, H, W] -> [B, C, H, W]."""
        return self._adjoint(self._check(y))

    def gram(self, x: Tensor) -> Tensor:
        """A^T A x."""
        return self.adjoint(self.apply(x))

    def solve_normal(self, rhs: Tensor, rho: float) -> Tensor:
        """(A^T A + rho I)^{-1} rhs for rho > 0 (exact): [B, C, H, W] -> [B, C, H, W]."""
        if not (rho > 0 and math.isfinite(rho)):
            raise UsageError(f"solve_normal needs a finite rho > 0, got {rho}")
        return self._solve_normal(self._check(rhs), float(rho))

    def sigma_max(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def lipschitz_data(self) -> float:
        """||A^T A|| = sigma_max(A)^2: the Lipschitz constant of x -> A^T (A x - y)."""
        return self.sigma_max() ** 2

    def describe(self) -> str:
        return self.name

    def _apply(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _adjoint(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _solve_normal(self, rhs: Tensor, rho: float) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class Identity(LinearOperator):
    """A = I (denoising): sigma_max = 1, (A^T A + rho I)^{-1} = I / (1 + rho)."""

    name = "identity"

    def _apply(self, x: Tensor) -> Tensor:
        return x

    def _adjoint(self, y: Tensor) -> Tensor:
        return y

    def _solve_normal(self, rhs: Tensor, rho: float) -> Tensor:
        return rhs / (1.0 + rho)

    def sigma_max(self) -> float:
        return 1.0


def gaussian_kernel_torus(height: int, width: int, sigma: float, radius: int | None = None) -> torch.Tensor:
    """The normalised Gaussian kernel exp(-(di^2 + dj^2) / (2 sigma^2)) on the H x W torus, float64 [H, W],
    centred at (0, 0) with di, dj the circular distances, zero beyond `radius` (default ceil(3 sigma)) in
    either coordinate. Even on the torus, so its DFT is real."""
    if not (sigma > 0 and math.isfinite(sigma)):
        raise UsageError(f"blur width sigma must be finite and > 0, got {sigma}")
    radius = int(math.ceil(3.0 * sigma)) if radius is None else int(radius)
    if radius < 0:
        raise UsageError(f"blur radius must be >= 0, got {radius}")
    i = torch.arange(height, dtype=torch.float64)
    j = torch.arange(width, dtype=torch.float64)
    di = torch.minimum(i, height - i)
    dj = torch.minimum(j, width - j)
    k = torch.exp(-(di[:, None] ** 2 + dj[None, :] ** 2) / (2.0 * sigma**2))
    k = k * ((di[:, None] <= radius) & (dj[None, :] <= radius))
    return k / k.sum()


class GaussianBlur(LinearOperator):
    """Circular convolution with a normalised Gaussian kernel (see the module docstring).

    Args:
        shape: (C, H, W) of one image; every channel is blurred with the same kernel.
        sigma: kernel width in pixels (> 0).
        radius: truncation radius in pixels (default ceil(3 sigma)); the kernel is renormalised.

    `spectrum` is K, the kernel's DFT [H, W] (real, float64); sigma_max = max |K| exactly, and the smallest
    singular value is min |K| (`sigma_min`), which can be tiny: deblurring is ill-conditioned."""

    name = "blur"

    def __init__(self, shape: tuple[int, int, int], sigma: float = 1.0, radius: int | None = None) -> None:
        super().__init__(shape)
        _, h, w = self.shape
        self.blur_sigma = float(sigma)
        self.kernel = gaussian_kernel_torus(h, w, sigma, radius)
        spectrum = torch.fft.fft2(self.kernel)
        # the kernel is even on the torus, so its DFT is real up to rounding
        self.spectrum = spectrum.real.contiguous()
        self._cache: dict[tuple, Tensor] = {}

    def _spec(self, like: Tensor) -> Tensor:
        key = (like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = self.spectrum.to(device=like.device, dtype=like.dtype)
        return self._cache[key]

    def _filter(self, x: Tensor, gain: Tensor) -> Tensor:
        return torch.fft.ifft2(torch.fft.fft2(x) * gain).real.to(x.dtype)

    def _apply(self, x: Tensor) -> Tensor:
        return self._filter(x, self._spec(x))

    def _adjoint(self, y: Tensor) -> Tensor:
        return self._filter(y, self._spec(y))  # K real: A symmetric

    def _solve_normal(self, rhs: Tensor, rho: float) -> Tensor:
        k = self._spec(rhs)
        return self._filter(rhs, 1.0 / (k * k + rho))

    def sigma_max(self) -> float:
        return float(self.spectrum.abs().max())

    def sigma_min(self) -> float:
        return float(self.spectrum.abs().min())

    def describe(self) -> str:
        return f"blur(sigma={self.blur_sigma:g}, circular)"


class Inpainting(LinearOperator):
    """A = diag(mask): a seeded random pixel mask keeping `keep` of the H x W pixels (all channels alike).

    Args:
        shape: (C, H, W).
        keep: fraction of pixels kept, in (0, 1]; round(keep * H * W) pixels are kept (at least one).
        seed: seed of the mask's generator (torch.Generator, CPU), so the mask is reproducible."""

    name = "inpainting"

    def __init__(self, shape: tuple[int, int, int], keep: float = 0.5, seed: int = 0) -> None:
        super().__init__(shape)
        if not (0.0 < keep <= 1.0):
            raise UsageError(f"inpainting keeps a fraction in (0, 1], got {keep}")
        c, h, w = self.shape
        kept = max(1, int(round(keep * h * w)))
        generator = torch.Generator().manual_seed(int(seed))
        order = torch.randperm(h * w, generator=generator)
        flat = torch.zeros(h * w, dtype=torch.float64)
        flat[order[:kept]] = 1.0
        self.keep, self.seed = float(keep), int(seed)
        self.mask = flat.view(1, 1, h, w).expand(1, c, h, w).contiguous()
        self._cache: dict[tuple, Tensor] = {}

    def _m(self, like: Tensor) -> Tensor:
        key = (like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = self.mask.to(device=like.device, dtype=like.dtype)
        return self._cache[key]

    def _apply(self, x: Tensor) -> Tensor:
        return x * self._m(x)

    def _adjoint(self, y: Tensor) -> Tensor:
        return y * self._m(y)

    def _solve_normal(self, rhs: Tensor, rho: float) -> Tensor:
        return rhs / (self._m(rhs) + rho)

    def sigma_max(self) -> float:
        return float(self.mask.max())

    def describe(self) -> str:
        return f"inpainting(keep={self.keep:g}, seed={self.seed})"


class Scaled(LinearOperator):
    """c A for an operator A and a real c != 0: sigma_max = |c| sigma_max(A), and
    (c^2 A^T A + rho I)^{-1} = (A^T A + (rho / c^2) I)^{-1} / c^2 exactly."""

    def __init__(self, op: LinearOperator, c: float) -> None:
        super().__init__(op.shape)
        if not (c != 0 and math.isfinite(c)):
            raise UsageError(f"a scaled operator needs a finite non-zero factor, got {c}")
        self.op, self.c = op, float(c)
        self.name = f"{self.c:g}*{op.name}"

    def _apply(self, x: Tensor) -> Tensor:
        return self.c * self.op._apply(x)

    def _adjoint(self, y: Tensor) -> Tensor:
        return self.c * self.op._adjoint(y)

    def _solve_normal(self, rhs: Tensor, rho: float) -> Tensor:
        c2 = self.c * self.c
        return self.op._solve_normal(rhs, rho / c2) / c2

    def sigma_max(self) -> float:
        return abs(self.c) * self.op.sigma_max()

    def describe(self) -> str:
        return f"{self.c:g} * {self.op.describe()}"


def make_operator(task: str, shape: tuple[int, int, int], *, blur_sigma: float = 1.0, keep: float = 0.5,
                  seed: int = 0) -> LinearOperator:
    """The operator of a task name: "denoising" (identity), "deblurring" (Gaussian blur of width
    `blur_sigma`, circular), "inpainting" (random mask keeping `keep`, seeded). Raises UsageError otherwise."""
    if task == "denoising":
        return Identity(shape)
    if task == "deblurring":
        return GaussianBlur(shape, sigma=blur_sigma)
    if task == "inpainting":
        return Inpainting(shape, keep=keep, seed=seed)
    raise UsageError(f"unknown task {task!r}; choose denoising, deblurring or inpainting")
