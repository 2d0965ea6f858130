"""The independent checker (certificate format v2): honest certificates verify; tightened claims, other
weights or another input fail; loosened claims stay valid; unreadable files are unusable input (exit 2);
and every hand edit of issue 10 item 2 that used to verify is now rejected (one regression test each)."""
import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from certify.certificates.builder import certify_explanations
from certify.certificates.checker import verify_certificate, verify_file
from certify.certificates.claims import render
from certify.certificates.document import encode_array, parse_certificate
from certify.cli import main
from certify.errors import CertificateFormatError
from certify.explain import Gradient, IntegratedGradients, SmoothGrad
from certify.explain.lagrange_dual import LagrangeDual
from certify.explain.moreaugrad import MoreauGrad
from certify.models import zoo
from certify.models.hashing import model_hash

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edits import doc_claim as _claim, edited as _edit  # noqa: E402

MODEL = "digits-softplus-mlp"


@pytest.fixture(scope="module")
def model():
    return zoo.load(MODEL)[0]


@pytest.fixture(scope="module")
def certificates(model):
    x = zoo.load(MODEL)[1].x_test[:2]
    out = {}
    for name, explainer in {
        "gradient": Gradient(model),
        "moreaugrad": MoreauGrad(model, rho=0.3, tol=1e-6),
        "sparse": MoreauGrad(model, rho=0.3, sparsity=0.05, tol=1e-6),
        "group": MoreauGrad(model, rho=0.3, sparsity=0.05, group_size=4, tol=1e-6),
    }.items():
        out[name] = certify_explanations(explainer, x, eps=0.05, model_spec=MODEL)
    return out


@pytest.fixture(scope="module")
def relu_lagrange():
    """Lagrange-dual certificates on the digits ReLU MLP (L2 and Linf) and on the blobs net (Linf, with a MILP claim)."""
    out = []
    for name, p in (("digits-relu-mlp", 2), ("digits-relu-mlp", float("inf")), ("blobs-relu-mlp", float("inf"))):
        relu, data = zoo.load(name)
        (cert,) = certify_explanations(LagrangeDual(relu, p=p, domain=data.domain), data.x_test[:1], model_spec=name)
        out.append((cert, relu))
    return out


@pytest.fixture(scope="module")
def smoothed(model):
    x = zoo.load(MODEL)[1].x_test[:1]
    explainer = MoreauGrad(model, rho=0.05, smoothing_sigma=0.5, samples=16, tol=5e-2, max_iter=100, seed=0)
    return certify_explanations(explainer, x)[0]


def _numeric_certified(cert):
    return [c for c in cert.claims if c.kind == "certified" and c.value is not None]



def _rerender(claim):
    claim["statement"] = render(claim["type"], claim["params"])


def _status(report, claim_id):
    return next(c for c in report.checks if c.id == claim_id).status


def _rejected(report, *claim_ids):
    """The edited certificate does not verify, and each named claim is invalid."""
    assert not report.valid
    for cid in claim_ids:
        assert _status(report, cid) == "invalid", (cid, report.failures())
    return True


# ------------------------------------------------------------------ honest certificates


def test_honest_certificates_verify(certificates, model):
    for name, certs in certificates.items():
        for cert in certs:
            report = verify_certificate(parse_certificate(cert.to_json()), model)
            assert report.valid, (name, report.failures())
            assert {c.id for c in cert.claims} >= {"implementation-deviation", "lipschitz", "weak-convexity", "curvature",
                                                   "stability", "topk"}
            assert cert.version == 2 and cert.target_source == "predicted"
            assert cert.function["conformance"]["passed"]
            assert all(c.statement == render(c.type, c.params) for c in cert.claims)


def test_lagrange_dual_certificates_bound_the_radius(relu_lagrange):
    for cert, relu in relu_lagrange:
        claims = {c.id: c for c in cert.claims}
        assert claims["radius-upper"].kind == claims["radius-lipschitz"].kind == claims["radius-relaxation"].kind == "certified"
        assert claims["radius-lipschitz"].value <= claims["radius-relaxation"].value <= claims["radius-upper"].value
        report = verify_certificate(cert, relu)
        assert report.valid, report.failures()
    blobs = {c.id: c for c in relu_lagrange[2][0].claims}
    assert blobs["radius-exact"].kind == "solver-reported"
    assert blobs["radius-relaxation"].value <= blobs["radius-exact"].value <= blobs["radius-upper"].value * (1 + 1e-6)


def _tamper(cert, claim_id, factor_tight, tighten):
    doc = copy.deepcopy(cert)
    claim = doc.claim(claim_id)
    v = claim.value
    if claim.relation == "<=":
        claim.value = v * factor_tight - 1e-12 if tighten else v * (2 - factor_tight) + 1e-12
    else:
        claim.value = v / factor_tight + 1e-6 if tighten else max(0.0, v * factor_tight - 1e-6)
    return doc


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 2), st.integers(0, 20), st.floats(0.5, 0.9))
def test_tightening_lagrange_claims_fails(relu_lagrange, which, pick, factor):
    cert, relu = relu_lagrange[which]
    claims = [c for c in _numeric_certified(cert) if c.id.startswith("radius")]
    claim = claims[pick % len(claims)]
    tight = verify_certificate(_tamper(cert, claim.id, factor, True), relu)
    assert not tight.valid and any(f.startswith(claim.id + ":") for f in tight.failures()), (claim.id, tight.failures())
    _loosened_stays_valid(verify_certificate(_tamper(cert, claim.id, factor, False), relu), claim.id)


