"""The structural proof that an LPN computes a proximal operator (issue 14, item 2; Fang, Buchanan & Sulam,
ICLR 2024, section 3 and Proposition 1; Gribonval & Nikolova, JMIV 2020, Corollary 1; Amos, Xu & Kolter,
"Input convex neural networks", ICML 2017, Proposition 1).

The proof (real arithmetic, for the exact type certify.inverse.lpn.LPN; s = softplus of sharpness beta > 0,
s(t) = log(1 + exp(beta t)) / beta, which is C-infinity, convex and non-decreasing):

1. z_1 = s(W_0 y + b_0): each coordinate is a convex non-decreasing function of an affine function of y,
   hence convex in y (any W_0).
2. z_{k+1} = s(W_k z_k + H_k y + b_k) with W_k >= 0 entrywise: W_k z_k is a non-negative combination of
   convex functions, hence convex; adding the affine H_k y + b_k keeps it convex; s convex and non-decreasing
   composed with a convex function is convex (Boyd & Vandenberghe, section 3.2.4). By induction every z_k
   is convex in y.
3. psi(y) = w^T z_K + h^T y + c + (alpha/2) ||y||^2 with w >= 0 and alpha >= 0: a non-negative combination
   of convex functions plus an affine function plus an alpha-strongly convex quadratic; so psi is convex,
   and psi - (alpha/2) ||.||^2 is convex (psi is alpha-strongly convex). psi is finite and C-infinity on R^n.
4. f = grad psi is the gradient of a convex, proper, lsc (finite, differentiable) function, so f is the
   proximal operator of some R: f(y) in argmin_x 1/2 ||y - x||^2 + R(x) (Gribonval & Nikolova, Corollary 1;
   R(x) = <y*, x> - ||x||^2/2 - psi(y*) for x = f(y*), R = +inf off the range of f). Its Jacobian
   J = Hess psi is symmetric with lambda_min >= alpha.

What is checked (`lpn_structure`), each a reason to refuse when it fails:
* the model's type is exactly LPN (no subclass, whatever it overrides: a subclass may change psi, forward or
  the layers' use; no duck typing: a lookalike class, e.g. one with nn.Softplus, is not an LPN), no method
  replaced on the instance, no forward/pre-forward hooks (on the model, its submodules, or global), the
  module-level activation is certify.inverse.lpn.softplus unchanged;
* the submodules are exactly the LPN's (first, convex.k, skips.k, out, out_skip), each exactly nn.Linear of
  the shapes that dim, hidden and layers imply;
* every constrained weight (convex.k.weight, out.weight) is >= 0 exactly (no tolerance; the most negative
  entry and its name are reported), every parameter and buffer finite;
* beta > 0 and alpha >= 0, finite floats (the activation is the thresholdless softplus of sharpness beta);
* conformance at a few points (float64): psi(y) equals an independent re-implementation of the formula
  above from the parameters, and forward(y) equals the autograd gradient of that re-implementation (relative
  errors reported; a tampered forward, psi or activation is refused). These are numerical checks with
  tolerance CONFORMANCE_RTOL (float64 rounding of the same formula is ~1e-15).

The proof is about the exact real function the parameters define; the floating-point f is its rounded
evaluation (the conformance errors are measured).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from certify.inverse import lpn as lpn_module
from certify.inverse.lpn import LPN

F64 = torch.float64
CONFORMANCE_RTOL = 1e-9
_CLASS_DATA = {"__doc__", "__module__", "__qualname__", "__dict__", "__weakref__", "__annotations__"}
_METHODS = ("psi", "forward", "_flat", "constrained", "__call__", "_call_impl")


@dataclass
class StructureResult:
    """The structural verdict: `holds` (certified: f is a prox) or refused, with every reason.

    facts: dim, hidden, layers, beta, alpha (= the strong convexity modulus of psi and the lower bound on the
        eigenvalues of f's Jacobian), min_constrained_weight (value, name, index), parameters (count),
        conformance_psi / conformance_forward (max relative errors), conformance_points."""

    holds: bool
    reasons: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "certified" if self.holds else "refused"


def _reference_psi(model: LPN, y: Tensor) -> Tensor:
    """psi of the formula (module docstring), from the parameters, float64, y [B, n] -> [B]."""
    def lin(layer: nn.Linear, x: Tensor) -> Tensor:
        out = x @ layer.weight.detach().to(F64).T
        return out + layer.bias.detach().to(F64) if layer.bias is not None else out

    def s(t: Tensor) -> Tensor:
        b = float(model.beta)
        return torch.logaddexp(b * t, torch.zeros((), dtype=F64)) / b

    z = s(lin(model.first, y))
    for convex, skip in zip(model.convex, model.skips):
        z = s(lin(convex, z) + lin(skip, y))
    value = lin(model.out, z)[:, 0] + lin(model.out_skip, y)[:, 0]
    return value + 0.5 * float(model.alpha) * (y * y).sum(1)


def _hooks(model: nn.Module) -> list[str]:
    found = []
    for name, mod in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            if getattr(mod, attr, None):
                found.append(f"{name or 'model'}.{attr}")
    g = torch.nn.modules.module
    for attr in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks"):
        if getattr(g, attr, None):
            found.append(f"torch global {attr}")
    return found


def _expected_modules(model: LPN) -> dict[str, tuple[int, int, bool | None]]:
    """name -> (in_features, out_features, has bias or None when either is allowed)."""
    d, h, k = model.dim, model.hidden, model.layers
    out: dict[str, tuple[int, int, bool | None]] = {"first": (d, h, True), "out": (h, 1, None),
                                                    "out_skip": (d, 1, True)}
    for i in range(k - 1):
        out[f"convex.{i}"] = (h, h, None)
        out[f"skips.{i}"] = (d, h, True)
    return out


def lpn_structure(model: Any, points: int = 4, seed: int = 0) -> StructureResult:
    """Check that `model` is an LPN whose psi is convex by construction (module docstring): type, layers,
    non-negative constrained weights, finite parameters, beta > 0, alpha >= 0, and conformance of psi and
    forward with the formula at `points` random points (float64, N(0, 1) inputs). Never raises for a bad
    model: every failure is a reason in the refused result."""
    reasons: list[str] = []
    facts: dict[str, Any] = {}
    if type(model) is not LPN:
        if isinstance(model, LPN):
            overridden = sorted(name for name in dir(type(model))
                                if name in _METHODS or name in vars(LPN)
                                if name not in _CLASS_DATA
                                if getattr(type(model), name, None) is not getattr(LPN, name, None))
            reasons.append(f"{type(model).__qualname__} is a subclass of LPN, not LPN itself"
                           + (f" (overrides {', '.join(overridden)})" if overridden else ""))
        else:
            reasons.append(f"{type(model).__module__}.{type(model).__qualname__} is not "
                           "certify.inverse.lpn.LPN (the structural proof covers that exact class only)")
        return StructureResult(False, reasons, facts)
    for name in _METHODS:
        if name in vars(model):
            reasons.append(f"method {name} replaced on the instance")
    if lpn_module.softplus.__module__ != "certify.inverse.lpn" or lpn_module.softplus.__qualname__ != "softplus":
        reasons.append("certify.inverse.lpn.softplus was replaced")
    hooks = _hooks(model)
    if hooks:
        reasons.append("hooks registered: " + ", ".join(hooks))

    beta, alpha = getattr(model, "beta", None), getattr(model, "alpha", None)
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not (beta > 0 and math.isfinite(beta)):
        reasons.append(f"beta must be a finite number > 0 (softplus sharpness), got {beta!r}")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not (alpha >= 0 and math.isfinite(alpha)):
        reasons.append(f"alpha must be a finite number >= 0, got {alpha!r}")
    facts.update(dim=model.dim, hidden=model.hidden, layers=model.layers, beta=beta, alpha=alpha,
                 strong_convexity=alpha, jacobian_min_eigenvalue_bound=alpha)

    expected = _expected_modules(model)
    present = {name: mod for name, mod in model.named_modules() if name and not isinstance(mod, nn.ModuleList)}
    for name in sorted(set(present) - set(expected)):
        reasons.append(f"unexpected submodule {name} ({type(present[name]).__name__})")
    for name, (fin, fout, bias) in expected.items():
        mod = present.get(name)
        if mod is None:
            reasons.append(f"missing submodule {name}")
        elif type(mod) is not nn.Linear:
            reasons.append(f"submodule {name} is {type(mod).__qualname__}, not exactly nn.Linear")
        elif (mod.in_features, mod.out_features) != (fin, fout) or tuple(mod.weight.shape) != (fout, fin):
            reasons.append(f"submodule {name} has shape {tuple(mod.weight.shape)}, expected {(fout, fin)}")
        elif bias is True and (mod.bias is None or tuple(mod.bias.shape) != (fout,)):
            reasons.append(f"submodule {name} lacks its bias of shape {(fout,)}")
        elif mod.bias is not None and tuple(mod.bias.shape) != (fout,):
            reasons.append(f"submodule {name} has a bias of shape {tuple(mod.bias.shape)}")
    for extra in ("convex", "skips"):
        if type(getattr(model, extra, None)) is not nn.ModuleList:
            reasons.append(f"{extra} is not an nn.ModuleList")

    nonfinite = [name for name, t in list(model.named_parameters()) + list(model.named_buffers())
                 if not torch.isfinite(t.detach()).all()]
    if nonfinite:
        reasons.append("non-finite values in " + ", ".join(nonfinite))
    facts["parameters"] = sum(p.numel() for p in model.parameters())

    if not reasons:  # the constrained list itself must be the LPN's own (the class is exact, so it is)
        worst: tuple[float, str, list[int]] | None = None
        for name, weight in model.constrained():
            w = weight.detach()
            k = int(torch.argmin(w))
            value = float(w.reshape(-1)[k])
            index = [int(i) for i in torch.unravel_index(torch.tensor(k), w.shape)]
            if worst is None or value < worst[0]:
                worst = (value, name, index)
            negative = int((w < 0).sum())
            if negative:
                reasons.append(f"{name} has {negative} negative entries (most negative {value:.6g} at index "
                               f"{index}): psi is not certified convex")
        if worst is not None:
            facts["min_constrained_weight"] = {"value": worst[0], "name": worst[1], "index": worst[2]}

    if not reasons:
        facts.update(_conformance(model, points, seed))
        if not facts["conformance_psi"] <= CONFORMANCE_RTOL:
            reasons.append(f"psi differs from the LPN formula (relative error {facts['conformance_psi']:.3g})")
        if not facts["conformance_forward"] <= CONFORMANCE_RTOL:
            reasons.append(f"forward differs from grad psi (relative error {facts['conformance_forward']:.3g})")
    return StructureResult(not reasons, reasons, facts)


def _conformance(model: LPN, points: int, seed: int) -> dict[str, Any]:
    """Max relative errors of model.psi and model.forward (float64 copy) against the reference formula and
    its autograd gradient, at `points` N(0, 1) points and the origin."""
    g = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.zeros(1, model.dim, dtype=F64), torch.randn(points, model.dim, generator=g, dtype=F64)])
    twin = copy.deepcopy(model).double()
    with torch.enable_grad():
        yy = y.clone().requires_grad_(True)
        ref_psi = _reference_psi(model, yy)
        (ref_f,) = torch.autograd.grad(ref_psi.sum(), yy)
    with torch.no_grad():
        got_psi = twin.psi(y)
        got_f = twin(y)
    psi_err = float(((got_psi - ref_psi.detach()).abs() / (1.0 + ref_psi.detach().abs())).max())
    f_err = float(((got_f - ref_f).norm(dim=1) / (1.0 + ref_f.norm(dim=1))).max())
    if not (math.isfinite(psi_err) and math.isfinite(f_err)):
        psi_err = f_err = math.inf
    return {"conformance_psi": psi_err, "conformance_forward": f_err, "conformance_points": int(y.shape[0])}
