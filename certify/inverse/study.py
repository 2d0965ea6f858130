"""The plug-and-play study of issue 14 (acceptance: "PnP on digits and MNIST images: table of PSNR for noise
sigma in {0.1, 0.2}, LPN vs the classical prior, and the convergence certificate per run").

Grid: images {digits (8 x 8 test images of the embedded scikit-learn digits), MNIST (the 15 real test images of
shared/data/vnncomp2021-mnistfc, centres of prop_I_0.03.vnnlib)} x tasks {denoising (A = I), deblurring
(circular Gaussian blur, width 1 px), inpainting (random mask keeping half the pixels, seeded)} x noise
sigma in {0.1, 0.2} x priors {LPN, wavelet soft-thresholding} x algorithms {PnP-PGD, PnP-ADMM}. Measurements
y = A x + sigma v, v ~ N(0, I) seeded per (data set, task, sigma), the same for both priors.

Parameter rules (documented, none tuned on the reported images):

* LPN: the zoo LPN of the image size trained at the SAME noise level, sigma_d = sigma ("lpn-digits-0.1", ...).
  The LPN is (approximately, by proximal matching) f = prox_{sigma_d^2 (-log p)}; the MAP problem
  1/2 ||y - A x||^2 / sigma^2 - log p(x) is, times sigma^2, 1/2||y - A x||^2 + (sigma^2/sigma_d^2) R, i.e.
  PGD's F_eta with eta = sigma_d^2 / sigma^2 = 1. That is AT the proven bound 1/sigma_max(A)^2 = 1 (the
  theorem needs strict inequality), so the step is eta = 0.99 min(1, sigma_d^2/sigma^2) / sigma_max(A)^2,
  inside the condition; ADMM uses rho = 1/eta (same objective, rho > sigma_max(A)^2).
* Wavelet prior (haar, periodization, all levels that fit): lam = c sigma with c chosen per (task, sigma)
  on TRAINING digits images (the first 32 of the training split) by grid search of the PnP-PGD PSNR
  (certify.inverse.classical.fit_threshold), with the same eta; MNIST has no training images in this project,
  so the multiplier fitted on digits is reused there (the noise's wavelet coefficients have std sigma at any
  image size). ADMM uses the same lam and rho = 1/eta: the same convex objective.

Per row: PSNR / SSIM of the reconstruction and of the degraded input (y, or A^T y for inpainting, which
zeroes the missing pixels), means over images; iterations (mean, max); the certificate's kind ("certified":
every assumption of the convergence theorem holds; "estimated": only the evaluated residual), the max
re-evaluated fixed-point residual, failed assumptions; wall seconds. `quick=True` uses 4 images per set and
fewer iterations. Everything runs in float64 on the CPU, single-threaded and seeded.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from certify.errors import InvalidInputError, UsageError
from certify.inverse.classical import WaveletSoftThreshold, fit_threshold
from certify.inverse.operators import LinearOperator, make_operator
from certify.inverse.pnp import PnPResult, admm, pgd
from certify.inverse.quality import psnr, ssim

__all__ = ["DATASETS", "TASKS", "SIGMAS", "StudyConfig", "StudyResult", "pnp_study", "render_markdown",
           "digits_images", "mnist_images", "mnist_folder", "lpn_name", "step_rule", "measure"]

DATASETS = ("digits", "mnist")
TASKS = ("denoising", "deblurring", "inpainting")
SIGMAS = (0.1, 0.2)
ALGORITHMS = ("pgd", "admm")
PRIORS = ("lpn", "wavelet")
F64 = torch.float64


@dataclass(frozen=True)
class StudyConfig:
    """Knobs of the study (defaults: the acceptance table)."""

    blur_sigma: float = 1.0
    keep: float = 0.5
    max_iter: int = 300
    tol: float = 1e-6
    seed: int = 0
    step_margin: float = 0.99
    digits_images: int = 8
    mnist_images: int = 15
    train_images: int = 32
    wavelet: str = "haar"
    multipliers: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.4, 2.0)


QUICK = StudyConfig(max_iter=200, digits_images=4, mnist_images=4, train_images=16,
                    multipliers=(0.2, 0.5, 1.0, 2.0))


# ------------------------------------------------------------------------------------------------ data


def digits_images(n: int, split: str = "test") -> Tensor:
    """The first n digits images [n, 1, 8, 8] in [0, 1] (float64) of the fixed split ("test" or "train")."""
    from certify.models.datasets import load_dataset

    data = load_dataset("digits")
    pool = data.x_test if split == "test" else data.x_train
    if not (1 <= n <= pool.shape[0]):
        raise UsageError(f"digits {split} split has {pool.shape[0]} images, asked for {n}")
    return pool[:n].to(F64).clone()


def mnist_folder() -> Path:
    """shared/data/vnncomp2021-mnistfc beside the repository clone (as tests/mnistfc_data.py locates it)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "vnncomp2021-mnistfc"


