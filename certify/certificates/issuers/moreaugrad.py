"""Claims of MoreauGrad explanations (vanilla, sparse, group-sparse, smoothed):

* smoothed mode: `smoothed-weak-convexity` sqrt(2/pi) L / sigma of h = E N_c(. + sigma Z) (Proposition 1,
  `certify.bounds.smoothing.proposition1_constant`), resting on the l2 `lipschitz` claim;
* `solver-error`: ||a - MG(x)||_2 <= ||r|| / (1 - rho lambda) + ||a - (x - z)/rho||, r the minimal-norm
  subgradient of F_x at the stored iterate z, recomputed with grad N_c in float64 (its rounding bound
  added). Smoothed mode (probabilistic): the gradient of h at z is estimated from m fresh samples drawn
  by `smoothed_samples(seed, m, n)` (seed and m in the witness, so the checker redraws them), every
  sample gradient norm <= L checked, and the McDiarmid deviation (L / sqrt(m)) (1 + sqrt(2 ln(1/delta)))
  added, delta = 1 - confidence;
* `stability` (type stability-moreaugrad): Corollary 1 (vanilla) or the corrected Corollary 2 (sparse,
  group) plus the solver terms (`certify.bounds.stability.moreaugrad_stability`).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from certify.bounds.smoothing import proposition1_constant
from certify.bounds.stability import moreaugrad_stability
from certify.certificates.claims import issue, refuse
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


def _solver_error(claims: ClaimList, state: Issuing, explainer: Any, diagnostics: dict, i: int, a: Tensor, c: int,
                  params: dict, lam: float | None, lam_id: str, refusal: str | None):
    method = "moreaugrad-solver-error"
    if refusal is not None:
        return refuse("solver-error", "solver-error", params, method, refusal)
    if lam is None:
        return refuse("solver-error", "solver-error", params, method, f"no certified weak-convexity constant (see claim {lam_id!r})")
    rho, eta = explainer.rho, explainer.sparsity
    if not rho * lam < 1:
        return refuse("solver-error", "solver-error", params, method,
                      f"rho * lambda = {rho * lam:.6g} >= 1: F_x is not known to be strongly convex, so a small residual "
                      "does not bound the distance to the minimiser; use rho < 1/lambda")
    if bool(diagnostics["diverged"][i]):
        return refuse("solver-error", "solver-error", params, method, "the solver diverged (non-finite iterate)")
    x = diagnostics["inputs"][i : i + 1].detach().double().cpu()
    z = diagnostics["z"][i : i + 1].detach().double().cpu()
    u = z - x
    row = unit_row(state.num_classes, c)
    witness: dict[str, Any] = {}
    from certify.certificates.document import encode_array

    witness["z"] = encode_array(z.numpy())
    if params["sigma"] is None:
        g, rounding = exact_gradient(state.net, row, z.flatten(1))
        deviation = float(rounding[0])
        kind = "certified"
    else:
        lipschitz = claims.certified("lipschitz")
        m = 4 * int(diagnostics["final_samples"][i]) if "final_samples" in diagnostics else 4 * explainer.samples
        seed = (explainer.seed if explainer.seed is not None else int(torch.randint(0, 2**31 - 1, ()))) + SEED_OFFSET + i
        noise = smoothed_samples(seed, m, z.numel())
        grads, rounding = exact_gradient(state.net, row, z.flatten(1) + params["sigma"] * noise)
        worst = float(grads.norm(dim=1).max())
        if worst > lipschitz:
            return refuse("solver-error", "solver-error", params, method,
                          f"a sample gradient has norm {worst:.6g} > the certified Lipschitz constant {lipschitz:.6g}")
        g = grads.mean(dim=0, keepdim=True)
        deviation = float(rounding.max()) + lipschitz / math.sqrt(m) * (1.0 + math.sqrt(2.0 * math.log(1.0 / (1.0 - CONFIDENCE))))
        witness.update(samples=m, seed=seed)
        kind = "probabilistic"
    r = explainer.penalty.minimal_subgradient(g.view_as(z) + u / rho, u, eta)
    residual = float(r.flatten().norm())
    attribution_rounding = float((a.detach().double().cpu().reshape(z.shape) - (x - z) / rho).norm())
    value = (residual + deviation) / (1.0 - rho * lam) + attribution_rounding
    assumptions = [lam_id, "lipschitz"] if params["sigma"] is not None else [lam_id]
    return issue("solver-error", "solver-error", params, value, method, assumptions, witness, kind=kind)
