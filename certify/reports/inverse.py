"""The report's inverse-problems section (issue 14), from `inverse.json` written by the demo: the prox
certificates of a learned proximal network and of a plain MLP denoiser, the regulariser R an LPN implies
against |x| (with its certified interval), the 1-D denoisers against the Laplace closed forms, and the
plug-and-play table with each run's convergence certificate; figures drawn here from the JSON, except the
reconstruction grid, which the demo draws (`reconstruction_grid`) from the images it holds."""
from __future__ import annotations

from pathlib import Path
from collections.abc import Callable
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from certify.reports.document import Document  # noqa: E402
from certify.runs import atomic_save  # noqa: E402


def regulariser_figure(data: dict[str, Any], path: Path) -> Path:
    """R(x) - R(0) with its certified interval against |x| (left), and the 1-D denoisers against the closed forms
    (right, when present)."""
    reg = data["regulariser"]
    panels = 2 if data.get("denoisers_1d") else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.6), squeeze=False)
    ax = axes[0][0]
    x = np.asarray(reg["x"])
    ax.plot(x, np.abs(x), color="black", ls="--", label="|x| (MAP prior: -log Laplace(0, 1))")
    ax.fill_between(x, reg["lower"], reg["upper"], color="tab:blue", alpha=0.25, label="certified interval")
    ax.plot(x, reg["value"], color="tab:blue", label=f"R(x) - R(0), {reg['model']}")
    ax.set_xlabel("x")
    ax.legend(fontsize=7)
    ax.set_title(f"learned regulariser (max |R - R(0) - |x|| = {reg['max_error']:.3f})", fontsize=9)
    if panels == 2:
        ax = axes[0][1]
        curves = data["denoisers_1d"]
        y = np.asarray(curves["y"])
        for key, reference, color in (("l2", "mean", "tab:green"), ("l1", "median", "tab:orange"), ("pm", "map", "tab:red")):
            if key in curves:
                ax.plot(y, curves[key], color=color, label=f"LPN {key} (max error {curves['errors'][key]:.3f})")
                ax.plot(y, curves[reference], color=color, ls=":", label=f"closed form: {reference}")
        ax.set_xlabel("y = x + v, x ~ Laplace(0, 1), v ~ N(0, 1)")
        ax.legend(fontsize=6)
        ax.set_title("1-D denoisers against the posterior mean, median and MAP", fontsize=9)
    fig.tight_layout()
    atomic_save(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def reconstruction_grid(rows: Sequence[tuple[str, Sequence[np.ndarray]]], columns: Sequence[str], path: Path) -> Path:
    """A grid of images: one row per (label, images [H, W] in column order), `columns` the column titles."""
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(1.6 * len(columns), 1.7 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c, image in enumerate(images):
            ax = axes[r][c]
            ax.imshow(np.clip(image, 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.tight_layout()
    atomic_save(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def _value(claim: dict[str, Any]) -> str:
    if claim["value"] is None:
        return "refused: " + claim["reason"]
    return f"{claim['relation']} {claim['value']:.6g}"


def inverse_section(doc: Document, data: dict[str, Any], out_dir: Path, source: Callable[[str], Path | None]) -> None:
    """Append the section to `doc` (figures written into out_dir; the run's files read through `source`, as in
    `certify.reports.report.build_report`)."""
    doc.heading("Inverse problems: learned proximal networks")
    doc.paragraph(data["description"])
    doc.heading("Is the denoiser a proximal operator?", 3)
    rows = []
    for entry in data["prox"]:
        for c in entry["claims"]:
            statement = "(none: refused, see the value column)" if c["value"] is None else c["statement"]
            rows.append([entry["model"], entry["answer"], c["id"], c["kind"], _value(c), statement])
    doc.table(["denoiser", "answer", "claim", "kind", "value", "statement"], rows)
    doc.paragraph("Re-checked by the independent checker: " + "; ".join(
        f"{e['model']}: {'valid' if e['verified'] else 'INVALID'} ({e['file']})" for e in data["prox"]))
    if data.get("regulariser"):
        doc.heading("The regulariser it implies", 3)
        doc.paragraph(data["regulariser"]["note"])
        trained = [k for k in ("l2", "l1", "pm") if k in data.get("denoisers_1d", {})]
        doc.image(regulariser_figure(data, out_dir / "regulariser.png"),
                  "Left: R(x) - R(0) of the proximal-matching LPN with its certified interval, against |x|. Right: the "
                  f"LPN{'s' if len(trained) > 1 else ''} trained with {', '.join(trained)} against "
                  + ", ".join({"l2": "the posterior mean", "l1": "the posterior median", "pm": "the MAP"}[k] for k in trained) + ".")
    doc.heading("Plug-and-play reconstruction", 3)
    doc.paragraph(data["pnp"]["note"])
    doc.table(data["pnp"]["headers"], data["pnp"]["rows"])
    if (pnp := source("pnp.png")) is not None:
        doc.image(pnp, data["pnp"]["figure"])
