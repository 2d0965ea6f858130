"""The independent checker: honest certificates verify; tightened claims, other weights or another input
fail; loosened claims stay valid; unreadable files are unusable input (exit 2)."""
import copy
import math
import json
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certify.certificates.builder import certify_explanations
from certify.certificates.checker import verify_certificate, verify_file
from certify.certificates.document import encode_array, parse_certificate
from certify.cli import main
from certify.errors import CertificateFormatError
from certify.explain import Gradient, IntegratedGradients
from certify.explain.lagrange_dual import LagrangeDual
from certify.explain.moreaugrad import MoreauGrad
from certify.models import zoo

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


def test_lagrange_dual_certificates_bound_the_radius(relu_lagrange):
    for cert, relu in relu_lagrange:
        claims = {c.id: c for c in cert.claims}
        assert claims["radius-upper"].kind == claims["radius-lipschitz"].kind == claims["radius-relaxation"].kind == "certified"
        assert claims["radius-lipschitz"].value <= claims["radius-relaxation"].value <= claims["radius-upper"].value
        assert verify_certificate(cert, relu).valid
    blobs = {c.id: c for c in relu_lagrange[2][0].claims}
    assert blobs["radius-exact"].kind == "solver-reported"
    assert blobs["radius-relaxation"].value <= blobs["radius-exact"].value <= blobs["radius-upper"].value * (1 + 1e-6)


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 2), st.integers(0, 20), st.floats(0.5, 0.9))
def test_tightening_lagrange_claims_fails(relu_lagrange, which, pick, factor):
    cert, relu = relu_lagrange[which]
    claims = [c for c in _numeric_certified(cert) if c.id.startswith("radius")]
    claim = claims[pick % len(claims)]
    tight = verify_certificate(_tamper(cert, claim.id, factor, True), relu)
    assert not tight.valid and any(f.startswith(claim.id + ":") for f in tight.failures()), (claim.id, tight.failures())
    assert verify_certificate(_tamper(cert, claim.id, factor, False), relu).valid


@pytest.mark.parametrize("method", ["gradient", "integrated-gradients", "smoothgrad", "moreaugrad", "lagrange-dual"])
@pytest.mark.parametrize("model_name", ["digits-softplus-mlp", "digits-relu-mlp"])
def test_cli_explain_then_verify_round_trips(tmp_path, method, model_name):
    out = tmp_path / "cert.json"
    args = ["explain", "--model", f"zoo:{model_name}", "--method", method, "--index", "4", "--out", str(out)]
    if method == "moreaugrad":
        args += ["--param", "rho=0.3"]
    assert main(args) == 0
    assert main(["verify", str(out)]) == 0


def _numeric_certified(cert):
    return [c for c in cert.claims if c.kind == "certified" and c.value is not None]


def test_honest_certificates_verify(certificates, model):
    for name, certs in certificates.items():
        for cert in certs:
            report = verify_certificate(parse_certificate(cert.to_json()), model)
            assert report.valid, (name, report.failures())
            assert {c.id for c in cert.claims} >= {"lipschitz", "weak-convexity", "curvature", "stability", "topk"}


def test_moreaugrad_certificates_carry_solver_error_and_stability(certificates):
    for name in ("moreaugrad", "sparse", "group"):
        cert = certificates[name][0]
        err, stab = cert.claim("solver-error"), cert.claim("stability")
        assert err.kind == stab.kind == "certified" and 0 <= err.value < 1e-4
        assert stab.type == ("stability-vanilla" if name == "moreaugrad" else "stability-sparse")


def _tamper(cert, claim_id, factor_tight, tighten):
    doc = copy.deepcopy(cert)
    claim = doc.claim(claim_id)
    v = claim.value
    if claim.relation == "<=":
        claim.value = v * factor_tight - 1e-12 if tighten else v * (2 - factor_tight) + 1e-12
    else:
        claim.value = v / factor_tight + 1e-6 if tighten else max(0.0, v * factor_tight - 1e-6)
    return doc


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(["gradient", "moreaugrad", "sparse", "group"]), st.integers(0, 20), st.floats(0.5, 1 - 1e-6))
def test_tightening_fails_and_loosening_passes(certificates, model, name, pick, factor):
    cert = certificates[name][0]
    claims = _numeric_certified(cert)
    claim = claims[pick % len(claims)]
    tight = verify_certificate(_tamper(cert, claim.id, factor, True), model)
    assert not tight.valid and any(f.startswith(claim.id + ":") for f in tight.failures()), tight.failures()
    loose = verify_certificate(_tamper(cert, claim.id, factor, False), model)
    assert loose.valid, loose.failures()


def test_other_weights_fail(certificates, model):
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[0].weight[0, 0] += 1e-3
    report = verify_certificate(certificates["moreaugrad"][0], other)
    assert not report.valid and "model hash" in report.failures()[0]


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
    doc["claims"][-1]["value"] += 0.5  # the top-k lower bound raised: a tightened claim
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
    (ig,) = certify_explanations(IntegratedGradients(model, n_steps=8), zoo.load(MODEL)[1].x_test[:1])
    assert ig.claim("stability").kind == "refused" and verify_certificate(ig, model).valid


def test_checker_imports_no_solver_or_bound_code():
    code = (
        "import sys, certify.certificates.checker as c\n"
        "bad = [m for m in sys.modules if m.startswith(('certify.explain', 'certify.bounds', 'certify.attacks'))]\n"
        "assert not bad, bad\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_smoothed_mode_uses_proposition_1_and_is_probabilistic(model):
    x = zoo.load(MODEL)[1].x_test[:1]
    explainer = MoreauGrad(model, rho=0.05, smoothing_sigma=0.5, samples=16, tol=5e-2, max_iter=100, seed=0)
    (cert,) = certify_explanations(explainer, x)
    smoothed = cert.claim("weak-convexity-smoothed")
    assert smoothed.kind == "certified"
    assert smoothed.value == pytest.approx(math.sqrt(2 / math.pi) * cert.claim("lipschitz").value / 0.5, rel=1e-8)
    assert cert.claim("solver-error").kind == cert.claim("stability").kind == "probabilistic"
    assert cert.claim("stability").confidence == 0.99
    report = verify_certificate(cert, model)
    assert report.valid
    assert {c.id: c.status for c in report.checks}["stability"] == "not re-checkable"
    tightened = _tamper(cert, "weak-convexity-smoothed", 0.9, True)
    assert not verify_certificate(tightened, model).valid
