"""`certify demo`: the main job on the embedded default (a softplus MLP trained on scikit-learn's digits).

Explains a handful of test digits with every registered method, draws the heatmaps, runs the quick
theorem suite, and writes a Markdown/HTML index (images embedded in the HTML) and a JSON summary.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import certify
from certify.explain.registry import make_explainer
from certify.models import model_hash, zoo
from certify.models.training import accuracy
from certify.progress import progress_bar
from certify.reports.document import Document
from certify.reports.heatmaps import heatmap_grid


@dataclass(frozen=True)
class DemoConfig:
    model: str = zoo.DEFAULT_MODEL
    examples: int = 8
    methods: tuple[tuple[str, dict[str, Any]], ...] = (
        ("gradient", {}),
        ("integrated-gradients", {"n_steps": 64}),
        ("smoothgrad", {"sigma": 0.15, "samples": 256, "relative": True, "seed": 0}),
    )
    theorem_checks_quick: bool = True

    @classmethod
    def quick(cls) -> "DemoConfig":
        return cls(
            examples=4,
            methods=(
                ("gradient", {}),
                ("integrated-gradients", {"n_steps": 32}),
                ("smoothgrad", {"sigma": 0.15, "samples": 64, "relative": True, "seed": 0}),
            ),
        )


def _diagnostic_summary(diagnostics: dict[str, torch.Tensor]) -> str:
    parts = []
    for name, values in diagnostics.items():
        v = values.detach().double()
        parts.append(f"{name}: max |.| {float(v.abs().max()):.3g}")
    return "; ".join(parts)


def run_demo(out_dir: Path, config: DemoConfig) -> dict[str, Any]:
    """Run the demo, write everything under `out_dir` (existing files of other names are kept), and
    return the JSON summary that is also written to `out_dir/summary.json`."""
    from proofs_checks.runner import run_checks, write_table

    out_dir.mkdir(parents=True, exist_ok=True)
    model, data = zoo.load(config.model)
    x, y = data.x_test[: config.examples], data.y_test[: config.examples]
    predicted = model(x).argmax(dim=1)

    attributions: dict[str, torch.Tensor] = {}
    rows = []
    for name, params in progress_bar(config.methods, desc="explaining", unit="method"):
        start = time.perf_counter()
        explanation = make_explainer(name, model, **params).explain(x)
        seconds = time.perf_counter() - start
        attributions[name] = explanation.attributions
        rows.append([name, json.dumps(params), f"{seconds:.3f}", _diagnostic_summary(explanation.diagnostics)])
    titles = [f"label {int(a)} / pred {int(b)}" for a, b in zip(y, predicted)]
    grid = heatmap_grid(x, attributions, titles, out_dir / "heatmaps.png")

    results = run_checks(quick=config.theorem_checks_quick, progress=True)
    theorems_md, _ = write_table(results, out_dir, quick=config.theorem_checks_quick)

    doc = Document("certify demo")
    doc.paragraph(
        f"Model `{config.model}` (weights sha256 {model_hash(model)[:16]}…), test accuracy "
        f"{accuracy(model, data.x_test, data.y_test):.4f} on {data.name}; {len(x)} test examples, "
        "explained for the predicted class. Every explanation has the sign of the gradient it generalises."
    )
    doc.heading("Explanations")
    doc.image(grid, "Each row: input, then each method's signed explanation (red > 0, blue < 0).")
    doc.table(["method", "parameters", "seconds", "diagnostics"], rows)
    doc.heading("Theorem checks (quick)")
    doc.table(
        ["id", "verdict", "cases", "violations", "worst ratio"],
        [[r.id, r.verdict, r.cases, r.violations, "-" if r.worst_ratio is None else r.worst_ratio] for r in results],
    )
    doc.paragraph(f"Full statements, parts and counterexamples: {theorems_md.name}.")
    doc.heading("Environment")
    doc.paragraph(
        f"certify {certify.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}, device cpu."
    )
    md, page = doc.write(out_dir)
    summary = {
        "model": config.model,
        "examples": len(x),
        "methods": [r[0] for r in rows],
        "seconds": {r[0]: float(r[2]) for r in rows},
        "theorems": {r.id: r.verdict for r in results},
        "files": {"markdown": str(md), "html": str(page), "heatmaps": str(grid), "theorems": str(theorems_md)},
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
