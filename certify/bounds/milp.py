"""Exact verification of small ReLU (and leaky ReLU) networks by mixed-integer programming (big-M; Tjeng, Xiao & Tedrake,
ICLR 2019, ANCHORS 4.5), through CVXPY with HiGHS.

An unstable unit a = relu(z) with z in [l, u], l < 0 < u, is encoded exactly with a binary d:

    a >= z,  a >= 0,  a <= u d,  a <= z - l (1 - d),  d in {0, 1};

stable units are a = z (l >= 0) or a = 0 (u <= 0). A leaky ReLU a = max(z, s z) with slope s in (0, 1]:

    a >= z,  a >= s z,  a <= s z + (1 - s) u d,  a <= z - (1 - s) l (1 - d)

(d = 1 forces a = z >= 0, d = 0 forces a = s z <= 0), stable units a = z or a = s z. Graphs with skip terms are encoded as they are
(z_k reads h_k and the h_j of its skips), so max-pool tournaments and residual adds are exact too.
The boxes [l, u] (the big-M constants) are CROWN boxes over the region searched, {||x - x0||_inf <= R} intersected with the input domain, where R bounds
the minimiser: the user's `upper` (e.g. a witnessed attack radius; any p-norm ball of radius R lies in the
inf-ball of radius R), else the whole domain.

* `exact_minimal_radius`: r* = min_j min ||x - x0||_p s.t. f_j(x) >= f_c(x) (one MILP per class j, the
  smallest optimum over j). p = inf: min t with -t <= x - x0 <= t; p = 1: min sum t_i with |x_i - x0_i| <= t_i.
  p = 2 would be a mixed-integer QP: none of the bundled solvers (HiGHS, SCIPY's milp: MILP only; OSQP,
  Clarabel, SCS: continuous only) handles it, so it raises UnsupportedError.
* `exact_margin_lower_bounds`: min_{x in S} f_c(x) - f_j(x) over an Linf or L1 set S, per j.

Optima are solver-reported: exact only up to HiGHS's MIP gap and feasibility tolerances, which are set
tight and recorded in the result's details; the checker cannot re-check them. A status other than
optimal (or infeasible, which means "no flip to class j in the searched region") yields NaN and a reason.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from certify.bounds.crown import layer_bounds
from certify.bounds.network import AffineNetwork
from certify.bounds.results import BoundResult, Kind
from certify.bounds.sets import InputSet
from certify.errors import UnsupportedError, UsageError
from certify.quiet import solver_output
from certify.vocabulary import parse_norm
from certify.validation import check_target

if TYPE_CHECKING:  # cvxpy is imported by the functions that solve (it costs ~1 s at start-up)
    import cvxpy as cp

HIGHS_TOLERANCES = {
    "mip_rel_gap": 1e-9,
    "mip_abs_gap": 1e-10,
    "mip_feasibility_tolerance": 1e-9,
    "primal_feasibility_tolerance": 1e-9,
    "dual_feasibility_tolerance": 1e-9,
}
INFEASIBLE = ("infeasible",)  # cvxpy.INFEASIBLE


def _require_linear_norm(p: float) -> None:
    if p == 2:
        raise UnsupportedError(
            "the exact L2 problem is a mixed-integer QP and no bundled solver handles it (HiGHS and "
            "scipy's milp solve MILPs only; Clarabel, SCS and OSQP are continuous); use p = 1 or inf"
        )


def _encode(net: AffineNetwork, x: cp.Variable, boxes: list[tuple[np.ndarray, np.ndarray]]) -> tuple[cp.Expression, list]:
    """Logits as a CVXPY expression of x under the exact big-M encoding, and its constraints (on a graph,
    z_k = W_k h_k + b_k + sum_j S_kj h_j reads every h_j it has a skip from)."""
    import cvxpy as cp

    constraints: list = []
    hs: list[cp.Expression] = [x]
    slopes = negative_slopes(net, "the MILP")

    def affine(k: int) -> cp.Expression:
        expr = net.weights[k].cpu().numpy() @ hs[k] + net.biases[k].cpu().numpy()
        for j, skip in net.skips.get(k, {}).items():
            expr = expr + skip.cpu().numpy() @ hs[j]
        return expr

    for k, (lower, upper) in enumerate(boxes):
        width = net.weights[k].shape[0]
        s = slopes[k]
        z = cp.Variable(width)
        a = cp.Variable(width)
        constraints.append(z == affine(k))
        active, inactive = lower >= 0, upper <= 0
        unstable = ~(active | inactive)
        if active.any():
            constraints.append(a[active] == z[active])
        if inactive.any():
            constraints.append(a[inactive] == (0 if s == 0 else s * z[inactive]))
        if unstable.any():
            idx = np.nonzero(unstable)[0]
            d = cp.Variable(idx.size, boolean=True)
            lo, up = lower[idx], upper[idx]
            if s == 0:
                constraints += [a[idx] >= z[idx], a[idx] >= 0, a[idx] <= cp.multiply(up, d), a[idx] <= z[idx] - cp.multiply(lo, 1 - d)]
            else:
                constraints += [a[idx] >= z[idx], a[idx] >= s * z[idx], a[idx] <= s * z[idx] + cp.multiply((1 - s) * up, d),
                                a[idx] <= z[idx] - cp.multiply((1 - s) * lo, 1 - d)]
        hs.append(a)  # the boxes are implied by the input region; stating them again upsets HiGHS on ~1e-10 widths
    return affine(net.depth - 1), constraints


def negative_slopes(net: AffineNetwork, method: str) -> list[float]:
    """The slope s in [0, 1] of each hidden activation for t < 0 (ReLU 0, leaky ReLU its negative_slope), or
    UnsupportedError naming the first layer whose activation is not piecewise linear that way."""
    slopes = []
    for k, act in enumerate(net.activations):
        s = 0.0 if act.name == "relu" else float(act.negative_slope) if act.name == "leaky_relu" else math.nan
        if not 0.0 <= s <= 1.0:
            raise UnsupportedError(f"{method} handles ReLU and leaky ReLU (slope in [0, 1]) activations only; hidden layer "
                                   f"{k} of this network has {act.name}"
                                   + (f" with slope {act.negative_slope}" if act.name == "leaky_relu" else ""))
        slopes.append(s)
    return slopes


def _boxes(net: AffineNetwork, region: InputSet) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per example, the CROWN boxes of the hidden units over the region (big-M constants)."""
    boxes, _ = layer_bounds(net, region, "crown")
    return [[(lo[i].cpu().numpy(), hi[i].cpu().numpy()) for lo, hi in boxes] for i in range(region.center.shape[0])]


