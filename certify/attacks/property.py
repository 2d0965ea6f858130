"""Decide a VNN-LIB property (certify.models.vnnlib) within a time limit: "violated" (a counterexample found
by a strong PGD attack and re-evaluated), "holds" (certified by CROWN, alpha-CROWN or branch and bound with
optimised split multipliers on the exact float64 translation N of the model, certify.bounds.property), or
"unknown". Order: PGD for 5% of the time (at most 1 s), CROWN, then branch and bound (or alpha-CROWN) until 90% of what
is left, then PGD again with the rest. Branch and bound also proposes points where its search saw the formula
satisfied (the corner minimising a subdomain's linear bound); each is re-evaluated like a PGD point.

Counterexample search: projected sign-gradient descent (l-inf PGD, Madry et al. 2018) in the model's own
dtype, targeted at each conjunction {y : C y <= d} of the counterexample formula (loss max_r (C y - d)_r,
i.e. the CW margin for a classification property), from the box centre, its corners-by-gradient-sign and
seeded uniform random starts, with a step size that decays over the steps, repeated with new seeds until
the time is spent. The box is the file's box, shrunk to the representable values of the model's dtype
inside it. A candidate counts only when it lies in the box (compared in float64 with the file's bounds)
and satisfies the formula both in the model's dtype (as the user runs it) and in float64 (a float64 copy of
the model at the same point); it is returned with both outputs.

Soundness order: the attack runs first; "holds" is never returned for a property with a counterexample in
hand (a bound that claims otherwise would be a bug and is reported as status "error").
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from certify.bounds.network import AffineNetwork, conformance, from_module
from certify.bounds.property import property_bounds
from certify.errors import UnsupportedError
from certify.models.vnnlib import Property, violates

STATUSES = ("holds", "violated", "unknown", "error")


@dataclass
class PropertyResult:
    status: str  # holds | violated | unknown | error
    seconds: float
    method: str = ""
    margin: float | None = None  # certified lower bound (> 0 when holds)
    counterexample: np.ndarray | None = None  # float64 copy of the point as evaluated in the model's dtype
    outputs: dict[str, list[float]] = field(default_factory=dict)  # {"model dtype": y, "float64": y}
    notes: list[str] = field(default_factory=list)
    witness: dict | None = None  # status "holds" on a ReLU chain: certify.bounds.property's witness (not in to_json)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "seconds": self.seconds,
            "method": self.method,
            "margin": self.margin,
            "counterexample": None if self.counterexample is None else self.counterexample.tolist(),
            "outputs": self.outputs,
            "notes": self.notes,
        }


def _dtype(model: nn.Module) -> torch.dtype:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def _device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def representable_box(prop: Property, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """[lo, hi] in `dtype`, every value of which lies in the file's box (float64 comparison)."""
    lo64 = torch.as_tensor(prop.lower, dtype=torch.float64)
    hi64 = torch.as_tensor(prop.upper, dtype=torch.float64)
    lo, hi = lo64.to(dtype), hi64.to(dtype)
    inf = torch.tensor(math.inf, dtype=dtype)
    lo = torch.where(lo.to(torch.float64) < lo64, torch.nextafter(lo, inf), lo)
    hi = torch.where(hi.to(torch.float64) > hi64, torch.nextafter(hi, -inf), hi)
    if bool((lo > hi).any()):  # a box thinner than the dtype's spacing: keep a representable point if any
        raise UnsupportedError("the input box contains no value representable in the model's dtype at some coordinate")
    return lo, hi


def _loss(y: Tensor, c: Tensor, d: Tensor) -> Tensor:
    """max_r (C y - d)_r per row of y [B, m] for one conjunction: <= 0 means y is a counterexample."""
    return (y.to(c.dtype) @ c.T - d).amax(dim=-1)


def check_counterexample(model: nn.Module, prop: Property, x: Tensor, input_shape: tuple[int, ...]) -> tuple[bool, dict]:
    """Whether x (the model's dtype, flat) is a counterexample: inside the file's box (float64 comparison) and
    violating the formula in the model's dtype and in a float64 copy of the model."""
    x64 = x.detach().to("cpu", torch.float64).reshape(-1)
    inside = bool(((x64 >= torch.as_tensor(prop.lower)) & (x64 <= torch.as_tensor(prop.upper))).all())
    with torch.no_grad():
        y = model(x.reshape(1, *input_shape).to(_device(model))).detach().to("cpu", torch.float64).reshape(-1)
        model64 = copy.deepcopy(model).to("cpu", torch.float64).eval()
        y64 = model64(x64.reshape(1, *input_shape)).detach().reshape(-1)
    ok = inside and violates(prop, y.numpy()) and violates(prop, y64.numpy())
    return ok, {"inside": inside, "model dtype": y.tolist(), "float64": y64.tolist()}