def _loosened_stays_valid(report, claim_id):
    """A loosened claim is still true; only a claim whose statement names its value (a gap names its bounds,
    a top-k its stability bound) may now fail."""
    assert _status(report, claim_id) == "valid", report.failures()
    assert all(f.split(":")[0] in ("radius-gap", "topk") for f in report.failures()), report.failures()


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(["gradient", "moreaugrad", "sparse", "group"]), st.integers(0, 20), st.floats(0.5, 1 - 1e-6))
def test_tightening_fails_and_loosening_passes(certificates, model, name, pick, factor):
    cert = certificates[name][0]
    claims = [c for c in _numeric_certified(cert) if c.value > 1e-200]  # 1e-300 (a zero deviation) cannot be tightened
    claim = claims[pick % len(claims)]
    tight = verify_certificate(_tamper(cert, claim.id, factor, True), model)
    assert not tight.valid and any(f.startswith(claim.id + ":") for f in tight.failures()), tight.failures()
    loosened = _tamper(cert, claim.id, factor, False)
    if claim.type == "topk-stability":
        loosened.claim(claim.id).value = min(1.0, loosened.claim(claim.id).value)
    _loosened_stays_valid(verify_certificate(loosened, model), claim.id)


@pytest.mark.parametrize("method", ["gradient", "integrated-gradients", "smoothgrad", "moreaugrad", "lagrange-dual"])
@pytest.mark.parametrize("model_name", ["digits-softplus-mlp", "digits-relu-mlp"])
def test_cli_explain_then_verify_round_trips(tmp_path, method, model_name):
    out = tmp_path / "cert.json"
    args = ["explain", "--model", f"zoo:{model_name}", "--method", method, "--index", "4", "--out", str(out)]
    if method == "moreaugrad":
        args += ["--param", "rho=0.3"]
    assert main(args) == 0
    assert main(["verify", str(out)]) == 0


def test_other_weights_fail(certificates, model):
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[0].weight[0, 0] += 1e-3
    report = verify_certificate(certificates["moreaugrad"][0], other)
    assert not report.valid and "model hash" in report.failures()[0]


def test_a_model_edited_in_place_is_translated_again(model):
    """The checker keeps its translation per model object (semantics.cached_translation): after an in-place edit
    a claim that held for the old weights only must fail, and every number is re-derived from the new ones."""
    edited = copy.deepcopy(model)
    x = zoo.load(MODEL)[1].x_test[:1]
    (before,) = certify_explanations(Gradient(edited), x, model_spec=MODEL)
    assert verify_certificate(before, edited).valid  # translated and kept
    with torch.no_grad():
        edited[0].weight.mul_(2.0)  # the same object: its Lipschitz constant grows
    (after,) = certify_explanations(Gradient(edited), x, model_spec=MODEL)
    assert verify_certificate(after, edited).valid
    old = next(c.value for c in before.claims if c.id == "lipschitz")
    assert old < next(c.value for c in after.claims if c.id == "lipschitz")
    forged = _edit(after, lambda d: _claim(d, "lipschitz").update(value=old))
    assert _rejected(verify_certificate(forged, edited), "lipschitz")


def test_other_input_fails(certificates, model):
    cert = copy.deepcopy(certificates["moreaugrad"][0])
    x = torch.tensor(cert.input["values"])
    cert.input["values"][0][10] += 0.5  # values no longer match their hash
    with pytest.raises(CertificateFormatError, match="sha256"):
        verify_certificate(cert, model)
    cert.input = encode_array((x + 0.05).numpy())  # a consistent but different input
    report = verify_certificate(cert, model)
    assert not report.valid and any(f.startswith("solver-error") for f in report.failures())


def test_file_round_trip_and_cli_exit_codes(certificates, tmp_path, capsys):
    path = certificates["sparse"][0].write(tmp_path / "cert.json")
    assert verify_file(path).valid
    assert main(["verify", str(path)]) == 0
    doc = json.loads(path.read_text())
    _claim(doc, "topk")["value"] += 0.1  # the top-k lower bound raised: a tightened claim
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    assert main(["verify", str(bad)]) == 1
    assert "topk" in capsys.readouterr().out
    truncated = tmp_path / "truncated.json"
    truncated.write_text(path.read_text()[:500])
    assert main(["verify", str(truncated)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "missing.json")]) == 2
    doc["schema"] = "something-else"
    bad.write_text(json.dumps(doc))
    assert main(["verify", str(bad)]) == 2


def test_refusals_are_explicit(model):
    relu, data = zoo.load("digits-relu-mlp")
    (cert,) = certify_explanations(MoreauGrad(relu, rho=0.3, max_iter=50), data.x_test[:1])
    refused = {c.id: c.reason for c in cert.claims if c.kind == "refused"}
    assert set(refused) == {"weak-convexity", "curvature", "solver-error", "stability", "topk"}
    assert "ReLU" in refused["weak-convexity"] and all(refused.values())
    assert verify_certificate(cert, relu).valid
    (ig,) = certify_explanations(IntegratedGradients(model, n_steps=8), zoo.load(MODEL)[1].x_test[:1])
    assert ig.claim("stability").kind == "refused" and ig.claim("stability").type == "stability-none"
    assert verify_certificate(ig, model).valid


