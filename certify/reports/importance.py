"""The report's importance section (issue 15), from `importance.json` written by the demo: h-Shap's support
against the true support of the composite-digit task, SHAP-XRT rejection rates and re-checked importance-test
certificates, SKIT rejection rates and times, and certified sufficient subsets per attribution order; the figure
(`importance_figure`) is drawn by the demo from the images it holds."""
from __future__ import annotations

from pathlib import Path
from collections.abc import Callable
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from certify.reports.document import Document  # noqa: E402
from certify.runs import atomic_save  # noqa: E402


def importance_figure(images: np.ndarray, support: np.ndarray, attributions: np.ndarray,
                      p_values: Sequence[Sequence[float]], path: Path) -> Path:
    """One column per image: the mosaic with its true support outlined (top), h-Shap's map (bottom) with each
    quadrant's SHAP-XRT p-value. images [N, 1, H, W], support [N, g, g] bool, attributions like images,
    p_values [N][g*g] (row-major quadrants)."""
    n = images.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(2.0 * n, 4.1), squeeze=False)
    for i in range(n):
        image, grid = images[i, 0], support.shape[1]
        side = image.shape[0] // grid
        axes[0][i].imshow(image, cmap="gray", vmin=0, vmax=1)
        for r in range(grid):
            for c in range(grid):
                if support[i, r, c]:
                    axes[0][i].add_patch(Rectangle((c * side - 0.5, r * side - 0.5), side, side, fill=False, ec="tab:red", lw=2))
        a = attributions[i].sum(axis=0)
        bound = float(np.abs(a).max()) or 1.0
        axes[1][i].imshow(a, cmap="bwr", vmin=-bound, vmax=bound)
        for q, p in enumerate(p_values[i]):
            r, c = divmod(q, grid)
            axes[1][i].text(c * side + side / 2 - 0.5, r * side + side / 2 - 0.5, f"p={p:.2g}", ha="center", va="center",
                            fontsize=7, color="black", bbox={"fc": "white", "alpha": 0.7, "pad": 1, "lw": 0})
        for row in (0, 1):
            axes[row][i].set_xticks([])
            axes[row][i].set_yticks([])
    axes[0][0].set_ylabel("input (red: holds a 0)", fontsize=7)
    axes[1][0].set_ylabel("h-Shap; SHAP-XRT p", fontsize=7)
    fig.tight_layout()
    atomic_save(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def importance_section(doc: Document, data: dict[str, Any], source: Callable[[str], Path | None]) -> None:
    """Append the section to `doc`, reading the run's files through `source` (as in
    `certify.reports.report.build_report`)."""
    doc.heading("Which parts of the input matter: h-Shap, SHAP-XRT, SKIT, sufficient subsets")
    doc.paragraph(data["description"])
    h, t = data["hshap"], data["xrt"]
    doc.heading("Support on the composite-digit task", 3)
    doc.table(["method", "images", "result", "cost"], [
        ["h-Shap (leaves 4x4 px, reference: training mean)", h["images"],
         f"support precision {h['precision']:.3f}, recall {h['recall']:.3f} (a tile is found when its score exceeds "
         "0.1 (f(x) - f(ref)))", f"{h['calls_mean']:.1f} model calls per image"],
        [f"SHAP-XRT per quadrant (C empty, K = {t['K']}, M = {t['M']})", t["images"],
         f"rejected at alpha = {t['alpha']}: {t['rate_target']:.3f} of the {t['target_tiles']} quadrants holding a 0, "
         f"{t['rate_other']:.3f} of the {t['other_tiles']} others", f"{(t['K'] + 1) * t['M']} model inputs per test"],
    ])
    doc.paragraph(
        "h-Shap's certificate binds nothing (its leaf scores are not a bound-based claim); it is re-checked for its "
        f"document: {h['certificate']['file']} {'verifies' if h['certificate']['verified'] else 'is INVALID'}. Each "
        "SHAP-XRT p-value is a probabilistic claim: valid (P(p <= alpha) <= alpha) under the null that the quadrant "
        "changes nothing in law, for the sampler's law (each quadrant drawn from its own training mosaic; a statement "
        "about the data only where that is their conditional law); the checker redraws every sample from its seed and "
        f"recounts: {t['certificates']['verified']} of the {t['certificates']['written']} importance-test certificates "
        f"({t['certificates']['files']}, one per image) verify.")
    if (figure := source(data["figure"])) is not None:
        doc.image(figure, "Top: composite test images, the quadrants holding a 0 outlined. Bottom: "
                  "h-Shap's attribution and each quadrant's SHAP-XRT p-value.")
    s = data["skit"]
    doc.heading("Testing by betting (SKIT)", 3)
    doc.paragraph(f"Sequential kernel independence tests (wealth K_t = K_(t-1)(1 + kappa_t v_t), ONS bets in [0, 1/2]; "
                  f"reject when K_t >= 1/alpha, anytime-valid) over {s['reps']} seeded repetitions of at most "
                  f"{s['steps']} steps at alpha = {s['alpha']}. A null row's rejection rate must stay at or below alpha "
                  "(up to Monte Carlo error); the synthetic model's Z2 and the permuted control are nulls.")
    doc.table(["model", "concept", "null?", "rejection rate", "median rejection time (steps)"],
              [[r[0], r[1], r[2], _rate(r[3]), "-" if r[4] is None else f"{r[4]:.0f}"] for r in s["rows"]])
    f = data["sufficient"]
    doc.heading("Certified sufficient subsets", 3)
    doc.paragraph(f"Greedy certified sufficient subsets (after VeriX; Wu, Wu & Barrett, NeurIPS 2023) on {f['images']} "
                  f"digits test images (digits-relu-mlp, {f['features']} pixels): pixels are freed from the least "
                  f"important by each order while CROWN certifies that, with the freed pixels anywhere within l-inf "
                  f"{f['eps']} of x in [0, 1], the decision cannot change; the pixels held form the subset. Every "
                  "subset is a property certificate re-checked by the independent checker. Smaller is better.")
    doc.table(["attribution order", "median subset size (pixels held)", "certificates verified"], f["rows"])
    if data.get("quick"):
        doc.paragraph("Quick run: fewer images, K, M, repetitions and steps than the full demo.")
