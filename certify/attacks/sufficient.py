"""Certified sufficient subsets (issue 15, item 6): which features, held at their values, keep the decision?

A subset S of the input features is *sufficient* for the class c at x on a perturbation set when every x' with
x'_S = x_S and the other features free within eps of x (intersected with the input domain; eps = None: the whole
domain) is classified c. VeriX (Wu, Wu & Barrett, NeurIPS 2023) finds such sets greedily in the order of a
feature ranking, each step decided by a complete verifier. Here each step is decided by the verification layer
(certify.bounds.property.property_bounds: CROWN, or alpha-CROWN / branch and bound on a ReLU chain): the box
{x'_S = x_S, |x'_i - x_i| <= eps elsewhere} with the counterexample formula "some logit y_j >= y_c" is a VNN-LIB
property, and "holds" is the certificate that S is sufficient.

Greedy search (`sufficient_subset`): start with every feature fixed; go through the features from the least to
the most important of the ranking, in blocks of `block`; free a whole block when the box with it freed still
holds, otherwise split the block in halves and retry each half, down to single features (one bound call per
accepted block, instead of one per feature). The result is sufficient (its box was certified last, or it is the
point x itself, where the model predicts c) and irreducible only up to the verifier's incompleteness: a feature
kept may be removable by a tighter bound. Its `property` is re-checkable: `certify.certificates.issuers.property`
turns it into a property certificate that `certify verify` re-checks from the model alone.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from certify.bounds.network import AffineNetwork
from certify.bounds.property import property_bounds
from certify.errors import InvalidInputError, UnsupportedError, UsageError
from certify.models.vnnlib import Property


def classification_property(lower: np.ndarray, upper: np.ndarray, num_classes: int, target: int) -> Property:
    """The VNN-LIB robustness property of the box [lower, upper] (flat float64 [n]): the counterexample region is
    "some y_j >= y_c", one single-row conjunction (e_c - e_j) . y <= 0 per j != c."""
    disjuncts = []
    for j in range(num_classes):
        if j != target:
            row = np.zeros((1, num_classes))
            row[0, target], row[0, j] = 1.0, -1.0
            disjuncts.append((row, np.zeros(1)))
    return Property(np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64), num_classes, disjuncts)


@dataclass
class SufficientSubset:
    """fixed: bool [n] (True: the feature is held at x); property: the certified box and formula (the point box
    {x} when no feature could be freed; None only when not even that is certified, e.g. x on the decision
    boundary); margin: the certified lower bound of that property; calls: bound calls made; seconds."""

    fixed: np.ndarray
    property: Property | None
    margin: float | None
    calls: int
    seconds: float
    notes: list[str] = field(default_factory=list)
    witness: dict | None = None  # the bound code's witness of the certified box (ReLU chains), for its certificate

    @property
    def size(self) -> int:
        return int(self.fixed.sum())


def _box(x: np.ndarray, fixed: np.ndarray, eps: float | None, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    free_lo = lo if eps is None else np.maximum(x - eps, lo)
    free_hi = hi if eps is None else np.minimum(x + eps, hi)
    return np.where(fixed, x, free_lo), np.where(fixed, x, free_hi)


def sufficient_subset(net: AffineNetwork, x: Tensor, target: int, ranking: Tensor, eps: float | None,
                      domain: tuple[Tensor, Tensor], block: int = 16, method: str = "crown",
                      budget: int | None = None) -> SufficientSubset:
    """The greedy certified sufficient subset of the module docstring for one input.

    Args:
        net: the model's exact translation (certify.bounds.network.from_module), logits as outputs.
        x: one input [n] or [1, ...] (flattened, float64); target: the class c (the model's prediction at x).
        ranking: importance scores [n] (e.g. |attribution|); the least important features are freed first.
        eps: the radius of the free features (None: their whole domain); domain: (lower, upper) [n] boxes.
        block: the first block size; method: "crown", "alpha-crown" or "bab" (each bound call).
        budget: at most this many bound calls (None: no limit); the subset found so far is returned.
    Raises UsageError for bad sizes or parameters, InvalidInputError for a non-finite x or ranking."""
    x64 = x.detach().reshape(-1).to("cpu", torch.float64).numpy()
    scores = ranking.detach().reshape(-1).to("cpu", torch.float64).numpy()
    lo = domain[0].detach().reshape(-1).to("cpu", torch.float64).numpy()
    hi = domain[1].detach().reshape(-1).to("cpu", torch.float64).numpy()
    n = x64.size
    if scores.size != n or lo.size != n or hi.size != n or net.input_size != n:
        raise UsageError(f"x, the ranking, the domain and the network must have the same number of features ({n})")
    if not (np.isfinite(x64).all() and np.isfinite(scores).all()):
        raise InvalidInputError("the input and the ranking must be finite")
    if not (np.all(lo <= x64) and np.all(x64 <= hi)):
        raise UsageError("the domain must be a box lower <= x <= upper holding the input (lower > upper, or x outside it)")
    if eps is not None and not (eps > 0 and math.isfinite(eps)):
        raise UsageError(f"eps must be a finite number > 0 or None (the whole domain), got {eps}")
    if block < 1 or not (0 <= target < net.num_classes):
        raise UsageError(f"block must be >= 1 and target a class in [0, {net.num_classes})")
    start = time.perf_counter()
    fixed = np.ones(n, dtype=bool)
    order = np.argsort(scores, kind="stable")  # least important first
    queue = [order[i : i + block] for i in range(0, n, block)]
    calls, best, notes = 0, None, []
    while queue and (budget is None or calls < budget):
        chunk = queue.pop(0)
        trial = fixed.copy()
        trial[chunk] = False
        prop = classification_property(*_box(x64, trial, eps, lo, hi), net.num_classes, target)
        try:
            bound = property_bounds(net, prop, method)
        except UnsupportedError as exc:
            raise UnsupportedError(f"the sufficient-subset search needs {method} bounds: {exc}") from None
        calls += 1
        if bound.holds:
            fixed, best = trial, (prop, float(bound.margin), bound.witness)
        elif chunk.size > 1:
            half = chunk.size // 2
            queue[:0] = [chunk[:half], chunk[half:]]
    if queue:
        notes.append(f"stopped at the budget of {budget} bound calls with {sum(c.size for c in queue)} features untried")
    if best is None:  # nothing freed: the point box {x} itself, certified like any other box
        prop = classification_property(x64, x64, net.num_classes, target)
        bound = property_bounds(net, prop, method)
        calls += 1
        if bound.holds:
            best = (prop, float(bound.margin), bound.witness)
        else:
            notes.append(f"not even the point x is certified for class {target} (margin {float(bound.margin):.3g})")
    prop, margin, witness = best if best is not None else (None, None, None)
    return SufficientSubset(fixed, prop, margin, calls, time.perf_counter() - start, notes, witness)


def predicted_class(model: nn.Module, x: Tensor) -> int:
    """The model's argmax at one input x [1, ...]."""
    with torch.no_grad():
        return int(model(x).argmax(dim=1)[0])