def test_checker_imports_no_solver_or_bound_code():
    code = (
        "import sys, certify.certificates.checker as c\n"
        "bad = [m for m in sys.modules if m.startswith(('certify.explain', 'certify.bounds', 'certify.attacks'))]\n"
        "assert not bad, bad\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_smoothed_mode_uses_proposition_1_and_is_recomputed_from_its_seed(smoothed, model):
    cert = smoothed
    sw = cert.claim("weak-convexity-smoothed")
    assert sw.kind == "certified"
    assert sw.value == pytest.approx(math.sqrt(2 / math.pi) * cert.claim("lipschitz").value / 0.5, rel=1e-8)
    err, stab = cert.claim("solver-error"), cert.claim("stability")
    assert err.kind == stab.kind == "probabilistic" and stab.confidence == 0.99
    assert set(err.witness) == {"z", "samples", "seed"}
    report = verify_certificate(cert, model)
    assert report.valid, report.failures()
    assert _status(report, "solver-error") == _status(report, "stability") == "valid (probabilistic)"
    assert not verify_certificate(_tamper(cert, "weak-convexity-smoothed", 0.9, True), model).valid
    assert _rejected(verify_certificate(_tamper(cert, "solver-error", 0.5, True), model), "solver-error")
    reseeded = _edit(cert, lambda d: _claim(d, "solver-error")["witness"].update(seed=_claim(d, "solver-error")["witness"]["seed"] + 1))
    report = verify_certificate(reseeded, model)  # another draw: the statistic differs, so the claimed value is off
    assert _status(report, "solver-error") in ("invalid", "valid (probabilistic)")


# ------------------------------------------------------------------ issue 10, item 2: each edit that used to verify


def test_witness_row_of_zeros_is_not_evidence(certificates, model):
    """A Lipschitz / weak-convexity / curvature witness `row` set to zeros with value 1e-299, and the
    stability (1e-299) and top-k (1.0) claims built on it: the row comes from params.target, never a witness."""
    cert = certificates["gradient"][0]

    def change(d):
        for cid in ("lipschitz", "weak-convexity", "curvature"):
            _claim(d, cid)["witness"] = {"row": [0.0] * 10}
            _claim(d, cid)["value"] = 1e-299
        _claim(d, "stability")["value"] = 1e-299
        _claim(d, "topk")["value"] = 1.0

    report = verify_certificate(_edit(cert, change), model)
    assert _rejected(report, "lipschitz", "weak-convexity", "curvature", "stability", "topk")
    # without the row, the tiny values alone fail against the re-derived constants
    def values_only(d):
        for cid in ("lipschitz", "weak-convexity", "curvature", "stability"):
            _claim(d, cid)["value"] = 1e-299
        _claim(d, "topk")["value"] = 1.0
    report = verify_certificate(_edit(cert, values_only), model)
    assert _rejected(report, "lipschitz", "weak-convexity", "curvature", "stability", "topk")
    assert "below the re-derived" in next(c.detail for c in report.checks if c.id == "lipschitz")


@pytest.mark.parametrize("name, key, value", [("gradient", "eps", -0.1), ("gradient", "eps", math.inf),
                                              ("moreaugrad", "eps", -0.1), ("moreaugrad", "eps", math.inf),
                                              ("moreaugrad", "tol", -1.0), ("moreaugrad", "rho", 0.0)])
def test_out_of_range_stability_parameters_are_invalid(certificates, model, name, key, value):
    cert = certificates[name][0]

    def change(d):
        claim = _claim(d, "stability")
        claim["params"][key] = value if math.isfinite(value) else 1e308 * 10
        claim["statement"] = "edited"

    doc = json.loads(cert.to_json())
    change(doc)
    text = json.dumps(doc)
    if "Infinity" in text:
        with pytest.raises(CertificateFormatError):
            parse_certificate(text)
        return
    report = verify_certificate(parse_certificate(text), model)
    assert _rejected(report, "stability")
    assert key in next(c.detail for c in report.checks if c.id == "stability")


def test_eps_read_from_params_not_witness(certificates, model):
    """eps = 1e-6 in the witness while the statement says 0.05: a witness may not carry a parameter; and
    eps edited in params without its statement, or with it but not the top-k's, is inconsistent."""
    cert = certificates["moreaugrad"][0]
    report = verify_certificate(_edit(cert, lambda d: _claim(d, "stability")["witness"].update(eps=1e-6)), model)
    assert _rejected(report, "stability")

    def params_only(d):
        _claim(d, "stability")["params"]["eps"] = 1e-6
        _claim(d, "stability")["value"] = 1e-7  # below the solver terms alone (about 3e-6)
    assert _rejected(verify_certificate(_edit(cert, params_only), model), "stability")

    def rerendered(d):
        params_only(d)
        _rerender(_claim(d, "stability"))
    report = verify_certificate(_edit(cert, rerendered), model)
    assert _rejected(report, "stability", "topk")  # below the solver terms, and top-k's eps differs


def test_topk_k_and_assumptions_are_bound(certificates, model):
    cert = certificates["gradient"][0]
    k = cert.claim("topk").params["k"]
    assert k == 6
    # witness k 6 -> 1 with value 1.0, statement still top-6
    report = verify_certificate(_edit(cert, lambda d: (_claim(d, "topk")["witness"].update(k=1), _claim(d, "topk").update(value=1.0))), model)
    assert _rejected(report, "topk")
    # params k 6 -> 1 without re-rendering: the statement no longer matches
    report = verify_certificate(_edit(cert, lambda d: _claim(d, "topk")["params"].update(k=1)), model)
    assert _rejected(report, "topk")
    # value 1.0 at k = 6: the re-derived count says less
    report = verify_certificate(_edit(cert, lambda d: _claim(d, "topk").update(value=1.0)), model)
    assert _rejected(report, "topk")


def test_topk_resting_on_solver_error_is_invalid(certificates, model):
    cert = certificates["moreaugrad"][0]
    report = verify_certificate(_edit(cert, lambda d: _claim(d, "topk").update(assumptions=["solver-error"])), model)
    assert _rejected(report, "topk")
    assert "stability" in next(c.detail for c in report.checks if c.id == "topk")


def test_refused_topk_turned_certified_on_lagrange_is_invalid(relu_lagrange):
    cert, relu = relu_lagrange[0]
    assert cert.claim("topk").kind == "refused"

    def change(d):
        _claim(d, "topk").update(kind="certified", value=1.0, reason=None, assumptions=["stability"])

    assert _rejected(verify_certificate(_edit(cert, change), relu), "topk")
    change_no_assumption = lambda d: _claim(d, "topk").update(kind="certified", value=1.0, reason=None)  # noqa: E731
    assert _rejected(verify_certificate(_edit(cert, change_no_assumption), relu), "topk")


def test_made_up_gradient_explanation_is_caught(certificates, model):
    """A made-up explanation with its hash recomputed: the explanation error is re-derived from grad N_c(x)."""
    cert = certificates["gradient"][0]
    fake = np.zeros(cert.explanation["shape"])
    fake.reshape(-1)[:6] = 10.0  # a confident top-6

    report = verify_certificate(_edit(cert, lambda d: d.update(explanation=encode_array(fake))), model)
    assert _rejected(report, "explanation-error", "stability", "topk")
    # the honest-looking consequences of a made-up vector: a large error, so the stability is large and top-k 0
    err = float(np.linalg.norm(fake.reshape(-1) - np.asarray(cert.explanation["values"]).reshape(-1)))
    assert err > 10


def _swap_target(d, new):
    d["target"] = new
    for c in d["claims"]:
        if "target" in c["params"]:
            c["params"]["target"] = new
            _rerender(c)


@pytest.mark.parametrize("method", ["gradient", "integrated-gradients", "smoothgrad", "smoothed-moreaugrad"])
def test_changed_target_is_rejected(model, smoothed, method):
    x = zoo.load(MODEL)[1].x_test[:1]
    if method == "smoothed-moreaugrad":
        cert = smoothed
    else:
        explainer = {"gradient": Gradient(model), "integrated-gradients": IntegratedGradients(model, n_steps=8),
                     "smoothgrad": SmoothGrad(model, samples=8, seed=0)}[method]
        (cert,) = certify_explanations(explainer, x, eps=0.05)
    other = (cert.target + 1) % 10
    # only the target: the claims' params disagree with it (and the prediction too)
    report = verify_certificate(_edit(cert, lambda d: d.update(target=other)), model)
    assert not report.valid and any("predicts class" in p for p in report.problems)
    assert any(c.status == "invalid" and "params.target" in c.detail for c in report.checks)
    # everything consistently moved to the other class: the prediction is re-derived and disagrees
    report = verify_certificate(_edit(cert, lambda d: _swap_target(d, other)), model)
    assert not report.valid and any("predicts class" in p for p in report.problems)


@pytest.mark.parametrize("method", ["gradient", "integrated-gradients", "smoothgrad"])
def test_given_target_of_an_explanation_is_bound_by_the_explanation(certificates, model, method):
    """With target_source 'given' the target is not re-predicted, but a gradient (Integrated Gradients,
    SmoothGrad) explanation of class c is not one of another class: the explanation error re-derived for it
    (SmoothGrad: recomputed from the stored seed, probabilistic) is large."""
    if method == "gradient":
        cert = certificates["gradient"][0]
    elif method == "smoothgrad":
        (cert,) = certify_explanations(SmoothGrad(model, samples=16, seed=0), zoo.load(MODEL)[1].x_test[:1], eps=0.05)
        report = verify_certificate(cert, model)
        assert report.valid and _status(report, "explanation-error") == "valid (probabilistic)"
    else:
        (cert,) = certify_explanations(IntegratedGradients(model, n_steps=8), zoo.load(MODEL)[1].x_test[:1], eps=0.05)
        assert verify_certificate(cert, model).valid
        assert cert.claim("explanation-error").value < 1e-5
    other = (cert.target + 1) % 10
    report = verify_certificate(_edit(cert, lambda d: (_swap_target(d, other), d.update(target_source="given"))), model)
    assert _rejected(report, "explanation-error")
    if method == "integrated-gradients":  # another quadrature or baseline is another explanation (8 vs 9 Gauss
        # nodes agree to within the float32 rounding of a on this smooth net: that edit may stay true, so 2)
        for key, value in (("n_steps", 2), ("baseline", 0.5), ("quadrature", "riemann_middle")):
            def change(d, key=key, value=value):
                _claim(d, "explanation-error")["params"][key] = value
                _rerender(_claim(d, "explanation-error"))
            assert _rejected(verify_certificate(_edit(cert, change), model), "explanation-error")


def test_radius_norm_and_domain_edits_are_rejected(relu_lagrange):
    cert, relu = relu_lagrange[1]  # digits-relu-mlp, p = inf, with the data domain
    assert cert.claim("radius-upper").params["p"] == "inf"
    radius_ids = [c.id for c in cert.claims if c.id.startswith("radius") and c.kind != "refused"]

    def to_l1(d):
        for cid in radius_ids:
            _claim(d, cid)["params"]["p"] = 1
            _rerender(_claim(d, cid))
    report = verify_certificate(_edit(cert, to_l1), relu)
    assert _rejected(report, "radius-upper")  # the flip witness has a much larger l1 norm

    # one claim's p edited: the radius claims no longer share a norm
    report = verify_certificate(_edit(cert, lambda d: (_claim(d, "radius-relaxation")["params"].update(p=1),
                                                        _rerender(_claim(d, "radius-relaxation")))), relu)
    assert not report.valid and any("share one norm" in p for p in report.problems)

    x = np.asarray(cert.input["values"])

    def to_point(d):
        for cid in radius_ids:
            _claim(d, cid)["params"]["domain"] = {"lower": x[0].tolist(), "upper": x[0].tolist()}
            _rerender(_claim(d, cid))
    report = verify_certificate(_edit(cert, to_point), relu)
    assert _rejected(report, "radius-upper")  # the flip leaves the (shrunk) domain

    def huge_p(d):
        for cid in radius_ids:
            _claim(d, cid)["params"]["p"] = 1e300
    report = verify_certificate(_edit(cert, huge_p), relu)
    assert _rejected(report, *radius_ids)


@pytest.mark.parametrize("claim_id, value", [("lipschitz", 0.0), ("topk", 1e6), ("curvature", 0.0), ("stability", 0.0)])
def test_switch_to_probabilistic_is_invalid(certificates, model, claim_id, value):
    cert = certificates["gradient"][0]

    def change(d):
        _claim(d, claim_id).update(kind="probabilistic", value=value, confidence=0.99)
        _claim(d, claim_id)["params"]["confidence"] = 0.99
    doc = json.loads(cert.to_json())
    change(doc)
    report = verify_certificate(parse_certificate(json.dumps(doc)), model)
    assert _rejected(report, claim_id)
    # and without the confidence in params
    report = verify_certificate(_edit(cert, lambda d: _claim(d, claim_id).update(kind="probabilistic", value=value)), model)
    assert _rejected(report, claim_id)


def test_claims_added_duplicated_or_resting_elsewhere_are_checked(certificates, model):
    cert = certificates["sparse"][0]
    # a duplicate claim under a new id
    report = verify_certificate(_edit(cert, lambda d: d["claims"].append({**copy.deepcopy(_claim(d, "lipschitz")), "id": "lip2"})), model)
    assert not report.valid and any("more than one claim" in p for p in report.problems)
    # stability resting on weak-convexity only (curvature dropped from a sparse stability)
    report = verify_certificate(_edit(cert, lambda d: _claim(d, "stability").update(assumptions=["weak-convexity", "solver-error"])), model)
    assert _rejected(report, "stability")
    # a certified claim's kind changed to solver-reported
    report = verify_certificate(_edit(cert, lambda d: _claim(d, "curvature").update(kind="solver-reported")), model)
    assert _rejected(report, "curvature")


# ------------------------------------------------------------------ issue 10, item 1 (checker side) and item 3


def _linear(bias: bool):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3, bias=bias)).eval()


