"""Plug-and-play reconstruction with a proximal operator, and its convergence certificate (issue 14, item 4).

Given a linear operator A (certify.inverse.operators), measurements y = A x + noise and a map f that is the
proximal operator of some R (a learned proximal network, `certify.inverse.lpn.LPN`, or a classical prox such
as `certify.inverse.classical.WaveletSoftThreshold`):

* PnP-PGD (proximal gradient):   x_{t+1} = T(x_t),  T(x) = f(x - eta A^T (A x - y));
* PnP-ADMM (scaled form):         x_{t+1} = (A^T A + rho I)^{-1} (A^T y + rho (z_t - u_t)),
                                  z_{t+1} = f(x_{t+1} + u_t),
                                  u_{t+1} = u_t + x_{t+1} - z_{t+1}.

Objectives (f = prox_R, i.e. f(v) in argmin_x 1/2 ||x - v||^2 + R(x)):

* PGD with step eta is proximal gradient on  F_eta(x) = 1/2 ||y - A x||^2 + R(x) / eta  (the prox of
  eta * (R/eta) is f). A fixed point x* = f(x* - eta A^T(A x* - y)) satisfies, by Fermat's rule for the prox
  problem, eta A^T (y - A x*) in dR(x*) (limiting subdifferential), i.e. 0 in A^T (A x* - y) + dR(x*)/eta: x*
  is a critical point of F_eta. (With alpha > 0, f is a bijection of R^n, R = psi^* - 1/2||.||^2 is
  differentiable, and x* is a stationary point.)
* ADMM with penalty rho solves  G_rho(x) = 1/2 ||y - A x||^2 + rho R(x)  (the z-step is prox_{rho R / rho} =
  f). Its fixed points have x* = z*, u* = -A^T (A x* - y) / rho and z* = f(z* - (1/rho) A^T(A z* - y)): the
  PGD fixed points with eta = 1/rho, critical points of G_rho = F_{1/rho}.

Convergence theorems used by the certificate
--------------------------------------------
Fang, Buchanan & Sulam, "What's in a Prior? Learned Proximal Networks for Inverse Problems", ICLR 2024,
arXiv 2310.14344, section 4 ("Solving inverse problems with LPN"), Theorem 4.1 (PnP-PGD) and Theorem 4.2
(PnP-ADMM), proofs in the appendix. As we read them (the stored copies of the paper reachable from this
project end before section 4, so the wording below is NOT verified against the text; ANCHORS 5.1 records the
ADMM conditions the same way):

  Theorem 4.1 (PnP-PGD with LPN). Let the iterates x_t be those of PnP-PGD run with a linear A and an LPN
  f_theta with softplus activations trained with 0 < alpha < 1, and a step 0 < eta < 1/sigma_max(A)^2
  (i.e. eta < 1/||A^T A||, the inverse Lipschitz constant of the gradient of 1/2||y - A x||^2). Then the
  iterates converge: there is x* with lim x_t = x* and f_theta(x* - eta A^T (A x* - y)) = x*.

  Theorem 4.2 (PnP-ADMM with LPN). With a linear A and an LPN with softplus activations and 0 < alpha < 1,
  and a penalty rho > ||A^T A|| = sigma_max(A)^2, the ADMM iterates converge to a fixed point.

Our own check of the PGD conclusion (it does not rest on the unverified wording). f(v) is a global minimiser
of R(u) + 1/2||u - v||^2; comparing x_{t+1} with u = x_t and adding the descent lemma of h = 1/2||y - A x||^2
(grad h L-Lipschitz, L = sigma_max(A)^2) gives sufficient decrease,
    F_eta(x_{t+1}) <= F_eta(x_t) - (1/(2 eta) - L/2) ||x_{t+1} - x_t||^2,
so for eta < 1/L the residuals are square-summable. With 0 < alpha < 1, psi = (alpha/2)||y||^2 + (a softplus
network, convex and Lipschitz) gives psi^*(x) >= ||x||^2/(2 alpha) - O(||x||), so R = psi^* - 1/2||.||^2 is
coercive, F_eta has bounded sublevel sets and the iterates stay bounded; softplus networks are definable in
the o-minimal structure R_exp, so F_eta is a KL function; Attouch, Bolte & Svaiter (2013, Thm 5.1) then give
convergence of the whole sequence to a critical point of F_eta, a fixed point of T. For ADMM no such argument
is made here: its LPN runs are reported with their residual, not certified.

The step condition is the classical one for nonconvex proximal gradient (Attouch, Bolte & Svaiter, Math.
Program. 2013, Theorem 5.1: F = g + h with grad g L-Lipschitz, h proper lsc, F a KL function, bounded iterates,
step < 1/L; here L = ||A^T A|| = sigma_max(A)^2 and F is real-analytic/semialgebraic-composable because the
LPN uses softplus). The talk slide ("What did my model learn?", Part I) states 0 < eta < 1/sigma_max(A),
without the square. The two agree when sigma_max(A) = 1 (identity, normalised blur, inpainting). For
sigma_max(A) > 1 the slide's range is LARGER than the proven one (e.g. sigma_max = 2: the slide allows
eta < 0.5, the proof eta < 0.25): such steps are not covered by the theorem. For sigma_max(A) < 1 the slide
is more conservative. This module checks the proven condition (`pgd_step_bound`), and reports the slide's
as `talk_condition` for comparison only.

On the alpha convention: lpn.LPN adds (alpha/2)||y||^2 (the talk); the public code adds alpha||y||^2. The
certificate asks 0 < alpha < 1 of the LPN's own alpha, which implies 0 < alpha' < 1 in either convention.

Convex classical priors (a `prox` with attribute `convex_regulariser = True`, e.g. wavelet soft-thresholding:
R = lam ||W x||_1 convex, proper, lsc): PGD converges to a minimiser of F_eta for 0 < eta < 2/||A^T A||
(Combettes & Wajs, Multiscale Model. Simul. 2005, Theorem 3.4, with exact prox evaluations), and ADMM
converges for every rho > 0 to a minimiser of G_rho (Boyd et al., Found. Trends ML 2011, section 3.2; a
minimiser exists since R is coercive on the detail coefficients and the data term is bounded below; we do not
check existence and state it as an assumption of the cited theorem).

What the certificate contains, per image: (a) the fixed-point residual ||x_T - T(x_T)|| of the RETURNED
iterate, re-evaluated after stopping (a number anyone can re-check by one more application of T); (b) each
assumption of the theorem, checked (prox is an LPN, psi convex by its non-negative weights, 0 < alpha < 1,
softplus activations, the step/penalty condition). When they all hold the certificate states the theorem's
conclusion (convergence of the whole run to a fixed point, which is a critical point of the stated
objective); otherwise it names the failed assumptions and reports only the residual.

Tensors: y [B, C, H, W] (the operator's shape); every image is iterated independently (batched, no per-image
Python loop) and frozen once its residual is below `tol`. Errors: UsageError for eta, rho, tol or max_iter out
of range; InvalidInputError for shapes that do not match the operator.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from certify.errors import InvalidInputError, UsageError
from certify.inverse.lpn import LPN
from certify.inverse.operators import LinearOperator

Prox = Callable[[Tensor], Tensor]

__all__ = [
    "Assumption",
    "ConvergenceCertificate",
    "PnPResult",
    "pgd",
    "admm",
    "pgd_step_bound",
    "talk_step_bound",
    "admm_penalty_bound",
    "pgd_assumptions",
    "admm_assumptions",
    "pgd_residual",
]

_TINY = 1e-30


@dataclass
class Assumption:
    """One hypothesis of a convergence theorem, checked: `holds` and the evidence in `detail`."""

    name: str
    holds: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "holds": bool(self.holds), "detail": self.detail}


@dataclass
class ConvergenceCertificate:
    """What is proven about a PnP run (see the module docstring).

    Attributes:
        algorithm: "pgd" or "admm".
        theorem: the theorem whose assumptions were checked (source and number).
        objective: the objective whose critical point the limit is (text).
        parameter: eta (PGD) or rho (ADMM); `bound` the proven limit on it (eta < bound, or rho > bound).
        talk_condition: PGD only, whether 0 < eta < 1/sigma_max(A) (the slide's condition; not used).
        assumptions: every hypothesis, checked.
        residual: [B] ||x_T - T(x_T)|| of the returned iterate, re-evaluated after stopping (absolute, l2
            over the image); `relative_residual` = residual / ||x_T||.
        pgd_residual: ADMM only, [B] the PGD fixed-point residual of the returned z with eta = 1/rho.
        kind: "certified" when every assumption holds (the convergence statement is a theorem's conclusion;
            the residual is evaluated), "estimated" otherwise (only the evaluated residual)."""

    algorithm: str
    theorem: str
    objective: str
    parameter: float
    bound: float
    sigma_max: float
    assumptions: list[Assumption]
    residual: Tensor
    relative_residual: Tensor
    talk_condition: bool | None = None
    pgd_residual: Tensor | None = None

    @property
    def assumptions_hold(self) -> bool:
        return all(a.holds for a in self.assumptions)

    @property
    def kind(self) -> str:
        return "certified" if self.assumptions_hold else "estimated"

    @property
    def failed(self) -> list[str]:
        return [a.name for a in self.assumptions if not a.holds]

    def statement(self) -> str:
        r = float(self.residual.max()) if self.residual.numel() else float("nan")
        if self.assumptions_hold:
            return (f"{self.theorem}: all assumptions hold, so the {self.algorithm.upper()} iterates converge to a fixed "
                    f"point x*, a critical point of {self.objective}; the returned iterate's fixed-point residual, "
                    f"re-evaluated, is at most {r:.3g} (max over images).")
        return (f"{self.theorem} does not apply (failed: {', '.join(self.failed)}); only the evaluated fixed-point "
                f"residual is reported: at most {r:.3g} (max over images). Convergence is not certified.")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "algorithm": self.algorithm,
            "kind": self.kind,
            "theorem": self.theorem,
            "objective": self.objective,
            "parameter": self.parameter,
            "bound": self.bound,
            "sigma_max": self.sigma_max,
            "assumptions": [a.as_dict() for a in self.assumptions],
            "assumptions_hold": self.assumptions_hold,
            "residual_max": float(self.residual.max()) if self.residual.numel() else None,
            "relative_residual_max": float(self.relative_residual.max()) if self.residual.numel() else None,
            "statement": self.statement(),
        }
        if self.talk_condition is not None:
            out["talk_condition"] = self.talk_condition
        if self.pgd_residual is not None:
            out["pgd_residual_max"] = float(self.pgd_residual.max())
        return out


@dataclass
class PnPResult:
    """A PnP run. `x` [B, C, H, W] the reconstruction (PGD: x_T; ADMM: z_T, in the range of the prox);
    `iterations` [B] the iterations each image ran; `converged` [B] whether its stopping residual went below
    tol; `residuals` [B] the last stopping residual; `history` [T, B] the stopping residual per iteration (NaN
    once an image has stopped); `certificate`; `seconds` wall time."""

    x: Tensor
    iterations: Tensor
    converged: Tensor
    residuals: Tensor
    history: Tensor
    certificate: ConvergenceCertificate
    seconds: float
    extras: dict[str, Tensor] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ conditions


def pgd_step_bound(A: LinearOperator) -> float:
    """The proven step bound: PGD converges (Theorem 4.1) for 0 < eta < 1/sigma_max(A)^2 = 1/||A^T A||."""
    s = A.sigma_max()
    return math.inf if s == 0 else 1.0 / (s * s)


def talk_step_bound(A: LinearOperator) -> float:
    """The talk slide's step bound 1/sigma_max(A) (not proven when sigma_max(A) > 1; see the module doc)."""
    s = A.sigma_max()
    return math.inf if s == 0 else 1.0 / s


def admm_penalty_bound(A: LinearOperator) -> float:
    """The ADMM penalty condition of Theorem 4.2: rho > ||A^T A|| = sigma_max(A)^2."""
    return A.sigma_max() ** 2


def _lpn_assumptions(prox: Any) -> list[Assumption]:
    if not isinstance(prox, LPN):
        return [Assumption("prox is a learned proximal network", False,
                           f"{type(prox).__name__} is not certify.inverse.lpn.LPN: nothing proves it is a prox")]
    out = [Assumption("prox is a learned proximal network", True, prox.extra_repr())]
    bad = [name for name, p in prox.named_parameters() if not bool(torch.isfinite(p).all())]
    out.append(Assumption("LPN parameters finite", not bad, f"non-finite: {', '.join(bad)}" if bad else "all finite"))
    mins = [float(w.detach().min()) for _, w in prox.constrained()]
    worst = min(mins) if mins else 0.0
    out.append(Assumption("psi convex (constrained weights >= 0)", worst >= 0.0,
                          f"smallest constrained weight {worst:.3g}"))
    out.append(Assumption("alpha > 0 (psi strongly convex)", prox.alpha > 0, f"alpha = {prox.alpha:g}"))
    out.append(Assumption("alpha < 1 (the paper's theorems: 0 < alpha < 1)", prox.alpha < 1, f"alpha = {prox.alpha:g}"))
    smooth = math.isfinite(prox.beta) and prox.beta > 0
    out.append(Assumption("smooth activations (softplus, finite beta)", smooth,
                          f"softplus without threshold, beta = {prox.beta:g}"))
    return out


def _is_convex_prox(prox: Any) -> bool:
    return bool(getattr(prox, "convex_regulariser", False)) and not isinstance(prox, LPN)


def pgd_assumptions(prox: Any, A: LinearOperator, eta: float) -> tuple[str, float, list[Assumption]]:
    """(theorem, step bound, checked assumptions) of PGD with this prox, operator and step."""
    s = A.sigma_max()
    if _is_convex_prox(prox):
        bound = math.inf if s == 0 else 2.0 / (s * s)
        theorem = "Combettes & Wajs 2005, Thm 3.4 (convex prox, PGD)"
        out = [Assumption("prox of a convex proper lsc R", True, getattr(prox, "describe", lambda: repr(prox))()),
               Assumption("0 < eta < 2/sigma_max(A)^2", 0 < eta < bound, f"eta = {eta:g}, bound {bound:.6g}")]
        return theorem, bound, out
    bound = pgd_step_bound(A)
    theorem = "Fang, Buchanan & Sulam 2024, Thm 4.1 (PnP-PGD with LPN)"
    out = _lpn_assumptions(prox)
    out.append(Assumption("0 < eta < 1/sigma_max(A)^2", 0 < eta < bound,
                          f"eta = {eta:.6g}, sigma_max(A) = {s:.6g}, bound {bound:.6g}"))
    return theorem, bound, out


def admm_assumptions(prox: Any, A: LinearOperator, rho: float) -> tuple[str, float, list[Assumption]]:
    """(theorem, penalty bound, checked assumptions) of ADMM with this prox, operator and penalty."""
    if _is_convex_prox(prox):
        theorem = "Boyd et al. 2011, sec. 3.2 (convex ADMM)"
        out = [Assumption("prox of a convex proper lsc R", True, getattr(prox, "describe", lambda: repr(prox))()),
               Assumption("rho > 0", rho > 0, f"rho = {rho:g}")]
        return theorem, 0.0, out
    bound = admm_penalty_bound(A)
    theorem = "Fang, Buchanan & Sulam 2024, Thm 4.2 (PnP-ADMM with LPN)"
    out = _lpn_assumptions(prox)
    out.append(Assumption("rho > sigma_max(A)^2", rho > bound, f"rho = {rho:.6g}, bound {bound:.6g}"))
    out.append(Assumption("theorem statement checked", False, "the paper's Thm 4.2 could not be read offline and "
                          "nonconvex ADMM needs more than the descent argument of PGD: no certified convergence"))
    return theorem, bound, out


# ------------------------------------------------------------------------------------------ iterations


def _matched(prox: Prox, like: Tensor) -> Prox:
    """An nn.Module prox whose parameters have another dtype/device than the iterate is copied and converted
    (the caller's module is left untouched); the call runs under no_grad."""
    if isinstance(prox, nn.Module):
        params = list(prox.parameters())
        if params and (params[0].dtype != like.dtype or params[0].device != like.device):
            prox = copy.deepcopy(prox).to(device=like.device, dtype=like.dtype)

    def call(v: Tensor) -> Tensor:
        with torch.no_grad():
            return prox(v)

    return call


def _norms(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1)


def _validate(A: LinearOperator, y: Tensor, max_iter: int, tol: float, x0: Tensor | None) -> None:
    if y.dim() != 4 or tuple(y.shape[1:]) != A.shape:
        raise InvalidInputError(f"measurements must be [B, {', '.join(map(str, A.shape))}] for {A.describe()}, "
                                f"got {tuple(y.shape)}")
    if x0 is not None and x0.shape != y.shape:
        raise InvalidInputError(f"x0 must have the shape of y {tuple(y.shape)}, got {tuple(x0.shape)}")
    if int(max_iter) < 1:
        raise UsageError(f"max_iter must be >= 1, got {max_iter}")
    if not (tol >= 0 and math.isfinite(tol)):
        raise UsageError(f"tol must be finite and >= 0, got {tol}")


def pgd_residual(prox: Prox, A: LinearOperator, y: Tensor, x: Tensor, eta: float) -> Tensor:
    """||x - T(x)|| per image [B], T(x) = prox(x - eta A^T (A x - y)): the fixed-point residual, evaluated."""
    call = _matched(prox, x)
    return _norms(x - call(x - eta * A.adjoint(A.apply(x) - y)))


def _start(prox: Prox, A: LinearOperator, y: Tensor, x0: Tensor | None, dtype: torch.dtype | None
           ) -> tuple[Tensor, Prox, Tensor, Tensor]:
    """(y in the compute dtype, the prox matched to it, A^T y, the starting iterate: x0 or A^T y)."""
    y = y.to(dtype or y.dtype)
    aty = A.adjoint(y)
    return y, _matched(prox, y), aty, (aty if x0 is None else x0.to(y.dtype)).clone()


def _gap(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> Tensor:
    """Per image [B]: the norm of the stacked differences of the state tensors a and b."""
    return torch.stack([_norms(p - q).double() for p, q in zip(a, b)]).norm(dim=0)


def _iterate(state: tuple[Tensor, ...], advance: Callable[[tuple[Tensor, ...], Tensor], tuple[Tensor, ...]],
             max_iter: int, tol: float, relative: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Iterate `advance(state rows, their indices) -> new state rows` on the images still running, updating
    `state` in place; an image stops when its residual ||new - old|| (over the state, divided by ||old|| when
    `relative`) is <= tol or not finite (diverged). Returns (iterations [B], last residuals [B], history [T, B]:
    NaN where an image had stopped)."""
    b, device = state[0].shape[0], state[0].device
    active = torch.ones(b, dtype=torch.bool, device=device)
    iterations = torch.zeros(b, dtype=torch.long, device=device)
    last = torch.full((b,), math.nan, dtype=torch.float64, device=device)
    history = []
    for _ in range(int(max_iter)):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        old = tuple(t[idx] for t in state)
        new = advance(old, idx)
        r = _gap(new, old)
        if relative:
            r = r / _gap(old, tuple(torch.zeros_like(t) for t in old)).clamp_min(_TINY)
        for t, v in zip(state, new):
            t[idx] = v
        iterations[idx] += 1
        last[idx] = r
        row = torch.full((b,), math.nan, dtype=torch.float64, device=device)
        row[idx] = r
        history.append(row)
        active[idx[(r <= tol) | ~torch.isfinite(r)]] = False
    hist = torch.stack(history) if history else torch.empty(0, b, dtype=torch.float64)
    return iterations, last, hist


def pgd(prox: Prox, A: LinearOperator, y: Tensor, eta: float, x0: Tensor | None = None, max_iter: int = 500,
        tol: float = 1e-6, relative: bool = False, dtype: torch.dtype | None = None) -> PnPResult:
    """PnP proximal gradient x <- prox(x - eta A^T (A x - y)), batched over images.

    Args:
        prox: a map [B, C, H, W] -> same (an LPN, a classical prox, any callable).
        A: the forward operator; y: measurements [B, C, H, W].
        eta: step (> 0); the certificate checks it against the proven bound (`pgd_step_bound`).
        x0: start (default A^T y).
        max_iter: iteration cap per image; tol: stop an image when its residual ||x_{t+1} - x_t|| (divided by
            ||x_t|| when `relative`) is <= tol.
        dtype: compute dtype (e.g. torch.float64); default y's dtype. An nn.Module prox is copied to it.

    Returns a `PnPResult`; its certificate re-evaluates ||x_T - T(x_T)|| on the returned iterate.
    Raises UsageError for eta <= 0 or bad max_iter/tol, InvalidInputError for shapes."""
    _validate(A, y, max_iter, tol, x0)
    if not (eta > 0 and math.isfinite(eta)):
        raise UsageError(f"PGD needs a finite step eta > 0, got {eta}")
    start = time.perf_counter()
    y, call, aty, x = _start(prox, A, y, x0, dtype)

    def step(xa: Tensor, ya_t: Tensor) -> Tensor:
        return call(xa - eta * (A.gram(xa) - ya_t))

    iterations, last, hist = _iterate((x,), lambda old, idx: (step(old[0], aty[idx]),), max_iter, tol, relative)
    converged = last <= tol
    residual = _norms(x - step(x, aty)).double()
    theorem, bound, assumptions = pgd_assumptions(prox, A, eta)
    s = A.sigma_max()
    objective = f"1/2 ||y - A x||^2 + R(x)/eta with eta = {eta:.6g}"
    cert = ConvergenceCertificate(
        algorithm="pgd", theorem=theorem, objective=objective, parameter=float(eta), bound=bound, sigma_max=s,
        assumptions=assumptions, residual=residual,
        relative_residual=residual / _norms(x).double().clamp_min(_TINY),
        talk_condition=bool(0 < eta < talk_step_bound(A)))
    return PnPResult(x=x, iterations=iterations, converged=converged, residuals=last, history=hist,
                     certificate=cert, seconds=time.perf_counter() - start)


def admm(prox: Prox, A: LinearOperator, y: Tensor, rho: float, x0: Tensor | None = None, max_iter: int = 500,
         tol: float = 1e-6, relative: bool = False, dtype: torch.dtype | None = None) -> PnPResult:
    """PnP-ADMM (scaled form, see the module docstring), batched over images; x-step exact by
    `A.solve_normal`.

    Args: as `pgd`, with the penalty rho (> 0) in place of eta; x0 (default A^T y) starts x and z, u = 0. The
    stopping residual is ||(x, z, u)_{t+1} - (x, z, u)_t|| (relative: divided by ||(x, z, u)_t||).

    Returns a `PnPResult` with x = z_T (in the range of the prox; x_T and u_T in `extras`); the certificate
    re-evaluates the ADMM map's residual on (x_T, z_T, u_T) and the PGD residual of z_T with eta = 1/rho.
    Raises UsageError for rho <= 0 or bad max_iter/tol, InvalidInputError for shapes."""
    _validate(A, y, max_iter, tol, x0)
    if not (rho > 0 and math.isfinite(rho)):
        raise UsageError(f"ADMM needs a finite penalty rho > 0, got {rho}")
    start = time.perf_counter()
    y, call, aty, x = _start(prox, A, y, x0, dtype)
    z = x.clone()
    u = torch.zeros_like(x)

    def step(za: Tensor, ua: Tensor, atya: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        xn = A.solve_normal(atya + rho * (za - ua), rho)
        zn = call(xn + ua)
        return xn, zn, ua + xn - zn

    iterations, last, hist = _iterate((x, z, u), lambda old, idx: step(old[1], old[2], aty[idx]), max_iter, tol,
                                      relative)
    converged = last <= tol
    again = step(z, u, aty)
    residual = _gap(again, (x, z, u))
    eta = 1.0 / rho
    pgd_r = _norms(z - call(z - eta * (A.gram(z) - aty))).double()
    theorem, bound, assumptions = admm_assumptions(prox, A, rho)
    cert = ConvergenceCertificate(
        algorithm="admm", theorem=theorem, objective=f"1/2 ||y - A x||^2 + rho R(x) with rho = {rho:.6g}",
        parameter=float(rho), bound=bound, sigma_max=A.sigma_max(), assumptions=assumptions, residual=residual,
        relative_residual=residual / _gap((x, z, u), (torch.zeros_like(x),) * 3).clamp_min(_TINY),
        pgd_residual=pgd_r)
    return PnPResult(x=z, iterations=iterations, converged=converged, residuals=last, history=hist,
                     certificate=cert, seconds=time.perf_counter() - start, extras={"x": x, "u": u})
