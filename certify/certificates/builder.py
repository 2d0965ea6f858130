"""Build certificates: turn the numbers of the solver and verification layers into claims (DESIGN sections
1 and 5). One certificate per explained example.

Claims issued when their assumptions hold, and refused with the reason when they do not:

* `lipschitz`: certified l2 Lipschitz constant of f_c (product of layer norms);
* `weak-convexity` and `curvature`: certified lambda (f_c + lambda/2 ||x||^2 convex) and beta
  (||Hess f_c|| <= beta) for softplus networks; refused for ReLU networks (not weakly convex in general);
* gradient explanations: `stability` ||grad f_c(x + d) - grad f_c(x)|| <= beta eps;
* MoreauGrad: `solver-error` ||a - MG_exact|| <= ||r||/(1 - rho lambda) + rounding; `stability`: vanilla
  eps/min(rho, 1/lambda - rho) (paper Corollary 1), sparse and group-sparse the corrected
  beta eps/(1 - rho beta) (DESIGN Errata: Corollary 2 as stated is false), each plus the solver terms
  ||r(x)||/(1 - rho lambda) + tol/(1 - rho lambda); `topk`: certified lower bound on the top-k
  intersection ratio under any ||d||_2 <= eps (feature i stays if |a_i| - |a_(k+1)| > sqrt(2) B);
* the Lagrange-dual explainer: bounds on the minimal flipping radius r* in its norm p: `radius-upper`
  (a verified flipping perturbation, re-evaluated by the checker), `radius-lipschitz` (min_j m_cj(x)/L_cj),
  `radius-relaxation` (CROWN bisection with an exactly re-checkable witness, ReLU networks),
  `radius-exact` (MILP, solver-reported, tiny ReLU networks, p in {1, inf}) and `radius-gap`;
* Integrated Gradients, SmoothGrad and the Lagrange-dual sensitivity: a refusal saying why no stability
  guarantee is given.

Values are written with the outward relative margin `document.MARGIN` (upper bounds rounded up, lower
bounds down), larger than the checker's own rounding allowance, so an honest certificate verifies and a claim
tightened by more than the margin does not.
"""
from __future__ import annotations

import copy
import math
import platform
import time
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import certify
from certify.bounds.curvature import curvature_bound, weak_convexity
from certify.bounds.lipschitz import lipschitz_product
from certify.bounds.milp import exact_minimal_radius
from certify.bounds.minimal_radius import EXACT_MAX_HIDDEN_UNITS
from certify.bounds.network import AffineNetwork, from_module
from certify.bounds.results import BoundResult
from certify.certificates.document import Certificate, Claim, encode_array, round_down, round_up
from certify.certificates.relaxation_claims import relaxation_radius_claim
from certify.errors import UnsupportedError, UsageError
from certify.explain.base import Explainer, Explanation
from certify.models.hashing import model_hash

SQRT2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
NO_STABILITY = {
    "integrated-gradients": "a quadrature of gradients along a path from the baseline: the sources give it no "
    "stability theorem, and for ReLU networks the gradients it sums are discontinuous",
    "smoothgrad": "a Monte Carlo average of gradients: its expectation is smooth (Proposition 1), but no "
    "certified bound covers the finite-sample estimate",
    "lagrange-dual": "the sensitivity lam* grad m_cj(x + delta*) follows the minimal perturbation, which can "
    "jump to another class pair or region under a small change of x: no stability theorem",
}


def _unit_row(num_classes: int, c: int) -> list[float]:
    row = [0.0] * num_classes
    row[c] = 1.0
    return row


class _ClaimSet:
    """The claims of one certificate, with helpers that refuse a claim whose assumption was refused."""

    def __init__(self) -> None:
        self.claims: list[Claim] = []

    def add(self, claim: Claim) -> Claim:
        self.claims.append(claim)
        return claim

    def refuse(self, id: str, type: str, statement: str, method: str, reason: str) -> Claim:
        return self.add(Claim.refused(id, type, statement, method, reason))

    def from_bound(self, id: str, type: str, statement: str, result: BoundResult, value: float | None,
                   relation: str = "<=", assumptions: list[str] | None = None, witness: dict | None = None) -> Claim:
        if result.refused or value is None or not math.isfinite(value):
            return self.refuse(id, type, statement, result.method, result.reason or "no finite bound")
        rounded = {"<=": round_up, ">=": round_down, "==": float}[relation](value)
        return self.add(Claim(id, type, statement, relation, rounded, result.kind.value, result.method,
                              assumptions or [], witness or {}, result.confidence))


