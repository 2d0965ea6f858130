"""Embedded data sets: scikit-learn's bundled digits and breast cancer, and synthetic blobs and moons.

No network is needed. Every set has a fixed stratified train/test split (seed 0) and an input domain:
per-feature bounds `domain_lo <= x <= domain_hi` (infinite where the data are unbounded), broadcastable
to one example's shape.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from sklearn import datasets as skdata
from sklearn.model_selection import train_test_split
from torch import Tensor

from certify.errors import UnsupportedError
from certify.models.composite import composite_digits
from certify.models.records import Dataset

SPLIT_SEED = 0
TEST_FRACTION = 0.2


def _split(name: str, x: np.ndarray, y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> Dataset:
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    as_x = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.as_tensor(a, dtype=torch.long)  # noqa: E731
    return Dataset(
        name=name,
        x_train=as_x(x_tr),
        y_train=as_y(y_tr),
        x_test=as_x(x_te),
        y_test=as_y(y_te),
        domain_lo=as_x(lo),
        domain_hi=as_x(hi),
        num_classes=int(y.max()) + 1,
    )


def digits_images() -> Dataset:
    """8x8 handwritten digits as [N, 1, 8, 8] images scaled to [0, 1] (scikit-learn `load_digits`)."""
    bunch = skdata.load_digits()
    x = (bunch.data / 16.0).reshape(-1, 1, 8, 8)
    return _split("digits", x, bunch.target, np.zeros((1, 8, 8)), np.ones((1, 8, 8)))


def digits_flat() -> Dataset:
    """The same digits flattened to [N, 64] (same split as `digits_images`)."""
    bunch = skdata.load_digits()
    return _split("digits-flat", bunch.data / 16.0, bunch.target, np.zeros(64), np.ones(64))


def breast_cancer() -> Dataset:
    """Wisconsin breast cancer, 30 features standardised with the training split's mean and std.

    The raw features are non-negative, so the domain's lower bound is the standardised zero."""
    bunch = skdata.load_breast_cancer()
    raw = _split("breast-cancer", bunch.data, bunch.target, np.zeros(30), np.full(30, np.inf))
    mean = raw.x_train.mean(dim=0)
    std = raw.x_train.std(dim=0)
    raw.x_train = (raw.x_train - mean) / std
    raw.x_test = (raw.x_test - mean) / std
    raw.domain_lo = -mean / std
    return raw


def blobs() -> Dataset:
    """Three Gaussian blobs in 2-D (synthetic, seed 0)."""
    x, y = skdata.make_blobs(n_samples=600, centers=3, n_features=2, cluster_std=1.0, random_state=0)
    return _split("blobs", x, y, np.full(2, -np.inf), np.full(2, np.inf))


def moons() -> Dataset:
    """Two interleaving half-moons in 2-D with noise 0.1 (synthetic, seed 0)."""
    x, y = skdata.make_moons(n_samples=600, noise=0.1, random_state=0)
    return _split("moons", x, y, np.full(2, -np.inf), np.full(2, np.inf))


def digits_composite() -> Dataset:
    """2x2 mosaics of digits, label 1 iff a 0 is present, with the true support (certify.models.composite)."""
    return composite_digits(digits_images())


LOADERS: dict[str, Callable[[], Dataset]] = {
    "digits": digits_images,
    "digits-flat": digits_flat,
    "breast-cancer": breast_cancer,
    "blobs": blobs,
    "moons": moons,
    "digits-composite": digits_composite,
}


def load_dataset(name: str) -> Dataset:
    """Load an embedded data set by name (see `LOADERS`)."""
    try:
        return LOADERS[name]()
    except KeyError:
        raise UnsupportedError(f"unknown data set {name!r}; choose one of {sorted(LOADERS)}") from None
