"""The store's commands (certify.batch.cli): exit codes, the summary, export and `verify --store`."""
import json

import pytest

from certify.cli import main
from certify.batch.store import CertificateStore, sha256_text

BATCH = ["batch", "--model", "zoo:digits-softplus-mlp", "--dataset", "digits-flat", "--limit", "3", "--methods", "gradient"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "runs.sqlite"
    assert main(BATCH + ["--store", str(path)]) == 0
    return path


@pytest.mark.parametrize("argv", [
    ["batch", "--model", "m", "--methods", "gradient", "--store", "s"],  # no --dataset / --inputs
    BATCH + ["--store", "s", "--param", "rho"],  # not KEY=VALUE
    BATCH + ["--store", "s", "--param", ":rho=1"],
    BATCH + ["--store", "s", "--workers", "0"],
    BATCH + ["--store", "s", "--eps", "inf"],
    BATCH + ["--store", "s", "--executor", "dask"],
    ["verify"],  # no --store
])
def test_usage_errors_exit_64(argv):
    try:  # argparse's errors exit from the parser; the others are returned by main
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 64


def test_errors_map_to_exit_codes(tmp_path, capsys):
    assert main(BATCH + ["--store", str(tmp_path / "s.sqlite"), "--param", "rho=0.3"]) == 64
    assert "unknown parameters ['rho']" in capsys.readouterr().err
    assert main(BATCH + ["--store", str(tmp_path / "s.sqlite"), "--ray-address", "auto"]) == 64
    assert main(BATCH + ["--store", str(tmp_path / "missing" / "s.sqlite")]) == 64
    assert main(["batch", "--model", "zoo:digits-softplus-mlp", "--inputs", str(tmp_path), "--methods", "gradient",
                 "--store", str(tmp_path / "s.sqlite")]) == 64  # a folder without inputs
    junk = tmp_path / "junk.sqlite"
    junk.write_text("x" * 5000)
    assert main(["verify", "--store", str(junk)]) == 2
    assert main(["verify", "--store", str(tmp_path / "none.sqlite")]) == 64
    assert main(["export", "--store", str(junk), "--out", str(tmp_path / "x.csv")]) == 64


def test_summary_verify_and_export(store, tmp_path, capsys):
    assert main(BATCH + ["--store", str(store), "--json"]) == 0  # everything done already
    summary = json.loads(capsys.readouterr().out)
    assert (summary["already_done"], summary["computed"], summary["stored"]) == (3, 0, 3)
    assert main(["verify", "--store", str(store)]) == 0
    assert "3 of 3 certificates valid (gradient 3)" in capsys.readouterr().out
    out = tmp_path / "certs.jsonl"
    assert main(["export", "--store", str(store), "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["certificates"] == 3
    assert len(out.read_text().splitlines()) == 3
    assert main(["export", "--store", str(store), "--out", str(tmp_path / "no" / "x.jsonl")]) == 64
    with CertificateStore(store) as s:  # one claim's value changed, its hash re-stamped: the checker must see it
        row = next(s.rows())
        cert = json.loads(row.certificate)
        claim = next(c for c in cert["claims"] if c["value"] is not None and c["type"] == "lipschitz")
        claim["value"] = claim["value"] / 10
        text = json.dumps(cert)
        s.db.execute("UPDATE certificates SET certificate = ?, sha256 = ? WHERE input_id = ?",
                     (text, sha256_text(text), row.input_id))
    assert main(["verify", "--store", str(store), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] == 2 and report["invalid"][0]["input_id"] == row.input_id and not report["valid_store"]
