"""The certificate document: a versioned JSON file holding provenance, the input, the explanation and a
list of claims (DESIGN sections 1 and 5; JSON Schema in `certificate.schema.json` beside this file).

A claim states one number about the explanation or the model: `value` with `relation` "<=" (an upper
bound on the quantity named in `statement`), ">=" (a lower bound) or "==" (an exact value), its `kind`
(certified, probabilistic with `confidence`, estimated, solver-reported, or refused with a `reason` and
no value), the `method`, the ids of the claims it rests on (`assumptions`), and the `witness` a checker
needs to re-derive it. Claim `type` names the re-check rule the independent checker applies.

Arrays (input, explanation, witnesses) are stored inline as nested lists of floats (JSON floats
round-trip float64 exactly), with their sha256; arrays larger than `INLINE_LIMIT` elements go to a
sidecar .npy file next to the certificate, referenced by name and hash.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from certify.errors import CertificateFormatError

SCHEMA_ID = "certify-certificate"
SCHEMA_VERSION = 1
INLINE_LIMIT = 65536
MARGIN = 1e-9  # relative outward rounding of every value a builder writes (the checker allows only 1e-12)
KINDS = ("certified", "probabilistic", "estimated", "solver-reported", "refused")
RELATIONS = ("<=", ">=", "==")


def round_up(value: float) -> float:
    """An upper bound as written into a certificate: value widened by the relative MARGIN."""
    return value + abs(value) * MARGIN + 1e-300


def round_down(value: float) -> float:
    """A lower bound as written into a certificate: value narrowed by the relative MARGIN."""
    return value - abs(value) * MARGIN - 1e-300


def array_sha256(array: np.ndarray) -> str:
    a = np.ascontiguousarray(array, dtype=np.float64)
    return hashlib.sha256(str(a.shape).encode() + a.tobytes()).hexdigest()


def encode_array(array: np.ndarray, sidecar: Path | None = None) -> dict[str, Any]:
    """{"shape", "sha256", "values"} inline, or {"shape", "sha256", "sidecar"} with the .npy written."""
    a = np.asarray(array, dtype=np.float64)
    record: dict[str, Any] = {"shape": list(a.shape), "sha256": array_sha256(a)}
    if a.size > INLINE_LIMIT and sidecar is not None:
        np.save(sidecar, a)
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
            path = (base_dir or Path(".")) / record["sidecar"]
            a = np.load(path, allow_pickle=False)
        else:
            a = np.asarray(record["values"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CertificateFormatError(f"{where}: cannot read the array: {exc}") from exc
    if list(a.shape) != list(record["shape"]):
        raise CertificateFormatError(f"{where}: shape {list(a.shape)} differs from the recorded {record['shape']}")
    if array_sha256(a) != record["sha256"]:
        raise CertificateFormatError(f"{where}: values do not match their sha256")
    return a


@dataclass
class Claim:
    id: str
    type: str
    statement: str
    relation: str
    value: float | None
    kind: str
    method: str
    assumptions: list[str] = field(default_factory=list)
    witness: dict[str, Any] = field(default_factory=dict)
    confidence: float | None = None
    reason: str | None = None

    @classmethod
    def refused(cls, id: str, type: str, statement: str, method: str, reason: str) -> "Claim":
        return cls(id, type, statement, "<=", None, "refused", method, reason=reason)


@dataclass
class Certificate:
    provenance: dict[str, Any]
    input: dict[str, Any]
    target: int
    explanation: dict[str, Any]
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
        """Write atomically (a temporary file renamed over the target), so a failure never leaves half a file."""
        path = Path(path)
        partial = path.with_suffix(path.suffix + ".partial")
        partial.write_text(self.to_json())
        partial.replace(path)
        return path


_REQUIRED = {"schema": str, "version": int, "provenance": dict, "input": dict, "target": int, "explanation": dict, "claims": list}
_CLAIM_REQUIRED = {"id": str, "type": str, "statement": str, "relation": str, "kind": str, "method": str}


def parse_certificate(text: str, where: str = "certificate") -> Certificate:
    """Parse and structurally validate a certificate; CertificateFormatError names what is wrong."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CertificateFormatError(f"{where} is not valid JSON (truncated or corrupt?): {exc}") from exc
    if not isinstance(raw, dict):
        raise CertificateFormatError(f"{where}: top level must be a JSON object")
    for key, typ in _REQUIRED.items():
        if key not in raw:
            raise CertificateFormatError(f"{where}: missing field {key!r}")
        if not isinstance(raw[key], typ) or (typ is int and isinstance(raw[key], bool)):
            raise CertificateFormatError(f"{where}: field {key!r} must be {typ.__name__}")
    if raw["schema"] != SCHEMA_ID or raw["version"] != SCHEMA_VERSION:
        raise CertificateFormatError(
            f"{where}: schema {raw['schema']!r} version {raw['version']} is not {SCHEMA_ID!r} version {SCHEMA_VERSION}"
        )
    claims = []
    for i, c in enumerate(raw["claims"]):
        if not isinstance(c, dict):
            raise CertificateFormatError(f"{where}: claim {i} is not an object")
        for key, typ in _CLAIM_REQUIRED.items():
            if not isinstance(c.get(key), typ):
                raise CertificateFormatError(f"{where}: claim {i} field {key!r} missing or not {typ.__name__}")
        if c["kind"] not in KINDS or c["relation"] not in RELATIONS:
            raise CertificateFormatError(f"{where}: claim {c['id']!r} has kind {c['kind']!r} / relation {c['relation']!r}")
        value = c.get("value")
        if c["kind"] == "refused":
            if value is not None or not c.get("reason"):
                raise CertificateFormatError(f"{where}: refused claim {c['id']!r} must have no value and a reason")
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            raise CertificateFormatError(f"{where}: claim {c['id']!r} needs a numeric value")
        known = {f for f in Claim.__dataclass_fields__}
        claims.append(Claim(**{k: v for k, v in c.items() if k in known}))
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise CertificateFormatError(f"{where}: duplicate claim ids")
    for c in claims:
        missing = [a for a in c.assumptions if a not in ids and not a.startswith("input:")]
        if missing:
            raise CertificateFormatError(f"{where}: claim {c.id!r} rests on unknown claims {missing}")
    return Certificate(
        provenance=raw["provenance"], input=raw["input"], target=raw["target"],
        explanation=raw["explanation"], claims=claims,
    )


def read_certificate(path: Path) -> Certificate:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CertificateFormatError(f"cannot read certificate {path}: {exc}") from exc
    return parse_certificate(text, str(path))
