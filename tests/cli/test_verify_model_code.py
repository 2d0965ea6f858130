"""`certify verify` never runs Python code that a document names (a reviewer's finding, stop 28): a certificate
or a store naming its model as module:callable is refused with exit 2 and the code does not run, unless the user
passes --model SPEC or --run-model-code; a store's rows are then neither checked nor marked."""
import json
import shutil
import sqlite3

import numpy as np

from certify.cli import main
from certify.errors import EXIT_OK, EXIT_UNUSABLE

MODEL = """\
from pathlib import Path

import torch
from torch import nn

Path(__file__).with_name("ran.txt").write_text("executed")


def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Softplus(), nn.Linear(8, 3)).eval()
"""


def _certificate(tmp_path, capsys):
    (tmp_path / "model.py").write_text(MODEL)
    np.save(tmp_path / "x.npy", np.full(4, 0.25))
    spec = f"{tmp_path / 'model.py'}:make"
    out = tmp_path / "cert.json"
    assert main(["explain", "--model", spec, "--input", str(tmp_path / "x.npy"), "--method", "gradient",
                 "--out", str(out)]) == EXIT_OK
    (tmp_path / "ran.txt").unlink()
    capsys.readouterr()
    return spec, out


def test_a_certificate_naming_model_code_is_refused_unless_the_user_says_to_run_it(tmp_path, capsys):
    spec, cert = _certificate(tmp_path, capsys)
    assert json.loads(cert.read_text())["provenance"]["model"]["spec"] == spec
    assert main(["verify", str(cert)]) == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert "names its model by Python code" in err and "--run-model-code" in err and "Traceback" not in err
    assert not (tmp_path / "ran.txt").exists()  # the code did not run
    assert main(["verify", str(cert), "--run-model-code"]) == EXIT_OK
    assert (tmp_path / "ran.txt").exists()
    (tmp_path / "ran.txt").unlink()
    assert main(["verify", str(cert), "--model", spec]) == EXIT_OK


def test_a_store_naming_model_code_is_refused_before_any_row_is_checked_or_marked(tmp_path, capsys):
    path = tmp_path / "runs.sqlite"
    assert main(["batch", "--model", "zoo:digits-softplus-mlp", "--dataset", "digits-flat", "--limit", "2",
                 "--methods", "gradient", "--store", str(path)]) == EXIT_OK
    evil = tmp_path / "evil.sqlite"
    shutil.copy(path, evil)
    (tmp_path / "model.py").write_text(MODEL)
    with sqlite3.connect(evil) as db:
        params, = db.execute("SELECT params FROM certificates LIMIT 1").fetchone()
        key = json.loads(params)
        key["model"] = f"{tmp_path / 'model.py'}:make"
        db.execute("UPDATE certificates SET params = ? WHERE params = ?", (json.dumps(key), params))
        before = db.execute("SELECT status FROM certificates ORDER BY id").fetchall()
    capsys.readouterr()
    assert main(["verify", "--store", str(evil)]) == EXIT_UNUSABLE
    assert "names its model by Python code" in capsys.readouterr().err
    assert not (tmp_path / "ran.txt").exists()
    with sqlite3.connect(evil) as db:
        assert db.execute("SELECT status FROM certificates ORDER BY id").fetchall() == before  # nothing marked
    assert main(["verify", "--store", str(path)]) == EXIT_OK  # zoo models are data: no flag needed