def _network(model: nn.Module, input_shape: tuple[int, ...]) -> AffineNetwork | str:
    try:
        return from_module(model, input_shape)
    except UnsupportedError as exc:
        return str(exc)


def _model_claims(claims: _ClaimSet, net: AffineNetwork | str, c: int, num_classes: int) -> None:
    """Lipschitz constant, weak convexity and curvature of f_c (global)."""
    row = _unit_row(num_classes, c)
    stmt_l = f"|f_{c}(x) - f_{c}(y)| <= L ||x - y||_2 for all x, y"
    stmt_w = f"f_{c} + lambda/2 ||x||^2 is convex on R^n"
    stmt_b = f"||Hess f_{c}(x)||_2 <= beta for all x"
    if isinstance(net, str):
        for id_, type_, stmt in (("lipschitz", "lipschitz-product", stmt_l), ("weak-convexity", "weak-convexity", stmt_w),
                                 ("curvature", "curvature", stmt_b)):
            claims.refuse(id_, type_, stmt, "network-analysis", f"the model is not supported by the bound code: {net}")
        return
    c_row = torch.tensor(row, dtype=torch.float64)
    lip = lipschitz_product(net, 2, c_row[None])
    claims.from_bound("lipschitz", "lipschitz-product", stmt_l, lip, float(lip.value[0]), witness={"p": 2, "row": row})
    lam = weak_convexity(net, c_row)
    claims.from_bound("weak-convexity", "weak-convexity", stmt_w, lam, None if lam.refused else float(lam.value),
                      witness={"row": row})
    beta = curvature_bound(net, c_row)
    claims.from_bound("curvature", "curvature", stmt_b, beta, None if beta.refused else float(beta.value),
                      witness={"row": row})


def _claim_value(claims: _ClaimSet, id: str) -> float | None:
    for c in claims.claims:
        if c.id == id:
            return c.value if c.kind == "certified" else None
    return None


def _gradient_claims(claims: _ClaimSet, eps: float) -> None:
    stmt = f"||grad f_c(x + d) - grad f_c(x)||_2 <= value for all ||d||_2 <= {eps:g}"
    beta = _claim_value(claims, "curvature")
    if beta is None:
        claims.refuse("stability", "stability-gradient", stmt, "curvature", "no certified curvature bound beta for this model (see claim 'curvature')")
        return
    claims.add(Claim("stability", "stability-gradient", stmt, "<=", round_up(beta * eps), "certified",
                     "beta-smoothness", ["curvature"], {"eps": eps}))


def _smoothed_claim(claims: _ClaimSet, sigma: float) -> None:
    """Proposition 1 (sharpened): h = E f_c(. + sigma Z) is sqrt(2/pi) L / sigma-smooth, hence weakly convex
    with that constant, for f_c L-Lipschitz (L from the certified 'lipschitz' claim)."""
    stmt = f"h = E f_c(. + {sigma:g} Z) is lambda-weakly convex and ||Hess h|| <= lambda (lambda = sqrt(2/pi) L / sigma)"
    lipschitz = _claim_value(claims, "lipschitz")
    if lipschitz is None:
        claims.refuse("weak-convexity-smoothed", "smoothed-weak-convexity", stmt, "gaussian-smoothing-prop1",
                      "no certified Lipschitz constant of f_c")
        return
    claims.add(Claim("weak-convexity-smoothed", "smoothed-weak-convexity", stmt, "<=",
                     round_up(SQRT_2_OVER_PI * lipschitz / sigma), "certified", "gaussian-smoothing-prop1",
                     ["lipschitz"], {"sigma": sigma}))


