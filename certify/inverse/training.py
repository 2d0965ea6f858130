"""Deterministic training of denoisers: the l2, l1 and proximal matching losses (Fang, Buchanan & Sulam,
"What's in a Prior? Learned Proximal Networks for Inverse Problems", ICLR 2024, arXiv 2310.14344, section 3.2;
the Sulam talk, Part I; ANCHORS 5.1).

A denoiser f is trained on pairs (y, x) with y = x + sigma v, v ~ N(0, I) drawn afresh for every mini-batch:

* ``"l2"``: ||f(y) - x||_2^2, minimised (over all measurable f) by the posterior mean E[x | y];
* ``"l1"``: ||f(y) - x||_1, minimised coordinate-wise by the posterior median;
* ``"pm"`` (proximal matching): 1 - exp(-||f(y) - x||_2^2 / gamma^2), whose minimiser tends, as gamma -> 0, to
  the MAP estimator prox_{-sigma^2 log p_x} (the paper's proximal matching theorem, section 3.2; theorem number unverified).

Conventions. The paper writes the proximal matching loss with ``/gamma^2`` inside the exponential and the factor
(pi gamma^2)^{-n/2} in front; the talk's slide writes ``/gamma`` (a typo relative to the paper: with ``/gamma``
the normalising constant (pi gamma^2)^{-n/2} would not make exp(...) a Gaussian density of unit mass).
We use the paper's ``/gamma^2``. The constant (pi gamma^2)^{-n/2} is dropped, as in the authors' public code:
at a fixed gamma it only scales the loss (hence the gradient, which Adam normalises away); across the gamma
schedule it would rescale the loss by stages, which only matters for the optimiser's state. gamma is stepped
down over the training (the paper's Laplace experiment: 0.5 -> 0.1 for n = 1); for images, ||f(y) - x||^2 grows
like n, so gamma must be scaled with sqrt(n) (e.g. gamma = c sigma sqrt(n)) or the loss is flat
(exp(-n sigma^2 / gamma^2) ~ 0 for every sample). As in the paper's code, proximal matching training may start
with an l1 warm start (``warm_start_steps``), from which the pm stages continue.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from certify.errors import InvalidInputError, UsageError
from certify.models.training import single_threaded
from certify.progress import progress_bar

LOSSES = ("l2", "l1", "pm")

Augment = Callable[[Tensor, torch.Generator], Tensor]


def denoising_loss(estimate: Tensor, clean: Tensor, loss: str, gamma: float | None = None) -> Tensor:
    """The per-example loss of a denoised batch: estimate, clean [B, ...] -> [B].

    ``"l2"``: sum of squares; ``"l1"``: sum of absolute values; ``"pm"``: 1 - exp(-||estimate - clean||^2 / gamma^2)
    (the paper's proximal matching loss without its constant factor; see the module docstring).
    Raises UsageError for an unknown loss or a non-positive gamma with ``"pm"``."""
    diff = (estimate - clean).reshape(estimate.shape[0], -1)
    if loss == "l2":
        return (diff * diff).sum(dim=1)
    if loss == "l1":
        return diff.abs().sum(dim=1)
    if loss == "pm":
        if gamma is None or not (gamma > 0 and math.isfinite(gamma)):
            raise UsageError(f"the proximal matching loss needs gamma > 0, got {gamma}")
        return 1.0 - torch.exp(-(diff * diff).sum(dim=1) / gamma**2)
    raise UsageError(f"unknown denoising loss {loss!r}; choose one of {list(LOSSES)}")


def _reinitialise(model: nn.Module) -> None:
    """Re-draw the parameters: the model's own `reset_parameters` when it has one (an LPN initialises its
    non-negative weights itself), otherwise each submodule's."""
    if hasattr(model, "reset_parameters"):
        model.reset_parameters()
        return
    for module in model.modules():
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()


def _stages(loss: str, steps: int, gamma: float | Sequence[float] | None, warm_start_steps: int) -> list[tuple[str, float | None, int]]:
    """The training plan as (loss, gamma, number of steps) stages."""
    if loss not in LOSSES:
        raise UsageError(f"unknown denoising loss {loss!r}; choose one of {list(LOSSES)}")
    if steps < 1 or warm_start_steps < 0:
        raise UsageError(f"train_denoiser needs steps >= 1 and warm_start_steps >= 0 (got {steps}, {warm_start_steps})")
    plan: list[tuple[str, float | None, int]] = []
    if warm_start_steps:
        plan.append(("l1", None, warm_start_steps))
    if loss != "pm":
        return plan + [(loss, None, steps)]
    gammas = [gamma] if isinstance(gamma, (int, float)) else list(gamma or [])
    if not gammas or any(not (g > 0 and math.isfinite(g)) for g in gammas):
        raise UsageError(f"proximal matching needs gamma > 0 (a number or a non-empty schedule), got {gamma}")
    if len(gammas) > steps:
        raise UsageError(f"a gamma schedule of {len(gammas)} stages needs steps >= {len(gammas)}, got {steps}")
    bounds = [round(steps * k / len(gammas)) for k in range(len(gammas) + 1)]
    return plan + [("pm", float(g), bounds[k + 1] - bounds[k]) for k, g in enumerate(gammas)]


