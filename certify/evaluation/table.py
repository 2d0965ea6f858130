"""The study's results as plain-text tables (what `certify evaluate` prints and `benchmarks/study.py` shows):
every method x every metric, each cell a mean with its 95% confidence interval [lo, hi], n in the headers."""
from __future__ import annotations

from typing import Any

CERTIFIED_TOPK_METHODS = ("moreaugrad", "sparse-moreaugrad", "sparsified-smoothgrad")


def _cell(s: dict[str, Any] | None) -> str:
    if not s:
        return "-"
    lo, hi = s["ci95"]
    return f"{s['mean']:.3g} [{lo:.3g}, {hi:.3g}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths))  # noqa: E731
    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def robustness_table(result: dict[str, Any]) -> list[str]:
    """method x eps: normalised distances (unit-free) apart from the absolute change ||a(x + d) - a(x)||_2 and the
    certified bound on it (attribution units), top-k, certified top-k."""
    rows = []
    for method, entries in result["methods"].items():
        for r in entries:
            ratio = r["observed_over_certified"]
            rows.append([method, f"{r['eps']:g}", _cell(r["random"]["normalized_l2_distance"]),
                         _cell(r["adversarial"]["normalized_l2_distance"]), _cell(r["adversarial"]["topk_intersection"]),
                         _cell(r["observed_change"]), _cell(r["certified_bound"]), "-" if not ratio else f"{ratio['max']:.3f}",
                         _cell(r["certified_topk"])])
    return _table(["method", "eps", "normalised dist random", "normalised dist attack", "top-k attack",
                   "absolute ||da||_2 (worst)", "certified bound on ||da||_2", "obs/cert max", "certified top-k >="], rows)


def topk_table(result: dict[str, Any]) -> list[str]:
    """Sparsified SmoothGrad's probabilistic certified top-k fraction next to MoreauGrad's deterministic one, per eps."""
    present = [m for m in CERTIFIED_TOPK_METHODS if m in result["methods"]]
    eps = sorted({r["eps"] for m in present for r in result["methods"][m]})
    rows = [[f"{e:g}", *(_cell(next((r["certified_topk"] for r in result["methods"][m] if r["eps"] == e), None)) for m in present)]
            for e in eps]
    kinds = {m: next((r["certified_topk_kind"] for r in result["methods"][m] if r["certified_topk_kind"]), "none") for m in present}
    return _table(["eps", *(f"{m} ({kinds[m]})" for m in present)], rows)


def quality_table(result: dict[str, Any]) -> list[str]:
    quality = result.get("quality")
    if not quality:
        return []
    corruptions = sorted({c for q in quality.values() for c in q["corruption_change"]})
    rows = [[m, _cell(q["deletion_auc"]), _cell(q["insertion_auc"]), _cell(q["infidelity"]), _cell(q["max_sensitivity"]),
             *(_cell(q["corruption_change"].get(c)) for c in corruptions), _cell(q["seconds_per_explanation"]),
             str(q["peak_memory_bytes"])] for m, q in quality.items()]
    return _table(["method", "deletion AUC (lower better)", "insertion AUC (higher better)", "infidelity", "max-sensitivity",
                   *(f"change {c}" for c in corruptions), "seconds / explanation", "peak memory (bytes)"], rows)


def accuracy_table(result: dict[str, Any]) -> list[str]:
    accuracy = result.get("accuracy")
    if not accuracy:
        return []
    return _table(["accuracy (l2 ball)", *accuracy], [["", *(_cell(v) for v in accuracy.values())]])


def render(result: dict[str, Any]) -> str:
    """Every table of the study and the verdicts on the claims, as text."""
    lines = [f"{result['dataset']}, model {result['model']}, n = {result['n']} test inputs; cells: mean [95% CI].", "",
             "Robustness (normalised distances: eq. 6 of the MoreauGrad paper, unit-free; absolute change and certified "
             "bound: ||a(x + d) - a(x)||_2 in attribution units)", *robustness_table(result), ""]
    if any(m in result["methods"] for m in CERTIFIED_TOPK_METHODS):
        lines += ["Certified top-k fraction (lower bound on the top-k intersection within the l2 ball of radius eps)",
                  *topk_table(result), ""]
    for title, table in (("Quality metrics", quality_table(result)), ("Accuracy under attack", accuracy_table(result))):
        if table:
            lines += [title, *table, ""]
    lines += ["Claims"] + [f"- {c['claim']} ({c['source']}): {c['verdict']}. {c['numbers']}" for c in result["claims"]]
    lines.append(f"violations of certified bounds: {result['violations']}")
    return "\n".join(lines)


def render_sweep(sweep: dict[str, Any]) -> str:
    """The parameter sweep as text: discrepancy from the gradient and Gini index per setting, the matched pairs
    and the two marked rho values."""
    thumb = sweep["rule_of_thumb_rho"]
    rows = [[f"moreaugrad rho = {r['rho']:.3g}" + (" (rule of thumb)" if r["rho"] == thumb else ""), _cell(r["discrepancy"]), _cell(r["gini"])]
            for r in sweep["rows"]["rho"]]
    rows += [[f"moreaugrad rho = {r['rho']:g}, eta = {r['eta']:g}", _cell(r["discrepancy"]), _cell(r["gini"])] for r in sweep["rows"]["eta"]]
    rows += [[f"smoothgrad sigma = {r['sigma']:g}", _cell(r["discrepancy"]), _cell(r["gini"])] for r in sweep["rows"]["sigma"]]
    auto = sweep["certified_optimal_rho"]
    rows.append([f"moreaugrad rho = auto (certified-optimal at eps = {sweep['eps']:g})", _cell(auto["auto"]["discrepancy"]),
                 _cell(auto["auto"]["gini"])])
    lines = [f"Parameter sweep on {sweep['dataset']}, n = {sweep['n']}: discrepancy = ||a - grad||_2 / ||grad||_2",
             *_table(["setting", "discrepancy", "Gini index"], rows), "",
             f"rule of thumb rho = 1/sqrt(E||X||_2) = {thumb:.4g}; certified-optimal rho (per input, eps = {sweep['eps']:g}): "
             f"{_cell(auto)} (median {auto['median']:.4g}, chosen for {auto['certified_fraction']:.0%} of the inputs)", "",
             "At matched sparsity (nearest mean Gini):"]
    lines += [f"  rho {m['rho']:.3g} (Gini {m['gini_moreaugrad']:.3f}, discrepancy {m['discrepancy_moreaugrad']:.3g}) vs sigma "
              f"{m['sigma']:g} (Gini {m['gini_smoothgrad']:.3f}, discrepancy {m['discrepancy_smoothgrad']:.3g})" for m in sweep["matched_sparsity"]]
    return "\n".join(lines)