def _solve(problem: cp.Problem) -> str:
    import cvxpy as cp

    try:
        with solver_output():
            problem.solve(solver=cp.HIGHS, **HIGHS_TOLERANCES)
    except (cp.error.SolverError, ValueError) as exc:  # ValueError: CVXPY cannot unpack an unknown status
        return f"solver error: {exc}"
    return problem.status


def _unit(size: int, index: int) -> np.ndarray:
    unit = np.zeros(size)
    unit[index] = 1.0
    return unit


def _details(statuses: list[dict], extra: dict | None = None) -> dict:
    return {"status": statuses, "solver": "HIGHS via CVXPY", "tolerances": dict(HIGHS_TOLERANCES), **(extra or {})}


def exact_minimal_radius(
    net: AffineNetwork,
    x: Tensor,
    target: Tensor,
    p: float | int | str,
    domain: tuple[Tensor, Tensor] | None = None,
    upper: float | Tensor | None = None,
) -> BoundResult:
    """Solver-reported minimal flipping radius r* [N] in the p-norm (p in {1, inf}) within the domain.

    NaN where a solve was not optimal, or where no flip exists within `upper` (then r* > upper); +inf
    where no class can be reached anywhere in the domain (no `upper`)."""
    import cvxpy as cp

    order = parse_norm(p)
    _require_linear_norm(order)
    negative_slopes(net, "the MILP")
    net = net.to("cpu")
    if upper is None and domain is None:
        raise UsageError("big-M constants need a bounded region: pass the input domain or an upper radius")
    flat = x.detach().reshape(x.shape[0], -1).to(torch.float64).cpu()
    if upper is None:
        lo, hi = (torch.as_tensor(d, dtype=torch.float64).expand(x.shape[1:]).reshape(-1) for d in domain)
        radius = torch.full((flat.shape[0],), float((hi - lo).max()), dtype=torch.float64)
    else:
        radius = torch.as_tensor(upper, dtype=torch.float64).reshape(-1).expand(flat.shape[0]).clone()
    region = InputSet.build(flat, radius, math.inf, domain)
    target = check_target(target, flat.shape[0], net.num_classes).cpu()
    region_lo, region_hi = (t.numpy() for t in region.box())
    values = torch.full((flat.shape[0],), math.inf, dtype=torch.float64)
    statuses, witnesses = [], []
    for i, boxes in enumerate(_boxes(net, region)):
        x0, c = flat[i].numpy(), int(target[i])
        per_class: dict[int, str] = {}
        best, best_point = math.inf, None
        # one problem per example, built and canonicalised once: the class j enters through the parameter
        # flip = e_j - e_c of the constraint logits_j >= logits_c (flip @ logits >= 0), set before each solve
        xv = cp.Variable(x0.size)
        logits, constraints = _encode(net, xv, boxes)
        flip = cp.Parameter(net.num_classes)
        constraints += [xv >= region_lo[i], xv <= region_hi[i], flip @ logits >= 0]
        if order == math.inf:
            t = cp.Variable()
            constraints += [xv - x0 <= t, x0 - xv <= t]
            objective = t
        else:
            t = cp.Variable(x0.size)
            constraints += [xv - x0 <= t, x0 - xv <= t]
            objective = cp.sum(t)
        if upper is not None:
            constraints.append(objective <= float(radius[i]))
        problem = cp.Problem(cp.Minimize(objective), constraints)
        for j in range(net.num_classes):
            if j == c:
                continue
            flip.value = _unit(net.num_classes, j) - _unit(net.num_classes, c)
            per_class[j] = _solve(problem)
            if per_class[j] == cp.OPTIMAL and problem.value < best:
                best, best_point = float(problem.value), xv.value.copy()
        if any(s not in (cp.OPTIMAL, *INFEASIBLE) for s in per_class.values()):
            values[i] = math.nan
        elif best_point is None:
            values[i] = math.nan if upper is not None else math.inf
        else:
            values[i] = best
        statuses.append(per_class)
        witnesses.append(None if best_point is None else torch.as_tensor(best_point))
    return BoundResult(
        value=values.to(x.device),
        kind=Kind.SOLVER_REPORTED,
        method="milp",
        assumptions=[f"exact big-M MILP in the L{'inf' if order == math.inf else 1} norm, up to the solver's tolerances",
                     "ReLU / leaky ReLU network evaluated in float64"],
        witness={"points": witnesses},
        details=_details(statuses, {"search_radius_inf": radius}),
    )


