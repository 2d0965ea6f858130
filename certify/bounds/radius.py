"""Certified lower bounds on the minimal decision-flipping radius

    r*(x) = inf { ||x' - x||_p : x' in the domain, argmax f(x') != c }

by bisection on eps (DESIGN section 5; ANCHORS 4.10, lesson 1: a single relaxation over a large ball
certifies almost nothing, so every eps recomputes all intermediate bounds), between 0 and the distance
of the nearest decision flip that a cheap gradient-direction search finds (no sound method certifies
beyond it). eps is certified when every margin lower bound f_c - f_j (j != c) over the eps-set is > 0;
then no x' in the closed eps-ball flips the decision, so r* > eps. Bisection keeps the largest certified
eps, so the result is sound whatever the monotonicity of the relaxation in eps. Batched over examples
for IBP and CROWN; the LP (a solver per example) starts from the CROWN radius, since with LP-tightened
boxes it is never looser.

Also the global-Lipschitz radius: if f_c - f_j is L_cj-Lipschitz in the p-norm, r* >= min_j m_cj(x) / L_cj.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from certify.bounds.crown import margin_bounds_on_set, margin_spec

# A certified radius is a claim users compare: its bisection uses CROWN's own (adaptive) boxes, about 10% larger
# radii on mnistfc inputs than the one-pass parallel boxes, at about twice their cost (still well under the
# 0.5 s per input target); each margin is the better of the two slope rules on those boxes either way.
RADIUS_SLOPES = "adaptive"
from certify.bounds.lp import LPVerifier
from certify.bounds.network import AffineNetwork
from certify.bounds.results import BoundResult, Kind
from certify.bounds.sets import InputSet, rounding_margin
from certify.errors import UsageError
from certify.validation import check_target

RADIUS_METHODS = ("crown", "ibp", "lp")


def _default_max_radius(input_set: InputSet) -> float:
    """The p-diameter of the domain box (a larger ball adds no point of the domain) if finite, else 1e3."""
    if input_set.lo is None:
        return 1e3
    diameter = float(torch.linalg.vector_norm(input_set.hi - input_set.lo, ord=input_set.p))
    return (diameter or 1e-12) if math.isfinite(diameter) else 1e3


def _flip_distance(net: AffineNetwork, base: InputSet, target: Tensor, top: float, steps: int = 24) -> Tensor:
    """An upper bracket [N] for every sound certified radius: the p-distance of the nearest decision flip found
    along the steepest-descent direction of the worst margin (`top` where none is found). A flip at distance d
    (some f_j(x') > f_c(x') in float64) means no eps >= d can be certified, so bisection needs only [0, d];
    the bracket affects how long the search takes and never what it certifies (`_bisect` keeps certified eps
    only). One gradient and `steps` batched forward passes, at the radii top 2^-i (points clipped to the
    domain box, which only moves them closer to x)."""
    x = base.center.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = net.forward(x)
        rival = logits.masked_fill(torch.nn.functional.one_hot(target, logits.shape[1]).bool(), -float("inf"))
        (grad,) = torch.autograd.grad((logits.gather(1, target[:, None])[:, 0] - rival.max(1).values).sum(), x)
    if base.p == math.inf:
        direction = -grad.sign()
    elif base.p == 2.0:
        direction = -grad / torch.linalg.vector_norm(grad, dim=-1, keepdim=True).clamp_min(1e-300)
    else:
        direction = -grad.sign() * torch.nn.functional.one_hot(grad.abs().argmax(-1), grad.shape[1]).to(grad.dtype)
    nearest = torch.full_like(base.eps, top)
    with torch.no_grad():
        for i in range(steps):  # one radius at a time: memory [N, n]
            point = base.center + top * 2.0**-i * direction
            if base.lo is not None:
                point = torch.maximum(torch.minimum(point, base.hi), base.lo)
            out = net.forward(point)
            flipped = (out > out.gather(1, target[:, None])).any(-1)
            distance = torch.linalg.vector_norm(point - base.center, ord=base.p, dim=-1)
            nearest = torch.where(flipped, torch.minimum(nearest, distance), nearest)
    return nearest


def _bisect(certify, lo: Tensor, hi: Tensor, tol: float) -> Tensor:
    """Largest certified eps found by bisection; `certify(eps, active) -> bool [N]` for the active examples."""
    steps = max(1, math.ceil(math.log2(float((hi - lo).max()) / tol))) if (hi > lo).any() else 0
    for _ in range(steps):
        active = (hi - lo) > tol
        if not active.any():
            break
        mid = (lo + hi) / 2
        ok = certify(mid, active)
        lo = torch.where(active & ok, mid, lo)
        hi = torch.where(active & ~ok, mid, hi)
    return lo


def certified_radius(
    net: AffineNetwork,
    x: Tensor,
    target: Tensor,
    p: float | int | str,
    method: str = "crown",
    domain: tuple[Tensor, Tensor] | None = None,
    tol: float = 1e-4,
    max_radius: float | None = None,
) -> BoundResult:
    """Certified lower bounds [N] on r* (0 where nothing is certified, e.g. a misclassified input), to
    within `tol` of the largest eps the method certifies in [0, max_radius] (searched below the nearest flip
    `_flip_distance` finds, beyond which no eps can be certified)."""
    if method not in RADIUS_METHODS:
        raise UsageError(f"unknown radius method {method!r}; choose one of {RADIUS_METHODS}")
    if not tol > 0:
        raise UsageError("tol must be positive")
    net = net.to(x.device)
    base = InputSet.build(x, 0.0, p, domain)
    target = check_target(target, x.shape[0], net.num_classes).to(base.center.device)
    top = _default_max_radius(base) if max_radius is None else float(max_radius)
    if not (top > 0 and math.isfinite(top)):
        raise UsageError(f"max_radius must be positive and finite, got {top}")

    def crown_ok(eps: Tensor, _active: Tensor, how: str = "crown") -> Tensor:
        values, _ = margin_bounds_on_set(net, base.with_eps(eps), target, how, slopes=RADIUS_SLOPES)
        return (values > 0).all(-1)

    zero = torch.zeros_like(base.eps)
    correct = crown_ok(zero, torch.ones_like(zero, dtype=torch.bool))
    start_hi = torch.where(correct, _flip_distance(net, base, target, top).clamp(max=top), zero)
    details: dict = {"tol": tol, "max_radius": top, "correct_at_x": correct}
    if method in ("crown", "ibp"):
        radius = _bisect(lambda e, a: crown_ok(e, a, method), zero, start_hi, tol)
        _, witness = margin_bounds_on_set(net, base.with_eps(radius), target, method, slopes=RADIUS_SLOPES)
    else:
        verifier = LPVerifier(net, base.p)  # refuses (UnsupportedError) before any work: ReLU networks only
        crown_radius = _bisect(crown_ok, zero, start_hi, tol)
        witness = {"per_example": [None] * x.shape[0]}
        failures: list[dict] = []

        def lp_ok(eps: Tensor, active: Tensor) -> Tensor:
            ok = torch.zeros_like(active)
            for i in torch.nonzero(active).reshape(-1).tolist():
                one = InputSet(base.center[i : i + 1], eps[i : i + 1], base.p, base.lo, base.hi)
                values, wit = verifier.margin_bounds(one, target[i : i + 1])
                if torch.isnan(values).any():
                    failures.append({"example": i, "eps": float(eps[i]), "status": wit[0]["status"]})
                ok[i] = bool((values > 0).all())
                if ok[i]:
                    witness["per_example"][i] = wit[0]
            return ok

        radius = _bisect(lp_ok, crown_radius, torch.where(correct, start_hi, crown_radius), tol)
        details.update({"crown_radius": crown_radius, "solver_failures": failures})
    return BoundResult(
        value=radius,
        kind=Kind.CERTIFIED,
        method=f"{method}-bisection",
        assumptions=[base.describe().replace("radius eps", "radius r"), "bounds hold for the float64 network"],
        witness=witness,
        details=details,
    )


def lipschitz_radius(
    net: AffineNetwork,
    x: Tensor,
    target: Tensor,
    margin_lipschitz: Tensor | float,
) -> BoundResult:
    """r* >= min_{j != c} m_cj(x) / L_cj (0 where the margin is <= 0), given certified Lipschitz constants
    of the margins in the chosen p-norm: a scalar bound for all pairs, or a [K, K] table."""
    net = net.to(x.device)
    flat = x.detach().reshape(x.shape[0], -1).to(torch.float64)
    target = check_target(target, flat.shape[0], net.num_classes).to(flat.device)
    constants = torch.as_tensor(margin_lipschitz, dtype=torch.float64, device=flat.device)
    if (constants < 0).any() or not torch.isfinite(constants).all():
        raise UsageError("Lipschitz constants must be finite and >= 0")
    constants = constants.expand(net.num_classes, net.num_classes)[target]
    spec = margin_spec(target, net.num_classes)
    base = InputSet.build(x, 0.0, 2)
    margins, _ = margin_bounds_on_set(net, base, target, "ibp")  # the exact margins, rounded downwards
    ratio = margins.clamp(min=0) / constants
    ratio = torch.nan_to_num(ratio, nan=0.0) * (1 - rounding_margin(torch.ones_like(ratio), 2))
    ratio = ratio.masked_fill(spec.abs().sum(-1) == 0, float("inf"))
    return BoundResult(
        value=ratio.min(-1).values,
        kind=Kind.CERTIFIED,
        method="lipschitz-margin",
        assumptions=["the given margin Lipschitz constants are certified for the chosen norm"],
    )
