"""Embedded data sets: scikit-learn's bundled digits and breast cancer, and synthetic blobs and moons.

No network is needed. Every set has a fixed stratified train/test split (seed 0) and an input domain:
per-feature bounds `domain_lo <= x <= domain_hi` (infinite where the data are unbounded), broadcastable
to one example's shape.

`load_dataset` caches each set it builds under `$CERTIFY_CACHE/datasets` (default `~/.cache/certify/datasets`),
keyed by a hash of the code that builds it (this module, `composite`, `records`), of scikit-learn's
`__init__.py` (its version) and numpy's version, with the sha256 of each tensor, checked on every load (a file
that fails is rebuilt, never used): once cached, loading a set imports neither scikit-learn nor scipy (seconds
of import), which is what keeps `certify verify` of a zoo model's certificate fast.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from certify.errors import UnsupportedError, UsageError
from certify.models import composite, records
from certify.models.composite import CompositeDataset, composite_digits
from certify.models.hashing import UnusableCache, read_cache_file, tensor_hash
from certify.runs import atomic_save
from certify.models.records import Dataset

SPLIT_SEED = 0
TEST_FRACTION = 0.2


def _skdata():
    """scikit-learn's `datasets` module, imported on first use: importing scikit-learn takes seconds, and
    `certify verify` (which imports this module through `certify.models`) never loads a data set."""
    from sklearn import datasets

    return datasets


def _split(name: str, x: np.ndarray, y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> Dataset:
    from sklearn.model_selection import train_test_split  # imported on first use, as in `_skdata`

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
    bunch = _skdata().load_digits()
    x = (bunch.data / 16.0).reshape(-1, 1, 8, 8)
    return _split("digits", x, bunch.target, np.zeros((1, 8, 8)), np.ones((1, 8, 8)))


def digits_flat() -> Dataset:
    """The same digits flattened to [N, 64] (same split as `digits_images`)."""
    bunch = _skdata().load_digits()
    return _split("digits-flat", bunch.data / 16.0, bunch.target, np.zeros(64), np.ones(64))


def breast_cancer() -> Dataset:
    """Wisconsin breast cancer, 30 features standardised with the training split's mean and std.

    The raw features are non-negative, so the domain's lower bound is the standardised zero."""
    bunch = _skdata().load_breast_cancer()
    raw = _split("breast-cancer", bunch.data, bunch.target, np.zeros(30), np.full(30, np.inf))
    mean = raw.x_train.mean(dim=0)
    std = raw.x_train.std(dim=0)
    raw.x_train = (raw.x_train - mean) / std
    raw.x_test = (raw.x_test - mean) / std
    raw.domain_lo = -mean / std
    return raw


def blobs() -> Dataset:
    """Three Gaussian blobs in 2-D (synthetic, seed 0)."""
    x, y = _skdata().make_blobs(n_samples=600, centers=3, n_features=2, cluster_std=1.0, random_state=0)
    return _split("blobs", x, y, np.full(2, -np.inf), np.full(2, np.inf))


def moons() -> Dataset:
    """Two interleaving half-moons in 2-D with noise 0.1 (synthetic, seed 0)."""
    x, y = _skdata().make_moons(n_samples=600, noise=0.1, random_state=0)
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


CACHE_FORMAT = 2  # one file: the data set's fields, "composite" and "sha256" (of each tensor field)


def cache_dir() -> Path:
    """Where built data sets are cached: `$CERTIFY_CACHE/datasets` (default `~/.cache/certify/datasets`)."""
    return Path(os.environ.get("CERTIFY_CACHE", Path.home() / ".cache" / "certify")) / "datasets"


def _cache_key(name: str) -> str:
    """Hash of what determines the set `name`: the building code and the installed scikit-learn and numpy.
    Found with `importlib.util.find_spec`, which locates scikit-learn without importing it."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{name}|{np.__version__}".encode())
    sklearn = importlib.util.find_spec("sklearn")
    origins = [__file__, composite.__file__, records.__file__, sklearn and sklearn.origin]
    for origin in origins:
        digest.update(Path(origin).read_bytes() if origin else b"no scikit-learn")
    return digest.hexdigest()[:16]


def _read_cache(path: Path) -> Dataset | None:
    """The data set cached in `path`; None when there is none, and None with one line on stderr saying why when
    the file is unusable (`certify.models.hashing.read_cache_file`: not a regular file, unreadable whatever the
    damage, another layout, or a tensor whose sha256 differs from the recorded one)."""
    return read_cache_file(path, _checked_dataset, lambda why: print(
        f"certify: the cached data set {path} {why}; rebuilding it", file=sys.stderr))


def _checked_dataset(record: dict) -> Dataset:
    """The data set of a cache record (any malformed record raises, and is rebuilt), or UnusableCache when a
    tensor's sha256 differs from the recorded one."""
    recorded = record.pop("sha256")
    kind = CompositeDataset if record.pop("composite") else Dataset
    if {k: tensor_hash(v) for k, v in record.items() if isinstance(v, Tensor)} != recorded:
        raise UnusableCache("holds tensors whose sha256 differs from the one recorded when it was built")
    return kind(**record)


def load_dataset(name: str) -> Dataset:
    """Load an embedded data set by name (see `LOADERS`), from the cache when built before (module docstring).

    An unusable cache entry (`_read_cache`) is rebuilt, never trusted; a cache that cannot be written is skipped.
    Raises UnsupportedError for an unknown name."""
    try:
        build = LOADERS[name]
    except KeyError:
        raise UnsupportedError(f"unknown data set {name!r}; choose one of {sorted(LOADERS)}") from None
    path = cache_dir() / f"{name}-{_cache_key(name)}.pt"
    cached = _read_cache(path)
    if cached is not None:
        return cached
    data = build()
    record = {"composite": isinstance(data, CompositeDataset), **{f.name: getattr(data, f.name) for f in fields(data)}}
    record["sha256"] = {k: tensor_hash(v) for k, v in record.items() if isinstance(v, Tensor)}
    try:  # atomic, under a unique temporary name: concurrent loaders never see half a file
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(path, lambda f: torch.save(record, f))
    except (OSError, UsageError):  # an unwritable cache costs a rebuild next time, nothing else
        pass
    return data