def exact_margin_lower_bounds(
    net: AffineNetwork,
    x: Tensor,
    target: Tensor,
    eps: float | Tensor,
    p: float | int | str,
    domain: tuple[Tensor, Tensor] | None = None,
) -> BoundResult:
    """Solver-reported min over S of f_c - f_j, [N, K] (+inf at j = c, NaN where not optimal), for the
    set S = {||x' - x||_p <= eps} (p in {1, inf}) intersected with the domain."""
    import cvxpy as cp

    negative_slopes(net, "the MILP")
    net = net.to("cpu")
    region = InputSet.build(x.detach().cpu(), eps if not torch.is_tensor(eps) else eps.cpu(), p, domain)
    _require_linear_norm(region.p)
    target = check_target(target, region.center.shape[0], net.num_classes).cpu()
    box_lo, box_hi = (t.numpy() for t in region.box())
    values = torch.full((region.center.shape[0], net.num_classes), math.inf, dtype=torch.float64)
    statuses = []
    for i, boxes in enumerate(_boxes(net, region)):
        x0, c = region.center[i].numpy(), int(target[i])
        xv = cp.Variable(x0.size)
        logits, constraints = _encode(net, xv, boxes)
        constraints += [xv >= box_lo[i], xv <= box_hi[i]]
        if region.p == 1:
            constraints.append(cp.norm1(xv - x0) <= float(region.eps[i]))
        per_class: dict[int, str] = {}
        # one problem per example: the class j enters through the objective's parameter e_c - e_j
        margin = cp.Parameter(net.num_classes)
        problem = cp.Problem(cp.Minimize(margin @ logits), constraints)
        for j in range(net.num_classes):
            if j == c:
                continue
            margin.value = _unit(net.num_classes, c) - _unit(net.num_classes, j)
            per_class[j] = _solve(problem)
            values[i, j] = float(problem.value) if per_class[j] == cp.OPTIMAL else math.nan
        statuses.append(per_class)
    return BoundResult(
        value=values.to(x.device),
        kind=Kind.SOLVER_REPORTED,
        method="milp",
        assumptions=[region.describe(), "exact big-M MILP up to the solver's tolerances"],
        details=_details(statuses),
    )
