"""The denoiser zoo: learned proximal networks (and one plain MLP denoiser) trained deterministically, cached.

`load_lpn(name)` returns the trained denoiser in eval mode (float32, CPU). Each entry is trained once from its
recipe and cached under `$CERTIFY_CACHE/lpn` (default `~/.cache/certify/lpn`) in a file keyed by a hash of the
recipe, holding the weights with their sha256 and the recipe (`certify.models.hashing.cached_weights`): a file
that does not match them (corrupt, changed on disk, another recipe) is retrained with one line on stderr, never
trusted; writes are atomic.

Entries (`names()`):

* ``lpn-laplace-l2``, ``lpn-laplace-l1``, ``lpn-laplace-pm``: 1-D LPNs (50 units x 4 layers, beta 10, as the paper's
  Laplace experiment, Fang, Buchanan & Sulam, ICLR 2024, section 5.1) trained on x ~ Laplace(0, 1), y = x + v
  (sigma = 1) with the l2, l1 and proximal matching losses; they approximate the posterior mean, the posterior
  median and the MAP denoiser (soft thresholding at 1) of `certify.inverse.laplace`.
  alpha = 0.01 (the paper's code uses 0 here): psi is then certified 0.01-strongly convex, which gives R's
  certified interval an upper end (`certify.inverse.regulariser`) and makes f onto; the price is that f' >= alpha,
  so on the flat part of the soft threshold (|y| < 1, slope 0) f can be off by at most about alpha |y| <= 0.01.
* ``lpn-laplace-pm-long``: the same proximal-matching network trained longer (batch 4096, gamma stepped from 0.5
  down to 0.07, about 2.5 minutes on one core): within 0.15 of the soft threshold, where the 30-second recipe
  stops at about 0.16 (at gamma = 0.1 even the exact minimiser of the risk is 0.11 from it at y = +-1).
* ``lpn-digits-0.1``, ``lpn-digits-0.2``: LPNs on 8x8 digits ([B, 1, 8, 8] in [0, 1], the train split of
  `load_dataset('digits')`), trained with the l2 loss at noise sigma 0.1 / 0.2, alpha = 0.01 (alpha > 0 is an
  assumption of the PnP convergence theorem).
* ``lpn-mnist-0.1``, ``lpn-mnist-0.2``: LPNs on 28x28 images ([B, 1, 28, 28] in [0, 1]), 128 units x 4 layers,
  alpha = 0.5. There is no MNIST training set offline: they are trained on the digits train split upsampled to
  20x20 (bilinear), contrast-stretched and zero-padded to 28x28 (`mnist_like`: MNIST's layout, the digit in the
  central 20x20 box), with random shifts of up to 2 pixels as augmentation. Real MNIST digits are a domain shift
  (measured on the 15 shared MNIST images at sigma 0.1: PSNR 20.0 dB noisy -> about 20.6 dB denoised, against
  +2.9 dB on held-out upsampled digits). alpha = 0.5 rather than 0.01: f's Jacobian is alpha I plus the network's
  Hessian, whose rank is at most about hidden x layers; with alpha = 0.01 and 64 units the network cannot be close
  to the identity on the 784-dimensional image space and projects every input onto a blurry digit (real MNIST:
  20.0 -> 15.2 dB). 0 < alpha < 1 keeps f a denoiser (Jacobian eigenvalues can still lie in [alpha, 1]) and
  satisfies the PnP theorem's alpha > 0.
* ``mlp-digits-0.1``: a plain MLP denoiser (64-256-256-64, softplus), trained with l2 at sigma 0.1: not a
  gradient field (its Jacobian is not symmetric), so not a proximal operator - the negative example of
  `certify prox`.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from certify.errors import UnsupportedError
from certify.inverse.lpn import LPN
from certify.inverse.training import train_denoiser
from certify.models.datasets import load_dataset
from certify.models.hashing import cached_weights

RECIPE_FORMAT = 2  # bump when the training data or procedure changes (it is not in the recipe fields)
LAPLACE_SAMPLES = 100_000
MNIST_SHIFT = 2  # pixels of random shift augmentation


class MLPDenoiser(nn.Module):
    """A plain MLP denoiser [B, *shape] -> [B, *shape]: flatten, Linear-Softplus-...-Linear, reshape back.
    Not a gradient field in general (no symmetric Jacobian), hence not a proximal operator."""

    def __init__(self, dim: int, hidden: tuple[int, ...] = (256, 256), beta: float = 1.0) -> None:
        super().__init__()
        self.dim = int(dim)
        widths = [dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.Softplus(beta=beta)]
        layers.append(nn.Linear(widths[-1], dim))
        self.net = nn.Sequential(*layers)

    def forward(self, y: Tensor) -> Tensor:
        return self.net(y.reshape(y.shape[0], -1)).reshape(y.shape)


@dataclass(frozen=True)
class DenoiserRecipe:
    """Everything that determines a zoo denoiser's weights."""

    data: str  # "laplace", "digits" or "mnist"
    sigma: float
    loss: str = "l2"
    arch: str = "lpn"  # "lpn" or "mlp"
    hidden: int = 64
    layers: int = 4
    beta: float = 10.0
    alpha: float = 0.01
    steps: int = 2000
    lr: float = 1e-3
    batch_size: int = 256
    gamma: tuple[float, ...] = ()
    warm_start_steps: int = 0
    average_last: int = 0
    seed: int = 0
    format: int = field(default=RECIPE_FORMAT)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one input (after the batch dimension)."""
        return {"laplace": (1,), "digits": (1, 8, 8), "mnist": (1, 28, 28)}[self.data]

    @property
    def dim(self) -> int:
        return int(torch.Size(self.shape).numel())

    def build(self) -> nn.Module:
        if self.arch == "lpn":
            return LPN(self.dim, hidden=self.hidden, layers=self.layers, beta=self.beta, alpha=self.alpha)
        return MLPDenoiser(self.dim, (self.hidden,) * (self.layers - 1))


RECIPES: dict[str, DenoiserRecipe] = {
    "lpn-laplace-l2": DenoiserRecipe("laplace", 1.0, "l2", hidden=50, steps=1000, batch_size=1024),
    "lpn-laplace-l1": DenoiserRecipe("laplace", 1.0, "l1", hidden=50, steps=1500, batch_size=1024),
    "lpn-laplace-pm": DenoiserRecipe("laplace", 1.0, "pm", hidden=50, steps=2000, batch_size=1536,
                                     gamma=(0.5, 0.2, 0.1, 0.1), warm_start_steps=500, average_last=800),
    # the slow variant (about 2.5 minutes on one core): a larger batch and a final gamma of 0.07 reach the soft
    # threshold within 0.15 (measured 0.132 at y = -1) where the 30-second recipe above stops at about 0.16
    "lpn-laplace-pm-long": DenoiserRecipe("laplace", 1.0, "pm", hidden=50, steps=4000, batch_size=4096,
                                          gamma=(0.5, 0.3, 0.2, 0.1, 0.07), warm_start_steps=500, average_last=1500),
    "lpn-digits-0.1": DenoiserRecipe("digits", 0.1, "l2", steps=1500, batch_size=64, lr=5e-3),
    "lpn-digits-0.2": DenoiserRecipe("digits", 0.2, "l2", steps=1500, batch_size=64, lr=5e-3),
    "lpn-mnist-0.1": DenoiserRecipe("mnist", 0.1, "l2", hidden=128, alpha=0.5, steps=3000, batch_size=64, lr=3e-3),
    "lpn-mnist-0.2": DenoiserRecipe("mnist", 0.2, "l2", hidden=128, alpha=0.5, steps=3000, batch_size=64, lr=3e-3),
    "mlp-digits-0.1": DenoiserRecipe("digits", 0.1, "l2", arch="mlp", hidden=256, layers=3, alpha=0.0,
                                     steps=1500, batch_size=64, lr=1e-3),
}


def cache_dir() -> Path:
    """Where trained zoo denoisers are cached: `$CERTIFY_CACHE/lpn` (default `~/.cache/certify/lpn`)."""
    return Path(os.environ.get("CERTIFY_CACHE", Path.home() / ".cache" / "certify")) / "lpn"


def names() -> list[str]:
    """The zoo's entries, sorted."""
    return sorted(RECIPES)


