"""Verdicts on the papers' claims from the study's numbers, each with n and 95% confidence intervals, never
"reproduced" or "refuted" from fewer than `statistics.MIN_EVIDENCE` inputs ("not enough evidence" instead):

* MoreauGrad paper, Sec. 6.4 (Figs. 5-6): MoreauGrad and its sparse variant are more robust under the
  interpretation attack than the gradient, Integrated Gradients and SmoothGrad (normalised distance lower, top-k
  intersection higher, at the largest eps). Reproduced when every variant's interval lies strictly beyond every
  baseline's on both metrics; refuted when no variant's mean beats the best baseline on either;
* Lagrange-dual proposal: its explainer is 15-20% more stable under attack than SHAP (kernel-shap) and LIME:
  gain = 1 - mean d_LD / mean d_B, d the normalised distance under attack at the largest eps on the same
  inputs (bootstrap interval). Reproduced when the interval lies above 15%, refuted when below;
* Lagrange-dual proposal: 2-3x faster than SHAP / LIME at matched quality: speed-up = mean t_B / mean t_LD
  (seconds per explanation, bootstrap interval), quality q = insertion AUC - deletion AUC (paired t-interval of
  q_LD - q_B; matched unless the interval lies below 0). Reproduced when the speed-up's interval lies above 2
  at matched quality, refuted when below 2 (or when the quality is significantly lower).
"""
from __future__ import annotations

from typing import Any

import torch

from certify.evaluation.statistics import MIN_EVIDENCE, enough, interval, ratio_of_means, summary

BASELINES = ("gradient", "integrated-gradients", "smoothgrad")
MOREAU = ("moreaugrad", "sparse-moreaugrad")
SHAP_LIME = ("kernel-shap", "lime")
LAGRANGE = "lagrange-dual"


def _claim(claim: str, source: str, verdict: str, numbers: str, n: int) -> dict[str, Any]:
    return {"claim": claim, "source": source, "verdict": verdict, "numbers": numbers, "n": n}


def _insufficient(n: int) -> str:
    return f"NOT ENOUGH EVIDENCE (n = {n} < {MIN_EVIDENCE} inputs)"


