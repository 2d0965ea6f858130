"""The prox certificate of a denoiser (issue 14, item 2; `certify prox`): what is proven about f.

* `structure` (prox-structure): certified when f is an LPN whose psi is convex by construction (the checker's
  rules, certify.certificates.prox_check.lpn_parameters; value: alpha, psi's strong-convexity modulus), else
  refused with the reason;
* `violation` (prox-violation-cycle): certified when a cycle on which f is not cyclically monotone was found
  (certify.inverse.evidence.prox_evidence: random, Jacobian-built and searched cycles); the cycle is rounded to
  the model's dtype so that the model as run and its float64 copy are evaluated at the same points, and the
  value is half the smaller of their two sums, the checker subtracting the rounding bound;
* `jacobian-asymmetry`, `jacobian-min-eigenvalue`, `cyclic-monotonicity-sampled` (estimated): the worst found
  over the sampled points and the adversarial search, each evaluated at its witness by the checker's own
  functions (certify.certificates.prox_check), so that the checker re-derives the same number.

`checked_prox_certificate` re-checks the document with the independent checker, as `certify verify` would, and
turns any claim the checker does not accept into a refusal with the checker's reason.
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor, nn

from certify.certificates import prox_check
from certify.certificates._common import Invalid
from certify.certificates.claims import RELATIVE_MARGIN, Claim, issue, refuse
from certify.certificates.document import ProxCertificate, encode_array, parse_certificate
from certify.certificates.issuers.common import model_provenance
from certify.errors import InvalidInputError
from certify.inverse.evidence import Evidence, prox_evidence
from certify.vocabulary import Kind


def _record(points: Tensor) -> dict[str, Any]:
    return encode_array(points.detach().to("cpu", torch.float64).reshape(points.shape[0], -1).numpy())


def _structure_claim(model: nn.Module) -> Claim:
    """The structural proof, by the checker's own rules (prox_check.lpn_parameters): the claim is issued exactly
    when the checker will accept it; conformance with grad psi is left to the re-check."""
    try:
        facts = prox_check.lpn_parameters(model)
    except Invalid as exc:
        return refuse("structure", "prox-structure", {}, "lpn-structure", str(exc))
    return issue("structure", "prox-structure", {}, facts["alpha"], "lpn-structure",
                 witness={"layers": facts["layers"], "beta": facts["beta"], "hidden": facts["hidden"]})


def _violation_claim(model: nn.Module, witness: Evidence | None, shape: tuple[int, ...]) -> Claim | None:
    if witness is None:
        return None
    dtype = prox_check._model_dtype(model)  # points representable in the model's dtype and in float32
    cycle = witness.witness.reshape(witness.witness.shape[0], -1).to(torch.float32).to(dtype).to(torch.float64)
    params = {"cycle": _record(cycle)}
    slacks = []
    for evaluated in (model, prox_check.float64_copy(model)):
        values = prox_check._evaluate(evaluated, cycle.to(prox_check._model_dtype(evaluated)), shape)
        total, error = prox_check.cycle_sum(values, cycle)
        slacks.append(total - error)
    diff = torch.roll(cycle, shifts=-1, dims=0) - cycle
    needed = RELATIVE_MARGIN * float((values.norm(dim=1) * diff.norm(dim=1)).sum())  # the float64 evaluation's
    if not min(slacks) > 2 * needed:
        return refuse("violation", "prox-violation-cycle", params, "cyclic-monotonicity",
                      f"the cycle found in float64 (S = {witness.details.get('sum', witness.value):.3g}) does not violate "
                      f"by the required margin once rounded to {dtype} (sums minus rounding {slacks})")
    return issue("violation", "prox-violation-cycle", params, min(slacks), "cyclic-monotonicity")


def _worst(found: list[Evidence], larger: bool) -> Evidence:
    return (max if larger else min)(found, key=lambda e: e.value)


def _sampled_claims(model: nn.Module, evidence: Any, shape: tuple[int, ...], points: int) -> list[Claim]:
    model64 = prox_check.float64_copy(model)
    steps = int(evidence.search.symmetry.details.get("steps", 0)) if evidence.search.symmetry.details else 0
    params = {"points": points, "search_steps": steps}
    claims = []
    for claim_id, type_, pair, larger in (("asymmetry", "jacobian-asymmetry", "symmetry", True),
                                           ("min-eigenvalue", "jacobian-min-eigenvalue", "psd", False)):
        worst = _worst([getattr(evidence.jacobian, pair), getattr(evidence.search, pair)], larger)
        point = worst.witness.reshape(-1).to("cpu", torch.float64)
        asym, min_eig = prox_check.jacobian_measures(model64, point, shape)
        claims.append(issue(claim_id, type_, params, asym if larger else min_eig, "jacobian-search",
                            witness={"point": _record(point[None])}, kind=Kind.ESTIMATED.value))
    cycle = evidence.cycles.witness.reshape(evidence.cycles.witness.shape[0], -1).to("cpu", torch.float64)
    value = prox_check.normalised_cycle_sum(model64, cycle, shape)
    claims.append(issue("cycles", "cyclic-monotonicity-sampled", {"cycles": int(evidence.cycles.tried), "length": cycle.shape[0]},
                        value, "cycle-search", witness={"cycle": _record(cycle)}, kind=Kind.ESTIMATED.value))
    return claims


def _answer(claims: list[Claim]) -> str:
    certified = {c.type for c in claims if c.kind == Kind.CERTIFIED.value}
    return "prox" if "prox-structure" in certified else "not-a-prox" if "prox-violation-cycle" in certified else "undecided"


def prox_certificate(model: nn.Module, points: Tensor, model_spec: str | None = None, data: str = "",
                     seed: int = 0, quick: bool = True) -> ProxCertificate:
    """What is proven about the denoiser `model` (module docstring), with sampled evidence at `points`
    [B, *shape] (noisy inputs of the kind the denoiser sees; float). Raises InvalidInputError for fewer than
    two or non-finite points."""
    if points.dim() < 2 or points.shape[0] < 2 or not bool(torch.isfinite(points).all()):
        raise InvalidInputError(f"the prox evidence needs at least 2 finite points [B, ...], got shape {tuple(points.shape)}")
    start = time.perf_counter()
    shape = tuple(int(s) for s in points.shape[1:])
    claims = [_structure_claim(model)]
    evidence = prox_evidence(model, points.to(torch.float64), seed=seed, quick=quick)
    violation = _violation_claim(model, evidence.witness, shape)
    if violation is not None:
        claims.append(violation)
    claims += _sampled_claims(model, evidence, shape, int(points.shape[0]))
    provenance = {**model_provenance(model, model_spec), "data": data, "seed": int(seed)}
    return ProxCertificate(provenance=provenance, denoiser={"input_shape": list(shape), "features": math.prod(shape)},
                           answer=_answer(claims), seconds=time.perf_counter() - start, claims=claims)


def checked_prox_certificate(model: nn.Module, points: Tensor, **kwargs: Any) -> tuple[ProxCertificate, list[str]]:
    """`prox_certificate`, then re-checked by the independent checker (its JSON parsed back): every claim the
    checker does not accept is refused with the checker's reason, and the answer follows what verifies.
    (certificate, problems found)."""
    cert = prox_certificate(model, points, **kwargs)
    problems, rows = prox_check.check_prox(parse_certificate(cert.to_json()), model)
    rejected = {claim_id: detail for claim_id, status, detail in rows if status == "invalid"}
    if rejected:
        cert.claims = [refuse(c.id, c.type, c.params, c.method, f"the independent checker does not accept it: {rejected[c.id]}")
                       if c.id in rejected else c for c in cert.claims]
        cert.answer = _answer(cert.claims)
    return cert, [f"claim {i}: {d}" for i, d in rejected.items()] + [p for p in problems if not p.startswith("answer")]
