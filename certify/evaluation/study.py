"""The robustness study (`certify evaluate`): how much explanations change under random and adversarial
perturbations of l2 norm eps, next to what the certificates guarantee.

For each method (a preset of `certify.explain.registry`) and each eps, on the first n test inputs:

* a(x), and a certificate per example at radius eps (`certify.certificates.builder`);
* a(x + d) for d uniform on the sphere of radius eps (the weak baseline) and for d from an attack on that
  method, both keeping the class: the L2 top-k interpretation attack (`certify.attacks.interpretation`) for
  the methods it differentiates through (`ATTACKABLE`), else a gradient-free random search (the best, per
  input, of `search_draws` random points of the sphere: lowest top-k intersection; `random_search`);
* the normalised L2 distance (MoreauGrad paper, eq. 6: unit-free), the top-k intersection and SSIM between
  a(x) and a(x + d); the absolute change ||a(x + d) - a(x)||_2 (attribution units);
* for methods with a certified stability claim: the certified bound B on ||a(x + d) - a(x)||_2 (the same
  units as the absolute change), the largest observed change (over both perturbations) and their ratio; an
  observed change above B, or an observed top-k intersection below MoreauGrad's certified lower bound, is a
  violation (a bug: it must stay 0);
* certified top-k fractions: MoreauGrad's deterministic claim (the certificate's "topk") and Sparsified
  SmoothGrad's probabilistic one (`certify.bounds.topk_smoothing.certified_topk`, at `topk_confidence`: it
  bounds the overlap of the reported top-k with the TRUE smoothed map's top-k at x + d, not with a fresh
  estimate's, so an observed overlap below it is not a violation);
* the sparsity of a(x) (Gini index, fraction of zeros);
* with `metrics=True`: the quality metrics of `certify.evaluation.quality` per method and the model's
  accuracy under FGSM / PGD;
* for the report's panels: at the largest eps, the input the attack moved most, with a(x), x + d and a(x + d);
  and every method's explanation of the first misclassified test inputs (for the predicted class).

Every mean comes with n and a 95% confidence interval (`certify.evaluation.statistics`); the verdicts on the
papers' claims are in `certify.evaluation.claims`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from certify.attacks.interpretation import interpretation_attack, random_perturbation
from certify.bounds.topk_smoothing import certified_topk
from certify.certificates.builder import certify_explanations
from certify.certificates.document import decode_array
from certify.errors import UsageError
from certify.evaluation.claims import BASELINES, MOREAU, verdicts
from certify.evaluation.quality import model_accuracy, quality_metrics
from certify.evaluation.statistics import summary
from certify.explain.base import Explainer
from certify.explain.registry import PRESETS, make_preset
from certify.explain.sparsified_smoothgrad import SparsifiedSmoothGrad
from certify.metrics import gini_index, normalized_l2_distance, ssim, topk_intersection, zero_fraction
from certify.models.datasets import Dataset
from certify.progress import progress_bar
from certify.validation import positive_int, positive_number

ATTACKABLE = BASELINES + MOREAU  # the presets the interpretation attack can differentiate through
STUDIED = tuple(PRESETS)  # every preset; the others are attacked by the random search


@dataclass(frozen=True)
class StudyConfig:
    """n inputs, l2 radii eps, top-k fraction k, attack steps / restarts, seed; `search_draws`: random points
    per input of the gradient-free search; `topk_confidence`: of Sparsified SmoothGrad's certificate;
    `metrics`: run the quality metrics and the accuracy under attack (with `infidelity_samples`,
    `sensitivity_samples`, `sensitivity_radius` and the corruption `severities`)."""

    n: int = 32
    eps: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    k: float = 0.2
    steps: int = 20
    restarts: int = 2
    seed: int = 0
    search_draws: int = 8
    topk_confidence: float = 0.99
    metrics: bool = False
    infidelity_samples: int = 20
    sensitivity_samples: int = 4
    sensitivity_radius: float = 0.05
    severities: tuple[int, ...] = (3,)

    def __post_init__(self) -> None:
        if self.n < 1 or not self.eps or not 0 < self.k < 1 or not 0 < self.topk_confidence < 1:
            raise UsageError(f"invalid study configuration {self}: need n >= 1, eps > 0, 0 < k < 1, 0 < topk_confidence < 1")
        for eps in self.eps:
            positive_number(eps, "eps")
        for name in ("search_draws", "infidelity_samples", "sensitivity_samples"):
            positive_int(getattr(self, name), name)
        positive_number(self.sensitivity_radius, "sensitivity_radius")
        if not self.severities or any(s not in range(1, 6) for s in self.severities):
            raise UsageError(f"severities must be integers in 1..5, got {self.severities}")


def _similarity(a: Tensor, b: Tensor, k: int) -> dict[str, dict[str, Any]]:
    out = {"normalized_l2_distance": summary(normalized_l2_distance(a, b)), "topk_intersection": summary(topk_intersection(a, b, k)),
           "absolute_change": summary((b - a).flatten(1).double().norm(dim=1))}
    try:
        out["ssim"] = summary(ssim(a, b))
    except Exception:  # noqa: BLE001 - maps that are not image-shaped have no SSIM
        out["ssim"] = summary(torch.full((a.shape[0],), math.nan))
    return out


def _certified(certificates: list, claim_id: str) -> Tensor | None:
    values = [next((c.value for c in cert.claims if c.id == claim_id and c.kind == "certified"), None) for cert in certificates]
    return None if any(v is None for v in values) else torch.tensor(values, dtype=torch.float64)


def study_explainer(label: str, model: nn.Module, x: Tensor, data: Dataset) -> Explainer:
    """The preset `label` for inputs like x: the data's domain where the method takes one, and occlusion by
    single features (a window of ones of x's rank)."""
    overrides = {"sliding_window_shapes": (1,) * (x.dim() - 1)} if PRESETS[label][0] == "occlusion" else {}
    return make_preset(label, model, domain=data.domain, **overrides)


class Perturbed(NamedTuple):
    """Perturbed inputs x + d [N, ...], their explanations [N, ...] and whether a valid point was found [N]
    (elsewhere d = 0)."""

    points: Tensor
    attributions: Tensor
    success: Tensor


def random_sphere(explainer: Explainer, x: Tensor, eps: float, k: int, domain: Any, seed: int, target: Tensor) -> Perturbed:
    """x + d for d uniform on the l2 sphere of radius eps (`random_perturbation`: clamped to the domain, redrawn
    where the class flips), explained by `explainer` for `target`."""
    drawn = random_perturbation(explainer.model, x, eps, domain=domain, seed=seed, k=k, target=target)
    return Perturbed(drawn.perturbed, explainer.attribute(drawn.perturbed, target=target).detach(), drawn.success)


def random_search(explainer: Explainer, x: Tensor, original: Tensor, eps: float, k: int, draws: int, domain: Any,
                  seed: int, target: Tensor) -> Perturbed:
    """Gradient-free attack on the explanation: per input, of `draws` points of `random_sphere` (seeds seed + 1
    .. seed + draws), the one whose explanation has the lowest top-k intersection with `original` (ties: the
    largest normalised distance)."""
    best, score = None, None
    for j in range(draws):
        trial = random_sphere(explainer, x, eps, k, domain, seed + 1 + j, target)
        value = topk_intersection(original, trial.attributions, k) - 1e-3 * normalized_l2_distance(original, trial.attributions)
        if best is None:
            best, score = trial, value
            continue
        better = value < score
        rows = better.view(-1, *([1] * (x.dim() - 1)))
        best = Perturbed(torch.where(rows, trial.points, best.points), torch.where(rows, trial.attributions, best.attributions),
                         torch.where(better, trial.success, best.success))
        score = torch.minimum(value, score)
    return best


def _method_at_eps(model: nn.Module, label: str, x: Tensor, data: Dataset, eps: float, config: StudyConfig,
                   model_spec: str | None) -> tuple[dict[str, Any], int]:
    explainer = study_explainer(label, model, x, data)
    k_count = max(1, math.ceil(config.k * x[0].numel()))
    certificates = certify_explanations(explainer, x, eps=eps, k=k_count, model_spec=model_spec)
    original = torch.cat([torch.as_tensor(decode_array(c.explanation, label)) for c in certificates]).to(x.dtype)
    target = torch.tensor([c.target for c in certificates])
    rand = random_sphere(explainer, x, eps, k_count, data.domain, config.seed, target)
    if label in ATTACKABLE:
        found = interpretation_attack(explainer, x, eps, k=k_count, steps=config.steps, restarts=config.restarts,
                                      domain=data.domain, seed=config.seed, target=target)
        attack = Perturbed(found.perturbed, found.attributions, found.success)
        how = f"L2 top-k interpretation attack ({config.steps} steps, {config.restarts} restart(s))"
    else:
        attack = random_search(explainer, x, original, eps, k_count, config.search_draws, data.domain, config.seed, target)
        how = f"gradient-free random search (best of {config.search_draws} points of the sphere)"
    changes = torch.stack([(r.attributions - original).flatten(1).double().norm(dim=1) for r in (rand, attack)]).amax(dim=0)
    topk_seen = torch.stack([topk_intersection(original, r.attributions, k_count) for r in (rand, attack)]).amin(dim=0)
    row: dict[str, Any] = {
        "eps": eps,
        "attack": how,
        "random": _similarity(original, rand.attributions, k_count),
        "adversarial": _similarity(original, attack.attributions, k_count),
        "attack_success": float(attack.success.double().mean()),
        "observed_change": summary(changes),
        "sparsity": {"gini": float(gini_index(original).mean()), "zero_fraction": float(zero_fraction(original).mean())},
        "certified_bound": None,
        "observed_over_certified": None,
        "certified_topk": None,
        "certified_topk_kind": None,
        "per_input": {"adversarial_distance": normalized_l2_distance(original, attack.attributions).double().tolist()},
    }
    if eps == max(config.eps):  # the input the attack moved most, before and after (the report's panel)
        i = int((attack.attributions - original).flatten(1).double().norm(dim=1).argmax())
        row["example"] = {"index": i, "shape": list(x.shape[1:]), "target": int(target[i]),
                          **{key: t[i].detach().flatten().double().tolist() for key, t in
                             (("x", x), ("a", original), ("x_attacked", attack.points), ("a_attacked", attack.attributions))}}
    violations = 0
    bound, topk = _certified(certificates, "stability"), _certified(certificates, "topk")
    if bound is not None:
        row["certified_bound"] = summary(bound)
        row["observed_over_certified"] = summary(changes / bound)  # per example, must stay <= 1
        violations += int((changes > bound).sum())
    if topk is not None:
        row["certified_topk"], row["certified_topk_kind"] = summary(topk), "deterministic (certificate)"
        violations += int((topk_seen < topk - 1e-12).sum())
    elif isinstance(explainer, SparsifiedSmoothGrad):
        count = certified_topk(original.flatten(1), k_count, eps, explainer.sigma, explainer.samples, config.topk_confidence)
        row["certified_topk"] = summary(count.double() / k_count)
        row["certified_topk_kind"] = f"probabilistic (confidence {config.topk_confidence})"
    return row, violations


def _misclassified(model: nn.Module, data: Dataset, methods: list[str], count: int = 4) -> dict[str, Any]:
    """Each method's explanation, for the predicted (wrong) class, of the first `count` misclassified test inputs."""
    with torch.no_grad():
        predicted = model(data.x_test).argmax(dim=1)
    wrong = torch.nonzero(predicted != data.y_test).flatten()[:count]
    if wrong.numel() == 0:
        return {"indices": [], "note": f"every test input of {data.name} is classified correctly"}
    x, target = data.x_test[wrong], predicted[wrong]
    return {
        "indices": wrong.tolist(), "labels": data.y_test[wrong].tolist(), "predicted": target.tolist(),
        "shape": list(x.shape[1:]), "x": x.flatten(1).double().tolist(),
        "attributions": {label: study_explainer(label, model, x, data).attribute(x, target=target).detach().flatten(1).double().tolist()
                         for label in methods},
    }


def _quality(model: nn.Module, data: Dataset, methods: list[str], x: Tensor, config: StudyConfig) -> dict[str, Any]:
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    out = {}
    for label in progress_bar(methods, desc="quality metrics", unit="method"):
        explainer = study_explainer(label, model, x, data)
        out[label] = quality_metrics(explainer, x, target, explainer.attribute(x, target=target).detach(), data, config)
    return out


def run_study(model: nn.Module, data: Dataset, model_spec: str | None, methods: list[str], config: StudyConfig) -> dict[str, Any]:
    """The study of the module docstring; returns a JSON-ready dict (what `certify evaluate` writes).
    UsageError for a method that is not a preset."""
    unknown = [m for m in methods if m not in STUDIED]
    if unknown:
        raise UsageError(f"unknown methods {unknown}; choose from {sorted(STUDIED)}")
    x = data.x_test[: config.n]
    results: dict[str, list[dict[str, Any]]] = {}
    violations = 0
    jobs = [(m, e) for m in methods for e in config.eps]
    for label, eps in progress_bar(jobs, desc="robustness study", unit="case"):
        row, bad = _method_at_eps(model, label, x, data, eps, config, model_spec)
        results.setdefault(label, []).append(row)
        violations += bad
    quality = _quality(model, data, methods, x, config) if config.metrics else None
    claims = verdicts(results, quality, seed=config.seed)
    return {
        "model": model_spec,
        "dataset": data.name,
        "misclassified": _misclassified(model, data, methods),
        "n": int(x.shape[0]),
        "config": {"eps": list(config.eps), "k": config.k, "steps": config.steps, "restarts": config.restarts, "seed": config.seed,
                   "search_draws": config.search_draws, "topk_confidence": config.topk_confidence, "metrics": config.metrics},
        "description": (
            f"{x.shape[0]} test inputs of {data.name}; {', '.join(m for m in methods if m in ATTACKABLE) or 'no method'} attacked "
            f"by the L2 top-k interpretation attack ({config.steps} steps, {config.restarts} restart(s), k = {config.k:.0%} of "
            f"the features), the others ({', '.join(m for m in methods if m not in ATTACKABLE) or 'none'}) by a gradient-free "
            f"random search (best of {config.search_draws} random points of the sphere, as the attack cannot differentiate "
            "through them), all by random perturbations of the same norm, every point keeping the predicted class and the "
            "input domain. Distances: 'normalised' is eq. 6 of the MoreauGrad paper (unit-free); 'absolute' is "
            "||a(x + d) - a(x)||_2 in attribution units, the units of the certified bound. observed/certified is the largest "
            "ratio, over the inputs, of an input's observed absolute change (worst of both perturbations) to its own "
            "certified bound, and must stay <= 1. Means are given with 95% confidence intervals [lo, hi] and n."
        ),
        "methods": results,
        "quality": quality,
        "accuracy": model_accuracy(model, x, data.y_test[: config.n], data, config.eps, config.seed) if config.metrics else None,
        "claims": claims,
        "violations": violations,
        "verdict": claims[0]["verdict"] + " " + claims[0]["numbers"],
    }