@pytest.mark.parametrize("bias", [True, False])
def test_linear_classifier_certificate_verifies_with_curvature_zero(bias):
    model = _linear(bias)
    x = torch.randn(2, 4)
    for cert in certify_explanations(Gradient(model), x, eps=0.1, k=1):
        assert cert.claim("curvature").value <= 1e-299 and cert.claim("weak-convexity").value <= 1e-299
        report = verify_certificate(parse_certificate(cert.to_json()), model)
        assert report.valid, report.failures()


class _Residual(nn.Sequential):
    def forward(self, x):
        return x + super().forward(x)


def test_residual_subclass_claims_are_re_derived_on_the_graph():
    """issue 12: a residual block is a graph (a skip into the last layer); the checker's own translation
    re-derives its Lipschitz (path-sum), deviation and explanation-error claims; curvature is refused for
    graphs on both sides; a tightened Lipschitz claim is caught."""
    torch.manual_seed(0)
    model = _Residual(nn.Linear(3, 8), nn.Softplus(), nn.Linear(8, 3)).eval()
    (cert,) = certify_explanations(Gradient(model), torch.randn(1, 3), eps=0.05, k=1)
    assert "refused" not in cert.function
    report = verify_certificate(cert, model)
    assert report.valid, report.failures()
    for claim_id in ("lipschitz", "implementation-deviation", "explanation-error"):
        assert _status(report, claim_id) == "valid"
    assert _status(report, "curvature") == "refused"
    lipschitz = _claim(json.loads(cert.to_json()), "lipschitz")["value"]
    forged = _edit(cert, lambda d: _claim(d, "lipschitz").update(value=lipschitz * 0.99))
    report = verify_certificate(forged, model)
    assert not report.valid and _status(report, "lipschitz") == "invalid"


