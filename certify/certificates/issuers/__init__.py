"""Per-method claim issuers and the one dispatcher `certify_explanations` (issue 10: "per-method claim
issuers instead of one builder that knows every method").

Every certificate carries the claims about the function N_c (`common.model_claims`: implementation
deviation, Lipschitz, weak convexity, curvature), the claims of its method (`ISSUERS`), and a top-k claim
resting on the method's stability claim. Statements are rendered from params (`claims.render`), values
rounded outward by `vocabulary.BUILDER_MARGIN`; a bound-based claim is refused, with the reason, when
the model cannot be translated exactly or the translation fails its conformance check; claims about the
score N_c itself (Lipschitz, curvature, gradient, explanation error and stability) are also refused when
the model's final softmax was dropped (`Issuing.score_refusal`). Margin and radius claims (lagrange-dual)
stand for a dropped softmax: it does not change the argmax.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from certify.bounds.stability import topk_kept
from certify.certificates.claims import issue, refuse
from certify.certificates.document import Certificate, encode_array
from certify.certificates.issuers.common import ClaimList, Issuing, model_claims, provenance
from certify.certificates.issuers.gradient import gradient_claims, ig_claims, smoothgrad_claims
from certify.certificates.issuers.lagrange import lagrange_claims
from certify.certificates.issuers.moreaugrad import moreaugrad_claims
from certify.certificates.issuers.sparsified import sparsified_claims
from certify.errors import InvalidInputError, UnsupportedError, UsageError
from certify.explain.base import Explainer

NO_STABILITY = {
    "integrated-gradients": "a quadrature of gradients along a path from the baseline: the sources give it no "
    "stability theorem, and for ReLU networks the gradients it sums are discontinuous",
    "smoothgrad": "a Monte Carlo average of gradients: its expectation is smooth (Proposition 1), but no "
    "certified bound covers the finite-sample estimate",
    "lagrange-dual": "the sensitivity lam* grad m_cj(x + delta*) follows the minimal perturbation, which can "
    "jump to another class pair or region under a small change of x: no stability theorem",
    "sparsified-smoothgrad": "a Monte Carlo average of top-l0 indicators: its certified top-k (Levine, Singla & Feizi "
    "2019) is probabilistic and about the top-k sets, not a bound on ||a(x + d) - a(x)||",
    "relex": "a mask from a seeded stochastic optimisation: no stability theorem",
    "deeplift": "DeepLIFT's multipliers follow the network's activation pattern and jump where it changes: no stability "
    "theorem in the sources",
    "kernel-shap": "a least-squares fit on randomly sampled coalitions: no certified bound covers the finite-sample estimate",
    "shapley-value-sampling": "a Monte Carlo average over random permutations: no certified bound covers the finite-sample "
    "estimate",
    "lime": "a Lasso fit on randomly sampled coalitions: no stability theorem, and no certified bound covers the "
    "finite-sample estimate",
    "occlusion": "score drops under window occlusion: the sources give no stability theorem (a certified Lipschitz "
    "constant L would bound each entry's change by 2 L eps; no issuer states it yet)",
    "grad-cam": "hidden-layer gradients averaged over channels and upsampled: the sources give no stability theorem "
    "(and for ReLU networks the map jumps where the activation pattern changes)",
    "sobol": "a global Monte Carlo index of the target class, the same for every input of that class: no claim is issued "
    "about the estimate",
}


def _no_stability(claims: ClaimList, method: str, c: int, eps: float) -> None:
    claims.add(refuse("stability", "stability-none", {"target": c, "eps": eps}, method,
                      NO_STABILITY.get(method, "no stability theorem for this method")))


def _topk(claims: ClaimList, a: Tensor, c: int, k: int, eps: float) -> None:
    params = {"target": c, "k": k, "eps": eps}
    stability = claims.get("stability")
    if stability is None or stability.kind != "certified" or stability.type == "stability-none":
        claims.add(refuse("topk", "topk-stability", params, "stability-margin",
                          "rests on the stability claim, which is not certified (refused or probabilistic)"))
        return
    kept = topk_kept(a, k, stability.value * (1 + 1e-6))
    claim = issue("topk", "topk-stability", params, kept / k, "stability-margin", ["stability"])
    claim.value = kept / k  # a count over k: exact, not rounded
    claims.add(claim)


def certify_explanations(
    explainer: Explainer,
    inputs: Tensor,
    target: Any = None,
    eps: float = 0.1,
    k: int | None = None,
    model_spec: str | None = None,
) -> list[Certificate]:
    """Explain `inputs` with `explainer` and return one certificate per example.

    `eps`: L2 radius of the stability claims (finite, > 0); `k`: top-k size (default 10% of the features)."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps > 0):
        raise UsageError(f"eps must be a finite number > 0, got {eps!r}")
    eps = float(eps)
    if isinstance(inputs, (tuple, list)):
        raise UnsupportedError("certificates cover one input tensor of a model with [N, C] outputs; tuple inputs are "
                               "explained (attribute) but not certified")
    start = time.perf_counter()
    explanation = explainer.explain(inputs, target)
    if explanation.target.dim() != 1:
        raise UnsupportedError("certificates cover models with [N, C] outputs; index-tuple targets (outputs with more "
                               "than two dimensions) are explained but not certified")
    attributions = explanation.attributions
    if not bool(torch.isfinite(attributions).all()):
        raise InvalidInputError("the explanation has NaN or infinite attributions (is the model's gradient defined at the input?)")
    model = explainer.model
    input_shape = tuple(inputs.shape[1:])
    features = int(np.prod(input_shape))
    k = k if k is not None else max(1, features // 10)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k < features:
        raise UsageError(f"k must be an integer in 1..{features - 1}, got {k!r}")
    with torch.no_grad():
        num_classes = int(model(inputs[:1]).shape[1])
    state = Issuing.build(model, inputs, num_classes)
    method = explanation.method
    per_class: dict[tuple[int, str | None], list] = {}
    prov = provenance(model, model_spec, explainer, time.perf_counter() - start)
    source = "predicted" if target is None else "given"
    certificates = []
    for i in range(inputs.shape[0]):
        c = int(explanation.target[i])
        refusal = state.refusal(i)
        key = (c, refusal)
        if key not in per_class:
            per_class[key] = model_claims(state, c, refusal)
        claims = ClaimList(copy.deepcopy(per_class[key]))
        a = attributions[i]
        if method == "gradient":
            gradient_claims(claims, state, inputs[i : i + 1], a, c, eps, state.score_refusal(i))
        elif method == "moreaugrad":
            moreaugrad_claims(claims, state, explainer, explanation.diagnostics, i, a, c, eps, state.score_refusal(i))
        else:
            if method == "integrated-gradients":
                ig_claims(claims, state, explainer, inputs[i : i + 1], a, c, state.score_refusal(i))
            elif method == "smoothgrad":
                smoothgrad_claims(claims, state, explainer, inputs[i : i + 1], a, c, i, state.score_refusal(i))
            _no_stability(claims, method, c, eps)
            if method == "sparsified-smoothgrad":
                sparsified_claims(claims, state, explainer, inputs[i : i + 1], a, c, k, eps, inputs.shape[0], i,
                                  state.score_refusal(i))
            if method == "lagrange-dual":
                lagrange_claims(claims, state, explainer, explanation.diagnostics, i, inputs[i : i + 1], c, refusal)
        _topk(claims, a, c, k, eps)
        certificates.append(Certificate(
            provenance=copy.deepcopy(prov),
            function=copy.deepcopy(state.functions[i]),
            input=encode_array(inputs[i : i + 1].detach().double().cpu().numpy()),
            explanation=encode_array(attributions[i : i + 1].detach().double().cpu().numpy()),
            target=c,
            target_source=source,
            claims=claims.claims,
        ))
    return certificates
