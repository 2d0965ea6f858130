"""`certify demo`: the main job on the embedded default (a softplus MLP trained on scikit-learn's digits).

Explains a handful of test digits with every method, writes a certificate per explanation and re-checks it
with the independent checker, draws the heatmaps, runs the quick theorem suite, and writes a Markdown/HTML
index (images embedded in the HTML) and a JSON summary.
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
from certify.certificates.builder import certify_explanations
from certify.certificates.checker import verify_certificate
from certify.certificates.document import decode_array
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
        ("moreaugrad", {"rho": 0.3, "tol": 1e-6}),
        ("moreaugrad", {"rho": 0.3, "sparsity": 0.25, "tol": 1e-6}),
    )
    eps: float = 0.1
    theorem_checks_quick: bool = True

    @classmethod
    def quick(cls) -> "DemoConfig":
        return cls(
            examples=4,
            methods=(
                ("gradient", {}),
                ("integrated-gradients", {"n_steps": 32}),
                ("smoothgrad", {"sigma": 0.15, "samples": 64, "relative": True, "seed": 0}),
                ("moreaugrad", {"rho": 0.3, "tol": 1e-5}),
                ("moreaugrad", {"rho": 0.3, "sparsity": 0.25, "tol": 1e-5}),
            ),
        )


def _label(name: str, params: dict[str, Any]) -> str:
    if name == "moreaugrad" and params.get("sparsity"):
        return "sparse-moreaugrad" if not params.get("group_size") else "group-moreaugrad"
    return name


def _claim_rows(label: str, certificates: list) -> list[list[str]]:
    """One row per claim id: its kind and the spread of its values over the examples (or the refusal reason)."""
    rows = []
    for claim in certificates[0].claims:
        same = [c for cert in certificates for c in cert.claims if c.id == claim.id]
        values = sorted(c.value for c in same if c.value is not None)
        if values:
            spread = f"{claim.relation} {values[len(values) // 2]:.4g} ({values[0]:.4g}-{values[-1]:.4g})"
        else:
            spread = "-"
        note = claim.reason if claim.kind == "refused" else claim.statement
        rows.append([label, claim.id, claim.kind, spread, note])
    return rows


def run_demo(out_dir: Path, config: DemoConfig) -> dict[str, Any]:
    """Run the demo, write everything under `out_dir` (existing files of other names are kept), and
    return the JSON summary that is also written to `out_dir/summary.json`."""
    from proofs_checks.runner import run_checks, write_table

    out_dir.mkdir(parents=True, exist_ok=True)
    model, data = zoo.load(config.model)
    x, y = data.x_test[: config.examples], data.y_test[: config.examples]
    predicted = model(x).argmax(dim=1)

    attributions: dict[str, torch.Tensor] = {}
    rows, claim_rows = [], []
    cert_dir = out_dir / "certificates"
    cert_dir.mkdir(exist_ok=True)
    for name, params in progress_bar(config.methods, desc="explaining and certifying", unit="method"):
        label = _label(name, params)
        start = time.perf_counter()
        certificates = certify_explanations(make_explainer(name, model, **params), x, eps=config.eps, model_spec=config.model)
        seconds = time.perf_counter() - start
        attributions[label] = torch.cat([torch.as_tensor(decode_array(c.explanation, label)) for c in certificates])
        verified = 0
        for i, cert in enumerate(certificates):
            path = cert.write(cert_dir / f"{label}-{i}.json")
            verified += verify_certificate(cert, model, path.parent).valid
        rows.append([label, json.dumps(params), f"{seconds:.3f}", f"{verified}/{len(certificates)} verified"])
        claim_rows += _claim_rows(label, certificates)
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
    doc.table(["method", "parameters", "seconds (explain + certify)", "certificates"], rows)
    doc.heading("Certificates")
    doc.paragraph(
        f"Claims per method over the {len(x)} examples (stability radius eps = {config.eps} in L2). Certified values "
        "are re-checked by the independent checker (`certify verify`); refused claims say why no number is guaranteed."
    )
    doc.table(["method", "claim", "kind", "value (median, min-max)", "note"], claim_rows)
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
        "certificates": {r[0]: r[3] for r in rows},
        "theorems": {r.id: r.verdict for r in results},
        "files": {"markdown": str(md), "html": str(page), "heatmaps": str(grid), "theorems": str(theorems_md)},
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
