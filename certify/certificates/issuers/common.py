"""What every issuer shares: the translated network N of the model and its conformance check (the
certificate's `function` block), the model claims about N_c (implementation deviation, Lipschitz, weak
convexity, curvature), the exact float64 gradient of N_c, and the provenance.

Every bound-based claim needs the translation (`certify.bounds.network.from_module`) AND a passed
conformance check (`certify.bounds.network.conformance`): when either fails, every bound-based claim of
the certificate is refused with that reason (`Issuing.refusal`).
"""
from __future__ import annotations

import math
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import certify
from certify.bounds import network as network_module
from certify.bounds.curvature import curvature_bound, weak_convexity
from certify.bounds.lipschitz import lipschitz_product
from certify.bounds.activations import Activation
from certify.bounds.network import AffineNetwork, from_module
from certify.certificates import semantics
from certify.certificates.claims import FUNCTION_DESCRIPTION, Claim, issue, refuse
from certify.errors import UnsupportedError
from certify.explain.base import Explainer
from certify.models.hashing import model_hash



def translate(model: nn.Module, input_shape: tuple[int, ...]) -> AffineNetwork | str:
    """The translated network N, or the reason it cannot be built exactly."""
    try:
        return from_module(model, input_shape)
    except UnsupportedError as exc:
        return f"the model cannot be translated exactly: {exc}"


def exact_logits(net: AffineNetwork, points: Tensor) -> Tensor:
    """N at flat float64 points [M, n] (its graph, exact softplus: no threshold)."""
    return net.forward(points)


U64 = 2.0**-53
HEAD_REFUSAL = ("the model ends in {head}: the explanation is of the {output}, the bounds would be about the logit "
                "(N is the network before the dropped {head})")
HEAD_OUTPUTS = {"softmax": "probability", "log_softmax": "log-probability"}


def _gamma(n: int) -> float:
    return n * U64 / (1.0 - n * U64)


def _activation_step(act: Activation, z: Tensor, e_z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(h = sigma(z), a bound on its error, sigma'(z), a bound on the derivative's error) at a computed z
    with |z - z_exact| <= e_z. relu / leaky_relu: exact pieces, the derivative uncertain (jump |1 - s|)
    where |z| <= e_z; softplus: sigmoid(beta z), off by beta/4 e_z + 4u; the smooth ones: sigma moves by
    at most lipschitz e_z plus its evaluation error (`Activation.evaluation_error`), sigma' by
    max_second_derivative e_z plus the distance from the computed sigma' to the far end of its rigorous
    enclosure (`Activation.derivative_enclosure`)."""
    if act.name == "relu":
        return torch.relu(z), e_z, (z > 0).to(z.dtype), (z.abs() <= e_z).to(z.dtype)
    if act.name == "leaky_relu":
        slope = float(act.negative_slope)
        h = torch.where(z > 0, z, slope * z)
        jump = abs(1.0 - slope) * (z.abs() <= e_z).to(z.dtype)
        d = torch.where(z > 0, torch.ones_like(z), torch.full_like(z, slope))
        return h, max(1.0, abs(slope)) * e_z + U64 * h.abs(), d, jump
    if act.name == "softplus":
        beta = float(act.beta)
        h = torch.relu(z) + torch.log1p(torch.exp(-beta * z.abs())) / beta
        return h, e_z + 8 * U64 * (h.abs() + 1.0 / beta), torch.sigmoid(beta * z), beta / 4 * e_z + 4 * U64
    h, d = act(z), act.derivative(z)
    d_lo, d_hi = act.derivative_enclosure(z)
    e_h = act.lipschitz * e_z + act.evaluation_error(z)
    return h, e_h, d, act.max_second_derivative * e_z + torch.maximum((d - d_lo).abs(), (d_hi - d).abs())


ISSUER_ROUNDING_FACTOR = 2.0  # see exact_gradient


def exact_gradient(net: AffineNetwork, row: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
    """(grad of row . N at each flat float64 point [M, n], a bound [M] on the l2 norm of its float64 error).

    Backward pass by hand over N's graph (h_0 = x, z_k = W_k h_k + b_k + sum_j S_kj h_j, h_{k+1} =
    sigma_k(z_k)): the derivative of exact softplus is sigmoid(beta t), of relu 1{t > 0}, of leaky relu 1 or
    its slope, of the smooth ones `Activation.derivative`. The error bound is a first-order forward-error
    analysis of this very computation (the checker does its own): forward, e_z <= gamma_{n+s+1} (|W| |h_k|
    + sum |S| |h_j| + |b|) + |W| e_h_k + sum |S| e_h_j per layer (n inputs in all, s skips), then each
    activation's value and derivative errors (`_activation_step`); backward, each product adds gamma_n |g|
    |W| and carries the error through |W| and |sigma'|, plus |t| times the derivative's error; the
    coefficient of an h_j read by several layers is the sum of their products, each merge adding u |sum|.
    The bound returned is TWICE that analysis (ISSUER_ROUNDING_FACTOR): the checker's independent analysis
    counts the smooth activations' value and derivative errors differently (each is a valid first-order
    bound, they differ by a few percent), and a claim must stay above the checker's re-derivation."""
    hs, e_hs = [points], [torch.zeros_like(points)]
    ds, dds = [], []
    for k, (w, b) in enumerate(zip(net.weights, net.biases)):
        skips = net.skips.get(k, {})
        z = hs[k] @ w.T + b
        magnitude = hs[k].abs() @ w.abs().T + b.abs()
        carried = e_hs[k] @ w.abs().T
        n = w.shape[1] + 1
        for j, s_kj in skips.items():
            z = z + hs[j] @ s_kj.T
            magnitude = magnitude + hs[j].abs() @ s_kj.abs().T
            carried = carried + e_hs[j] @ s_kj.abs().T
            n += s_kj.shape[1] + 1
        e_z = _gamma(n) * magnitude + carried
        if k < len(net.activations):
            h, e_h, d, dd = _activation_step(net.activations[k], z, e_z)
            hs.append(h)
            e_hs.append(e_h)
            ds.append(d)
            dds.append(dd)
    g = row.to(points.dtype).expand(points.shape[0], -1)
    err = torch.zeros_like(g)
    gathered: dict[int, tuple[Tensor, Tensor]] = {}  # coefficient of h_j (and its error) from the skips S_kj
    for k in range(len(net.weights) - 1, -1, -1):
        w = net.weights[k]
        for j, s_kj in net.skips.get(k, {}).items():
            part = g @ s_kj
            e_part = _gamma(s_kj.shape[0]) * (g.abs() @ s_kj.abs()) + err @ s_kj.abs()
            if j in gathered:
                part, e_part = gathered[j][0] + part, gathered[j][1] + e_part
                e_part = e_part + U64 * part.abs()
            gathered[j] = (part, e_part)
        t = g @ w
        e_t = _gamma(w.shape[0]) * (g.abs() @ w.abs()) + err @ w.abs()
        if k in gathered:
            part, e_part = gathered.pop(k)
            t = t + part
            e_t = e_t + e_part + U64 * t.abs()
        if k > 0:
            d, dd = ds[k - 1], dds[k - 1]
            g = t * d
            err = e_t * d.abs() + t.abs() * dd + U64 * g.abs()
        else:
            g, err = t, e_t
    return g, ISSUER_ROUNDING_FACTOR * err.norm(dim=1) * (1 + 1e-6) + 1e-300


