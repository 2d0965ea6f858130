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
from certify.bounds.network import AffineNetwork, from_module
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
    """N at flat float64 points [M, n], with exact softplus (no threshold)."""
    h = points
    for k, (w, b) in enumerate(zip(net.weights, net.biases)):
        h = h @ w.T + b
        if k < len(net.activations):
            act = net.activations[k]
            if act.name == "relu":
                h = torch.relu(h)
            else:
                beta = float(act.beta)
                h = torch.relu(h) + torch.log1p(torch.exp(-beta * h.abs())) / beta
    return h


U64 = 2.0**-53


def _gamma(n: int) -> float:
    return n * U64 / (1.0 - n * U64)


def exact_gradient(net: AffineNetwork, row: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
    """(grad of row . N at each flat float64 point [M, n], a bound [M] on the l2 norm of its float64 error).

    Backward pass by hand: the derivative of exact softplus is sigmoid(beta t), of relu 1{t > 0}. The error
    bound is a first-order forward-error analysis of this very computation (the checker does its own):
    forward, e_z <= gamma_{n+1} (|W| |h| + |b|) + |W| e_h per layer (activations are 1-Lipschitz, softplus
    adds 8u (|h| + 1/beta)); the derivative errs by beta/4 e_z + 4u (softplus) or by 1 where |z| <= e_z
    (relu: the pattern is uncertain there); backward, each product adds gamma_n |g| |W| and carries the
    error through |W| and the derivatives (<= 1), plus |t| times the derivative's error."""
    h = points
    e_h = torch.zeros_like(points)
    ds, dds = [], []
    for k, (w, b) in enumerate(zip(net.weights, net.biases)):
        z = h @ w.T + b
        e_z = _gamma(w.shape[1] + 1) * (h.abs() @ w.abs().T + b.abs()) + e_h @ w.abs().T
        if k < len(net.activations):
            act = net.activations[k]
            if act.name == "relu":
                h, e_h = torch.relu(z), e_z
                ds.append((z > 0).to(z.dtype))
                dds.append((z.abs() <= e_z).to(z.dtype))
            else:
                beta = float(act.beta)
                h = torch.relu(z) + torch.log1p(torch.exp(-beta * z.abs())) / beta
                e_h = e_z + 8 * U64 * (h.abs() + 1.0 / beta)
                ds.append(torch.sigmoid(beta * z))
                dds.append(beta / 4 * e_z + 4 * U64)
    g = row.to(points.dtype).expand(points.shape[0], -1)
    err = torch.zeros_like(g)
    for k in range(len(net.weights) - 1, -1, -1):
        w = net.weights[k]
        t = g @ w
        e_t = _gamma(w.shape[0]) * (g.abs() @ w.abs()) + err @ w.abs()
        if k > 0:
            d, dd = ds[k - 1], dds[k - 1]
            g = t * d
            err = e_t * d + t.abs() * dd + U64 * g.abs()
        else:
            g, err = t, e_t
    return g, err.norm(dim=1) * (1 + 1e-6) + 1e-300


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
    """implementation-deviation, lipschitz (l2), weak-convexity and curvature of N_c."""
    p_lip, p_wc, p_cv = {"target": c, "p": 2}, {"target": c}, {"target": c}
    if refusal is not None:
        return [refuse("implementation-deviation", "implementation-deviation", {}, "translation", refusal),
                refuse("lipschitz", "lipschitz", p_lip, "lipschitz-product", refusal),
                refuse("weak-convexity", "weak-convexity", p_wc, "hessian-bound", refusal),
                refuse("curvature", "curvature", p_cv, "hessian-bound", refusal)]
    net = state.net
    out: list[Claim] = []
    deviation = getattr(net, "deviation", None)
    if deviation is None:
        out.append(refuse("implementation-deviation", "implementation-deviation", {}, "translation",
                          "the translation provides no deviation bound"))
    else:
        out.append(issue("implementation-deviation", "implementation-deviation", {}, float(deviation), "softplus-threshold-bound"))
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


def provenance(model: nn.Module, model_spec: str | None, explainer: Explainer, seconds: float) -> dict[str, Any]:
    params = explainer.params()
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
        "explainer": {"method": explainer.method_name, "params": _jsonable(params), "seed": params.get("seed")},
        "seconds": seconds,
    }