@pytest.mark.parametrize("name", ["residual-mlp", "maxpool-padded", "branches", "sigmoid-mlp", "gelu-tanh-mlp", "softmax-head"])
def test_honest_graph_certificates_verify_and_forged_ones_do_not(name):
    """issue 12: certificates of graph models (residual, max-pool, branches, smooth activations, a softmax
    head) verify against the checker's own translation; a tightened Lipschitz claim and a curvature claim
    turned certified on a graph (the checker re-derives curvature for chains only) are invalid."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from graph_models import GRAPH_MODELS

    build, shape = GRAPH_MODELS[name]
    model = build(0)
    for explainer in (Gradient(model), IntegratedGradients(model)):
        (cert,) = certify_explanations(explainer, torch.randn((1,) + shape, generator=torch.Generator().manual_seed(3)), eps=0.05, k=1)
        report = verify_certificate(cert, model)
        assert report.valid, (name, report.failures())
    doc = json.loads(cert.to_json())
    forged = []
    if _claim(doc, "lipschitz")["kind"] == "certified":
        forged.append(("lipschitz", _edit(cert, lambda d: _claim(d, "lipschitz").update(value=_claim(doc, "lipschitz")["value"] * 0.999))))
    forged.append(("curvature", _edit(cert, lambda d: _claim(d, "curvature").update(kind="certified", value=1e6, reason=None))))
    for claim_id, bad in forged:
        report = verify_certificate(bad, model)
        assert not report.valid and _status(report, claim_id) == "invalid", (claim_id, report.failures())


def test_softplus_threshold_one_gets_refusals_not_claims():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Softplus(beta=1, threshold=1), nn.Linear(8, 3)).eval()
    (cert,) = certify_explanations(Gradient(model), torch.randn(1, 4), eps=0.05, k=1)
    assert all(c.kind == "refused" for c in cert.claims)
    forged = _edit(cert, lambda d: (d.update(function={"description": "x", "semantics": {}, "conformance": {
        "tolerance": 1.0, "max_deviation": 0.0, "points": 1, "passed": True}}),
        _claim(d, "curvature").update(kind="certified", value=0.049, reason=None)))
    report = verify_certificate(forged, model)
    assert _status(report, "curvature") == "invalid"


def test_flip_witness_flips_the_model_as_run_and_in_float64():
    """Item 3: the Lagrange-dual perturbation added to the input of the user's own float32 model must flip
    it (it did not on 41% of digits inputs); the claimed radius is the norm of the perturbation returned."""
    relu, data = zoo.load("digits-relu-mlp")
    x = data.x_test[:8]
    certs = certify_explanations(LagrangeDual(relu, p=2, domain=data.domain), x)
    issued = 0
    for i, cert in enumerate(certs):
        upper = cert.claim("radius-upper")
        if upper.kind != "certified":
            continue
        issued += 1
        delta = torch.tensor(upper.witness["delta"]["values"], dtype=torch.float64)
        point = (x[i : i + 1].double() + delta).to(x.dtype)
        assert int(relu(point).argmax()) != cert.target
        assert upper.value >= float((point.double() - x[i : i + 1].double()).norm())
        assert verify_certificate(cert, relu).valid
        # a witness that does not flip the float32 model (shrunk to half) is rejected
        half = _edit(cert, lambda d: _claim(d, "radius-upper")["witness"].update(delta=encode_array(0.5 * delta.numpy())))
        assert _status(verify_certificate(half, relu), "radius-upper") == "invalid"
    assert issued >= 6


# ------------------------------------------------------------------ the explanation is bound to the model
def test_explanation_binding_claim_cannot_be_removed(certificates, model):
    """A made-up explanation with its binding claim (and everything resting on it) removed: every claim left
    is about the model and true, but nothing ties the stored vector to the model any more, so it fails."""
    cert = certificates["gradient"][0]
    fake = np.zeros(cert.explanation["shape"])
    fake.reshape(-1)[:6] = 10.0

    def change(d):
        d["explanation"] = encode_array(fake)
        d["claims"] = [c for c in d["claims"] if c["id"] not in ("explanation-error", "stability", "topk")]

    report = verify_certificate(_edit(cert, change), model)
    assert not report.valid
    assert any("explanation-error" in p and "nothing ties" in p for p in report.problems), report.problems
    honest = verify_certificate(cert, model)
    assert honest.valid and honest.binding.startswith("bound by claim explanation-error")


def test_binding_claim_parameters_repeat_the_explainers(certificates, model):
    """The provenance's explainer parameters and the binding claim's must agree: relabelling the method or
    changing MoreauGrad's rho (or the IG quadrature, below) in the provenance alone is rejected."""
    cert = certificates["moreaugrad"][0]
    relabelled = verify_certificate(_edit(cert, lambda d: d["provenance"]["explainer"].update(method="gradient")), model)
    assert not relabelled.valid and any("nothing ties" in p for p in relabelled.problems), relabelled.problems
    other_rho = verify_certificate(
        _edit(cert, lambda d: d["provenance"]["explainer"]["params"].update(rho=0.1)), model)
    assert not other_rho.valid and any("rho" in p for p in other_rho.problems), other_rho.problems