def mnist_images(n: int = 15, folder: Path | None = None) -> Tensor:
    """The first n of the 15 real MNIST test images [n, 1, 28, 28] (float64, [0, 1]): the centres of the
    L-infinity boxes of prop_I_0.03.vnnlib, I = 0..n-1 (certify.models.vnnlib Property.ball()).
    Raises InvalidInputError when the folder or a property is missing or not a ball."""
    from certify.models.vnnlib import parse_vnnlib

    folder = Path(folder) if folder is not None else mnist_folder()
    if not (1 <= n <= 15):
        raise UsageError(f"there are 15 MNIST images, asked for {n}")
    if not folder.is_dir():
        raise InvalidInputError(f"the MNIST benchmark folder is missing: {folder}")
    out = []
    for i in range(n):
        path = folder / f"prop_{i}_0.03.vnnlib"
        if not path.is_file():
            raise InvalidInputError(f"missing {path}")
        ball = parse_vnnlib(path).ball()
        if ball is None:
            raise InvalidInputError(f"{path} is not an L-infinity ball")
        out.append(torch.as_tensor(ball[0], dtype=F64).reshape(1, 28, 28))
    return torch.stack(out)


def _images(dataset: str, config: StudyConfig) -> Tensor:
    if dataset == "digits":
        return digits_images(config.digits_images)
    if dataset == "mnist":
        return mnist_images(config.mnist_images)
    raise UsageError(f"unknown data set {dataset!r}; choose from {list(DATASETS)}")


def measure(A: LinearOperator, x: Tensor, sigma: float, seed: int) -> Tensor:
    """y = A x + sigma v with v ~ N(0, I) from a seeded CPU generator (float64)."""
    g = torch.Generator().manual_seed(int(seed))
    return A.apply(x) + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)


def degraded(A: LinearOperator, y: Tensor, task: str) -> Tensor:
    """The baseline 'input' image: y, or A^T y for inpainting (missing pixels set to 0)."""
    return A.adjoint(y) if task == "inpainting" else y


# ----------------------------------------------------------------------------------------------- rules


def lpn_name(dataset: str, sigma: float) -> str:
    """The zoo LPN used as the prior: trained on the image set's size at the same noise level."""
    return f"lpn-{dataset}-{sigma:g}"


def step_rule(A: LinearOperator, sigma: float, sigma_d: float, margin: float = 0.99) -> float:
    """eta = margin * min(1, sigma_d^2 / sigma^2) / sigma_max(A)^2: the MAP scaling, capped strictly inside
    the proven condition eta < 1/sigma_max(A)^2 (see the module docstring)."""
    if not (0 < margin < 1):
        raise UsageError(f"the step margin must lie in (0, 1), got {margin}")
    return margin * min(1.0, (sigma_d / sigma) ** 2) / A.sigma_max() ** 2


def _seed(config: StudyConfig, dataset: str, task: str, sigma: float) -> int:
    return (config.seed * 100_000 + DATASETS.index(dataset) * 10_000 + TASKS.index(task) * 1_000
            + int(round(sigma * 1_000)) % 1_000)


@lru_cache(maxsize=64)
def _fitted_lambda(task: str, sigma: float, config: StudyConfig) -> float:
    clean = digits_images(config.train_images, split="train")
    A = make_operator(task, tuple(clean.shape[1:]), blur_sigma=config.blur_sigma, keep=config.keep,
                      seed=config.seed)
    y = measure(A, clean, sigma, seed=10_000 + _seed(config, "digits", task, sigma))
    eta = step_rule(A, sigma, sigma, config.step_margin)
    lam, _ = fit_threshold(lambda prox: pgd(prox, A, y, eta=eta, max_iter=config.max_iter, tol=config.tol).x,
                           clean, sigma, multipliers=config.multipliers, wavelet=config.wavelet)
    return lam


# ----------------------------------------------------------------------------------------------- study


@dataclass
class StudyResult:
    """Rows (list of dicts, one per data set x task x sigma x prior x algorithm) and the configuration."""

    rows: list[dict[str, Any]]
    config: StudyConfig
    seconds: float = 0.0
    reconstructions: dict[tuple, Tensor] = field(default_factory=dict)

    def markdown(self) -> str:
        return render_markdown(self.rows)


def _row(dataset: str, task: str, sigma: float, prior: str, algorithm: str, x: Tensor, y_in: Tensor,
         res: PnPResult) -> dict[str, Any]:
    cert = res.certificate
    return {
        "dataset": dataset, "task": task, "sigma": sigma, "prior": prior, "algorithm": algorithm,
        "parameter": cert.parameter, "parameter_name": "eta" if algorithm == "pgd" else "rho",
        "bound": cert.bound, "images": int(x.shape[0]),
        "psnr_input": float(psnr(y_in, x).mean()), "ssim_input": float(ssim(y_in, x).mean()),
        "psnr": float(psnr(res.x, x).mean()), "ssim": float(ssim(res.x, x).mean()),
        "iterations_mean": float(res.iterations.double().mean()), "iterations_max": int(res.iterations.max()),
        "converged": float(res.converged.double().mean()),
        "residual_max": float(cert.residual.max()), "certificate": cert.kind,
        "assumptions_hold": cert.assumptions_hold, "failed": cert.failed, "statement": cert.statement(),
        "seconds": res.seconds,
    }


