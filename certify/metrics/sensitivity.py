"""Max-sensitivity of an explainer (Yeh, Hsieh, Suggala, Inouye & Ravikumar, NeurIPS 2019, "On the
(In)fidelity and Sensitivity of Explanations", Definition 3.1), estimated by Monte Carlo in a ball.

`explainer` is any callable (inputs [M, ...], target) -> attributions [M, ...] (a certify explainer's
`attribute`, or a Captum method's); it is called on chunks of at most `batch_size` points. Everything runs
on the inputs' device and in their dtype; values are returned in float64.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import torch
from torch import Tensor

from certify.errors import InvalidInputError, TargetError, UsageError

Explainer = Callable[[Tensor, Any], Tensor]
Perturb = Callable[[Tensor], Tensor]


def max_sensitivity(
    explainer: Explainer,
    inputs: Tensor,
    target: Any = None,
    radius: float = 0.02,
    n_samples: int = 10,
    relative: bool = True,
    perturbation: Perturb | None = None,
    seed: int = 0,
    batch_size: int = 1024,
) -> Tensor:
    """Max-sensitivity (Yeh et al. 2019, Def. 3.1) of the explanation Phi(x) = explainer(x, target):

        SENS_MAX(Phi, x, r) = max_{||y - x||_inf <= r} ||Phi(y) - Phi(x)||_2,

    estimated from below by the maximum over `n_samples` points y drawn uniformly in the l-inf ball of
    radius `radius` around each example (the paper's code and Captum's `sensitivity_max` sample the same
    ball). With `relative=True` (the paper's code, Captum's default) the distance is divided by
    ||Phi(x)||_2 (by 1 where Phi(x) = 0), a unit-free number; with `relative=False` it is Def. 3.1 as
    written, in the attributions' units. `perturbation` replaces the ball sampler by a Captum-style
    perturb function: given the inputs repeated `repeat_interleave`-wise [M, ...] (example i's draws are
    rows i n .. i n + n - 1), it returns the perturbed points [M, ...].

    `target` is passed to the explainer (repeated per draw when it has one entry per example): None lets
    the explainer choose (a certify explainer then explains the class predicted at each point), an int or
    one class per example keeps the class fixed (the paper's choice). Draws come from a generator seeded
    by `seed`, one chunk of at most `batch_size` points at a time. Returns [N] float64.
    Errors: InvalidInputError for inputs that are not a finite floating batch, or an explainer or
    perturbation returning the wrong shape; TargetError for a per-example target of the wrong length;
    UsageError for radius <= 0, n_samples or batch_size < 1."""
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point() or inputs.dim() < 2 or inputs.shape[0] == 0:
        raise InvalidInputError("inputs must be a non-empty floating tensor [N, ...] with a batch dimension first")
    if not bool(torch.isfinite(inputs).all()):
        raise InvalidInputError("inputs must be finite (no NaN or Inf)")
    if isinstance(radius, bool) or not isinstance(radius, numbers.Real) or not (math.isfinite(radius) and radius > 0):
        raise UsageError(f"radius must be a finite number > 0, got {radius!r}")
    for value, name in ((n_samples, "n_samples"), (batch_size, "batch_size")):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise UsageError(f"{name} must be an integer >= 1, got {value!r}")
    x = inputs.detach()
    count, n = x.shape[0], int(n_samples)
    per_example = isinstance(target, (Tensor, list, tuple)) and torch.as_tensor(target).dim() > 0
    classes = torch.as_tensor(target, device=x.device).flatten() if per_example else target
    if per_example and classes.numel() != count:
        raise TargetError(f"target has {classes.numel()} entries for a batch of {count} examples")
    sample = perturbation or uniform_ball(float(radius), torch.Generator().manual_seed(int(seed)))

    def explain(points: Tensor, rows: Tensor) -> Tensor:
        attributions = explainer(points, classes[rows] if per_example else classes)
        if not isinstance(attributions, Tensor) or attributions.shape != points.shape:
            raise InvalidInputError(f"the explainer must return attributions of shape {tuple(points.shape)}")
        return attributions.detach().flatten(1).double()

    examples = torch.arange(count, device=x.device)
    reference = torch.cat([explain(x[rows], rows) for rows in examples.split(int(batch_size))])
    scale = reference.norm(dim=1)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale) if relative else torch.ones_like(scale)
    distances = []
    for part in torch.arange(count * n, device=x.device).split(int(batch_size)):
        owner = part // n
        points = sample(x[owner])
        if not isinstance(points, Tensor) or points.shape != x[owner].shape:
            raise InvalidInputError(f"the perturbation must return points of shape {tuple(x[owner].shape)}")
        distances.append((explain(points, owner) - reference[owner]).norm(dim=1) / scale[owner])
    return torch.cat(distances).view(count, n).max(dim=1).values


def uniform_ball(radius: float, generator: torch.Generator) -> Perturb:
    """Uniform draws in the l-inf ball of `radius` around each row (Captum's `default_perturb_func` and the
    paper's code), from `generator` (on the CPU, then moved to the inputs' device): x + U[-radius, radius]."""

    def perturb(x: Tensor) -> Tensor:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return x + radius * (2 * noise - 1)

    return perturb
