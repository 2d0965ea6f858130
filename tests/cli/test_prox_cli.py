"""`certify prox` (issue 14): exit 0 for a certified prox, 1 for a certified violation, 75 when undecided; the
certificate it writes re-checks with `certify verify`; bad input exits with the documented codes, no traceback."""
import json

import numpy as np
import pytest
import torch

from certify.cli import main
from certify.errors import EXIT_FAILED, EXIT_OK, EXIT_UNKNOWN, EXIT_UNSUPPORTED, EXIT_USAGE


def test_an_lpn_is_a_prox_and_its_certificate_verifies(tmp_path, capsys):
    out = tmp_path / "lpn.json"
    assert main(["prox", "--model", "lpn-digits-0.1", "--points", "6", "--out", str(out)]) == EXIT_OK
    text = capsys.readouterr().out
    assert "a proximal operator (certified: structure)" in text and "prox-structure" in text
    assert main(["verify", str(out)]) == EXIT_OK
    assert "answer: prox (certificate valid)" in capsys.readouterr().out


def test_a_plain_mlp_denoiser_is_certified_not_a_prox(tmp_path, capsys):
    out = tmp_path / "mlp.json"
    assert main(["prox", "--model", "mlp-digits-0.1", "--points", "6", "--json", "--out", str(out)]) == EXIT_FAILED
    doc = json.loads(capsys.readouterr().out)
    assert doc["answer"] == "not-a-prox"
    violation = next(c for c in doc["claims"] if c["type"] == "prox-violation-cycle")
    assert violation["kind"] == "certified" and violation["value"] > 0
    assert main(["verify", str(out), "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] and report["answer"] == "not-a-prox"


def test_an_untrained_linear_symmetric_denoiser_is_undecided(tmp_path, capsys, monkeypatch):
    """A symmetric positive definite linear map is a prox, but not an LPN: no structural proof, no violation."""
    module = tmp_path / "linear_denoiser.py"
    module.write_text(
        "import torch\n"
        "def make():\n"
        "    m = torch.nn.Linear(64, 64, bias=False)\n"
        "    a = torch.randn(64, 64, generator=torch.Generator().manual_seed(0)) / 16\n"
        "    with torch.no_grad():\n"
        "        m.weight.copy_(a @ a.T + 0.1 * torch.eye(64))\n"
        "    return m\n")
    monkeypatch.chdir(tmp_path)
    assert main(["prox", "--model", "linear_denoiser:make", "--data", "digits", "--points", "4"]) == EXIT_UNKNOWN
    assert "undecided" in capsys.readouterr().out


@pytest.mark.parametrize("argv, code, message", [
    (["prox", "--model", "lpn-digits-0.1", "--points", "1"], EXIT_USAGE, "--points must be in [2, 4096]"),
    (["prox", "--model", "lpn-digits-0.1", "--points", "100000000"], EXIT_USAGE, "--points must be in [2, 4096]"),
    (["prox", "--model", "no-such-denoiser"], EXIT_UNSUPPORTED, "no-such-denoiser"),
    (["prox", "--model", "lpn-digits-0.1", "--data", "missing.npy"], EXIT_USAGE, "neither digits, mnist nor a file"),
    (["prox", "--model", "lpn-digits-0.1", "--sigma", "-1"], EXIT_USAGE, ""),
])
def test_bad_input_exits_with_its_code(argv, code, message, capsys):
    if code == EXIT_USAGE and "--sigma" in argv:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == EXIT_USAGE
        return
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_data_of_the_wrong_size_is_refused_without_a_traceback(tmp_path, capsys):
    data = tmp_path / "clean.npy"
    np.save(data, np.zeros((5, 10)))
    code = main(["prox", "--model", "lpn-digits-0.1", "--data", str(data), "--points", "3"])
    err = capsys.readouterr().err
    assert code in (65, EXIT_UNSUPPORTED) and "Traceback" not in err and err.strip()


@pytest.mark.parametrize("name, make, message", [
    ("strings.npy", lambda p: np.save(p, np.array(["a", "b"])), "expected an array of real numbers"),
    ("complex.npy", lambda p: np.save(p, np.ones((4, 64)) * (1 + 1j)), "complex"),
    ("dict.pt", lambda p: torch.save({"x": torch.zeros(4, 64)}, p), "got dict"),
])
def test_data_files_of_the_wrong_kind_exit_65(tmp_path, capsys, name, make, message):
    """Found by the issue-14 attacker: strings, complex numbers and dicts were exit 70 or silently truncated."""
    path = tmp_path / name
    make(path)
    assert main(["prox", "--model", "lpn-digits-0.1", "--data", str(path), "--points", "3"]) == 65
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_huge_seed_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        main(["prox", "--model", "lpn-digits-0.1", "--seed", "99999999999999999999"])
    assert exc.value.code == EXIT_USAGE


def test_a_denoiser_that_raises_or_returns_nan_is_refused_cleanly(tmp_path, capsys, monkeypatch):
    (tmp_path / "odd_denoisers.py").write_text(
        "import torch\n"
        "class Raises(torch.nn.Module):\n"
        "    def forward(self, y):\n"
        "        raise ValueError('boom')\n"
        "class Nans(torch.nn.Module):\n"
        "    def forward(self, y):\n"
        "        return y * float('nan')\n")
    monkeypatch.chdir(tmp_path)
    assert main(["prox", "--model", "odd_denoisers:Raises", "--data", "digits", "--points", "3"]) == EXIT_UNSUPPORTED
    assert "ValueError: boom" in capsys.readouterr().err
    assert main(["prox", "--model", "odd_denoisers:Nans", "--data", "digits", "--points", "3"]) == 65
    assert "not finite" in capsys.readouterr().err


def test_data_of_another_size_than_the_lpn_is_invalid_input(capsys):
    assert main(["prox", "--model", "lpn-digits-0.1", "--data", "mnist", "--points", "3"]) == 65
    assert "784 features; the denoiser takes 64" in capsys.readouterr().err


def test_a_closed_pipe_is_not_a_failure(tmp_path):
    """`certify ... | head` must not report an internal error (70) nor the answer code 1."""
    import subprocess
    import sys

    script = f"import sys; from certify.cli import main; sys.exit(main(['prox', '--model', 'lpn-digits-0.1', '--points', '3']))"
    proc = subprocess.run(f"{sys.executable} -c \"{script}\" | head -c 10", shell=True, capture_output=True, text=True,
                          env={**__import__('os').environ, "OMP_NUM_THREADS": "1"})
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
