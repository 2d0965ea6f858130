"""The command line: version, usage errors, check and demo outputs and their exit codes."""
import contextlib
import io
import json
from pathlib import Path

import pytest

from certify import __version__
from certify.cli import main
from certify.errors import EXIT_INVALID_INPUT, EXIT_OK, EXIT_UNSUPPORTED, EXIT_UNUSABLE, EXIT_USAGE


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and __version__ in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["check", "--bogus"]])
def test_usage_errors_exit_64(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == EXIT_USAGE


def test_check_unknown_theorem_is_a_usage_error(tmp_path, capsys):
    assert main(["check", "--only", "NOPE", "--out", str(tmp_path)]) == EXIT_USAGE
    assert "unknown theorem id" in capsys.readouterr().err
    assert not (tmp_path / "THEOREMS.md").exists()


def test_check_writes_the_table(tmp_path, capsys):
    assert main(["check", "--quick", "--only", "MG-T2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| MG-T2 |" in out and "holds" in out
    table = json.loads((tmp_path / "THEOREMS.json").read_text())
    assert table["results"][0]["id"] == "MG-T2" and table["results"][0]["violations"] == 0
    assert "MG-T2" in (tmp_path / "THEOREMS.md").read_text()



def test_check_rerun_keeps_a_finished_run_refuses_another_and_overwrites(tmp_path, capsys):
    """A run folder (issue 17): the same command after a finished run reruns nothing and says so (one JSON document
    with --json), another command is refused (64) and leaves the folder as it was, --overwrite runs it again."""
    command = ["check", "--quick", "--only", "MG-T2", "--out", str(tmp_path)]
    assert main(command) == 0
    capsys.readouterr()
    before = (tmp_path / "THEOREMS.json").read_bytes()
    assert main([*command, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["reused"] is True and document["results"][0]["id"] == "MG-T2"
    assert (tmp_path / "THEOREMS.json").read_bytes() == before
    assert main(["check", "--quick", "--only", "MG-C1", "--out", str(tmp_path)]) == EXIT_USAGE
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "THEOREMS.json").read_bytes() == before
    # a usage error is found before the old run is cleared, --overwrite or not
    assert main(["check", "--quick", "--only", "NOPE", "--out", str(tmp_path), "--overwrite"]) == EXIT_USAGE
    assert (tmp_path / "THEOREMS.json").read_bytes() == before
    assert main(["check", "--quick", "--only", "MG-C1", "--out", str(tmp_path), "--overwrite"]) == 0
    assert json.loads((tmp_path / "THEOREMS.json").read_text())["results"][0]["id"] == "MG-C1"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "finished" and "--only=['MG-C1']" in " ".join(manifest["command"])

def test_demo_writes_outputs(tmp_path, monkeypatch, capsys):
    """(What a rerun into a used folder does is certify.runs' contract: tests/test_runs.py.)"""
    import certify.demo as demo

    small = demo.DemoConfig(
        examples=2,
        methods=(("gradient", {}), ("smoothgrad", {"samples": 4})),
        study=demo.StudyConfig(n=2, eps=(0.5,), steps=2, restarts=1),
        inverse=False,  # the inverse-problems and importance steps have their own tests (tests/test_demo.py)
        importance=False,
    )
    monkeypatch.setattr(demo.DemoConfig, "quick", classmethod(lambda cls: small))
    monkeypatch.setattr("proofs_checks.runner.ordered_ids", lambda registry: ["MG-T2"])
    assert main(["demo", "--quick", "--out", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert list(summary["certificates"]) == ["gradient", "smoothgrad"] and summary["theorems"] == {"MG-T2": "holds"}
    assert summary["certificates"]["gradient"] == "2/2 verified"
    html = (tmp_path / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 5  # heatmaps, 2 study plots, 2 panels
    assert "Robustness: certified vs empirical" in html and "The paper&#x27;s claim" in html
    assert main(["report", str(tmp_path)]) == 0  # the report rebuilds from the artefacts


def test_report_rebuilds_from_artefacts_or_refuses(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == EXIT_USAGE
    assert "no summary.json" in capsys.readouterr().err


def test_default_moreaugrad_explain_chooses_rho_and_certifies_solver_error_stability_and_topk(tmp_path, capsys):
    """Issue 13: `certify explain --method moreaugrad` with default settings on the default model picks rho itself
    (never a refused default) and issues certified solver-error, stability and top-k claims."""
    out = tmp_path / "mg.json"
    assert main(["explain", "--model", "digits-softplus-mlp", "--method", "moreaugrad", "--index", "0",
                 "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    claims = {c["id"]: c for c in doc["claims"]}
    for cid in ("solver-error", "stability", "topk"):
        assert claims[cid]["kind"] == "certified", (cid, claims[cid].get("reason"))
    assert claims["topk"]["value"] > 0 and claims["stability"]["value"] < 1.0
    assert doc["provenance"]["explainer"]["params"]["rho"] == "auto"
    assert main(["verify", str(out), "--model", "digits-softplus-mlp"]) == 0


def test_auto_rho_on_a_relu_model_says_no_rho_is_admissible(tmp_path, capsys):
    """The fallback rho of a model without certified curvature is not announced as a minimiser."""
    assert main(["explain", "--model", "digits-relu-mlp", "--method", "moreaugrad", "--index", "0",
                 "--out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "no rho is admissible" in out and "chosen to minimise" not in out


def test_h_shap_explain_writes_a_certificate_that_verifies_and_binds_nothing(tmp_path, capsys):
    """Issue 15: `certify explain --method h-shap` on the composite task; its certificate states nothing about the
    explanation (stability refused), and `certify verify` says the map is not bound; a stability claim added to it
    is refused by the checker."""
    out = tmp_path / "hs.json"
    assert main(["explain", "--model", "composite-relu-cnn", "--method", "h-shap", "--param", "reference=digits-composite",
                 "--param", "min_size=4", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["verify", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] and report["explanation"].startswith("not bound: the h-Shap leaf scores")
    doc = json.loads(out.read_text())
    stability = next(c for c in doc["claims"] if c["id"] == "stability")
    assert stability["kind"] == "refused"
    stability.update(kind="certified", value=1.0, reason=None)
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(doc))
    assert main(["verify", str(forged)]) != 0


def test_evaluate_prints_every_table_and_writes_the_study(tmp_path, capsys):
    """`certify evaluate` with a random-search baseline, the metrics and the sweep: the text tables carry n and
    CIs, Sparsified SmoothGrad's certified top-k sits next to MoreauGrad's, and evaluation.json holds it all."""
    argv = ["evaluate", "--model", "zoo:digits-softplus-mlp", "--n", "2", "--eps", "0.5", "--steps", "2", "--restarts", "1",
            "--search-draws", "1", "--methods", "moreaugrad", "sparsified-smoothgrad", "--metrics", "--sweep", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "n = 2 test inputs" in out and "certified bound on ||da||_2" in out and "deletion AUC" in out
    assert "sparsified-smoothgrad (probabilistic" in out and "rule of thumb" in out and "NOT RUN" in out
    result = json.loads((tmp_path / "evaluation.json").read_text())
    assert set(result["methods"]) == {"moreaugrad", "sparsified-smoothgrad"} and result["sweep"]["n"] == 2
    assert main(["evaluate", "--model", "zoo:digits-softplus-mlp", "--methods", "nope", "--out", str(tmp_path)]) == EXIT_UNSUPPORTED


def _cli(argv, capsys):
    """(exit code, stdout, stderr) of one in-process run; argparse's exits included."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def bad_inputs(tmp_path, monkeypatch):
    """The failing invocations of issue 17, made in tmp_path (the current directory, for module:callable)."""
    import numpy as np
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save({"x": torch.zeros(64)}, tmp_path / "dict.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"not a pickle" * 8)
    (tmp_path / "x.txt").write_text("0.5 " * 64)
    np.save(tmp_path / "two.npy", np.zeros((2, 64), np.float32))
    np.save(tmp_path / "one.npy", np.zeros(64, np.float32))
    (tmp_path / "raising.py").write_text("def net():\n    raise RuntimeError('kaboom')\n")
    (tmp_path / "nested.json").write_text("[" * 10**5 + "]" * 10**5)
    (tmp_path / "folder").mkdir()
    (tmp_path / "exists.json").write_text("{}")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["explain", "--model", "digits-relu-mlp", "--method", "gradient", "--out", "good.json"]) == EXIT_OK
    return tmp_path


EXPLAIN = ["explain", "--model", "digits-relu-mlp", "--method", "gradient", "--out", "cert.json"]


@pytest.mark.parametrize("argv, code, says", [
    (EXPLAIN + ["--input", "dict.pt"], EXIT_INVALID_INPUT, "expected one tensor, got dict"),
    (EXPLAIN + ["--input", "corrupt.pt"], EXIT_INVALID_INPUT, "not a tensor saved by torch.save"),
    (EXPLAIN + ["--input", "x.txt"], EXIT_INVALID_INPUT, "unsupported format '.txt'"),
    (EXPLAIN + ["--input", "two.npy"], EXIT_INVALID_INPUT, "a batch of 2 examples"),
    (EXPLAIN + ["--target", "99999999999999999999"], EXIT_INVALID_INPUT, "out of range for a model with 10 classes"),
    (EXPLAIN + ["--eps", "inf"], EXIT_USAGE, "eps must be a finite number > 0"),
    (EXPLAIN + ["--param", "foo=1"], EXIT_USAGE, "unknown parameters ['foo'] for method 'gradient'; accepted: none"),
    (EXPLAIN + ["--param", "rho=0.3"], EXIT_USAGE, "unknown parameters ['rho']"),
    (EXPLAIN[:-1] + ["cert.json", "--method", "smoothgrad", "--param", "model=1"], EXIT_USAGE, "accepted: sigma"),
    (["explain", "--model", "raising:net", "--method", "gradient", "--out", "c.json", "--input", "one.npy"],
     EXIT_UNSUPPORTED, "raised RuntimeError: kaboom"),
    (["verify", "good.json", "--model", "raising:net"], EXIT_UNUSABLE, "raised RuntimeError: kaboom"),
    (EXPLAIN[:-1] + ["no/such/folder/c.json"], EXIT_USAGE, "does not exist (create it first)"),
    (EXPLAIN[:-1] + ["folder"], EXIT_USAGE, "is a folder; give a file name in it"),
    (["evaluate", "--model", "digits-relu-mlp", "--methods", "gradient", "--out", "exists.json"], EXIT_USAGE,
     "is a file; give a folder"),
    (["verify", "nested.json"], EXIT_UNUSABLE, "nested too deeply"),
    (["verify", "/dev/zero"], EXIT_UNUSABLE, "not a regular file"),
    (["verify", "folder"], EXIT_UNUSABLE, "not a regular file"),
    (EXPLAIN[:4] + ["sparse-moreaugrad", "--out", "c.json"], EXIT_UNSUPPORTED,
     "use --method moreaugrad --param rho=0.3 --param sparsity=0.25"),
    (["evaluate", "--model", "digits-relu-mlp", "--methods", "h-shap", "--out", "ev"], EXIT_UNSUPPORTED,
     "no preset in the robustness study"),
])
def test_issue_17_failures_exit_with_their_code_and_one_line(bad_inputs, capsys, argv, code, says):
    """Each failure of issue 17 exits with its documented code and ends with one line naming the problem; no
    traceback, no certificate and no stray temporary file."""
    got, _, err = _cli(argv, capsys)
    assert got == code, err
    assert "Traceback" not in err and says in err.strip().splitlines()[-1]
    assert not (bad_inputs / "cert.json").exists() and not list(bad_inputs.rglob("*.partial"))
    assert not (bad_inputs / "folder" / "c.json").exists() and list((bad_inputs / "folder").iterdir()) == []


def test_a_model_whose_forward_raises_is_invalid_input_not_a_bug(tmp_path, capsys, monkeypatch):
    import numpy as np

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "broken.py").write_text("import torch\nclass Net(torch.nn.Module):\n    def forward(self, x):\n"
                                        "        raise ValueError('forward broke')\n\ndef net():\n    return Net().eval()\n")
    np.save(tmp_path / "x.npy", np.zeros(4, np.float32))
    code, _, err = _cli(["explain", "--model", "broken:net", "--method", "gradient", "--input", "x.npy", "--out", "c.json"], capsys)
    assert code == EXIT_INVALID_INPUT and "ValueError: forward broke" in err and "bug" not in err


@pytest.mark.parametrize("shape", [(64,), (1, 64), (8, 8), (1, 8, 8), (1, 1, 8, 8)])
@pytest.mark.parametrize("saved_as", [".npy", ".pt"])
def test_input_with_or_without_the_batch_dimension_for_a_model_given_its_shape(tmp_path, capsys, monkeypatch, shape, saved_as):
    """A module:callable model records no input shape: with --input-shape 1,8,8 an input file of one example in any
    shape of its 64 values (batch dimension or not) is explained at the same point as the zoo digits image."""
    import numpy as np
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "convnet.py").write_text(
        "import torch\ndef net():\n    torch.manual_seed(0)\n    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), "
        "torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(72, 10)).eval()\n")
    x = np.linspace(0, 1, 64, dtype=np.float32).reshape(shape)
    path = tmp_path / f"x{saved_as}"
    np.save(path, x) if saved_as == ".npy" else torch.save(torch.from_numpy(x), path)
    argv = ["explain", "--model", "convnet:net", "--method", "gradient", "--input", str(path), "--out", "c.json", "--json"]
    code, out, err = _cli(argv + ["--input-shape", "1,8,8"], capsys)
    assert code == EXIT_OK, err
    assert json.loads(out)["target"] in range(10) and (tmp_path / "c.json").exists()
    np.save(tmp_path / "two.npy", np.zeros((2, 1, 8, 8), np.float32))
    argv[argv.index(str(path))] = "two.npy"
    code, _, err = _cli(argv + ["--input-shape", "1,8,8"], capsys)
    assert code == EXIT_INVALID_INPUT and "a batch of 2 examples" in err


def test_onnx_input_with_or_without_the_batch_dimension(tmp_path, capsys):
    """An ONNX model records its input shape: a flat .npy of its 784 values, with or without the batch dimension,
    is explained; 783 values are refused naming the shape."""
    import sys

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import mnistfc_data as M

    net = str(M.data_dir() / "mnist-net_256x2.onnx")
    for shape in ((784,), (1, 784), (28, 28)):
        np.save(tmp_path / "x.npy", np.full(shape, 0.5, np.float32))
        code, _, err = _cli(["explain", "--model", net, "--method", "gradient", "--input", str(tmp_path / "x.npy"),
                             "--out", str(tmp_path / "c.json")], capsys)
        assert code == EXIT_OK, (shape, err)
    np.save(tmp_path / "x.npy", np.zeros(783, np.float32))
    code, _, err = _cli(["explain", "--model", net, "--method", "gradient", "--input", str(tmp_path / "x.npy"),
                         "--out", str(tmp_path / "c.json")], capsys)
    assert code == EXIT_INVALID_INPUT and "783 values" in err


@pytest.mark.parametrize("command", ["check", "evaluate", "demo", "explain"])
def test_ctrl_c_exits_130_with_one_line(monkeypatch, tmp_path, capsys, command):
    """Ctrl-C anywhere in a command's work: exit 130, one line on stderr, nothing on stdout."""
    import certify.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, f"_cmd_{command}", interrupted)
    argv = {"check": ["check", "--quick"], "evaluate": ["evaluate", "--model", "digits-relu-mlp"],
            "demo": ["demo", "--quick"], "explain": EXPLAIN}[command]
    code, out, err = _cli(argv + ["--out", str(tmp_path / "out")], capsys)
    assert code == 130 and out == "" and err.strip() == f"certify {command}: interrupted"


def test_json_output_is_one_document_with_solver_output_captured(tmp_path, capfd):
    """--json prints exactly one JSON document on fd 1, also when HiGHS solves LPs (the Lagrange-dual method's
    radius claims) and when the certificate is verified."""
    cert = tmp_path / "lg.json"
    argv = ["explain", "--model", "digits-relu-mlp", "--method", "lagrange-dual", "--out", str(cert), "--json"]
    assert main(argv) == EXIT_OK
    assert json.loads(capfd.readouterr().out)["claims"]
    assert main(["verify", str(cert), "--json"]) == EXIT_OK
    assert json.loads(capfd.readouterr().out)["valid"] is True


@pytest.mark.parametrize("argv", [
    ["check", "--quick", "--only", "MG-T2", "--out", "{tmp}"],
    ["evaluate", "--model", "digits-relu-mlp", "--n", "2", "--eps", "0.5", "--steps", "1", "--restarts", "1",
     "--methods", "gradient", "--out", "{tmp}"],
    ["test-importance", "--model", "digits-relu-mlp", "--regions", "features", "--k", "4", "--m", "1", "--out",
     "{tmp}/t.json"],
])
def test_json_output_of_the_other_commands_is_one_document(tmp_path, capfd, argv):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--json"]) in (0, 1)
    assert isinstance(json.loads(capfd.readouterr().out), dict)


def test_ctrl_c_of_a_real_check_run_exits_130_with_one_line(tmp_path):
    """SIGINT to a running `certify check` (a separate process, as a user's Ctrl-C): one line, exit 130."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen([sys.executable, "-m", "certify.cli", "check", "--quick", "--out", str(tmp_path)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120  # the run folder's manifest appears once the command runs (imports done)
    while not (tmp_path / "manifest.json").exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130 and "Traceback" not in err
    assert err.replace("\r", "\n").strip().splitlines()[-1] == "certify check: interrupted"


def test_failures_with_json_print_one_json_document(tmp_path, capsys):
    """--json promises one JSON document on stdout: a failure prints {"error", "exit_code"} there too (the one line
    on stderr stays)."""
    assert main(["verify", str(tmp_path / "missing.json"), "--json"]) == 2
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["exit_code"] == 2 and "missing.json" in document["error"]
    assert captured.err.strip().splitlines()[-1].startswith("certify verify: error:")
    assert main(["explain", "--model", "digits-softplus-mlp", "--method", "smoothgrad", "--index", "0",
                 "--param", "seed=99999999999999999999999", "--out", str(tmp_path / "c.json"), "--json"]) == EXIT_USAGE
    assert "seed must be an integer in [0, 2^63)" in json.loads(capsys.readouterr().out)["error"]


def test_out_of_memory_is_a_usage_error_naming_the_fix(tmp_path, capsys, monkeypatch):
    """A parameter asking for more memory than there is (here the allocation fails at once) exits 64, not 70."""
    import certify.explain.integrated_gradients as ig

    def huge(*_args, **_kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried "
                           "to allocate 256000000000 bytes")

    monkeypatch.setattr(ig.IntegratedGradients, "_explain", huge)
    assert main(["explain", "--model", "digits-softplus-mlp", "--method", "integrated-gradients", "--index", "0",
                 "--out", str(tmp_path / "c.json")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "out of memory" in err and "n_steps" in err and "Traceback" not in err
    assert not (tmp_path / "c.json").exists()
