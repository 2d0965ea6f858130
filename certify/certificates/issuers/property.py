"""The certificate of a VNN-LIB property answer (issue 12; `certify verify-property --out`): a
`PropertyCertificate` (certify.certificates.document) holding exactly one claim:

* answer "holds": a certified `property-holds` claim whose witness is certify.bounds.property's split-tree
  witness (root slopes; per conjunction the leaves with their splits, multipliers, rows and slopes), or, where
  that gives none (ReLU graphs with skips, LeakyReLU networks) or it does not re-check, `crown_witness` on the checker's
  translation. Its value
  is the least leaf bound as the CHECKER re-derives it (`property_check.prove_holds` on the checker's own
  translation), rounded down: a witness the checker would not accept is never written as certified (the claim
  is refused with the checker's reason and the answer becomes "unknown"). `checked_property_certificate`, which
  re-checks what it issues anyway, first states the bound code's certified margin times PROVISIONAL_SHARE
  instead (no tighter than the checker's value in practice: both are rigorous bounds of the same leaves), so the
  leaves are re-derived once, not twice; when the checker does not accept that claim, the value is re-derived
  here as above and the certificate issued and checked again;
* answer "violated": a certified `property-violated` claim with the counterexample in its params; its value is
  the violation slack as the checker re-derives it (`property_check.counterexample_slack`: the model as run
  and N, each less its rounding tolerance); a slack not above the tolerance refuses the claim ("unknown");
* answer "unknown": a refused `property-holds` claim saying what was tried and for how long.

The box and the formula are the parsed file's float64 arrays (params of the claim); the file's path and the
sha256 of its bytes are recorded in the `property` block, so `certify verify` re-parses the file when present.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from certify.attacks.property import PropertyResult
from certify.attacks.sufficient import SufficientSubset
from certify.certificates import semantics
from certify.certificates._common import Invalid
from certify.certificates.claims import FUNCTION_DESCRIPTION, Claim, issue, refuse
from certify.certificates.document import PropertyCertificate, decode_array, encode_array
from certify.certificates.issuers.common import _jsonable, model_provenance
from certify.certificates.property_check import (WITNESS_FORMAT, counterexample_slack, property_arrays, prove_holds,
                                                 read_witness, root_boxes, scatter)
from certify.certificates.relu_graph import box_support, graph_of, lower_bound
from certify.models.vnnlib import Property
from certify.errors import UsageError

CLAIM_ID = "property"
# The provisional holds value (`checked_property_certificate`): the bound code's certified margin times this. The
# checker's re-derivation of the same leaves differs from the bound code's by rounding (about 1e-12 of the
# terms' magnitude), so a claim 1e-6 below the margin verifies unless the margin itself is at rounding level.
PROVISIONAL_SHARE = 1.0 - 2.0**-20


def _params(prop: Property) -> dict[str, Any]:
    return {"lower": encode_array(prop.lower), "upper": encode_array(prop.upper),
            "conjunctions": [{"C": encode_array(c), "d": encode_array(d)} for c, d in prop.disjuncts]}


class _Sidecars:
    """Witness arrays larger than document.INLINE_LIMIT go to `<stem>.w<i>.npy` next to the certificate."""

    def __init__(self, out: Path | None) -> None:
        self.out, self.count = out, 0

    def encode(self, array: Any) -> dict[str, Any]:
        self.count += 1
        side = None if self.out is None else self.out.with_name(f"{self.out.stem}.w{self.count}.npy")
        return encode_array(np.asarray(array, dtype=np.float64), side)


def encode_witness(witness: dict, out: Path | None = None) -> dict[str, Any]:
    """certify.bounds.property's witness dict as certificate array records (sidecars next to `out`)."""
    side = _Sidecars(out)
    return {
        "format": witness["format"],
        "unstable": [side.encode(u) for u in witness["unstable"]],
        "root_alphas": [[side.encode(a) for a in layer] for layer in witness["root_alphas"]],
        "conjunctions": [{key: side.encode(tree[key]) for key in ("depth", "splits", "betas", "row", "alphas")}
                         for tree in witness["conjunctions"]],
    }


