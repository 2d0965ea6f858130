"""The MoreauGrad claim issuer (certify/certificates/issuers/moreaugrad.py), through `certify_explanations`:
the solver-error claim bounds the true error against a high-accuracy float64 reference solve, refusals at
rho * lambda >= 1 (and rho * beta >= 1 for the sparse bound), the smoothed (probabilistic) mode, and the
stability claim built from `certify.bounds.stability`."""
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from certify.bounds.curvature import weak_convexity
from certify.bounds.network import from_module
from certify.bounds.smoothing import proposition1_constant, vector_mean_deviation
from certify.bounds.stability import moreaugrad_stability
from certify.certificates.builder import certify_explanations
from certify.certificates.checker import verify_certificate
from certify.certificates.claims import issue
from certify.certificates.issuers.common import ClaimList, Issuing, model_claims, unit_row
from certify.certificates.issuers.moreaugrad import CONFIDENCE, exact_solver_error, moreaugrad_claims, smoothed_samples
from certify.errors import InvalidInputError, UsageError
from certify.explain.moreaugrad import MoreauGrad
from certify.vocabulary import BUILDER_MARGIN

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from graph_models import GRAPH_MODELS, REFUSED  # noqa: E402


def _softplus_net(inputs: int, width: int, seed: int, scale: float = 1.0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(inputs, width), nn.Softplus(), nn.Linear(width, 3)).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    return net


def _lambda(net: nn.Module, inputs: int, c: int = 0) -> float:
    """The weak-convexity constant the certificate's weak-convexity claim gets (before outward rounding)."""
    return float(weak_convexity(from_module(net, (inputs,)), unit_row(3, c)).value)


