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


def heatmap_grid(inputs: Tensor, attributions: Mapping[str, Tensor], titles: list[str], path: Path) -> Path:
    """One row per example: the input (grey) then each method's signed explanation (red positive, blue
    negative, symmetric colour scale per map). Saves a PNG at `path` and returns it."""
    n, columns = inputs.shape[0], 1 + len(attributions)
    fig, axes = plt.subplots(n, columns, figsize=(1.6 * columns, 1.6 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(as_image(inputs[i]), cmap="gray")
        axes[i, 0].set_ylabel(titles[i], fontsize=7)
        for j, (name, attr) in enumerate(attributions.items(), start=1):
            img = as_image(attr[i])
            vmax = max(float(np.abs(img).max()), 1e-12)
            axes[i, j].imshow(img, cmap="bwr", vmin=-vmax, vmax=vmax)
            if i == 0:
                axes[i, j].set_title(name, fontsize=8)
        if i == 0:
            axes[i, 0].set_title("input", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
