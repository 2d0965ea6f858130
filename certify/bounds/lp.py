"""The LP (triangle) relaxation of a ReLU network, solved by CVXPY, with a safe bound re-derived from
its duals (Wong & Kolter 2018 primal; safe bound as in MIPVerify's lp_certification, ANCHORS 4.2, 4.4).

Primal for a linear objective c^T z_t of layer t over the input set S (boxes [l_k, u_k] on the hidden
pre-activations below t, from CROWN/IBP or from earlier LPs):

    min  c^T (W_t a_{t-1} + b_t + sum_j S_tj a_{j-1})
    s.t. z_k = W_k a_{k-1} + b_k + sum_j S_kj a_{j-1}   (E_k, dual w_k free;   a_{-1} = x; the skips S_kj
                                                          of a graph, `AffineNetwork`, read h_j = a_{j-1})
         a_k - z_k >= 0                      (G1_k, dual y1_k >= 0)
         s_k z_k - a_k >= q_k                (G2_k, dual y2_k >= 0: the chord a <= s z - q, a valid
                                              upper line of relu on [l_k, u_k], crown.relax)
         l_k <= z_k <= u_k,  relu(l_k) <= a_k <= relu(u_k),  x in S.

DESIGN section 5's convention: for min c^T v s.t. A v >= g, E v = e, v in a product of boxes and S, any
y >= 0 and any w give the lower bound

    y^T g + w^T e + sum_boxes min(r_j l_j, r_j u_j) + min_{x in S} r_x^T x,   r = c - A^T y - E^T w,

here r_z = -w_k + y1_k - s_k y2_k, r_a = W_{k+1}^T w_{k+1} + sum_m S_{m,k+1}^T w_m - y1_k + y2_k (with
c in place of w_t for the top layer t), r_x = W_0^T w_0 + sum_m S_{m,0}^T w_m, and the constant c^T b_t + sum w_k^T b_k + sum y2_k^T q_k. `safe_lower_bound` evaluates it
from stored multipliers (with Higham's gamma_n bound on its own rounding error, and the input term by the
lower support of sets.InputSet), so the value never rests on the solver's accuracy: an inaccurate dual
only loosens it. The hidden boxes are claims too: they come from CROWN or from earlier safe LP bounds,
which a checker re-derives the same way.

Intermediate bounds are tightened layer by layer: each unstable unit's box is replaced by its safe LP
lower and upper bounds (intersected with the previous box), so the final LP is at least as tight as
CROWN on the same boxes. Problems are compiled once per (network, layer, norm) with CVXPY Parameters
(DPP) and re-solved with new data. Solvers: HiGHS (p = 1, inf: an LP), Clarabel (p = 2: an SOCP).
HiGHS may wrongly report boxes of width ~1e-10 (pixels pinned by the domain) infeasible: a solve that is
not optimal is retried with Clarabel. Anything but an optimal status yields a refusal, never a number.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from certify.bounds.activations import Relaxation, relax
from certify.bounds.crown import layer_bounds, margin_spec
from certify.bounds.ibp import Box
from certify.bounds.network import AffineNetwork
from certify.bounds.requirements import require_relu
from certify.bounds.results import BoundResult, Kind
from certify.bounds.sets import InputSet, rounding_margin
from certify.quiet import solver_output
from certify.validation import check_target

if TYPE_CHECKING:  # cvxpy is imported by the code that solves (it costs ~1 s at start-up)
    import cvxpy as cp


CLARABEL_TOLERANCES = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10}


@dataclass
class LPDuals:
    """Multipliers of one solved LP: w[k] (equalities), y1[k], y2[k] (inequalities) for k below the top layer."""

    w: list[Tensor]
    y1: list[Tensor]
    y2: list[Tensor]


@dataclass
class LPBound:
    value: float  # the safe bound (nan when the solve was not optimal)
    solver_value: float
    status: str
    duals: LPDuals | None = field(default=None, repr=False)


class TriangleLP:
    """Compiled parametric LP min c^T z_top over the triangle relaxation of the layers below `top`."""

    def __init__(self, net: AffineNetwork, top: int, p: float) -> None:
        import cvxpy as cp

        self.net, self.top, self.p = net, top, p
        n = net.input_size
        self.x0, self.xlo, self.xhi = cp.Parameter(n), cp.Parameter(n), cp.Parameter(n)
        self.eps = cp.Parameter(nonneg=True)
        x = cp.Variable(n)
        constraints = [x >= self.xlo, x <= self.xhi]
        if p != math.inf:
            constraints.append(cp.norm(x - self.x0, 1 if p == 1 else 2) <= self.eps)
        self.layer_params: list[dict[str, cp.Parameter]] = []
        self.equalities, self.lower_rows, self.chord_rows = [], [], []
        hs: list[cp.Expression] = [x]  # h_0 = x, h_{k+1} = a_k

        def linear(k: int) -> cp.Expression:
            """W_k h_k + sum_j S_kj h_j (the skips of a graph), without the bias."""
            expr = net.weights[k].cpu().numpy() @ hs[k]
            for j, skip in net.skips.get(k, {}).items():
                expr = expr + skip.cpu().numpy() @ hs[j]
            return expr

        for k in range(top):
            width = net.weights[k].shape[0]
            params = {name: cp.Parameter(width) for name in ("zlo", "zhi", "alo", "ahi", "s", "q")}
            z, a = cp.Variable(width), cp.Variable(width)
            self.equalities.append(z == linear(k) + net.biases[k].cpu().numpy())
            self.lower_rows.append(a - z >= 0)
            self.chord_rows.append(cp.multiply(params["s"], z) - a >= params["q"])
            constraints += [z >= params["zlo"], z <= params["zhi"], a >= params["alo"], a <= params["ahi"]]
            self.layer_params.append(params)
            hs.append(a)
        self.c = cp.Parameter(net.weights[top].shape[0])
        objective = cp.Minimize(self.c @ linear(top))
        self.problem = cp.Problem(objective, constraints + self.equalities + self.lower_rows + self.chord_rows)

    def solve(self, input_set: InputSet, boxes: list[Box], relaxations: list[Relaxation], c: Tensor) -> LPBound:
        """Solve for one example (input_set, boxes, relaxations of batch size 1) and objective c [n_top]."""
        import cvxpy as cp

        xlo, xhi = input_set.box()
        self.x0.value, self.xlo.value, self.xhi.value = (t[0].cpu().numpy() for t in (input_set.center, xlo, xhi))
        self.eps.value = float(input_set.eps[0])
        for params, (lower, upper), rel in zip(self.layer_params, boxes, relaxations):
            values = {
                "zlo": lower, "zhi": upper, "alo": lower.clamp(min=0), "ahi": upper.clamp(min=0),
                "s": rel.upper_slope, "q": -rel.upper_intercept,
            }
            for name, tensor in values.items():
                params[name].value = tensor[0].cpu().numpy()
        self.c.value = c.cpu().numpy()
        status = "not solved"
        for solver, options in ([] if self.p == 2 else [(cp.HIGHS, {})]) + [(cp.CLARABEL, CLARABEL_TOLERANCES)]:
            try:
                with solver_output():
                    self.problem.solve(solver=solver, **options)
                status = self.problem.status
            except (cp.error.SolverError, ValueError) as exc:  # ValueError: CVXPY cannot unpack an unknown status
                status = f"solver error: {exc}"
            if status == cp.OPTIMAL:
                break
        if status != cp.OPTIMAL:
            return LPBound(math.nan, math.nan, status)
        dual = lambda con: torch.as_tensor(np.asarray(con.dual_value, dtype=np.float64).reshape(-1))  # noqa: E731
        duals = LPDuals(
            w=[-dual(con) for con in self.equalities],  # CVXPY: L = f + w^T (lhs - rhs) for lhs == rhs
            y1=[dual(con).clamp(min=0) for con in self.lower_rows],
            y2=[dual(con).clamp(min=0) for con in self.chord_rows],
        )
        value = safe_lower_bound(self.net, input_set, self.top, c, boxes, relaxations, duals)
        solver_value = float(self.problem.value) + float(c.cpu() @ self.net.biases[self.top].cpu())
        return LPBound(value, solver_value, status, duals)


def safe_lower_bound(
    net: AffineNetwork,
    input_set: InputSet,
    top: int,
    c: Tensor,
    boxes: list[Box],
    relaxations: list[Relaxation],
    duals: LPDuals,
) -> float:
    """The valid lower bound on c^T z_top given any multipliers (module doc), for one example, with a
    rigorous allowance for its own float64 rounding."""
    c = c.detach().to(torch.float64).cpu()
    weights = [w.cpu() for w in net.weights]
    biases = [b.cpu() for b in net.biases]

    def multiplier(m: int) -> Tensor:
        return duals.w[m] if m < top else c

    def from_skips(i: int) -> tuple[Tensor, Tensor, int]:
        """sum_m S_mi^T (w_m or c) over the layers m <= top with a skip from h_i, its magnitude, its terms."""
        total = abs_total = torch.zeros(weights[i].shape[1], dtype=torch.float64)
        count = 0
        for m in range(i + 1, top + 1):
            skip = net.skips.get(m, {}).get(i)
            if skip is not None:
                skip = skip.cpu()
                total = total + skip.T @ multiplier(m)
                abs_total = abs_total + skip.abs().T @ multiplier(m).abs()
                count += skip.shape[0] + 1
        return total, abs_total, count

    y1 = [y.clamp(min=0) for y in duals.y1]
    y2 = [y.clamp(min=0) for y in duals.y2]
    const_terms = [c * biases[top]]
    const_terms += [w * b for w, b in zip(duals.w, biases)]
    const_terms += [y * -rel.upper_intercept[0].cpu() for y, rel in zip(y2, relaxations)]
    value = sum(t.sum() for t in const_terms)
    magnitude = sum(t.abs().sum() for t in const_terms)
    terms = sum(t.numel() for t in const_terms)
    for k, ((lower, upper), rel) in enumerate(zip(boxes, relaxations)):
        lower, upper, slope = lower[0].cpu(), upper[0].cpu(), rel.upper_slope[0].cpu()
        r_z = -duals.w[k] + y1[k] - slope * y2[k]
        r_z_abs = duals.w[k].abs() + y1[k] + slope.abs() * y2[k]
        above = weights[k + 1].T @ (duals.w[k + 1] if k + 1 < top else c)
        above_abs = weights[k + 1].abs().T @ (duals.w[k + 1] if k + 1 < top else c).abs()
        skipped, skipped_abs, count = from_skips(k + 1)
        if count:
            above, above_abs, terms = above + skipped, above_abs + skipped_abs, terms + count
        r_a = above - y1[k] + y2[k]
        r_a_abs = above_abs + y1[k] + y2[k]
        a_lo, a_hi = lower.clamp(min=0), upper.clamp(min=0)
        for r, r_abs, lo, hi in ((r_z, r_z_abs, lower, upper), (r_a, r_a_abs, a_lo, a_hi)):
            box_terms = torch.minimum(r * lo, r * hi)
            value = value + box_terms.sum()
            magnitude = magnitude + (r_abs * torch.maximum(lo.abs(), hi.abs())).sum()
            terms += weights[k + 1].shape[0] + 4
    r_x = weights[0].T @ duals.w[0]
    r_x_abs = weights[0].abs().T @ duals.w[0].abs()
    skipped, skipped_abs, count = from_skips(0)
    if count:
        r_x, r_x_abs, terms = r_x + skipped, r_x_abs + skipped_abs, terms + count
    x_lo, x_hi = input_set.box()
    magnitude = magnitude + (r_x_abs * torch.maximum(x_lo.abs(), x_hi.abs())[0].cpu()).sum()
    value = value + float(input_set.lower_support(r_x.to(input_set.center)[None, None, :])[0, 0])
    terms += weights[0].shape[0] + 2
    return float(value - rounding_margin(torch.as_tensor(magnitude, dtype=torch.float64), terms))


class LPVerifier:
    """Triangle-LP bounds for one ReLU network and norm, with its compiled problems cached per layer."""

    def __init__(self, net: AffineNetwork, p: float) -> None:
        require_relu(net, "the LP relaxation")
        self.net = net.to("cpu")
        self.p = p
        self._problems: dict[int, TriangleLP] = {}

    def problem(self, top: int) -> TriangleLP:
        if top not in self._problems:
            self._problems[top] = TriangleLP(self.net, top, self.p)
        return self._problems[top]

    def tightened_boxes(
        self, input_set: InputSet, boxes: list[Box]
    ) -> tuple[list[Box], list[Relaxation], str, dict[tuple[int, int, float], LPDuals]]:
        """Layer by layer, replace each unstable unit's box by its safe LP bounds (one example).
        Returns the boxes, their relaxations, "optimal" or the first failing status, and the multipliers
        of each tightening LP keyed by (layer, unit, sign): sign +1 bounds z from below, -1 from above."""
        tightened: list[Box] = []
        relaxations: list[Relaxation] = []
        duals: dict[tuple[int, int, float], LPDuals] = {}
        for k, (lower, upper) in enumerate(boxes):
            lower, upper = lower.clone(), upper.clone()
            if k > 0:
                unstable = torch.nonzero((lower[0] < 0) & (upper[0] > 0)).reshape(-1).tolist()
                problem = self.problem(k)
                width = lower.shape[1]
                for unit in unstable:
                    for sign in (1.0, -1.0):
                        c = torch.zeros(width, dtype=torch.float64)
                        c[unit] = sign
                        bound = problem.solve(input_set, tightened, relaxations, c)
                        if math.isnan(bound.value):
                            return tightened, relaxations, bound.status, duals
                        duals[(k, unit, sign)] = bound.duals
                        if sign > 0:
                            lower[0, unit] = max(float(lower[0, unit]), bound.value)
                        else:
                            upper[0, unit] = min(float(upper[0, unit]), -bound.value)
            tightened.append((lower, upper))
            relaxations.append(relax(self.net.activations[k], lower, upper))
        return tightened, relaxations, "optimal", duals

    def margin_bounds(self, input_set: InputSet, target: Tensor, tighten: bool = True) -> tuple[Tensor, list[dict]]:
        """Safe LP lower bounds [N, K] of f_c - f_j (+inf at j = c; nan where a solve failed) and, per
        example, the witness (boxes, relaxations, duals per class, statuses, tightening multipliers)."""
        input_set = InputSet(input_set.center.cpu(), input_set.eps.cpu(), input_set.p,
                             None if input_set.lo is None else input_set.lo.cpu(),
                             None if input_set.hi is None else input_set.hi.cpu())
        target = check_target(target, input_set.center.shape[0], self.net.num_classes).cpu()
        spec = margin_spec(target, self.net.num_classes)
        all_boxes, _ = layer_bounds(self.net, input_set, "crown")
        values = torch.full(spec.shape[:2], float("inf"), dtype=torch.float64)
        witnesses: list[dict] = []
        top = self.net.depth - 1
        for i in range(input_set.center.shape[0]):
            one = InputSet(input_set.center[i : i + 1], input_set.eps[i : i + 1], input_set.p, input_set.lo, input_set.hi)
            boxes = [(lo[i : i + 1], hi[i : i + 1]) for lo, hi in all_boxes]
            tightening: dict[tuple[int, int, float], LPDuals] = {}
            if tighten:
                boxes, relaxations, status, tightening = self.tightened_boxes(one, boxes)
            else:
                relaxations, status = [relax(act, *box) for act, box in zip(self.net.activations, boxes)], "optimal"
            witness: dict = {"boxes": boxes, "relaxations": relaxations, "duals": {}, "status": {}, "tightening": tightening}
            if status != "optimal":
                values[i] = math.nan
                witness["status"]["tightening"] = status
                witnesses.append(witness)
                continue
            for j in range(self.net.num_classes):
                if j == int(target[i]):
                    continue
                bound = self.problem(top).solve(one, boxes, relaxations, spec[i, j])
                values[i, j] = bound.value
                witness["duals"][j], witness["status"][j] = bound.duals, bound.status
            witnesses.append(witness)
        return values, witnesses


def lp_margin_lower_bounds(
    net: AffineNetwork,
    x: Tensor,
    target: Tensor,
    eps: float | Tensor,
    p: float | int | str,
    domain: tuple[Tensor, Tensor] | None = None,
    tighten: bool = True,
) -> BoundResult:
    """Certified lower bounds [N, K] of f_c - f_j by the triangle LP (LP-tightened intermediate boxes
    when `tighten`); refused when any solve is not optimal. Values are returned on x's device."""
    input_set = InputSet.build(x, eps, p, domain)
    verifier = LPVerifier(net, input_set.p)
    values, witnesses = verifier.margin_bounds(input_set, target, tighten)
    method = "lp-tightened" if tighten else "lp"
    if torch.isnan(values).any():
        import cvxpy as cp

        failed = [w["status"] for w in witnesses if any(s != cp.OPTIMAL for s in w["status"].values())]
        return BoundResult.refuse(method, f"an LP solve was not optimal: {failed}", [input_set.describe()])
    return BoundResult(
        value=values.to(x.device),
        kind=Kind.CERTIFIED,
        method=method,
        assumptions=[input_set.describe(), "ReLU network; bounds re-derived from LP duals (safe bound)"],
        witness={"per_example": witnesses},
        details={"eps": input_set.eps, "p": input_set.p},
    )
