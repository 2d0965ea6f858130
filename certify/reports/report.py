"""The report (`certify report DIR`, and the end of `certify demo`): one self-contained HTML file plus
Markdown and JSON, rebuilt from the artefacts a run leaves in DIR:

* `summary.json`: model, examples, methods with timings, certificate claims (issued / refused and why, with
  vacuous values counted apart: `claim_table_rows`), environment (written by the demo);
* `heatmaps.png`: inputs and every method's explanation;
* `evaluation.json` (optional): the robustness study of `certify evaluate`;
* `inverse.json` (optional): issue 14's prox certificates, regulariser and plug-and-play study
  (certify.reports.inverse);
* `importance.json` (optional): issue 15's h-Shap, SHAP-XRT, SKIT and sufficient subsets
  (certify.reports.importance);
* `THEOREMS.json` (optional): the theorem table of `certify check`.

With a run manifest in DIR (`certify.runs`), only the files it lists are read, and every file it lists (the
certificates the report cites included; the report's own outputs, `REPORT_OUTPUTS`, excepted) is checked against
its sha256 first (InvalidInputError naming a changed or missing one): a report never mixes two runs' files nor
cites a changed certificate. Without a manifest the files present are used, with a warning on stderr.

Figures of the robustness study (metric vs eps per method, certified vs empirical) are drawn here.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from certify.certificates.summary import TOPK_VACUOUS, vacuous_label, vacuous_reasons  # noqa: E402
from certify.errors import UsageError  # noqa: E402
from certify.reports.document import Document  # noqa: E402
from certify.reports.heatmaps import attack_panel, heatmap_grid  # noqa: E402
from certify.reports.importance import importance_section  # noqa: E402
from certify.reports.inverse import inverse_section  # noqa: E402
from certify.runs import MANIFEST, atomic_save, atomic_write, report_inputs, run_files  # noqa: E402

METRICS = (("normalized_l2_distance", "normalised L2 distance (lower = more robust)"),
           ("topk_intersection", "top-k intersection (higher = more robust)"),
           ("ssim", "SSIM (higher = more robust)"))
# What a report writes into the run folder (a later `certify report` rewrites them, so they are never checked
# against the manifest nor read back as inputs): its pages, its data and the figures drawn here.
REPORT_OUTPUTS = frozenset({"index.md", "index.html", "report.json", "robustness.png", "certified_vs_empirical.png",
                            "attack_examples.png", "misclassified.png", "regulariser.png"})


def _load(path: Path | None) -> Any | None:
    return json.loads(path.read_text()) if path is not None else None


PALETTE = plt.get_cmap("tab10").colors


def method_colour(method: str, methods: list[str]) -> tuple[float, float, float]:
    """One colour per method, the same in every figure of a report: by the method's place in `methods` (the
    study's method order)."""
    return PALETTE[methods.index(method) % len(PALETTE)]


