"""Semantic concepts as directions in a model's representation (Teneggi & Sulam, NeurIPS 2024, section 2:
Z = c^T H, H = f(X) the embedding, Y-hat = g(H) the prediction; the talk's "semantics Z = c^T H").

For an `nn.Sequential` classifier (e.g. the zoo's "digits-softplus-mlp": Linear, Softplus, Linear) the
model splits at its last affine layer into a body f (input -> hidden activations h) and a head g (h ->
logits). A concept c_j is a unit vector in h-space and Z_j = <c_j, h>. Concepts are defined on digits by
simple human-meaningful predicates of the input image (ink in the top half, ink in the centre column, a
closed loop, ...) and turned into directions by fitting the predicate from h (ridge regression, logistic
regression, or the difference of the class-conditional means of h above/below the predicate's median;
scikit-learn). The tests of `certify.explain.skit` then ask whether Y-hat depends on Z_j.

Nothing here modifies the model: slicing a Sequential shares its modules (no copy, no hook), and
`capture_activations` removes its forward hook in a `finally` block; the model's train/eval mode is kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor, nn

from certify.errors import InvalidInputError, UnsupportedError, UsageError

__all__ = [
    "ConceptBank",
    "DIGIT_PREDICATES",
    "split_sequential",
    "hidden_representation",
    "capture_activations",
    "class_probability",
    "digit_predicates",
    "concept_directions",
    "random_directions",
]

METHODS = ("ridge", "logistic", "mean-diff")


def _images(x: Any) -> np.ndarray:
    """Digits images as numpy [N, 8, 8] from [N, 64], [N, 1, 8, 8] or [N, 8, 8] (values in [0, 1])."""
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim < 2 or arr[0].size != 64:
        raise InvalidInputError(f"digit predicates need 8x8 images ([N, 64] or [N, 1, 8, 8]), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InvalidInputError("images contain NaN or Inf")
    return arr.reshape(arr.shape[0], 8, 8)


def _top_half(img: np.ndarray) -> np.ndarray:
    """Share of the ink in rows 0-3 (0.5 for an even stroke; "stroke in the top half")."""
    total = img.sum((1, 2))
    return img[:, :4].sum((1, 2)) / np.maximum(total, 1e-12)


def _left_half(img: np.ndarray) -> np.ndarray:
    """Share of the ink in columns 0-3."""
    total = img.sum((1, 2))
    return img[:, :, :4].sum((1, 2)) / np.maximum(total, 1e-12)


def _centre_column(img: np.ndarray) -> np.ndarray:
    """Mean ink of the two centre columns (3, 4): high for "1", low for "0"."""
    return img[:, :, 3:5].mean((1, 2))


def _ink(img: np.ndarray) -> np.ndarray:
    """Mean ink of the image (stroke weight / size)."""
    return img.mean((1, 2))


def _loop(img: np.ndarray) -> np.ndarray:
    """Area (pixels) of the background enclosed by the stroke at ink threshold 0.3 (scipy's
    binary_fill_holes): > 0 for digits with a closed loop (0, 6, 8, 9; often 4)."""
    mask = img > 0.3
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)  # 4-connected in each image, none across images
    holes = ndimage.binary_fill_holes(mask, structure=structure) & ~mask
    return holes.sum((1, 2)).astype(np.float64)


DIGIT_PREDICATES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "top_half": _top_half,
    "left_half": _left_half,
    "centre_column": _centre_column,
    "ink": _ink,
    "loop": _loop,
}


def digit_predicates(images: Any, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The named predicates (default: all of DIGIT_PREDICATES) of digits images ([N, 64] or [N, 1, 8, 8]),
    each an array [N]. Raises UsageError for an unknown name."""
    img = _images(images)
    wanted = list(DIGIT_PREDICATES) if names is None else list(names)
    unknown = [n for n in wanted if n not in DIGIT_PREDICATES]
    if unknown:
        raise UsageError(f"unknown digit predicates {unknown}; known: {sorted(DIGIT_PREDICATES)}")
    return {n: DIGIT_PREDICATES[n](img) for n in wanted}


# --------------------------------------------------------------------------------------- representation
def split_sequential(model: nn.Module, at: int | None = None) -> tuple[nn.Sequential, nn.Sequential]:
    """(body, head) = (model[:at], model[at:]) sharing the model's modules (no copy). Default `at`: the index
    of the last nn.Linear (so the head is the final affine layer and h the last hidden activations). Raises
    UnsupportedError for a model that is not an nn.Sequential, UsageError for `at` outside 1..len-1."""
    if not isinstance(model, nn.Sequential):
        raise UnsupportedError(f"split_sequential needs an nn.Sequential, got {type(model).__name__}; "
                               "use capture_activations with a module of the model")
    if at is None:
        linear = [i for i, m in enumerate(model) if isinstance(m, nn.Linear)]
        if not linear or linear[-1] == 0:
            raise UnsupportedError("the model has no hidden layer before its last nn.Linear")
        at = linear[-1]
    if isinstance(at, bool) or not isinstance(at, int) or not 1 <= at < len(model):
        raise UsageError(f"at must be an index in [1, {len(model) - 1}], got {at!r}")
    return model[:at], model[at:]