def train_denoiser(
    model: nn.Module,
    clean: Tensor,
    sigma: float,
    loss: str = "l2",
    steps: int = 2000,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    gamma: float | Sequence[float] | None = None,
    warm_start_steps: int = 0,
    augment: Augment | None = None,
    reinitialise: bool = True,
    lr_decay: bool = True,
    average_last: int = 0,
    progress: bool = True,
    desc: str = "train denoiser",
) -> nn.Module:
    """Train a denoiser f = `model` on y = x + sigma v with Adam; returns the model in eval mode.

    Args:
        model: any nn.Module mapping [B, ...] to the same shape. If it has `project_()` (an LPN), it is called
            after every optimiser step (and once before the first), so the constrained weights stay feasible.
        clean: [N, ...] clean signals (float; the shape after N is the model's input shape). Each step draws
            `batch_size` of them uniformly with replacement from a seeded generator, applies `augment` (a
            function (batch, generator) -> batch, e.g. random shifts) and adds fresh noise sigma v.
        sigma: the noise standard deviation (>= 0, in the units of `clean`).
        loss: "l2", "l1" or "pm" (see `denoising_loss`).
        steps: optimiser steps of the main loss (for "pm", split evenly over the gamma schedule).
        lr: Adam's learning rate; with `lr_decay` it decays by cosine annealing to lr/10 over each stage
            (warm start, and the main loss as a whole).
        batch_size: examples per step.
        seed: seeds the initialisation (when `reinitialise`), the batches and the noise.
        gamma: "pm" only: a number or a decreasing schedule, e.g. (0.5, 0.3, 0.1), each entry used for an equal
            share of `steps`.
        warm_start_steps: l1 steps before the main loss (the paper's l1 warm start before proximal matching).
        average_last: return the uniform (Polyak) average of the parameters over the last `average_last` steps
            (0: the last iterate). Averaging reduces the gradient noise of the small-gamma stages; a convex
            combination of feasible LPN weights is feasible (non-negative), so the average is still an LPN.
        reinitialise: re-draw the parameters first (so the result depends only on the arguments); False
            continues from the model's current weights.
        progress: show a progress bar on stderr (when it is a TTY).

    Deterministic: single-threaded, seeded, and the caller's global RNG state is restored (fork_rng).
    Raises UsageError for bad parameters and InvalidInputError for non-finite or empty `clean`."""
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise UsageError(f"train_denoiser needs a finite sigma >= 0, got {sigma}")
    if batch_size < 1 or not (lr > 0 and math.isfinite(lr)):
        raise UsageError(f"train_denoiser needs batch_size >= 1 and lr > 0 (got {batch_size}, {lr})")
    if average_last < 0:
        raise UsageError(f"average_last must be >= 0, got {average_last}")
    if clean.dim() < 2 or clean.shape[0] < 1:
        raise InvalidInputError(f"clean must be [N, ...] with N >= 1, got shape {tuple(clean.shape)}")
    if not torch.isfinite(clean).all():
        raise InvalidInputError("clean contains NaN or Inf")
    plan = _stages(loss, steps, gamma, warm_start_steps)
    project = getattr(model, "project_", None)
    total = sum(n for _, _, n in plan)
    with single_threaded(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if reinitialise:
            _reinitialise(model)
        if callable(project):
            project()
        data = clean.detach().to(dtype=next(model.parameters()).dtype)
        generator = torch.Generator(device=data.device).manual_seed(seed)
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        bar = progress_bar(range(total), desc=desc, total=total) if progress else range(total)
        it = iter(bar)
        done = 0
        params = [p for p in model.parameters()]
        average = [torch.zeros_like(p) for p in params]
        averaged = 0
        # the warm start and the main loss each get their own cosine schedule; the gamma stages share one
        groups: list[list[tuple[str, float | None, int]]] = []
        for stage in plan:
            if groups and stage[0] == "pm" and groups[-1][0][0] == "pm":
                groups[-1].append(stage)
            else:
                groups.append([stage])
        for group in groups:
            length = sum(n for _, _, n in group)
            for group_param in optimiser.param_groups:
                group_param["lr"] = lr
            schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=length, eta_min=lr / 10)
                        if lr_decay else None)
            for name, stage_gamma, count in group:
                for _ in range(count):
                    next(it)
                    idx = torch.randint(0, data.shape[0], (batch_size,), generator=generator, device=data.device)
                    x = data[idx]
                    if augment is not None:
                        x = augment(x, generator)
                    y = x + sigma * torch.randn(x.shape, generator=generator, device=data.device, dtype=x.dtype)
                    optimiser.zero_grad(set_to_none=True)
                    denoising_loss(model(y), x, name, stage_gamma).mean().backward()
                    optimiser.step()
                    if callable(project):
                        project()
                    if schedule is not None:
                        schedule.step()
                    done += 1
                    if done > total - average_last:
                        averaged += 1
                        with torch.no_grad():
                            for acc, p in zip(average, params):
                                acc.add_(p.detach() - acc, alpha=1.0 / averaged)
        for _ in it:  # exhaust the bar so it closes
            pass
        if averaged:
            with torch.no_grad():
                for acc, p in zip(average, params):
                    p.copy_(acc)
            if callable(project):
                project()
    return model.eval()