def _moreaugrad_claims(claims: _ClaimSet, explainer: Any, explanation: Explanation, i: int, eps: float,
                       solver_error: BoundResult | None) -> None:
    """Solver error and stability of (sparse, group, smoothed) MoreauGrad. In smoothed mode lambda and beta
    are those of h (Proposition 1) and the solver error is probabilistic (Monte Carlo residual), so the
    stability claim carries its confidence."""
    rho, tol, eta = explainer.rho, explainer.tol, explainer.sparsity
    smoothed = explainer.smoothing_sigma > 0
    lam_id = "weak-convexity-smoothed" if smoothed else "weak-convexity"
    beta_id = "weak-convexity-smoothed" if smoothed else "curvature"
    stmt_err = "||a - MG_exact(x)||_2 <= value (a the stored explanation)"
    lam = _claim_value(claims, lam_id)
    if solver_error is None or lam is None:
        claims.refuse("solver-error", "solver-error", stmt_err, "moreaugrad-solver-error",
                      f"no certified weak-convexity constant (see claim {lam_id!r})")
    else:
        value = float(solver_error.value[i]) if not solver_error.refused else None
        z = solver_error.witness.get("z")
        witness = {"rho": rho, "sparsity": eta, "group_size": explainer.group_size,
                   "z": encode_array(z[i : i + 1].cpu().numpy()) if z is not None else None}
        claims.from_bound("solver-error", "solver-error", stmt_err, solver_error, value, assumptions=[lam_id], witness=witness)
    err_claim = next(c for c in claims.claims if c.id == "solver-error")
    err = err_claim.value
    kind, confidence = err_claim.kind, err_claim.confidence
    stmt = f"||MG(x + d) - MG(x)||_2 <= value for all ||d||_2 <= {eps:g} (computed explanations, tol {tol:g})"
    type_ = "stability-vanilla" if eta == 0 else "stability-sparse"
    if err is None or lam is None:
        claims.refuse("stability", type_, stmt, "moreaugrad",
                      "rests on a solver-error bound and a weak-convexity constant, one of which was refused")
        return
    if eta == 0:
        inv = 1.0 / lam - rho if lam > 0 else math.inf
        value = eps / min(rho, inv) + err + tol / (1 - rho * lam)
        claims.add(Claim("stability", type_, stmt, "<=", round_up(value), kind, "moreaugrad-corollary-1",
                         [lam_id, "solver-error"], {"eps": eps, "rho": rho, "tol": tol}, confidence))
        return
    beta = _claim_value(claims, beta_id)
    if beta is None or rho * beta >= 1:
        why = "no certified curvature bound beta" if beta is None else f"rho * beta = {rho * beta:.4g} >= 1"
        claims.refuse("stability", type_, stmt, "corrected-corollary-2",
                      f"{why}: the sparse stability bound beta eps/(1 - rho beta) needs rho beta < 1 "
                      "(the paper's Corollary 2 is false as stated, DESIGN Errata)")
        return
    value = beta * eps / (1 - rho * beta) + err + tol / (1 - rho * lam)
    claims.add(Claim("stability", type_, stmt, "<=", round_up(value), kind, "corrected-corollary-2",
                     sorted({beta_id, lam_id}) + ["solver-error"], {"eps": eps, "rho": rho, "tol": tol}, confidence))


def _norm_text(p: float) -> str:
    return "inf" if math.isinf(p) else str(int(p))


