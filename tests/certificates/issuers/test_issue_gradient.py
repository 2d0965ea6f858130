"""Claims of gradient, Integrated Gradients and SmoothGrad explanations (certify/certificates/issuers/gradient.py):
the explanation error is ||a - E(x)|| for E recomputed in float64 (a made-up explanation gets a large value),
the gradient stability is `gradient_stability(eps, beta, err)` and holds on sampled shifts, IG's error is
against its stored quadrature, SmoothGrad's is probabilistic with the McDiarmid term and its seed."""
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from certify.bounds.smoothing import vector_mean_deviation
from certify.bounds.stability import gradient_stability
from certify.certificates.builder import certify_explanations
from certify.certificates.checker import verify_certificate
from certify.certificates.issuers.common import ClaimList, Issuing, model_claims
from certify.certificates.issuers.gradient import (SMOOTHGRAD_CONFIDENCE, gradient_claims, integrated_gradients_error,
                                                   smoothgrad_claims)
from certify.explain import Gradient, IntegratedGradients, SmoothGrad
from certify.explain.integrated_gradients import quadrature

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from graph_models import GRAPH_MODELS  # noqa: E402


def _net(act: nn.Module | None = None, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), act or nn.Softplus(), nn.Linear(8, 3)).double().eval()


def _x(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))


def _grad(model, x, c):
    x = x.clone().requires_grad_(True)
    model(x)[:, c].sum().backward()
    return x.grad


def _claims(model, x, c, a, eps=0.1):
    state = Issuing.build(model, x, 3)
    claims = ClaimList(model_claims(state, c, None))
    gradient_claims(claims, state, x, a, c, eps, None)
    return claims


def test_gradient_explanation_error_is_tiny_for_the_gradient_and_large_for_a_made_up_vector():
    model, x = _net(), _x(1)
    g = _grad(model, x, 0)[0]
    honest = _claims(model, x, 0, g)
    assert honest.get("explanation-error").kind == "certified" and honest.certified("explanation-error") < 1e-12
    fake = torch.zeros(5, dtype=torch.float64)
    fake[0] = 10.0
    made_up = _claims(model, x, 0, fake)
    assert made_up.certified("explanation-error") >= float((fake - g).norm())


