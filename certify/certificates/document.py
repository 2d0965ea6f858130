"""The certificate document, version 2: a JSON file holding provenance, the function the claims are about,
the input, the explanation, the target and a list of claims (DESIGN sections 1, 5 and 10; JSON Schema in
`certificate.schema.json` beside this file, validated at run time).

* `function`: what every claim is about: {"description", "semantics" (the translation summary: ops,
  softplus handling), "conformance" ({"tolerance", "max_deviation", "points", "passed"})}, or
  {"refused": reason} when the model could not be translated exactly (then every bound-based claim is
  refused with that reason).
* `target` and `target_source` ("given" by the user, or "predicted": the argmax of the model at x).
* `claims`: typed statements (`certify.certificates.claims`): type, params, relation, value, kind, method,
  assumptions, witness, confidence, reason, and the statement rendered from type and params.

Arrays (input, explanation, witnesses) are stored inline as nested lists of floats (JSON floats
round-trip float64 exactly), with their sha256; arrays larger than `INLINE_LIMIT` elements go to a
sidecar .npy file next to the certificate, referenced by name and hash.

A PROPERTY certificate (schema "certify-property-certificate", version 1, `property-certificate.schema.json`;
issue 12) answers a VNN-LIB property for a model: `property` {path, sha256 of the file's bytes, input_shape,
inputs, outputs}, `answer` ("holds", "violated" or "unknown"), `seconds` spent, the `function` block, and
exactly one claim: a `property-holds` claim (certified when the answer is "holds", else refused with the
reason) or a `property-violated` claim (certified when "violated"). The input box and the counterexample
formula are params of that claim (`certify.certificates.claims`).

A PROX certificate (schema "certify-prox-certificate", version 1, `prox-certificate.schema.json`; issue 14) says
what is proven about a denoiser f: `denoiser` {input_shape, features}, `answer` ("prox": the prox-structure
claim is certified; "not-a-prox": a prox-violation-cycle claim is certified; "undecided": sampled evidence
only), `seconds`, and its claims (`claims.PROX_TYPES`); re-checked by `certify.certificates.prox_check`.

An IMPORTANCE certificate (schema "certify-importance-certificate", version 1,
`importance-certificate.schema.json`; issue 15) holds SHAP-XRT tests at one input: `input` {shape, x, classes},
`sampler` (the law of the free features: reference rows, mode, groups; the rows inline or in a sidecar),
`seconds`, and one `xrt-p-value` claim per test; re-checked by `certify.certificates.xrt_check`.

A file that is not JSON, has a duplicated key, fails the schema (an unknown or missing field, a wrong
version, a kind or claim type not in the registry) or has duplicate / dangling claim ids raises
`CertificateFormatError` (exit 2 of `certify verify`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from certify.certificates.claims import CLAIM_TYPES, KINDS, RELATIONS, Claim, Kind, array_sha256
from certify.errors import CertificateFormatError
from certify.runs import atomic_save, atomic_write
from certify.vocabulary import round_down, round_up

__all__ = ["AnyCertificate", "Certificate", "ImportanceCertificate", "PropertyCertificate", "ProxCertificate", "importance_schema", "PROX_ANSWERS", "prox_schema", "ANSWERS", "Claim", "Kind", "KINDS", "RELATIONS", "SCHEMA_ID", "SCHEMA_VERSION", "INLINE_LIMIT",
           "array_sha256", "encode_array", "decode_array", "parse_certificate", "read_certificate", "schema", "property_schema",
           "round_up", "round_down"]

SCHEMA_ID = "certify-certificate"
SCHEMA_VERSION = 2
INLINE_LIMIT = 65536
SCHEMA_FILE = Path(__file__).with_name("certificate.schema.json")
PROPERTY_SCHEMA_ID = "certify-property-certificate"
PROPERTY_SCHEMA_VERSION = 1
PROPERTY_SCHEMA_FILE = Path(__file__).with_name("property-certificate.schema.json")
PROX_SCHEMA_ID = "certify-prox-certificate"
PROX_SCHEMA_VERSION = 1
PROX_SCHEMA_FILE = Path(__file__).with_name("prox-certificate.schema.json")
PROX_ANSWERS = ("prox", "not-a-prox", "undecided")
IMPORTANCE_SCHEMA_ID = "certify-importance-certificate"
IMPORTANCE_SCHEMA_VERSION = 1
IMPORTANCE_SCHEMA_FILE = Path(__file__).with_name("importance-certificate.schema.json")
ANSWERS = ("holds", "violated", "unknown")
TARGET_SOURCES = ("given", "predicted")


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The JSON Schema of the format (package data), with the claim kinds and types of the registry."""
    doc = json.loads(SCHEMA_FILE.read_text())
    claim = doc["$defs"]["claim"]["properties"]
    claim["kind"] = {"enum": list(KINDS)}
    claim["type"] = {"enum": sorted(CLAIM_TYPES)}
    claim["relation"] = {"enum": list(RELATIONS)}
    return doc


