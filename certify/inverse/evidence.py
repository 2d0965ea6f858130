"""Evidence that a denoiser is, or provably is not, a proximal operator (issue 14, item 2; the Sulam talk,
Part I; Gribonval & Nikolova, "A characterization of proximity operators", JMIV 2020, Corollary 1 and
Theorem 3; Rockafellar, Convex Analysis, Theorem 24.8).

The theorem. f: R^n -> R^n is the proximal operator of some function R (f(y) in argmin_x 1/2||y - x||^2 + R(x))
iff f is a selection of the subdifferential of a convex lsc psi; by Rockafellar's theorem, a map is such a
selection iff it is cyclically monotone: for every cycle y_1, ..., y_m (m >= 2, indices mod m)

    S = sum_i <f(y_i), y_{i+1} - y_i>  <=  0.                                                        (CM)

Where f is differentiable at y, f = grad psi makes its Jacobian J(y) the Hessian of a convex function:
symmetric and positive semi-definite. Hence three tests, each with its own result (`Evidence`):

* "cyclic-monotonicity" (`cyclic_monotonicity`): one cycle with S > 0 PROVES that f is not a prox. It needs
  only values of f, so it is valid for any f (ReLU networks included) and is re-checkable by anyone: evaluate
  f at the witness points in float64 and add up. The verdict "violation" requires S to exceed `margin` (10)
  times the error bound of `cycle_error_bound` below.
* "jacobian-symmetry" and "jacobian-psd" (`jacobian_evidence`, `adversarial_jacobian_search`): the relative
  asymmetry ||J - J^T||_F / ||J||_F and the smallest eigenvalue of (J + J^T)/2 at sampled points. A value
  beyond `JACOBIAN_RTOL` (relative, see below) proves "not a prox" when f is differentiable at the point and
  the float64 autograd Jacobian is accurate to that tolerance (an assumption about rounding, not a theorem).
  For a piecewise-linear (ReLU) f, J exists a.e. and autograd returns the derivative of the active affine
  piece, which is the derivative of f wherever the point is interior to the piece (a.e.); at a kink it may be
  a one-sided derivative. Either way every Jacobian violation is converted into a cycle (a small loop in the
  plane of the top singular pair of J - J^T, or a 2-cycle along the most negative eigenvector of the
  symmetric part) and that cycle, if it violates (CM) beyond its error bound, is the rigorous proof
  (`JacobianEvidence.confirmation`).

Why loops work: for a linear f = M y and the m-point loop y_k = c + r (cos(2 pi k/m) u + sin(2 pi k/m) v)
(u, v orthonormal), S = (m r^2 / 2) [(cos d - 1)(u^T M u + v^T M v) + sin d (v^T M u - u^T M v)] with d = 2 pi/m,
which tends to pi r^2 (v^T M u - u^T M v) as m grows: any asymmetry is caught by a long enough loop,
while a symmetric PSD M gives S <= 0 for every loop.

Error bound of a cycle sum (float64, `cycle_error_bound`; u = unit roundoff, gamma_k = k u / (1 - k u)).
With f_i the computed values and d_i = fl(y_{i+1} - y_i), the computed S (one sum of N = m n products,
any summation order) differs from sum_i <f_i, y_{i+1} - y_i> by at most gamma_{N+2} sum_i |f_i|^T |d_i|
(Higham, Accuracy and Stability, section 3.1: the subtraction, the product and the sum). The computed f_i
differ from the exact f(y_i) by e_i, which no a-priori bound controls for a black-box network; we bound
||e_i||_2 by the larger of C_EVAL u (||f_i||_2 + ||y_i||_2) and, for an nn.Module, PRECISION_SAFETY (u64/u32)
||f32(y_i) - f64(y_i)||_2 (the float32 evaluation's error, rescaled to float64: the error of an evaluation
scales with the unit roundoff, and this term catches ill-conditioned networks), so the total bound is

    gamma_{N+2} sum_i |f_i|^T |d_i|  +  (1 + u) sum_i ||e_i||_2 ||d_i||_2 .

The first term is a theorem; the second is a documented model of the evaluation error (C_EVAL = 4096,
PRECISION_SAFETY = 64); requiring S > 10 x bound leaves a wide margin on top. `exact_cycle_sum` recomputes
the sum of the float64 values exactly (rational arithmetic), for re-checking a witness.

Inputs: f is an nn.Module or a callable mapping [B, *shape] -> [B, *shape] (a denoiser); it is evaluated in
float64 on a deep copy converted to double in eval mode (the caller's module is untouched). Points are
[B, *shape] tensors, n = prod(shape). Full Jacobians are formed for n <= `max_full` (default 1024; B n
copies of the input in one backward pass), random probes (u^T J v - v^T J u by jvp/vjp, Hutchinson
estimates of the Frobenius norms, power iteration for lambda_min) above.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Literal, Sequence

import torch
from torch import Tensor, nn

from certify.errors import InvalidInputError, UsageError

F64 = torch.float64
U64 = 2.0**-53
U32 = 2.0**-24
C_EVAL = 4096.0  # evaluation error of f: at most C_EVAL u (||f(y)|| + ||y||) (model, see the module docstring)
PRECISION_SAFETY = 64.0  # ... or PRECISION_SAFETY (u64/u32) ||f32(y) - f64(y)|| when that is larger
MARGIN = 10.0  # a cycle violates (CM) only when S > MARGIN x its error bound
JACOBIAN_RTOL = 1e-8  # relative accuracy assumed of a float64 autograd Jacobian (LPNs measure ~1e-16)

Verdict = Literal["violation", "no violation found"]
Denoiser = Callable[[Tensor], Tensor]


@dataclass
class Evidence:
    """What one test found.

    test: "cyclic-monotonicity", "jacobian-symmetry" or "jacobian-psd".
    value: the worst statistic found: the normalised cycle sum S / sum_i ||y_{i+1} - y_i||^2 (> 0 violates);
        the relative asymmetry ||J - J^T||_F / ||J||_F (> 0 violates); the smallest eigenvalue of
        (J + J^T)/2 (< 0 violates; absolute, in the units of f'/y; `details["relative"]` divides by ||J||_2).
    error_bound: bound on the rounding error of `value`, same units (cycles: the float64 bound of the module
        docstring, normalised like the value; Jacobians: JACOBIAN_RTOL times the scale, an assumption).
    verdict: "violation" only when value exceeds its error bound (cycles: by MARGIN), else "no violation found".
    witness: float64 points [m, *shape] (the cycle, in order) or [1, *shape] (the Jacobian's point).
    tried: number of cycles or points evaluated.
    proof: "rigorous" (a cycle: values of f only), "jacobian" (valid for f differentiable at the witness,
        under the float64 accuracy assumption), or "" when no violation was found.
    details: extra numbers (raw sum, denominator, cycle origin, relative eigenvalue, ...).
    """

    test: str
    value: float
    error_bound: float
    verdict: Verdict
    witness: Tensor
    tried: int
    proof: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """"proof" for a violation (f is provably not a prox), "estimated" for sampled evidence."""
        return "proof" if self.verdict == "violation" else "estimated"


@dataclass
class JacobianEvidence:
    """Jacobian symmetry and PSD tests at sampled (or searched) points, and the rigorous cycle built from the
    worst violation (None when there is none, or when no cycle confirmed it: then `confirmation` holds the
    best cycle tried)."""

    symmetry: Evidence
    psd: Evidence
    confirmation: Evidence | None = None

    @property
    def verdict(self) -> Verdict:
        return "violation" if "violation" in (self.symmetry.verdict, self.psd.verdict) else "no violation found"

    @property
    def proven(self) -> bool:
        """True when a cycle built from the Jacobian witness violates (CM) beyond its error bound."""
        return self.confirmation is not None and self.confirmation.verdict == "violation"


# ----------------------------------------------------------------------------------------------------------
# evaluation


class _Flat:
    """f in float64 on flat inputs [B, n] -> [B, n]; `f32` the float32 copy (modules only), for the
    precision probe."""

    def __init__(self, f: nn.Module | Denoiser, shape: tuple[int, ...]) -> None:
        self.shape = tuple(shape)
        self.n = math.prod(self.shape)
        if isinstance(f, nn.Module):
            self.f64 = copy.deepcopy(f).double().eval()
            self.f32: nn.Module | None = copy.deepcopy(f).float().eval()
            for module in (self.f64, self.f32):
                for p in module.parameters():
                    p.requires_grad_(False)
        elif callable(f):
            self.f64, self.f32 = f, None
        else:
            raise UsageError(f"a denoiser must be an nn.Module or a callable, got {type(f).__name__}")

    def __call__(self, y: Tensor) -> Tensor:
        out = self.f64(y.reshape(y.shape[0], *self.shape))
        if not isinstance(out, Tensor) or out.shape[0] != y.shape[0] or out[0].numel() != self.n:
            raise InvalidInputError(f"a denoiser must map [B, {self.shape}] to the same shape, got "
                                    f"{getattr(out, 'shape', type(out).__name__)}")
        return out.reshape(y.shape[0], self.n)

    def values(self, y: Tensor, chunk: int = 4096) -> Tensor:
        with torch.no_grad():
            return torch.cat([self(part) for part in y.split(chunk)]) if y.shape[0] else y.clone()

    def values32(self, y: Tensor, chunk: int = 4096) -> Tensor | None:
        if self.f32 is None:
            return None
        with torch.no_grad():
            outs = [self.f32(part.float().reshape(part.shape[0], *self.shape)).reshape(part.shape[0], self.n)
                    for part in y.split(chunk)]
        return torch.cat(outs).to(y.dtype)


def _flat_points(points: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    if not isinstance(points, Tensor) or points.dim() < 2 or points.shape[0] < 1:
        raise InvalidInputError("points must be a tensor [B, *shape] with B >= 1")
    if not torch.isfinite(points).all():
        raise InvalidInputError("points contain NaN or Inf")
    shape = tuple(points.shape[1:])
    return points.detach().to(F64).reshape(points.shape[0], -1), shape


def sample_points(data: Tensor, sigma: float, count: int, seed: int = 0, perturb: float = 0.0) -> Tensor:
    """Noisy inputs y = x + sigma v (v standard normal) for `count` rows x drawn from `data` [N, *shape]
    (with replacement), plus an extra perturbation of scale `perturb`; float64, [count, *shape]."""
    if sigma < 0 or perturb < 0 or count < 1:
        raise UsageError("sample_points needs sigma >= 0, perturb >= 0 and count >= 1")
    g = torch.Generator().manual_seed(seed)
    x = data.detach().to(F64)
    rows = torch.randint(0, x.shape[0], (count,), generator=g)
    noise = torch.randn((count, *x.shape[1:]), generator=g, dtype=F64)
    extra = torch.randn((count, *x.shape[1:]), generator=g, dtype=F64)
    return (x[rows] + sigma * noise + perturb * extra).to(data.device)


# ----------------------------------------------------------------------------------------------------------
# Jacobians


def _jacobians(fn: _Flat, ys: Tensor, create_graph: bool = False, budget: int = 2**22) -> Tensor:
    """Full Jacobians [B, n, n] of fn at the rows of ys [B, n] by one backward pass through B n copies of
    the inputs (copy (b, i) contributes output i), chunked so that a chunk holds about `budget` entries."""
    B, n = ys.shape
    per = max(1, budget // (n * n))
    eye = torch.eye(n, dtype=ys.dtype, device=ys.device)
    parts = []
    for chunk in ys.split(per):
        with torch.enable_grad():
            base = chunk if chunk.requires_grad else chunk.detach().requires_grad_(True)
            rep = base.repeat_interleave(n, dim=0)  # [b n, n]; a function of base, so J stays differentiable
            if not create_graph:
                rep = rep.detach().requires_grad_(True)
            out = fn(rep).reshape(chunk.shape[0], n, n)
            (g,) = torch.autograd.grad((out * eye).sum(), rep, create_graph=create_graph)
        parts.append(g.reshape(chunk.shape[0], n, n))
    return torch.cat(parts)


def _probe_products(fn: _Flat, y: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """(J v, J^T v) [B, n] at the rows of y for probes v [B, n] (vjp, and jvp by the double-vjp trick)."""
    with torch.enable_grad():
        yy = y.detach().requires_grad_(True)
        out = fn(yy)
        w = torch.zeros_like(out, requires_grad=True)
        (jtw,) = torch.autograd.grad(out, yy, w, create_graph=True)
        (jv,) = torch.autograd.grad(jtw, w, v, retain_graph=True)
        (jtv,) = torch.autograd.grad(out, yy, v)
    return jv.detach(), jtv.detach()


def _stats_full(J: Tensor) -> dict[str, Tensor]:
    """Per point: relative asymmetry, lambda_min / ||J||_2 scale, the top singular pair of the antisymmetric
    part (loop plane) and the most negative eigenvector of the symmetric part."""
    A = (J - J.transpose(1, 2)) / 2
    S = (J + J.transpose(1, 2)) / 2
    fro = torch.linalg.matrix_norm(J).clamp_min(1e-300)
    asym = torch.linalg.matrix_norm(J - J.transpose(1, 2)) / fro
    evals, evecs = torch.linalg.eigh(S)
    U, sig, Vh = torch.linalg.svd(A)
    spec = torch.linalg.matrix_norm(J, ord=2)
    return {"asym": asym, "lmin": evals[:, 0], "emin": evecs[:, :, 0], "norm2": spec, "fro": fro,
            "plane_u": Vh[:, 0, :], "plane_v": U[:, :, 0], "sigma_a": sig[:, 0]}


def _stats_probes(fn: _Flat, ys: Tensor, probes: int, iterations: int, g: torch.Generator) -> dict[str, Tensor]:
    """Probe estimates for large n: Hutchinson ||J - J^T||_F / ||J||_F, lambda_min of the symmetric part by
    power iteration on (c I - S) with c from power iteration on S, and a loop plane (v, (J - J^T) v)."""
    B, n = ys.shape
    v = torch.randn((probes, B, n), generator=g, dtype=F64).to(ys.device)
    num = torch.zeros(B, dtype=F64, device=ys.device)
    den = torch.zeros(B, dtype=F64, device=ys.device)
    best_u, best_w, best_a = v[0].clone(), v[0].clone(), torch.full((B,), -1.0, dtype=F64, device=ys.device)
    for k in range(probes):
        jv, jtv = _probe_products(fn, ys, v[k])
        diff = jv - jtv
        num += (diff * diff).sum(1)
        den += (jv * jv).sum(1)
        a = diff.norm(dim=1) / v[k].norm(dim=1)
        better = a > best_a
        best_a = torch.where(better, a, best_a)
        best_u = torch.where(better[:, None], v[k], best_u)
        best_w = torch.where(better[:, None], diff, best_w)
    asym = (num / den.clamp_min(1e-300)).sqrt()

    def sym(x: Tensor) -> Tensor:
        a, b = _probe_products(fn, ys, x)
        return (a + b) / 2

    x = torch.randn((B, n), generator=g, dtype=F64).to(ys.device)
    for _ in range(iterations):
        x = sym(x)
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-300)
    top = (x * sym(x)).sum(1).abs()
    shift = 1.01 * top + 1e-12
    x = torch.randn((B, n), generator=g, dtype=F64).to(ys.device)
    for _ in range(iterations):
        x = shift[:, None] * x - sym(x)
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-300)
    lmin = (x * sym(x)).sum(1)
    u = best_u / best_u.norm(dim=1, keepdim=True)
    w = best_w - (best_w * u).sum(1, keepdim=True) * u
    w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return {"asym": asym, "lmin": lmin, "emin": x, "norm2": top, "fro": den.sqrt() / math.sqrt(probes),
            "plane_u": u, "plane_v": w, "sigma_a": best_a}


def _stats(fn: _Flat, ys: Tensor, max_full: int, probes: int, g: torch.Generator) -> tuple[dict[str, Tensor], str]:
    if ys.shape[1] <= max_full:
        return _stats_full(_jacobians(fn, ys)), "full"
    return _stats_probes(fn, ys, probes, 30, g), "probes"


def _jacobian_result(stats: dict[str, Tensor], ys: Tensor, shape, method: str, tried: int,
                     extra: dict[str, Any] | None = None) -> tuple[Evidence, Evidence]:
    i = int(torch.argmax(stats["asym"]))
    asym, asym_bound = float(stats["asym"][i]), 2.0 * JACOBIAN_RTOL
    sym = Evidence("jacobian-symmetry", asym, asym_bound, "violation" if asym > asym_bound else "no violation found",
                   ys[i : i + 1].reshape(1, *shape).clone(), tried, "jacobian" if asym > asym_bound else "",
                   {"method": method, "sigma_antisymmetric": float(stats["sigma_a"][i]), **(extra or {})})
    rel = stats["lmin"] / stats["norm2"].clamp_min(1e-300)
    j = int(torch.argmin(rel))
    lmin, scale = float(stats["lmin"][j]), float(stats["norm2"][j])
    bound = JACOBIAN_RTOL * scale
    psd = Evidence("jacobian-psd", lmin, bound, "violation" if lmin < -bound else "no violation found",
                   ys[j : j + 1].reshape(1, *shape).clone(), tried, "jacobian" if lmin < -bound else "",
                   {"method": method, "relative": float(rel[j]), "norm2": scale, **(extra or {})})
    return sym, psd


def jacobian_evidence(f: nn.Module | Denoiser, points: Tensor, max_full: int = 1024, probes: int = 16,
                      confirm: bool = True, seed: int = 0) -> JacobianEvidence:
    """Jacobian symmetry and PSD tests at the points [B, *shape] (float64).

    symmetry.value = max over points of ||J - J^T||_F / ||J||_F (bound 2 JACOBIAN_RTOL); psd.value = the
    lambda_min((J + J^T)/2) of the point where lambda_min / ||J||_2 is smallest (bound JACOBIAN_RTOL ||J||_2).
    Full Jacobians for n <= max_full, else `probes` random probes per point (estimates). With `confirm`, a
    violation is turned into cycles around its witness (`confirm_with_cycles`), the rigorous proof.

    Raises InvalidInputError for non-finite points or a denoiser that changes the shape; UsageError for a
    denoiser that is neither a module nor a callable."""
    ys, shape = _flat_points(points)
    fn = _Flat(f, shape)
    g = torch.Generator().manual_seed(seed)
    stats, method = _stats(fn, ys, max_full, probes, g)
    sym, psd = _jacobian_result(stats, ys, shape, method, ys.shape[0])
    result = JacobianEvidence(sym, psd)
    if confirm and result.verdict == "violation":
        result.confirmation = confirm_with_cycles(fn, stats, ys, shape)
    return result


def adversarial_jacobian_search(f: nn.Module | Denoiser, start_points: Tensor, steps: int = 20,
                                radius: float = 0.5, lr: float = 0.05, max_full: int = 1024, probes: int = 8,
                                seed: int = 0, confirm: bool = True) -> JacobianEvidence:
    """Adversarial search for the worst Jacobian: from each start point [B, *shape], `steps` steps that
    maximise ||J - J^T||_F / ||J||_F and, separately, minimise lambda_min((J + J^T)/2) / ||J||_F, inside the
    box |y - start|_inf <= radius (units of y). Gradient ascent (signed steps of size lr, through the
    differentiable Jacobian; n <= max_full) where f is smooth; where that gradient vanishes or is unavailable
    (piecewise-linear f, large n) a random local search (Gaussian proposals of scale lr, kept when better).
    Returns the worst point of each test seen along the way (start points included), as `jacobian_evidence`.

    Raises UsageError for steps < 0 or non-positive radius/lr."""
    if steps < 0 or not (radius > 0) or not (lr > 0):
        raise UsageError("adversarial_jacobian_search needs steps >= 0, radius > 0 and lr > 0")
    ys0, shape = _flat_points(start_points)
    fn = _Flat(f, shape)
    g = torch.Generator().manual_seed(seed)
    n = ys0.shape[1]
    smooth = n <= max_full

    def objective(y: Tensor, which: str, graph: bool) -> Tensor:
        if smooth:
            J = _jacobians(fn, y, create_graph=graph)
            fro = torch.linalg.matrix_norm(J).clamp_min(1e-300)
            if which == "asym":
                return torch.linalg.matrix_norm(J - J.transpose(1, 2)) / fro
            return -torch.linalg.eigvalsh((J + J.transpose(1, 2)) / 2)[:, 0] / fro
        st = _stats_probes(fn, y, probes, 10, torch.Generator().manual_seed(seed))
        return st["asym"] if which == "asym" else -st["lmin"] / st["norm2"].clamp_min(1e-300)

    visited = [ys0]
    gradient_steps = random_steps = 0
    for which in ("asym", "lmin"):
        y = ys0.clone()
        with torch.no_grad():
            current = objective(y, which, False)
        for _ in range(steps):
            grad = None
            if smooth:
                try:
                    yy = y.clone().requires_grad_(True)
                    with torch.enable_grad():
                        (grad,) = torch.autograd.grad(objective(yy, which, True).sum(), yy)
                except RuntimeError:
                    grad = None
            use_gradient = (grad is not None and bool(torch.isfinite(grad).all())
                            and bool((grad.abs().amax(1) > 0).all()))
            if use_gradient:
                cand = y + lr * grad.sign()
                gradient_steps += 1
            else:
                cand = y + lr * torch.randn(y.shape, generator=g, dtype=F64).to(y.device)
                random_steps += 1
            cand = torch.maximum(torch.minimum(cand, ys0 + radius), ys0 - radius)
            with torch.no_grad():
                value = objective(cand, which, False).detach()
            if use_gradient:  # gradient steps always move (the worst point seen is kept anyway)
                y, current = cand, value
            else:  # random local search keeps only improvements
                better = value > current
                y = torch.where(better[:, None], cand, y)
                current = torch.where(better, value, current)
            visited.append(y.detach().clone())
    pts = torch.cat(visited)
    stats, method = _stats(fn, pts, max_full, probes, g)
    extra = {"steps": steps, "radius": radius, "gradient_steps": gradient_steps, "random_steps": random_steps}
    sym, psd = _jacobian_result(stats, pts, shape, method, pts.shape[0], extra)
    result = JacobianEvidence(sym, psd)
    if confirm and result.verdict == "violation":
        result.confirmation = confirm_with_cycles(fn, stats, pts, shape)
    return result


# ----------------------------------------------------------------------------------------------------------
# cycles


def cycle_error_bound(fvals: Tensor, points: Tensor, unit_roundoff: float = U64,
                      eval_errors: Tensor | None = None) -> Tensor:
    """Bound on |computed S - exact S| for cycles: fvals, points [C, m, n] (the computed f(y_i) and the y_i),
    evaluated at precision `unit_roundoff`; eval_errors [C, m] bounds ||f_i - f(y_i)||_2 (default
    C_EVAL u (||f_i|| + ||y_i||)). Returns [C] (see the module docstring for the formula)."""
    C, m, n = points.shape
    u = unit_roundoff
    N = m * n + 2
    gamma = N * u / (1 - N * u)
    d = torch.roll(points, -1, dims=1) - points
    mags = (fvals.abs() * d.abs()).sum((1, 2)) * (1 + 4 * N * U64)  # its own float64 rounding, covered
    if eval_errors is None:
        eval_errors = C_EVAL * u * (fvals.norm(dim=2) + points.norm(dim=2))
    return gamma * mags + (1 + u) * (eval_errors * d.norm(dim=2)).sum(1) * (1 + 4 * m * U64)


def _cycle_sums(fn: _Flat, cycles: Tensor, probe_precision: bool = True) -> dict[str, Tensor]:
    """S, denominators and error bounds of cycles [C, m, n] (float64)."""
    C, m, n = cycles.shape
    flat = cycles.reshape(C * m, n)
    fv = fn.values(flat)
    errs = C_EVAL * U64 * (fv.norm(dim=1) + flat.norm(dim=1))
    if probe_precision:
        f32 = fn.values32(flat)
        if f32 is not None:
            errs = torch.maximum(errs, PRECISION_SAFETY * (U64 / U32) * (f32 - fv).norm(dim=1))
    fv = fv.reshape(C, m, n)
    d = torch.roll(cycles, -1, dims=1) - cycles
    S = (fv * d).sum((1, 2))
    D = (d * d).sum((1, 2))
    bound = cycle_error_bound(fv, cycles, U64, errs.reshape(C, m))
    return {"S": S, "D": D, "bound": bound}


def exact_cycle_sum(fvals: Tensor, points: Tensor) -> Fraction:
    """The exact rational value of sum_i <f_i, y_{i+1} - y_i> for one cycle of float values fvals, points
    [m, n] (every float is a dyadic rational): the re-check of a witness without any rounding but f's own."""
    def rational(t: Tensor) -> list[list[Fraction]]:
        return [[Fraction(v) for v in row] for row in t.detach().cpu().to(F64).reshape(t.shape[0], -1).tolist()]

    fl, pts = rational(fvals), rational(points)
    m = len(pts)
    total = Fraction(0)
    for i in range(m):
        nxt = pts[(i + 1) % m]
        total += sum((a * (b - c) for a, b, c in zip(fl[i], nxt, pts[i])), Fraction(0))
    return total


def check_cycle(f: nn.Module | Denoiser, cycle: Tensor, margin: float = MARGIN) -> Evidence:
    """Evaluate one given cycle [m, *shape] (m >= 2; float64): its sum S, normalised value S / D, error bound
    and verdict, e.g. to re-check a witness. Raises InvalidInputError for non-finite points or m < 2."""
    ys, shape = _flat_points(cycle)
    if ys.shape[0] < 2:
        raise InvalidInputError("a cycle needs at least 2 points")
    fn = _Flat(f, shape)
    best, tried = _best(fn, [(ys[None], "given")], margin)
    return _evidence_from(best, shape, tried, margin, {})


def _loops(centres: Tensor, u: Tensor, v: Tensor, radii: Sequence[float],
           lengths: Sequence[int]) -> list[tuple[Tensor, str]]:
    out = []
    for m in lengths:
        t = torch.arange(m, dtype=F64, device=centres.device) * (2 * math.pi / m)
        for r in radii:
            for sign in (1.0, -1.0):
                pts = centres[:, None, :] + r * (torch.cos(t)[None, :, None] * u[:, None, :]
                                                 + sign * torch.sin(t)[None, :, None] * v[:, None, :])
                out.append((pts, f"loop m={m} r={r:.3g}"))
    return out


def _two_cycles(centres: Tensor, e: Tensor, steps: Sequence[float]) -> list[tuple[Tensor, str]]:
    return [(torch.stack([centres - h / 2 * e, centres + h / 2 * e], 1), f"2-cycle h={h:.3g}") for h in steps]


def _best(fn: _Flat, candidates: list[tuple[Tensor, str]], margin: float) -> tuple[dict[str, Any], int]:
    """The best cycle among the candidates: a proven violation with the largest S / bound first, else the
    largest normalised sum S / D."""
    best: dict[str, Any] | None = None
    tried = 0
    for cycles, origin in candidates:
        r = _cycle_sums(fn, cycles)
        tried += cycles.shape[0]
        proven = r["S"] > margin * r["bound"]
        norm = torch.where(r["D"] > 0, r["S"] / r["D"].clamp_min(1e-300), -math.inf)  # collapsed cycles prove nothing
        key = torch.where(proven, 1e10 + r["S"] / r["bound"].clamp_min(1e-300), norm)  # proven cycles first
        k = int(torch.argmax(key))
        entry = {"key": float(key[k]), "cycle": cycles[k].clone(), "S": float(r["S"][k]), "D": float(r["D"][k]),
                 "bound": float(r["bound"][k]), "proven": bool(proven[k]), "origin": origin}
        if best is None or entry["key"] > best["key"]:
            best = entry
    assert best is not None
    return best, tried


def _evidence_from(best: dict[str, Any], shape, tried: int, margin: float, extra: dict[str, Any]) -> Evidence:
    D = max(best["D"], 1e-300)
    verdict: Verdict = "violation" if best["proven"] else "no violation found"
    m = best["cycle"].shape[0]
    return Evidence("cyclic-monotonicity", best["S"] / D, best["bound"] / D, verdict,
                    best["cycle"].reshape(m, *shape), tried, "rigorous" if best["proven"] else "",
                    {"sum": best["S"], "denominator": best["D"], "sum_bound": best["bound"], "length": m,
                     "origin": best["origin"], "margin": margin,
                     "ratio": best["S"] / best["bound"] if best["bound"] > 0 else math.inf, **extra})


def confirm_with_cycles(fn: _Flat | nn.Module | Denoiser, stats: dict[str, Tensor], ys: Tensor, shape,
                        margin: float = MARGIN, top: int = 4) -> Evidence:
    """Cycles built from Jacobian statistics at the points ys [B, n] (the `top` most asymmetric and most
    indefinite ones): loops of m in {4, ..., 256} points and radii 1e-1..1e-4 times ||y|| in the plane of the
    top singular pair of J - J^T, and 2-cycles along the most negative eigenvector of (J + J^T)/2."""
    if not isinstance(fn, _Flat):
        fn = _Flat(fn, shape)
    k = min(top, ys.shape[0])
    ia = torch.topk(stats["asym"], k).indices
    il = torch.topk(-stats["lmin"] / stats["norm2"].clamp_min(1e-300), k).indices
    scale = float(ys.norm(dim=1).median().clamp_min(1e-3))
    radii = [scale * s for s in (1e-1, 1e-2, 1e-3, 1e-4)]
    cands = _loops(ys[ia], stats["plane_u"][ia], stats["plane_v"][ia], radii, (4, 8, 16, 32, 64, 128, 256))
    cands += _two_cycles(ys[il], stats["emin"][il], [scale * s for s in (1e-1, 1e-2, 1e-3, 1e-4)])
    best, tried = _best(fn, cands, margin)
    return _evidence_from(best, shape, tried, margin, {"built_from": "jacobian"})


def _ascend_cycles(fn: _Flat, cycles: Tensor, steps: int, lr: float, lo: Tensor, hi: Tensor) -> Tensor:
    """Projected gradient ascent (Adam) on the normalised cycle sums S / D of cycles [C, m, n] (each point
    kept in the box [lo, hi]); returns the visited cycles [steps C, m, n]."""
    C, m, n = cycles.shape
    Y = cycles.clone().requires_grad_(True)
    opt = torch.optim.Adam([Y], lr=lr)
    seen = []
    for _ in range(steps):
        with torch.enable_grad():
            fv = fn(Y.reshape(C * m, n)).reshape(C, m, n)
            d = torch.roll(Y, -1, dims=1) - Y
            obj = ((fv * d).sum((1, 2)) / (d * d).sum((1, 2)).clamp_min(1e-300)).sum()
            opt.zero_grad()
            (-obj).backward()
        opt.step()
        with torch.no_grad():
            Y.copy_(torch.maximum(torch.minimum(Y, hi), lo))
        seen.append(Y.detach().clone())
    return torch.cat(seen) if seen else cycles[:0]


def cyclic_monotonicity(f: nn.Module | Denoiser, points: Tensor, cycles: int = 64,
                        length: int | Sequence[int] = (2, 3, 5, 8),
                        seed: int = 0, adversarial: bool = True, search_steps: int = 30, anchors: int = 4,
                        max_full: int = 1024, margin: float = MARGIN, box: float = 0.5) -> Evidence:
    """Cyclic monotonicity (CM) of f on cycles among and around the points [B, *shape] (float64).

    Cycles tried: `cycles` random cycles of each length in `length` through the points and their Gaussian
    perturbations (scale 0.1 x the points' per-coordinate spread); with `adversarial`, cycles built from the
    Jacobians at `anchors` points (loops in the plane of the most asymmetric pair, 2-cycles along the most
    negative eigenvector: `confirm_with_cycles`), then `search_steps` of projected gradient ascent on S / D
    from the best few cycles, inside the box [min - box, max + box] of the points (per coordinate, units of y).

    Returns the best cycle as `Evidence` (value S / D, its normalised bound, the cycle as witness [m, *shape]);
    "violation" iff S > margin x bound (a proof that f is not a prox).

    Raises InvalidInputError for non-finite points; UsageError for cycles < 1 or a length < 2."""
    lengths = [length] if isinstance(length, int) else list(length)
    if cycles < 1 or not lengths or min(lengths) < 2:
        raise UsageError("cyclic_monotonicity needs cycles >= 1 and every length >= 2")
    ys, shape = _flat_points(points)
    fn = _Flat(f, shape)
    B, n = ys.shape
    g = torch.Generator().manual_seed(seed)
    spread = float(ys.std(0).mean()) if B > 1 else float(ys.abs().mean())
    spread = spread if spread > 0 else 1.0
    pool = torch.cat([ys, ys + 0.1 * spread * torch.randn(ys.shape, generator=g, dtype=F64).to(ys.device)])
    cands: list[tuple[Tensor, str]] = []
    for m in lengths:
        idx = torch.stack([torch.randperm(pool.shape[0], generator=g)[:m] if m <= pool.shape[0]
                           else torch.randint(0, pool.shape[0], (m,), generator=g) for _ in range(cycles)])
        cands.append((pool[idx], f"random m={m}"))
    extra: dict[str, Any] = {"random": cycles * len(lengths)}
    if adversarial:
        k = min(anchors, B)
        anchor = ys[torch.randperm(B, generator=g)[:k]]
        stats, method = _stats(fn, anchor, max_full, 8, g)
        scale = float(anchor.norm(dim=1).median().clamp_min(1e-3))
        radii = [scale * s for s in (1e-1, 1e-2, 1e-3)]
        cands += _loops(anchor, stats["plane_u"], stats["plane_v"], radii, (4, 16, 64, 256))
        cands += _two_cycles(anchor, stats["emin"], [scale * s for s in (1e-1, 1e-2, 1e-3)])
        extra["jacobians"] = method
    best, tried = _best(fn, cands, margin)
    if adversarial and search_steps > 0 and not best["proven"]:
        lo = ys.amin(0) - box
        hi = ys.amax(0) + box
        # ascend from the best random cycles of each length and the best loop
        starts = []
        for m in lengths:
            r = _cycle_sums(fn, cands[lengths.index(m)][0], probe_precision=False)
            k = int(torch.argmax(r["S"] / r["D"].clamp_min(1e-300)))
            starts.append(cands[lengths.index(m)][0][k])
        starts.append(best["cycle"])
        for start in starts:
            seen = _ascend_cycles(fn, start[None].clone(), search_steps, lr=0.05 * spread, lo=lo, hi=hi)
            b2, t2 = _best(fn, [(seen, f"search m={start.shape[0]}")], margin)
            tried += t2
            if b2["key"] > best["key"]:
                best = b2
        extra["search_steps"] = search_steps
    return _evidence_from(best, shape, tried, margin, extra)


@dataclass
class ProxEvidence:
    """All three tests for one denoiser; `proven_not_prox` when a cycle violates (CM) beyond its bound."""

    jacobian: JacobianEvidence
    search: JacobianEvidence
    cycles: Evidence

    @property
    def proven_not_prox(self) -> bool:
        return self.cycles.verdict == "violation" or self.jacobian.proven or self.search.proven

    @property
    def witness(self) -> Evidence | None:
        """The rigorous violating cycle, if any."""
        for ev in (self.cycles, self.jacobian.confirmation, self.search.confirmation):
            if ev is not None and ev.verdict == "violation":
                return ev
        return None


def prox_evidence(f: nn.Module | Denoiser, points: Tensor, seed: int = 0, quick: bool = True) -> ProxEvidence:
    """jacobian_evidence at the points, adversarial_jacobian_search from a few of them, and
    cyclic_monotonicity among them (sizes reduced when quick)."""
    ys, _ = _flat_points(points)
    per_start = 4 if ys.shape[1] <= 256 else 2  # a gradient step costs ~1.5 s per 784-pixel start (LPN, 2 cores)
    starts = points[: min(per_start if quick else 4 * per_start, points.shape[0])]
    return ProxEvidence(
        jacobian_evidence(f, points, seed=seed),
        adversarial_jacobian_search(f, starts, steps=5 if quick else 30, seed=seed),
        cyclic_monotonicity(f, points, cycles=32 if quick else 256, seed=seed, search_steps=10 if quick else 60),
    )