def pgd_counterexample(
    model: nn.Module,
    prop: Property,
    input_shape: tuple[int, ...],
    seconds: float = 10.0,
    steps: int = 100,
    restarts: int = 16,
    seed: int = 0,
) -> tuple[Tensor | None, dict]:
    """Search for a counterexample for about `seconds` (module docstring); (point or None, evaluation)."""
    start = time.perf_counter()
    dtype, device = _dtype(model), _device(model)
    lo, hi = (t.to(device) for t in representable_box(prop, dtype))
    n = lo.numel()
    conj = [(torch.as_tensor(c, dtype=torch.float64, device=device), torch.as_tensor(d, dtype=torch.float64, device=device)) for c, d in prop.disjuncts]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    centre = ((lo.double() + hi.double()) / 2).to(dtype)
    width = (hi - lo).to(dtype)
    rounds = 0
    info: dict = {"rounds": 0, "best": math.inf}
    while True:
        rounds += 1
        starts = [centre[None]]
        rand = torch.rand(restarts, n, generator=gen, dtype=torch.float64).to(device, dtype)
        starts.append(lo + rand * width)
        x0 = torch.cat(starts)  # [S, n]
        k = len(conj)
        x = x0.repeat(k, 1).clone()  # conjunction-major: rows [i*S:(i+1)*S] target conjunction i
        s = x0.shape[0]
        best = torch.full((k * s,), math.inf, dtype=torch.float64, device=device)
        for t in range(steps):
            x.requires_grad_(True)
            y = model(x.reshape(-1, *input_shape))
            y = y.reshape(y.shape[0], -1)
            losses = torch.cat([_loss(y[i * s : (i + 1) * s], c, d) for i, (c, d) in enumerate(conj)])
            (grad,) = torch.autograd.grad(losses.sum(), x)
            with torch.no_grad():
                best = torch.minimum(best, losses.detach())
                hit = torch.nonzero(losses <= 0).reshape(-1)
                for idx in hit.tolist():
                    ok, evaluation = check_counterexample(model, prop, x[idx].detach(), input_shape)
                    if ok:
                        info.update(rounds=rounds, steps=t, seconds=time.perf_counter() - start, **evaluation)
                        return x[idx].detach().clone(), info
                step = 0.5 * (1 + math.cos(math.pi * t / steps)) * 0.25 + 0.01  # fraction of the box width
                x = x.detach() - step * width * grad.sign()
                x = torch.maximum(torch.minimum(x, hi), lo)
        info["best"] = min(info["best"], float(best.min()))
        info["rounds"] = rounds
        if time.perf_counter() - start > seconds:
            info["seconds"] = time.perf_counter() - start
            return None, info
        gen.manual_seed(seed + rounds)


def input_shape_for(model: nn.Module, prop: Property) -> tuple[int, ...]:
    shape = getattr(model, "certify_input_shape", None)
    return tuple(shape) if shape is not None else (prop.num_inputs,)


def verify_property(
    model: nn.Module,
    prop: Property,
    timeout: float = 60.0,
    input_shape: tuple[int, ...] | None = None,
    net: AffineNetwork | None = None,
    methods: tuple[str, ...] = ("crown", "bab"),
    attack_seconds: float | None = None,
    seed: int = 0,
) -> PropertyResult:
    """holds / violated / unknown within about `timeout` seconds (module docstring for the order)."""
    start = time.perf_counter()
    shape = input_shape or input_shape_for(model, prop)
    notes: list[str] = []
    quick = min(attack_seconds if attack_seconds is not None else min(0.05 * timeout, 1.0), timeout)
    point, info = pgd_counterexample(model, prop, shape, seconds=quick, seed=seed)
    if point is not None:
        return PropertyResult("violated", time.perf_counter() - start, "pgd", None,
                              point.detach().to("cpu", torch.float64).numpy(), {k: info[k] for k in ("model dtype", "float64")})
    notes.append(f"PGD: no counterexample in {info.get('rounds')} round(s), best loss {info.get('best'):.4g}")
    if net is None:
        try:
            net = from_module(model, shape)
            check = conformance(model, net, torch.as_tensor(0.5 * (prop.lower + prop.upper)).reshape(1, *shape))
            if not check.passed:
                raise UnsupportedError(f"the translation does not conform: {check.detail}")
            if net.head is not None:
                raise UnsupportedError(
                    f"the model ends in {net.head}, which N drops: the property constrains the model's outputs, "
                    "the bounds would be about the logits before it"
                )
        except UnsupportedError as exc:
            notes.append(f"no bound: {exc}")
            net = None
    margin = None
    method_used = ""
    if net is not None:
        for method in methods:
            left = timeout - (time.perf_counter() - start)
            if left <= 0:
                break
            options = {"deadline": time.perf_counter() + 0.9 * left} if method in ("alpha-crown", "bab") else {}
            try:
                bound = property_bounds(net, prop, method, **options)
            except UnsupportedError as exc:
                notes.append(f"{method}: {exc}")
                continue
            margin, method_used = bound.margin, method
            notes.append(f"{method}: certified lower bound {bound.margin:.4g}")
            search = bound.details.get("bab")
            if search is not None and not search.proven:
                notes.append(f"branch and bound: {search.domains} subdomains bounded in {search.seconds:.1f} s, {search.open} "
                             f"left open, depth {search.depth}; least search bound of its last batch {search.lower:.4g} "
                             "(float32, not certified)")
            if bound.holds:
                return PropertyResult("holds", time.perf_counter() - start, method, bound.margin, notes=notes,
                                      witness=bound.witness)
            lo, hi = representable_box(prop, _dtype(model))
            for candidate in bound.details.get("candidates", [])[:16]:
                point = torch.minimum(torch.maximum(candidate.to(lo.dtype).reshape(-1), lo), hi)
                ok, evaluation = check_counterexample(model, prop, point, shape)
                if ok:
                    return PropertyResult("violated", time.perf_counter() - start, method, margin,
                                          point.detach().to("cpu", torch.float64).numpy(),
                                          {k: evaluation[k] for k in ("model dtype", "float64")}, notes)
    left = timeout - (time.perf_counter() - start)
    if left > 0.5:
        point, info = pgd_counterexample(model, prop, shape, seconds=left, seed=seed + 1000)
        if point is not None:
            return PropertyResult("violated", time.perf_counter() - start, "pgd", margin,
                                  point.detach().to("cpu", torch.float64).numpy(), {k: info[k] for k in ("model dtype", "float64")}, notes)
        notes.append(f"PGD: no counterexample in {info.get('rounds')} more round(s), best loss {info.get('best'):.4g}")
    return PropertyResult("unknown", time.perf_counter() - start, method_used, margin, notes=notes)
