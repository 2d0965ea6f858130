"""Per-method quality metrics of the study (issue 16, item 3), each on the study's inputs x [N, ...] and
explained classes:

* deletion and insertion AUC (Petsiuk, Das & Saenko, BMVC 2018, Sec. 4.1; insertion starts from a blurred copy of
  the input, `gaussian-blur` at severity 5, as RISE does; from 0 for inputs that are not images);
* infidelity (Yeh et al., NeurIPS 2019, eq. 2; the "noisy-baseline" perturbation, clamped to the data's domain);
* max-sensitivity (Yeh et al. 2019, Def. 3.1, relative, in an l-inf ball of radius `sensitivity_radius`, clamped
  to the data's domain);
* the explanation's change under each common corruption (Hendrycks & Dietterich, ICLR 2019) at the configured
  severities: normalised L2 distance (MoreauGrad paper, eq. 6) between a(x) and a(corrupt(x));
* time per explanation: each input explained alone (n timings, seconds), and the peak accelerator memory of
  the batched call (torch.cuda.max_memory_allocated; "n/a (CPU)" on the CPU);

and the model's accuracy under FGSM and PGD (Goodfellow et al. 2015; Madry et al. 2018) in the l2 ball of
each study eps (`model_accuracy`). Every number is a `statistics.summary` / `proportion` with n and a 95% CI.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch
from torch import Tensor, nn

from certify.attacks.accuracy import ATTACKS, accuracy_under_attack
from certify.evaluation.statistics import proportion, summary
from certify.explain.base import Explainer
from certify.metrics import CORRUPTIONS, corrupt, deletion, infidelity, insertion, max_sensitivity, normalized_l2_distance
from certify.metrics.sensitivity import uniform_ball
from certify.models.datasets import Dataset


def as_images(x: Tensor) -> Tensor | None:
    """x as images [N, C, H, W] (flat square inputs [N, s*s] as [N, 1, s, s]); None when x is not image-like."""
    if x.dim() >= 3:
        return x
    side = math.isqrt(x.shape[1])
    return x.view(-1, 1, side, side) if side * side == x.shape[1] and side > 1 else None


def _domain(data: Dataset) -> tuple[float, float]:
    """The data's domain box as two floats (the corruptions and the infidelity clamp take scalars)."""
    lo, hi = data.domain
    return float(torch.as_tensor(lo).min()), float(torch.as_tensor(hi).max())


def _ball_in_domain(radius: float, data: Dataset, seed: int) -> Callable[[Tensor], Tensor]:
    """Yeh et al.'s uniform l-inf ball sampler (`certify.metrics.sensitivity.uniform_ball`), clamped to the
    data's domain box (explainers such as the Lagrange-dual one refuse points outside it)."""
    draw = uniform_ball(radius, torch.Generator().manual_seed(seed))
    lo, hi = data.domain

    def perturb(points: Tensor) -> Tensor:
        moved = draw(points)
        return torch.minimum(torch.maximum(moved, torch.as_tensor(lo, dtype=moved.dtype)), torch.as_tensor(hi, dtype=moved.dtype))

    return perturb


def quality_metrics(explainer: Explainer, x: Tensor, target: Tensor, attributions: Tensor, data: Dataset,
                    config: Any) -> dict[str, Any]:
    """The metrics of the module docstring for one method; `attributions` = explainer(x, target) [N, ...]."""
    model = explainer.model
    images = as_images(x)
    domain = _domain(data)
    baseline = 0.0 if images is None else corrupt(images, "gaussian-blur", 5, domain=domain).view_as(x)
    deleted = deletion(model, x, attributions, target).auc
    inserted = insertion(model, x, attributions, target, baseline=baseline).auc
    out: dict[str, Any] = {
        "deletion_auc": summary(deleted),
        "insertion_auc": summary(inserted),
        "infidelity": summary(infidelity(model, x, attributions, target, "noisy-baseline", n_samples=config.infidelity_samples,
                                         domain=domain, seed=config.seed)),
        "max_sensitivity": summary(max_sensitivity(explainer.attribute, x, target, n_samples=config.sensitivity_samples,
                                                   perturbation=_ball_in_domain(config.sensitivity_radius, data, config.seed))),
        "corruption_change": {},
    }
    if images is not None:
        for name in CORRUPTIONS:
            for severity in config.severities:
                shifted = corrupt(images, name, severity, seed=config.seed, domain=domain).view_as(x)
                change = normalized_l2_distance(attributions, explainer.attribute(shifted, target=target))
                out["corruption_change"][f"{name}@{severity}"] = summary(change)
    seconds, memory = _cost(explainer, x, target)
    out.update(seconds_per_explanation=summary(seconds), peak_memory_bytes=memory,
               per_input={"seconds": seconds.tolist(), "quality": (inserted - deleted).double().tolist()})
    return out


def _cost(explainer: Explainer, x: Tensor, target: Tensor) -> tuple[Tensor, Any]:
    """Seconds per explanation (each input alone: a single-input call is how a user explains one input, and it
    gives one timing per input) and the peak accelerator memory of the batched call."""
    seconds = torch.empty(x.shape[0], dtype=torch.float64)
    for i in range(x.shape[0]):  # timing, not a hot path: one timed call per input
        start = time.perf_counter()
        explainer.attribute(x[i : i + 1], target=target[i : i + 1])
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        seconds[i] = time.perf_counter() - start
    memory: Any = "n/a (CPU)"
    if x.is_cuda:
        torch.cuda.reset_peak_memory_stats(x.device)
        explainer.attribute(x, target=target)
        memory = int(torch.cuda.max_memory_allocated(x.device))
    return seconds, memory


def model_accuracy(model: nn.Module, x: Tensor, labels: Tensor, data: Dataset, eps: tuple[float, ...], seed: int
                   ) -> dict[str, Any]:
    """Accuracy on x (clean) and under FGSM and PGD in the l2 ball of each eps, clipped to the data's domain:
    {"clean": proportion, "fgsm@eps": proportion, "pgd@eps": proportion, ...}."""
    with torch.no_grad():
        out = {"clean": proportion(model(x).argmax(dim=1) == labels)}
    for attack in ATTACKS:
        for e in eps:
            correct = accuracy_under_attack(model, x, labels, e, attack, 2, domain=data.domain, seed=seed)
            out[f"{attack}@{e:g}"] = proportion(correct)
    return out