def test_integrated_gradients_quadrature_is_bound_to_the_provenance(model):
    x = zoo.load(MODEL)[1].x_test[:1]
    (cert,) = certify_explanations(IntegratedGradients(model, n_steps=16, method="gausslegendre"), x)
    assert verify_certificate(cert, model).valid
    edited = _edit(cert, lambda d: d["provenance"]["explainer"]["params"].update(method="riemann_trapezoid"))
    report = verify_certificate(edited, model)
    assert not report.valid and any("quadrature" in p for p in report.problems), report.problems


def test_refused_binding_claim_on_a_closed_form_method_is_rejected(certificates, model):
    cert = certificates["gradient"][0]

    def change(d):
        claim = _claim(d, "explanation-error")
        claim.update(kind="refused", value=None, reason="made up")
        d["claims"] = [c for c in d["claims"] if c["id"] not in ("stability", "topk")]

    report = verify_certificate(_edit(cert, change), model)
    assert not report.valid and any("refused although" in p for p in report.problems), report.problems


def test_lagrange_certificates_say_their_explanation_is_not_bound(relu_lagrange):
    cert, relu = relu_lagrange[0]
    report = verify_certificate(cert, relu)
    assert report.valid and report.binding.startswith("not bound")


# ------------------------------------------------------------------ findings of the attacker review (session 9)
def test_gradient_stability_cannot_rest_on_another_methods_explanation_error(model):
    """An IG certificate whose refused stability is turned into a certified stability-gradient resting on the
    IG explanation-error: ||a - IG(x)|| says nothing about ||a - grad N(x)||, so it must fail (it verified,
    with a 'certified' 0.119 where the true distance at d = 0 is 4.67)."""
    x = zoo.load(MODEL)[1].x_test[:1]
    (cert,) = certify_explanations(IntegratedGradients(model, n_steps=16), x, eps=0.1)

    def change(d):
        s = _claim(d, "stability")
        s.update(type="stability-gradient", kind="certified", reason=None, method="beta-smoothness",
                 assumptions=["curvature", "explanation-error"], value=1.0)
        s["params"] = {"target": d["target"], "eps": 0.1}
        _rerender(s)

    report = verify_certificate(_edit(cert, change), model)
    assert _rejected(report, "stability")
    assert "another method" in next(c.detail for c in report.checks if c.id == "stability")


