"""No empty certificate shown as an achievement (issue 13, item 5): a certified top-k of 0, or a stability
bound not smaller than the explanation's own norm, is labelled "vacuous (reason)" by `certify explain` and
`certify verify`, counted apart from the certified claims, and flagged per claim in their --json output,
while the certificate file stays the checker's format (no extra field) and still verifies."""
import json

import numpy as np
import pytest

from certify.certificates.builder import certify_explanations
from certify.certificates.claims import Claim
from certify.certificates.document import decode_array, parse_certificate, read_certificate
from certify.certificates.summary import (STABILITY_VACUOUS, TOPK_VACUOUS, explanation_norm, vacuous_label,
                                          vacuous_reason, vacuous_reasons)
from certify.cli import main
from certify.explain import Gradient
from certify.models import zoo

MODEL = "digits-softplus-mlp"
TOPK_LABEL = vacuous_label(TOPK_VACUOUS)  # "vacuous (guarantees none of the top-k)"
STABILITY_LABEL = vacuous_label(STABILITY_VACUOUS)


def _claim(type_, value, kind="certified", k=6):
    params = {"target": 0, "eps": 0.1, **({"k": k} if type_ == "topk-stability" else {})}
    return Claim(id=type_, type=type_, params=params, relation=">=" if type_ == "topk-stability" else "<=",
                 value=value, kind=kind, method="m")


def test_vacuous_reason_rules():
    assert vacuous_reason(_claim("topk-stability", 0.0), 1.0) == TOPK_VACUOUS
    assert vacuous_reason(_claim("topk-stability", 0.5), 1.0) is None
    assert vacuous_reason(_claim("stability-gradient", 2.0), 1.5) == STABILITY_VACUOUS
    assert vacuous_reason(_claim("stability-moreaugrad", 1.5, kind="probabilistic"), 1.5) == STABILITY_VACUOUS
    assert vacuous_reason(_claim("stability-moreaugrad", 0.3), 1.5) is None
    assert vacuous_reason(_claim("stability-gradient", 0.0), 0.0) is None  # "a cannot change" says something
    assert vacuous_reason(_claim("stability-gradient", 2.0), None) is None  # no explanation: not judged
    assert vacuous_reason(_claim("topk-stability", None, kind="refused"), 1.0) is None  # refused, shown as such
    assert vacuous_reason(_claim("lipschitz", 1e9), 1.0) is None


def _emptied(cert):
    """`cert` loosened by hand into an empty one: the top-k claim 0 and the stability bound twice ||a||_2.
    Both are loosenings, so the checker still accepts it."""
    doc = json.loads(cert.to_json())
    norm = float(np.linalg.norm(decode_array(cert.explanation, "explanation")))
    for c in doc["claims"]:
        if c["id"] == "topk":
            c["value"] = 0.0
        if c["id"] == "stability":
            c["value"] = 2 * norm
    return parse_certificate(json.dumps(doc))


@pytest.fixture(scope="module")
def honest():
    model, data = zoo.load(MODEL)
    (cert,) = certify_explanations(Gradient(model), data.x_test[:1], model_spec=f"zoo:{MODEL}")
    assert cert.claim("topk").value > 0 and cert.claim("stability").value < explanation_norm(cert)
    return cert


def _verifiable(cert):
    return sum(1 for c in cert.claims if c.kind in ("certified", "probabilistic"))


def test_honest_certificate_is_not_vacuous(honest):
    assert not any(vacuous_reasons(honest).values())


def test_verify_labels_and_counts_vacuous_claims_apart(honest, tmp_path, capsys):
    path = _emptied(honest).write(tmp_path / "empty.json")
    text = path.read_text()
    assert main(["verify", str(path)]) == 0  # true claims: the certificate is valid
    out = capsys.readouterr().out
    lines = out.splitlines()
    apart = lines.index("vacuous (they verify, but certify nothing; shown apart, not counted as certified):")
    topk = next(i for i, line in enumerate(lines) if line.split()[:1] == ["topk"])
    stability = next(i for i, line in enumerate(lines) if line.split()[:1] == ["stability"])
    assert topk > apart and stability > apart  # not among the re-derived (certified) claims
    assert TOPK_LABEL in lines[topk] and STABILITY_LABEL in lines[stability]
    summary = lines[-1]
    verified = _verifiable(honest) - 2
    assert summary == f"certificate valid: {verified} claims verified, and 2 vacuous (stability, topk: shown apart)"

    assert main(["verify", str(path), "--json"]) == 0
    claims = {c["id"]: c for c in json.loads(capsys.readouterr().out)["claims"]}
    assert claims["topk"]["vacuous"] == TOPK_VACUOUS and claims["stability"]["vacuous"] == STABILITY_VACUOUS
    assert claims["lipschitz"]["vacuous"] is None
    assert path.read_text() == text  # the certificate itself is not touched


def test_verify_of_an_honest_certificate_has_no_vacuous_group(honest, tmp_path, capsys):
    path = honest.write(tmp_path / "cert.json")
    assert main(["verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert "vacuous" not in out.lower()
    assert out.splitlines()[-1] == f"certificate valid: {_verifiable(honest)} claims verified"


def test_explain_labels_a_zero_topk_vacuous(honest, tmp_path, monkeypatch, capsys):
    import certify.certificates.builder as builder

    issue = builder.certify_explanations
    monkeypatch.setattr(builder, "certify_explanations", lambda *a, **kw: [_emptied(c) for c in issue(*a, **kw)])
    out_file = tmp_path / "cert.json"
    argv = ["explain", "--model", f"zoo:{MODEL}", "--method", "gradient", "--out", str(out_file)]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    topk = next(line for line in lines if line.split()[:1] == ["topk"])
    stability = next(line for line in lines if line.split()[:1] == ["stability"])
    assert topk.split(None, 1)[1].startswith(TOPK_LABEL) and ">= 0 (certified)" in topk
    assert stability.split(None, 1)[1].startswith(STABILITY_LABEL) and "||a||_2 = " in stability
    assert lines[-1] == "  vacuous (true, but certify nothing): stability, topk"

    assert main(argv + ["--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {c["id"]: c["vacuous"] for c in printed["claims"] if c["vacuous"]} == {
        "stability": STABILITY_VACUOUS, "topk": TOPK_VACUOUS}
    written = json.loads(out_file.read_text())
    assert all("vacuous" not in c for c in written["claims"])  # the file stays the checker's format
    assert read_certificate(out_file).claim("topk").value == 0.0
