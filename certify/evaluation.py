"""The robustness study (`certify evaluate`): how much explanations change under random and adversarial
perturbations of norm eps, next to what the certificates guarantee.

For each method (a preset of `certify.explain.registry`) and each eps, on the first n test inputs:

* a(x), and a certificate per example at radius eps (`certify.certificates.builder`);
* a(x + d) for d uniform on the sphere of radius eps (the weak baseline) and for d from the L2 top-k
  interpretation attack on that method (`certify.attacks.interpretation`), both keeping the class;
* the normalised L2 distance (MoreauGrad paper, eq. 6), the top-k intersection and SSIM between a(x) and
  a(x + d): mean and standard deviation over the inputs;
* for methods with a certified stability claim: the certified bound B on ||a(x + d) - a(x)||_2, the largest
  observed change (over both perturbations) and their ratio, and the certified lower bound on the top-k
  intersection. An observed change above B, or an observed top-k intersection below its certified lower
  bound, is counted as a violation (a bug: it must stay 0);
* the sparsity of a(x) (Gini index, fraction of zeros);
* for the report's panels: at the largest eps, the input the attack moved most, with a(x), x + d and a(x + d);
  and every method's explanation of the first misclassified test inputs (for the predicted class).

The verdict compares the methods under attack at the largest eps, as the MoreauGrad paper does (Section
6.4, Figures 5-6: MoreauGrad and its sparse variant more robust than gradient, Integrated Gradients and
SmoothGrad), and says whether this run reproduces or refutes that ordering, with the numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from certify.attacks.interpretation import interpretation_attack, random_perturbation
from certify.certificates.builder import certify_explanations
from certify.certificates.document import decode_array
from certify.errors import UsageError
from certify.explain.registry import make_preset
from certify.metrics import gini_index, normalized_l2_distance, ssim, topk_intersection, zero_fraction
from certify.models.datasets import Dataset
from certify.progress import progress_bar
from certify.validation import positive_number

BASELINES = ("gradient", "integrated-gradients", "smoothgrad")
MOREAU = ("moreaugrad", "sparse-moreaugrad")
ATTACKABLE = BASELINES + MOREAU  # the presets the interpretation attack can differentiate through


@dataclass(frozen=True)
class StudyConfig:
    n: int = 32
    eps: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    k: float = 0.2
    steps: int = 20
    restarts: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1 or not self.eps or not 0 < self.k < 1:
            raise UsageError(f"invalid study configuration {self}: need n >= 1, eps > 0, 0 < k < 1")
        for eps in self.eps:
            positive_number(eps, "eps")


def _stats(values: Tensor) -> dict[str, float]:
    v = values.double()
    return {"mean": float(v.mean()), "std": float(v.std()) if v.numel() > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "median": float(v.median())}


def _similarity(a: Tensor, b: Tensor, k: float) -> dict[str, dict[str, float]]:
    out = {"normalized_l2_distance": _stats(normalized_l2_distance(a, b)), "topk_intersection": _stats(topk_intersection(a, b, k))}
    try:
        out["ssim"] = _stats(ssim(a, b))
    except Exception:  # noqa: BLE001 - maps that are not image-shaped have no SSIM
        out["ssim"] = {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "median": math.nan}
    return out


def _certified(certificates: list, claim_id: str) -> Tensor | None:
    values = [next((c.value for c in cert.claims if c.id == claim_id and c.kind == "certified"), None) for cert in certificates]
    return None if any(v is None for v in values) else torch.tensor(values, dtype=torch.float64)


def _method_at_eps(model: nn.Module, label: str, x: Tensor, data: Dataset, eps: float, config: StudyConfig,
                   model_spec: str | None) -> tuple[dict[str, Any], int]:
    explainer = make_preset(label, model)
    k_count = max(1, math.ceil(config.k * x[0].numel()))
    certificates = certify_explanations(explainer, x, eps=eps, k=k_count, model_spec=model_spec)
    original = torch.cat([torch.as_tensor(decode_array(c.explanation, label)) for c in certificates]).to(x.dtype)
    target = torch.tensor([c.target for c in certificates])
    rand = random_perturbation(explainer, x, eps, domain=data.domain, seed=config.seed, k=k_count, target=target)
    attack = interpretation_attack(explainer, x, eps, k=k_count, steps=config.steps, restarts=config.restarts,
                                   domain=data.domain, seed=config.seed, target=target)
    changes = torch.stack([(r.attributions - original).flatten(1).double().norm(dim=1) for r in (rand, attack)]).amax(dim=0)
    topk_seen = torch.stack([topk_intersection(original, r.attributions, k_count) for r in (rand, attack)]).amin(dim=0)
    row: dict[str, Any] = {
        "eps": eps,
        "random": _similarity(original, rand.attributions, k_count),
        "adversarial": _similarity(original, attack.attributions, k_count),
        "attack_success": float(attack.success.double().mean()),
        "observed_change": _stats(changes),
        "sparsity": {"gini": float(gini_index(original).mean()), "zero_fraction": float(zero_fraction(original).mean())},
        "certified_bound": None,
        "observed_over_certified": None,
        "certified_topk": None,
    }
    if eps == max(config.eps):  # the input the attack moved most, before and after (the report's panel)
        i = int((attack.attributions - original).flatten(1).double().norm(dim=1).argmax())
        row["example"] = {"index": i, "shape": list(x.shape[1:]), "target": int(target[i]),
                          **{key: t[i].detach().flatten().double().tolist() for key, t in
                             (("x", x), ("a", original), ("x_attacked", attack.perturbed), ("a_attacked", attack.attributions))}}
    violations = 0
    bound, topk = _certified(certificates, "stability"), _certified(certificates, "topk")
    if bound is not None:
        row["certified_bound"] = _stats(bound)
        row["observed_over_certified"] = _stats(changes / bound)  # per example, must stay <= 1
        violations += int((changes > bound).sum())
    if topk is not None:
        row["certified_topk"] = _stats(topk)
        violations += int((topk_seen < topk - 1e-12).sum())
    return row, violations


def _verdict(methods: dict[str, list[dict[str, Any]]]) -> str:
    present_moreau = [m for m in MOREAU if m in methods]
    present_base = [m for m in BASELINES if m in methods]
    if not present_moreau or not present_base:
        return "The comparison needs at least one MoreauGrad variant and one baseline; not all were run."
    eps = max(r["eps"] for r in methods[present_moreau[0]])
    at = {m: next(r for r in rows if r["eps"] == eps)["adversarial"] for m, rows in methods.items()}
    dist = {m: at[m]["normalized_l2_distance"]["mean"] for m in at}
    topk = {m: at[m]["topk_intersection"]["mean"] for m in at}
    best_base_dist = min(dist[m] for m in present_base)
    best_base_topk = max(topk[m] for m in present_base)
    wins_dist = [m for m in present_moreau if dist[m] < best_base_dist]
    wins_topk = [m for m in present_moreau if topk[m] > best_base_topk]
    numbers = "; ".join(f"{m}: distance {dist[m]:.3f}, top-k {topk[m]:.3f}" for m in at)
    if len(wins_dist) == len(present_moreau) and len(wins_topk) == len(present_moreau):
        outcome = "REPRODUCED: every MoreauGrad variant is more robust than every baseline on both metrics"
    elif not wins_dist and not wins_topk:
        outcome = "REFUTED on this model: no MoreauGrad variant beats the best baseline on either metric"
    else:
        outcome = (f"PARTLY reproduced: lower distance than every baseline for {wins_dist or 'none'}, "
                   f"higher top-k intersection for {wins_topk or 'none'}")
    return f"Under the attack at eps = {eps} (mean over inputs): {outcome}. {numbers}."


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
        "attributions": {label: make_preset(label, model).attribute(x, target=target).detach().flatten(1).double().tolist()
                         for label in methods},
    }


def run_study(model: nn.Module, data: Dataset, model_spec: str | None, methods: list[str], config: StudyConfig) -> dict[str, Any]:
    """The study of the module docstring; returns a JSON-ready dict (what `certify evaluate` writes)."""
    x = data.x_test[: config.n]
    results: dict[str, list[dict[str, Any]]] = {}
    violations = 0
    jobs = [(m, e) for m in methods for e in config.eps]
    for label, eps in progress_bar(jobs, desc="robustness study", unit="case"):
        row, bad = _method_at_eps(model, label, x, data, eps, config, model_spec)
        results.setdefault(label, []).append(row)
        violations += bad
    return {
        "model": model_spec,
        "dataset": data.name,
        "misclassified": _misclassified(model, data, methods),
        "n": int(x.shape[0]),
        "config": {"eps": list(config.eps), "k": config.k, "steps": config.steps, "restarts": config.restarts, "seed": config.seed},
        "description": (
            f"{x.shape[0]} test inputs of {data.name}; each method attacked by the L2 top-k interpretation attack "
            f"({config.steps} steps, {config.restarts} restart(s), k = {config.k:.0%} of the features) and by random "
            "perturbations of the same norm, both keeping the predicted class and the input domain. Certified columns "
            "come from the certificates at the same eps; observed/certified is the largest ratio, over the inputs, of "
            "an input's observed change (worst of both perturbations) to its own certified bound, and must stay <= 1."
        ),
        "methods": results,
        "violations": violations,
        "verdict": _verdict(results),
    }
