"""The model zoo: small classifiers trained deterministically on embedded data, cached on disk.

`load(name)` returns `(model, data)`: the model in eval mode (float32, CPU) and the `Dataset` shaped for
it. Each model is trained once from its recipe and cached under `$CERTIFY_CACHE` (default
`~/.cache/certify/models`) in a file keyed by a hash of the recipe, holding the weights with their sha256 and
the recipe (`certify.models.hashing.cached_weights`): a file that does not match them is retrained, with one line
on stderr, never loaded; writes are atomic. `model_hash(model)` identifies the weights (stable: training is
single-threaded and seeded).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from certify.errors import UnsupportedError
from certify.models.builders import mlp, small_cnn
from certify.models.datasets import Dataset, load_dataset
from certify.models.hashing import cached_weights
from certify.models.training import train_classifier

RECIPE_FORMAT = 1


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a zoo model's weights."""

    dataset: str
    arch: str  # "mlp" or "cnn"
    act: str  # "relu" or "softplus"
    beta: float = 1.0
    hidden: tuple[int, ...] = (64, 64)
    epochs: int = 40
    lr: float = 3e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    seed: int = 0
    format: int = field(default=RECIPE_FORMAT)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def build(self, data: Dataset) -> nn.Sequential:
        if self.arch == "mlp":
            return mlp(data.x_train[0].numel(), data.num_classes, self.hidden, self.act, self.beta)
        channels, size, _ = data.input_shape
        return small_cnn(channels, size, data.num_classes, self.hidden, self.act, self.beta)


RECIPES: dict[str, Recipe] = {
    # One hidden layer: its curvature bound is the exact two-layer eigenvalue bound (Singla & Feizi Thm 3),
    # lambda ~ 1-2, so MoreauGrad certificates hold for rho up to ~0.5; two hidden layers give lambda ~ 50.
    "digits-softplus-mlp": Recipe("digits-flat", "mlp", "softplus", hidden=(64,), weight_decay=1e-3),
    "digits-softplus-mlp2": Recipe("digits-flat", "mlp", "softplus"),
    "digits-relu-mlp": Recipe("digits-flat", "mlp", "relu"),
    "digits-softplus-cnn": Recipe("digits", "cnn", "softplus", hidden=(8, 16), epochs=50),
    "digits-relu-cnn": Recipe("digits", "cnn", "relu", hidden=(8, 16), epochs=30),
    "breast-cancer-relu-mlp": Recipe("breast-cancer", "mlp", "relu", hidden=(32, 32), epochs=40),
    "breast-cancer-softplus-mlp": Recipe("breast-cancer", "mlp", "softplus", hidden=(32, 32), epochs=40),
    "moons-softplus-mlp": Recipe("moons", "mlp", "softplus", hidden=(32, 32), epochs=200, lr=1e-2),
    "blobs-relu-mlp": Recipe("blobs", "mlp", "relu", hidden=(16, 16), epochs=30),
    # Is a 0 among the four tiles of a 2x2 digit mosaic (certify.models.composite)? Test accuracy 0.999,
    # ~3 s to train; the true support (the tiles holding a 0) is known for every image.
    # 4 and 8 channels: 0.996 accuracy, and float32 rounding bounds at the inputs below 1e-3 of the logits (with 8
    # and 16 the dense layer sums 1024 products and its bound reaches that scale)
    "composite-relu-cnn": Recipe("digits-composite", "cnn", "relu", hidden=(4, 8), epochs=20),
}
DEFAULT_MODEL = "digits-softplus-mlp"


def cache_dir() -> Path:
    return Path(os.environ.get("CERTIFY_CACHE", Path.home() / ".cache" / "certify")) / "models"


def names() -> list[str]:
    return sorted(RECIPES)


def recipe(name: str) -> Recipe:
    key = name.removeprefix("zoo:")
    if key not in RECIPES:
        raise UnsupportedError(f"unknown zoo model {name!r}; choose one of {names()}")
    return RECIPES[key]


def load(name: str = DEFAULT_MODEL) -> tuple[nn.Sequential, Dataset]:
    """The trained model `name` (eval mode) and its data set; trains and caches it on first use."""
    spec = recipe(name)
    data = load_dataset(spec.dataset)
    model = spec.build(data)
    path = cache_dir() / f"{name.removeprefix('zoo:')}-{spec.digest()[:16]}.pt"
    cached_weights(model, path, asdict(spec), lambda: train_classifier(
        model, data, spec.epochs, spec.lr, spec.batch_size, spec.weight_decay, spec.seed))
    return model.eval(), data
