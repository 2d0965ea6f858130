"""`certify test-importance` (issue 15): SHAP-XRT tests of every region of one input, an importance-test
certificate that `certify verify` recomputes, and bad input with the documented exit codes, no traceback."""
import json

import numpy as np
import pytest
import torch

from certify.cli import main
from certify.errors import EXIT_FAILED, EXIT_INVALID_INPUT, EXIT_OK, EXIT_USAGE
from certify.models import zoo


def _positive_index():
    _, data = zoo.load("composite-relu-cnn")
    support = data.support_test.flatten(1)
    i = int(torch.nonzero(support.sum(dim=1) == 1).flatten()[0])
    return i, int(torch.nonzero(support[i])[0])


def test_the_quadrant_holding_the_digit_is_rejected_and_the_certificate_verifies(tmp_path, capsys):
    i, tile = _positive_index()
    out = tmp_path / "xrt.json"
    assert main(["test-importance", "--model", "composite-relu-cnn", "--index", str(i), "--k", "49", "--m", "8",
                 "--out", str(out)]) == EXIT_OK
    text = capsys.readouterr().out
    assert f"rejected at alpha = 0.05: region-{tile}." in text and "not corrected for multiplicity" in text
    assert main(["verify", str(out)]) == EXIT_OK
    text = capsys.readouterr().out
    assert "certificate valid: 4 claims verified" in text and "valid (probabilistic)" in text


def test_json_prints_one_document_and_a_tampered_file_fails_verification(tmp_path, capsys):
    i, tile = _positive_index()
    out = tmp_path / "xrt.json"
    assert main(["test-importance", "--model", "composite-relu-cnn", "--index", str(i), "--k", "19", "--m", "4",
                 "--regions", "tile:4", "--sampler", "joint", "--context", "others", "--json", "--out", str(out)]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "certify-importance-certificate" and len(doc["claims"]) == 16
    assert doc["sampler"]["mode"] == "joint" and doc["sampler"]["reference"]["dataset"] == "digits-composite"
    retained = next(c for c in doc["claims"] if c["value"] > 2 / 20)
    retained["value"] -= 1 / 20
    out.write_text(json.dumps(doc))
    assert main(["verify", str(out), "--json"]) == EXIT_FAILED
    report = json.loads(capsys.readouterr().out)
    assert not report["valid"] and "tests" in report


def test_a_reference_file_and_an_input_file(tmp_path, capsys):
    _, data = zoo.load("composite-relu-cnn")
    np.save(tmp_path / "x.npy", data.x_test[5].numpy())
    np.save(tmp_path / "ref.npy", data.x_train[:64].numpy())
    out = tmp_path / "c.json"
    assert main(["test-importance", "--model", "composite-relu-cnn", "--input", str(tmp_path / "x.npy"), "--reference",
                 str(tmp_path / "ref.npy"), "--k", "9", "--m", "2", "--out", str(out)]) == EXIT_OK
    capsys.readouterr()
    doc = json.loads(out.read_text())
    assert doc["sampler"]["reference"]["dataset"] is None and doc["sampler"]["reference"]["rows"] == 64
    assert doc["sampler"]["reference"]["data"]["shape"] == [64, 256]  # stored: no data set names them
    assert main(["verify", str(out)]) == EXIT_OK


@pytest.mark.parametrize("extra, code, message", [
    (["--regions", "tile:5"], EXIT_USAGE, "must divide"),
    (["--regions", "circles"], EXIT_USAGE, "quadrants"),
    (["--k", "0"], EXIT_USAGE, "--k, --m"),
    (["--alpha", "1.5"], EXIT_USAGE, "--alpha"),
    (["--k", "100000", "--m", "1000"], EXIT_USAGE, "model inputs"),
    (["--reference", "missing.npy"], EXIT_USAGE, "neither train, test nor a file"),
    (["--index", "100000"], EXIT_USAGE, "out of range"),
    (["--out", "/no/such/folder/c.json"], EXIT_USAGE, "does not exist"),
])
def test_bad_input_exits_with_its_code(extra, code, message, capsys):
    assert main(["test-importance", "--model", "composite-relu-cnn", *extra]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_reference_of_another_size_is_invalid_input(tmp_path, capsys):
    np.save(tmp_path / "ref.npy", np.zeros((8, 10)))
    assert main(["test-importance", "--model", "composite-relu-cnn", "--reference", str(tmp_path / "ref.npy")]) == EXIT_INVALID_INPUT
    assert "256 features" in capsys.readouterr().err
