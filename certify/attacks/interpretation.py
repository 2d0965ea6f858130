"""Interpretation attacks: perturb an input, keeping its predicted class, so that its explanation changes.

**Attack** (Ghorbani, Abid & Zou, AAAI 2019, the "top-k" attack; run under an L2 budget as in Levine, Singla &
Feizi 2019 and the MoreauGrad paper, Section 6.4). For an explainer a(.), an input x of predicted class c,
the mask M of the k features with the largest |a(x)| (ties to the lower index, as `certify.metrics`), solve

    min_delta  J(x + delta) = sum_{i in M} |a_i(x + delta)| / sum_i |a_i(x + delta)|        (top-k mass share)
    s.t.       ||delta||_2 <= eps,   lo <= x + delta <= hi,   argmax f(x + delta) = c,

by normalised projected gradient steps x' <- P(x' - step * grad J / ||grad J||_2), where P scales the
displacement back into the ball and then clamps to the domain box (clamping moves every coordinate towards
x, since x lies in the box, so the result stays in the ball). `objective="distance"` instead maximises the
normalised L2 distance || a'/||a'|| - a/||a|| ||_2 to a = a(x) (paper eq. 6), i.e. minimises J = its negative.
The class constraint is not differentiated: every iterate is evaluated (the last one included) and per
example the iterate with the lowest J, over all steps and restarts, whose predicted class is still c is
kept. Restart 0 starts at x, the others at uniform random points of the ball. The radius used for the
steps is shrunk by a rounding margin so that the returned point is in the ball in exact arithmetic; at the
end every returned point is re-checked in float64 (distance, domain, and the predicted class both in the
input dtype and on a float64 copy of the model). An example whose best point fails a check, or where no
valid point lowered J (re-evaluated on the real explanation of the returned point), gets delta = 0 and
`success` False: the attack never returns a point that flips the class or leaves the ball or the domain.

**Differentiating through the explainer** (grad J needs d a(x')/d x'):

* `Gradient`, `IntegratedGradients` (zero baseline, the explainer's quadrature, all nodes in one batch:
  `internal_batch_size` is not applied), `SmoothGrad` (one fixed draw of noise for the whole attack, also
  used for a(x) and the returned a(x + delta)): the explanation is rebuilt with
  `torch.autograd.grad(..., create_graph=True)` (double backpropagation).
* `MoreauGrad` (vanilla, sparse, group, smoothed with one fixed noise draw): a surrogate. The real solver
  gives z*(x') (detached); then K = `surrogate_steps` proximal-gradient steps of the inner problem,
  u <- prox_{gamma eta P}(u - gamma (grad f_c(x' + u) + u / rho)) with gamma = rho / 2, are unrolled from
  u_0 = z* - x', and the surrogate explanation is -u_K / rho. Its derivative is sum_{j<K} T_u^j T_x (T the
  step map), which tends to the implicit derivative (I - T_u)^{-1} T_x of the fixed point as K grows when
  T is a contraction (rho * lambda < 1 and gamma (1/rho + beta) < 2, beta the smoothness of f_c). J and the
  selection always use the real solver's explanation, never the surrogate's value.

For ReLU networks the second derivatives of f_c vanish almost everywhere, so grad J is zero for gradient,
IG and SmoothGrad explanations (and for the MoreauGrad surrogate): `zero_gradient` reports it per example.
Where grad J is zero (or not finite) the step follows a uniform random direction instead, so the attack
degrades to a random search that keeps its best valid iterate, not to standing still; it is no longer a
gradient attack there, and the softplus models are the meaningful case.

**API** (for `certify evaluate` and the reports):

    interpretation_attack(explainer, x, eps, k=0.2, steps=20, restarts=2, step_size=None, domain=None,
                          seed=0, target=None, surrogate_steps=10, objective="topk-mass") -> AttackResult
    random_perturbation(explainer_or_model, x, eps, domain=None, seed=0, k=0.2, target=None,
                        tries=20) -> AttackResult

`k` is a count or a fraction of the features (as `certify.metrics.topk_intersection`); `domain` is a pair
(lo, hi) of floats or tensors broadcastable to one example (e.g. `Dataset.domain`); `target` is the class
explained (None: the predicted class; the class preserved is always the predicted one). `step_size`
defaults to 2.5 eps / steps (Madry et al. 2018). The random baseline draws a uniform direction on the sphere
of radius eps (then clamped to the domain, so its norm can be smaller), redrawn up to `tries` times where
the class flips. Random starts and noise come from a generator seeded by `seed` (SmoothGrad noise by the
explainer's own seed when it has one); they are drawn for the whole batch at once, so batched and
per-example runs agree only when no random draw is involved (restarts=1, deterministic explainers).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import Tensor, nn

from certify.bounds.sets import project_ball, sample_ball
from certify.errors import InvalidInputError, UnsupportedError, UsageError
from certify.explain.base import Explainer
from certify.explain.gradient import Gradient
from certify.explain.integrated_gradients import IntegratedGradients, quadrature
from certify.explain.moreaugrad import MoreauGrad
from certify.explain.smoothgrad import SmoothGrad
from certify.metrics.similarity import topk_intersection, topk_mask
from certify.scores import class_scores
from certify.validation import (
    TargetLike,
    check_eval_mode,
    evaluate_logits,
    grad_ready,
    positive_int,
    positive_number,
    resolve_target,
    validate_inputs,
    with_autograd,
)

OBJECTIVES = ("topk-mass", "distance")
Bound = Union[float, Tensor]
Domain = Union[tuple[Bound, Bound], None]


@dataclass
class AttackResult:
    """Outcome per example (tensors of length N, or [N, ...] like the inputs).

    * `perturbed` = x + delta, the point that was verified; `delta` = perturbed - x; `delta_norm` in float64.
    * `success`: the attack found a valid point with a lower J than at x; the random baseline found a draw
      that keeps the class. Elsewhere delta = 0.
    * `in_ball`, `in_domain`, `class_preserved`: the float64 checks of the returned point (always True: a
      candidate that fails one is replaced by x and counted in `rejected`).
    * `objective`, `initial_objective`: J at x + delta and at x (float64): the top-k mass share, or minus the
      normalised L2 distance to a(x), as `params["objective"]` says (the random baseline reports the top-k
      mass share). `topk_intersection`: |top-k(a(x)) & top-k(a(x + delta))| / k.
    * `zero_gradient` (attack only): every attack gradient of the example was zero (ReLU networks).
    * The explanation fields are None when `random_perturbation` was given a bare model."""

    inputs: Tensor
    perturbed: Tensor
    delta: Tensor
    delta_norm: Tensor
    predicted_class: Tensor
    target: Tensor
    success: Tensor
    in_ball: Tensor
    in_domain: Tensor
    class_preserved: Tensor
    rejected: Tensor
    original_attributions: Tensor | None = None
    attributions: Tensor | None = None
    initial_objective: Tensor | None = None
    objective: Tensor | None = None
    topk_intersection: Tensor | None = None
    zero_gradient: Tensor | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> Tensor:
        """All three checks of the returned point."""
        return self.in_ball & self.in_domain & self.class_preserved


# ---------------------------------------------------------------------------------------------- set-up
@dataclass
class _Problem:
    """Validated inputs, the classes to keep and explain, the box and the safe radius."""

    model: nn.Module
    x: Tensor
    eps: float
    radius: float  # step radius: points at this distance round to points inside the eps-ball
    lo: Tensor
    hi: Tensor
    predicted: Tensor
    target: Tensor


def _setup(model: nn.Module, x: Tensor, eps: float, domain: Domain, target: TargetLike) -> _Problem:
    x = grad_ready(validate_inputs(x), model).detach()
    check_eval_mode(model)
    eps = positive_number(eps, "eps")
    lo, hi = _domain(domain, x)
    if bool((x < lo).any() | (x > hi).any()):
        raise InvalidInputError("inputs lie outside the domain box [lo, hi]; the attack keeps x + delta in it")
    with torch.no_grad():
        logits = evaluate_logits(model, x)
    # fl(x + d) - x = d + e with |e_i| <= u |x_i + d_i|, and the cast of d adds u ||d||: keep u(||x|| + eps)
    # (+ the relative u) of room so that the rounded point is within eps in exact arithmetic. u is twice the
    # dtype's machine epsilon plus 64 float64 epsilons for the float64 norm and scaling.
    u = 2.0 * torch.finfo(x.dtype).eps + 64.0 * torch.finfo(torch.float64).eps
    largest = float(torch.linalg.vector_norm(x.double().flatten(1), dim=1).max())
    radius = (eps - u * (largest + eps)) / (1.0 + u)
    if radius <= 0.5 * eps:
        raise UsageError(f"eps = {eps!r} is below the rounding resolution of {x.dtype} inputs of norm {largest:.3g}")
    return _Problem(model, x, float(eps), radius, lo, hi, logits.argmax(dim=1), grad_ready(resolve_target(target, logits)))


def _domain(domain: Domain, x: Tensor) -> tuple[Tensor, Tensor]:
    if domain is None:
        return torch.full_like(x[:1], -math.inf), torch.full_like(x[:1], math.inf)
    if not isinstance(domain, (tuple, list)) or len(domain) != 2:
        raise UsageError("domain must be a pair (lo, hi) of numbers or tensors, or None")
    try:
        lo, hi = (torch.as_tensor(b, dtype=x.dtype, device=x.device).expand(x.shape[1:]).unsqueeze(0) for b in domain)
    except RuntimeError as exc:
        raise InvalidInputError(f"domain bounds do not broadcast to one example of shape {tuple(x.shape[1:])}") from exc
    if bool(torch.isnan(lo).any() | torch.isnan(hi).any() | (lo > hi).any()):
        raise InvalidInputError("domain bounds must satisfy lo <= hi (no NaN)")
    return lo, hi


def _rows(v: Tensor, like: Tensor) -> Tensor:
    return v.view((-1,) + (1,) * (like.dim() - 1))


def _norms(t: Tensor) -> Tensor:
    return torch.linalg.vector_norm(t.flatten(1), dim=1)


def _project(x: Tensor, point: Tensor, radius: float, lo: Tensor, hi: Tensor) -> Tensor:
    """Project point - x onto the l2 ball of `radius` (in float64), then clamp to the box [lo, hi]."""
    x64 = x.detach().double().flatten(1)
    delta = project_ball(point.detach().double().flatten(1), x64, radius, 2.0) - x64
    return torch.clamp(x + delta.view_as(x).to(x.dtype), lo, hi)


def _sphere(shape: torch.Size, like: Tensor, generator: torch.Generator) -> Tensor:
    """Uniform directions on the unit sphere, one per row."""
    v = torch.randn(shape, generator=generator, dtype=torch.float64, device=like.device)
    return (v / _rows(torch.clamp(_norms(v), min=1e-300), v)).to(like.dtype)


def _ball(like: Tensor, radius: float, generator: torch.Generator) -> Tensor:
    """Uniform points of the l2 ball of `radius` around 0, one per row of `like` (`certify.bounds.sets.sample_ball`)."""
    origin = torch.zeros(like.shape[0], like[0].numel(), dtype=torch.float64, device=like.device)
    return sample_ball(origin, radius, 2.0, 1, generator).view_as(like).to(like.dtype)


def _predict(model: nn.Module, points: Tensor) -> Tensor:
    with torch.no_grad():
        return model(points).argmax(dim=1)


# ---------------------------------------------------------------------------------------------- checks
@dataclass
class _Checks:
    in_ball: Tensor
    in_domain: Tensor
    class_preserved: Tensor

    @property
    def valid(self) -> Tensor:
        return self.in_ball & self.in_domain & self.class_preserved


def _verify(problem: _Problem, model64: nn.Module, perturbed: Tensor) -> _Checks:
    """Float64 checks of the returned points: ||perturbed - x|| <= eps, lo <= perturbed <= hi, and the predicted
    class unchanged both in the input dtype and on a float64 copy of the model (against its own class at x)."""
    x64, p64 = problem.x.double(), perturbed.double()
    in_ball = _norms(p64 - x64) <= problem.eps
    in_domain = ((perturbed >= problem.lo) & (perturbed <= problem.hi)).flatten(1).all(dim=1)
    same = _predict(problem.model, perturbed) == problem.predicted
    same64 = _predict(model64, p64) == _predict(model64, x64)
    return _Checks(in_ball, in_domain, same & same64)


# ---------------------------------------------------------------------------------------------- explanations
def _topk_mask(a: Tensor, k: int | float) -> Tensor:
    """The top-k features of |a| (`certify.metrics.topk_mask`, its tie rule and its check of k), as a float64
    mask [N, D]."""
    return topk_mask(a, k).to(torch.float64)


def topk_mass(a: Tensor, mask: Tensor) -> Tensor:
    """J = sum_{i in M} |a_i| / sum_i |a_i| per example (0 for a zero map), differentiable in a."""
    flat = a.flatten(1).abs()
    mask = mask.to(flat)
    return (flat * mask).sum(dim=1) / torch.clamp(flat.sum(dim=1), min=torch.finfo(flat.dtype).tiny)


def _normalized_distance(a: Tensor, b: Tensor) -> Tensor:
    """|| a/||a|| - b/||b|| ||_2 per example (paper eq. 6), differentiable in a and b; `certify.metrics`'s
    `normalized_l2_distance` is the detached float64 metric."""
    def unit(t: Tensor) -> Tensor:
        return t.flatten(1) / torch.clamp(_norms(t), min=torch.finfo(t.dtype).tiny).unsqueeze(1)

    return _norms(unit(a) - unit(b))


def _input_gradient(model: nn.Module, points: Tensor, target: Tensor) -> Tensor:
    """grad_x f_c at `points`, kept in the graph (create_graph=True) so it can be differentiated again."""
    if not points.requires_grad:
        points = points.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(class_scores(model, points, target).sum(), points, create_graph=True)
    return grad


def _noisy_gradient(model: nn.Module, points: Tensor, target: Tensor, noise: Tensor, scale: Tensor | float) -> Tensor:
    """(1/m) sum_j grad f_c(points + scale * noise_j), noise [B, m, ...], kept in the graph."""
    b, m = noise.shape[:2]
    shifted = (points.unsqueeze(1) + scale * noise).flatten(0, 1)
    grads = _input_gradient(model, shifted, target.repeat_interleave(m))
    return grads.view(b, m, *points.shape[1:]).mean(dim=1)


class _Differentiable:
    """The explainer's real explanation, and a version of it (or a surrogate) differentiable in the input.

    `noise` holds the fixed standard-normal draws [N, m, ...] of SmoothGrad and smoothed MoreauGrad; rows of
    a batch of restarts use the draws of their example (`rows` maps batch rows to examples)."""

    def __init__(self, explainer: Explainer, x: Tensor, seed: int, surrogate_steps: int) -> None:
        if not isinstance(explainer, (Gradient, IntegratedGradients, SmoothGrad, MoreauGrad)):
            raise UnsupportedError(
                f"no differentiable form of {type(explainer).__name__}; the attack supports Gradient, "
                "IntegratedGradients, SmoothGrad and MoreauGrad"
            )
        self.explainer, self.steps = explainer, surrogate_steps
        self.noise: Tensor | None = None
        samples = 0
        if isinstance(explainer, SmoothGrad):
            samples = explainer.samples
            seed = explainer.seed if explainer.seed is not None else seed
        elif isinstance(explainer, MoreauGrad) and explainer.smoothed:
            samples = explainer.samples
        if samples:
            generator = torch.Generator(device=x.device).manual_seed(seed)
            shape = (x.shape[0], samples, *x.shape[1:])
            self.noise = torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device)

    def explain(self, points: Tensor, target: Tensor, rows: Tensor) -> Tensor:
        """The real explanation at `points` (SmoothGrad with the fixed noise)."""
        if isinstance(self.explainer, SmoothGrad):
            return self.explainer.attribute(points, target, noise=self.noise[rows])
        return self.explainer.attribute(points, target)

    def differentiable(self, points: Tensor, target: Tensor, rows: Tensor, value: Tensor) -> Tensor:
        """A tensor in the graph of `points` (requires_grad) equal to, or a surrogate of, the explanation `value`."""
        e, model = self.explainer, self.explainer.model
        if isinstance(e, Gradient):
            return _input_gradient(model, points, target)
        if isinstance(e, IntegratedGradients):
            nodes, weights = quadrature(e.method, e.n_steps)
            alphas = torch.as_tensor(nodes, dtype=points.dtype, device=points.device)
            w = torch.as_tensor(weights, dtype=points.dtype, device=points.device)
            view = (-1, 1) + (1,) * (points.dim() - 1)
            path = (alphas.view(view) * points.unsqueeze(0)).flatten(0, 1)  # zero baseline, node-major
            grads = _input_gradient(model, path, target.repeat(e.n_steps)).view(e.n_steps, *points.shape)
            return points * (w.view(view) * grads).sum(dim=0)
        if isinstance(e, SmoothGrad):
            scale = _rows(e.noise_scale(points), points).unsqueeze(1)
            return _noisy_gradient(model, points, target, self.noise[rows], scale)
        return self._moreau_surrogate(points, target, rows, value)

    def _moreau_surrogate(self, points: Tensor, target: Tensor, rows: Tensor, value: Tensor) -> Tensor:
        """-u_K / rho after K unrolled proximal-gradient steps from the solver's u* = z* - x' = -rho MG (detached)."""
        e = self.explainer
        gamma = 0.5 * e.rho
        u = (-e.rho * value).detach()
        for _ in range(self.steps):
            if e.smoothed:
                grad = _noisy_gradient(e.model, points + u, target, self.noise[rows], e.smoothing_sigma)
            else:
                grad = _input_gradient(e.model, points + u, target)
            u = e.penalty.prox(u - gamma * (grad + u / e.rho), gamma * e.sparsity)
        return -u / e.rho


@dataclass
class _Reference:
    """The explanation a(x) that the attack moves away from, its top-k mask, and the objective J (to minimise):
    the top-k mass share, or minus the normalised L2 distance to a(x) (`objective="distance"`)."""

    oracle: _Differentiable
    attributions: Tensor
    mask: Tensor
    k: int | float
    kind: str

    def objective(self, a: Tensor, rows: Tensor) -> Tensor:
        """J of explanations `a` [B, ...] of the examples `rows`, differentiable in a (in a's dtype)."""
        if self.kind == "topk-mass":
            return topk_mass(a, self.mask[rows])
        return -_normalized_distance(a, self.attributions[rows].detach().to(a.dtype))


def _reference(
    explainer: Explainer, problem: _Problem, k: int | float, kind: str, seed: int, surrogate_steps: int
) -> _Reference:
    if kind not in OBJECTIVES:
        raise UsageError(f"objective must be one of {OBJECTIVES}, got {kind!r}")
    oracle = _Differentiable(explainer, problem.x, seed, surrogate_steps)
    examples = torch.arange(problem.x.shape[0], device=problem.x.device)
    attributions = oracle.explain(problem.x, problem.target, examples)
    return _Reference(oracle, attributions, _topk_mask(attributions, k), k, kind)


# ---------------------------------------------------------------------------------------------- attacks
@with_autograd
def interpretation_attack(
    explainer: Explainer,
    x: Tensor,
    eps: float,
    k: int | float = 0.2,
    steps: int = 20,
    restarts: int = 2,
    step_size: float | None = None,
    domain: Domain = None,
    seed: int = 0,
    target: TargetLike = None,
    surrogate_steps: int = 10,
    objective: str = "topk-mass",
) -> AttackResult:
    """The L2 top-k interpretation attack of the module docstring, batched over examples and restarts."""
    if not isinstance(explainer, Explainer):
        raise UsageError(f"explainer must be a certify Explainer, got {type(explainer).__name__}")
    for name, value, least in (("steps", steps, 0), ("restarts", restarts, 1), ("surrogate_steps", surrogate_steps, 1)):
        positive_int(value, name, least)
    if step_size is not None:
        positive_number(step_size, "step_size")
    problem = _setup(explainer.model, x, eps, domain, target)
    x, n = problem.x, problem.x.shape[0]
    step = float(step_size) if step_size is not None else 2.5 * problem.eps / max(steps, 1)
    reference = _reference(explainer, problem, k, objective, seed, surrogate_steps)
    oracle, examples = reference.oracle, torch.arange(n, device=x.device)
    initial = reference.objective(reference.attributions.double(), examples)

    rows = examples.repeat(restarts)  # restart-major: row r * n + i is example i
    base, tgt, cls = x[rows], problem.target[rows], problem.predicted[rows]
    generator = torch.Generator(device=x.device).manual_seed(seed)
    starts = _ball(base, problem.radius, generator)
    starts[:n] = 0.0  # restart 0 starts at x
    point = _project(base, base + starts, problem.radius, problem.lo, problem.hi)
    best_point, best_value = base.clone(), initial[rows].clone()
    zero_gradient = torch.ones(base.shape[0], dtype=torch.bool, device=x.device)
    for t in range(steps + 1):
        point = point.detach().requires_grad_(t < steps)
        value = oracle.explain(point.detach(), tgt, rows)
        current = reference.objective(value.detach().double(), rows)
        valid = torch.isfinite(current) & (_predict(problem.model, point.detach()) == cls)
        better = valid & (current < best_value)
        best_point = torch.where(_rows(better, base), point.detach(), best_point)
        best_value = torch.where(better, current, best_value)
        if t == steps:
            break
        with torch.enable_grad():
            surrogate = oracle.differentiable(point, tgt, rows, value)
            (grad,) = torch.autograd.grad(reference.objective(surrogate, rows).sum(), point)
        norm = _norms(grad.double())
        moving = torch.isfinite(norm) & (norm > 0)
        zero_gradient &= ~moving
        unit = (grad.double() / _rows(torch.clamp(norm, min=1e-300), grad)).to(grad.dtype)
        direction = torch.where(_rows(moving, grad), unit, _sphere(grad.shape, grad, generator))
        point = _project(base, point.detach() - step * direction, problem.radius, problem.lo, problem.hi)

    choice = best_value.view(restarts, n).argmin(dim=0)  # first restart on ties
    pick = choice * n + examples
    perturbed, improved = best_point[pick], best_value[pick] < initial
    params = {"attack": "explanation-l2", "objective": objective, "eps": problem.eps, "k": k, "steps": steps,
              "restarts": restarts, "step_size": step, "seed": seed, "surrogate_steps": surrogate_steps,
              "method": explainer.method_name}
    result = _finish(problem, perturbed, improved, reference, params, require_improvement=True)
    result.zero_gradient = zero_gradient.view(restarts, n).all(dim=0)
    return result


@with_autograd
def random_perturbation(
    explainer_or_model: Explainer | nn.Module,
    x: Tensor,
    eps: float,
    domain: Domain = None,
    seed: int = 0,
    k: int | float = 0.2,
    target: TargetLike = None,
    tries: int = 20,
) -> AttackResult:
    """The weak baseline: x + eps * v with v uniform on the unit sphere, clamped to the domain, with v redrawn
    (up to `tries` times) for the examples whose class flips; delta = 0 and success False where all flip."""
    positive_int(tries, "tries")
    explainer = explainer_or_model if isinstance(explainer_or_model, Explainer) else None
    model = explainer.model if explainer is not None else explainer_or_model
    if not isinstance(model, nn.Module):
        raise UsageError(f"expected an Explainer or a torch.nn.Module, got {type(explainer_or_model).__name__}")
    problem = _setup(model, x, eps, domain, target)
    x = problem.x
    generator = torch.Generator(device=x.device).manual_seed(seed)
    perturbed, found = x.clone(), torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(tries):
        draw = x + problem.radius * _sphere(x.shape, x, generator)
        candidate = _project(x, draw, problem.radius, problem.lo, problem.hi)
        take = ~found & (_predict(model, candidate) == problem.predicted)
        perturbed = torch.where(_rows(take, x), candidate, perturbed)
        found |= take
        if bool(found.all()):
            break
    params = {"attack": "random-sphere", "eps": problem.eps, "k": k, "tries": tries, "seed": seed,
              "method": explainer.method_name if explainer is not None else None}
    reference = None if explainer is None else _reference(explainer, problem, k, "topk-mass", seed, 1)
    return _finish(problem, perturbed, found, reference, params, require_improvement=False)


def _finish(
    problem: _Problem,
    perturbed: Tensor,
    found: Tensor,
    reference: _Reference | None,
    params: dict[str, Any],
    require_improvement: bool,
) -> AttackResult:
    """Verify the candidates in float64, reset failures to x, explain the returned points and, with
    `require_improvement`, also reset the examples whose real objective J is not below the one at x."""
    x = problem.x
    model64 = copy.deepcopy(problem.model).double()
    candidate = _verify(problem, model64, perturbed)
    rejected = found & ~candidate.valid
    success = found & candidate.valid
    attributions = initial = objective = overlap = None
    if reference is not None:
        examples = torch.arange(x.shape[0], device=x.device)
        attributions = reference.oracle.explain(perturbed, problem.target, examples)
        initial = reference.objective(reference.attributions.double(), examples)
        objective = reference.objective(attributions.double(), examples)
        if require_improvement:
            success &= objective < initial
        attributions = torch.where(_rows(success, x), attributions, reference.attributions)
        objective = torch.where(success, objective, initial)
        overlap = topk_intersection(reference.attributions, attributions, reference.k)
    perturbed = torch.where(_rows(success, x), perturbed, x)
    final = _verify(problem, model64, perturbed)  # the returned points (x itself where nothing was kept)
    return AttackResult(
        inputs=x, perturbed=perturbed, delta=perturbed - x, delta_norm=_norms(perturbed.double() - x.double()),
        predicted_class=problem.predicted, target=problem.target, success=success, in_ball=final.in_ball,
        in_domain=final.in_domain, class_preserved=final.class_preserved, rejected=rejected,
        original_attributions=None if reference is None else reference.attributions, attributions=attributions,
        initial_objective=initial, objective=objective,
        topk_intersection=overlap, params=params,
    )