@lru_cache(maxsize=1)
def property_schema() -> dict[str, Any]:
    """The JSON Schema of a property certificate; its claims and arrays are those of `schema()`."""
    doc = json.loads(PROPERTY_SCHEMA_FILE.read_text())
    doc["$defs"] = {"claim": schema()["$defs"]["claim"], "array": schema()["$defs"]["array"]}
    doc["properties"]["function"] = schema()["properties"]["function"]
    return doc


@lru_cache(maxsize=1)
def prox_schema() -> dict[str, Any]:
    """The JSON Schema of a prox certificate; its claims and arrays are those of `schema()`."""
    doc = json.loads(PROX_SCHEMA_FILE.read_text())
    doc["$defs"] = {"claim": schema()["$defs"]["claim"], "array": schema()["$defs"]["array"]}
    return doc


def importance_schema() -> dict[str, Any]:
    """The JSON Schema of an importance-test certificate; its claims and arrays are those of `schema()`."""
    doc = json.loads(IMPORTANCE_SCHEMA_FILE.read_text())
    doc["$defs"] = {"claim": schema()["$defs"]["claim"], "array": schema()["$defs"]["array"]}
    return doc


def encode_array(array: np.ndarray, sidecar: Path | None = None) -> dict[str, Any]:
    """{"shape", "sha256", "values"} inline, or {"shape", "sha256", "sidecar"} with the .npy written."""
    a = np.asarray(array, dtype=np.float64)
    record: dict[str, Any] = {"shape": list(a.shape), "sha256": array_sha256(a)}
    if a.size > INLINE_LIMIT and sidecar is not None:
        atomic_save(sidecar, lambda f: np.save(f, a))
        record["sidecar"] = sidecar.name
    else:
        record["values"] = a.tolist()
    return record


def decode_array(record: Any, where: str, base_dir: Path | None = None) -> np.ndarray:
    """The array of a record, checked against its shape and hash; CertificateFormatError if unusable."""
    if not isinstance(record, dict) or "shape" not in record or "sha256" not in record:
        raise CertificateFormatError(f"{where}: not an array record (needs shape and sha256)")
    try:
        if "sidecar" in record:
            name = Path(str(record["sidecar"]))
            if name.name != str(record["sidecar"]):
                raise CertificateFormatError(f"{where}: a sidecar is a file name next to the certificate, not a path")
            a = np.load((base_dir or Path(".")) / name, allow_pickle=False)
            if not isinstance(a, np.ndarray):  # an .npz archive
                raise CertificateFormatError(f"{where}: the sidecar {name} is not a single .npy array")
        else:
            a = np.asarray(record["values"])
            if a.size == 0:  # [] holds no shape: an empty array of any recorded shape (e.g. [0, 3])
                a = a.astype(np.float64).reshape(record["shape"])
        if a.dtype.kind not in "iuf":  # strings ("1"), booleans, objects (ragged lists)
            raise CertificateFormatError(f"{where}: the values are {a.dtype} ({a.dtype.kind}), not numbers")
        a = a.astype(np.float64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CertificateFormatError(f"{where}: cannot read the array: {exc}") from exc
    if list(a.shape) != list(record["shape"]):
        raise CertificateFormatError(f"{where}: shape {list(a.shape)} differs from the recorded {record['shape']}")
    if array_sha256(a) != record["sha256"]:
        raise CertificateFormatError(f"{where}: values do not match their sha256")
    if not np.isfinite(a).all():
        raise CertificateFormatError(f"{where}: the array holds NaN or infinite values")
    return a


@dataclass
class Certificate:
    provenance: dict[str, Any]
    function: dict[str, Any]
    input: dict[str, Any]
    explanation: dict[str, Any]
    target: int
    target_source: str
    claims: list[Claim]
    schema: str = SCHEMA_ID
    version: int = SCHEMA_VERSION

    def claim(self, claim_id: str) -> Claim:
        for c in self.claims:
            if c.id == claim_id:
                return c
        raise KeyError(claim_id)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, allow_nan=False)

    def write(self, path: Path) -> Path:
        """Write atomically (`certify.runs.atomic_write`: a temporary file with a unique name renamed over the
        target), so a failure never leaves half a file and concurrent writers never collide. UsageError when the
        folder is missing or `path` is a folder."""
        return atomic_write(path, self.to_json())


