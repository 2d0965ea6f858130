"""MoreauGrad (Zhang & Farnia, Sections 4-5, Algorithm 1): vanilla, sparse, group-sparse and Gaussian-smoothed,
batched over inputs, returning the iterate and residual a solver-error bound needs (DESIGN section 4.1).

For input x and class c the explanation is the gradient of the Moreau envelope of the logit f_c,

    MG_rho(x) = grad f_c^rho(x) = (x - z*) / rho,   z* = argmin_z F_x(z),
    F_x(z) = f_c(z) + ||z - x||^2 / (2 rho) + eta * P(z - x)                      (Theorem 1(2), Def. 4-5)

with P = 0, ||.||_1 or a group norm (see `certify.explain.prox`). In smoothed ("regularized") mode f_c is
replaced by h(z) = E f_c(z + sigma Z), Z ~ N(0, I), estimated by a mean over fresh draws at every iterate.

Sign and scale (DESIGN section 9): the package follows Theorem 1(2), MG = (x - z)/rho, which tends to
grad f_c(x) as rho -> 0. The paper's Algorithm 1 outputs (x_T - x)/rho = -MG, and the public code
(buyeah1109/MoreauGrad) returns the mean of the last ~100 iterates of z - x without the 1/rho, so
official_output ~= -rho * MG. Algorithm 1's update x_{t+1} = (1 - gamma/rho) x_t - gamma (g_t - x/rho) is the
gradient step u <- u - gamma (grad f_c(x + u) + u/rho) on the displacement u = x_t - x, followed in sparse
mode by u <- ST_{gamma eta}(u): `method="fixed-step"` is exactly that, with u_0 = 0 and step gamma.

`method="accelerated"`: FISTA (Beck & Teboulle 2009) on the same composite problem, with the gradient
restart of O'Donoghue & Candes (2015) (momentum reset when <y_k - u_{k+1}, u_{k+1} - u_k> > 0), which keeps
the linear rate of strongly convex problems without knowing mu = 1/rho - lambda. The step is
gamma_k = 1 / (1/rho + beta_k), where beta_k is the largest secant curvature ||grad f(y_j) - grad f(y_{j-1})||
/ ||y_j - y_{j-1}|| seen so far for that example: a lower estimate of the local smoothness constant that
costs no extra gradient (backtracking would need function values at trial points, i.e. extra forward
passes per iteration). The first step (beta_0 = 0) is the first-order guess u = prox(-rho grad f(x)).
In smoothed mode secants are dominated by the sampling noise, so beta is instead the Stein bound
sqrt(2/pi) L_hat / sigma on the curvature of h (paper Proposition 1 refined, DESIGN section 9), with L_hat the
largest sample-gradient norm seen. None of this affects soundness: the certificate rests only on the
residual at the returned point.

Stopping: per example, when the residual ||r|| (the minimal-norm subgradient of F_x at the iterate,
computed from the gradient already evaluated there) is <= tol, after max_iter steps, or when the work budget
`max_evaluations` (gradient evaluations per example, each Monte Carlo sample counting one) is spent. Finished
examples leave the active set, so they cost no further gradient evaluations. A non-finite iterate or gradient
marks the example as diverged; its attributions are NaN, never an explanation. In smoothed mode the residual
is an estimate with standard error nu (from the sample spread): an example stops when ||r|| + 2 nu <= tol,
and the sample size doubles (up to 64 times `samples`) whenever an active example's residual is within 2 nu,
i.e. at the noise floor of the stochastic iteration; with a budget, an iteration draws at most the
evaluations left, so a run never does more work than it was given.

Cost (issue 18): the iteration state is kept as [N, D] rows and updated with fused kernels (add with alpha,
addcmul, one row-norm per quantity, the FISTA weights (t_k - 1)/t_{k+1} read from a table instead of
recomputed, the secant ratio and 1/rho added in one addcdiv), with the per-solve constants held as tensors so
that no operation wraps a Python number: 22 small tensor operations besides the gradient, 12 of them over
[N, D]; the stopping test reads the smallest and largest residual once per iteration (one host read that
also detects a non-finite value, since an Inf or NaN in the iterate or the gradient makes its residual
non-finite), and the per-example bookkeeping runs only on iterations where some example finishes. Each
operation costs a few microseconds on CPU whatever its size, so on small models (a 64-64-10 MLP at batch
128) the update costs about 0.7 of a gradient evaluation; `benchmarks/moreaugrad.py` measures it.

Solver error (DESIGN section 4.1): if f_c is lambda-weakly convex and rho < 1/lambda, F_x is (1/rho - lambda)-
strongly convex, so ||z - z*|| <= ||r|| / (1/rho - lambda) for any subgradient r at z, and
||MG_computed - MG|| <= ||r|| / (1 - rho lambda) in all three modes. This layer only computes explanations
(and returns z and the residual in the diagnostics); the certified bound is issued above it, by the
`solver-error` claim (`certify.certificates.issuers.moreaugrad`, formula `certify.bounds.stability.solver_error`).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import torch
from torch import Tensor, nn

from certify.bounds.curvature import weak_convexity
from certify.bounds.lipschitz import lipschitz_product
from certify.bounds.local import choose_rho
from certify.bounds.network import from_module
from certify.errors import InvalidInputError, UnsupportedError, UsageError
from certify.explain.base import Explainer, Explanation
from certify.explain.prox import Penalty, check_groups
from certify.scores import score_gradients
from certify.validation import nonnegative_number, positive_int, positive_number
from certify.vocabulary import STEIN_CONSTANT

Method = Literal["accelerated", "fixed-step"]
MAX_SAMPLE_GROWTH = 64
CHUNK_ROWS, CHUNK_ELEMENTS = 4096, 2**20  # smoothed mode: noisy points per batched gradient evaluation


@dataclass
class _Gradient:
    """grad f_c (or its Monte Carlo estimate) at the active points, with the sampling statistics."""

    value: Tensor
    noise: Tensor | None = None  # standard error of the mean, per example (smoothed mode)
    max_norm: Tensor | None = None  # largest single-sample gradient norm, per example (smoothed mode)


@dataclass
class _ActiveSet:
    """Solver state of the examples still running, rows flattened to [M, D]; `index` maps rows back to the
    batch."""

    index: Tensor
    x: Tensor
    target: Tensor
    u: Tensor  # prox iterate u_k = z_k - x
    y: Tensor  # point where the gradient is evaluated (u_k plus momentum)
    age: Tensor  # FISTA: steps since the last momentum restart, so that t_k = T[age] (`_momentum_weights`)
    inverse_step: Tensor  # [M, 1]: 1/rho + beta_k, with beta_k the smoothness estimate of f_c
    best_y: Tensor
    best_residual: Tensor
    prev_y: Tensor
    prev_grad: Tensor

    def keep(self, mask: Tensor) -> "_ActiveSet":
        rows = mask.nonzero().squeeze(1)
        return replace(self, **{f.name: getattr(self, f.name).index_select(0, rows) for f in fields(self)})


def _row_norms(t: Tensor, keepdim: bool = False) -> Tensor:
    return torch.linalg.vector_norm(t, dim=1, keepdim=keepdim)


@dataclass(frozen=True)
class _Constants:
    """Per-solve constants of the iteration, as tensors on the input's device, so that no operation of the loop
    wraps a Python number: FISTA's weight table [L, 1] (`_momentum_weights`), 1/rho, 0 and 1 (long)."""

    weights: Tensor
    inverse_rho: Tensor
    zero: Tensor
    one: Tensor