def unit_row(num_classes: int, c: int) -> Tensor:
    row = torch.zeros(num_classes, dtype=torch.float64)
    row[c] = 1.0
    return row


@dataclass
class Issuing:
    """The state of one certify_explanations call: the model, N (or why not), per-example function blocks."""

    model: nn.Module
    input_shape: tuple[int, ...]
    num_classes: int
    net: AffineNetwork | None
    reason: str | None  # why N is unusable for the whole batch (translation refused)
    functions: list[dict[str, Any]] = field(default_factory=list)
    _checker_stages: Any = field(default=None, repr=False)

    @classmethod
    def build(cls, model: nn.Module, inputs: Tensor, num_classes: int) -> "Issuing":
        shape = tuple(inputs.shape[1:])
        net = translate(model, shape)
        if isinstance(net, str):
            state = cls(model, shape, num_classes, None, net)
            state.functions = [{"refused": net} for _ in range(inputs.shape[0])]
            return state
        state = cls(model, shape, num_classes, net.to("cpu"), None)
        for i in range(inputs.shape[0]):  # at x, at the other inputs of the batch, at seeded far points
            state.functions.append(_function_block(model, net, inputs[i : i + 1], inputs))
        return state

    def checker_stages(self) -> Any:
        """The checker's own translation of the model (certify.certificates.semantics), made once per call: the
        issuers use it to shape witnesses exactly as the checker re-derives them. UnsupportedError (a
        SemanticsError) when the checker cannot translate the model."""
        if self._checker_stages is None:
            self._checker_stages = semantics.translate(self.model, self.input_shape)
        return self._checker_stages

    @property
    def head_refusal(self) -> str | None:
        """Why claims about the score N_c are refused for every example: N is the logits of a model whose
        final softmax / log-softmax was dropped (margins and radii stand: the argmax is unchanged)."""
        head = None if self.net is None else self.net.head
        return None if head is None else HEAD_REFUSAL.format(head=head, output=HEAD_OUTPUTS.get(head, head))

    def score_refusal(self, i: int) -> str | None:
        """Why claims about the score N_c itself (its Lipschitz constant, curvature, gradient, an explanation's
        error and stability) are refused for example i: `refusal(i)`, else a dropped softmax head."""
        return self.refusal(i) or self.head_refusal

    def refusal(self, i: int) -> str | None:
        """Why bound-based claims of example i are refused (translation or conformance), else None."""
        f = self.functions[i]
        if "refused" in f:
            return f["refused"]
        if not f["conformance"]["passed"]:
            detail = f["conformance"].get("detail") or ""
            return (f"the conformance check failed: N differs from the model by {f['conformance']['max_deviation']:.3g} "
                    f"> tolerance {f['conformance']['tolerance']:.3g} on {f['conformance']['points']} points {detail}").strip()
        return None