def _lagrange_claims(claims: _ClaimSet, net: AffineNetwork | str, explainer: Any, explanation: Explanation,
                     i: int, x: Tensor, num_classes: int) -> None:
    """Lower and upper bounds on r* = min ||delta||_p s.t. the decision changes (within the domain)."""
    p, d = explainer.p, explanation.diagnostics
    p_json = "inf" if math.isinf(p) else p  # JSON has no infinity; the checker reads float("inf")
    c = int(explanation.target[i])
    stmt_up = f"r*(x) <= value: x + delta (||delta||_{_norm_text(p)} = value) is classified differently"
    status = int(d["status"][i])
    domain = _domain_record(explainer.domain, tuple(x.shape[1:]))
    if status == 0:
        witness = {"p": p_json, "delta": encode_array(d["delta"][i : i + 1].detach().double().cpu().numpy())}
        if domain is not None:
            witness["domain"] = domain
        claims.add(Claim("radius-upper", "flip-witness", stmt_up, "<=", round_up(float(d["norm"][i])), "certified",
                         f"lagrange-dual-{explainer.method}", [], witness))
    else:
        reason = ("the input is already misclassified or tied (m_c(x) <= 0), so r* = 0" if status == 1
                  else "no flipping perturbation found within the iteration budget: the upper bound is infinite")
        claims.refuse("radius-upper", "flip-witness", stmt_up, f"lagrange-dual-{explainer.method}", reason)
    if isinstance(net, str):
        claims.refuse("radius-lipschitz", "lipschitz-radius", "r*(x) >= value", "lipschitz-product", net)
        return
    stmt_low = f"r*(x) >= value: no ||delta||_{_norm_text(p)} <= value changes the decision from class {c}"
    others = [j for j in range(num_classes) if j != c]
    rows = torch.zeros(len(others), num_classes, dtype=torch.float64)
    rows[:, c] = 1.0
    rows[torch.arange(len(others)), others] = -1.0
    lip = lipschitz_product(net, math.inf if math.isinf(p) else 2, rows)  # p = 1 uses l2: ||.||_2 <= ||.||_1
    with torch.no_grad():
        logits = net.forward(x.detach().double().flatten(1).cpu())[0]
    margins = logits[c] - logits[others]
    value = max(0.0, float((margins / lip.value).min()))
    claims.from_bound("radius-lipschitz", "lipschitz-radius", stmt_low, lip, value, relation=">=",
                      witness={"p": p_json, "lipschitz": [round_up(float(v)) for v in lip.value]})
    claims.add(relaxation_radius_claim(net, x.detach(), c, p, explainer.domain, "crown", claim_id="radius-relaxation"))
    lowers = [cl.id for cl in claims.claims if cl.id in ("radius-lipschitz", "radius-relaxation") and cl.kind == "certified"]
    if _small_relu(net) and not p == 2 and status == 0:
        exact = exact_minimal_radius(net, x.detach().double().flatten(1).cpu(), torch.tensor([c]), p, _domain_pair(explainer.domain),
                                     upper=float(d["norm"][i]) * (1 + 1e-6))
        value = float(exact.value[0])
        witness = {"solver": exact.details["solver"], "tolerances": exact.details["tolerances"],
                   "status": {str(j): v for j, v in exact.details["status"][0].items()}}
        claims.from_bound("radius-exact", "exact-radius", "r*(x) = value (MILP optimum, solver-reported)", exact,
                          value if math.isfinite(value) else None, relation="==", witness=witness)
    upper = next((cl for cl in claims.claims if cl.id == "radius-upper" and cl.kind == "certified"), None)
    if upper is not None and lowers:
        best = max(lowers, key=lambda cid: next(cl.value for cl in claims.claims if cl.id == cid))
        lower_value = next(cl.value for cl in claims.claims if cl.id == best)
        claims.add(Claim("radius-gap", "gap", "r* upper bound - certified lower bound <= value", "<=",
                         round_up(upper.value - lower_value), "certified", "difference",
                         ["radius-upper", best], {"upper": "radius-upper", "lower": best}))


def _small_relu(net: AffineNetwork) -> bool:
    return all(a.name == "relu" for a in net.activations) and sum(w.shape[0] for w in net.weights[:-1]) <= EXACT_MAX_HIDDEN_UNITS


def _domain_record(domain: Any, shape: tuple[int, ...]) -> list[list] | None:
    """The domain box as two nested lists for a witness, None when absent or unbounded everywhere. JSON has
    no infinity: an unbounded side is written as -/+1e308 (no input reaches it)."""
    if domain is None:
        return None
    lo, hi = (torch.broadcast_to(torch.as_tensor(b, dtype=torch.float64), shape) for b in domain)
    if bool(torch.isinf(lo).all() and torch.isinf(hi).all()):
        return None
    return [lo.clamp(-1e308, 1e308).tolist(), hi.clamp(-1e308, 1e308).tolist()]


def _domain_pair(domain: Any) -> tuple[Tensor, Tensor] | None:
    return None if domain is None else tuple(torch.as_tensor(b, dtype=torch.float64) for b in domain)


