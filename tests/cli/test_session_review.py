"""A fresh user's and attacker's review of issue 18's changes, from the command line: hand-edited certificates
never verify as valid (the float64 radius-lower re-check included) and bad files give the documented exit codes;
finite inputs whose float32 sum overflows are accepted, NaN / Inf ones refused (exit 65); a one-ulp change of a
float64 model's weights fails the model hash; and four bugs the review found, fixed since: a certificate at an
input near float32's range that the checker refused, a module cycle that crashed (exit 70), two quick Ctrl-C
that hung the process, and a radius-lower label that still named exact rational arithmetic."""
import copy
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from certify.certificates.document import encode_array
from certify.cli import main
from certify.errors import EXIT_FAILED, EXIT_INVALID_INPUT, EXIT_OK, EXIT_UNSUPPORTED, EXIT_UNUSABLE, EXIT_USAGE

MLP = "zoo:digits-relu-mlp"

MODELS = '''
import torch
from torch import nn


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def f64():
    return _mlp().double().eval()


def f64_nudged():  # one weight moved by one ulp
    model = _mlp().double().eval()
    with torch.no_grad():
        model[0].weight[0, 0] = torch.nextafter(model[0].weight[0, 0], torch.tensor(1.0, dtype=torch.float64))
    return model


class _Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = _mlp()

    def forward(self, x):
        return self.body(x)


def cycle():  # a module cycle outside the forward path: holder.back is the model itself
    model = _Holder().eval()
    model.add_module("holder", nn.Module())
    model.holder.add_module("back", model)
    model.holder.training = False
    return model
'''


@pytest.fixture
def models(tmp_path):
    path = tmp_path / "review_models.py"
    path.write_text(MODELS)
    return path


def _explain(tmp_path, capsys, *argv):
    out = tmp_path / "cert.json"
    assert main(["explain", *argv, "--out", str(out)]) == EXIT_OK
    capsys.readouterr()
    return out


