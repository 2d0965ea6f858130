"""The independent checker of prox certificates (issue 14; `certify verify` of a "certify-prox-certificate").

Every value is re-derived from the model, the claim's parameters and its witness, never taken from the
certificate's word about itself; this module imports no solver code (certify.inverse included: the LPN's psi
is re-implemented below from the parameters alone).

* `prox-structure` (value = alpha): the model must be exactly certify.inverse.lpn.LPN (by class identity, no
  instance-level override of forward / psi, no hooks, every submodule an exact nn.Linear of the expected
  shape), every constrained weight (W_1..W_(K-1), w) >= 0 entrywise (NaN fails), every parameter finite,
  beta > 0 and alpha >= value >= 0 finite. Then psi, written here from the state dict, is convex by the
  composition rules (a non-negative combination of convex functions, composed with the convex non-decreasing
  softplus, stays convex; plus an affine term and (alpha/2)||y||^2), so grad psi is a prox (Gribonval &
  Nikolova 2020, Cor. 1). Conformance: the model's output equals grad psi (autograd of this module's psi, in
  float64) at seeded points, to the model's precision.
* `prox-violation-cycle`: the cycle's points must be exactly representable in the model's dtype and in float32;
  the sum S = sum_i <f(y_i), y_(i+1) - y_i> is computed in float64 from f's outputs, for the model as run, a
  float64 copy and a float32 copy, with the rounding of the differences, products and sums bounded (Higham's
  gamma_k); the claim holds when every sum minus its error bound is >= value > 0. Guards against a violation
  made by rounding (`check_cycle`): refused for a model whose structure proves it a prox; no step shorter than
  STEP_FLOOR (1 + max ||y_i||); the float32 and float64 sums within half of each other; value >= RELATIVE_MARGIN
  sum_i ||f(y_i)|| ||d_i||.
* `jacobian-asymmetry`, `jacobian-min-eigenvalue`, `cyclic-monotonicity-sampled` (estimated): re-evaluated at
  their witness point / cycle (float64 copy of the model) and compared with the stated value; a sampled
  maximum cannot be re-derived from one witness, so these stay estimates ("estimate" status) when they match.
"""
from __future__ import annotations

import copy
import inspect
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from certify.certificates._common import Invalid
from certify.certificates.claims import RELATIVE_MARGIN, Claim, ClaimError, _record, validate_claim
from certify.vocabulary import Kind

LPN_CLASS = ("certify.inverse.lpn", "LPN")
UNIT = 2.0**-53
CONFORMANCE_POINTS = 16  # seeded N(0, I) points at scales 0.1, 1, 10 and 100 (a sanity check: the code is compared)
CONFORMANCE_RTOL = {torch.float64: 1e-9, torch.float32: 1e-4}
ESTIMATE_RTOL = 1e-6
STEP_FLOOR = 1e-6  # relative length below which a cycle's step is within the rounding of float32 inputs


def _gamma(k: int) -> float:
    return k * UNIT / (1 - k * UNIT)


# ------------------------------------------------------------------ the LPN, from its parameters alone

def _code_objects(code: Any, out: dict[str, Any]) -> dict[str, Any]:
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            out[const.co_qualname] = const
            _code_objects(const, out)
    return out


