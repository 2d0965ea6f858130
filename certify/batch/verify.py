"""`certify verify --store runs.sqlite`: re-check every certificate of a store with the independent checker
(`certify.certificates.checker.verify_certificate`, the model loaded once per SPEC), and that each row is the
certificate its key names: the stored sha256 is that of the stored text, the certificate's method and model
SPEC are the key's, and for a data-set input id (NAME:SPLIT:INDEX) the certificate's input is that example.
The outcome of each row is written back as its `status` (valid / invalid), in one transaction at the end.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from certify.batch.store import CertificateStore, Row, sha256_text
from certify.errors import CertifyError

DATASET_ID = re.compile(r"^(?P<name>[\w-]+):(?P<split>train|test):(?P<index>\d+)$")


@dataclass
class StoreReport:
    """`invalid`: one entry per failing row, {input_id, method, params, problems}."""
    store: str
    certificates: int = 0
    valid: int = 0
    invalid: list[dict] = field(default_factory=list)
    per_method: dict[str, int] = field(default_factory=dict)  # method -> valid certificates

    @property
    def all_valid(self) -> bool:
        return not self.invalid


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


def _problems(row: Row, sources: _Sources) -> list[str]:
    from certify.certificates.checker import verify_certificate
    from certify.certificates.document import decode_array, parse_certificate

    if sha256_text(row.certificate) != row.sha256:
        return ["the stored sha256 is not that of the stored certificate"]
    try:
        cert = parse_certificate(row.certificate, f"certificate of {row.input_id} / {row.method}")
        params = json.loads(row.params)
        problems = []
        method = cert.provenance.get("explainer", {}).get("method")
        if method != row.method:
            problems.append(f"the certificate is of method {method!r}, its key says {row.method!r}")
        spec = cert.provenance.get("model", {}).get("spec")
        if spec != params.get("model"):
            problems.append(f"the certificate names model {spec!r}, its key says {params.get('model')!r}")
        example = sources.example(row.input_id)
        if example is not None and not np.array_equal(example, decode_array(cert.input, "input")):
            problems.append(f"the certificate's input is not the example {row.input_id}")
        report = verify_certificate(cert, sources.model(params["model"]))
        return problems + ([] if report.valid else report.failures() or report.problems)
    except CertifyError as exc:
        return [str(exc)]


def verify_store(path: str | Path, progress: bool = True) -> StoreReport:
    """Check every certificate of the store at `path` (UsageError when there is none; CertificateFormatError
    when the file is not a store) and record each row's status."""
    from certify.progress import progress_bar

    with CertificateStore(path, create=False) as store:
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
        store.set_status(statuses)
    return report