def _topk_claim(claims: _ClaimSet, attributions: Tensor, k: int, eps: float) -> None:
    stmt = f"top-{k} intersection ratio (ranking by |a|, ties against) >= value under every ||d||_2 <= {eps:g}"
    bound = _claim_value(claims, "stability")
    if bound is None:
        claims.refuse("topk", "topk-stability", stmt, "stability", "rests on the stability claim, which is not certified (refused or probabilistic)")
        return
    mags = attributions.detach().double().abs().flatten().sort(descending=True).values
    kept = int((mags[:k] - mags[k] > SQRT2 * bound * (1 + 1e-6)).sum())
    claims.add(Claim("topk", "topk-stability", stmt, ">=", kept / k, "certified", "stability-margin",
                     ["stability"], {"k": k, "bound": "stability"}))


def _provenance(model: nn.Module, model_spec: str | None, explainer: Explainer, seconds: float) -> dict[str, Any]:
    params = explainer.params()
    return {
        "package": f"certify {certify.__version__}",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(next(iter(model.parameters())).device) if any(True for _ in model.parameters()) else "cpu",
        "model": {"spec": model_spec, "sha256": model_hash(model), "architecture": repr(model)},
        "explainer": {"method": explainer.method_name, "params": params, "seed": params.get("seed")},
        "seconds": seconds,
    }


def certify_explanations(
    explainer: Explainer,
    inputs: Tensor,
    target: Any = None,
    eps: float = 0.1,
    k: int | None = None,
    model_spec: str | None = None,
) -> list[Certificate]:
    """Explain `inputs` with `explainer` and return one certificate per example.

    `eps`: L2 radius of the stability claims; `k`: top-k size (default 10% of the features)."""
    if not eps > 0:
        raise UsageError(f"eps must be positive, got {eps}")
    start = time.perf_counter()
    explanation = explainer.explain(inputs, target)
    model = explainer.model
    input_shape = tuple(inputs.shape[1:])
    net = _network(model, input_shape)
    features = int(np.prod(input_shape))
    k = k if k is not None else max(1, features // 10)
    if not 0 < k < features:
        raise UsageError(f"k must lie in 1..{features - 1}, got {k}")
    num_classes = int(model(inputs[:1]).shape[1])
    moreau = explanation.method == "moreaugrad"
    certificates = []
    model_claims: dict[int, _ClaimSet] = {}
    for c in sorted(set(explanation.target.tolist())):
        model_claims[c] = _ClaimSet()
        _model_claims(model_claims[c], net, c, num_classes)
    solver_errors: dict[int, BoundResult] = {}
    if moreau:
        for c, cs in model_claims.items():
            if explainer.smoothing_sigma > 0:
                _smoothed_claim(cs, explainer.smoothing_sigma)
            lam = _claim_value(cs, "weak-convexity-smoothed" if explainer.smoothing_sigma > 0 else "weak-convexity")
            if lam is not None:
                solver_errors[c] = explainer.solver_error_bound(explanation, weak_convexity=lam,
                                                                lipschitz=_claim_value(cs, "lipschitz"))
    provenance = _provenance(model, model_spec, explainer, time.perf_counter() - start)  # hashes the weights once
    for i in range(inputs.shape[0]):
        c = int(explanation.target[i])
        claims = _ClaimSet()
        claims.claims = [Claim(**vars(cl)) for cl in model_claims[c].claims]
        if explanation.method == "gradient":
            _gradient_claims(claims, eps)
        elif moreau:
            _moreaugrad_claims(claims, explainer, explanation, i, eps, solver_errors.get(c))
        if explanation.method == "lagrange-dual":
            _lagrange_claims(claims, net, explainer, explanation, i, inputs[i : i + 1], num_classes)
        if explanation.method not in ("gradient", "moreaugrad"):
            claims.refuse("stability", "stability", f"||a(x + d) - a(x)|| bounded for ||d||_2 <= {eps:g}",
                          explanation.method, NO_STABILITY.get(explanation.method, "no stability theorem for this method"))
        _topk_claim(claims, explanation.attributions[i], k, eps)
        certificates.append(Certificate(
            provenance=copy.deepcopy(provenance),
            input=encode_array(inputs[i : i + 1].detach().cpu().numpy()),
            target=c,
            explanation=encode_array(explanation.attributions[i : i + 1].detach().cpu().numpy()),
            claims=claims.claims,
        ))
    return certificates