def hidden_representation(model: nn.Module, inputs: Tensor, at: int | None = None) -> Tensor:
    """h = body(inputs) [N, d] (flattened) without gradients, for the split of `split_sequential`."""
    body, _ = split_sequential(model, at)
    with torch.no_grad():
        return body(inputs).flatten(1)


def capture_activations(model: nn.Module, module: nn.Module, inputs: Tensor) -> Tensor:
    """The output of `module` (a submodule of `model`) on `inputs`, flattened to [N, d], by a forward hook
    removed before returning (also on error). Raises UsageError if `module` is not part of `model`."""
    if not any(m is module for m in model.modules()):
        raise UsageError("module is not a submodule of model")
    store: list[Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: store.append(out.detach()))
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        handle.remove()
    return store[-1].flatten(1)


def class_probability(model: nn.Module, h: Tensor, target: int, at: int | None = None) -> Tensor:
    """Y-hat = g(h) = softmax(head(h))[:, target] [N] (the model's probability of class `target`)."""
    _, head = split_sequential(model, at)
    with torch.no_grad():
        probs = torch.softmax(head(h), dim=1)
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < probs.shape[1]:
        raise UsageError(f"target must be a class index in [0, {probs.shape[1]}), got {target!r}")
    return probs[:, target]


# ------------------------------------------------------------------------------------------- directions
@dataclass
class ConceptBank:
    """Concept names and unit directions [m, d] in h-space; `scores(h)` gives Z = h C^T [N, m]."""

    names: list[str]
    directions: np.ndarray
    method: str

    def scores(self, h: Any) -> np.ndarray:
        arr = h.detach().cpu().numpy() if hasattr(h, "detach") else np.asarray(h)
        arr = np.asarray(arr, dtype=np.float64).reshape(arr.shape[0], -1)
        if arr.shape[1] != self.directions.shape[1]:
            raise InvalidInputError(f"h has {arr.shape[1]} features, the concepts {self.directions.shape[1]}")
        return arr @ self.directions.T

    def __len__(self) -> int:
        return len(self.names)


def concept_directions(
    h: Any, targets: Mapping[str, Any], method: str = "ridge", regularisation: float = 1.0
) -> ConceptBank:
    """Unit directions c_j in h-space, one per predicate in `targets` (name -> values [N]):

    * "ridge": the coefficients of sklearn Ridge(alpha=regularisation) regressing the predicate on h;
    * "logistic": the coefficients of sklearn LogisticRegression(C=1/regularisation) of the predicate above
      its median (or the predicate itself if it is already 0/1);
    * "mean-diff": mean h where the predicate is above its median minus mean h where it is not.

    Each direction is normalised to unit length and signed so that Z_j grows with the predicate. Raises
    UsageError (method, regularisation), InvalidInputError (shapes, a constant predicate)."""
    from sklearn.linear_model import LogisticRegression, Ridge

    if method not in METHODS:
        raise UsageError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(regularisation, (int, float)) or not regularisation > 0:
        raise UsageError(f"regularisation must be a positive number, got {regularisation!r}")
    x = h.detach().cpu().numpy() if hasattr(h, "detach") else np.asarray(h)
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    names, dirs = [], []
    for name, values in targets.items():
        t = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=np.float64).reshape(-1)
        if t.size != x.shape[0]:
            raise InvalidInputError(f"predicate {name!r} has {t.size} values for {x.shape[0]} representations")
        labels = t if set(np.unique(t)) <= {0.0, 1.0} else (t > np.median(t)).astype(float)
        if labels.min() == labels.max():
            raise InvalidInputError(f"predicate {name!r} is constant on these samples")
        if method == "ridge":
            c = Ridge(alpha=regularisation).fit(x, t).coef_.reshape(-1)
        elif method == "logistic":
            c = LogisticRegression(C=1.0 / regularisation, max_iter=2000).fit(x, labels).coef_.reshape(-1)
        else:
            c = x[labels == 1].mean(0) - x[labels == 0].mean(0)
        norm = np.linalg.norm(c)
        if not norm > 0:
            raise InvalidInputError(f"predicate {name!r} gives a zero direction")
        c = c / norm
        if np.corrcoef(x @ c, t)[0, 1] < 0:
            c = -c
        names.append(name)
        dirs.append(c)
    return ConceptBank(names, np.stack(dirs), method)


def random_directions(dim: int, count: int = 1, seed: int = 0) -> np.ndarray:
    """`count` random unit directions [count, dim] (uniform on the sphere, numpy Generator(seed))."""
    for v, name in ((dim, "dim"), (count, "count")):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UsageError(f"{name} must be a positive integer, got {v!r}")
    g = np.random.default_rng(seed).standard_normal((count, dim))
    return g / np.linalg.norm(g, axis=1, keepdims=True)