@dataclass
class PropertyCertificate:
    """The answer to one VNN-LIB property for one model (module docstring)."""

    provenance: dict[str, Any]
    function: dict[str, Any]
    property: dict[str, Any]
    answer: str
    seconds: float
    claims: list[Claim]
    schema: str = PROPERTY_SCHEMA_ID
    version: int = PROPERTY_SCHEMA_VERSION

    claim = Certificate.claim
    to_json = Certificate.to_json
    write = Certificate.write


@dataclass
class ProxCertificate:
    """What is proven about a denoiser f: a proximal operator, not one, or undecided (module docstring)."""

    provenance: dict[str, Any]
    denoiser: dict[str, Any]
    answer: str
    seconds: float
    claims: list[Claim]
    schema: str = PROX_SCHEMA_ID
    version: int = PROX_SCHEMA_VERSION

    claim = Certificate.claim
    to_json = Certificate.to_json
    write = Certificate.write


@dataclass
class ImportanceCertificate:
    """SHAP-XRT tests of feature importance at one input (module docstring)."""

    provenance: dict[str, Any]
    input: dict[str, Any]
    sampler: dict[str, Any]
    seconds: float
    claims: list[Claim]
    schema: str = IMPORTANCE_SCHEMA_ID
    version: int = IMPORTANCE_SCHEMA_VERSION

    claim = Certificate.claim
    to_json = Certificate.to_json
    write = Certificate.write


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise CertificateFormatError(f"duplicated field {key!r}")
        out[key] = value
    return out


MAX_INT_DIGITS = 40  # seeds and counts; a longer integer literal is no certificate number (10**400 overflows floats)


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise CertificateFormatError(f"an integer literal of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _reject_constant(name: str) -> float:
    raise CertificateFormatError(f"{name} is not a JSON number")


AnyCertificate = Certificate | PropertyCertificate | ProxCertificate | ImportanceCertificate


def parse_certificate(text: str, where: str = "certificate") -> AnyCertificate:
    """Parse and validate a certificate (an explanation certificate, or a property certificate by its
    `schema` field) against its JSON Schema; CertificateFormatError names what is wrong."""
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant,
                         parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise CertificateFormatError(f"{where} is not valid JSON (truncated or corrupt?): {exc}") from exc
    except RecursionError:
        raise CertificateFormatError(f"{where}: JSON nested too deeply to be a certificate") from None
    except CertificateFormatError as exc:
        raise CertificateFormatError(f"{where}: {exc}") from None
    if not isinstance(raw, dict):
        raise CertificateFormatError(f"{where}: top level must be a JSON object")
    known = {(SCHEMA_ID, SCHEMA_VERSION): schema, (PROPERTY_SCHEMA_ID, PROPERTY_SCHEMA_VERSION): property_schema,
             (PROX_SCHEMA_ID, PROX_SCHEMA_VERSION): prox_schema,
             (IMPORTANCE_SCHEMA_ID, IMPORTANCE_SCHEMA_VERSION): importance_schema}
    which = (raw.get("schema"), raw.get("version"))
    if which not in known:
        raise CertificateFormatError(
            f"{where}: schema {raw.get('schema')!r} version {raw.get('version')!r} is not one of "
            + ", ".join(f"{name!r} version {version}" for name, version in known)
        )
    errors = sorted(jsonschema.Draft202012Validator(known[which]()).iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        path = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        raise CertificateFormatError(f"{where}: {path}: {first.message}")
    claims = [Claim(**c) for c in raw["claims"]]
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise CertificateFormatError(f"{where}: duplicate claim ids")
    for c in claims:
        missing = [a for a in c.assumptions if a not in ids]
        if missing:
            raise CertificateFormatError(f"{where}: claim {c.id!r} rests on unknown claims {missing}")
        if c.id in c.assumptions:
            raise CertificateFormatError(f"{where}: claim {c.id!r} rests on itself")
    if which[0] == IMPORTANCE_SCHEMA_ID:
        return ImportanceCertificate(provenance=raw["provenance"], input=raw["input"], sampler=raw["sampler"],
                                     seconds=raw["seconds"], claims=claims)
    if which[0] == PROX_SCHEMA_ID:
        return ProxCertificate(provenance=raw["provenance"], denoiser=raw["denoiser"], answer=raw["answer"],
                               seconds=raw["seconds"], claims=claims)
    if which[0] == PROPERTY_SCHEMA_ID:
        return PropertyCertificate(provenance=raw["provenance"], function=raw["function"], property=raw["property"],
                                   answer=raw["answer"], seconds=raw["seconds"], claims=claims)
    return Certificate(
        provenance=raw["provenance"], function=raw["function"], input=raw["input"], explanation=raw["explanation"],
        target=raw["target"], target_source=raw["target_source"], claims=claims,
    )


def read_certificate(path: Path) -> AnyCertificate:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CertificateFormatError(f"cannot read certificate {path}: {exc}") from exc
    return parse_certificate(text, str(path))