def _verify(path, capsys, *extra):
    code = main(["verify", str(path), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _claim(document, claim_id):
    return next(c for c in document["claims"] if c["id"] == claim_id)


def test_hand_edited_lagrange_dual_certificates_never_verify(tmp_path, capsys):
    cert = _explain(tmp_path, capsys, "--model", MLP, "--method", "lagrange-dual", "--index", "3")
    code, out, _ = _verify(cert, capsys)
    assert code == EXIT_OK and "radius-relaxation        valid" in out
    base = json.loads(cert.read_text())
    relaxation = _claim(base, "radius-relaxation")
    assert relaxation["type"] == "radius-lower" and relaxation["kind"] == "certified"

    def rewrite(edit):
        document = copy.deepcopy(base)
        edit(document)
        path = tmp_path / "edited.json"
        path.write_text(json.dumps(document))
        return _verify(path, capsys)

    def raise_radius(d):  # a larger radius-lower than the relaxation proves
        _claim(d, "radius-relaxation")["value"] *= 1.01
        _claim(d, "radius-relaxation")["witness"]["radius"] *= 1.01

    code, out, _ = rewrite(raise_radius)
    assert code == EXIT_FAILED and "radius-relaxation: margin" in out and "is not proven > 0" in out

    for alpha in (1.5, -0.5, 1.0 + 1e-12):  # an out-of-range slope, with its hash recomputed
        def bad_alpha(d, alpha=alpha):
            record = _claim(d, "radius-relaxation")["witness"]["alphas"][0]
            values = np.array(record["values"])
            values[0, 1] = alpha
            record.clear()
            record.update(encode_array(values))

        code, out, _ = rewrite(bad_alpha)
        assert code == EXIT_FAILED and "alphas must lie in [0, 1]" in out

    def nan_alpha(d):  # NaN is not JSON: an unusable file, one line
        _claim(d, "radius-relaxation")["witness"]["alphas"][0]["values"][0][1] = float("nan")

    code, _, err = rewrite(nan_alpha)
    assert code == EXIT_UNUSABLE and "NaN is not a JSON number" in err and len(err.strip().splitlines()) == 1

    def other_target(d):
        d["target"] = (d["target"] + 1) % 10

    code, out, _ = rewrite(other_target)
    assert code == EXIT_FAILED and "certificate INVALID" in out


def test_nan_and_inf_inputs_exit_65_and_overflowing_sums_are_accepted(tmp_path, capsys):
    for bad in (np.nan, np.inf, -np.inf):
        x = np.zeros(64, np.float32)
        x[3] = bad
        np.save(tmp_path / "bad.npy", x)
        code = main(["explain", "--model", MLP, "--method", "gradient", "--input", str(tmp_path / "bad.npy"),
                     "--out", str(tmp_path / "bad.json")])
        err = capsys.readouterr().err
        assert code == EXIT_INVALID_INPUT and "inputs contain NaN or Inf (examples [0])" in err
        assert "Traceback" not in err and not (tmp_path / "bad.json").exists()
    huge = np.full(64, 1e37, np.float32)  # finite entries; their float32 sum is inf
    with np.errstate(over="ignore"):
        assert np.isinf(huge.sum(dtype=np.float32))
    np.save(tmp_path / "huge.npy", huge)
    _explain(tmp_path, capsys, "--model", MLP, "--method", "gradient", "--input", str(tmp_path / "huge.npy"))
    alternating = np.where(np.arange(64) % 2 == 0, 3e38, -3e38).astype(np.float32)  # logits overflow
    np.save(tmp_path / "alternating.npy", alternating)
    code = main(["explain", "--model", MLP, "--method", "gradient", "--input", str(tmp_path / "alternating.npy"),
                 "--out", str(tmp_path / "alternating.json")])
    err = capsys.readouterr().err
    assert code == EXIT_INVALID_INPUT and "the model returned NaN or Inf logits" in err


def test_a_one_ulp_weight_change_of_a_float64_model_fails_the_model_hash(tmp_path, capsys, models):
    x = np.full(64, 0.5)
    np.save(tmp_path / "x.npy", x)
    cert = _explain(tmp_path, capsys, "--model", f"{models}:f64", "--method", "lagrange-dual",
                    "--input", str(tmp_path / "x.npy"))
    assert _verify(cert, capsys, "--run-model-code")[0] == EXIT_OK
    code, out, _ = _verify(cert, capsys, "--model", f"{models}:f64_nudged")
    assert code == EXIT_FAILED and "model hash" in out and "differs from the certificate's" in out


def test_a_certificate_at_an_input_near_the_float32_range_verifies(tmp_path, capsys):
    """`certify explain` writes this certificate (its own conformance check passes, 25 far points excused as
    float32 overflow), and `certify verify` must agree: the 1000x far points of 1e36 entries round to inf in
    float32 and N's float64 values there are NaN, which the checker now counts as an overflow upstream (it had
    answered INVALID, "N differs from the model by inf > tolerance 0", as NaN >= max/16 is False)."""
    np.save(tmp_path / "x.npy", np.full(64, 1e36, np.float32))
    cert = _explain(tmp_path, capsys, "--model", MLP, "--method", "gradient", "--input", str(tmp_path / "x.npy"))
    code, out, _ = _verify(cert, capsys)
    assert code == EXIT_OK, out


def test_a_module_cycle_is_refused_as_unsupported(tmp_path, capsys, models):
    """`certify explain --model file.py:cycle` (a module reachable from itself; torch's eval()/repr()/state_dict()
    recurse forever on it) exits 66 with one line naming the cycle (it was exit 70, "internal error:
    RecursionError")."""
    np.save(tmp_path / "x.npy", np.full(64, 0.5, np.float32))
    code = main(["explain", "--model", f"{models}:cycle", "--method", "gradient", "--input", str(tmp_path / "x.npy"),
                 "--out", str(tmp_path / "c.json")])
    err = capsys.readouterr().err
    assert code == EXIT_UNSUPPORTED and "cycle" in err and len(err.strip().splitlines()) == 1


def test_a_second_ctrl_c_at_once_neither_hangs_nor_breaks_the_shutdown():
    """Two quick Ctrl-C during `certify demo --quick` hung the process for good: the first handler's
    threading.Event.set held a lock the second handler waited on. The handler now sets a plain flag. Two SIGINTs
    back to back inside `interruptible` give one KeyboardInterrupt and no hang; with final=True (the command
    line) SIGINT stays ignored after the interrupt, so a later Ctrl-C cannot break the shutdown."""
    code = textwrap.dedent("""
        import os, signal
        from certify import progress
        try:
            with progress.interruptible(final=True):
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(100000):
                    pass
        except KeyboardInterrupt:
            print("interrupted", signal.getsignal(signal.SIGINT) is signal.SIG_IGN)
            os.kill(os.getpid(), signal.SIGINT)  # ignored now
            print("still running")
    """)
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("two SIGINTs deadlocked the signal handler")
    assert done.stdout.split() == ["interrupted", "True", "still", "running"], done.stderr


def test_the_radius_lower_method_label_names_the_float64_recheck(tmp_path, capsys):
    """The label matches README ("re-checked in float64 with rigorous outward rounding"), not the exact rational
    arithmetic the re-check used before this session."""
    cert = _explain(tmp_path, capsys, "--model", MLP, "--method", "lagrange-dual", "--index", "3")
    method = _claim(json.loads(cert.read_text()), "radius-relaxation")["method"]
    assert "dyadic" not in method and "float64" in method, method


def test_a_float64_input_file_is_explained_in_the_model_dtype_and_verifies(tmp_path, capsys):
    """A float64 .npy (NumPy's default) for a float32 model was exit 65 "mat1 and mat2 must have the same dtype":
    the input is now cast to the model's dtype (the input it computes on), and the certificate verifies."""
    np.save(tmp_path / "x.npy", np.full(64, 0.1))  # float64; 0.1 is not a float32 value
    cert = _explain(tmp_path, capsys, "--model", MLP, "--method", "gradient", "--input", str(tmp_path / "x.npy"))
    stored = json.loads(cert.read_text())
    assert _verify(cert, capsys)[0] == EXIT_OK
    assert stored["provenance"]["model"]["dtype"] == "float32"
    assert stored["input"]["values"][0][0] == float(np.float32(0.1)) != 0.1  # the float32 value it computed on


def test_a_dataset_of_the_wrong_shape_names_both_shapes_and_the_model_s_data_set(tmp_path, capsys):
    """--dataset digits (8x8 images) for digits-relu-mlp (64 flat features) was exit 65 with a matmul error."""
    code = main(["explain", "--model", MLP, "--method", "gradient", "--dataset", "digits", "--out", str(tmp_path / "c.json")])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "(1, 8, 8)" in err and "(64,)" in err and "digits-flat" in err
    assert not (tmp_path / "c.json").exists()
