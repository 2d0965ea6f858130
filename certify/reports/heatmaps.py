"""Heatmap grids of explanations (matplotlib, Agg backend; no display needed)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from torch import Tensor  # noqa: E402

from certify.runs import atomic_save  # noqa: E402


def as_image(example: Tensor) -> np.ndarray:
    """A 2-D array to display one example or explanation: channels averaged for images, flat vectors
    folded into a square when their length is a perfect square, else shown as one row."""
    a = example.detach().to("cpu").double().numpy()
    if a.ndim == 3:
        return a.mean(axis=0)
    if a.ndim == 2:
        return a
    side = math.isqrt(a.size)
    return a.reshape(side, side) if side * side == a.size else a.reshape(1, -1)


CMAP = "bwr"  # diverging, white at 0: red raises the explained class's score, blue lowers it


def overlay(attribution: np.ndarray, vmax: float, cmap: str = CMAP) -> np.ndarray:
    """RGBA [H, W, 4] of a signed attribution map on a colour scale [-vmax, vmax] centred at 0, opaque in
    proportion to |attribution| / vmax, so that an input drawn beneath shows through where the map is near 0."""
    vmax = max(float(vmax), 1e-12)
    rgba = plt.get_cmap(cmap)(np.clip(attribution / (2 * vmax) + 0.5, 0.0, 1.0))
    rgba[..., 3] = np.clip(np.abs(attribution) / vmax, 0.0, 1.0)
    return rgba


def draw_attribution(ax, attribution: np.ndarray, vmax: float, background: np.ndarray | None = None) -> None:
    """Draw a signed attribution [H, W] on `ax`: over the input `background` when given (light grey on white, at
    most 40% dark, so that no input shade reads as a colour of the scale), else alone, on the symmetric colour
    scale [-vmax, vmax] (`overlay`)."""
    if background is not None:
        lo, hi = float(background.min()), float(background.max())
        ax.imshow(background, cmap="Greys", vmin=lo, vmax=lo + 2.5 * max(hi - lo, 1e-12), interpolation="nearest")
    ax.imshow(overlay(attribution, vmax), interpolation="nearest")


def heatmap_grid(inputs: Tensor, attributions: Mapping[str, Tensor], titles: list[str], path: Path,
                 over_input: bool = True) -> Path:
    """One row per example: the input (grey) then each method's signed explanation drawn over it (red positive,
    blue negative, `draw_attribution`), on ONE colour scale per method, symmetric around 0 and shared by its
    examples (the largest |attribution| of the column), with that method's colour bar under its column. Saves a
    PNG at `path` and returns it."""
    n, columns = inputs.shape[0], 1 + len(attributions)
    fig, axes = plt.subplots(n, columns, figsize=(1.7 * columns, 1.6 * n + 0.6), squeeze=False, layout="constrained")
    images = [as_image(inputs[i]) for i in range(n)]
    scales = {name: max(float(attr.detach().abs().max()), 1e-12) for name, attr in attributions.items()}
    for i in range(n):
        axes[i, 0].imshow(images[i], cmap="gray", interpolation="nearest")
        axes[i, 0].set_ylabel(titles[i], fontsize=7)
        for j, (name, attr) in enumerate(attributions.items(), start=1):
            draw_attribution(axes[i, j], as_image(attr[i]), scales[name], images[i] if over_input else None)
            if i == 0:
                axes[i, j].set_title(name, fontsize=8)
        if i == 0:
            axes[i, 0].set_title("input", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for j, name in enumerate(attributions, start=1):
        mappable = plt.cm.ScalarMappable(norm=plt.Normalize(-scales[name], scales[name]), cmap=CMAP)
        bar = fig.colorbar(mappable, ax=axes[-1, j], location="bottom", shrink=0.9, aspect=12)
        bar.ax.tick_params(labelsize=5)
        bar.set_ticks([-scales[name], 0.0, scales[name]])
        bar.set_ticklabels([f"{-scales[name]:.2g}", "0", f"{scales[name]:.2g}"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def attack_panel(rows: list[tuple[str, Tensor, Tensor, Tensor, Tensor]], path: Path) -> Path:
    """One row per method (name, x, a(x), x + d, a(x + d); each one example): the input and its explanation before
    and after the attack, both explanations on the method's one colour scale (symmetric around 0, from the larger
    |a| of the two), drawn over their inputs. Saves a PNG at `path` and returns it."""
    fig, axes = plt.subplots(len(rows), 4, figsize=(7.2, 1.7 * len(rows) + 0.3), squeeze=False, layout="constrained")
    for r, (name, x, a, x_adv, a_adv) in enumerate(rows):
        vmax = max(float(a.detach().abs().max()), float(a_adv.detach().abs().max()), 1e-12)
        for c, (image, attribution) in enumerate(((x, None), (x, a), (x_adv, None), (x_adv, a_adv))):
            ax = axes[r, c]
            if attribution is None:
                ax.imshow(as_image(image), cmap="gray", interpolation="nearest")
            else:
                draw_attribution(ax, as_image(attribution), vmax, as_image(image))
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=7)
        bar = fig.colorbar(plt.cm.ScalarMappable(norm=plt.Normalize(-vmax, vmax), cmap=CMAP), ax=axes[r, 3],
                           location="right", shrink=0.8)
        bar.ax.tick_params(labelsize=5)
    for c, title in enumerate(("input x", "a(x)", "attacked x + d", "a(x + d)")):
        axes[0, c].set_title(title, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path
