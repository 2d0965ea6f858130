"""Accuracy under gradient attacks on the loss: FGSM (Goodfellow, Shlens & Szegedy, ICLR 2015, Sec. 4; its
l2 form is the fast gradient method of Kurakin, Goodfellow & Bengio, ICLR 2017 workshop) and PGD (Madry,
Makelov, Schmidt, Tsipras & Vladu, ICLR 2018, Sec. 2.1), untargeted, on the cross-entropy of the true
labels, in the l-inf or l2 ball of radius eps, clipped to the input domain box.

Written with torch alone: `torchattacks` (3.5.1, the last release) installs beside torch 2.13 without
replacing it, but it pins `requests~=2.25.1`, refuses inputs outside [0, 1] and clamps every attack to
[0, 1], so it cannot attack a model whose domain is another box (the standardised breast-cancer features).

Every returned point x' satisfies ||x' - x||_p <= eps and lo <= x' <= hi exactly (in real arithmetic, for
the stored values): the displacement is projected in float64 onto a ball shrunk by twice the unit
round-off of the inputs' dtype times (|x| + eps), which covers the rounding back to that dtype, then
clamped to the box (which moves every coordinate towards x, so the point stays in the ball; domain bounds
must be representable in the inputs' dtype, as 0 and 1 are).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from certify.bounds.sets import sample_ball
from certify.errors import InvalidInputError, UnsupportedError, UsageError
from certify.validation import (
    TargetLike,
    check_eval_mode,
    check_target,
    evaluate_logits,
    grad_ready,
    nonnegative_number,
    positive_int,
    validate_inputs,
    with_autograd,
)
from certify.vocabulary import Domain, norm_name, parse_norm

ATTACKS = ("fgsm", "pgd")


@with_autograd
def fgsm(model: nn.Module, inputs: Tensor, labels: TargetLike, eps: float, norm: Any = "inf", domain: Any = None) -> Tensor:
    """FGSM (Goodfellow et al. 2015, eq. 3): x' = x + eps sign(grad_x L(x, y)) for l-inf, and
    x' = x + eps g / ||g||_2 with g = grad_x L(x, y) for l2 (the fast gradient method; a zero gradient
    leaves x unchanged), L the cross-entropy of the model's logits with the labels, then clipped to the
    `domain` box. Shapes: inputs [N, ...], labels an int or [N]; returns x' [N, ...] in the inputs' dtype.
    eps in the inputs' units (eps = 0 returns x). Errors: see `accuracy_under_attack`."""
    x, y, eps, order, lo, hi = _setup(model, inputs, labels, eps, norm, domain)
    return _into_ball(x + eps * _direction(model, x, y, order), x, eps, order, lo, hi)


@with_autograd
def pgd(
    model: nn.Module,
    inputs: Tensor,
    labels: TargetLike,
    eps: float,
    norm: Any = "inf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    domain: Any = None,
    seed: int = 0,
) -> Tensor:
    """PGD (Madry et al. 2018, Sec. 2.1): from a uniform random point of the ball (`random_start`, drawn by
    `certify.bounds.sets.sample_ball` with a generator seeded by `seed`) or from x, `steps` steps
    x' <- P(x' + step_size d), d = sign(g) for l-inf and g / ||g||_2 for l2 (g the gradient of the
    cross-entropy at x'), P the projection onto the ball and then the domain box. Per example the first
    iterate that the model misclassifies is kept (the attack has succeeded there), else the last one.
    `step_size` defaults to 2.5 eps / steps (Madry et al.). Shapes, units and errors as `fgsm`."""
    x, y, eps, order, lo, hi = _setup(model, inputs, labels, eps, norm, domain)
    steps = positive_int(steps, "steps")
    alpha = 2.5 * eps / steps if step_size is None else nonnegative_number(step_size, "step_size")
    flat = x.flatten(1).double()
    if random_start and eps > 0:
        generator = torch.Generator().manual_seed(int(seed))
        start = sample_ball(flat, eps, order, 1, generator).to(x.dtype).view_as(x)
    else:
        start = x
    current = _into_ball(start, x, eps, order, lo, hi)
    best, fooled = current, _misclassified(model, current, y)
    for _ in range(steps):
        current = _into_ball(current + alpha * _direction(model, current, y, order), x, eps, order, lo, hi)
        best = torch.where(fooled.view(-1, *([1] * (x.dim() - 1))), best, current)
        fooled = fooled | _misclassified(model, current, y)
    return best


