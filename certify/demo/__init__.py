"""`certify demo`: the main job on the embedded default (a softplus MLP trained on scikit-learn's digits).

Explains a handful of test digits with every method, writes a certificate per explanation and re-checks it
with the independent checker, draws the heatmaps, runs the quick theorem suite, and writes a Markdown/HTML
index (images embedded in the HTML) and a JSON summary.

The output folder is a run directory (`certify.runs.RunDirectory`): its `manifest.json` lists every file this run
wrote with its sha256. Rerun with the same command after an interrupt, it resumes: the robustness study, the
inverse-problems and importance steps and the theorem checks whose outputs the interrupted run finished are not
redone (the certificates, heatmaps, summary and report are, deterministically). Rerun after it finished, it does
nothing; another command into the same folder is refused unless `overwrite`.
"""
from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import certify
from certify.certificates.builder import certify_explanations
from certify.certificates.checker import verify_certificate
from certify.certificates.document import decode_array
from certify.certificates.summary import vacuous_reasons
from certify.evaluation import ATTACKABLE, StudyConfig, run_study
from certify.explain.registry import PRESETS, make_preset, missing_extra
from certify.models import model_hash, zoo
from certify.models.training import accuracy
from certify.metrics import gini_index, zero_fraction
from certify.progress import progress_bar
from certify.reports.heatmaps import heatmap_grid
from certify.reports.report import claim_table_rows, write_report
from certify.runs import RunDirectory
from certify.demo.importance import importance_step
from certify.demo.inverse import inverse_step


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs: method presets (`certify.explain.registry.PRESETS`) with parameter overrides,
    the stability radius of the certificates, and the robustness study's size."""

    model: str = zoo.DEFAULT_MODEL
    examples: int = 8
    methods: tuple[tuple[str, dict[str, Any]], ...] = (
        ("gradient", {}),
        ("integrated-gradients", {"n_steps": 64}),
        ("smoothgrad", {"samples": 256}),
        ("moreaugrad", {"tol": 1e-6}),
        ("sparse-moreaugrad", {"tol": 1e-6}),
        ("lagrange-dual", {}),
    )
    eps: float = 0.1
    study: StudyConfig = StudyConfig(n=32, eps=(0.1, 0.25, 0.5, 1.0), steps=20, restarts=2)
    theorem_checks_quick: bool = True
    inverse: bool = True  # issue 14's step: prox certificates, the learned regulariser, plug-and-play
    inverse_quick: bool = False  # ... with fewer images, one noise level, PGD only
    importance: bool = True  # issue 15's step: h-Shap, SHAP-XRT, SKIT, certified sufficient subsets
    importance_quick: bool = False  # ... with fewer images, tests, repetitions and steps

    @classmethod
    def quick(cls) -> "DemoConfig":
        return cls(
            examples=4,
            methods=tuple((label, {}) for label in PRESETS if missing_extra(label) is None),
            study=StudyConfig(n=8, eps=(0.25, 1.0), steps=8, restarts=1),
            inverse_quick=True,
            importance_quick=True,
        )


def _params_text(params: dict[str, Any]) -> str:
    """The explainer's parameters for the report, with an input domain named by its box, not its values."""
    shown = dict(params)
    if isinstance(shown.get("domain"), dict):
        sides = [torch.as_tensor(shown["domain"][k] if shown["domain"][k] is not None else sign * float("inf"),
                                 dtype=torch.float64).flatten() for k, sign in (("lower", -1), ("upper", 1))]
        uniform = all(side.numel() > 0 and bool((side == side[0]).all()) for side in sides)
        shown["domain"] = f"[{float(sides[0][0]):g}, {float(sides[1][0]):g}] per feature" if uniform else "per-feature box"
    return json.dumps(shown)


def _report_files(out_dir: Path) -> dict[str, str]:
    return {"markdown": str(out_dir / "index.md"), "html": str(out_dir / "index.html")}


def run_demo(out_dir: Path, config: DemoConfig, command: Sequence[str] | None = None,
             overwrite: bool = False) -> dict[str, Any]:
    """Run the demo, write everything under `out_dir` as one run directory (`certify.runs.RunDirectory` of
    `command`, default: this function and `config`; its parent folder must exist) and return the JSON summary
    that is also written to `out_dir/summary.json`. Raises UsageError when `out_dir` holds another command's run or
    unlisted files and `overwrite` is False; returns the finished run's summary, doing nothing, when the same
    command already finished there."""
    command = list(command) if command is not None else ["certify.demo.run_demo", repr(config)]
    with RunDirectory(out_dir, command, overwrite) as run:
        if run.done:
            return {**json.loads((out_dir / "summary.json").read_text()), "files": _report_files(out_dir), "reused": True}
        return _run(run, out_dir, config)


def _step(run: RunDirectory, name: str, step: Callable[[], Any]) -> Any:
    """The JSON output `name` of a step: kept from the run this one resumes, or computed by `step()` (which may
    write files of its own: they are recorded before `name`, so a listed `name` means its files are listed too)."""
    if run.reused(name):
        return json.loads((run.path / name).read_text())
    before = run.snapshot()
    result = step()
    run.record_changed(before)
    run.write(name, json.dumps(result, indent=1))
    return result