def test_gradient_stability_uses_the_shared_formula_and_holds_on_sampled_shifts():
    model, eps = _net(seed=1), 0.2
    for x in _x(3).split(1):
        g = _grad(model, x, 2)[0]
        claims = _claims(model, x, 2, g, eps)
        stability = claims.get("stability")
        beta_id = stability.assumptions[0]  # the local beta on B(x, eps) when it beats the global one
        assert stability.type == "stability-gradient" and stability.assumptions in (
            ["curvature", "explanation-error"], ["curvature-local", "explanation-error"])
        assert claims.certified(beta_id) <= claims.certified("curvature")
        if beta_id == "curvature-local":
            assert claims.get(beta_id).params == {"target": 2, "radius": eps}
        expected = gradient_stability(eps, claims.certified(beta_id), claims.certified("explanation-error"))
        assert stability.value == pytest.approx(expected, rel=1e-8) and stability.value >= expected
        d = torch.randn(64, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        d = eps * d / d.norm(dim=1, keepdim=True)
        assert float((_grad(model, x + d, 2) - g).norm(dim=1).max()) <= stability.value


def test_relu_nets_get_a_gradient_stability_only_where_no_unit_changes_state():
    """ReLU (issue 13, item 3): on a ball where no unit's box contains 0, N is affine, the local curvature is 0
    and the stability is the explanation error alone (the gradient is constant: checked at sampled shifts and
    by the checker); on a ball where units may switch, both are refused with their count."""
    model, x = _net(nn.ReLU()), _x(1)
    g = _grad(model, x, 0)[0]
    claims = _claims(model, x, 0, g, eps=5.0)
    assert claims.get("explanation-error").kind == "certified"
    local, stability = claims.get("curvature-local"), claims.get("stability")
    assert local.kind == stability.kind == "refused" and "ReLU units may change state" in stability.reason
    assert local.reason == stability.reason
    eps = 1e-3
    claims = _claims(model, x, 0, g, eps=eps)
    local, stability = claims.get("curvature-local"), claims.get("stability")
    assert local.kind == "certified" and local.value <= 1e-300 and local.params == {"target": 0, "radius": eps}
    assert stability.kind == "certified" and stability.value == pytest.approx(claims.certified("explanation-error"), abs=1e-15)
    d = torch.randn(64, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    d = eps * d / d.norm(dim=1, keepdim=True)
    assert float((_grad(model, x + d, 0) - g).norm(dim=1).max()) <= stability.value + 1e-15


def test_relu_constant_gradient_certificate_verifies_and_an_enlarged_ball_is_rejected():
    model, x = _net(nn.ReLU()), _x(1)
    (cert,) = certify_explanations(Gradient(model), x, target=0, eps=1e-3, k=1)
    assert cert.claim("curvature-local").value <= 1e-300 and cert.claim("stability").kind == "certified"
    assert verify_certificate(cert, model).valid
    claim = cert.claim("curvature-local")
    claim.params["radius"] = 5.0  # units switch on this ball: the checker must not accept 0 there
    from certify.certificates.claims import render
    claim.statement = render(claim.type, claim.params)
    report = verify_certificate(cert, model)
    assert not report.valid and any("ReLU units may change state" in f for f in report.failures())


def test_a_refusal_reason_refuses_both_claims():
    model, x = _net(), _x(1)
    state = Issuing.build(model, x, 3)
    claims = ClaimList()
    gradient_claims(claims, state, x, _grad(model, x, 0)[0], 0, 0.1, "the conformance check failed")
    assert [(c.id, c.kind, c.reason) for c in claims.claims] == [
        ("explanation-error", "refused", "the conformance check failed"), ("stability", "refused", "the conformance check failed")]


@pytest.mark.parametrize("rule, n_steps", [("gausslegendre", 8), ("riemann_trapezoid", 16), ("riemann_left", 5)])
def test_integrated_gradients_error_is_against_the_stored_quadrature(rule, n_steps):
    model, x = _net(seed=2), _x(1)
    nodes, weights = quadrature(rule, n_steps)
    path = torch.as_tensor(nodes)[:, None] * x  # baseline 0
    reference = x[0] * (torch.as_tensor(weights)[:, None] * _grad(model, path, 1)).sum(0)
    state = Issuing.build(model, x, 3)
    err = integrated_gradients_error(state, x, reference, 1, rule, n_steps, 0.0)
    assert 0 <= err < 1e-12
    shifted = reference + 1e-3
    assert integrated_gradients_error(state, x, shifted, 1, rule, n_steps, 0.0) >= float((shifted - reference).norm()) - 1e-12
    (cert,) = certify_explanations(IntegratedGradients(model, n_steps=n_steps, method=rule), x, target=1, eps=0.1, k=1)
    claim = cert.claim("explanation-error")
    assert claim.params == {"target": 1, "method": "integrated-gradients", "quadrature": rule, "n_steps": n_steps,
                            "baseline": 0.0}
    assert claim.kind == "certified" and claim.value < 1e-9
    assert verify_certificate(cert, model).valid


def _linear() -> nn.Linear:
    layer = nn.Linear(5, 3).double().eval()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    return layer


def test_smoothgrad_error_is_probabilistic_with_the_mcdiarmid_term_and_bounds_the_exact_smoothed_gradient():
    model, x = _linear(), _x(2)
    explainer = SmoothGrad(model, sigma=0.3, samples=6, seed=5)
    certs = certify_explanations(explainer, x, target=1, eps=0.1, k=1)
    again = certify_explanations(explainer, x, target=1, eps=0.1, k=1)
    w = model.weight.detach()[1]  # grad h = w for a linear score
    for i, cert in enumerate(certs):
        err = cert.claim("explanation-error")
        assert err.type == "smoothed-explanation-error" and err.kind == "probabilistic"
        assert err.params == {"target": 1, "sigma": 0.3, "confidence": SMOOTHGRAD_CONFIDENCE}
        assert err.witness["samples"] == 24 and err.assumptions == ["lipschitz"]
        lip = cert.claim("lipschitz").value
        assert err.value >= vector_mean_deviation(lip, 24, 1 - SMOOTHGRAD_CONFIDENCE)
        a = torch.tensor(cert.explanation["values"], dtype=torch.float64).reshape(5)
        assert float((a - w).norm()) <= err.value
        assert again[i].claim("explanation-error").value == err.value  # the seed reproduces the draw
        report = verify_certificate(cert, model)
        assert report.valid, report.failures()


def test_smoothgrad_refusals():
    model, x = _linear(), _x(1)
    state = Issuing.build(model, x, 3)
    claims = ClaimList(model_claims(state, 0, None))
    smoothgrad_claims(claims, state, SmoothGrad(model, sigma=0.0, samples=2), x, _grad(model, x, 0)[0], 0, 0, None)
    assert claims.get("explanation-error").kind == "refused" and "sigma = 0" in claims.get("explanation-error").reason
    claims = ClaimList(model_claims(state, 0, "translation refused"))
    smoothgrad_claims(claims, state, SmoothGrad(model, sigma=0.1, samples=2), x, _grad(model, x, 0)[0], 0, 0, "translation refused")
    assert claims.get("explanation-error").reason == "translation refused"


def test_gradient_certificates_from_the_builder_verify():
    model = _net(seed=3)
    for cert in certify_explanations(Gradient(model), _x(2), eps=0.05, k=1):
        assert cert.claim("explanation-error").value < 1e-12
        assert verify_certificate(cert, model).valid


@pytest.mark.parametrize("name", ["residual-mlp", "gelu-mlp", "branches", "softmax-head"])
def test_gradient_claims_of_graphs_and_the_refusal_after_a_dropped_softmax(name):
    build, shape = GRAPH_MODELS[name]
    model = build(0).double()
    x = torch.randn(1, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (cert,) = certify_explanations(Gradient(model), x, eps=0.1, k=1)
    error, stability = cert.claim("explanation-error"), cert.claim("stability")
    if name == "softmax-head":  # the explanation is the probability's gradient; N is the logits
        for claim in (error, stability, cert.claim("lipschitz"), cert.claim("curvature")):
            assert claim.kind == "refused" and claim.reason.startswith("the model ends in softmax: the explanation is of the probability")
        return
    assert error.kind == "certified" and error.value < 1e-5, error.reason  # the float32 gradient vs N's float64 one
    assert stability.kind == "refused"  # no curvature bound for ReLU, GELU or a graph (yet)
    made_up = torch.zeros_like(x)
    assert _claims(model, x.flatten(1).reshape(x.shape), cert.target, made_up).get("explanation-error").value > 1e-3


@pytest.mark.parametrize("head", ["softmax-head", "log-softmax-head"])
def test_integrated_gradients_and_smoothgrad_after_a_dropped_softmax_are_refused(head):
    build, shape = GRAPH_MODELS[head]
    model = build(0).double()
    x = torch.randn(1, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    name, output = ("softmax", "probability") if head == "softmax-head" else ("log_softmax", "log-probability")
    for explainer in (IntegratedGradients(model, n_steps=8), SmoothGrad(model, sigma=0.3, samples=4, seed=1)):
        (cert,) = certify_explanations(explainer, x, eps=0.1, k=1)
        error = cert.claim("explanation-error")
        assert error.kind == "refused" and error.reason.startswith(f"the model ends in {name}: the explanation is of the {output},")
        assert cert.claim("implementation-deviation").kind == "certified"