def _lpn_code_intact(cls: type) -> None:
    """The model's class is certify.inverse.lpn.LPN itself (by identity with the loaded module's class), and the
    code that runs is that module's file as written: every function of the class, the module's softplus and its
    autograd Function are compared with a fresh compilation of the file's source (read, never imported), so a
    subclass or a lookalike class, a patched method or a replaced softplus is refused."""
    module = sys.modules.get(LPN_CLASS[0])
    if module is None or getattr(module, LPN_CLASS[1], None) is not cls:
        raise Invalid(f"the model is a {cls.__module__}.{cls.__qualname__}, not certify.inverse.lpn.LPN itself: "
                      "no structural proof applies")
    try:
        source = Path(module.__file__).read_text()
        fresh = _code_objects(compile(source, module.__file__, "exec", dont_inherit=True), {})
    except (OSError, SyntaxError, TypeError) as exc:
        raise Invalid(f"the source of certify.inverse.lpn cannot be read to compare with the code that runs ({exc})") from None
    defined = {q for q in fresh if q.startswith("LPN.") and q.count(".") == 1}
    present = {f"LPN.{name}" for name, value in vars(cls).items() if callable(value) or isinstance(value, (staticmethod, classmethod))}
    if present != defined:
        raise Invalid(f"the LPN class has other methods than certify/inverse/lpn.py defines: {sorted(present ^ defined)}")
    # what computes f: forward, psi and _flat (the other methods build, initialise or print the network)
    functions = {f"LPN.{name}": vars(cls)[name] for name in ("forward", "psi", "_flat")}
    functions["softplus"] = getattr(module, "softplus", None)
    helper = getattr(module, "_Softplus", None)
    for name in ("forward", "backward"):
        functions[f"_Softplus.{name}"] = inspect.getattr_static(helper, name, None) if helper is not None else None
    for name, function in functions.items():
        function = getattr(function, "__func__", function)  # staticmethods
        if getattr(function, "__code__", None) != fresh.get(name):
            raise Invalid(f"{name} is not the code of certify/inverse/lpn.py as written: it was replaced or patched")
    for name in ("softplus", "_Softplus", "torch"):
        if vars(cls)["psi"].__globals__.get(name) is not (torch if name == "torch" else getattr(module, name)):
            raise Invalid(f"the global {name} seen by LPN.psi was replaced")
    if getattr(module.softplus, "__globals__", {}).get("_Softplus") is not helper:
        raise Invalid("the autograd Function seen by softplus was replaced")


_OVERRIDES = ("forward", "__call__", "_call_impl", "_wrapped_call_impl", "psi", "_flat")


