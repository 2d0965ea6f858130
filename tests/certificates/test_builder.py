"""The certificate builder (certify/certificates/builder.py -> `certify.certificates.issuers.certify_explanations`):
dispatch to the method's issuer, eps and k validation, one certificate per example (its input, explanation
and target), provenance, the stability refusal of methods without a theorem, and the top-k claim."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from certify.bounds.stability import topk_kept
from certify.certificates.builder import NO_STABILITY, certify_explanations
from certify.errors import InvalidInputError, UsageError
from certify.explain import Gradient, IntegratedGradients, SmoothGrad
from certify.explain.lagrange_dual import LagrangeDual
from certify.explain.moreaugrad import MoreauGrad
from certify.models.hashing import model_hash

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from graph_models import REFUSED  # noqa: E402

MODEL_CLAIMS = {"implementation-deviation": "implementation-deviation", "lipschitz": "lipschitz",
                "weak-convexity": "weak-convexity", "curvature": "curvature"}


def _net(act: nn.Module | None = None, inputs: int = 5, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(inputs, 8), act or nn.Softplus(), nn.Linear(8, 3)).double().eval()


def _x(n: int = 3, inputs: int = 5) -> torch.Tensor:
    return torch.rand(n, inputs, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


# the claims of each method beyond the model claims and top-k: (id, type) pairs
METHODS = {
    "gradient": (lambda m: Gradient(m), {("explanation-error", "explanation-error"), ("stability", "stability-gradient")}),
    "integrated-gradients": (lambda m: IntegratedGradients(m, n_steps=8),
                             {("explanation-error", "explanation-error"), ("stability", "stability-none")}),
    "smoothgrad": (lambda m: SmoothGrad(m, sigma=0.1, samples=4, seed=0),
                   {("explanation-error", "smoothed-explanation-error"), ("stability", "stability-none")}),
    "moreaugrad": (lambda m: MoreauGrad(m, rho=0.1, tol=1e-6),
                   {("solver-error", "solver-error"), ("stability", "stability-moreaugrad")}),
    "lagrange-dual": (lambda m: LagrangeDual(m, p=2, domain=(0.0, 1.0)),
                      {("stability", "stability-none"), ("radius-upper", "flip-witness"),
                       ("radius-lipschitz", "lipschitz-radius"), ("radius-relaxation", "radius-lower"),
                       ("radius-gap", "gap")}),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_dispatch_gives_each_method_its_issuer_claims(method):
    make, expected = METHODS[method]
    model = _net(nn.ReLU() if method == "lagrange-dual" else None)
    certs = certify_explanations(make(model), _x(2), eps=0.05, k=2)
    for cert in certs:
        got = {(c.id, c.type) for c in cert.claims}
        assert got - set(MODEL_CLAIMS.items()) - {("topk", "topk-stability")} >= expected - {("radius-gap", "gap")}
        assert set(MODEL_CLAIMS.items()) | {("topk", "topk-stability")} <= got
        assert len({c.id for c in cert.claims}) == len(cert.claims)  # ids are unique
        assert cert.provenance["explainer"]["method"] == method
        if method in NO_STABILITY:
            stability = cert.claim("stability")
            assert stability.kind == "refused" and stability.reason == NO_STABILITY[method]
            assert cert.claim("topk").kind == "refused" and "not certified" in cert.claim("topk").reason


def test_one_certificate_per_example_with_its_input_explanation_and_target():
    model = _net()
    x = _x(4)
    explainer = Gradient(model)
    certs = certify_explanations(explainer, x, target=[0, 1, 2, 1], eps=0.05, k=1)
    expected = explainer.attribute(x, [0, 1, 2, 1])
    assert len(certs) == 4
    for i, cert in enumerate(certs):
        assert np.array_equal(np.asarray(cert.input["values"]).reshape(-1), x[i].numpy())
        assert np.allclose(np.asarray(cert.explanation["values"]).reshape(-1), expected[i].numpy(), rtol=0, atol=0)
        assert cert.target == [0, 1, 2, 1][i] and cert.target_source == "given"
        assert all(c.params.get("target", cert.target) == cert.target for c in cert.claims)
    predicted = certify_explanations(explainer, x, eps=0.05, k=1)
    assert [c.target for c in predicted] == model(x).argmax(1).tolist()
    assert all(c.target_source == "predicted" for c in predicted)


def test_provenance_records_the_model_the_explainer_and_the_run():
    model = _net()
    explainer = MoreauGrad(model, rho=0.1, tol=1e-6, seed=3)
    (cert,) = certify_explanations(explainer, _x(1), eps=0.05, k=1, model_spec="my:model")
    prov = cert.provenance
    assert prov["model"]["spec"] == "my:model" and prov["model"]["sha256"] == model_hash(model)
    assert prov["model"]["dtype"] == "float64" and "Softplus" in prov["model"]["architecture"]
    assert prov["explainer"] == {"method": "moreaugrad", "params": explainer.params(), "seed": 3}
    assert prov["package"].startswith("certify ") and prov["seconds"] >= 0 and prov["device"] == "cpu"
    assert cert.function["conformance"]["passed"] and cert.version == 2


@pytest.mark.parametrize("eps", [math.inf, math.nan, -0.1, 0.0, True, "0.1", None])
def test_eps_must_be_finite_and_positive(eps):
    with pytest.raises(UsageError, match="eps"):
        certify_explanations(Gradient(_net()), _x(1), eps=eps)


@pytest.mark.parametrize("k", [0, 5, 6, -1, True, 1.5, "2"])
def test_k_must_lie_between_one_and_the_feature_count(k):
    with pytest.raises(UsageError, match="k must be an integer in 1..4"):
        certify_explanations(Gradient(_net()), _x(1), eps=0.1, k=k)


def test_default_k_is_a_tenth_of_the_features():
    model = nn.Sequential(nn.Linear(30, 3)).double().eval()
    (cert,) = certify_explanations(Gradient(model), torch.rand(1, 30, dtype=torch.float64), eps=0.1)
    assert cert.claim("topk").params["k"] == 3


def test_topk_counts_the_features_kept_by_the_stability_margin():
    model = _net()
    for cert in certify_explanations(Gradient(model), _x(3), eps=0.01, k=2):
        a = torch.tensor(cert.explanation["values"], dtype=torch.float64).reshape(-1)
        stability = cert.claim("stability")
        topk = cert.claim("topk")
        assert topk.kind == "certified" and topk.assumptions == ["stability"]
        assert topk.value == topk_kept(a, 2, stability.value * (1 + 1e-6)) / 2
        assert topk.value <= topk_kept(a, 2, stability.value) / 2  # the margin only keeps fewer


def test_non_finite_attributions_are_refused_before_any_claim():
    class Sqrt(nn.Module):
        def forward(self, x):
            return torch.stack([x.sum(1).sqrt(), -x.sum(1)], 1)

    with pytest.raises(InvalidInputError):
        certify_explanations(Gradient(Sqrt().eval()), torch.zeros(1, 3, dtype=torch.float64), eps=0.1, k=1)


def test_models_that_cannot_be_translated_get_refusals_with_the_reason():
    build, shape, _ = REFUSED["product"]  # x * relu(x): a product of two input-dependent values
    model = build(0).double()
    (cert,) = certify_explanations(Gradient(model), _x(1, shape[0]), eps=0.1, k=1)
    assert "cannot be translated" in cert.function["refused"]
    assert all(c.kind == "refused" and c.reason for c in cert.claims)
    assert cert.claim("lipschitz").reason == cert.function["refused"]