def _at_largest(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return max(rows, key=lambda r: r["eps"])


def moreaugrad_ordering(methods: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    claim, source = "MoreauGrad variants more robust under attack than gradient, IG and SmoothGrad", "MoreauGrad paper, Sec. 6.4"
    moreau, base = [m for m in MOREAU if m in methods], [m for m in BASELINES if m in methods]
    if not moreau or not base:
        return _claim(claim, source, "NOT RUN", "The comparison needs at least one MoreauGrad variant and one baseline.", 0)
    at = {m: _at_largest(methods[m]) for m in moreau + base}
    eps = at[moreau[0]]["eps"]
    dist = {m: at[m]["adversarial"]["normalized_l2_distance"] for m in at}
    topk = {m: at[m]["adversarial"]["topk_intersection"] for m in at}
    n = min(d["n"] for d in dist.values())
    numbers = (f"Under the attack at eps = {eps}, mean [95% CI]: "
               + "; ".join(f"{m}: distance {interval(dist[m])}, top-k {interval(topk[m])}" for m in at) + ".")
    clear = all(dist[v]["ci95"][1] < dist[b]["ci95"][0] and topk[v]["ci95"][0] > topk[b]["ci95"][1] for v in moreau for b in base)
    none = not any(dist[v]["mean"] < min(dist[b]["mean"] for b in base) or topk[v]["mean"] > max(topk[b]["mean"] for b in base)
                   for v in moreau)
    if not enough(n):
        verdict = _insufficient(n)
    elif clear:
        verdict = "REPRODUCED: every MoreauGrad variant's interval lies beyond every baseline's on both metrics"
    elif none:
        verdict = "REFUTED on this model: no MoreauGrad variant beats the best baseline's mean on either metric"
    else:
        verdict = "PARTLY reproduced: some variant beats the baselines' means, but not every interval lies beyond every baseline's"
    return _claim(claim, source, verdict, numbers, n)


def _gain_verdict(low: float, high: float, n: int, threshold: float, what: str) -> str:
    if not enough(n):
        return _insufficient(n)
    if low >= threshold:
        return f"REPRODUCED ({what} interval above {threshold:g})"
    if high < threshold:
        return f"REFUTED ({what} interval below {threshold:g})"
    return f"INCONCLUSIVE ({what} interval contains {threshold:g})"


def lagrange_stability(methods: dict[str, list[dict[str, Any]]], seed: int) -> dict[str, Any]:
    claim, source = "Lagrange-dual explainer 15-20% more stable under attack than SHAP / LIME", "Lagrange-dual proposal"
    others = [m for m in SHAP_LIME if m in methods]
    if LAGRANGE not in methods or not others:
        return _claim(claim, source, "NOT RUN", "Needs lagrange-dual and kernel-shap or lime in --methods.", 0)
    ld = torch.tensor(_at_largest(methods[LAGRANGE])["per_input"]["adversarial_distance"])
    parts, verdicts, n = [], [], int(ld.numel())
    for m in others:
        ratio = ratio_of_means(ld, torch.tensor(_at_largest(methods[m])["per_input"]["adversarial_distance"]), seed)
        gain = {"mean": 1 - ratio["mean"], "ci95": [1 - ratio["ci95"][1], 1 - ratio["ci95"][0]], "n": ratio["n"]}
        parts.append(f"vs {m}: gain {interval(gain)}")
        verdicts.append(f"vs {m}: " + _gain_verdict(gain["ci95"][0], gain["ci95"][1], n, 0.15, "gain"))
    eps = _at_largest(methods[LAGRANGE])["eps"]
    numbers = (f"gain = 1 - mean distance(lagrange-dual) / mean distance(baseline), normalised distance under the "
               f"random-search attack at eps = {eps} (all three attacked alike), 95% bootstrap CI: " + "; ".join(parts) + ".")
    return _claim(claim, source, "; ".join(verdicts), numbers, n)


def lagrange_speed(quality: dict[str, Any] | None, seed: int) -> dict[str, Any]:
    claim, source = "Lagrange-dual explainer 2-3x faster than SHAP / LIME at matched quality", "Lagrange-dual proposal"
    others = [m for m in SHAP_LIME if quality and m in quality]
    if not quality or LAGRANGE not in quality or not others:
        return _claim(claim, source, "NOT RUN", "Needs --metrics and lagrange-dual with kernel-shap or lime.", 0)
    ld = quality[LAGRANGE]["per_input"]
    parts, verdicts, n = [], [], len(ld["seconds"])
    for m in others:
        other = quality[m]["per_input"]
        speed = ratio_of_means(torch.tensor(other["seconds"]), torch.tensor(ld["seconds"]), seed)
        gap = summary(torch.tensor(ld["quality"]) - torch.tensor(other["quality"]))
        parts.append(f"vs {m}: speed-up {interval(speed)}, quality difference {interval(gap)}")
        if enough(n) and gap["ci95"][1] < 0:
            verdicts.append(f"vs {m}: REFUTED (quality significantly lower: not at matched quality)")
        else:
            verdicts.append(f"vs {m}: " + _gain_verdict(speed["ci95"][0], speed["ci95"][1], n, 2.0, "speed-up"))
    numbers = ("speed-up = mean seconds(baseline) / mean seconds(lagrange-dual), each input explained alone (bootstrap "
               "CI); quality = insertion AUC - deletion AUC, difference lagrange-dual - baseline (t-interval): "
               + "; ".join(parts) + ".")
    return _claim(claim, source, "; ".join(verdicts), numbers, n)


def verdicts(methods: dict[str, list[dict[str, Any]]], quality: dict[str, Any] | None, seed: int = 0) -> list[dict[str, Any]]:
    """The three claims of the module docstring, in that order: [{claim, source, verdict, numbers, n}]."""
    return [moreaugrad_ordering(methods), lagrange_stability(methods, seed), lagrange_speed(quality, seed)]
