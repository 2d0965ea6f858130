"""Bounds for a VNN-LIB property (certify.models.vnnlib): the property HOLDS when, for every conjunction
{y : C y <= d} of its counterexample formula, some row r has a certified lower bound of C_r y - d_r > 0 over
the input box (then no point of the box satisfies that conjunction, so none is a counterexample).

The box is the file's box exactly: InputSet with centre (lower + upper) / 2, L-infinity radius the largest
half-width, intersected with the domain [lower, upper]. On a ReLU chain every method goes through the certified
root of certify.bounds.alpha_crown (boxes and bounds by certify.bounds.crown.backward_lower_bound, float64,
outward rounding): "crown" with CROWN's slopes, "alpha-crown" with optimised ones, and "bab" adds branch and
bound on ReLU splits (certify.bounds.bab, beta-CROWN) over the conjunctions the root leaves unproven. A result
that holds carries its witness (`PropertyBound.witness`, format "certify.relu-split-witness/2", described in
certify/certificates/property_check.py: root
slopes, and per conjunction a complete split tree whose leaves carry their slopes and split multipliers), from
which a checker re-derives a positive bound for every leaf. Other networks: "crown" by
certify.bounds.crown.layer_bounds (no witness); "alpha-crown" and "bab" refuse them (UnsupportedError).
All rows of all conjunctions are bounded in one pass.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from certify.bounds.crown import backward_lower_bound, layer_bounds
from certify.bounds.network import AffineNetwork
from certify.bounds.requirements import activation_refusal
from certify.bounds.sets import InputSet
from certify.errors import UsageError
from certify.models.vnnlib import Property

PROPERTY_METHODS = ("crown", "alpha-crown", "bab")
# Branch and bound refines each subdomain's boxes (certify.bounds.bab) on networks with at least this many hidden
# layers. With two, only the last hidden layer can be refined and it does not pay: mnistfc 256x2 prop_1_0.03 took
# 39 s of search and 58 s to issue and re-check its certificate refined, 4.9 s and 1.5 s on the root's boxes;
# with four, refining proves 256x4 prop_0_0.03 and prop_5_0.03 (6 s and 18 s), which the root's boxes do not in
# 60 s.
REFINE_FROM = 3


def property_set(prop: Property, device: torch.device | str = "cpu") -> InputSet:
    """The property's input box as an InputSet (one example), on `device`."""
    lower = torch.as_tensor(prop.lower, dtype=torch.float64, device=device)
    upper = torch.as_tensor(prop.upper, dtype=torch.float64, device=device)
    centre = ((lower + upper) / 2).clamp(lower, upper)
    eps = float(((upper - lower) / 2).max()) * (1 + 1e-12)
    return InputSet(centre.reshape(1, -1), torch.tensor([eps], dtype=torch.float64, device=device), float("inf"), lower, upper)


def property_rows(prop: Property, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, list[slice]]:
    """(rows [1, R, m] = C stacked over conjunctions, constants [1, R] = -d, one slice per conjunction), so
    that rows . y + constants = C y - d, the violation of a row of the counterexample region, which must be
    > 0 for some row of each conjunction. On `device`."""
    cs = [torch.as_tensor(c, dtype=torch.float64, device=device) for c, _ in prop.disjuncts]
    ds = [torch.as_tensor(d, dtype=torch.float64, device=device) for _, d in prop.disjuncts]
    slices, start = [], 0
    for c in cs:
        slices.append(slice(start, start + c.shape[0]))
        start += c.shape[0]
    return torch.cat(cs)[None], -torch.cat(ds)[None], slices


@dataclass
class PropertyBound:
    """Certified lower bounds of C y - d over the box, per row; `holds` when every conjunction
    has a row with a positive bound. `margin` is min over conjunctions of the best row (> 0 iff holds).
    `witness`: the dict of format "certify.relu-split-witness/2" (certify/certificates/property_check.py) when the property holds on a ReLU chain (the root
    slopes and, per conjunction, the leaves of its split tree), else None."""

    lower: Tensor  # [R]
    slices: list[slice]
    method: str
    details: dict
    by_bab: dict = field(default_factory=dict)  # conjunction index -> BaB's certified bound (> 0: proven)
    witness: dict | None = None

    @property
    def per_conjunction(self) -> list[float]:
        return [max(float(self.lower[s].max()), self.by_bab.get(i, -math.inf)) for i, s in enumerate(self.slices)]

    @property
    def margin(self) -> float:
        return min(self.per_conjunction)

    @property
    def holds(self) -> bool:
        return self.margin > 0


def _relu_chain(net: AffineNetwork) -> bool:
    return activation_refusal(net, "", ("relu",)) is None and net.is_chain


