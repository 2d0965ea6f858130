"""Claims of the Lagrange-dual explainer: bounds on the minimal flipping radius
r*_p(x) = inf { ||delta||_p : x + delta in the domain, the decision at x + delta differs from class c }:

* `flip-witness` (radius-upper): the perturbation actually returned, made to flip the model AS THE USER
  RUNS IT (its own dtype and device) and N in float64: x + delta is formed in the model's dtype; when it
  does not flip both, delta is scaled by 1.001, 1.01, 1.1 (clipped to the domain) until it does, else the
  claim is refused. The witness stores delta = (x + delta in the model's dtype) - x exactly, and the value
  is the norm of that perturbation (and of its float64 sum, whichever is larger), rounded up;
* `lipschitz-radius`: min_j m_cj(x) / L_cj (product-of-norms constants of the margins);
* `radius-lower` (radius-relaxation): CROWN bisection with a re-checkable witness (ReLU nets);
* `exact-radius`: MILP optimum, solver-reported (small ReLU / leaky ReLU nets, p in {1, inf});
* `gap`: flip witness minus the best certified lower bound.
All carry params {target, p, domain}."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from certify.bounds.lipschitz import lipschitz_product
from certify.bounds.milp import exact_minimal_radius
from certify.certificates.claims import issue, refuse
from certify.certificates.document import encode_array
from certify.certificates.issuers.common import ClaimList, Issuing, exact_logits
from certify.certificates.relaxation_claims import relaxation_radius_claim
from certify.radius_bounds import milp_applicable
from certify.vocabulary import Domain, norm_json, parse_norm

SCALES = (1.0, 1.001, 1.01, 1.1)


def _domain(explainer: Any) -> Domain | None:
    box = Domain.of(explainer.domain)
    return box if box is not None and box.bounded else None


def _flips(state: Issuing, point: Tensor, c: int) -> bool:
    """The model (its dtype, device) and N (float64, exact softplus) both decide against class c at `point`."""
    with torch.no_grad():
        logits = state.model(point)[0]
        model_flip = bool(logits.argmax() != c) and bool(torch.isfinite(logits).all())
        n = exact_logits(state.net, point.detach().double().cpu().flatten(1))[0]
    others = torch.cat([n[:c], n[c + 1 :]])
    return model_flip and bool((n[c] - others).min() < 0)


def flip_witness(state: Issuing, x: Tensor, delta: Tensor, c: int, p: float, box: Domain | None) -> tuple[Tensor, float] | str:
    """(delta actually returned [float64], its norm) or why none flips both the model and N."""
    lo_hi = None if box is None else box.tensors(tuple(x.shape[1:]), x.dtype, x.device)
    for scale in SCALES:
        point = x + (scale * delta).to(x.dtype)
        if lo_hi is not None:
            point = torch.minimum(torch.maximum(point, lo_hi[0]), lo_hi[1])
        if not _flips(state, point, c):
            continue
        actual = point.detach().double().cpu() - x.detach().double().cpu()
        if box is not None:  # the point as the checker forms it, against the float64 box
            lo, hi = box.tensors(tuple(x.shape[1:]), torch.float64)
            at = x.detach().double().cpu() + actual
            if bool((at < lo).any() or (at > hi).any()):
                continue
        return actual, float(actual.flatten().norm(p))
    return "the returned perturbation (scaled by up to 1.1) does not flip both the model in its own dtype and N in float64"


def lagrange_claims(claims: ClaimList, state: Issuing, explainer: Any, diagnostics: dict, i: int, x: Tensor, c: int,
                    refusal: str | None) -> None:
    p = parse_norm(explainer.p)
    box = _domain(explainer)
    params = {"target": c, "p": norm_json(p), "domain": None if box is None else box.to_json()}
    method = f"lagrange-dual-{explainer.method}"
    status = int(diagnostics["status"][i])
    if refusal is not None:
        for id_, type_ in (("radius-upper", "flip-witness"), ("radius-lipschitz", "lipschitz-radius"),
                           ("radius-relaxation", "radius-lower")):
            claims.add(refuse(id_, type_, params if type_ != "radius-lower" else {**params, "relaxation": "crown"}, method, refusal))
        return
    if status == 0:
        found = flip_witness(state, x, diagnostics["delta"][i : i + 1].detach(), c, p, box)
        if isinstance(found, str):
            claims.add(refuse("radius-upper", "flip-witness", params, method, found))
        else:
            delta, norm = found
            claims.add(issue("radius-upper", "flip-witness", params, norm, method, witness={"delta": encode_array(delta.numpy())}))
    else:
        reason = ("the input is already misclassified or tied (m_c(x) <= 0), so r* = 0" if status == 1
                  else "no flipping perturbation found within the iteration budget: the upper bound is infinite")
        claims.add(refuse("radius-upper", "flip-witness", params, method, reason))
    net = state.net
    others = [j for j in range(state.num_classes) if j != c]
    rows = torch.zeros(len(others), state.num_classes, dtype=torch.float64)
    rows[:, c] = 1.0
    rows[torch.arange(len(others)), others] = -1.0
    lip = lipschitz_product(net, math.inf if math.isinf(p) else 2, rows)  # p = 1 uses l2: ||.||_2 <= ||.||_1
    logits = exact_logits(net, x.detach().double().cpu().flatten(1))[0]
    margins = logits[c] - logits[others]
    if lip.refused:
        claims.add(refuse("radius-lipschitz", "lipschitz-radius", params, lip.method, lip.reason or "refused"))
    else:
        claims.add(issue("radius-lipschitz", "lipschitz-radius", params, max(0.0, float((margins / lip.value).min())), lip.method))
    claims.add(relaxation_radius_claim(net, x.detach(), c, p, box, "crown", claim_id="radius-relaxation"))
    upper = claims.get("radius-upper")
    if milp_applicable(net) and p != 2 and upper.kind == "certified":
        pair = None if box is None else box.tensors(tuple(x.shape[1:]))
        exact = exact_minimal_radius(net, x.detach().double().flatten(1).cpu(), torch.tensor([c]), p, pair,
                                     upper=upper.value * (1 + 1e-6))
        value = float(exact.value[0])
        if exact.refused or not math.isfinite(value):
            claims.add(refuse("radius-exact", "exact-radius", params, exact.method, exact.reason or "no optimal MILP solve"))
        else:
            witness = {"solver": exact.details["solver"], "tolerances": exact.details["tolerances"],
                       "status": {str(j): v for j, v in exact.details["status"][0].items()}}
            claims.add(issue("radius-exact", "exact-radius", params, value, exact.method, witness=witness, kind="solver-reported"))
    lowers = [cl for cl in claims.claims if cl.id in ("radius-lipschitz", "radius-relaxation") and cl.kind == "certified"]
    if upper.kind == "certified" and lowers:
        best = max(lowers, key=lambda cl: cl.value)
        claims.add(issue("radius-gap", "gap", params, upper.value - best.value, "difference", ["radius-upper", best.id]))
