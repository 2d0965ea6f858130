"""Claims "radius-lower" (r*(x) >= value) from relaxation bounds, with the witness the independent checker
(`relaxation_check`) needs to re-derive them (in outward-rounded float64).

    r*(x) = inf { ||x' - x||_p : x' in the domain, argmax f(x') != c }.

The radius is bisected by `certify.bounds.radius.certified_radius` (CROWN, or the triangle LP with
LP-tightened boxes), the value written is that radius rounded down by the builder's margin (or, when
the margins are positive only by a hair there and a re-solve does not prove them, one bisection tolerance
lower), and the witness is computed on the ball of exactly the written value. The claim's params
(`certify.certificates.claims`) are target, p, domain (its JSON, null when unbounded) and relaxation (the
scheme the witness is for); the witness holds evidence only:

* "crown": the lower slopes alpha of every hidden unit as a table [K, n_k] per hidden layer: row c those
  of the boxes (the checker re-derives all boxes from them), row j != c those with which the margin
  f_c - f_j is bounded (certify's CROWN keeps per margin the better of the parallel and adaptive slopes);
* "lp": one slope per unit (CROWN's adaptive rule: the boxes the LP starts from, and the margins), and
  the dual multipliers (w, y1, y2) of every box-tightening LP (per layer, units, lower and upper) and of
  the final LP per class j != c whose solve was optimal (a margin without one keeps its CROWN bound). When
  a tightening LP is not optimal at the written radius, the claim carries a CROWN witness of the same
  one-slope-per-unit form instead if CROWN with those slopes proves that radius.

Only ReLU networks are claimed: the checker's outward-rounded relaxation is of relu only (no exp or log for softplus). Graphs with
skip terms (residual adds, concatenations, max-pool as ReLU tournaments) are claimed with either scheme: the
LP's multipliers are per layer as on a chain, and the checker's dual bound (`relaxation_check`) gathers each
layer output's coefficient from every layer that reads it.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from certify.bounds.crown import backward_lower_bound, layer_bounds, margin_bounds_on_set, margin_spec
from certify.bounds.lp import LPDuals, LPVerifier
from certify.bounds.network import AffineNetwork, from_module
from certify.bounds.radius import RADIUS_SLOPES, certified_radius
from certify.bounds.requirements import activation_refusal
from certify.bounds.sets import InputSet
from certify.vocabulary import parse_norm as norm_order
from certify.certificates.claims import Claim, issue, refuse
from certify.certificates.document import encode_array
from certify.errors import UnsupportedError, UsageError
from certify.vocabulary import Domain, norm_json, round_down

CLAIM_TYPE = "radius-lower"
METHODS = ("crown", "lp")


def _stack(duals: list[LPDuals], key: str, layers: int) -> list[dict]:
    """One encoded [rows, width_k] array per hidden layer k < layers, rows in the order of `duals`."""
    return [encode_array(torch.stack([getattr(d, key)[k] for d in duals]).cpu().numpy()) for k in range(layers)]


def _dual_record(duals: list[LPDuals], layers: int) -> dict:
    return {key: _stack(duals, key, layers) for key in ("w", "y1", "y2")}


def _lp_witness(net: AffineNetwork, input_set: InputSet, target: int) -> tuple[Tensor, dict]:
    """Safe LP margin bounds [K] (nan where the final LP was not optimal) and the multipliers of the
    tightening LPs and of the optimal final LPs; all nan and no multipliers if a tightening LP failed."""
    values, (witness,) = LPVerifier(net, input_set.p).margin_bounds(input_set, torch.tensor([target]))
    if "tightening" in witness["status"]:
        return torch.full_like(values[0], math.nan), {}
    by_layer: dict[int, list[int]] = {}
    for layer, unit, sign in witness["tightening"]:
        if sign > 0:
            by_layer.setdefault(layer, []).append(unit)
    tightening = [
        {
            "layer": layer,
            "units": units,
            "lower": _dual_record([witness["tightening"][(layer, u, 1.0)] for u in units], layer),
            "upper": _dual_record([witness["tightening"][(layer, u, -1.0)] for u in units], layer),
        }
        for layer, units in sorted(by_layer.items())
    ]
    classes = sorted(j for j, d in witness["duals"].items() if d is not None)
    final = {"classes": classes, **_dual_record([witness["duals"][j] for j in classes], net.depth - 1)}
    return values[0], {"tightening": tightening, "final": final}


def relaxation_radius_claim(
    net: AffineNetwork | nn.Module,
    x: Tensor,
    target: int,
    p: float | int | str,
    domain: Domain | tuple[Tensor | float, Tensor | float] | None = None,
    method: str = "crown",
    tol: float = 1e-4,
    claim_id: str = CLAIM_TYPE,
) -> Claim:
    """A certified claim r*(x) >= value for one example x [1, ...] and its class `target`, by `method`
    ("crown" or "lp") bisected to `tol`, with a re-checkable witness; a refused claim (with the
    reason) for an unsupported model or when no positive radius is certified. params: target, p, domain
    (its JSON, null when unbounded) and relaxation (the scheme of the witness)."""
    if method not in METHODS:
        raise UsageError(f"unknown relaxation method {method!r}; choose one of {METHODS}")
    if x.shape[0] != 1:
        raise UsageError(f"one example expected (x of shape [1, ...]), got batch size {x.shape[0]}")
    order = norm_order(p)
    box = Domain.of(domain)
    if box is not None and not box.bounded:
        box = None
    pair = None if box is None else box.tensors(tuple(x.shape[1:]))
    params = {"target": int(target), "p": norm_json(order), "domain": None if box is None else box.to_json(),
              "relaxation": method}
    refuse_ = lambda reason: refuse(claim_id, CLAIM_TYPE, params, method, reason)  # noqa: E731
    if isinstance(net, nn.Module):
        try:
            net = from_module(net, tuple(x.shape[1:]))
        except UnsupportedError as exc:
            return refuse_(f"the model is not supported by the bound code: {exc}")
    if not net.activations:
        return refuse_("the re-checkable relaxation claim covers ReLU networks with a hidden layer only")
    reason = activation_refusal(net, "the re-checkable relaxation claim (the checker's outward-rounded "
                                "relaxation is of relu only: no exp, log or tanh)", ("relu",))
    if reason is not None:
        return refuse_(reason)
    x = x.detach().to(torch.float64).cpu()
    result = certified_radius(net.to("cpu"), x, torch.tensor([target]), order, method, pair, tol)
    radius = float(result.value[0])
    if not radius > 0:
        return refuse_(f"{method} certifies no positive radius (misclassified input or a margin too small at x)")
    # at the bisection's edge a margin may be positive by a hair; one tolerance lower it has room
    for value in (round_down(radius), round_down(radius - tol)):
        if value > 0:
            found = _witness(net, x, target, order, pair, method, value)
            if found is not None:
                witness, scheme, label = found
                witness["radius"] = value  # the radius the witness proves (>= the claim)
                claim = issue(claim_id, CLAIM_TYPE, {**params, "relaxation": scheme}, value, label, witness=witness)
                claim.value = value  # already rounded down above: the witness is built on exactly this ball
                return claim
    return refuse_(f"the {method} margins are not proven > 0 at the rounded radius {round_down(radius):.6g} "
                   f"nor one tolerance below it (relaxation not monotone in the radius there)")


def _slope_tables(found: dict, target: int) -> list[Tensor]:
    """Per hidden layer the table [K, n_k] of lower slopes (module doc, "crown"): row `target` the boxes',
    row j the margin f_target - f_j's, from the witness of `margin_bounds_on_set` (one example)."""
    classes = found["spec"].shape[1]
    tables = []
    for boxes_rel, final in zip(found["layer_relaxations"], found["relaxations"]):
        table = final.lower_slope[0]
        table = (table if table.dim() == 2 else table.expand(classes, -1)).clone()
        table[target] = boxes_rel.lower_slope[0]
        tables.append(table.cpu())
    return tables