def property_bounds(net: AffineNetwork, prop: Property, method: str = "crown", **options) -> PropertyBound:
    """Certified lower bounds of C y - d for every row of `prop` over its input box (module docstring).
    On a ReLU chain every method goes through certify.bounds.alpha_crown's certified root (CROWN's slopes for
    "crown"), so a result that holds carries its witness; "alpha-crown" and "bab" refuse other networks
    (UnsupportedError naming the activation or the skips), "crown" bounds them by certify.bounds.crown."""
    if method not in PROPERTY_METHODS:
        raise UsageError(f"unknown property method {method!r}; choose one of {PROPERTY_METHODS}")
    if net.input_size != prop.num_inputs or net.num_classes != prop.num_outputs:
        raise UsageError(
            f"the property has {prop.num_inputs} inputs and {prop.num_outputs} outputs, the network "
            f"{net.input_size} and {net.num_classes}"
        )
    device = net.weights[0].device  # the bounds run where the network's weights are (CPU or GPU)
    input_set = property_set(prop, device)
    rows, consts, slices = property_rows(prop, device)
    if (method == "crown" and not _relu_chain(net)) or not net.activations:  # no hidden layer: CROWN is exact
        with torch.no_grad():
            boxes, relaxations = layer_bounds(net, input_set, "crown")
            value = backward_lower_bound(net, input_set, net.depth - 1, rows, relaxations, boxes, const=consts)
        return PropertyBound(value[0], slices, "crown", {})
    if method in ("crown", "alpha-crown"):
        from certify.bounds.alpha_crown import alpha_crown_lower_bound

        if method == "crown":
            options = {"iterations": 0}
        value, details = alpha_crown_lower_bound(net, input_set, rows, consts, **options)
        result = PropertyBound(value[0], slices, method, details)
        result.witness = _witness(details["root"], slices, {}) if result.holds else None
        return result
    return _bab(net, input_set, rows, consts, slices, **options)


def _root_leaf(root, s: slice) -> dict:
    """The one-leaf tree of a conjunction proven at the root: its best row with the root's final slopes."""
    import numpy as np

    row = int(root.value[s].argmax())
    return {"depth": np.zeros(1, dtype=np.int64), "splits": np.zeros((0, 3), dtype=np.int64),
            "betas": np.zeros(0, dtype=np.float32), "row": np.array([row], dtype=np.int64),
            "alphas": root.final[s][row][None].cpu().numpy().astype(np.float32)}


def _witness(root, slices: list[slice], trees: dict, refined: bool = True) -> dict:
    """The witness dict (format 2, or 1 for leaves bounded on the root's boxes clamped by their splits): the root
    slopes, and per conjunction its BaB leaves or its root leaf."""
    return {
        "format": f"certify.relu-split-witness/{2 if refined else 1}",
        "unstable": [u.cpu().numpy().copy() for u in root.unstable],
        "root_alphas": [[a.cpu().numpy().astype("float32") for a in layer] for layer in root.root_alphas],
        "conjunctions": [trees[i] if i in trees else _root_leaf(root, s) for i, s in enumerate(slices)],
    }


def witness_bytes(witness: dict) -> int:
    """Size in bytes of the witness's arrays (what a binary serialisation stores)."""
    total = sum(u.nbytes for u in witness["unstable"]) + sum(a.nbytes for layer in witness["root_alphas"] for a in layer)
    return total + sum(v.nbytes for tree in witness["conjunctions"] for v in tree.values())


def _bab(net: AffineNetwork, input_set: InputSet, rows: Tensor, consts: Tensor, slices: list[slice],
         deadline: float | None = None, batch: int = 512, root_iterations: int = 50,
         root_share: float = 0.25, iterations: int = 20, lr: float = 0.05, lr_beta: float = 0.1,
         refine: bool | None = None) -> PropertyBound:
    """alpha-CROWN at the root (for at most `root_share` of the time), then one branch and bound
    (certify.bounds.bab) over all the conjunctions still unproven, until `deadline` (perf_counter time; default
    60 s from now). A candidate counterexample it proposes lands in details["candidates"] (the caller checks).
    refine: per-subdomain refined boxes (default: on networks of at least REFINE_FROM hidden layers)."""
    from certify.bounds.alpha_crown import alpha_crown_lower_bound
    from certify.bounds.bab import branch_and_bound

    start = time.perf_counter()
    deadline = start + 60.0 if deadline is None else deadline
    value, details = alpha_crown_lower_bound(net, input_set, rows, consts, iterations=root_iterations,
                                             deadline=start + root_share * (deadline - start))
    root = details["root"]
    result = PropertyBound(value[0], slices, "bab", {"root": details})
    todo = [i for i, s in enumerate(slices) if not float(value[0, s].max()) > 0]
    trees: dict = {}
    if todo and time.perf_counter() < deadline:
        width = max(slices[i].stop - slices[i].start for i in todo)
        c_rows = torch.zeros(len(todo), width, rows.shape[2], dtype=torch.float64, device=rows.device)
        c_consts = torch.full((len(todo), width), -math.inf, dtype=torch.float64, device=rows.device)  # -inf: padding
        c_alpha = torch.zeros(len(todo), width, root.final.shape[1], dtype=torch.float32, device=rows.device)
        for n, i in enumerate(todo):
            count = slices[i].stop - slices[i].start
            c_rows[n, :count], c_consts[n, :count] = rows[0, slices[i]], consts[0, slices[i]]
            c_alpha[n, :count] = root.final[slices[i]]
        refine = len(root.unstable) >= REFINE_FROM if refine is None else refine
        outcome = branch_and_bound(net, input_set, root, c_rows, c_consts, c_alpha, deadline, batch=batch,
                                   iterations=iterations, lr=lr, lr_beta=lr_beta, refine=refine)
        result.details["bab"] = outcome
        if outcome.candidates is not None:
            result.details["candidates"] = outcome.candidates
        if outcome.proven:
            for n, i in enumerate(todo):
                result.by_bab[i] = outcome.lower
                trees[i] = outcome.leaves[n]
    if result.holds:
        result.witness = _witness(root, slices, trees, result.details["bab"].refined if trees else True)
    return result