def crown_witness(raw: Any, prop: Property) -> dict | None:
    """A one-leaf-per-conjunction witness (format "certify.relu-split-witness/1", certify/certificates/property_check.py) by plain CROWN on the checker's own translation
    `raw`, for ReLU GRAPHS (skips) and LeakyReLU networks, which certify.bounds.property gives no witness for:
    adaptive slopes (alpha 1 where u >= -l, else 0) on the root boxes, built layer by layer with `property_check.root_boxes` (quadratic in
    the depth); per conjunction the row with the best bound. None when some conjunction has no row > 0."""
    net = graph_of(raw).require_relu()
    box, conjunctions = property_arrays(_params(prop))
    hidden = net.widths[:-1]
    unstable: list[np.ndarray] = []
    roots: list[list[np.ndarray]] = []
    boxes: list = []
    adaptive = lambda j: (boxes[j][1] >= -boxes[j][0]).astype(np.float64)[0, unstable[j]]  # noqa: E731
    for k in range(len(hidden)):
        roots.append([np.repeat(adaptive(j)[None], 2 * hidden[k], 0) for j in range(k)])
        boxes = root_boxes(net, box, unstable, roots)
        lo, hi = boxes[k]
        unstable.append(np.flatnonzero((lo[0] < 0) & (hi[0] > 0)))
    slopes = [scatter(adaptive(j)[None], unstable[j], hidden[j]) for j in range(len(hidden))]
    trees = []
    for c, d in conjunctions:
        bound = lower_bound(net, net.depth - 1, c, -d, boxes, box_support(*box), slopes, [None] * len(hidden))
        if not bound.max() > 0:
            return None
        trees.append({"depth": np.zeros(1), "splits": np.zeros((0, 3)), "betas": np.zeros(0),
                      "row": np.array([int(np.argmax(bound))]),
                      "alphas": np.concatenate([adaptive(j) for j in range(len(hidden))] or [np.zeros(0)])[None]})
    return {"format": WITNESS_FORMAT, "unstable": unstable, "root_alphas": roots, "conjunctions": trees}


def _function(model: nn.Module, input_shape: tuple[int, ...], prop: Property) -> tuple[dict[str, Any], Any]:
    """(the function block, the checker's translation or None): semantics.translate and its conformance check
    at the box centre, as the checker repeats them."""
    try:
        raw = semantics.translate(model, input_shape)
    except Exception as exc:  # noqa: BLE001 - any refusal of the translation refuses the claim
        return {"refused": f"the model cannot be translated exactly: {exc}"}, None
    first = next(iter(model.parameters()), None)
    dtype = first.dtype if first is not None else torch.float32
    device = first.device if first is not None else torch.device("cpu")
    centre = torch.as_tensor((prop.lower + prop.upper) / 2).reshape(1, *input_shape).to(dtype).to(device)
    try:
        dev, tol, passed = semantics.check_conformance(model, raw, centre)
    except Exception as exc:  # noqa: BLE001 - a model that fails on its own box centre does not conform
        return {"refused": f"the conformance check could not run at the box centre: {exc}"}, None
    block = {"description": FUNCTION_DESCRIPTION, "semantics": _jsonable(semantics.summary(raw)),
             "conformance": {"tolerance": float(tol) if math.isfinite(tol) else 0.0,
                             "max_deviation": float(dev) if math.isfinite(dev) else 1e308,
                             "points": 33, "passed": bool(passed), "detail": "checker translation, box centre and far points"}}
    return block, (raw if passed else None)


