"""Bounds for a VNN-LIB property (certify.models.vnnlib): the property HOLDS when, for every conjunction
{y : C y <= d} of its counterexample formula, some row r has a certified lower bound of C_r y - d_r > 0 over
the input box (then no point of the box satisfies that conjunction, so none is a counterexample).

The box is the file's box exactly: InputSet with centre (lower + upper) / 2, L-infinity radius the largest
half-width, intersected with the domain [lower, upper]. Lower bounds come from CROWN back-substitution
(certify.bounds.crown.backward_lower_bound with the rows C and constant -d), from alpha-CROWN
(certify.bounds.alpha_crown, optimised slopes, re-evaluated through the same code path), or from branch and
bound on ReLU splits (certify.bounds.bab, method "bab": alpha-CROWN at the root, then per unproven
conjunction); all in float64 with outward rounding. All rows of all conjunctions are bounded in one pass.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from certify.bounds.crown import backward_lower_bound, layer_bounds
from certify.bounds.network import AffineNetwork
from certify.bounds.sets import InputSet
from certify.errors import UsageError
from certify.models.vnnlib import Property

PROPERTY_METHODS = ("crown", "alpha-crown", "bab")


def property_set(prop: Property) -> InputSet:
    """The property's input box as an InputSet (one example)."""
    lower = torch.as_tensor(prop.lower, dtype=torch.float64)
    upper = torch.as_tensor(prop.upper, dtype=torch.float64)
    centre = ((lower + upper) / 2).clamp(lower, upper)
    eps = float(((upper - lower) / 2).max()) * (1 + 1e-12)
    return InputSet(centre.reshape(1, -1), torch.tensor([eps], dtype=torch.float64), float("inf"), lower, upper)


def property_rows(prop: Property) -> tuple[Tensor, Tensor, list[slice]]:
    """(rows [1, R, m] = C stacked over conjunctions, constants [1, R] = -d, one slice per conjunction), so
    that rows . y + constants = C y - d, the violation of a row of the counterexample region, which must be
    > 0 for some row of each conjunction."""
    cs = [torch.as_tensor(c, dtype=torch.float64) for c, _ in prop.disjuncts]
    ds = [torch.as_tensor(d, dtype=torch.float64) for _, d in prop.disjuncts]
    slices, start = [], 0
    for c in cs:
        slices.append(slice(start, start + c.shape[0]))
        start += c.shape[0]
    return torch.cat(cs)[None], -torch.cat(ds)[None], slices


@dataclass
class PropertyBound:
    """Certified lower bounds of C y - d over the box, per row; `holds` when every conjunction
    has a row with a positive bound. `margin` is min over conjunctions of the best row (> 0 iff holds)."""

    lower: Tensor  # [R]
    slices: list[slice]
    method: str
    details: dict
    by_bab: dict = field(default_factory=dict)  # conjunction index -> BaB's certified bound (> 0: proven)

    @property
    def per_conjunction(self) -> list[float]:
        return [max(float(self.lower[s].max()), self.by_bab.get(i, -math.inf)) for i, s in enumerate(self.slices)]

    @property
    def margin(self) -> float:
        return min(self.per_conjunction)

    @property
    def holds(self) -> bool:
        return self.margin > 0


def property_bounds(net: AffineNetwork, prop: Property, method: str = "crown", **options) -> PropertyBound:
    """Certified lower bounds of C y - d for every row of `prop` over its input box (module docstring)."""
    if method not in PROPERTY_METHODS:
        raise UsageError(f"unknown property method {method!r}; choose one of {PROPERTY_METHODS}")
    if net.input_size != prop.num_inputs or net.num_classes != prop.num_outputs:
        raise UsageError(
            f"the property has {prop.num_inputs} inputs and {prop.num_outputs} outputs, the network "
            f"{net.input_size} and {net.num_classes}"
        )
    input_set = property_set(prop)
    rows, consts, slices = property_rows(prop)
    if method == "crown":
        with torch.no_grad():
            boxes, relaxations = layer_bounds(net, input_set, "crown")
            value = backward_lower_bound(net, input_set, net.depth - 1, rows, relaxations, boxes, const=consts)
        return PropertyBound(value[0], slices, "crown", {})
    if method == "alpha-crown":
        from certify.bounds.alpha_crown import alpha_crown_lower_bound

        value, details = alpha_crown_lower_bound(net, input_set, rows, consts, **options)
        return PropertyBound(value[0], slices, "alpha-crown", details)
    return _bab(net, input_set, rows, consts, slices, **options)


def _bab(net: AffineNetwork, input_set: InputSet, rows: Tensor, consts: Tensor, slices: list[slice],
         deadline: float | None = None, batch: int = 64, root_iterations: int = 20,
         root_share: float = 0.3, iterations: int = 10) -> PropertyBound:
    """alpha-CROWN at the root (its optimised intermediate boxes, for at most `root_share` of the time),
    then branch and bound (certify.bounds.bab) on each conjunction still unproven, in order, until
    `deadline` (perf_counter time)."""
    from certify.bounds.alpha_crown import alpha_crown_lower_bound
    from certify.bounds.bab import branch_and_bound

    start = time.perf_counter()
    deadline = start + 60.0 if deadline is None else deadline
    with torch.no_grad():
        boxes, relaxations = layer_bounds(net, input_set, "crown")
        value = backward_lower_bound(net, input_set, net.depth - 1, rows, relaxations, boxes, const=consts)
    relu_only = all(a.name == "relu" for a in net.activations)  # alpha-CROWN optimises ReLU slopes only
    if root_iterations > 0 and relu_only and not all(float(value[0, s].max()) > 0 for s in slices):
        root, details = alpha_crown_lower_bound(net, input_set, rows, consts, iterations=root_iterations,
                                                deadline=start + root_share * (deadline - start))
        value = torch.maximum(value, root)
        boxes = [(torch.maximum(a[0], b[0]), torch.minimum(a[1], b[1])) for a, b in zip(boxes, details["boxes"])]
    result = PropertyBound(value[0], slices, "bab", {"conjunctions": {}})
    order = sorted(range(len(slices)), key=lambda i: float(value[0, slices[i]].max()), reverse=True)
    for i in order:
        s = slices[i]
        if float(value[0, s].max()) > 0:
            continue
        if time.perf_counter() > deadline:
            break
        outcome = branch_and_bound(net, input_set, rows[:, s], consts[:, s], boxes, deadline, batch=batch,
                                   iterations=iterations)
        result.details["conjunctions"][i] = outcome
        if not outcome.proven:
            break  # the property needs every conjunction: stop at the first one BaB cannot prove in time
        result.by_bab[i] = outcome.lower
    return result