def pnp_study(
    datasets: Sequence[str] = DATASETS,
    tasks: Sequence[str] = TASKS,
    sigmas: Sequence[float] = SIGMAS,
    priors: Sequence[str] = PRIORS,
    algorithms: Sequence[str] = ALGORITHMS,
    quick: bool = False,
    config: StudyConfig | None = None,
    lpn_loader: Callable[[str], Any] | None = None,
    keep_reconstructions: bool = False,
) -> StudyResult:
    """Run the PnP grid (see the module docstring) and return its rows.

    Args:
        datasets, tasks, sigmas, priors ("lpn", "wavelet"), algorithms ("pgd", "admm"): the grid.
        quick: use `QUICK` (4 images per set, 200 iterations, a 4-point threshold grid) unless `config` given.
        lpn_loader: name -> LPN (default certify.inverse.zoo.load_lpn); names from `lpn_name`.
        keep_reconstructions: keep (dataset, task, sigma, prior, algorithm) -> reconstruction [N, 1, H, W], and
            (dataset, task, sigma, "clean" / "input") -> images, for figures.

    Raises UsageError for unknown names, InvalidInputError when the MNIST images are missing."""
    config = config or (QUICK if quick else StudyConfig())
    for name, chosen, allowed in (("data set", datasets, DATASETS), ("task", tasks, TASKS),
                                  ("prior", priors, PRIORS), ("algorithm", algorithms, ALGORITHMS)):
        bad = [c for c in chosen if c not in allowed]
        if bad:
            raise UsageError(f"unknown {name} {bad}; choose from {list(allowed)}")
    if "lpn" in priors and lpn_loader is None:
        from certify.inverse.zoo import load_lpn as lpn_loader  # noqa: N813 - imported lazily
    from certify.models.training import single_threaded

    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    kept: dict[tuple, Tensor] = {}
    with single_threaded(), torch.random.fork_rng():
        for dataset in datasets:
            x = _images(dataset, config)
            shape = tuple(x.shape[1:])
            for task in tasks:
                A = make_operator(task, shape, blur_sigma=config.blur_sigma, keep=config.keep, seed=config.seed)
                for sigma in sigmas:
                    y = measure(A, x, sigma, seed=_seed(config, dataset, task, sigma))
                    y_in = degraded(A, y, task)
                    if keep_reconstructions:
                        kept[(dataset, task, sigma, "clean")] = x
                        kept[(dataset, task, sigma, "input")] = y_in
                    eta = step_rule(A, sigma, sigma, config.step_margin)
                    for prior in priors:
                        if prior == "lpn":
                            name = lpn_name(dataset, sigma)
                            prox, label = lpn_loader(name), f"LPN {name}"
                        else:
                            lam = _fitted_lambda(task, float(sigma), config)
                            prox = WaveletSoftThreshold(lam, wavelet=config.wavelet)
                            label = f"wavelet {config.wavelet} lam={lam:.3g}"
                        for algorithm in algorithms:
                            if algorithm == "pgd":
                                res = pgd(prox, A, y, eta=eta, max_iter=config.max_iter, tol=config.tol, dtype=F64)
                            else:
                                res = admm(prox, A, y, rho=1.0 / eta, max_iter=config.max_iter, tol=config.tol,
                                           dtype=F64)
                            rows.append(_row(dataset, task, sigma, label, algorithm, x, y_in, res))
                            if keep_reconstructions:
                                kept[(dataset, task, sigma, prior, algorithm)] = res.x
    return StudyResult(rows=rows, config=config, seconds=time.perf_counter() - start, reconstructions=kept)


def render_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of study rows: PSNR/SSIM (input -> reconstruction), iterations, certificate."""
    head = ("| data | task | sigma | prior | alg. | step | PSNR in | PSNR | SSIM in | SSIM | iters mean/max "
            "| residual max | certificate | s |")
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        cert = r["certificate"] if r["assumptions_hold"] else f"{r['certificate']} (fails: {'; '.join(r['failed'])})"
        lines.append(
            f"| {r['dataset']} | {r['task']} | {r['sigma']:g} | {r['prior']} | {r['algorithm'].upper()} "
            f"| {r['parameter_name']}={r['parameter']:.4g} | {r['psnr_input']:.2f} | {r['psnr']:.2f} "
            f"| {r['ssim_input']:.3f} | {r['ssim']:.3f} | {r['iterations_mean']:.0f}/{r['iterations_max']} "
            f"| {r['residual_max']:.1e} | {cert} | {r['seconds']:.2f} |")
    return "\n".join(lines)