def _claim(model: nn.Module, prop: Property, result: PropertyResult, raw: Any, refusal: str | None,
           input_shape: tuple[int, ...], out: Path | None, provisional: bool = False) -> Claim:
    params = _params(prop)
    method = result.method or "none"
    box, conjunctions = property_arrays(params)
    if result.status == "violated" and result.counterexample is not None:
        point = np.asarray(result.counterexample, dtype=np.float64).reshape(-1)
        vparams = {**params, "counterexample": encode_array(point)}
        if refusal is not None:
            return refuse(CLAIM_ID, "property-violated", vparams, method, refusal)
        try:
            slack = min(counterexample_slack(model, graph_of(raw), point, input_shape, conjunctions))
        except Invalid as exc:
            return refuse(CLAIM_ID, "property-violated", vparams, method, str(exc))
        if not slack > 0:
            return refuse(CLAIM_ID, "property-violated", vparams, method,
                          f"the counterexample violates the formula by less than the rounding tolerance (slack {slack:.3g})")
        claim = issue(CLAIM_ID, "property-violated", vparams, slack, method)
        return claim if claim.value > 0 else refuse(CLAIM_ID, "property-violated", vparams, method, "slack rounds to 0")
    if result.status == "holds":
        if refusal is not None:
            return refuse(CLAIM_ID, "property-holds", params, method, refusal)
        return _holds_claim(raw, prop, result, params, method, out, provisional)
    margin = "none" if result.margin is None else f"{result.margin:.6g}"
    return refuse(CLAIM_ID, "property-holds", params, method,
                  f"{result.status}: neither proven nor refuted in {result.seconds:.1f} s (best certified lower bound {margin})")


def _states_a_margin(claim: Claim) -> bool:
    """Whether `issue` gave a holds claim with a positive value (not a refusal, as for an infinite margin, and not
    a bound that rounds to 0)."""
    return claim.kind != "refused" and claim.value is not None and claim.value >= 5e-324


def _holds_claim(raw: Any, prop: Property, result: PropertyResult, params: dict[str, Any], method: str,
                 out: Path | None, provisional: bool = False) -> Claim:
    """The certified holds claim from the first witness the checker accepts: the bound code's, then plain
    CROWN on the checker's translation (`crown_witness`); else refused with the checker's reasons. provisional
    (module docstring): the bound code's witness with its certified margin times PROVISIONAL_SHARE, unchecked
    here (the caller re-checks it)."""
    box, conjunctions = property_arrays(params)
    base = None if out is None else out.parent
    if provisional and result.witness is not None and result.margin is not None and result.margin > 0:
        claim = issue(CLAIM_ID, "property-holds", params, result.margin * PROVISIONAL_SHARE, method,
                      witness=encode_witness(result.witness, out))
        if _states_a_margin(claim):
            return claim
    reasons = []
    for source in ("bound code", "checker-side CROWN"):
        try:
            found = result.witness if source == "bound code" else crown_witness(raw, prop)
            if found is None:
                reasons.append(f"{source}: no witness")
                continue
            witness = encode_witness(found, out)
            net = graph_of(raw)
            decoded = read_witness(witness, net, conjunctions, lambda rec, where: decode_array(rec, where, base))
            value = prove_holds(net, box, conjunctions, decoded)
        except Invalid as exc:
            reasons.append(f"{source}: {exc}")
            continue
        claim = issue(CLAIM_ID, "property-holds", params, value, method if source == "bound code" else "crown", witness=witness)
        if _states_a_margin(claim):
            return claim
        reasons.append(f"{source}: the re-derived bound {value:.3g} rounds to 0")
    return refuse(CLAIM_ID, "property-holds", params, method,
                  f"{method} proved the property, but no witness re-checks ({'; '.join(reasons)})")


def property_certificate(model: nn.Module, prop: Property, result: PropertyResult, input_shape: tuple[int, ...],
                         method: str, timeout: float, model_spec: str | None = None,
                         out: Path | None = None, provisional: bool = False) -> PropertyCertificate:
    """The certificate of `result` (verify_property's answer for `prop` on `model`, inputs of `input_shape`);
    witness arrays too large to inline are written next to `out` (module docstring). provisional: a holds claim
    states the bound code's margin (module docstring) and is NOT checked here: only for callers that re-check."""
    function, raw = _function(model, input_shape, prop)
    refusal = function.get("refused") or (None if raw is not None else "the conformance check of the checker's translation failed")
    claim = _claim(model, prop, result, raw, refusal, input_shape, out, provisional)
    answer = "unknown" if claim.kind == "refused" else ("holds" if claim.type == "property-holds" else "violated")
    digest = None
    if prop.path and Path(prop.path).is_file():
        digest = hashlib.sha256(Path(prop.path).read_bytes()).hexdigest()
    provenance = {**model_provenance(model, model_spec), "method": method, "timeout": float(timeout),
                  "notes": list(result.notes)}
    return PropertyCertificate(
        provenance=provenance, function=function,
        property={"path": prop.path or None, "sha256": digest, "input_shape": [int(s) for s in input_shape],
                  "inputs": prop.num_inputs, "outputs": prop.num_outputs},
        answer=answer, seconds=float(result.seconds), claims=[claim])


