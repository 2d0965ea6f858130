"""Claims of gradient explanations a = grad f_c(x):

* `explanation-error`: ||a - grad N_c(x)||_2, grad N_c recomputed in float64 with exact softplus (plus a
  bound on its float64 rounding): a made-up explanation gets a large value;
* `stability-gradient`: ||grad N_c(x + d) - a||_2 <= beta eps + explanation error for ||d||_2 <= eps
  (`certify.bounds.stability.gradient_stability`), resting on `curvature` and `explanation-error`.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from certify.bounds.local import local_constants, region_boxes, unstable_units
from certify.bounds.smoothing import vector_mean_deviation
from certify.bounds.stability import gradient_stability
from certify.certificates.claims import issue, refuse
from certify.certificates.issuers.common import U64, ClaimList, Issuing, _gamma, exact_gradient, unit_row
from certify.certificates.issuers.moreaugrad import LOCAL_METHOD, smoothed_samples

PATTERN_METHOD = "local-activation-pattern"
from certify.errors import UnsupportedError
from certify.explain.integrated_gradients import quadrature


def gradient_claims(claims: ClaimList, state: Issuing, x: Tensor, a: Tensor, c: int, eps: float, refusal: str | None) -> None:
    err_params = {"target": c, "method": "gradient", "quadrature": None, "n_steps": None, "baseline": None}
    stab_params = {"target": c, "eps": eps}
    if refusal is not None:
        claims.add(refuse("explanation-error", "explanation-error", err_params, "float64-gradient", refusal))
        claims.add(refuse("stability", "stability-gradient", stab_params, "beta-smoothness", refusal))
        return
    g, rounding = exact_gradient(state.net, unit_row(state.num_classes, c), x.detach().double().cpu().flatten(1))
    err = float((a.detach().double().cpu().flatten() - g[0]).norm()) + float(rounding[0])
    claims.add(issue("explanation-error", "explanation-error", err_params, err, "float64-gradient"))
    beta_id = _local_curvature(claims, state, x, c, eps)
    beta = claims.certified(beta_id)
    if beta is None:
        local = claims.get(beta_id) if beta_id == "curvature-local" else None
        claims.add(refuse("stability", "stability-gradient", stab_params, "beta-smoothness",
                          local.reason if local is not None else
                          "no certified curvature bound beta for this model (see claim 'curvature')"))
        return
    claims.add(issue("stability", "stability-gradient", stab_params, gradient_stability(eps, beta, claims.certified("explanation-error")),
                     "beta-smoothness", [beta_id, "explanation-error"]))


def _local_curvature(claims: ClaimList, state: Issuing, x: Tensor, c: int, eps: float) -> str:
    """The id of the curvature claim the stability rests on: "curvature-local" (beta on B(x, eps), issued here
    by certify.bounds.local, DESIGN section 11) when it beats the global "curvature", else "curvature". On a
    ReLU chain "curvature-local" is 0 when no unit's interval box on the ball contains 0 (N is affine there,
    its gradient constant), else refused with the count of units that may change state."""
    beta_global = claims.certified("curvature")
    x = x.detach().double().cpu()
    radius = torch.tensor([eps], dtype=torch.float64)
    params = {"target": c, "radius": eps}
    acts = [] if state.net is None else state.net.activations
    if acts and all(a.name == "relu" for a in acts) and state.net.is_chain:
        unstable = int(unstable_units(region_boxes(state.net, x.flatten(1), radius, 2))[0])
        if unstable:
            claims.add(refuse("curvature-local", "curvature", params, PATTERN_METHOD,
                              f"{unstable} ReLU units may change state on the l2 ball of radius {eps:g} (interval bounds): "
                              "the gradient is not certified constant there"))
        else:
            claims.add(issue("curvature-local", "curvature", params, 0.0, PATTERN_METHOD))
        return "curvature-local"
    try:
        local = local_constants(state.net, x, unit_row(state.num_classes, c)[None], radius)
    except UnsupportedError:
        return "curvature"
    beta = float(local.beta[0])
    if beta_global is not None and not beta < beta_global:
        return "curvature"
    claims.add(issue("curvature-local", "curvature", params, beta if beta_global is None else min(beta, beta_global),
                     LOCAL_METHOD))
    return "curvature-local"


def integrated_gradients_error(state: Issuing, x: Tensor, a: Tensor, c: int, rule: str, n_steps: int,
                               baseline: float) -> float:
    """||a - IG_Q(x)||_2 + the float64 error bound of IG_Q: IG_Q(x) = (x - x') * sum_k w_k grad N_c(p_k), the
    points p_k = x' + a_k (x - x') formed in float64, nodes and weights from the rule in float64."""
    nodes, weights = quadrature(rule, n_steps)
    x64 = x.detach().double().cpu().flatten(1)
    base = torch.full_like(x64, float(baseline))
    diff = x64 - base
    alphas = torch.as_tensor(nodes, dtype=torch.float64)[:, None]
    w = torch.as_tensor(weights, dtype=torch.float64)[:, None]
    grads, errs = exact_gradient(state.net, unit_row(state.num_classes, c), base + alphas * diff)
    total = (w * grads).sum(dim=0)
    # per-coordinate error of the weighted sum: sum_k w_k |err_k| (err_k bounded in l2, so per coordinate too)
    # plus the summation's own rounding; then the product with diff
    e_sum = float((w[:, 0] * errs).sum()) + _gamma(n_steps + 1) * float((w * grads).abs().sum(dim=0).norm())
    ig = diff[0] * total
    bound = float(diff.abs().max()) * e_sum + U64 * float(ig.norm())
    return float((a.detach().double().cpu().flatten() - ig).norm()) + bound * (1 + 1e-6)


def ig_claims(claims: ClaimList, state: Issuing, explainer: object, x: Tensor, a: Tensor, c: int, refusal: str | None) -> None:
    params = {"target": c, "method": "integrated-gradients", "quadrature": explainer.method,
              "n_steps": explainer.n_steps, "baseline": 0.0}  # certify_explanations explains from the zero baseline
    if refusal is not None:
        claims.add(refuse("explanation-error", "explanation-error", params, "float64-quadrature", refusal))
        return
    err = integrated_gradients_error(state, x, a, c, explainer.method, explainer.n_steps, 0.0)
    claims.add(issue("explanation-error", "explanation-error", params, err, "float64-quadrature"))


SMOOTHGRAD_CONFIDENCE = 0.99
SMOOTHGRAD_SEED_OFFSET = 2_000_003


def smoothgrad_claims(claims: ClaimList, state: Issuing, explainer: Any, x: Tensor, a: Tensor, c: int, i: int,
                      refusal: str | None) -> None:
    """`smoothed-explanation-error` (probabilistic): ||a - grad h(x)|| <= ||a - g_m|| + (L / sqrt(m))(1 +
    sqrt(2 ln(1/delta))), g_m the mean of grad N_c at x + sigma Z_i over m = 4 x samples fresh draws
    (`smoothed_samples(seed, m, n)`, reproduced by the checker), every sample gradient norm <= L checked
    (McDiarmid, as for the smoothed MoreauGrad residual). It binds the explanation to its class."""
    sigma = float(explainer.noise_scale(x)[0])
    params = {"target": c, "sigma": sigma if sigma > 0 else 1.0, "confidence": SMOOTHGRAD_CONFIDENCE}
    method = "monte-carlo-mcdiarmid"
    lipschitz = claims.certified("lipschitz")
    if refusal is not None or lipschitz is None or not sigma > 0:
        why = refusal or ("no certified Lipschitz constant of N_c" if lipschitz is None else
                          "sigma = 0: the explanation is a plain gradient")
        claims.add(refuse("explanation-error", "smoothed-explanation-error", params, method, why))
        return
    m = 4 * int(explainer.samples)
    seed = (explainer.seed if explainer.seed is not None else int(torch.randint(0, 2**31 - 1, ()))) + SMOOTHGRAD_SEED_OFFSET + i
    x64 = x.detach().double().cpu().flatten(1)
    grads, rounding = exact_gradient(state.net, unit_row(state.num_classes, c), x64 + sigma * smoothed_samples(seed, m, x64.shape[1]))
    worst = float(grads.norm(dim=1).max())
    if worst > lipschitz:
        claims.add(refuse("explanation-error", "smoothed-explanation-error", params, method,
                          f"a sample gradient has norm {worst:.6g} > the certified Lipschitz constant {lipschitz:.6g}"))
        return
    deviation = float(rounding.max()) + vector_mean_deviation(lipschitz, m, 1.0 - SMOOTHGRAD_CONFIDENCE)
    value = float((a.detach().double().cpu().flatten() - grads.mean(dim=0)).norm()) + deviation
    claims.add(issue("explanation-error", "smoothed-explanation-error", params, value, method, ["lipschitz"],
                     {"samples": m, "seed": seed}, kind="probabilistic"))
