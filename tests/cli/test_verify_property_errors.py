"""`certify verify-property` / `explain --input PROP.vnnlib` on small hand-made models: unexpected exceptions
exit 70 (never 1, which means "violated") and Ctrl-C 130; a property that does not fit the model is a usage
or input error naming both sizes, found before any bound runs; --input-shape for models that record no input
shape; and the answer is the certificate's, with or without --out."""
import json
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import certify.attacks.property as attacks_property
import certify.cli as cli
from certify.cli import main
from certify.errors import (EXIT_FAILED, EXIT_INTERNAL, EXIT_INVALID_INPUT, EXIT_OK, EXIT_UNKNOWN, EXIT_UNUSABLE,
                           EXIT_USAGE)

NETS = textwrap.dedent('''
    import torch
    from torch import nn

    def _net(act):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 16), act, nn.Linear(16, 3)).eval()

    def sigmoid4():
        return _net(nn.Sigmoid())

    def relu4():
        return _net(nn.ReLU())

    def conv():  # [1, 4, 4] -> 3
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3)).eval()
''')


def _vnnlib(path, lower, upper, label=None, outputs=3, text_bounds=None):
    """A classification property (counterexample: some Y_j >= Y_label) on the box [lower, upper]; text_bounds
    replaces the bound lines verbatim."""
    n = len(lower)
    lines = [f"(declare-const X_{i} Real)" for i in range(n)] + [f"(declare-const Y_{j} Real)" for j in range(outputs)]
    lines += text_bounds or [f"(assert (>= X_{i} {float(lower[i])!r}))\n(assert (<= X_{i} {float(upper[i])!r}))" for i in range(n)]
    label = 0 if label is None else label
    lines.append("(assert (or " + " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(outputs) if j != label) + "))")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def nets(tmp_path):
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    return lambda name: f"{path}:{name}"


def _load(spec):
    from certify.models.spec import load_model

    return load_model(spec)[0]


def _label(model, centre, shape):
    with torch.no_grad():
        return int(model(torch.tensor(centre, dtype=torch.float32).reshape(1, *shape)).argmax())


# 1. internal errors and interrupts ------------------------------------------------------------------------

def _raise(exc):
    def command(args):
        raise exc
    return command