def recipe(name: str) -> DenoiserRecipe:
    """The recipe of entry `name` (a "zoo:" prefix is accepted); UnsupportedError for an unknown name."""
    key = name.removeprefix("zoo:")
    if key not in RECIPES:
        raise UnsupportedError(f"unknown zoo denoiser {name!r}; choose one of {names()}")
    return RECIPES[key]


def laplace_samples(n: int, b: float = 1.0, seed: int = 0) -> Tensor:
    """n draws of Laplace(0, b) as [n, 1] float32, by inverse CDF from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 1, generator=generator, dtype=torch.float64) - 0.5  # in [-0.5, 0.5)
    u = u.clamp(min=-0.5 + 1e-12)
    return (-b * torch.sign(u) * torch.log1p(-2 * u.abs())).float()


def mnist_like(images: Tensor) -> Tensor:
    """8x8 digit images [N, 1, 8, 8] -> [N, 1, 28, 28]: bilinear upsampling to 20x20, a contrast stretch
    clamp(4 (u - 1/2) + 1/2, 0, 1) (upsampled 8x8 strokes are wide and blurry: this makes them crisp, matching the
    real MNIST statistics of the 15 shared images: mean 0.156 vs 0.141, 15.6% vs 14.4% of pixels above 1/2, 6.9% vs
    10.7% grey pixels, where the plain upsampling has 30% grey pixels), zero padding of 4 pixels (MNIST's layout:
    the digit in the central 20x20 box)."""
    up = F.interpolate(images, size=(20, 20), mode="bilinear", align_corners=False)
    return F.pad((4.0 * (up - 0.5) + 0.5).clamp(0.0, 1.0), (4, 4, 4, 4))


def random_shift(batch: Tensor, generator: torch.Generator, max_shift: int = MNIST_SHIFT) -> Tensor:
    """Shift each image [B, C, H, W] by a random integer offset in [-max_shift, max_shift]^2 (zeros enter at the
    border: a zero-bordered digit is moved, not wrapped, when the border is at least max_shift wide)."""
    b = batch.shape[0]
    offsets = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=generator, device=batch.device)
    padded = F.pad(batch, (max_shift,) * 4)
    h, w = batch.shape[-2:]
    rows = (torch.arange(h, device=batch.device) + max_shift).unsqueeze(0) - offsets[:, :1]  # [B, H]
    cols = (torch.arange(w, device=batch.device) + max_shift).unsqueeze(0) - offsets[:, 1:]  # [B, W]
    idx_b = torch.arange(b, device=batch.device)[:, None, None]
    # gather per example: padded[b, :, rows[b, i], cols[b, j]]
    out = padded.permute(0, 2, 3, 1)[idx_b, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def training_data(name: str) -> Tensor:
    """The clean signals entry `name` is trained on: [N, 1] Laplace draws, [N, 1, 8, 8] digits or
    [N, 1, 28, 28] MNIST-like images (see the module docstring)."""
    spec = recipe(name)
    if spec.data == "laplace":
        return laplace_samples(LAPLACE_SAMPLES, 1.0, seed=spec.seed + 1)
    digits = load_dataset("digits").x_train
    return digits if spec.data == "digits" else mnist_like(digits)


def _train(name: str, spec: DenoiserRecipe, model: nn.Module, progress: bool) -> None:
    augment = random_shift if spec.data == "mnist" else None
    train_denoiser(model, training_data(name), spec.sigma, loss=spec.loss, steps=spec.steps, lr=spec.lr,
                   batch_size=spec.batch_size, seed=spec.seed, gamma=spec.gamma or None,
                   warm_start_steps=spec.warm_start_steps, average_last=spec.average_last, augment=augment,
                   progress=progress,
                   desc=f"train {name}")


def load_denoiser(name: str, progress: bool = True) -> nn.Module:
    """The trained denoiser `name` (eval mode, float32, CPU): an `LPN` for "lpn-*" entries, an `MLPDenoiser`
    for "mlp-*". Trains and caches it on first use (seconds; see the module docstring).
    Raises UnsupportedError for an unknown name."""
    key = name.removeprefix("zoo:")
    spec = recipe(key)
    model = spec.build()
    path = cache_dir() / f"{key}-{spec.digest()[:16]}.pt"
    return cached_weights(model, path, asdict(spec), lambda: _train(key, spec, model, progress)).float().eval()


def load_lpn(name: str, progress: bool = True) -> nn.Module:
    """The trained zoo entry `name` in eval mode (float32, CPU): an `LPN` for the "lpn-*" names (the
    "mlp-digits-0.1" entry, the plain-MLP counterexample, is returned as its `MLPDenoiser`).
    Raises UnsupportedError for an unknown name."""
    return load_denoiser(name, progress)