def _theorems(run: RunDirectory, quick: bool) -> dict[str, str]:
    """{theorem id: verdict} of the quick theorem suite, its table written (or kept from the resumed run)."""
    from proofs_checks.runner import run_checks, write_table

    if run.reused("THEOREMS.md", "THEOREMS.json"):
        return {r["id"]: r["verdict"] for r in json.loads((run.path / "THEOREMS.json").read_text())["results"]}
    results = run_checks(quick=quick, progress=True)
    run.record(*write_table(results, run.path, quick=quick))
    return {r.id: r.verdict for r in results}


def _run(run: RunDirectory, out_dir: Path, config: DemoConfig) -> dict[str, Any]:
    model, data = zoo.load(config.model)
    x, y = data.x_test[: config.examples], data.y_test[: config.examples]
    predicted = model(x).argmax(dim=1)

    attributions: dict[str, torch.Tensor] = {}
    method_rows, claim_rows, verified_counts = [], [], {}
    cert_dir = out_dir / "certificates"
    cert_dir.mkdir(exist_ok=True)
    for label, overrides in progress_bar(config.methods, desc="explaining and certifying", unit="method"):
        explainer = make_preset(label, model, domain=data.domain, **overrides)
        start = time.perf_counter()
        certificates = certify_explanations(explainer, x, eps=config.eps, model_spec=config.model)
        seconds = time.perf_counter() - start
        attributions[label] = torch.cat([torch.as_tensor(decode_array(c.explanation, label)) for c in certificates])
        verified, probabilistic, unchecked, vacuous = 0, 0, 0, 0
        for i, cert in enumerate(certificates):
            run.record(cert.write(cert_dir / f"{label}-{i}.json"))
            report = verify_certificate(cert, model, cert_dir)
            verified += report.valid
            probabilistic += len(report.by_status("valid (probabilistic)"))
            unchecked += len(report.by_status("not re-checkable"))
            vacuous += sum(1 for why in vacuous_reasons(cert, cert_dir).values() if why)
        verified_counts[label] = f"{verified}/{len(certificates)} verified" + (
            f" ({probabilistic} probabilistic claims recomputed from seeds)" if probabilistic else "") + (
            f" ({unchecked} solver-reported claims not re-checkable)" if unchecked else "") + (
            f" ({vacuous} vacuous claims: true, but certify nothing)" if vacuous else "")
        function = certificates[0].function
        method_rows.append([
            label, _params_text(explainer.params()), f"{seconds:.3f}", verified_counts[label],
            f"{float(gini_index(attributions[label]).mean()):.3f}", f"{float(zero_fraction(attributions[label]).mean()):.3f}",
        ])
        claim_rows += claim_table_rows(label, certificates, cert_dir)
    titles = [f"label {int(a)} / pred {int(b)}" for a, b in zip(y, predicted)]
    run.record(heatmap_grid(x, attributions, titles, out_dir / "heatmaps.png"))

    attackable = [label for label, _ in config.methods if label in ATTACKABLE]
    evaluation = _step(run, "evaluation.json", lambda: run_study(model, data, config.model, attackable, config.study))
    inverse = (_step(run, "inverse.json", lambda: inverse_step(out_dir, quick=config.inverse_quick))
               if config.inverse else None)
    importance = (_step(run, "importance.json", lambda: importance_step(out_dir, quick=config.importance_quick))
                  if config.importance else None)
    theorems = _theorems(run, config.theorem_checks_quick)

    summary = {
        "model": config.model,
        "description": (
            f"Model `{config.model}` (weights sha256 {model_hash(model)[:16]}…), test accuracy "
            f"{accuracy(model, data.x_test, data.y_test):.4f} on {data.name}; {len(x)} test examples, explained for "
            "the predicted class. Every explanation has the sign of the gradient it generalises."
        ),
        "method_rows": method_rows,
        "certificate_note": (
            f"Claims per method over the {len(x)} examples (stability radius eps = {config.eps} in L2). Every claim "
            "is a typed statement about the network N (the model's traced graph with exact softplus; the distance "
            "between N and torch's thresholded implementation is its own claim, implementation-deviation), its text "
            "rendered from its parameters. "
            + (f"Conformance of N with the model: max deviation {function['conformance']['max_deviation']:.3g} "
               f"within tolerance {function['conformance']['tolerance']:.3g} on {function['conformance']['points']} "
               "points. " if "conformance" in function else f"No translation: {function.get('refused')}. ")
            + "Certified values are re-derived by the independent checker (`certify verify`) from the model, the "
            "input, the explanation and the parameters; probabilistic ones are recomputed from their stored seeds; "
            "solver-reported ones are not re-checkable; refused claims say why no number is guaranteed; vacuous "
            "values (a certified top-k of 0, a stability bound not smaller than the explanation's own norm) are "
            "true but certify nothing: counted apart, never in the value column."
        ),
        "claim_rows": claim_rows,
        "certificates": verified_counts,
        "robustness_verdict": evaluation["verdict"],
        "skipped_methods": [why for label in PRESETS if (why := missing_extra(label)) is not None],
        "prox": {e["model"]: e["answer"] + ("" if e["verified"] else " (certificate INVALID)")
                 for e in (inverse or {}).get("prox", [])},
        "theorems": theorems,
        "environment": {
            "certify": certify.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "device": "cpu", "torch threads": torch.get_num_threads(),
            **{f"seconds {row[0]}": row[2] for row in method_rows},
        },
    }
    run.write("summary.json", json.dumps(summary, indent=2))
    before = run.snapshot()
    write_report(out_dir)
    run.record_changed(before)
    summary["files"] = _report_files(out_dir)
    return summary
