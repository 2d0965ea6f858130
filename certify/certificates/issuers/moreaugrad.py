"""Claims of MoreauGrad explanations (vanilla, sparse, group-sparse, smoothed):

* smoothed mode: `smoothed-weak-convexity` sqrt(2/pi) L / sigma of h = E N_c(. + sigma Z) (Proposition 1,
  `certify.bounds.smoothing.proposition1_constant`), resting on the l2 `lipschitz` claim;
* `solver-error`: ||a - MG(x)||_2 <= (||r|| + deviation) / (1 - rho lambda) + ||a - (x - z)/rho||
  (`certify.bounds.stability.solver_error`), r the minimal-norm subgradient of F_x at the stored iterate z,
  recomputed with grad N_c in float64, deviation its rounding bound (`exact_solver_error`, which the
  theorem rows MG-A1 and MG-T1.3 call too). Smoothed mode (probabilistic): the gradient of h at z is
  estimated from m fresh samples drawn by `smoothed_samples(seed, m, n)` (seed and m in the witness, so
  the checker redraws them), every sample gradient norm <= L checked, and the McDiarmid deviation
  `certify.bounds.smoothing.vector_mean_deviation(L, m, alpha)`, alpha = 1 - confidence, added;
* `stability` (type stability-moreaugrad): Corollary 1 (vanilla) or the corrected Corollary 2 (sparse,
  group) plus the solver terms (`certify.bounds.stability.moreaugrad_stability`).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from certify.bounds.network import AffineNetwork
from certify.bounds.smoothing import proposition1_constant, vector_mean_deviation
from certify.bounds.stability import moreaugrad_stability, solver_error
from certify.certificates.claims import issue, refuse
from certify.certificates.document import encode_array
from certify.certificates.issuers.common import ClaimList, Issuing, exact_gradient, unit_row
from certify.errors import UsageError

CONFIDENCE = 0.99
SEED_OFFSET = 1_000_003


def smoothed_samples(seed: int, m: int, n: int) -> Tensor:
    """The m x n standard normal draws of the smoothed residual (CPU generator, float64): the checker
    repeats exactly this draw."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn((m, n), generator=generator, dtype=torch.float64)


def _params(explainer: Any, c: int) -> dict[str, Any]:
    smoothed = explainer.smoothing_sigma > 0
    return {"target": c, "rho": explainer.rho, "sparsity": explainer.sparsity, "group_size": explainer.group_size,
            "sigma": explainer.smoothing_sigma if smoothed else None, "confidence": CONFIDENCE if smoothed else None}


def moreaugrad_claims(claims: ClaimList, state: Issuing, explainer: Any, diagnostics: dict, i: int, a: Tensor, c: int,
                      eps: float, refusal: str | None) -> None:
    base = _params(explainer, c)
    smoothed = base["sigma"] is not None
    stab_params = {**base, "eps": eps, "tol": explainer.tol}
    if smoothed:
        sw_params = {"target": c, "sigma": base["sigma"]}
        lipschitz = claims.certified("lipschitz")
        if refusal is not None or lipschitz is None:
            claims.add(refuse("weak-convexity-smoothed", "smoothed-weak-convexity", sw_params, "gaussian-smoothing-prop1",
                              refusal or "no certified Lipschitz constant of N_c (see claim 'lipschitz')"))
        else:
            claims.add(issue("weak-convexity-smoothed", "smoothed-weak-convexity", sw_params,
                             proposition1_constant(lipschitz, base["sigma"]), "gaussian-smoothing-prop1", ["lipschitz"]))
    lam_id = "weak-convexity-smoothed" if smoothed else "weak-convexity"
    lam = claims.certified(lam_id)
    err_claim = _solver_error(claims, state, explainer, diagnostics, i, a, c, base, lam, lam_id, refusal)
    claims.add(err_claim)
    if err_claim.kind == "refused" or lam is None:
        claims.add(refuse("stability", "stability-moreaugrad", stab_params, "moreaugrad",
                          refusal or "rests on a solver-error bound and a weak-convexity constant, one of which was refused"))
        return
    rho = explainer.rho
    if explainer.sparsity == 0:
        beta, assumptions, method = None, [lam_id, "solver-error"], "moreaugrad-corollary-1"
    else:
        beta_id = lam_id if smoothed else "curvature"
        beta = claims.certified(beta_id)
        assumptions = [lam_id, "solver-error"] if smoothed else [lam_id, "curvature", "solver-error"]
        method = "corrected-corollary-2"
        if beta is None or rho * beta >= 1:
            why = "no certified curvature bound beta" if beta is None else f"rho * beta = {rho * beta:.4g} >= 1"
            claims.add(refuse("stability", "stability-moreaugrad", stab_params, method,
                              f"{why}: the sparse stability bound beta eps/(1 - rho beta) needs rho beta < 1 "
                              "(the paper's Corollary 2 is false as stated, DESIGN Errata)"))
            return
    try:
        value = moreaugrad_stability(eps, rho, explainer.tol, lam, err_claim.value, beta)
    except UsageError as exc:
        claims.add(refuse("stability", "stability-moreaugrad", stab_params, method, str(exc)))
        return
    claims.add(issue("stability", "stability-moreaugrad", stab_params, value, method, assumptions, kind=err_claim.kind))