@functools.lru_cache(maxsize=8)
def _momentum_weights(length: int) -> tuple[float, ...]:
    """FISTA's extrapolation weights W[a] = (T[a-1] - 1) / T[a] for a >= 1 and W[0] = 0 (restart), where
    T[0] = 1, T[a+1] = (1 + sqrt(1 + 4 T[a]^2)) / 2 (Beck & Teboulle 2009): after `a` steps without a
    restart the momentum step is y = u_{k+1} + W[a] (u_{k+1} - u_k)."""
    t, weights = 1.0, [0.0]
    for _ in range(length - 1):
        t_next = 0.5 + math.sqrt(0.25 + t * t)
        weights.append((t - 1.0) / t_next)
        t = t_next
    return tuple(weights)


class AutoRho:
    """rho = "auto" (DESIGN section 11): per example, the rho of certify.bounds.local.RHO_GRID minimising
    Corollary 1's certified stability bound at l2 radius `eps` with local constants
    (certify.bounds.local.choose_rho; global l2 Lipschitz constant and weak convexity from certify.bounds). Examples with no admissible rho
    (or a model whose bounds are refused, e.g. a ReLU network) get FALLBACK_RHO; the certificate then refuses."""

    FALLBACK_RHO = 1.0

    def __init__(self, eps: float) -> None:
        self.eps = eps

    def __call__(self, model: nn.Module, inputs: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(rho [N] float64, chosen [N] bool: False where FALLBACK_RHO was used)."""
        fallback = torch.full((inputs.shape[0],), self.FALLBACK_RHO, dtype=torch.float64)
        try:
            net = from_module(model, tuple(inputs.shape[1:]))
            rows = torch.nn.functional.one_hot(target.cpu(), net.num_classes).to(torch.float64)
            per_class = {}
            for c in sorted(set(target.tolist())):
                row = rows[target.cpu() == c][0]
                lam = weak_convexity(net, row)
                per_class[c] = (float(lipschitz_product(net, 2, row[None]).value[0]), math.inf if lam.refused else float(lam.value))
            lip, lam = (torch.tensor(v, dtype=torch.float64) for v in zip(*(per_class[c] for c in target.tolist())))
            choice = choose_rho(net, inputs.detach().cpu().double(), rows, self.eps, lip, lam)
        except UnsupportedError:
            return fallback, torch.zeros(inputs.shape[0], dtype=torch.bool)
        chosen = ~torch.isnan(choice.rho)
        return torch.where(chosen, choice.rho, fallback), chosen


class MoreauGrad(Explainer):
    """MoreauGrad explanations MG = (x - z*)/rho (see the module docstring for the maths and the solver).

    Parameters: `rho` > 0 (envelope parameter), `sparsity` = eta >= 0 (L1 weight, or group weight when
    `group_size` is set), `group_size` (groups: group_size x group_size patches for [N, C, H, W] inputs,
    contiguous blocks otherwise; must divide the input), `smoothing_sigma` >= 0 (absolute noise std of
    the smoothed mode; 0 = off), `samples` >= 1 (initial Monte Carlo sample size), `step` (gamma; default
    0.1 as in the paper for fixed-step, adaptive for accelerated), `max_iter`, `tol` > 0 (residual
    tolerance; float32 rounding floors the residual near 1e-6 on the digits models, so use float64 below that), `method`, `seed` (noise generator; None uses the global one),
    `max_evaluations` (work budget: gradient evaluations per example, each Monte Carlo sample counting one;
    None = unbounded; at least `samples` in smoothed mode; UsageError otherwise).

    `explain()` diagnostics, one entry per example: `inputs` (x), `z` (the returned point; x - rho * MG),
    `residual_norm` (||r|| at z; inf if diverged), `iterations` (steps taken), `converged` (tolerance met),
    `diverged` (non-finite iterate or gradient: attributions NaN), `gradient_evaluations` (the work done:
    gradients of f_c, counting each Monte Carlo sample; at most `max_evaluations`), and in smoothed mode
    `final_samples` (the sample size reached)."""

    method_name = "moreaugrad"

    def __init__(
        self,
        model: nn.Module,
        rho: float | str = 1.0,
        sparsity: float = 0.0,
        group_size: int | None = None,
        smoothing_sigma: float = 0.0,
        samples: int = 32,
        step: float | None = None,
        max_iter: int = 500,
        tol: float = 1e-5,
        method: Method = "accelerated",
        seed: int | None = None,
        eps: float = 0.1,
        max_evaluations: int | None = None,
    ) -> None:
        super().__init__(model)
        self.rho_auto = None
        if rho == "auto":
            positive_number(eps, "eps")
            self.rho_auto, rho = AutoRho(float(eps)), math.nan
        else:
            positive_number(rho, "rho")
        positive_number(tol, "tol")
        nonnegative_number(sparsity, "sparsity")
        nonnegative_number(smoothing_sigma, "smoothing_sigma")
        positive_int(samples, "samples")
        positive_int(max_iter, "max_iter")
        if step is not None:
            positive_number(step, "step")
        if max_evaluations is not None:
            least = samples if smoothing_sigma > 0 else 1
            positive_int(max_evaluations, "max_evaluations", least)  # a smoothed run affords its first sample
        if method not in ("accelerated", "fixed-step"):
            raise UsageError(f"method must be 'accelerated' or 'fixed-step', got {method!r}")
        if group_size is not None:
            check_groups((1, group_size), group_size)  # type and sign only; divisibility at explain time
            if not sparsity > 0:
                raise UsageError(f"group_size = {group_size} needs sparsity > 0 (the weight eta of the group penalty); "
                                 "with sparsity 0 the explanation is vanilla MoreauGrad")
        self.rho, self.sparsity, self.group_size = float(rho), float(sparsity), group_size
        self.eps = float(eps)
        self.smoothing_sigma, self.samples = float(smoothing_sigma), samples
        self.step = None if step is None else float(step)
        self.max_iter, self.tol, self.method, self.seed = max_iter, float(tol), method, seed
        self.max_evaluations = max_evaluations
        self.penalty = Penalty("none") if sparsity == 0 else Penalty("group" if group_size else "l1", group_size)

    @property
    def smoothed(self) -> bool:
        return self.smoothing_sigma > 0

    def params(self) -> dict[str, Any]:
        return {
            "rho": "auto" if self.rho_auto is not None else self.rho,
            "eps": self.eps,
            "sparsity": self.sparsity,
            "group_size": self.group_size,
            "smoothing_sigma": self.smoothing_sigma,
            "samples": self.samples,
            "step": self.step,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "method": self.method,
            "seed": self.seed,
            "max_evaluations": self.max_evaluations,
            "penalty": self.penalty.kind,
        }

    # ------------------------------------------------------------------ gradient oracle
    def _gradient(
        self, model: nn.Module, points: Tensor, target: Tensor, samples: int, generator: torch.Generator | None
    ) -> _Gradient:
        """grad f_c at `points`, or in smoothed mode the mean of grad f_c(points + sigma Z_i) over `samples`
        fresh draws, in chunks of at most CHUNK_ROWS rows and CHUNK_ELEMENTS input entries, so that memory
        stays bounded and a chunk's activations stay in cache (larger batches cost more per row on CPU)."""
        if not self.smoothed:
            return _Gradient(score_gradients(model, points, target)[1])
        n = points.shape[0]
        per_chunk = max(1, min(CHUNK_ROWS, CHUNK_ELEMENTS // points[0].numel()) // n)
        total = torch.zeros_like(points)
        square_sum = points.new_zeros(n)
        max_norm = points.new_zeros(n)
        done = 0
        while done < samples:
            b = min(per_chunk, samples - done)
            noise = torch.randn((b,) + tuple(points.shape), generator=generator, device=points.device, dtype=points.dtype)
            noisy = (points.unsqueeze(0) + self.smoothing_sigma * noise).reshape((b * n,) + tuple(points.shape[1:]))
            _, grads = score_gradients(model, noisy, target.repeat(b))
            grads = grads.view((b,) + tuple(points.shape))
            norms = grads.flatten(2).norm(dim=2)  # [b, n]
            total += grads.sum(dim=0)
            square_sum += norms.square().sum(dim=0)
            max_norm = torch.maximum(max_norm, norms.max(dim=0).values)
            done += b
        mean = total / samples
        spread = torch.clamp(square_sum - samples * _row_norms(mean.flatten(1)).square(), min=0.0)
        noise_level = (spread / (samples * max(samples - 1, 1))).sqrt()
        return _Gradient(mean, noise_level, max_norm)

    # ------------------------------------------------------------------ solver
    def _explain(self, inputs: Tensor, target: Tensor) -> Explanation:
        if self.penalty.kind == "group":
            check_groups(inputs.shape, self.group_size)
        if self.rho_auto is None:
            attributions, diagnostics = self._solve(inputs, target, self.rho)
            return Explanation(attributions, target, self.method_name, self.params(), diagnostics)
        choice, chosen = self.rho_auto(self.model, inputs, target)  # [N] rho per example
        attributions = torch.empty_like(inputs)
        parts: dict[str, Tensor] = {}
        for rho in sorted(set(choice.tolist())):  # one solve per distinct rho of the grid, not per example
            rows = torch.nonzero(choice == rho).flatten()
            part, diag = self._solve(inputs[rows], target[rows], rho)
            attributions[rows] = part
            for key, value in diag.items():
                if key not in parts:
                    parts[key] = torch.empty((inputs.shape[0],) + tuple(value.shape[1:]), dtype=value.dtype, device=value.device)
                parts[key][rows] = value
        parts["rho"], parts["rho_chosen"] = choice, chosen  # float64: the exact value the claims state
        return Explanation(attributions, target, self.method_name, self.params(), parts)

    def _solve(self, inputs: Tensor, target: Tensor, rho: float) -> tuple[Tensor, dict[str, Tensor]]:
        """(attributions, diagnostics) of `inputs` with one rho (the class docstring's solver)."""
        x = inputs.detach()
        n, shape = x.shape[0], tuple(x.shape[1:])
        smoothed, accelerated = self.smoothed, self.method == "accelerated"
        generator = None
        if self.seed is not None:
            generator = torch.Generator(device=x.device).manual_seed(self.seed)
        constants = _Constants(
            weights=torch.tensor(_momentum_weights(self.max_iter + 2), dtype=x.dtype, device=x.device).unsqueeze(1),
            inverse_rho=x.new_tensor(1.0 / rho), zero=x.new_tensor(0.0),
            one=torch.ones((), dtype=torch.long, device=x.device),
        )
        budget = math.inf if self.max_evaluations is None else self.max_evaluations
        least_cost = min(2, self.samples) if smoothed else 1  # a smoothed iteration needs 2 draws for its noise level

        flat = x.reshape(n, -1)
        out_u = torch.full_like(flat, math.nan)
        out_residual = x.new_full((n,), math.inf)
        iterations = torch.zeros(n, dtype=torch.long, device=x.device)
        evaluations = torch.zeros(n, dtype=torch.long, device=x.device)
        converged = torch.zeros(n, dtype=torch.bool, device=x.device)
        diverged = torch.zeros(n, dtype=torch.bool, device=x.device)
        zeros = torch.zeros_like(flat)
        state = _ActiveSet(
            index=torch.arange(n, device=x.device), x=flat, target=target, u=zeros, y=zeros,
            age=torch.zeros(n, dtype=torch.long, device=x.device), inverse_step=x.new_full((n, 1), 1.0 / rho),
            best_y=zeros, best_residual=x.new_full((n,), math.inf), prev_y=zeros, prev_grad=zeros,
        )
        samples, spent = self.samples, 0
        for k in range(self.max_iter + 1):
            cost = min(samples, budget - spent) if smoothed else 1
            grad = self._gradient(self.model, (state.x + state.y).view((-1,) + shape), state.target, cost, generator)
            spent += cost  # every active example has had the same evaluations
            g = grad.value.reshape(state.y.shape)
            smooth_grad = torch.add(g, state.y, alpha=1.0 / rho)
            residual = _row_norms(self._minimal_subgradient(smooth_grad, state.y, shape))
            margin = 2.0 * grad.noise if smoothed else None
            stopping = residual + margin if smoothed else residual
            if accelerated:  # return the evaluated point with the smallest residual (NaN is never smaller)
                better = residual < state.best_residual
                state.best_residual = torch.fmin(state.best_residual, residual)
                state.best_y = torch.where(better.unsqueeze(1), state.y, state.best_y)
            else:  # Algorithm 1 returns its last iterate
                state.best_y, state.best_residual = state.y, residual
            lowest, highest = torch.aminmax(stopping)  # the iteration's one host read: a tolerance met, or Inf/NaN
            last = k == self.max_iter or budget - spent < least_cost
            running = None
            if last or not (float(lowest) > self.tol and float(highest) < math.inf):
                finite = torch.isfinite(residual)  # a non-finite iterate or gradient makes the residual non-finite
                done_converged = finite & (stopping <= self.tol)
                finished = torch.ones_like(finite) if last else done_converged | ~finite
                count = int(finished.sum())
                if count:
                    rows = state.index[finished]
                    out_u[rows] = torch.where(finite[finished].unsqueeze(1), state.best_y[finished], math.nan)
                    out_residual[rows] = torch.where(finite[finished], state.best_residual[finished], math.inf)
                    iterations[rows] = k
                    evaluations[rows] = spent
                    converged[rows] = done_converged[finished]
                    diverged[rows] = ~finite[finished]
                    if count == finished.shape[0]:
                        break
                    running = ~finished
            if smoothed:
                floor = residual <= margin
                if bool((floor if running is None else floor & running).any()):
                    samples = min(2 * samples, MAX_SAMPLE_GROWTH * self.samples)
            self._step(state, grad, g, smooth_grad, k > 0, rho, constants, shape)
            if running is not None:
                state = state.keep(running)

        at_input = diverged & (iterations == 0)
        if bool(at_input.any()):
            rows = torch.nonzero(at_input).flatten().tolist()
            raise InvalidInputError(
                f"moreaugrad: the model's gradient is NaN or Inf at the input of examples {rows[:10]} (in smoothed "
                "mode: at its first noisy samples) although its logits are finite (e.g. sqrt or log at 0); no "
                "explanation is returned for such inputs"
            )
        z = x + out_u.view(x.shape)
        attributions = (x - z) / rho
        diagnostics = {
            "inputs": x,
            "z": z,
            "residual_norm": out_residual,
            "iterations": iterations,
            "converged": converged,
            "diverged": diverged,
            "gradient_evaluations": evaluations,
        }
        if smoothed:
            diagnostics["final_samples"] = torch.full((n,), samples, dtype=torch.long, device=x.device)
        return attributions, diagnostics

    def _minimal_subgradient(self, smooth_grad: Tensor, u: Tensor, shape: tuple[int, ...]) -> Tensor:
        """The minimal-norm subgradient of F_x at rows u [M, D] given grad s(u) (`certify.explain.prox`)."""
        if self.penalty.kind == "none":
            return smooth_grad
        view = (-1,) + shape  # the penalty's groups are defined on the input's shape
        return self.penalty.minimal_subgradient(smooth_grad.view(view), u.view(view), self.sparsity).reshape(u.shape)

    def _step(self, state: _ActiveSet, grad: _Gradient, g: Tensor, smooth_grad: Tensor, has_secant: bool, rho: float,
              constants: _Constants, shape: tuple[int, ...]) -> None:
        """One proximal gradient step from y (u_next = prox(y - gamma grad s(y))), then FISTA's momentum with
        gradient restart in accelerated mode; updates `state` in place."""
        gamma = self._step_sizes(state, grad, g, has_secant, rho, constants)
        if isinstance(gamma, float):
            u_next = torch.add(state.y, smooth_grad, alpha=-gamma)
        else:
            u_next = torch.addcmul(state.y, gamma, smooth_grad, value=-1.0)
        plain = self.penalty.kind == "none"
        if not plain:
            threshold = gamma * self.sparsity if isinstance(gamma, float) else (gamma * self.sparsity).view(-1)
            u_next = self.penalty.prox(u_next.view((-1,) + shape), threshold).reshape(u_next.shape)
        if self.method == "accelerated":
            advance = u_next - state.u
            descent = smooth_grad if plain else state.y - u_next  # y - u_next = gamma grad s(y), gamma > 0, if plain
            restart = torch.gt(torch.linalg.vecdot(descent, advance), constants.zero)
            state.age = torch.add(state.age, constants.one).masked_fill_(restart, 0)
            beta = constants.weights.index_select(0, state.age)  # [M, 1]
            state.prev_y, state.y = state.y, torch.addcmul(u_next, beta, advance)
        else:
            state.prev_y, state.y = state.y, u_next
        state.prev_grad, state.u = g, u_next

    def _step_sizes(
        self, state: _ActiveSet, grad: _Gradient, g: Tensor, has_secant: bool, rho: float, constants: _Constants
    ) -> float | Tensor:
        """gamma: the given step, 0.1 (Algorithm 1's default) for fixed-step, rho at the first step, or per
        active example [M, 1] 1/(1/rho + beta) with beta the running smoothness estimate (module docstring).

        The running maximum is kept of 1/rho + estimate rather than of the estimate: rounding is monotone, so
        max(fl(1/rho + a), fl(1/rho + b)) = fl(1/rho + max(a, b)) and the steps are those of 1/(1/rho + beta)
        bit for bit, one operation fewer (the secant ratio and the sum are one addcdiv)."""
        if self.step is not None or self.method != "accelerated":
            return self.step if self.step is not None else 0.1
        if self.smoothed:
            bound = (STEIN_CONSTANT * grad.max_norm / self.smoothing_sigma + 1.0 / rho).unsqueeze(1)
        elif has_secant:  # y_k == y_{k-1} gives dg = 0 too (same point, same gradient): 0/0 = NaN, which fmax skips
            bound = torch.addcdiv(constants.inverse_rho, _row_norms(g - state.prev_grad, keepdim=True),
                                  _row_norms(state.y - state.prev_y, keepdim=True))
        else:
            return rho
        state.inverse_step = torch.fmax(state.inverse_step, bound)
        return torch.reciprocal(state.inverse_step)