def test_function_description_and_lagrange_provenance_are_bound(relu_lagrange, certificates, model):
    cert = certificates["gradient"][0]
    report = verify_certificate(_edit(cert, lambda d: d["function"].update(
        description="claims hold for the model as run at every x")), model)
    assert not report.valid and any("description" in p for p in report.problems)
    lag, relu = relu_lagrange[1]  # digits ReLU MLP, p = inf
    other_p = verify_certificate(_edit(lag, lambda d: d["provenance"]["explainer"]["params"].update(p=2)), relu)
    assert not other_p.valid and any("p = 'inf'" in p or "p = " in p for p in other_p.problems), other_p.problems


def test_smoothgrad_noise_scale_is_bound_to_the_provenance(model):
    x = zoo.load(MODEL)[1].x_test[:1]
    (cert,) = certify_explanations(SmoothGrad(model, sigma=0.15, relative=True, samples=32, seed=0), x)
    assert verify_certificate(cert, model).valid
    edited = _edit(cert, lambda d: d["provenance"]["explainer"]["params"].update(sigma=0.5))
    report = verify_certificate(edited, model)
    assert not report.valid and any("noise scale" in p for p in report.problems), report.problems


def test_point_domain_radius_is_labelled_vacuous(relu_lagrange):
    """Every radius claim's domain shrunk to the point x (and the flip and gap dropped): r* is infinite, so a
    lower bound of 1000 is true, but it guarantees nothing and must say so; with the explainer's domain
    recorded in the provenance the shrunk domain is rejected outright."""
    cert, relu = relu_lagrange[1]
    x = np.asarray(cert.input["values"]).reshape(-1).tolist()

    def change(d, provenance_too):
        d["claims"] = [c for c in d["claims"] if c["id"] not in ("radius-upper", "radius-gap", "radius-exact")]
        for c in d["claims"]:
            if "domain" in c.get("params", {}):
                c["params"]["domain"] = {"lower": x, "upper": x}
                _rerender(c)
        if provenance_too:
            d["provenance"]["explainer"]["params"]["domain"] = {"lower": x, "upper": x}

    assert not verify_certificate(_edit(cert, lambda d: change(d, False)), relu).valid
    report = verify_certificate(_edit(cert, lambda d: change(d, True)), relu)
    details = [c.detail for c in report.checks if c.id == "radius-relaxation" and c.status == "valid"]
    assert all("VACUOUS" in d for d in details)


