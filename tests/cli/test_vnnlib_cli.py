"""`certify verify-property NET PROP.vnnlib` and `certify explain --model net.onnx --input prop.vnnlib` on the
real VNN-COMP 2021 mnistfc files (issue 12)."""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mnistfc_data as M  # noqa: E402

from certify.cli import main  # noqa: E402
from certify.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE  # noqa: E402


def _paths(net: str, prop: str) -> tuple[str, str]:
    folder = M.data_dir()
    return str(folder / net), str(folder / prop)


def test_verify_property_holds_exits_0(capsys):
    net, prop = _paths("mnist-net_256x2.onnx", "prop_2_0.03.vnnlib")
    assert main(["verify-property", net, prop, "--timeout", "20", "--method", "crown"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("holds: certified by crown")


def test_verify_property_violated_exits_1_with_a_counterexample_in_the_box(tmp_path, capsys):
    net, prop = _paths("mnist-net_256x2.onnx", "prop_7_0.03.vnnlib")
    cex = tmp_path / "cex.npy"
    assert main(["verify-property", net, prop, "--timeout", "20", "--counterexample", str(cex), "--json"]) == EXIT_FAILED
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "violated"
    point = np.load(cex)
    box = M.prop("prop_7_0.03.vnnlib")
    assert point.shape == (784,) and (point >= box.lower).all() and (point <= box.upper).all()
    label = box.label
    for outputs in result["outputs"].values():  # in the model's dtype and in float64: some Y_j >= Y_label
        assert max(y for j, y in enumerate(outputs) if j != label) >= outputs[label]


def test_verify_property_rejects_a_nonpositive_timeout(capsys):
    net, prop = _paths("mnist-net_256x2.onnx", "prop_2_0.03.vnnlib")
    assert main(["verify-property", net, prop, "--timeout", "0"]) == EXIT_USAGE


def test_explain_reads_the_box_centre_and_label_from_vnnlib(tmp_path, capsys):
    net, prop = _paths("mnist-net_256x2.onnx", "prop_2_0.03.vnnlib")
    out = tmp_path / "cert.json"
    assert main(["explain", "--model", net, "--input", prop, "--method", "gradient", "--out", str(out)]) == EXIT_OK
    captured = capsys.readouterr()
    assert "L-inf ball of radius 0.03" in captured.err and "label 0" in captured.err
    cert = json.loads(out.read_text())
    assert cert["target"] == M.prop("prop_2_0.03.vnnlib").label == 0
    assert main(["verify", str(out)]) == EXIT_OK


def test_verify_property_writes_certificates_that_certify_verify_rechecks(tmp_path, capsys):
    """holds (exit 0) and violated (exit 1) answers write certificates; `certify verify` re-checks them (exit
    0: valid), names the answer, and an edited certificate fails (exit 1)."""
    for prop, code, answer in (("prop_2_0.03.vnnlib", EXIT_OK, "holds"), ("prop_7_0.03.vnnlib", EXIT_FAILED, "violated")):
        net, path = _paths("mnist-net_256x2.onnx", prop)
        out = tmp_path / f"{answer}.json"
        assert main(["verify-property", net, path, "--timeout", "20", "--out", str(out)]) == code
        doc = json.loads(out.read_text())
        assert doc["answer"] == answer and doc["claims"][0]["kind"] == "certified"
        assert doc["claims"][0]["type"] == f"property-{answer}"
        capsys.readouterr()
        assert main(["verify", str(out)]) == EXIT_OK
        text = capsys.readouterr().out
        assert f"answer: {answer} (certificate valid)" in text and "sha256 matches" in text
        doc["claims"][0]["value"] *= 4
        out.write_text(json.dumps(doc))
        assert main(["verify", str(out)]) == EXIT_FAILED


def test_an_unknown_answer_exits_75_and_its_certificate_verifies_with_75(tmp_path, capsys):
    from certify.errors import EXIT_UNKNOWN

    net, prop = _paths("mnist-net_256x6.onnx", "prop_1_0.03.vnnlib")
    out = tmp_path / "unknown.json"
    assert main(["verify-property", net, prop, "--timeout", "3", "--method", "crown", "--out", str(out)]) == EXIT_UNKNOWN
    doc = json.loads(out.read_text())
    assert doc["answer"] == "unknown" and doc["claims"][0]["kind"] == "refused" and doc["seconds"] > 0
    capsys.readouterr()
    assert main(["verify", str(out), "--json"]) == EXIT_UNKNOWN
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] and report["answer"] == "unknown" and report["claims"][0]["status"] == "refused"
