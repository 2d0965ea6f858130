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
* `stability` (type stability-moreaugrad): vanilla, the smaller of Corollary 1 and beta eps / (1 - rho lambda)
  (`certify.bounds.stability.vanilla_stability`); sparse / group, the corrected Corollary 2; plus the solver
  terms (`certify.bounds.stability.moreaugrad_stability`);
* local constants (region "local", DESIGN section 11, lemma MG-LOC): `weak-convexity-local` and
  `curvature-local` on the ball B(x, r) holding every prox point (certify.bounds.local.prox_region, from the
  l2 `lipschitz` claim's L), issued when one of them beats the global constant; solver-error and stability
  then rest on them and on `lipschitz`, with the radii of the region as their witness.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from certify.bounds.local import choose_rho, local_constants, prox_region
from certify.bounds.network import AffineNetwork
from certify.bounds.smoothing import proposition1_constant, vector_mean_deviation
from certify.bounds.stability import moreaugrad_stability, solver_error
from certify.certificates import local_check
from certify.certificates._common import Invalid
from certify.certificates.claims import issue, refuse
from certify.certificates.document import encode_array
from certify.certificates.issuers.common import ClaimList, Issuing, exact_gradient, unit_row
from certify.errors import UnsupportedError, UsageError

CONFIDENCE = 0.99
LOCAL_METHOD = "local-hessian-bound"
SEED_OFFSET = 1_000_003


def smoothed_samples(seed: int, m: int, n: int) -> Tensor:
    """The m x n standard normal draws of the smoothed residual (CPU generator, float64): the checker
    repeats exactly this draw."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn((m, n), generator=generator, dtype=torch.float64)


def _params(explainer: Any, c: int, rho: float, region: str) -> dict[str, Any]:
    smoothed = explainer.smoothing_sigma > 0
    return {"target": c, "rho": rho, "sparsity": explainer.sparsity, "group_size": explainer.group_size,
            "sigma": explainer.smoothing_sigma if smoothed else None, "confidence": CONFIDENCE if smoothed else None,
            "region": region}


def example_rho(explainer: Any, diagnostics: dict, i: int) -> float:
    """The rho example i was explained with: its entry of diagnostics["rho"] (rho = "auto") or the explainer's."""
    return float(diagnostics["rho"][i]) if "rho" in diagnostics else float(explainer.rho)


def _local_claims(claims: ClaimList, state: Issuing, x: Tensor, c: int, rho: float, eps: float, tol: float) -> dict | None:
    """Issue "weak-convexity-local" and "curvature-local" on the ball B(x, r) of certify.bounds.local.prox_region
    (lemma MG-LOC), when one of their values beats the global one. Returns the witnesses of the claims resting on
    them ("radii" of the prox region for the stability claim, with eps + rho tol: a run at x' stopped at residual
    <= tol has ||z - x'|| <= rho (||grad f(z)|| + tol); with 0 for the solver-error claim, whose iterate is
    stored) or None when none were issued."""
    lipschitz, lam_global = claims.certified("lipschitz"), claims.certified("weak-convexity")
    beta_global = claims.certified("curvature")
    if lipschitz is None or state.net is None:
        return None
    x = x.detach().double().cpu()
    row = unit_row(state.num_classes, c)[None]
    try:
        lip = torch.tensor([lipschitz], dtype=torch.float64)
        radii = prox_region(state.net, x, row, eps + rho * tol * (1 + 1e-9), rho, lip)[0]
        solver_radii = prox_region(state.net, x, row, 0.0, rho, lip)[0]
    except UnsupportedError:
        return None
    try:  # the radii as the checker re-derives them (its own, possibly looser, gradient bounds)
        stages = state.checker_stages()
        radii = _checkable(stages, x, c, radii, eps + rho * tol, rho)
        solver_radii = _checkable(stages, x, c, solver_radii, 0.0, rho)
        local = local_constants(state.net, x, row, radii[-1:])
    except (UnsupportedError, Invalid):  # no region the checker re-derives: no local claim (the global one stands)
        return None
    lam_global = math.inf if lam_global is None else lam_global
    beta_global = math.inf if beta_global is None else beta_global
    lam, beta = min(float(local.lam[0]), lam_global), min(float(local.beta[0]), beta_global)
    if not (lam < lam_global or beta < beta_global):
        return None
    params = {"target": c, "radius": float(radii[-1])}
    claims.add(issue("weak-convexity-local", "weak-convexity", params, lam, LOCAL_METHOD))
    claims.add(issue("curvature-local", "curvature", params, beta, LOCAL_METHOD))
    return {"stability": {"radii": [float(r) for r in radii]}, "solver-error": {"radii": [float(r) for r in solver_radii]}}


def _checkable(stages: Any, x: Tensor, c: int, radii: Tensor, eps: float, rho: float) -> Tensor:
    """The radii r_0 >= r_1 >= ... of `prox_region`, each r_k raised where needed to min(r_(k-1), eps + rho L(r_(k-1)))
    with the checker's gradient bound L (certify.certificates.local_check.gradient_bound), so that the checker's
    rule holds: the two sides bound sigma' with different rounding allowances (a relative 1e-8 apart for inputs
    scaled by 1e6). A raised radius is still a ball holding every stationary point."""
    out = [radii[0]]
    row = unit_row(int(stages.mats[-1].shape[0]), c)
    for r in radii[1:]:
        previous = float(out[-1])
        need = (eps + rho * local_check.gradient_bound(stages, x.reshape(-1), previous, row)) * (1 + 1e-9)
        out.append(torch.maximum(r, torch.tensor(min(previous, need), dtype=torch.float64)))
    return torch.stack(out)


def moreaugrad_claims(claims: ClaimList, state: Issuing, explainer: Any, diagnostics: dict, i: int, a: Tensor, c: int,
                      eps: float, refusal: str | None) -> None:
    rho = example_rho(explainer, diagnostics, i)
    smoothed = explainer.smoothing_sigma > 0
    sparse = explainer.sparsity > 0
    region = None if smoothed or refusal is not None else \
        _local_claims(claims, state, diagnostics["inputs"][i : i + 1], c, rho, eps, explainer.tol)
    local = region is not None
    base = _params(explainer, c, rho, "local" if local else "global")
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
    lam_id = "weak-convexity-smoothed" if smoothed else ("weak-convexity-local" if local else "weak-convexity")
    extra = ["lipschitz"] if local else []
    lam = claims.certified(lam_id)
    err_claim = _solver_error(claims, state, explainer, diagnostics, i, a, c, base, lam, lam_id, refusal, extra,
                              region["solver-error"] if local else {})
    claims.add(err_claim)
    if err_claim.kind == "refused" or lam is None:
        claims.add(refuse("stability", "stability-moreaugrad", stab_params, "moreaugrad",
                          refusal or "rests on a solver-error bound and a weak-convexity constant, one of which was refused"))
        return
    beta_id = lam_id if smoothed else ("curvature-local" if local else "curvature")
    beta = claims.certified(beta_id)
    assumptions = [lam_id, "solver-error"] if smoothed else [lam_id, beta_id, "solver-error"] + extra
    if not sparse:
        method = "moreaugrad-corollary-1"
        if beta is None:
            claims.add(refuse("stability", "stability-moreaugrad", stab_params, method,
                              f"no certified curvature bound beta (see claim {beta_id!r})"))
            return
    else:
        method = "corrected-corollary-2"
        if beta is None or rho * beta >= 1:
            why = "no certified curvature bound beta" if beta is None else f"rho * beta = {rho * beta:.4g} >= 1"
            claims.add(refuse("stability", "stability-moreaugrad", stab_params, method,
                              f"{why}: the sparse stability bound beta eps/(1 - rho beta) needs rho beta < 1 "
                              "(the paper's Corollary 2 is false as stated, DESIGN Errata)"))
            return
    try:
        value = moreaugrad_stability(eps, rho, explainer.tol, lam, err_claim.value, beta, sparse)
    except UsageError as exc:
        claims.add(refuse("stability", "stability-moreaugrad", stab_params, method, str(exc)))
        return
    claims.add(issue("stability", "stability-moreaugrad", stab_params, value, method, assumptions,
                     region["stability"] if local else None, kind=err_claim.kind))


def exact_solver_error(net: AffineNetwork, row: Tensor, explainer: Any, x: Tensor, z: Tensor, a: Tensor, lam: float,
                       rho: float | None = None) -> float:
    """The value of a deterministic (vanilla, sparse, group) solver-error claim: ||a - MG(x)||_2 for the
    explanation a of one example x [1, ...] with stored iterate z, MG the exact MoreauGrad of row . N with
    the explainer's rho, sparsity and penalty, N lambda-weakly convex (rho lambda < 1, else UsageError).
    grad N is recomputed at z in float64 with its rounding bound (`exact_gradient`)."""
    x, z = x.detach().double().cpu(), z.detach().double().cpu()
    g, rounding = exact_gradient(net, row, z.flatten(1))
    return _bound(explainer, g, x, z, a, lam, float(rounding[0]), explainer.rho if rho is None else rho)


def _bound(explainer: Any, g: Tensor, x: Tensor, z: Tensor, a: Tensor, lam: float, deviation: float, rho: float) -> float:
    """`solver_error` with r the minimal-norm subgradient of F_x at z for the gradient (estimate) g."""
    u = z - x
    r = explainer.penalty.minimal_subgradient(g.view_as(z) + u / rho, u, explainer.sparsity)
    rounding = float((a.detach().double().cpu().reshape(z.shape) - (x - z) / rho).norm())
    return solver_error(float(r.flatten().norm()), deviation, rho, lam, rounding)


def _solver_error(claims: ClaimList, state: Issuing, explainer: Any, diagnostics: dict, i: int, a: Tensor, c: int,
                  params: dict, lam: float | None, lam_id: str, refusal: str | None, extra: list[str],
                  region_witness: dict):
    method = "moreaugrad-solver-error"
    if refusal is not None:
        return refuse("solver-error", "solver-error", params, method, refusal)
    if lam is None:
        return refuse("solver-error", "solver-error", params, method, f"no certified weak-convexity constant (see claim {lam_id!r})")
    rho = params["rho"]
    if not rho * lam < 1:
        return refuse("solver-error", "solver-error", params, method,
                      f"rho * lambda = {rho * lam:.6g} >= 1: F_x is not known to be strongly convex, so a small residual "
                      f"does not bound the distance to the minimiser; use rho < {_largest_rho(claims, state, diagnostics, i, c, lam):.4g} "
                      "(or rho = 'auto')")
    if bool(diagnostics["diverged"][i]):
        return refuse("solver-error", "solver-error", params, method, "the solver diverged (non-finite iterate)")
    x = diagnostics["inputs"][i : i + 1].detach().double().cpu()
    z = diagnostics["z"][i : i + 1].detach().double().cpu()
    row = unit_row(state.num_classes, c)
    witness: dict[str, Any] = {"z": encode_array(z.numpy()), **region_witness}
    if params["region"] == "local":
        radius = claims.get(lam_id).params["radius"]
        if not float((z - x).norm()) <= radius:
            return refuse("solver-error", "solver-error", params, method,
                          f"the iterate z lies {float((z - x).norm()):.6g} from x, outside the ball of radius {radius:.6g} "
                          "on which lambda is certified")
    if params["sigma"] is None:
        value = exact_solver_error(state.net, row, explainer, x, z, a, lam, rho)
        return issue("solver-error", "solver-error", params, value, method, [lam_id] + extra, witness)
    lipschitz = claims.certified("lipschitz")
    m = 4 * int(diagnostics["final_samples"][i]) if "final_samples" in diagnostics else 4 * explainer.samples
    seed = (explainer.seed if explainer.seed is not None else int(torch.randint(0, 2**31 - 1, ()))) + SEED_OFFSET + i
    grads, rounding = exact_gradient(state.net, row, z.flatten(1) + params["sigma"] * smoothed_samples(seed, m, z.numel()))
    worst = float(grads.norm(dim=1).max())
    if worst > lipschitz:
        return refuse("solver-error", "solver-error", params, method,
                      f"a sample gradient has norm {worst:.6g} > the certified Lipschitz constant {lipschitz:.6g}")
    deviation = float(rounding.max()) + vector_mean_deviation(lipschitz, m, 1.0 - params["confidence"])
    value = _bound(explainer, grads.mean(dim=0, keepdim=True), x, z, a, lam, deviation, rho)
    witness.update(samples=m, seed=seed)
    return issue("solver-error", "solver-error", params, value, method, [lam_id, "lipschitz"], witness, kind="probabilistic")


def _largest_rho(claims: ClaimList, state: Issuing, diagnostics: dict, i: int, c: int, lam: float) -> float:
    """The largest rho that would be accepted: 1/lambda with the global constant, or the largest of
    certify.bounds.local.RHO_GRID admissible with local constants on B(x, eps + rho L) when larger."""
    best = 1.0 / lam if lam > 0 else math.inf
    lipschitz = claims.certified("lipschitz")
    if state.net is None or lipschitz is None:
        return best
    try:
        choice = choose_rho(state.net, diagnostics["inputs"][i : i + 1].detach().double().cpu(),
                            unit_row(state.num_classes, c)[None], 1e-12, torch.tensor([lipschitz], dtype=torch.float64),
                            torch.tensor([claims.certified("weak-convexity") or math.inf], dtype=torch.float64))
    except UnsupportedError:
        return best
    largest = float(choice.largest[0])
    return max(best, largest) if math.isfinite(largest) else best