def accuracy_under_attack(
    model: nn.Module,
    inputs: Tensor,
    labels: TargetLike,
    eps: float,
    attack: str = "pgd",
    norm: Any = "inf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    domain: Any = None,
    seed: int = 0,
    batch_size: int = 256,
) -> Tensor:
    """Whether the model still classifies each example correctly after `attack` ("fgsm" or "pgd", see
    those functions) at radius eps in the l_`norm` ball (norm inf or 2), clipped to `domain` (a pair
    (lo, hi) of floats or tensors broadcastable to one example, e.g. `(data.domain_lo, data.domain_hi)`, or
    a `certify.vocabulary.Domain`; None: unbounded). Runs in chunks of `batch_size` examples; with
    random starts the draws depend on (seed, batch_size). The robust accuracy is `.double().mean()`; at
    eps = 0 it is the clean accuracy.

    Shapes: inputs [N, ...], labels (the true classes) an int or [N]; returns a bool tensor [N].
    Errors: InvalidInputError for non-finite inputs or inputs outside the domain, TargetError for bad
    labels, ModelModeError for a model in training mode, UsageError for eps < 0, an unknown attack,
    steps or batch_size < 1, UnsupportedError for norm 1."""
    if attack not in ATTACKS:
        raise UsageError(f"attack must be one of {ATTACKS}, got {attack!r}")
    chunk = positive_int(batch_size, "batch_size")
    x = validate_inputs(inputs)
    y = _labels(model, x, labels)
    correct = []
    for start in range(0, x.shape[0], chunk):
        part, truth = x[start : start + chunk], y[start : start + chunk]
        if attack == "fgsm":
            adversarial = fgsm(model, part, truth, eps, norm, domain)
        else:
            adversarial = pgd(model, part, truth, eps, norm, steps, step_size, random_start, domain, seed)
        correct.append(~_misclassified(model, adversarial, truth))
    return torch.cat(correct)


def _labels(model: nn.Module, x: Tensor, labels: TargetLike) -> Tensor:
    check_eval_mode(model)
    if labels is None:
        raise UsageError("labels are required: accuracy is measured against the true classes, one per example")
    with torch.no_grad():
        num_classes = evaluate_logits(model, x[:1]).shape[1]
    return check_target(labels, x.shape[0], num_classes, x.device)


def _setup(model: nn.Module, inputs: Tensor, labels: TargetLike, eps: float, norm: Any, domain: Any):
    """Validated (x, labels, eps, p, lo, hi): x grad-ready, lo/hi float64 [1, D] (+-inf where unbounded)."""
    x = grad_ready(validate_inputs(inputs).detach(), model)
    y = _labels(model, x, labels)
    eps = nonnegative_number(eps, "eps")
    order = parse_norm(norm)
    if order == 1.0:
        raise UnsupportedError(f"accuracy under attack supports the l-inf and l2 balls, not l{norm_name(order)}")
    bounds = Domain.of(domain) or Domain()
    lo, hi = (side.reshape(1, -1) for side in bounds.tensors(x.shape[1:], torch.float64, x.device))
    flat = x.detach().flatten(1).double()
    if bool(((flat < lo) | (flat > hi)).any()):
        raise InvalidInputError("inputs lie outside the domain box; an attack clipped to the box needs inputs inside it")
    return x, y, eps, order, lo, hi


def _misclassified(model: nn.Module, points: Tensor, labels: Tensor) -> Tensor:
    with torch.no_grad():
        return model(points).argmax(dim=1) != labels


def _direction(model: nn.Module, points: Tensor, labels: Tensor, order: float) -> Tensor:
    """sign(g) (l-inf) or g / ||g||_2 (l2, 0 where g = 0), g = grad of the summed cross-entropy at points."""
    points = points.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(F.cross_entropy(model(points), labels, reduction="sum"), points)
    if order == math.inf:
        return gradient.sign()
    size = gradient.flatten(1).norm(dim=1).view(-1, *([1] * (points.dim() - 1)))
    return torch.where(size > 0, gradient / size.clamp_min(torch.finfo(gradient.dtype).tiny), torch.zeros_like(gradient))


def _into_ball(points: Tensor, x: Tensor, eps: float, order: float, lo: Tensor, hi: Tensor) -> Tensor:
    """points moved into {||x' - x||_p <= eps} and the box [lo, hi], exactly after rounding to x's dtype."""
    spare = torch.finfo(x.dtype).eps  # twice the unit round-off of the inputs' dtype
    base = x.detach().flatten(1).double()
    delta = points.detach().flatten(1).double() - base
    if order == math.inf:
        radius = (eps - spare * (base.abs() + eps)).clamp_min(0.0)
        delta = torch.maximum(torch.minimum(delta, radius), -radius)
    else:
        radius = (eps - spare * (base.norm(dim=1, keepdim=True) + eps)).clamp_min(0.0)
        size = delta.norm(dim=1, keepdim=True)
        delta = delta * torch.where(size > radius, radius / size.clamp_min(1e-300), torch.ones_like(size))
    moved = torch.maximum(torch.minimum(base + delta, hi), lo)
    return moved.to(x.dtype).view_as(x)
