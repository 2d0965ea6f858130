"""Sparsified SmoothGrad's certified top-k as a probabilistic claim (`topk-smoothed`, issue 16): honest
certificates verify with the value the bound code gives; the checker's own count equals
`certify.bounds.topk_smoothing.certified_topk`; every edit that makes the statement false is caught (the value
raised, the stored map, its seed, batch position, sigma or eps changed)."""
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edits import doc_claim  # noqa: E402

from certify.bounds.topk_smoothing import certified_topk  # noqa: E402
from certify.certificates.builder import certify_explanations  # noqa: E402
from certify.certificates.checker import smoothed_topk_count, verify_certificate  # noqa: E402
from certify.certificates.claims import render  # noqa: E402
from certify.certificates.document import encode_array, parse_certificate  # noqa: E402
from certify.explain import SparsifiedSmoothGrad  # noqa: E402
from certify.models import zoo  # noqa: E402

K, EPS = 6, 0.1


@pytest.fixture(scope="module")
def issued():
    model, data = zoo.load("digits-softplus-mlp")
    explainer = SparsifiedSmoothGrad(model, sigma=0.5, samples=256, l0=6, seed=3)
    return model, certify_explanations(explainer, data.x_test[:4], eps=EPS, k=K)


def _verify(cert_or_doc, model):
    doc = cert_or_doc if isinstance(cert_or_doc, dict) else json.loads(cert_or_doc.to_json())
    return verify_certificate(parse_certificate(json.dumps(doc)), model)


def test_honest_certificates_verify_with_the_bound_codes_count(issued):
    model, certificates = issued
    for cert in certificates:
        claim = cert.claim("topk-smoothed")
        assert claim.kind == "probabilistic"
        stored = torch.tensor(json.loads(cert.to_json())["explanation"]["values"]).reshape(1, -1)
        expected = int(certified_topk(stored, K, EPS, 0.5, 256, claim.params["confidence"])[0]) / K
        assert claim.value == expected
        report = _verify(cert, model)
        assert report.valid, report.failures()
        assert next(c for c in report.checks if c.id == "topk-smoothed").status == "valid (probabilistic)"
    assert any(c.claim("topk-smoothed").value > 0 for c in certificates), "no certificate certifies anything"


@pytest.mark.parametrize("seed", range(6))
def test_the_checkers_count_equals_the_bound_code(seed):
    gen = torch.Generator().manual_seed(seed)
    d, n = int(torch.randint(4, 40, (), generator=gen)), int(torch.randint(16, 4096, (), generator=gen))
    k = int(torch.randint(1, d, (), generator=gen))
    p = (torch.randint(0, n + 1, (d,), generator=gen).double() / n)
    eps, sigma = float(torch.rand((), generator=gen)) * 0.3, 0.2 + float(torch.rand((), generator=gen))
    assert smoothed_topk_count(p, k, eps, sigma, n, 0.999) == int(certified_topk(p[None], k, eps, sigma, n, 0.999)[0])


def _edit(name):
    def raise_value(doc):
        c = doc_claim(doc, "topk-smoothed")
        c["value"] = min(1.0, c["value"] + 1 / K)

    def map_(doc):
        values = torch.tensor(doc["explanation"]["values"])
        flat = values.reshape(-1)
        i, j = int(flat.argmax()), int(flat.argmin())
        flat[i], flat[j] = flat[j], flat[i]  # swap two features: the same values, another map
        doc["explanation"] = encode_array(values.numpy())

    def seed(doc):
        doc_claim(doc, "topk-smoothed")["witness"]["seed"] += 1

    def position(doc):
        w = doc_claim(doc, "topk-smoothed")["witness"]
        w["position"] = (w["position"] + 1) % w["batch"]

    def sigma(doc):
        c = doc_claim(doc, "topk-smoothed")
        c["params"]["sigma"] = 0.25
        c["statement"] = render(c["type"], c["params"])

    def eps(doc):
        c = doc_claim(doc, "topk-smoothed")
        c["params"]["eps"] = 1.0
        c["statement"] = render(c["type"], c["params"])

    return {"value": raise_value, "map": map_, "seed": seed, "position": position, "sigma": sigma, "eps": eps}[name]


@pytest.mark.parametrize("name", ["value", "map", "seed", "position", "sigma", "eps"])
def test_every_edit_that_makes_the_claim_false_is_caught(issued, name):
    model, certificates = issued
    cert = next(c for c in certificates if 0 < c.claim("topk-smoothed").value < 1)
    doc = json.loads(cert.to_json())
    _edit(name)(doc)
    report = _verify(doc, model)
    assert not report.valid, (name, report.checks)


# ------------------------------------------------------------------ regressions: the review's attacks


def test_noise_that_the_dtype_cannot_carry_gives_no_claim():
    """A sigma whose points overflow float32 (the map had become a fixed indicator) is refused by the explainer; one
    below float32's resolution at x (every point rounds to x) gets no claim."""
    from certify.errors import InvalidInputError

    model, data = zoo.load("digits-softplus-mlp")
    with pytest.raises(InvalidInputError, match="overflows"):
        SparsifiedSmoothGrad(model, sigma=1e38, samples=64, l0=6).attribute(data.x_test[:1])
    (cert,) = certify_explanations(SparsifiedSmoothGrad(model, sigma=5e-9, samples=64, l0=6, seed=0), data.x_test[:1],
                                   eps=EPS, k=K)
    claim = cert.claim("topk-smoothed")
    assert claim.kind == "refused" and "not resolved" in claim.reason


def test_the_draws_dtype_and_the_explainers_parameters_are_bound(issued):
    model, certificates = issued
    cert = next(c for c in certificates if c.claim("topk-smoothed").value > 0)
    for edit, message in ((lambda d: doc_claim(d, "topk-smoothed")["witness"].update(dtype="bfloat16"), "dtype"),
                          (lambda d: d["provenance"]["explainer"]["params"].update(sigma=0.25), "explainer's")):
        doc = json.loads(cert.to_json())
        edit(doc)
        report = _verify(doc, model)
        assert not report.valid and message in " ".join(report.failures())


def test_chunking_does_not_change_the_draws():
    model, data = zoo.load("breast-cancer-softplus-mlp")  # 30 features: chunks of 10 x 30 are not multiples of 16
    x = data.x_test[:3]
    whole = SparsifiedSmoothGrad(model, sigma=0.5, samples=40, l0=3, seed=1).attribute(x)
    chunked = SparsifiedSmoothGrad(model, sigma=0.5, samples=40, l0=3, seed=1, samples_per_chunk=10).attribute(x)
    assert torch.equal(whole, chunked)