def exact_solver_error(net: AffineNetwork, row: Tensor, explainer: Any, x: Tensor, z: Tensor, a: Tensor, lam: float) -> float:
    """The value of a deterministic (vanilla, sparse, group) solver-error claim: ||a - MG(x)||_2 for the
    explanation a of one example x [1, ...] with stored iterate z, MG the exact MoreauGrad of row . N with
    the explainer's rho, sparsity and penalty, N lambda-weakly convex (rho lambda < 1, else UsageError).
    grad N is recomputed at z in float64 with its rounding bound (`exact_gradient`)."""
    x, z = x.detach().double().cpu(), z.detach().double().cpu()
    g, rounding = exact_gradient(net, row, z.flatten(1))
    return _bound(explainer, g, x, z, a, lam, float(rounding[0]))


def _bound(explainer: Any, g: Tensor, x: Tensor, z: Tensor, a: Tensor, lam: float, deviation: float) -> float:
    """`solver_error` with r the minimal-norm subgradient of F_x at z for the gradient (estimate) g."""
    rho, u = explainer.rho, z - x
    r = explainer.penalty.minimal_subgradient(g.view_as(z) + u / rho, u, explainer.sparsity)
    rounding = float((a.detach().double().cpu().reshape(z.shape) - (x - z) / rho).norm())
    return solver_error(float(r.flatten().norm()), deviation, rho, lam, rounding)


def _solver_error(claims: ClaimList, state: Issuing, explainer: Any, diagnostics: dict, i: int, a: Tensor, c: int,
                  params: dict, lam: float | None, lam_id: str, refusal: str | None):
    method = "moreaugrad-solver-error"
    if refusal is not None:
        return refuse("solver-error", "solver-error", params, method, refusal)
    if lam is None:
        return refuse("solver-error", "solver-error", params, method, f"no certified weak-convexity constant (see claim {lam_id!r})")
    rho = explainer.rho
    if not rho * lam < 1:
        return refuse("solver-error", "solver-error", params, method,
                      f"rho * lambda = {rho * lam:.6g} >= 1: F_x is not known to be strongly convex, so a small residual "
                      "does not bound the distance to the minimiser; use rho < 1/lambda")
    if bool(diagnostics["diverged"][i]):
        return refuse("solver-error", "solver-error", params, method, "the solver diverged (non-finite iterate)")
    x = diagnostics["inputs"][i : i + 1].detach().double().cpu()
    z = diagnostics["z"][i : i + 1].detach().double().cpu()
    row = unit_row(state.num_classes, c)
    witness: dict[str, Any] = {"z": encode_array(z.numpy())}
    if params["sigma"] is None:
        value = exact_solver_error(state.net, row, explainer, x, z, a, lam)
        return issue("solver-error", "solver-error", params, value, method, [lam_id], witness)
    lipschitz = claims.certified("lipschitz")
    m = 4 * int(diagnostics["final_samples"][i]) if "final_samples" in diagnostics else 4 * explainer.samples
    seed = (explainer.seed if explainer.seed is not None else int(torch.randint(0, 2**31 - 1, ()))) + SEED_OFFSET + i
    grads, rounding = exact_gradient(state.net, row, z.flatten(1) + params["sigma"] * smoothed_samples(seed, m, z.numel()))
    worst = float(grads.norm(dim=1).max())
    if worst > lipschitz:
        return refuse("solver-error", "solver-error", params, method,
                      f"a sample gradient has norm {worst:.6g} > the certified Lipschitz constant {lipschitz:.6g}")
    deviation = float(rounding.max()) + vector_mean_deviation(lipschitz, m, 1.0 - params["confidence"])
    value = _bound(explainer, grads.mean(dim=0, keepdim=True), x, z, a, lam, deviation)
    witness.update(samples=m, seed=seed)
    return issue("solver-error", "solver-error", params, value, method, [lam_id, "lipschitz"], witness, kind="probabilistic")