def checked_property_certificate(model: nn.Module, prop: Property, result: PropertyResult, input_shape: tuple[int, ...],
                                 method: str, timeout: float, model_spec: str | None = None,
                                 out: Path | None = None) -> tuple[PropertyCertificate, list[str]]:
    """`property_certificate`, then re-checked as `certify verify` would (its JSON parsed back, the independent
    checker, `certify.certificates.checker.verify_certificate`, on `model`), so that an answer is only ever
    "holds" or "violated" when the certificate's claim verifies. (certificate, problems): when the checker does
    not accept the claim, the certificate returned answers "unknown", its claim refused with the checker's
    reasons (listed in problems); `certify verify-property` prints the answer of the certificate this returns,
    written or not."""
    cert = property_certificate(model, prop, result, input_shape, method, timeout, model_spec, out, provisional=True)
    problems = _recheck(cert, model, out)
    if problems and cert.claims[0].kind != "refused" and cert.claims[0].type == "property-holds":
        # the provisional value was not accepted: the value re-derived by the checker's code, issued and checked again
        cert = property_certificate(model, prop, result, input_shape, method, timeout, model_spec, out)
        problems = _recheck(cert, model, out)
    if not problems:
        return cert, []
    from certify.errors import CertifyError

    claim = cert.claims[0]
    if claim.kind == "refused":  # an unknown answer whose document the checker rejects: a bug, said as such
        raise CertifyError(f"the unknown answer's certificate does not verify: {'; '.join(problems)}")
    refused = refuse(CLAIM_ID, claim.type, claim.params, claim.method,
                     f"{cert.answer}: found by {claim.method}, but the independent checker does not accept the "
                     f"certificate: {'; '.join(problems)}")
    cert.claims = [refused]
    cert.answer = "unknown"
    return cert, problems


def _recheck(cert: PropertyCertificate, model: nn.Module, out: Path | None) -> list[str]:
    """What keeps `certify verify` from accepting cert's claim on model (its JSON parsed back; [] when it is
    accepted, or when it is a refusal in a document the checker accepts)."""
    from certify.certificates.checker import verify_certificate
    from certify.certificates.document import parse_certificate
    from certify.errors import CertifyError

    claim = cert.claims[0]
    try:
        report = verify_certificate(parse_certificate(cert.to_json()), model, None if out is None else out.parent)
    except CertifyError as exc:
        return [f"the checker could not re-check the certificate ({type(exc).__name__}: {exc})"]
    if claim.kind == "refused":
        return list(report.problems)  # a refusal (an unknown answer) has nothing to accept
    problems = list(report.problems) + [f"claim {c.id}: {c.status}: {c.detail}" for c in report.checks
                                        if c.status not in ("valid", "refused")]
    if problems:
        return problems
    return [] if any(c.status == "valid" for c in report.checks) else ["the checker did not mark the claim valid"]


def sufficient_subset_certificate(model: nn.Module, subset: SufficientSubset, input_shape: tuple[int, ...], method: str,
                                  model_spec: str | None = None, out: Path | None = None) -> tuple[PropertyCertificate, list[str]]:
    """The property certificate of a certified sufficient subset (certify.attacks.sufficient): its box (the
    subset's features at x, the others free) "holds" for the target class, with the bound code's witness,
    re-checked by the independent checker (`checked_property_certificate`). UsageError when the subset has no
    certified box."""
    if subset.property is None:
        raise UsageError("this sufficient subset has no certified box (not even the point x was certified)")
    result = PropertyResult("holds", subset.seconds, method, subset.margin, notes=list(subset.notes), witness=subset.witness)
    return checked_property_certificate(model, subset.property, result, input_shape, method, max(subset.seconds, 1e-3),
                                        model_spec, out)
