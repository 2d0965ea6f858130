"""Certificate documents: round trip, schema validity (JSON Schema file), and clear errors on bad files."""
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

import certify.certificates as pkg
from certify.certificates.builder import certify_explanations
from certify.certificates.document import INLINE_LIMIT, decode_array, encode_array, parse_certificate, schema
from certify.errors import CertificateFormatError
from certify.explain import Gradient
from certify.models import zoo

SCHEMA = schema()  # the file shipped beside the package, with the registry's kinds and types filled in
FILE_SCHEMA = json.loads((Path(pkg.__file__).parent / "certificate.schema.json").read_text())


@pytest.fixture(scope="module")
def cert():
    model, data = zoo.load("digits-softplus-mlp")
    return certify_explanations(Gradient(model), data.x_test[:1], model_spec="digits-softplus-mlp")[0]


def test_round_trip_and_schema(cert, tmp_path):
    text = cert.to_json()
    jsonschema.validate(json.loads(text), SCHEMA)
    jsonschema.validate(json.loads(text), FILE_SCHEMA)
    again = parse_certificate(text)
    assert again.to_json() == text
    refused = json.loads(text)
    refused["claims"][1].update(kind="refused", value=None, reason="because")
    jsonschema.validate(refused, SCHEMA)
    parse_certificate(json.dumps(refused))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("claims"), "'claims' is a required property"),
        (lambda d: d.update(version=99), "version 99"),
        (lambda d: d.update(version=1), "version 1"),
        (lambda d: d.update(extra=1), "Additional properties"),
        (lambda d: d["claims"][0].update(extra=1), "Additional properties"),
        (lambda d: d["claims"][0].pop("params"), "'params' is a required property"),
        (lambda d: d["claims"][0].update(kind="guaranteed"), "guaranteed"),
        (lambda d: d["claims"][0].update(type="made-up"), "made-up"),
        (lambda d: d["claims"][0].update(value="big"), "big"),
        (lambda d: d["claims"][0].update(kind="refused"), "claims/0"),
        (lambda d: d["claims"][1].update(id=d["claims"][0]["id"]), "duplicate claim ids"),
        (lambda d: d["claims"][0].update(assumptions=["ghost"]), "unknown claims"),
        (lambda d: d.update(target="7"), "'7' is not of type 'integer'"),
        (lambda d: d.update(target_source="guessed"), "guessed"),
        (lambda d: d.pop("function"), "'function' is a required property"),
    ],
)
def test_malformed_documents_name_the_problem(cert, mutate, message):
    doc = json.loads(cert.to_json())
    mutate(doc)
    with pytest.raises(CertificateFormatError, match=message):
        parse_certificate(json.dumps(doc))


def test_duplicated_field_and_non_finite_numbers_are_format_errors(cert):
    text = cert.to_json()
    with pytest.raises(CertificateFormatError, match="duplicated field 'target'"):
        parse_certificate(text.replace('"target": ', '"target": 0, "target": ', 1))
    with pytest.raises(CertificateFormatError, match="not a JSON number"):
        parse_certificate(text.replace('"value": ', '"value": NaN, "v": ', 1))


def test_not_json_and_not_object():
    with pytest.raises(CertificateFormatError, match="not valid JSON"):
        parse_certificate('{"schema": "certify-certi')
    with pytest.raises(CertificateFormatError, match="JSON object"):
        parse_certificate("[1, 2]")


def test_arrays_inline_and_sidecar(tmp_path):
    small = np.arange(6.0).reshape(2, 3)
    assert np.array_equal(decode_array(encode_array(small), "small"), small)
    big = np.random.default_rng(0).normal(size=INLINE_LIMIT + 1)
    record = encode_array(big, tmp_path / "big.npy")
    assert "sidecar" in record and np.array_equal(decode_array(record, "big", tmp_path), big)
    record["sha256"] = "0" * 64
    with pytest.raises(CertificateFormatError, match="sha256"):
        decode_array(record, "big", tmp_path)


def _property_doc() -> dict:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from property_grid import classification, predicted, tiny_net

    from certify.attacks.property import PropertyResult
    from certify.certificates.issuers.property import property_certificate

    model = tiny_net(0)
    centre = np.array([0.3, -0.2])
    prop = classification(centre, 0.3, predicted(model, centre))
    cert = property_certificate(model, prop, PropertyResult("unknown", 1.5, "crown", -0.1), (2,), "crown", 2.0)
    return json.loads(cert.to_json())


def test_property_certificates_round_trip_and_are_schema_checked(tmp_path):
    from certify.certificates.document import PropertyCertificate, property_schema, read_certificate

    doc = _property_doc()
    jsonschema.validate(doc, property_schema())
    again = parse_certificate(json.dumps(doc))
    assert isinstance(again, PropertyCertificate) and again.answer == "unknown" and again.seconds == 1.5
    assert json.loads(again.to_json()) == doc
    again.write(tmp_path / "p.json")
    assert isinstance(read_certificate(tmp_path / "p.json"), PropertyCertificate)
    bad = {"answer": "maybe", "extra": 1, "claims": doc["claims"] * 2, "version": 2}
    for key, value in bad.items():
        with pytest.raises(CertificateFormatError):
            parse_certificate(json.dumps({**doc, key: value}))
    with pytest.raises(CertificateFormatError):
        parse_certificate(json.dumps({**doc, "property": {**doc["property"], "inputs": 0}}))


def test_an_empty_array_keeps_its_recorded_shape():
    record = encode_array(np.zeros((0, 3)))
    assert decode_array(json.loads(json.dumps(record)), "x").shape == (0, 3)
