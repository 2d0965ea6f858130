"""`certify verify --store runs.sqlite`: re-check every certificate of a store with the independent checker
(`certify.certificates.checker.verify_certificate`, the model loaded once per SPEC), and that each row is the
certificate its key names: the stored sha256 is that of the stored text, the certificate's method and model
SPEC are the key's, its claims are at the key's eps and k and its explainer's parameters are the key's, for a
data-set input id (NAME:SPLIT:INDEX) the certificate's input is that example and for a folder input id
(FILE@HASH) HASH is that of the certificate's input. A malformed row (key or certificate not JSON) is an
invalid row, named. A key that a finished run attempted and that holds no certificate is reported missing.
The outcome of each row is written back as its `status` (valid / invalid), in one transaction at the end.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from certify.batch.store import CertificateStore, Row, sha256_text
from certify.errors import CertificateFormatError, CertifyError

DATASET_ID = re.compile(r"^(?P<name>[\w-]+):(?P<split>train|test):(?P<index>\d+)$")
FOLDER_ID = re.compile(r"^.+@(?P<hash>[0-9a-f]{16})$")


@dataclass
class StoreReport:
    """`invalid`: one entry per failing row, {input_id, method, params, problems}."""
    store: str
    certificates: int = 0
    valid: int = 0
    invalid: list[dict] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)  # keys a finished run attempted, with no certificate
    per_method: dict[str, int] = field(default_factory=dict)  # method -> valid certificates

    @property
    def all_valid(self) -> bool:
        return not self.invalid and not self.missing


class _Sources:
    """Models and data sets, each loaded once."""

    def __init__(self) -> None:
        self.models: dict[str, object] = {}
        self.data: dict[str, object] = {}

    def model(self, spec: str):
        from certify.models.spec import load_model

        if spec not in self.models:
            self.models[spec] = load_model(spec)[0]
        return self.models[spec]

    def example(self, input_id: str) -> np.ndarray | None:
        """The example a data-set input id names, as float64 [1, ...]; None for other ids."""
        from certify.models.datasets import LOADERS, load_dataset

        match = DATASET_ID.match(input_id)
        if match is None or match["name"] not in LOADERS:
            return None
        if match["name"] not in self.data:
            self.data[match["name"]] = load_dataset(match["name"])
        data = self.data[match["name"]]
        x = data.x_train if match["split"] == "train" else data.x_test
        index = int(match["index"])
        return x[index : index + 1].double().numpy() if index < x.shape[0] else np.empty((0,))


def _key(text: str) -> dict:
    """The parsed parameters of a row's key; CertificateFormatError unless a JSON object naming the model."""
    try:
        key = json.loads(text)
    except (TypeError, ValueError):
        raise CertificateFormatError("the key's parameters are not JSON") from None
    if not (isinstance(key, dict) and isinstance(key.get("model"), str) and isinstance(key.get("params", {}), dict)):
        raise CertificateFormatError(f"the key's parameters {text[:200]!r} are not an object with the model SPEC")
    return key


def _named_model(text: str) -> str | None:
    """The model SPEC a row's key names (None for a malformed key, which the row's check reports)."""
    try:
        return _key(text)["model"]
    except CertificateFormatError:
        return None


def _key_problems(cert, key: dict) -> list[str]:
    """Where the certificate's claims and explainer parameters differ from the key's eps, k and method parameters.
    A parameter the key gives as a name the explainer resolves (a string, e.g. sample=train) is not compared."""
    problems = []
    for name in ("eps", "k"):
        values = [c.params[name] for c in cert.claims if name in c.params]
        if not values:
            problems.append(f"the certificate has no claim at {name} (its key says {key.get(name)!r})")
        elif key.get(name) is not None and any(v != key[name] for v in values):
            problems.append(f"the certificate's claims are at {name} {sorted(set(values))}, its key says {key[name]!r}")
    issued = cert.provenance.get("explainer", {}).get("params", {})
    for name, value in key.get("params", {}).items():
        resolved = isinstance(value, str) and name in issued and not isinstance(issued[name], str)
        if name not in issued or (issued[name] != value and not resolved):
            problems.append(f"the certificate's explainer has {name}={issued.get(name)!r}, its key says {value!r}")
    return problems


def _problems(row: Row, sources: _Sources) -> list[str]:
    from certify.certificates.checker import verify_certificate
    from certify.certificates.claims import array_sha256
    from certify.certificates.document import decode_array, parse_certificate

    if not isinstance(row.certificate, str):
        return [f"the stored certificate is a {type(row.certificate).__name__}, not JSON text"]
    if sha256_text(row.certificate) != row.sha256:
        return ["the stored sha256 is not that of the stored certificate"]
    try:
        key = _key(row.params)
        cert = parse_certificate(row.certificate, f"certificate of {row.input_id} / {row.method}")
        problems = _key_problems(cert, key)
        method = cert.provenance.get("explainer", {}).get("method")
        if method != row.method:
            problems.append(f"the certificate is of method {method!r}, its key says {row.method!r}")
        spec = cert.provenance.get("model", {}).get("spec")
        if spec != key["model"]:
            problems.append(f"the certificate names model {spec!r}, its key says {key['model']!r}")
        example, x = sources.example(row.input_id), decode_array(cert.input, "input")
        folder = FOLDER_ID.match(row.input_id)
        if example is not None and not np.array_equal(example, x):
            problems.append(f"the certificate's input is not the example {row.input_id}")
        elif example is None and (folder is None or array_sha256(x)[:16] != folder["hash"]):
            problems.append(f"the certificate's input (sha256 {array_sha256(x)[:16]}) is not the input {row.input_id}")
        report = verify_certificate(cert, sources.model(key["model"]))
        return problems + ([] if report.valid else report.failures() or report.problems)
    except CertifyError as exc:
        return [str(exc)]


def verify_store(path: str | Path, progress: bool = True, run_model_code: bool = False) -> StoreReport:
    """Check every certificate of the store at `path` (UsageError when there is none; CertificateFormatError
    when the file is not a store or is corrupt, or when a row names its model by Python code and
    `run_model_code` is off: nothing is checked or recorded then) and record each row's status; `missing`: the
    keys a finished run attempted that hold no certificate (rows deleted since)."""
    from certify.models.spec import refuse_named_code
    from certify.progress import progress_bar

    with CertificateStore(path, create=False) as store:
        if not run_model_code:
            for spec in sorted({_named_model(row.params) for row in store.rows()} - {None}):
                refuse_named_code(spec, f"the store {path}", "--run-model-code")
        report = StoreReport(str(path))
        sources = _Sources()
        statuses = []
        rows = store.rows()
        for row in progress_bar(rows, desc="verify store", total=store.count(), unit="cert") if progress else rows:
            problems = _problems(row, sources)
            report.certificates += 1
            if problems:
                report.invalid.append({"input_id": row.input_id, "method": row.method, "params": row.params,
                                       "problems": problems})
            else:
                report.valid += 1
                report.per_method[row.method] = report.per_method.get(row.method, 0) + 1
            statuses.append(("invalid" if problems else "valid", row.input_id, row.method, row.params))
        report.missing = [{"input_id": i, "method": m, "params": p} for i, m, p in store.missing()]
        store.set_status(statuses)
    return report