def test_zero_model_certificates_verify():
    """A model whose logits do not depend on the input: every bound is 0, and the issuer's outward rounding
    must still cover the checker's (it did not: 3.1e-300 against a re-derived 4.1e-300)."""
    net = nn.Sequential(nn.Linear(4, 8), nn.Softplus(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        net[2].weight.zero_()
    (cert,) = certify_explanations(Gradient(net), torch.rand(1, 4), eps=0.1, k=2)
    report = verify_certificate(cert, net)
    assert report.valid, report.failures()
    topk = next(c for c in report.checks if c.id == "topk")
    assert topk.status == "valid"


def test_unevaluable_input_is_unusable_not_a_crash(certificates, model):
    cert = certificates["gradient"][0]
    bad = _edit(cert, lambda d: d.update(input=encode_array(np.zeros((1, 65))),
                                         explanation=encode_array(np.zeros((1, 65)))))
    with pytest.raises(CertificateFormatError, match="cannot be evaluated"):
        verify_certificate(bad, model)


def test_facts_kept_with_the_translation_give_the_report_a_fresh_translation_gives(certificates, model):
    """|W_k|, |b_k| and the conformance constants are kept with the translation (semantics.Translation.memo, issue
    18); a warm verification re-derives every claim to the same value, detail for detail, as a cold one."""
    from certify.certificates import semantics

    for cert in certificates["moreaugrad"] + certificates["gradient"]:
        semantics.clear_translation_cache()
        cold = verify_certificate(cert, model)
        (kept,) = semantics._TRANSLATIONS[model].values()
        w_abs, b_abs, _ = kept.memo[("absolute values",)]
        assert all(torch.equal(a, w.abs()) for a, w in zip(w_abs, kept.stages.mats))
        assert all(torch.equal(a, b.abs()) for a, b in zip(b_abs, kept.stages.biases))
        warm = verify_certificate(cert, model)
        assert cold.valid and [(c.id, c.status, c.detail) for c in warm.checks] == [(c.id, c.status, c.detail) for c in cold.checks]
        assert warm.function == cold.function



def _diagonal_product_hessian_bounds(st, row: torch.Tensor, norm) -> tuple[float, float]:
    """`checker._chain_hessian_bounds` as it was written before issue 18 item 2b, with explicit diagonal matrices
    (W^T diag(t) W): the oracle of the test below."""
    from certify.certificates import local_check
    from certify.certificates._common import down, up

    mats = st.mats
    g_lo = g_hi = mats[-1].T @ row
    terms = [None] * len(st.acts)
    for idx in range(len(st.acts) - 1, -1, -1):
        b = float(st.acts[idx][1]) / 4
        terms[idx] = (torch.clamp(g_lo, max=0) * b, torch.clamp(g_hi, min=0) * b)
        if idx > 0:
            lo, hi = torch.clamp(g_lo, max=0), torch.clamp(g_hi, min=0)
            w = mats[idx]
            g_lo = w.clamp(min=0).T @ lo + w.clamp(max=0).T @ hi
            g_hi = w.clamp(min=0).T @ hi + w.clamp(max=0).T @ lo
    w1 = mats[0]
    worst = torch.maximum(terms[0][0].abs(), terms[0][1].abs())
    scale = up(float(local_check.l2_up(w1.abs().T @ torch.diag(worst) @ w1.abs())))
    low = float(torch.linalg.eigvalsh(w1.T @ torch.diag(terms[0][0]) @ w1)[0]) - 1e-11 * scale
    high = float(torch.linalg.eigvalsh(w1.T @ torch.diag(terms[0][1]) @ w1)[-1]) + 1e-11 * scale
    jac = norm(0)
    for idx in range(1, len(st.acts)):
        jac *= norm(idx)
        square = up(up(jac) ** 2)
        low += float(terms[idx][0].min()) * square
        high += float(terms[idx][1].max()) * square
    return down(low), up(high)


@pytest.mark.parametrize("name", ["digits-softplus-mlp", "digits-softplus-mlp2", "breast-cancer-softplus-mlp",
                                  "moons-softplus-mlp"])
def test_global_hessian_bounds_equal_the_diagonal_matrix_products(name):
    """The global curvature bounds form W^T diag(t) W as (W^T * t) @ W (issue 18 item 2b: fewer and smaller
    products): every row's bounds are the same floats as with the diagonal matrices, and the product matrices
    themselves are equal bit for bit (signed zeros included)."""
    from certify.certificates import checker, semantics
    from certify.certificates._common import spectral_norm

    net, data = zoo.load(name)
    raw = semantics.translate(net, tuple(data.x_test.shape[1:]))
    st = checker.Stages(raw.mats, raw.biases, raw.acts, raw.skips, raw.head)
    assert st.acts and all(a[0] == "softplus" for a in st.acts)
    norms = [spectral_norm(w) for w in st.mats]
    w = st.mats[0]
    for c in range(st.mats[-1].shape[0]):
        row = torch.zeros(st.mats[-1].shape[0], dtype=torch.float64)
        row[c] = 1.0
        for t in (torch.clamp(st.mats[-1].T @ row, max=0), torch.clamp(st.mats[-1].T @ row, min=0)):
            if len(st.acts) == 1:
                assert torch.equal(((w.T * t) @ w).view(torch.int64), (w.T @ torch.diag(t) @ w).view(torch.int64))
        got = checker._chain_hessian_bounds(st, row, norms.__getitem__)
        assert got == _diagonal_product_hessian_bounds(st, row, norms.__getitem__)