def _no_overrides(model: nn.Module) -> None:
    """No module of the model replaces what it computes on the instance, carries a hook or a compiled call."""
    hooks = [getattr(torch.nn.modules.module, name, {}) for name in
             ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks")]
    if any(hooks):
        raise Invalid("a global module hook is registered: it can change what every module computes")
    for name, module in model.named_modules():
        where = name or "(root)"
        for attribute in _OVERRIDES:
            if attribute in module.__dict__:
                raise Invalid(f"module {where} overrides {attribute} on the instance")
        if module.__dict__.get("_compiled_call_impl") is not None:
            raise Invalid(f"module {where} carries a compiled call that replaces its forward")
        if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or getattr(module, "_backward_pre_hooks", None):
            raise Invalid(f"module {where} carries a hook that can change what it computes")
        if name and type(module) not in (nn.Linear, nn.ModuleList):
            raise Invalid(f"module {where} is a {type(module).__qualname__}, not an nn.Linear of an LPN")
        if type(module) is nn.Linear and getattr(type(module), "forward") is not _LINEAR_FORWARD:
            raise Invalid("nn.Linear.forward was replaced")


_LINEAR_FORWARD = nn.Linear.forward


def lpn_parameters(model: nn.Module) -> dict[str, Any]:
    """The LPN's parameters (float64, CPU) after the structural checks of the module docstring; Invalid names
    the first that fails."""
    cls = type(model)
    _lpn_code_intact(cls)
    _no_overrides(model)
    beta, alpha, layers = getattr(model, "beta", None), getattr(model, "alpha", None), getattr(model, "layers", None)
    if not (isinstance(beta, float) and math.isfinite(beta) and beta > 0):
        raise Invalid(f"beta = {beta!r} is not a finite number > 0")
    if not (isinstance(alpha, float) and math.isfinite(alpha) and alpha >= 0):
        raise Invalid(f"alpha = {alpha!r} is not a finite number >= 0")
    if not (isinstance(layers, int) and layers >= 1):
        raise Invalid(f"layers = {layers!r} is not an integer >= 1")
    expected = {"first": nn.Linear, "convex": nn.ModuleList, "skips": nn.ModuleList, "out": nn.Linear, "out_skip": nn.Linear}
    children = dict(model.named_children())
    if set(children) != set(expected) or any(type(children[k]) is not t for k, t in expected.items()):
        raise Invalid(f"the model's submodules {sorted(children)} are not those of an LPN")
    for group in ("convex", "skips"):
        if len(children[group]) != layers - 1 or any(type(m) is not nn.Linear for m in children[group]):
            raise Invalid(f"{group} must hold {layers - 1} nn.Linear layers")
    state = {k: v.detach().to("cpu", torch.float64) for k, v in model.state_dict().items()}
    keys = {"first.weight", "first.bias", "out.weight", "out_skip.weight", "out_skip.bias"}
    keys |= {f"convex.{k}.weight" for k in range(layers - 1)}
    keys |= {f"skips.{k}.{p}" for k in range(layers - 1) for p in ("weight", "bias")}
    if set(state) != keys:
        raise Invalid(f"the state dict has keys {sorted(set(state) ^ keys)} where an LPN has not (or lacks them)")
    h, n = state["first.weight"].shape
    shapes = {"first.bias": (h,), "out.weight": (1, h), "out_skip.weight": (1, n), "out_skip.bias": (1,)}
    shapes |= {f"convex.{k}.weight": (h, h) for k in range(layers - 1)}
    shapes |= {f"skips.{k}.weight": (h, n) for k in range(layers - 1)} | {f"skips.{k}.bias": (h,) for k in range(layers - 1)}
    for key, shape in shapes.items():
        if tuple(state[key].shape) != shape:
            raise Invalid(f"{key} has shape {tuple(state[key].shape)}, expected {shape}")
    for key, value in state.items():
        if not bool(torch.isfinite(value).all()):
            raise Invalid(f"{key} has a non-finite entry")
    for key in [f"convex.{k}.weight" for k in range(layers - 1)] + ["out.weight"]:
        low = float(state[key].min())
        if not low >= 0:
            raise Invalid(f"{key} has a negative entry ({low:.6g}): psi is not certified convex")
    return {"state": state, "beta": beta, "alpha": alpha, "layers": layers, "features": n, "hidden": h}


def lpn_psi(params: dict[str, Any], y: Tensor) -> Tensor:
    """psi(y) [B] for y [B, n] (float64), from the parameters alone (the formula of the module docstring)."""
    s, beta = params["state"], params["beta"]
    zero = torch.zeros((), dtype=y.dtype)

    def act(t: Tensor) -> Tensor:
        return torch.logaddexp(beta * t, zero) / beta

    z = act(y @ s["first.weight"].T + s["first.bias"])
    for k in range(params["layers"] - 1):
        z = act(z @ s[f"convex.{k}.weight"].T + y @ s[f"skips.{k}.weight"].T + s[f"skips.{k}.bias"])
    out = (z @ s["out.weight"].T + y @ s["out_skip.weight"].T + s["out_skip.bias"]).squeeze(1)
    return out + 0.5 * params["alpha"] * (y * y).sum(dim=1)


def lpn_gradient(params: dict[str, Any], y: Tensor) -> Tensor:
    """grad psi(y) [B, n] by autograd of `lpn_psi` (float64)."""
    with torch.enable_grad():
        leaf = y.detach().to(torch.float64).requires_grad_(True)
        (grad,) = torch.autograd.grad(lpn_psi(params, leaf).sum(), leaf)
    return grad


def _model_dtype(model: nn.Module) -> torch.dtype:
    first = next(iter(model.parameters()), None)
    return first.dtype if first is not None else torch.float32


def _device(model: nn.Module) -> torch.device:
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def _evaluate(model: nn.Module, y: Tensor, shape: tuple[int, ...]) -> Tensor:
    """f(y) [B, n] in float64 for points y [B, n] given in the model's dtype."""
    with torch.no_grad():
        out = model(y.reshape(y.shape[0], *shape).to(_device(model)))
    if not isinstance(out, Tensor) or out.numel() != y.numel():
        raise Invalid(f"the model maps [B, {y.shape[1]}] inputs to {getattr(out, 'shape', type(out))}, not a denoiser's output")
    return out.reshape(y.shape[0], -1).to("cpu", torch.float64)


def float64_copy(model: nn.Module) -> nn.Module:
    """A float64 copy of the model (the original is untouched)."""
    return copy.deepcopy(model).to(torch.float64).eval()


def check_structure(model: nn.Module, claim: Claim, shape: tuple[int, ...]) -> str:
    params = lpn_parameters(model)
    if params["features"] != math.prod(shape):
        raise Invalid(f"the LPN has {params['features']} features; the certificate's denoiser has {math.prod(shape)}")
    if not claim.value <= params["alpha"]:
        raise Invalid(f"the stated strong-convexity modulus {claim.value!r} exceeds the model's alpha = {params['alpha']!r}")
    dtype = _model_dtype(model)
    generator = torch.Generator().manual_seed(0)
    scales = torch.tensor([0.1, 1.0, 10.0, 100.0], dtype=torch.float64).repeat_interleave(CONFORMANCE_POINTS // 4)
    points = torch.randn(scales.numel(), params["features"], generator=generator, dtype=torch.float64) * scales[:, None]
    points = points.to(dtype).to(torch.float64)  # representable in the model's dtype
    reference = lpn_gradient(params, points)
    got = _evaluate(model, points.to(dtype), shape)
    rtol = CONFORMANCE_RTOL.get(dtype, 1e-3)
    deviation = float(((got - reference).abs() / (1.0 + reference.abs())).max())
    if not deviation <= rtol:
        raise Invalid(f"the model's output is not grad psi of its own parameters (relative deviation {deviation:.3g} > {rtol:g})")
    return (f"LPN structure: {params['layers']} hidden layers of {params['hidden']}, constrained weights >= 0, "
            f"beta = {params['beta']:g}, alpha = {params['alpha']:g} >= value; model == grad psi at "
            f"{CONFORMANCE_POINTS} points (relative deviation {deviation:.2g})")


def cycle_sum(f_values: Tensor, cycle: Tensor) -> tuple[float, float]:
    """(S, error bound) for S = sum_i <f_i, y_(i+1) - y_i> computed in float64 from f_values [m, n] and the
    cycle [m, n]: the differences carry relative error u, each of the m n products and the sum of m n terms
    gamma_(m n + 1) (Higham 2002, eq. 3.5), so |fl(S) - S| <= (gamma_(mn+1) (1 + u) + u) sum |f_i| |d_i|."""
    diff = torch.roll(cycle, shifts=-1, dims=0) - cycle
    total = float((f_values * diff).sum())
    magnitude = float((f_values.abs() * diff.abs()).sum())
    k = cycle.numel() + 1
    return total, 2.0 * (_gamma(k) * (1 + UNIT) + UNIT) * magnitude  # factor 2: a margin over the bound


def check_cycle(model: nn.Module, claim: Claim, shape: tuple[int, ...]) -> str:
    """The violation of a `prox-violation-cycle` claim (module docstring), and the guards against a violation made
    by rounding: a model whose structure proves it a prox has none (refused outright); the steps of the cycle are
    not degenerate (each at least STEP_FLOOR (1 + max ||y_i||)); a float32 copy of the model agrees (its sum is
    within half of the float64 one); and value >= RELATIVE_MARGIN sum_i ||f(y_i)|| ||d_i||."""
    try:
        lpn_parameters(model)
    except Invalid:
        pass
    else:
        raise Invalid("the model is a learned proximal network whose structure proves it a prox: a computed "
                      "violation can only be rounding")
    cycle = torch.as_tensor(_record(claim.params["cycle"], "cycle"), dtype=torch.float64)
    dtype = _model_dtype(model)
    for kind in {dtype, torch.float32}:
        if not bool((cycle.to(kind).to(torch.float64) == cycle).all()):
            raise Invalid(f"the cycle's points are not exactly representable in {kind} (the model's dtype and float32)")
    diff = torch.roll(cycle, shifts=-1, dims=0) - cycle
    floor = STEP_FLOOR * (1.0 + float(cycle.norm(dim=1).max()))
    if not float(diff.norm(dim=1).min()) >= floor:
        raise Invalid(f"a step of the cycle is shorter than {floor:.3g}: too close to the rounding of f to prove anything")
    copies = {"as run": model}
    try:
        copies["float64"] = float64_copy(model)
        copies["float32"] = copy.deepcopy(model).to(torch.float32).eval()
    except (RuntimeError, TypeError) as exc:
        raise Invalid(f"the model cannot be evaluated in float64 and float32 ({exc})") from None
    slacks, totals, parts = [], {}, []
    for label, evaluated in copies.items():
        f_values = _evaluate(evaluated, cycle.to(_model_dtype(evaluated)), shape)
        if not bool(torch.isfinite(f_values).all()):
            raise Invalid(f"f is not finite on the cycle ({label})")
        total, error = cycle_sum(f_values, cycle)
        slacks.append(total - error)
        totals[label] = total
        parts.append(f"{label}: S = {total:.6g} (rounding <= {error:.2g})")
        if label == "float64":
            scale = float((f_values.norm(dim=1) * diff.norm(dim=1)).sum()) * (1 + 1e-12)
    if not min(slacks) >= claim.value > 0:
        raise Invalid(f"S minus its rounding bound is {min(slacks):.6g}, not >= the stated {claim.value!r} > 0 ({'; '.join(parts)})")
    if not abs(totals["float32"] - totals["float64"]) <= 0.5 * totals["float64"]:
        raise Invalid(f"the float32 and float64 evaluations disagree on the cycle ({'; '.join(parts)}): f is evaluated "
                      "too inaccurately there to prove anything")
    if not claim.value >= RELATIVE_MARGIN * scale:
        raise Invalid(f"the violation {claim.value:.3g} is below {RELATIVE_MARGIN:g} x sum_i ||f(y_i)|| ||d_i|| = "
                      f"{RELATIVE_MARGIN * scale:.3g}: an evaluation error of that size could have made it")
    return "; ".join(parts) + (f"; relative margin {min(slacks) / scale:.3g}" if scale > 0 else "")


def _jacobian(model64: nn.Module, point: Tensor, shape: tuple[int, ...]) -> Tensor:
    def f(v: Tensor) -> Tensor:
        return model64(v.reshape(1, *shape)).reshape(-1)

    with torch.enable_grad():
        return torch.autograd.functional.jacobian(f, point.to(_device(model64)), vectorize=True).to("cpu", torch.float64)


def jacobian_measures(model64: nn.Module, point: Tensor, shape: tuple[int, ...]) -> tuple[float, float]:
    """(||J - J^T||_F / ||J||_F, lambda_min((J + J^T)/2)) at one point [n] (float64 model)."""
    jac = _jacobian(model64, point, shape)
    norm = float(jac.norm())
    asym = float((jac - jac.T).norm()) / norm if norm > 0 else 0.0
    return asym, float(torch.linalg.eigvalsh((jac + jac.T) / 2).min())


def normalised_cycle_sum(model64: nn.Module, cycle: Tensor, shape: tuple[int, ...]) -> float:
    f_values = _evaluate(model64, cycle, shape)
    diff = torch.roll(cycle, shifts=-1, dims=0) - cycle
    scale = float((diff * diff).sum())
    return float((f_values * diff).sum()) / scale if scale > 0 else 0.0


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= ESTIMATE_RTOL * (1.0 + abs(b))


def check_estimate(model: nn.Module, claim: Claim, shape: tuple[int, ...]) -> str:
    model64 = float64_copy(model)
    if claim.type == "cyclic-monotonicity-sampled":
        cycle = torch.as_tensor(_record(claim.witness["cycle"], "witness.cycle"), dtype=torch.float64)
        if cycle.ndim != 2 or cycle.shape[0] != claim.params["length"] or cycle.shape[1] != math.prod(shape):
            raise Invalid(f"witness.cycle has shape {list(cycle.shape)}, not [{claim.params['length']}, {math.prod(shape)}]")
        found = normalised_cycle_sum(model64, cycle, shape)
        if not _close(found, claim.value):
            raise Invalid(f"the witness cycle's normalised sum is {found:.6g}, not the stated {claim.value:.6g}")
        return f"witness cycle re-evaluated: normalised sum {found:.6g}"
    point = torch.as_tensor(_record(claim.witness["point"], "witness.point"), dtype=torch.float64).reshape(-1)
    if point.numel() != math.prod(shape):
        raise Invalid(f"witness.point has {point.numel()} entries, not {math.prod(shape)}")
    asym, min_eig = jacobian_measures(model64, point, shape)
    if claim.type == "jacobian-asymmetry":
        if not asym >= claim.value - ESTIMATE_RTOL * (1.0 + abs(claim.value)):
            raise Invalid(f"the Jacobian's relative asymmetry at the witness point is {asym:.6g}, below the stated {claim.value:.6g}")
        return f"at the witness point: relative asymmetry {asym:.6g}"
    if not min_eig <= claim.value + ESTIMATE_RTOL * (1.0 + abs(claim.value)):
        raise Invalid(f"lambda_min of the symmetric part at the witness point is {min_eig:.6g}, above the stated {claim.value:.6g}")
    return f"at the witness point: lambda_min of the symmetric part {min_eig:.6g}"


CHECKS = {"prox-structure": check_structure, "prox-violation-cycle": check_cycle}


def check_prox(cert: Any, model: nn.Module) -> tuple[list[str], list[tuple[str, str, str]]]:
    """(document problems, [(claim id, status, detail)]) for a ProxCertificate and its model (already matched
    by hash). Statuses: "valid", "invalid", "estimate" (re-evaluated at its witness, matches), "refused"."""
    problems: list[str] = []
    shape = tuple(int(s) for s in cert.denoiser["input_shape"])
    n = int(cert.denoiser["features"])
    if math.prod(shape) != n:
        return [f"denoiser.input_shape {list(shape)} has {math.prod(shape)} features, not {n}"], []
    rows: list[tuple[str, str, str]] = []
    certified: set[str] = set()
    for claim in cert.claims:
        try:
            validate_claim(claim, n, 0)
            if claim.type not in CHECKS and claim.type not in ("jacobian-asymmetry", "jacobian-min-eigenvalue",
                                                                "cyclic-monotonicity-sampled"):
                raise Invalid(f"a {claim.type!r} claim is not a statement about a denoiser")
            if claim.kind == Kind.REFUSED.value:
                rows.append((claim.id, "refused", claim.reason or ""))
                continue
            if claim.type in CHECKS:
                detail = CHECKS[claim.type](model, claim, shape)
                certified.add(claim.type)
                rows.append((claim.id, "valid", detail))
            else:
                rows.append((claim.id, "estimate", check_estimate(model, claim, shape)))
        except (Invalid, ClaimError) as exc:
            rows.append((claim.id, "invalid", str(exc)))
        except (RuntimeError, TypeError, ValueError, IndexError) as exc:  # the model fails on the witness
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            rows.append((claim.id, "invalid", f"the model cannot be evaluated for this claim ({type(exc).__name__}: {first})"))
    expected = ("prox" if "prox-structure" in certified else
                "not-a-prox" if "prox-violation-cycle" in certified else "undecided")
    if certified >= {"prox-structure", "prox-violation-cycle"}:
        problems.append("the certificate proves both that f is a prox and that it is not: contradictory")
    elif cert.answer != expected:
        problems.append(f"answer {cert.answer!r} where the verified claims give {expected!r}")
    return problems, rows
