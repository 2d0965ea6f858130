"""Composite digit images with a known support: the "is the target digit present?" task (issue 15, item 4).

Each image is a `grid x grid` mosaic of 8x8 scikit-learn digits (2x2 by default: [N, 1, 16, 16] in [0, 1];
3x3: [N, 1, 24, 24]). The label is 1 iff the target digit (0 by default: the most distinctive of the ten, a
closed ring) appears in at least one tile, so the true support of a positive image is known: the tiles that
hold a target digit. This is the "sick / healthy" setting of Part II of the Sulam talk (and of the synthetic
experiments of Teneggi, Luster & Sulam, "Fast Hierarchical Games for Image Explanations", TPAMI 2022,
arXiv 2104.06164, section 5.1), built on real handwriting.

Construction (deterministic, seeded by `seed`): training composites use only the digits of the training split
of the digits images (`load_dataset('digits')`) and test composites only its test split. Classes are balanced (half positives,
half negatives, then shuffled). A positive holds the target in 1 to `max_targets` tiles (uniformly; default
2 for 2x2, 3 for 3x3) at uniformly random positions; every other tile holds a uniformly drawn non-target
digit. A negative holds only non-target digits.

The returned `CompositeDataset` is a `Dataset` (same fields, same domain convention: [0, 1] per pixel) with
extra fields: `support_train` / `support_test` (bool [N, grid, grid], True where a tile holds the target),
`target_digit`, `grid`, `tile`. `composite_support(data, split)` returns the tile masks and `tile_pixels`
expands tile masks to pixel masks [N, 1, H, W]. Invariant: `y == support.any(dim=(1, 2))`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from certify.errors import UsageError
from certify.models.records import Dataset

TILE = 8
COMPOSITE_SEED = 0
DEFAULT_TARGET = 0
N_TRAIN = {2: 4000, 3: 4000}
N_TEST = {2: 1000, 3: 1000}


@dataclass
class CompositeDataset(Dataset):
    """A composite-digit data set: a `Dataset` plus the true support of every image (tile masks)."""

    support_train: Tensor | None = None  # bool [N_train, grid, grid]
    support_test: Tensor | None = None  # bool [N_test, grid, grid]
    target_digit: int = DEFAULT_TARGET
    grid: int = 2
    tile: int = TILE


def make_composites(
    images: Tensor,
    labels: Tensor,
    n: int,
    grid: int = 2,
    target_digit: int = DEFAULT_TARGET,
    max_targets: int | None = None,
    seed: int = COMPOSITE_SEED,
) -> tuple[Tensor, Tensor, Tensor]:
    """`n` composites of the digit `images` [M, 1, 8, 8] (labels [M]): returns (x [n, 1, 8 grid, 8 grid] float32,
    y [n] long in {0, 1}, support [n, grid, grid] bool). Deterministic given the arguments (numpy
    `default_rng(seed)`; no global RNG state is touched). UsageError for grid < 2, n < 2, max_targets outside
    [1, grid^2] or a target digit absent from `labels`."""
    if grid < 2:
        raise UsageError(f"grid must be at least 2, got {grid}")
    if n < 2:
        raise UsageError(f"need at least 2 composites, got {n}")
    cells = grid * grid
    max_targets = max_targets if max_targets is not None else min(grid, cells)
    if not 1 <= max_targets <= cells:
        raise UsageError(f"max_targets must lie in [1, {cells}], got {max_targets}")
    labels_np = labels.cpu().numpy()
    pos_pool = np.flatnonzero(labels_np == target_digit)
    neg_pool = np.flatnonzero(labels_np != target_digit)
    if pos_pool.size == 0 or neg_pool.size == 0:
        raise UsageError(f"target digit {target_digit} must occur in the labels, alongside other digits")
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=np.int64)
    y[: n // 2] = 1  # first half positive, then shuffled: balanced classes
    y = rng.permutation(y)
    counts = np.where(y == 1, rng.integers(1, max_targets + 1, size=n), 0)
    # random positions: the `count` smallest of iid uniforms per row are the target tiles
    ranks = np.argsort(np.argsort(rng.random((n, cells)), axis=1), axis=1)
    support = ranks < counts[:, None]
    idx = np.where(support, rng.choice(pos_pool, size=(n, cells)), rng.choice(neg_pool, size=(n, cells)))
    tiles = images[torch.as_tensor(idx.reshape(-1))].reshape(n, grid, grid, images.shape[-2], images.shape[-1])
    x = tiles.permute(0, 1, 3, 2, 4).reshape(n, 1, grid * images.shape[-2], grid * images.shape[-1])
    return (
        x.contiguous().to(torch.float32),
        torch.as_tensor(y, dtype=torch.long),
        torch.as_tensor(support.reshape(n, grid, grid), dtype=torch.bool),
    )


def composite_digits(
    digits: Dataset,
    grid: int = 2,
    target_digit: int = DEFAULT_TARGET,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = COMPOSITE_SEED,
) -> CompositeDataset:
    """The composite data set (see the module docstring) of `digits` (the 8x8 digits images data set,
    certify.models.datasets.digits_images): train composites from its training split (seed `seed`), test
    composites from its test split (seed `seed + 1`)."""
    n_train = n_train if n_train is not None else N_TRAIN.get(grid, 4000)
    n_test = n_test if n_test is not None else N_TEST.get(grid, 1000)
    x_tr, y_tr, s_tr = make_composites(digits.x_train, digits.y_train, n_train, grid, target_digit, seed=seed)
    x_te, y_te, s_te = make_composites(digits.x_test, digits.y_test, n_test, grid, target_digit, seed=seed + 1)
    side = grid * TILE
    name = "digits-composite" if grid == 2 else f"digits-composite-{grid}x{grid}"
    return CompositeDataset(
        name=name,
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        domain_lo=torch.zeros(1, side, side),
        domain_hi=torch.ones(1, side, side),
        num_classes=2,
        support_train=s_tr,
        support_test=s_te,
        target_digit=target_digit,
        grid=grid,
        tile=TILE,
    )


def composite_digits_3x3(digits: Dataset) -> CompositeDataset:
    """The 3x3 variant ([N, 1, 24, 24])."""
    return composite_digits(digits, grid=3)


def composite_support(data: Dataset, split: str = "test") -> Tensor:
    """The true support of a composite data set's `split` ("train" or "test"): bool [N, grid, grid].
    UsageError for another data set or split."""
    if not isinstance(data, CompositeDataset):
        raise UsageError(f"data set {getattr(data, 'name', data)!r} is not a composite data set: no known support")
    if split not in ("train", "test"):
        raise UsageError(f"split must be 'train' or 'test', got {split!r}")
    support = data.support_train if split == "train" else data.support_test
    assert support is not None
    return support


def tile_pixels(support: Tensor, tile: int = TILE) -> Tensor:
    """Tile masks [N, g, g] expanded to pixel masks [N, 1, g tile, g tile] (same dtype)."""
    if support.dim() != 3:
        raise UsageError(f"tile masks must be [N, grid, grid], got shape {tuple(support.shape)}")
    return support.repeat_interleave(tile, dim=1).repeat_interleave(tile, dim=2).unsqueeze(1)


def tile_scores(pixels: Tensor, grid: int, reduce: str = "sum") -> Tensor:
    """Per-tile sums (or means) of per-pixel scores [N, C, H, W] (or [N, H, W]): [N, grid, grid] float."""
    if pixels.dim() == 4:
        pixels = pixels.sum(dim=1)
    if pixels.dim() != 3 or pixels.shape[1] % grid or pixels.shape[2] % grid:
        raise UsageError(f"pixel scores of shape {tuple(pixels.shape)} do not split into a {grid}x{grid} grid")
    n, h, w = pixels.shape
    blocks = pixels.reshape(n, grid, h // grid, grid, w // grid)
    out = blocks.sum(dim=(2, 4))
    return out / ((h // grid) * (w // grid)) if reduce == "mean" else out
