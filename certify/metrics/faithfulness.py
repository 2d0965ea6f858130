"""Faithfulness of an explanation to the model it explains: deletion and insertion curves with their area
under the curve (Petsiuk, Das & Saenko, BMVC 2018, "RISE", Sec. 4.1) and infidelity (Yeh, Hsieh, Suggala,
Inouye & Ravikumar, NeurIPS 2019, "On the (In)fidelity and Sensitivity of Explanations", eq. 2).

`model` is any callable from inputs [N, ...] to logits [N, C] (an `nn.Module` in eval mode); `attributions`
have the inputs' shape. `target` is the class explained: None (the class the model predicts at the
inputs), an int, or one class per example (a sequence or a tensor [N]); TargetError otherwise. Model calls
are chunked to at most `batch_size` points each, so memory stays bounded whatever N, `steps` or `n_samples`;
everything runs on the inputs' device and in their dtype, and the values returned are float64.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

import torch
from torch import Tensor

from certify.errors import InvalidInputError, TargetError, UsageError
from certify.vocabulary import Domain

Model = Callable[[Tensor], Tensor]
Perturbation = Callable[[Tensor], tuple[Tensor, Tensor]]
TargetLike = Union[None, int, Sequence[int], Tensor]
PERTURBATIONS = ("noisy-baseline", "square", "gaussian")


@dataclass(frozen=True)
class Curve:
    """A deletion or insertion curve per example.

    * `fractions` [steps + 1] float64: the fraction of features removed (deletion) or inserted (insertion),
      k / steps for k = 0..steps;
    * `probabilities` [N, steps + 1] float64: softmax probability of the target class at each fraction;
    * `auc` [N] float64: area under the curve over [0, 1] by the trapezoid rule (in [0, 1]; lower is better
      for deletion, higher for insertion)."""

    fractions: Tensor
    probabilities: Tensor
    auc: Tensor


def deletion(
    model: Model,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetLike = None,
    steps: int | None = None,
    baseline: float | Tensor = 0.0,
    batch_size: int = 1024,
) -> Curve:
    """Deletion curve (RISE, Sec. 4.1): the features of each example are ordered by attribution, largest
    first (ties to the lower index, a stable sort), and removed (set to `baseline`) in `steps` equal
    increments: after step k the first floor(k D / steps) features of the order are removed (D features per
    example; `steps=None` removes one feature per step, steps = D). The curve is the target's softmax
    probability after each step, from the input (k = 0) to the all-baseline point (k = steps); its AUC over
    the fraction [0, 1] is small for an explanation that ranks the features the class depends on first.

    Shapes: inputs and attributions [N, ...] (the same shape), `baseline` a float or a tensor broadcastable
    to the inputs (RISE uses 0). Returns a `Curve`. Errors: InvalidInputError for mismatched shapes or
    non-finite values, TargetError for a bad target, UsageError for steps outside 1..D or batch_size < 1."""
    return _curve(model, inputs, attributions, target, steps, baseline, batch_size, insert=False)


def insertion(
    model: Model,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetLike = None,
    steps: int | None = None,
    baseline: float | Tensor = 0.0,
    batch_size: int = 1024,
) -> Curve:
    """Insertion curve (RISE, Sec. 4.1): start from `baseline` (RISE uses a blurred copy of the input, e.g.
    `certify.metrics.corruptions.corrupt(x, "gaussian-blur", 5)`) and insert the input's features in the
    order of `deletion` (largest attribution first), in `steps` equal increments; the curve is the target's
    softmax probability, from the baseline (k = 0) to the input (k = steps). A high AUC means the features
    ranked first suffice to restore the class. Shapes, returns and errors as `deletion`."""
    return _curve(model, inputs, attributions, target, steps, baseline, batch_size, insert=True)


def infidelity(
    model: Model,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetLike = None,
    perturbation: str | Perturbation = "noisy-baseline",
    n_samples: int = 10,
    normalize: bool = False,
    sigma: float = 0.2,
    baseline: float | Tensor = 0.0,
    max_side: int = 4,
    domain: Any = None,
    seed: int = 0,
    batch_size: int = 1024,
) -> Tensor:
    """Infidelity (Yeh et al. 2019, eq. 2) of attributions a = Phi(f, x) for the target's logit f:

        INFD(Phi, f, x) = E_I [ (I^T Phi(f, x) - (f(x) - f(x - I)))^2 ],

    estimated by the mean over `n_samples` draws of the perturbation I per example. With `normalize=True`
    the attributions are first rescaled by the optimal beta = sum(I^T a * df) / sum((I^T a)^2) per example
    (Yeh et al., Sec. 5 and their code; Captum's `normalize`), so the score does not depend on the scale of
    the attributions. The perturbations (the paper's choices, Sec. 3 and Sec. 5):

    * "noisy-baseline": x - I = baseline + sigma * eps, eps ~ N(0, I), clamped to `domain` (the paper's
      code clamps to the image range [0, 1] and uses sigma = 0.2);
    * "square": square removal for images [N, ..., H, W]: x - I is x with a random square (side uniform in
      1..`max_side`, position uniform, across all channels) set to `baseline`;
    * "gaussian": I ~ N(0, sigma^2 I) (the "Gaussian random vector", under which SmoothGrad is optimal);
    * a callable with Captum's `perturb_func` contract: given the inputs repeated `repeat_interleave`-wise
      [M, ...] (example i's draws are rows i n .. i n + n - 1), it returns (I, x - I), each [M, ...].

    Draws come from a generator seeded by `seed`, one chunk of at most `batch_size` points at a time, so
    the values depend on (seed, batch_size, n_samples). Returns [N] float64 (squared logit units).
    Errors: InvalidInputError for mismatched shapes, non-finite values or a callable returning the wrong
    shapes; UsageError for an unknown perturbation, sigma <= 0, max_side outside 1..min(H, W), n_samples or
    batch_size < 1; TargetError for a bad target."""
    x, a = _pair(inputs, attributions)
    n = _count(n_samples, "n_samples")
    chunk = _count(batch_size, "batch_size")
    draw = _perturbation(perturbation, x, sigma, baseline, max_side, domain, seed)
    classes = _targets(model, x, target, chunk)
    with torch.no_grad():
        fx = _scores(model, x, classes, chunk).double()
        rows = torch.arange(x.shape[0] * n, device=x.device)
        explained, change = [], []
        for part in rows.split(chunk):
            owner = part // n
            size, perturbed = draw(x[owner])
            if size.shape != perturbed.shape or size.shape != x[owner].shape:
                raise InvalidInputError(
                    f"the perturbation returned shapes {tuple(size.shape)} and {tuple(perturbed.shape)}, "
                    f"expected {tuple(x[owner].shape)} for both"
                )
            explained.append((size.flatten(1).double() * a[owner].flatten(1).double()).sum(dim=1))
            change.append(fx[owner] - _model_scores(model, perturbed, classes[owner]).double())
    dot = torch.cat(explained).view(-1, n)
    diff = torch.cat(change).view(-1, n)
    if normalize:
        total = (dot * dot).sum(dim=1, keepdim=True)
        beta = torch.where(total > 0, (dot * diff).sum(dim=1, keepdim=True) / total.clamp_min(1e-300), torch.zeros_like(total))
        dot = beta * dot
    return ((dot - diff) ** 2).mean(dim=1)


def noisy_baseline(sigma: float, baseline: float | Tensor, domain: Any, generator: torch.Generator) -> Perturbation:
    """The "noisy baseline" perturbation of `infidelity` as a Captum-style perturb function: x - I =
    clamp(baseline + sigma eps, domain), eps ~ N(0, I) drawn from `generator` (on the CPU, then moved to the
    inputs' device). Returns (I, x - I)."""
    bounds = Domain.of(domain)

    def perturb(x: Tensor) -> tuple[Tensor, Tensor]:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        perturbed = torch.as_tensor(baseline, dtype=x.dtype, device=x.device) + sigma * noise
        if bounds is not None:
            lo, hi = bounds.tensors(x.shape[1:], x.dtype, x.device)
            perturbed = torch.maximum(torch.minimum(perturbed, hi), lo)
        return x - perturbed, perturbed

    return perturb


def square_removal(max_side: int, baseline: float | Tensor, generator: torch.Generator) -> Perturbation:
    """The "square removal" perturbation of `infidelity` for images [M, ..., H, W] as a Captum-style perturb
    function: a square of side uniform in 1..max_side at a uniform position (drawn from `generator`), across
    all leading channels, is set to `baseline`. Returns (I, x - I) with I = (x - baseline) on the square."""

    def perturb(x: Tensor) -> tuple[Tensor, Tensor]:
        height, width = x.shape[-2:]
        m = x.shape[0]
        side = torch.randint(1, max_side + 1, (m,), generator=generator)
        top = (torch.rand(m, generator=generator, dtype=torch.float64) * (height - side + 1)).long()
        left = (torch.rand(m, generator=generator, dtype=torch.float64) * (width - side + 1)).long()
        rows, cols = torch.arange(height), torch.arange(width)
        inside_rows = (rows >= top[:, None]) & (rows < (top + side)[:, None])
        inside_cols = (cols >= left[:, None]) & (cols < (left + side)[:, None])
        square = (inside_rows[:, :, None] & inside_cols[:, None, :]).to(x.device)
        square = square.view(m, *([1] * (x.dim() - 3)), height, width)
        base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
        perturbed = torch.where(square, base, x)
        return x - perturbed, perturbed

    return perturb


def gaussian(sigma: float, generator: torch.Generator) -> Perturbation:
    """The "Gaussian random vector" perturbation of `infidelity` as a Captum-style perturb function:
    I ~ N(0, sigma^2 I) drawn from `generator`. Returns (I, x - I)."""

    def perturb(x: Tensor) -> tuple[Tensor, Tensor]:
        size = sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return size, x - size

    return perturb


# ------------------------------------------------------------------------------------------- helpers


def _curve(
    model: Model,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetLike,
    steps: int | None,
    baseline: float | Tensor,
    batch_size: int,
    insert: bool,
) -> Curve:
    x, a = _pair(inputs, attributions)
    chunk = _count(batch_size, "batch_size")
    count, features = x.shape[0], x[0].numel()
    steps = features if steps is None else _count(steps, "steps")
    if steps > features:
        raise UsageError(f"steps must lie in 1..{features} (the number of features), got {steps}")
    try:
        base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x).flatten(1)
    except RuntimeError:
        shape = tuple(torch.as_tensor(baseline).shape)
        raise InvalidInputError(f"baseline of shape {shape} does not broadcast to the inputs {tuple(x.shape)}") from None
    classes = _targets(model, x, target, chunk)
    order = torch.sort(a.flatten(1), dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(features, device=x.device).expand_as(order))
    moved = torch.arange(steps + 1, device=x.device) * features // steps  # features moved after step k
    flat = x.flatten(1)
    scores = []
    with torch.no_grad():
        for part in torch.arange(count * (steps + 1), device=x.device).split(chunk):
            owner, k = part // (steps + 1), part % (steps + 1)
            first = rank[owner] < moved[k, None]
            start, end = (base[owner], flat[owner]) if insert else (flat[owner], base[owner])
            points = torch.where(first, end, start).view(-1, *x.shape[1:])
            probabilities = torch.softmax(_logits(model, points).double(), dim=1)
            scores.append(probabilities.gather(1, classes[owner, None]).squeeze(1))
    fractions = torch.arange(steps + 1, dtype=torch.float64, device=x.device) / steps
    curve = torch.cat(scores).view(count, steps + 1)
    return Curve(fractions, curve, torch.trapezoid(curve, fractions, dim=1))


def _perturbation(
    perturbation: str | Perturbation, x: Tensor, sigma: float, baseline: float | Tensor, max_side: int, domain: Any, seed: int
) -> Perturbation:
    if callable(perturbation):
        return perturbation
    if perturbation not in PERTURBATIONS:
        raise UsageError(f"perturbation must be one of {PERTURBATIONS} or a callable, got {perturbation!r}")
    generator = torch.Generator().manual_seed(int(seed))
    if perturbation == "square":
        if x.dim() < 3:
            raise InvalidInputError(f"square removal needs images [N, ..., H, W], got shape {tuple(x.shape)}")
        if isinstance(max_side, bool) or not isinstance(max_side, numbers.Integral) or not 1 <= max_side <= min(x.shape[-2:]):
            raise UsageError(f"max_side must be an integer in 1..{min(x.shape[-2:])}, got {max_side!r}")
        return square_removal(int(max_side), baseline, generator)
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not (math.isfinite(sigma) and sigma > 0):
        raise UsageError(f"sigma must be a finite number > 0, got {sigma!r}")
    if perturbation == "gaussian":
        return gaussian(float(sigma), generator)
    return noisy_baseline(float(sigma), baseline, domain, generator)


def _pair(inputs: Tensor, attributions: Tensor) -> tuple[Tensor, Tensor]:
    """Detached inputs and attributions after the checks: same shape with a batch dimension, finite."""
    if not isinstance(inputs, Tensor) or not isinstance(attributions, Tensor):
        raise InvalidInputError("inputs and attributions must be tensors")
    if inputs.shape != attributions.shape or inputs.dim() < 2 or inputs.shape[0] == 0:
        raise InvalidInputError(
            "inputs and attributions must be non-empty batches [N, ...] of the same shape, "
            f"got {tuple(inputs.shape)} and {tuple(attributions.shape)}"
        )
    if not inputs.is_floating_point():
        raise InvalidInputError(f"inputs must have a floating dtype, got {inputs.dtype}")
    if not (bool(torch.isfinite(inputs).all()) and bool(torch.isfinite(attributions).all())):
        raise InvalidInputError("inputs and attributions must be finite (no NaN or Inf)")
    return inputs.detach(), attributions.detach()


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise UsageError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _logits(model: Model, points: Tensor) -> Tensor:
    logits = model(points)
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != points.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise InvalidInputError(f"the model must return logits [batch, classes], got {shape}")
    return logits


def _model_scores(model: Model, points: Tensor, classes: Tensor) -> Tensor:
    return _logits(model, points).gather(1, classes[:, None]).squeeze(1)


def _scores(model: Model, x: Tensor, classes: Tensor, chunk: int) -> Tensor:
    """The target logits [N] at x, `chunk` points per model call."""
    return torch.cat([_model_scores(model, part, c) for part, c in zip(x.split(chunk), classes.split(chunk))])


def _targets(model: Model, x: Tensor, target: TargetLike, chunk: int) -> Tensor:
    """`target` as a long tensor [N] on x's device; None: the predicted class at x."""
    with torch.no_grad():
        num_classes = _logits(model, x[:1]).shape[1]
        if target is None:
            return torch.cat([_logits(model, part).argmax(dim=1) for part in x.split(chunk)])
    if isinstance(target, bool):
        raise TargetError("target must be an int, one class index per example, or None")
    classes = torch.as_tensor(target, device=x.device)
    if classes.is_floating_point() or classes.dtype == torch.bool:
        raise TargetError(f"target must hold integer class indices, got dtype {classes.dtype}")
    classes = classes.long().expand(x.shape[0]) if classes.dim() == 0 else classes.long()
    if classes.shape != (x.shape[0],):
        raise TargetError(f"target has shape {tuple(classes.shape)} for a batch of {x.shape[0]} examples")
    if bool(((classes < 0) | (classes >= num_classes)).any()):
        raise TargetError(f"target classes out of range for a model with {num_classes} classes")
    return classes