def _witness(net: AffineNetwork, x: Tensor, target: int, order: float, domain: tuple | None, method: str,
             value: float) -> tuple[dict, str, str] | None:
    """The witness, its scheme and the method label proving every margin > 0 on the ball of radius `value`, or None."""
    input_set = InputSet.build(x, value, order, domain)
    scheme = method
    label = f"{method}-bisection; re-checked in float64 with rigorous outward rounding"
    if method == "crown":
        margins, found = margin_bounds_on_set(net, input_set, torch.tensor([target]), "crown", slopes=RADIUS_SLOPES)
        witness: dict = {"alphas": [encode_array(table.numpy()) for table in _slope_tables(found, target)]}
        return (witness, scheme, label) if bool((margins[0] > 0).all()) else None
    # the LP starts from CROWN's boxes with one (adaptive) slope per unit: so do its witness and CROWN margins
    spec = margin_spec(torch.tensor([target]), net.num_classes)
    boxes, relaxations = layer_bounds(net, input_set, "crown")
    margins = backward_lower_bound(net, input_set, net.depth - 1, spec, relaxations, boxes)[0]
    margins = margins.masked_fill(spec[0].abs().sum(-1) == 0, math.inf)
    witness = {"alphas": [encode_array(r.lower_slope[0].numpy()) for r in relaxations]}
    if method == "lp":
        lp_margins, lp_witness = _lp_witness(net, input_set, target)
        if lp_witness:  # a margin whose final LP was not optimal keeps its CROWN bound (so does the checker)
            margins = torch.where(torch.isnan(lp_margins), margins, torch.maximum(margins, lp_margins))
            witness.update(lp_witness)
        else:  # a tightening LP was not optimal: no LP boxes; the radius stands only if CROWN proves it
            scheme, label = "crown", label + " (CROWN witness: a tightening LP was not optimal here)"
    return (witness, scheme, label) if bool((margins > 0).all()) else None