def _x(n: int, inputs: int, seed: int) -> torch.Tensor:
    return torch.randn(n, inputs, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _reference_error(net, x, rho, eta, lam, group_size=None):
    """A float64 reference solve to residual 1e-11 and the certified bound on its own error (per example)."""
    solver = MoreauGrad(net, rho=rho, sparsity=eta, group_size=group_size, tol=1e-11, max_iter=20000)
    ref = solver.explain(x, 0)
    assert bool(ref.diagnostics["converged"].all())
    n_net = from_module(net, tuple(x.shape[1:]))
    errors = [exact_solver_error(n_net, unit_row(3, 0), solver, x[i : i + 1], ref.diagnostics["z"][i : i + 1],
                                 ref.attributions[i : i + 1], lam) for i in range(x.shape[0])]
    return ref.attributions, errors


@settings(max_examples=12, deadline=None, derandomize=True, database=None)
@given(
    inputs=st.integers(2, 6), width=st.integers(2, 12), seed=st.integers(0, 10**6), scale=st.floats(0.5, 3.0),
    fraction=st.floats(0.1, 0.95), eta=st.sampled_from([0.0, 0.05, 0.5]), tol=st.sampled_from([1e-2, 1e-4, 1e-6]),
)
def test_solver_error_claim_bounds_the_error_against_a_reference_solve(inputs, width, seed, scale, fraction, eta, tol):
    net = _softplus_net(inputs, width, seed, scale)
    lam = _lambda(net, inputs)
    rho = min(1.0, fraction / lam) if lam > 0 else 1.0
    x = _x(3, inputs, seed)
    explainer = MoreauGrad(net, rho=rho, sparsity=eta, tol=tol)
    certs = certify_explanations(explainer, x, target=0, eps=0.05, k=1)
    reference, ref_errors = _reference_error(net, x, rho, eta, certs[0].claim("weak-convexity").value)
    residuals = explainer.explain(x, 0).diagnostics["residual_norm"]
    for i, cert in enumerate(certs):
        claim = cert.claim("solver-error")
        assert claim.kind == "certified" and claim.assumptions in (
            ["weak-convexity"], ["weak-convexity-local", "lipschitz"]), claim.reason
        assert ref_errors[i] < 1e-8  # the reference is accurate: the comparison below has teeth
        a = torch.tensor(cert.explanation["values"], dtype=torch.float64).reshape(inputs)
        error = float((a - reference[i]).norm())
        assert error <= claim.value + ref_errors[i], (error, claim.value, ref_errors[i])
        # and not loose: the stopping residual (<= tol), over 1 - rho lambda, plus rounding
        lam_c = cert.claim(claim.assumptions[0]).value
        assert claim.value <= (float(residuals[i]) + 1e-9) / (1 - rho * lam_c) * (1 + 1e-6) + 1e-9


def test_certificates_of_all_three_modes_verify_and_the_stability_uses_the_shared_formula():
    net = _softplus_net(4, 8, seed=1)
    lam = _lambda(net, 4)
    rho = 0.5 / lam
    x = _x(2, 4, 0)
    for kw in ({}, {"sparsity": 0.05}, {"sparsity": 0.05, "group_size": 2}):
        for cert in certify_explanations(MoreauGrad(net, rho=rho, tol=1e-8, **kw), x, target=0, eps=0.05, k=1):
            err, stab = cert.claim("solver-error"), cert.claim("stability")
            assert err.kind == stab.kind == "certified" and 0 <= err.value < 1e-6
            local = err.params["region"] == "local"
            assert err.params == {"target": 0, "rho": rho, "sparsity": kw.get("sparsity", 0.0),
                                  "group_size": kw.get("group_size"), "sigma": None, "confidence": None,
                                  "region": err.params["region"]}
            assert set(err.witness) == ({"z", "radii"} if local else {"z"})
            suffix = "-local" if local else ""
            assert stab.assumptions == [f"weak-convexity{suffix}", f"curvature{suffix}", "solver-error"] + (["lipschitz"] if local else [])
            lam_c = cert.claim(f"weak-convexity{suffix}").value
            beta = cert.claim(f"curvature{suffix}").value
            expected = moreaugrad_stability(0.05, rho, 1e-8, lam_c, err.value, beta, bool(kw))
            assert stab.value == pytest.approx(expected, rel=2 * BUILDER_MARGIN)
            assert stab.value >= expected
            assert stab.method == ("corrected-corollary-2" if kw else "moreaugrad-corollary-1")
            report = verify_certificate(cert, net)
            assert report.valid, report.failures()


def test_float32_explanations_get_a_float64_solver_error():
    net = _softplus_net(4, 8, seed=5).float()
    lam = _lambda(net, 4)
    x = _x(2, 4, 5).float()
    explainer = MoreauGrad(net, rho=0.5 / lam, tol=1e-4)
    explanation = explainer.explain(x, 0)
    n_net = from_module(net, (4,)).to(torch.float64)
    for i, cert in enumerate(certify_explanations(explainer, x, target=0, eps=0.05, k=1)):
        claim = cert.claim("solver-error")
        lam_c = cert.claim(claim.assumptions[0]).value  # local when it beats the global constant
        recomputed = exact_solver_error(n_net, unit_row(3, 0), explainer, x[i : i + 1], explanation.diagnostics["z"][i : i + 1],
                                        explanation.attributions[i : i + 1], lam_c)
        assert claim.kind == "certified" and claim.value >= recomputed and claim.value == pytest.approx(recomputed, rel=1e-8)
        # the float32 residual the solver stopped at is far above float64 rounding, and the bound covers it
        assert claim.value >= float(explanation.diagnostics["residual_norm"][i]) * 0.5
        assert verify_certificate(cert, net).valid


def test_rho_lambda_at_least_one_is_refused_with_the_reason():
    net = _softplus_net(4, 6, seed=6, scale=2.0)
    lam = _lambda(net, 4)
    assert lam > 0
    (cert,) = certify_explanations(MoreauGrad(net, rho=2.0 / lam, tol=1e-4), _x(1, 4, 1), target=0, eps=0.05, k=1)
    err = cert.claim("solver-error")
    assert err.kind == "refused" and "rho * lambda" in err.reason and ">= 1" in err.reason
    assert cert.claim("stability").kind == "refused" and cert.claim("topk").kind == "refused"
    assert verify_certificate(cert, net).valid
    with pytest.raises(UsageError, match="rho \\* lambda"):  # the shared formula refuses too
        solver = MoreauGrad(net, rho=2.0 / lam)
        exact_solver_error(from_module(net, (4,)), unit_row(3, 0), solver, torch.zeros(1, 4, dtype=torch.float64),
                           torch.zeros(1, 4, dtype=torch.float64), torch.zeros(1, 4, dtype=torch.float64), lam)


def test_sparse_stability_needs_rho_beta_below_one():
    from certify.bounds.curvature import curvature_bound

    net = _softplus_net(4, 6, seed=2, scale=3.0)
    with torch.no_grad():
        net[2].weight[0].abs_()  # f_0 convex: lambda = 0 < beta
    lam, beta = _lambda(net, 4), float(curvature_bound(from_module(net, (4,)), unit_row(3, 0)).value)
    assert lam < 1e-12 < beta
    rho = 2.0 / beta  # rho lambda ~ 0 < 1: solver error certified; rho beta = 2: the sparse bound does not apply
    (cert,) = certify_explanations(MoreauGrad(net, rho=rho, sparsity=0.05, tol=1e-6), _x(1, 4, 2), target=0, eps=0.05, k=1)
    assert cert.claim("solver-error").kind == "certified"
    stab = cert.claim("stability")
    assert stab.kind == "refused" and "rho * beta" in stab.reason
    (vanilla,) = certify_explanations(MoreauGrad(net, rho=rho, tol=1e-6), _x(1, 4, 2), target=0, eps=0.05, k=1)
    assert vanilla.claim("stability").kind == "certified"  # Corollary 1 needs only rho lambda < 1


def _linear(n: int = 5) -> nn.Linear:
    layer = nn.Linear(n, 3).double().eval()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(3, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    return layer


def test_smoothed_mode_is_probabilistic_reproducible_and_bounds_the_exact_explanation():
    model = _linear()
    w = model.weight.detach()[2]
    x = _x(2, 5, 3)
    explainer = MoreauGrad(model, rho=0.2, smoothing_sigma=0.5, samples=8, tol=1e-6, seed=0)
    first = certify_explanations(explainer, x, target=2, eps=0.05, k=1)
    second = certify_explanations(explainer, x, target=2, eps=0.05, k=1)
    for i, cert in enumerate(first):
        lip = cert.claim("lipschitz").value
        sw = cert.claim("weak-convexity-smoothed")
        assert sw.kind == "certified" and sw.value >= proposition1_constant(lip, 0.5)
        err = cert.claim("solver-error")
        assert err.kind == "probabilistic" and err.confidence == err.params["confidence"] == CONFIDENCE
        assert err.params["sigma"] == 0.5 and err.assumptions == ["weak-convexity-smoothed", "lipschitz"]
        m, seed = err.witness["samples"], err.witness["seed"]
        assert m == 4 * int(explainer.explain(x, 2).diagnostics["final_samples"][i])  # 4 x the solver's final size
        # the McDiarmid term, with alpha = 1 - confidence, is part of the value
        assert err.value >= vector_mean_deviation(lip, m, 1 - CONFIDENCE) / (1 - 0.2 * sw.value)
        # E grad of a linear score is its weights: MG = w exactly, and the stored explanation is within the claim
        a = torch.tensor(cert.explanation["values"], dtype=torch.float64).reshape(5)
        assert float((a - w).norm()) <= err.value
        assert second[i].claim("solver-error").value == err.value and second[i].claim("solver-error").witness == err.witness
        assert cert.claim("stability").kind == "probabilistic"
        assert smoothed_samples(seed, m, 5).shape == (m, 5)
        report = verify_certificate(cert, model)
        assert report.valid, report.failures()


def test_smoothed_mode_refuses_when_a_sample_gradient_exceeds_the_lipschitz_constant():
    """The concentration bound assumes every sample gradient norm <= L: a (forged) too small L is caught."""
    model = _linear()
    x = _x(1, 5, 3)
    explainer = MoreauGrad(model, rho=0.2, smoothing_sigma=0.5, samples=4, tol=1e-4, seed=0)
    explanation = explainer.explain(x, 2)
    state = Issuing.build(model, x, 3)
    claims = ClaimList([c for c in model_claims(state, 2, None) if c.id != "lipschitz"])
    claims.add(issue("lipschitz", "lipschitz", {"target": 2, "p": 2}, 0.01, "forged"))
    moreaugrad_claims(claims, state, explainer, explanation.diagnostics, 0, explanation.attributions[0], 2, 0.05, None)
    err = claims.get("solver-error")
    assert err.kind == "refused" and "> the certified Lipschitz constant" in err.reason
    assert claims.get("stability").kind == "refused"


def test_smoothed_mode_without_a_translation_refuses_the_solver_error():
    build, shape, _ = REFUSED["product"]
    explainer = MoreauGrad(build(0).double(), rho=0.2, smoothing_sigma=0.5, samples=4, tol=1e-3, seed=0)
    (cert,) = certify_explanations(explainer, torch.rand(1, *shape, dtype=torch.float64), eps=0.05, k=1)
    for claim_id in ("weak-convexity-smoothed", "solver-error", "stability"):
        claim = cert.claim(claim_id)
        assert claim.kind == "refused" and "cannot be translated" in claim.reason, (claim_id, claim.reason)


def test_a_residual_graph_gets_smoothed_claims_and_a_dropped_softmax_none():
    """Smoothed MoreauGrad needs only the l2 Lipschitz constant (the path sum over the graph); after a
    dropped softmax every claim about the score is refused with the head's reason."""
    build, shape = GRAPH_MODELS["residual-mlp"]
    explainer = MoreauGrad(build(0).double(), rho=0.2, smoothing_sigma=0.5, samples=4, tol=1e-3, seed=0)
    (cert,) = certify_explanations(explainer, torch.rand(1, *shape, dtype=torch.float64), eps=0.05, k=1)
    assert cert.claim("weak-convexity-smoothed").kind == "certified"
    assert cert.claim("solver-error").kind == "probabilistic"
    build, shape = GRAPH_MODELS["log-softmax-head"]
    explainer = MoreauGrad(build(0).double(), rho=0.2, smoothing_sigma=0.5, samples=4, tol=1e-3, seed=0)
    (cert,) = certify_explanations(explainer, torch.rand(1, *shape, dtype=torch.float64), eps=0.05, k=1)
    for claim_id in ("weak-convexity-smoothed", "solver-error", "stability"):
        assert cert.claim(claim_id).reason.startswith("the model ends in log_softmax"), cert.claim(claim_id).reason


def test_a_diverged_solve_gets_no_certificate():
    net = _softplus_net(3, 4, seed=0, scale=3.0)
    explainer = MoreauGrad(net, rho=1.0, step=1e3, method="fixed-step", max_iter=300, tol=1e-12)
    assert bool(explainer.explain(_x(1, 3, 0), 0).diagnostics["diverged"].all())
    with pytest.raises(InvalidInputError, match="NaN or infinite attributions"):
        certify_explanations(explainer, _x(1, 3, 0), target=0, eps=0.05, k=1)


def test_a_refused_rho_names_the_largest_accepted_one_and_auto_is_certified():
    """Issue 13, item 4: a user rho with rho lambda >= 1 is refused with the largest rho that would be accepted
    (and that rho, slightly lowered, is accepted); rho = "auto" gives certified solver-error and stability."""
    import re

    net = _softplus_net(4, 8, seed=1)
    lam = _lambda(net, 4)
    x = _x(1, 4, 0)
    (cert,) = certify_explanations(MoreauGrad(net, rho=3.0 / lam, tol=1e-8), x, target=0, eps=0.05, k=1)
    err = cert.claim("solver-error")
    assert err.kind == "refused"
    largest = float(re.search(r"use rho < ([0-9.e+-]+)", err.reason).group(1))
    assert largest >= 1.0 / lam * (1 - 1e-3)
    (cert,) = certify_explanations(MoreauGrad(net, rho=largest * 0.99, tol=1e-8), x, target=0, eps=0.05, k=1)
    assert cert.claim("solver-error").kind == "certified"
    (cert,) = certify_explanations(MoreauGrad(net, rho="auto", eps=0.05, tol=1e-8), x, target=0, eps=0.05, k=1)
    assert cert.claim("solver-error").kind == cert.claim("stability").kind == "certified"
    assert verify_certificate(cert, net).valid
