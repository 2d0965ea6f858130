"""Lower and upper bounds on the minimal decision-flipping radius per example, and their gap
(issue 5; DESIGN sections 4.3 and 5).

This module composes the verification layer (`certify.bounds`: Lipschitz, relaxation and MILP bounds) with
the solver layer's witness (`certify.explain.minimal_perturbation`), so it sits above both and below the
certificate issuers:

    r*(x) = inf { ||delta||_p : lo <= x + delta <= hi, m_c(x + delta) <= 0 },   m_c = f_c - max_{j != c} f_j.

* **upper** (certified): ||delta||_p (rounded up) of a witness from `certify.explain.minimal_perturbation`,
  verified by forward passes of the model in its own dtype and of a float64 copy; inf, with the reason,
  where no witness was found; 0 where m_c(x) <= 0 (then delta = 0 is feasible).
* **lower** (certified): the largest of
  - "lipschitz": min_j m_cj(x) / L_cj with L_cj the product-of-norms Lipschitz bound of f_c - f_j in the
    norm dual to p (for p = 1 the l2 constant serves, since ||.||_2 <= ||.||_1); valid with or without the
    domain, which only removes perturbations;
  - "crown", "ibp", "lp": bisection on eps with all intermediate bounds recomputed
    (`certify.bounds.radius.certified_radius`), over the domain;
  and 0 (r* >= 0 always).
* **exact** (solver-reported, not certified): the MILP optimum of `certify.bounds.milp.exact_minimal_radius`
  for small ReLU / leaky ReLU networks and p in {1, inf}, searched within the witnessed radius.

gap = upper - lower. A certified lower bound above a verified witness would prove a bug; it raises.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor, nn

from certify.bounds.lipschitz import lipschitz_product
from certify.bounds.milp import exact_minimal_radius, negative_slopes
from certify.bounds.network import AffineNetwork, from_module
from certify.bounds.radius import RADIUS_METHODS, certified_radius, lipschitz_radius
from certify.bounds.results import BoundResult, Kind
from certify.errors import CertifyError, UnsupportedError, UsageError
from certify.explain.minimal_perturbation import MinimalPerturbation, minimal_perturbation
from certify.validation import (
    TargetLike,
    check_eval_mode,
    evaluate_logits,
    grad_ready,
    resolve_target,
    validate_inputs,
    with_autograd,
)
from certify.vocabulary import parse_norm

LOWER_METHODS = ("lipschitz",) + RADIUS_METHODS
EXACT_MAX_HIDDEN_UNITS = 64


@dataclass
class RadiusBounds:
    """Per example [N]: certified lower and upper bounds on r*, their gap, the method that gave each, the
    solver-reported exact value (NaN where not computed), and every bound computed (`results`, by method)."""

    lower: Tensor
    lower_method: list[str]
    upper: Tensor
    upper_reason: list[str]
    gap: Tensor
    exact: Tensor
    witness: MinimalPerturbation
    results: dict[str, BoundResult] = field(default_factory=dict)


def margin_lipschitz_table(net: AffineNetwork, p: float) -> BoundResult:
    """Certified Lipschitz constants [K, K] of f_a - f_b in the norm p of the input (p = 1 via l2)."""
    k = net.num_classes
    eye = torch.eye(k, dtype=torch.float64, device=net.weights[-1].device)
    rows = (eye[:, None, :] - eye[None, :, :]).reshape(k * k, k)
    result = lipschitz_product(net, math.inf if p == math.inf else 2, c=rows)
    result.value = result.value.reshape(k, k)
    if p == 1.0:
        result.assumptions.append("l2 constant used for p = 1, since ||.||_2 <= ||.||_1")
    return result


def _lower_bound(net: AffineNetwork, x: Tensor, target: Tensor, p: float, method: str, domain, tol: float, top: float | None) -> BoundResult:
    if method == "lipschitz":
        table = margin_lipschitz_table(net, p)
        result = lipschitz_radius(net, x, target, table.value)
        result.assumptions += table.assumptions
        return result
    return certified_radius(net, x, target, p, method=method, domain=domain, tol=tol, max_radius=top)


def milp_applicable(net: AffineNetwork) -> bool:
    """Whether the exact MILP is run automatically: a ReLU or leaky ReLU (slope in [0, 1]) network, chain or
    graph, with at most EXACT_MAX_HIDDEN_UNITS hidden units."""
    hidden = sum(w.shape[0] for w in net.weights[:-1])
    try:
        negative_slopes(net, "the MILP")
    except UnsupportedError:
        return False
    return hidden <= EXACT_MAX_HIDDEN_UNITS


def _exact(net: AffineNetwork, x: Tensor, target: Tensor, p: float, domain, upper: Tensor, at_boundary: Tensor) -> BoundResult:
    """MILP r* within the witnessed radius (slightly widened so the witness lies strictly inside), or within
    the domain where no witness exists; 0 where m_c(x) <= 0; NaN where neither region is bounded."""
    values = torch.full_like(upper, math.nan)
    values = torch.where(at_boundary, torch.zeros_like(values), values)
    statuses: dict[int, object] = {}
    witnessed = torch.isfinite(upper) & ~at_boundary
    groups = [(witnessed, upper * (1 + 1e-7) + 1e-12)]
    if domain is not None:
        groups.append((~torch.isfinite(upper) & ~at_boundary, None))
    for selected, search in groups:
        index = torch.nonzero(selected).reshape(-1)
        if index.numel() == 0:
            continue
        result = exact_minimal_radius(net, x[index], target[index], p, domain=domain, upper=None if search is None else search[index])
        values[index] = result.value.to(values.device)
        statuses.update({int(i): s for i, s in zip(index.tolist(), result.details["status"])})
    return BoundResult(
        value=values,
        kind=Kind.SOLVER_REPORTED,
        method="milp",
        assumptions=["exact big-M MILP up to HiGHS's tolerances, searched within the witnessed radius"],
        details={"status": statuses},
    )


@with_autograd
def minimal_radius_bounds(
    model: nn.Module,
    inputs: Tensor,
    target: TargetLike = None,
    p: float | int | str = 2,
    domain: tuple[object, object] | None = None,
    lower_methods: Sequence[str] = ("lipschitz", "crown"),
    exact: bool | str = "auto",
    tol: float = 1e-4,
    witness: MinimalPerturbation | None = None,
    **attack_options: object,
) -> RadiusBounds:
    """Bounds on r* for each input (see the module docstring). `exact` = "auto" runs the MILP for ReLU or
    leaky ReLU networks with at most EXACT_MAX_HIDDEN_UNITS hidden units and p in {1, inf}; True forces it (p = 2
    raises UnsupportedError there), False skips it. `witness` reuses an earlier `minimal_perturbation`
    result for the same inputs and targets; otherwise one is computed with `attack_options`."""
    order = parse_norm(p)
    unknown = [m for m in lower_methods if m not in LOWER_METHODS]
    if unknown:
        raise UsageError(f"unknown lower-bound methods {unknown}; choose from {LOWER_METHODS}")
    if exact not in (True, False, "auto"):
        raise UsageError(f"exact must be True, False or 'auto', got {exact!r}")
    inputs = grad_ready(validate_inputs(inputs), model)
    check_eval_mode(model)
    with torch.no_grad():
        logits = evaluate_logits(model, inputs)
    target = resolve_target(target, logits)
    if witness is None:
        witness = minimal_perturbation(model, inputs, target, p=order, domain=domain, **attack_options)
    elif witness.norm.shape[0] != inputs.shape[0] or witness.p != order:
        raise UsageError("the given witness does not match these inputs or this norm")
    upper = witness.norm
    at_boundary = witness.input_margin <= 0
    reasons = witness.reasons()
    n = inputs.shape[0]
    results: dict[str, BoundResult] = {}
    candidates = [torch.zeros(n, dtype=torch.float64, device=inputs.device)]
    names = ["trivial (r* >= 0)"]
    exact_value = torch.full((n,), math.nan, dtype=torch.float64, device=inputs.device)
    try:
        net = from_module(model, tuple(inputs.shape[1:]))
    except UnsupportedError as exc:
        for method in lower_methods:
            results[method] = BoundResult.refuse(method, f"the verification layer cannot read this model: {exc}")
        net = None
    if net is not None:
        finite = upper[torch.isfinite(upper)]
        top = float(finite.max()) * (1 + 1e-9) if finite.numel() == n and float(finite.max()) > 0 else None
        for method in lower_methods:
            try:
                results[method] = _lower_bound(net, inputs, target, order, method, domain, tol, top)
            except UnsupportedError as exc:
                results[method] = BoundResult.refuse(method, str(exc))
                continue
            candidates.append(results[method].value.to(torch.float64).to(inputs.device))
            names.append(results[method].method)
        run_exact = exact is True or (exact == "auto" and order != 2.0 and milp_applicable(net))
        if run_exact:
            results["exact"] = _exact(net, inputs, target, order, domain, upper, at_boundary)
            exact_value = results["exact"].value
    stacked = torch.stack(candidates)
    stacked = torch.where(at_boundary.view(1, -1), torch.zeros_like(stacked), stacked)
    lower, best = stacked.max(dim=0)
    if bool((lower > upper).any()):
        bad = torch.nonzero(lower > upper).reshape(-1).tolist()
        raise CertifyError(f"certified lower bound above a verified witness for examples {bad[:10]}: a bound is unsound")
    return RadiusBounds(
        lower=lower,
        lower_method=[names[int(i)] for i in best],
        upper=upper,
        upper_reason=reasons,
        gap=upper - lower,
        exact=exact_value,
        witness=witness,
        results=results,
    )