def robustness_figure(evaluation: dict[str, Any], path: Path) -> Path:
    """Mean metric vs eps, one line per method, for random (dashed) and adversarial (solid) perturbations."""
    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 3.6))
    methods = list(evaluation["methods"])
    for ax, (key, title) in zip(axes, METRICS):
        for method, rows in evaluation["methods"].items():
            eps = [r["eps"] for r in rows]
            colour = method_colour(method, methods)
            ax.plot(eps, [r["adversarial"][key]["mean"] for r in rows], marker="o", label=method, color=colour)
            ax.plot(eps, [r["random"][key]["mean"] for r in rows], ls="--", color=colour)
        ax.set_xlabel("eps (L2 radius of the perturbation)")
        ax.set_ylabel(title.split(" (")[0])
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle("solid: adversarial attack, dashed: random perturbation of the same norm", fontsize=9)
    fig.tight_layout()
    atomic_save(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def certified_figure(evaluation: dict[str, Any], path: Path) -> Path | None:
    """Per certified method and eps: each input's observed change ||a(x+d) - a(x)||_2 (worst of the random
    and adversarial perturbations) over its own certified bound, max and median over the inputs. The
    certificate guarantees every ratio <= 1 (dotted line)."""
    certified = {m: [r for r in rows if r.get("observed_over_certified")] for m, rows in evaluation["methods"].items()}
    certified = {m: rows for m, rows in certified.items() if rows}
    if not certified:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    methods = list(evaluation["methods"])
    for method, rows in certified.items():
        eps = [r["eps"] for r in rows]
        colour = method_colour(method, methods)
        ax.plot(eps, [r["observed_over_certified"]["max"] for r in rows], marker="o", label=f"{method}: max", color=colour)
        ax.plot(eps, [r["observed_over_certified"]["median"] for r in rows], ls="--", marker=".", color=colour,
                label=f"{method}: median")
    ax.axhline(1.0, color="black", ls=":", lw=1, label="certified limit")
    ax.set_xlabel("eps (L2 radius of the perturbation)")
    ax.set_ylabel("observed change / certified bound")
    ax.set_ylim(0, 1.1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_save(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def claim_table_rows(label: str, certificates: list, base_dir: Path | None = None) -> list[list[str]]:
    """The report's claim table (summary.json's `claim_rows`): one row per claim id of `certificates` (one
    method, one certificate per example): method, claim, kind, the spread of its values over the examples
    (median [min, max]; or "-"), and its statement (example 0's, naming its explained class, and the classes of all
    the examples when they differ) (or the refusal reason). A value that is vacuous
    (`certify.certificates.summary`: true, but it certifies nothing) is never part of the spread: the row
    says "vacuous on m/n" with the reason, so an empty certificate is not shown as an achievement."""
    reasons = [vacuous_reasons(cert, base_dir) for cert in certificates]
    classes = ", ".join(str(c) for c in sorted({cert.target for cert in certificates}))
    rows = []
    for claim in certificates[0].claims:
        same = [(c, why[c.id]) for cert, why in zip(certificates, reasons) for c in cert.claims if c.id == claim.id]
        values = sorted(c.value for c, why in same if c.value is not None and not why)
        spread = f"{claim.relation} {values[len(values) // 2]:.4g} [{values[0]:.4g}, {values[-1]:.4g}]" if values else "-"
        kind = claim.kind
        note = claim.reason if claim.kind == "refused" else claim.statement
        if "target" in claim.params and len(classes) > 1:  # the statement is example 0's: say whose class it names
            note = f"(example 0, explained class {certificates[0].target}; the examples' classes: {classes}) {note}"
        empty = sorted({why for _, why in same if why})
        if empty:
            count = sum(1 for _, why in same if why)
            kind = f"{claim.kind}, vacuous on {count}/{len(same)}"
            note = (f"{'; '.join(vacuous_label(why) for why in empty)} on {count} of {len(same)} examples (not in "
                    f"the value column: they certify nothing). {note}")
        rows.append([label, claim.id, kind, spread, note])
    return rows


def split_model_level(rows: list[list[str]]) -> tuple[list[list[str]], list[list[str]]]:
    """(claims every method states identically, once: [claim, kind, value, statement]; the other rows): a claim
    about the model alone (its Lipschitz constant, curvature, implementation deviation) is the same row for every
    method and is shown once, not once per method."""
    methods = list(dict.fromkeys(r[0] for r in rows))
    if len(methods) < 2:
        return [], rows
    by_content: dict[tuple[str, ...], set[str]] = {}
    for r in rows:
        by_content.setdefault(tuple(r[1:]), set()).add(r[0])
    shared = [list(content) for content, who in by_content.items() if len(who) == len(methods)]
    keys = {tuple(c) for c in shared}
    return shared, [r for r in rows if tuple(r[1:]) not in keys]


def _topk_cell(stats: dict[str, float] | None) -> str:
    """The robustness table's certified top-k (mean over the inputs); a 0 is labelled vacuous, not shown as a
    certified number."""
    if stats is None:
        return "-"
    if stats["max"] <= 0:
        return vacuous_label(TOPK_VACUOUS)
    return f"{stats['mean']:.3f}" + (" (vacuous on some inputs: min 0)" if stats["min"] <= 0 else "")


def _interval(stats: dict[str, Any] | None) -> str:
    """'mean [lo, hi]' (the 95% CI of the mean) where the study recorded one, else 'mean ± std' (older studies)."""
    if not stats:
        return "-"
    if "ci95" in stats:
        return f"{stats['mean']:.3f} [{stats['ci95'][0]:.3f}, {stats['ci95'][1]:.3f}]"
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def _robustness_rows(evaluation: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for method, entries in evaluation["methods"].items():
        for r in entries:
            cert = r.get("certified_bound")
            rows.append([
                method, r["eps"],
                _interval(r["random"]["normalized_l2_distance"]), _interval(r["adversarial"]["normalized_l2_distance"]),
                _interval(r["random"]["topk_intersection"]), _interval(r["adversarial"]["topk_intersection"]),
                _interval(r["adversarial"]["ssim"]),
                _interval(r.get("observed_change")),
                "-" if not cert else f"{cert['median']:.4g}",
                "-" if not cert else f"{r['observed_over_certified']['max']:.3f}",
                _topk_cell(r.get("certified_topk")),
            ])
    return rows


def _quality_rows(quality: dict[str, Any]) -> list[list[Any]]:
    return [[method, _interval(q["deletion_auc"]), _interval(q["insertion_auc"]), _interval(q["infidelity"]),
             _interval(q["max_sensitivity"]), "; ".join(f"{c}: {_interval(v)}" for c, v in q["corruption_change"].items()) or "-",
             _interval(q["seconds_per_explanation"]), str(q["peak_memory_bytes"])] for method, q in quality.items()]


def _panels(doc: Document, evaluation: dict[str, Any], out_dir: Path) -> None:
    """The explanations before and after the attack (the input each method's attack moved most, at the largest
    eps) and of misclassified test inputs, when the study recorded them."""
    examples = [(m, rows[-1]["example"]) for m, rows in evaluation["methods"].items() if rows and rows[-1].get("example")]
    if examples:
        shaped = lambda e, key: torch.tensor(e[key]).reshape(e["shape"])  # noqa: E731
        path = attack_panel([(m, shaped(e, "x"), shaped(e, "a"), shaped(e, "x_attacked"), shaped(e, "a_attacked"))
                             for m, e in examples], out_dir / "attack_examples.png")
        eps = evaluation["methods"][examples[0][0]][-1]["eps"]
        doc.image(path, f"Before and after the attack at eps = {eps}: for each method, the test input whose explanation "
                  "the attack changed most (" + ", ".join(f"{m}: input {e['index']}, class {e['target']}" for m, e in examples)
                  + "); one colour scale per row.")
    wrong = evaluation.get("misclassified")
    if wrong and wrong["indices"]:
        x = torch.tensor(wrong["x"]).reshape(len(wrong["indices"]), *wrong["shape"])
        maps = {m: torch.tensor(a).reshape(x.shape) for m, a in wrong["attributions"].items()}
        titles = [f"#{i}: label {y} / pred {p}" for i, y, p in zip(wrong["indices"], wrong["labels"], wrong["predicted"])]
        doc.image(heatmap_grid(x, maps, titles, out_dir / "misclassified.png"),
                  "Misclassified test inputs, each method explaining the predicted (wrong) class.")
    elif wrong:
        doc.paragraph(wrong["note"] + ": no misclassified inputs to show.")


def build_report(out_dir: Path, source: Callable[[str], Path | None] | None = None) -> Document:
    """The report document for the artefacts in `out_dir` (figures are written there too), read through `source`
    (default `certify.runs.report_inputs(out_dir)`: one run's files, hashes checked)."""
    source = source or report_inputs(out_dir)
    summary = _load(source("summary.json"))
    if summary is None:
        raise UsageError(f"{out_dir} holds no summary.json of its run: run `certify demo --out {out_dir}` first")
    evaluation = _load(source("evaluation.json"))
    theorems = _load(source("THEOREMS.json"))
    doc = Document("certify report")
    doc.paragraph(summary["description"])
    doc.heading("Explanations")
    if (heatmaps := source("heatmaps.png")) is not None:
        doc.image(heatmaps, "Each row: an input, then each method's signed explanation drawn over it "
                  "(red raises the explained class's score, blue lowers it; one colour scale per method, its bar below).")
    doc.table(["method", "parameters", "seconds (explain + certify)", "certificates", "Gini of |a|", "zero fraction"],
              summary["method_rows"])
    if summary.get("skipped_methods"):
        doc.paragraph("Not run here: " + "; ".join(summary["skipped_methods"]) + ".")
    doc.heading("Certificates")
    doc.paragraph(summary["certificate_note"])
    shared, per_method = split_model_level(summary["claim_rows"])
    if shared:
        doc.paragraph("Claims about the model alone (the same for every method; shown once):")
        doc.table(["claim", "kind", "value (median [min, max])", "statement or reason"], shared)
    doc.table(["method", "claim", "kind", "value (median [min, max])", "statement or reason"], per_method)
    if evaluation is not None:
        doc.heading("Robustness: certified vs empirical")
        doc.paragraph(evaluation["description"])
        doc.paragraph("Cells: mean [95% confidence interval] over the inputs. 'dist' is the normalised distance (unit-free); "
                      "'‖da‖₂ observed' is the worst absolute change ‖a(x + d) - a(x)‖₂ of an input, in the units of "
                      "the certified bound next to it (its median over the inputs).")
        doc.table(["method", "eps", "dist random", "dist attack", "top-k random", "top-k attack", "SSIM attack",
                   "‖da‖₂ observed", "certified ‖da‖₂ bound", "observed/certified", "certified top-k >="],
                  _robustness_rows(evaluation))
        if evaluation.get("quality"):
            doc.table(["method", "deletion AUC", "insertion AUC", "infidelity", "max-sensitivity", "explanation change under corruption",
                       "seconds / explanation", "peak memory (bytes)"], _quality_rows(evaluation["quality"]))
        doc.image(robustness_figure(evaluation, out_dir / "robustness.png"), "Robustness metrics against eps.")
        figure = certified_figure(evaluation, out_dir / "certified_vs_empirical.png")
        if figure is not None:
            doc.image(figure, "Each input's observed change of its explanation over its own certified bound (<= 1 guaranteed).")
        _panels(doc, evaluation, out_dir)
        doc.heading("The paper's claim")
        doc.paragraph(evaluation["verdict"])
        for claim in evaluation.get("claims", [])[1:]:  # the first is the verdict above
            doc.paragraph(f"{claim['claim']} ({claim['source']}): {claim['verdict']}. {claim['numbers']}")
    inverse = _load(source("inverse.json"))
    if inverse is not None:
        inverse_section(doc, inverse, out_dir, source)
    importance = _load(source("importance.json"))
    if importance is not None:
        importance_section(doc, importance, source)
    if theorems is not None:
        # Tables from `certify check` before issue 16 carry no column definitions nor source claims; their
        # row verdict "refuted" meant a source claim with a counterexample.
        doc.heading("Theorem checks")
        results = theorems["results"]
        claimed = [(r["id"], c) for r in results for c in r.get("source_claims", [])]
        for name, text in theorems.get("columns", {}).items():
            doc.paragraph(f"{name}: {text}.")
        doc.table(["id", "source", "package facts", "source claims", "cases", "violations", "worst ratio", "tolerance"],
                  [[r["id"], r["source"], r["verdict"],
                    "; ".join(f"{c['verdict']} (n={c['n']})" for c in r.get("source_claims", [])) or "-",
                    r["cases"], r["violations"], "-" if r["worst_ratio"] is None else r["worst_ratio"],
                    (r.get("worst_tolerance") or "-") if (r["worst_ratio"] or 0) > 1 else "-"] for r in results])
        if claimed:
            doc.paragraph("Source claims, each with its own verdict beside the package's facts: "
                          + "; ".join(f"{name}: {text}" for name, text in theorems["claim_columns"].items()) + ".")
            doc.table(["id", "claim", "verdict", "n", "numbers", "rule"],
                      [[rid, c["claim"], c["verdict"], c["n"], c["numbers_text"], c["rule"]] for rid, c in claimed])
        for r in results:
            if r["verdict"] == "refuted":
                doc.paragraph(f"{r['id']} refuted: {r['counterexample']}")
        for rid, c in claimed:
            if c["verdict"] == "refuted":
                doc.paragraph(f"{rid} refuted: {c['claim']}: {c['numbers'].get('counterexample', c['numbers_text'])}")
    doc.heading("Timings and environment")
    doc.table(["item", "value"], [[k, v] for k, v in summary["environment"].items()])
    return doc


def write_report(out_dir: Path) -> tuple[Path, Path, Path]:
    """Write index.md, index.html and report.json (the report's data) into out_dir, atomically, from the files of
    the run in out_dir (`build_report`). With a manifest, every file it lists but the report's own outputs
    (`REPORT_OUTPUTS`) is checked against its sha256 first, the certificates the report cites included
    (InvalidInputError naming the first changed or missing one; nothing is written then). Without one, the report
    is built from the files present, with one line on stderr saying that they are unchecked."""
    out_dir = Path(out_dir)
    files = run_files(out_dir, exclude=REPORT_OUTPUTS) if out_dir.is_dir() else None
    if files is None:
        if out_dir.is_dir():
            print(f"certify: {out_dir} has no {MANIFEST}: its files are not checked against the hashes of the run "
                  "that wrote them", file=sys.stderr)
        source = report_inputs(out_dir)
    else:
        source = files.get
    doc = build_report(out_dir, source)
    md, page = doc.write(out_dir)
    data = {key: _load(source(name)) for key, name in (("summary", "summary.json"), ("evaluation", "evaluation.json"),
            ("inverse", "inverse.json"), ("importance", "importance.json"), ("theorems", "THEOREMS.json"))}
    js = atomic_write(out_dir / "report.json", json.dumps(data, indent=1))
    return md, page, js