def test_an_unexpected_exception_exits_70_with_one_line_naming_it(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    monkeypatch.setattr(cli, "_cmd_report", _raise(RuntimeError("boom\nsecond line")))
    assert main(["report", str(tmp_path)]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "internal error: RuntimeError: boom" in err and "bug" in err and "report it" in err and "--debug" in err


@pytest.mark.parametrize("how", ["option before", "option after", "environment"])
def test_the_traceback_is_printed_only_on_request(monkeypatch, tmp_path, capsys, how):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    monkeypatch.setattr(cli, "_cmd_report", _raise(ValueError("bad")))
    argv = ["report", str(tmp_path)]
    if how == "option before":
        argv = ["--debug"] + argv
    elif how == "option after":
        argv = argv + ["--debug"]
    else:
        monkeypatch.setenv(cli.DEBUG_ENV, "1")
    assert main(argv) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error: ValueError: bad" in err


def test_an_unexpected_exception_in_verify_property_is_not_violated(monkeypatch, nets, tmp_path, capsys):
    """Exit 1 means "violated": a bug in the bound code must not say so."""
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)

    def broken(*args, **kwargs):
        raise IndexError("index 3 is out of bounds")

    monkeypatch.setattr(attacks_property, "verify_property", broken)
    prop = _vnnlib(tmp_path / "p.vnnlib", [0.0] * 4, [0.1] * 4)
    assert main(["verify-property", nets("relu4"), prop, "--timeout", "2"]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "IndexError" in err and "Traceback" not in err


def test_ctrl_c_exits_130_with_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "_cmd_report", _raise(KeyboardInterrupt()))
    assert main(["report", str(tmp_path)]) == cli.EXIT_INTERRUPTED == 130
    err = capsys.readouterr().err
    assert err.strip() == "certify report: interrupted"


def test_a_package_error_keeps_its_own_code(tmp_path, capsys):
    assert main(["verify-property", "no_such_module_xyz:f", _vnnlib(tmp_path / "p.vnnlib", [0.0], [1.0])]) == 66
    assert "Traceback" not in capsys.readouterr().err


# 2. a property that does not fit the model ----------------------------------------------------------------

@pytest.fixture
def no_bounds(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("verify_property ran on a property that does not fit the model")

    monkeypatch.setattr(attacks_property, "verify_property", never)


def test_a_property_with_more_inputs_than_the_model_names_both_sizes(nets, tmp_path, capsys, no_bounds):
    prop = _vnnlib(tmp_path / "p5.vnnlib", [0.0] * 5, [0.1] * 5)
    assert main(["verify-property", nets("sigmoid4"), prop, "--timeout", "2"]) == EXIT_INVALID_INPUT
    err = capsys.readouterr().err
    assert "5 inputs" in err and "takes 4" in err and "Traceback" not in err


def test_a_property_over_fewer_outputs_than_the_model_names_both_sizes(nets, tmp_path, capsys, no_bounds):
    prop = _vnnlib(tmp_path / "p2.vnnlib", [0.0] * 4, [0.1] * 4, outputs=2)
    assert main(["verify-property", nets("sigmoid4"), prop, "--timeout", "2"]) == EXIT_INVALID_INPUT
    err = capsys.readouterr().err
    assert "2 outputs" in err and "has 3 outputs" in err


def test_an_onnx_model_s_recorded_shape_is_checked_against_the_property(tmp_path, capsys, no_bounds):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import mnistfc_data as M

    net = str(M.data_dir() / "mnist-net_256x2.onnx")
    prop = _vnnlib(tmp_path / "p5.vnnlib", [0.0] * 5, [0.1] * 5, outputs=10)
    assert main(["verify-property", net, prop, "--timeout", "2"]) == EXIT_INVALID_INPUT
    err = capsys.readouterr().err
    assert "5 inputs" in err and "takes 784" in err
    prop = _vnnlib(tmp_path / "p784.vnnlib", [0.0] * 784, [0.1] * 784, outputs=10)
    assert main(["verify-property", net, prop, "--input-shape", "28,28"]) == EXIT_USAGE
    assert "differs from the input shape" in capsys.readouterr().err


# 3. bounds the parser cannot represent (reach the CLI as input errors) -----------------------------------

@pytest.mark.parametrize("bound, words", [("1e400", "1.000e+400"), ("nan", "'nan'"), ("-inf", "'-inf'")])
def test_a_non_finite_bound_is_an_input_error_naming_the_variable_and_line(nets, tmp_path, capsys, bound, words):
    bounds = ["(assert (>= X_0 0.0))", f"(assert (<= X_0 {bound}))"]
    bounds += [f"(assert (>= X_{i} 0.0))\n(assert (<= X_{i} 0.1))" for i in range(1, 4)]
    prop = _vnnlib(tmp_path / "p.vnnlib", [0.0] * 4, [0.1] * 4, text_bounds=bounds)
    assert main(["verify-property", nets("relu4"), prop]) == EXIT_INVALID_INPUT
    err = capsys.readouterr().err
    assert "line 9" in err and "X_0" in err and words in err and "Traceback" not in err


# 4. --input-shape ------------------------------------------------------------------------------------------

@pytest.fixture
def conv_script(nets, tmp_path):
    model = _load(nets("conv"))
    path = tmp_path / "conv.pt"
    torch.jit.trace(model, torch.zeros(1, 1, 4, 4)).save(str(path))
    centre = np.linspace(0.2, 0.8, 16)
    label = _label(model, centre, (1, 4, 4))
    prop = _vnnlib(tmp_path / "p16.vnnlib", list(centre - 1e-3), list(centre + 1e-3), label=label)
    return str(path), prop, label


def test_a_torchscript_conv_model_needs_input_shape_and_says_so(conv_script, capsys, no_bounds):
    model, prop, _ = conv_script
    assert main(["verify-property", model, prop, "--timeout", "2"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--input-shape" in err and "Conv2d" in err and "16" in err
    assert main(["verify-property", model, prop, "--input-shape", "1,4,5"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--input-shape 1,4,5 holds 20 values" in err and "16 inputs" in err


def test_a_torchscript_conv_model_with_input_shape_is_decided_and_certified(conv_script, tmp_path, capsys):
    model, prop, label = conv_script
    out = tmp_path / "cert.json"
    code = main(["verify-property", model, prop, "--timeout", "10", "--method", "crown", "--input-shape", "1,4,4",
                 "--out", str(out), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK and result["status"] == "holds"
    doc = json.loads(out.read_text())
    assert doc["answer"] == "holds" and doc["property"]["input_shape"] == [1, 4, 4]
    assert main(["verify", str(out)]) == EXIT_OK


def test_explain_takes_input_shape_for_a_vnnlib_input(conv_script, tmp_path, capsys):
    model, prop, label = conv_script
    out = tmp_path / "e.json"
    argv = ["explain", "--model", model, "--method", "gradient", "--input", prop, "--out", str(out)]
    assert main(argv) == EXIT_USAGE and "--input-shape" in capsys.readouterr().err
    assert main(argv + ["--input-shape", "1,4,4"]) == EXIT_OK
    doc = json.loads(out.read_text())
    assert doc["target"] == label


def test_explain_reshapes_a_flat_npy_input_with_input_shape(conv_script, tmp_path, capsys):
    model, _, _ = conv_script
    x = tmp_path / "x.npy"
    np.save(x, np.linspace(0, 1, 16, dtype=np.float32))
    out = tmp_path / "e.json"
    argv = ["explain", "--model", model, "--method", "gradient", "--input", str(x), "--out", str(out)]
    assert main(argv + ["--input-shape", "1,4,4"]) == EXIT_OK
    assert main(argv + ["--input-shape", "1,3,3"]) == EXIT_USAGE


# 5. the answer is the certificate's, with or without --out --------------------------------------------------

@pytest.mark.parametrize("name, expected", [("relu4", "holds"), ("sigmoid4", "unknown")])
def test_the_answer_is_the_same_with_and_without_out(nets, tmp_path, capsys, name, expected):
    """A tiny box around a point, its own class: CROWN proves it on both nets; only the ReLU net's proof has a
    witness the independent checker re-derives, so the sigmoid net's answer is unknown, on both paths."""
    model = _load(nets(name))
    centre = np.array([0.3, -0.2, 0.1, 0.4])
    prop = _vnnlib(tmp_path / "p.vnnlib", list(centre - 1e-3), list(centre + 1e-3), label=_label(model, centre, (4,)))
    base = ["verify-property", nets(name), prop, "--timeout", "2", "--method", "crown", "--json"]
    answers = []
    for extra in ([], ["--out", str(tmp_path / "c.json")]):
        code = main(base + extra)
        result = json.loads(capsys.readouterr().out)
        assert result["found"] == "holds"  # what the bound code said
        answers.append((code, result["status"]))
    assert answers[0] == answers[1] == ({"holds": EXIT_OK, "unknown": EXIT_UNKNOWN}[expected], expected)
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["answer"] == expected
    # the certificate names its model by Python code: refused (exit 2) until the user says to run it
    assert main(["verify", str(tmp_path / "c.json")]) == EXIT_UNUSABLE
    assert "--run-model-code" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "c.json"), "--run-model-code"]) == {"holds": EXIT_OK, "unknown": EXIT_UNKNOWN}[expected]
    capsys.readouterr()
    code = main(base[:-1])  # the text answer names the certificate's verdict
    text = capsys.readouterr().out
    assert text.startswith(expected)
    if expected == "unknown":
        assert "holds by crown, but the certificate answers 'unknown'" in text


def test_a_violated_answer_is_the_same_with_and_without_out(nets, tmp_path, capsys):
    model = _load(nets("relu4"))
    centre = np.array([0.3, -0.2, 0.1, 0.4])
    wrong = (_label(model, centre, (4,)) + 1) % 3
    prop = _vnnlib(tmp_path / "p.vnnlib", list(centre - 0.5), list(centre + 0.5), label=wrong)
    base = ["verify-property", nets("relu4"), prop, "--timeout", "2", "--json"]
    for extra in ([], ["--out", str(tmp_path / "c.json")]):
        assert main(base + extra) == EXIT_FAILED
        assert json.loads(capsys.readouterr().out)["status"] == "violated"


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf"])
def test_a_timeout_that_is_not_a_finite_positive_number_is_a_usage_error(nets, tmp_path, capsys, timeout, no_bounds):
    prop = _vnnlib(tmp_path / "p.vnnlib", [0.0] * 4, [0.1] * 4)
    assert main(["verify-property", nets("relu4"), prop, "--timeout", timeout]) == EXIT_USAGE
    assert "--timeout must be a finite number" in capsys.readouterr().err