def _function_block(model: nn.Module, net: AffineNetwork, x: Tensor, data: Tensor) -> dict[str, Any]:
    check = getattr(network_module, "conformance", None)
    if check is not None:
        result = check(model, net, x, data)
        conformance = {"tolerance": float(result.tolerance), "max_deviation": float(result.max_deviation),
                       "points": int(result.points), "passed": bool(result.passed),
                       "detail": getattr(result, "detail", None)}
    else:  # until the network module provides its conformance check: the logits at x only
        with torch.no_grad():
            ref = model(x).double().cpu()
            ours = exact_logits(net.to("cpu"), x.detach().double().cpu().flatten(1))
        dev = float((ref - ours).abs().max())
        tol = 1e-4 * (1.0 + float(ref.abs().max()))
        conformance = {"tolerance": tol, "max_deviation": dev, "points": 1, "passed": dev <= tol, "detail": "at x only"}
    semantics = getattr(net, "semantics", None) or {
        "ops": [a.name for a in net.activations], "softplus": "exact", "depth": net.depth}
    return {"description": FUNCTION_DESCRIPTION, "semantics": _jsonable(semantics), "conformance": conformance}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, Tensor):
        return _jsonable(obj.tolist())
    return str(obj)


class ClaimList:
    """The claims of one certificate, with lookups of certified values by id."""

    def __init__(self, claims: list[Claim] | None = None) -> None:
        self.claims: list[Claim] = list(claims or [])

    def add(self, claim: Claim) -> Claim:
        self.claims.append(claim)
        return claim

    def get(self, claim_id: str) -> Claim | None:
        return next((c for c in self.claims if c.id == claim_id), None)

    def certified(self, claim_id: str) -> float | None:
        c = self.get(claim_id)
        return c.value if c is not None and c.kind == "certified" else None


def model_claims(state: Issuing, c: int, refusal: str | None) -> list[Claim]:
    """implementation-deviation, lipschitz (l2), weak-convexity and curvature of N_c; the last three are
    refused with `Issuing.head_refusal` when the model's softmax head was dropped."""
    p_lip, p_wc, p_cv = {"target": c, "p": 2}, {"target": c, "radius": None}, {"target": c, "radius": None}
    score = refusal or state.head_refusal
    out: list[Claim] = []
    deviation = None if state.net is None else getattr(state.net, "deviation", None)
    if refusal is not None:
        out.append(refuse("implementation-deviation", "implementation-deviation", {}, "translation", refusal))
    elif deviation is None:
        out.append(refuse("implementation-deviation", "implementation-deviation", {}, "translation",
                          "the translation provides no deviation bound"))
    else:
        out.append(issue("implementation-deviation", "implementation-deviation", {}, float(deviation), "softplus-threshold-bound"))
    if score is not None:
        return out + [refuse("lipschitz", "lipschitz", p_lip, "lipschitz-product", score),
                      refuse("weak-convexity", "weak-convexity", p_wc, "hessian-bound", score),
                      refuse("curvature", "curvature", p_cv, "hessian-bound", score)]
    net = state.net
    row = unit_row(state.num_classes, c)
    lip = lipschitz_product(net, 2, row[None])
    out.append(_from_bound("lipschitz", "lipschitz", p_lip, lip, lambda r: float(r.value[0])))
    out.append(_from_bound("weak-convexity", "weak-convexity", p_wc, weak_convexity(net, row), lambda r: float(r.value)))
    out.append(_from_bound("curvature", "curvature", p_cv, curvature_bound(net, row), lambda r: float(r.value)))
    return out


def _from_bound(id: str, type_: str, params: dict, result: Any, value: Any) -> Claim:
    if result.refused:
        return refuse(id, type_, params, result.method, result.reason or "refused")
    if result.kind.value != "certified":
        return refuse(id, type_, params, result.method, f"the bound is {result.kind.value}, not certified")
    return issue(id, type_, params, value(result), result.method)


def model_provenance(model: nn.Module, model_spec: str | None) -> dict[str, Any]:
    """What every certificate records of its making: package versions, time, device and the model (spec, weights
    hash, architecture, dtype)."""
    first = next(iter(model.parameters()), None)
    return {
        "package": f"certify {certify.__version__}",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(first.device) if first is not None else "cpu",
        "model": {"spec": model_spec, "sha256": model_hash(model), "architecture": repr(model),
                  "dtype": str(first.dtype).replace("torch.", "") if first is not None else "float32"},
    }


def provenance(model: nn.Module, model_spec: str | None, explainer: Explainer, seconds: float) -> dict[str, Any]:
    params = explainer.params()
    return {
        **model_provenance(model, model_spec),
        "explainer": {"method": explainer.method_name, "params": _jsonable(params), "seed": params.get("seed")},
        "seconds": seconds,
    }
