"""Fuzz test of the CLI contract (issue 17): generated bad invocations of `certify.cli.main`, run in process.

A seeded generator draws >= 500 invocations from categories of bad input (unknown commands and options, bad
numbers, bad files, bad method parameters, bad model specs, bad output paths); each category has its documented
exit code (certify.errors). Every invocation must exit with its category's code (never 0, never 70), print no
traceback, and end its stderr with one line naming the problem. Only cheap paths are driven: the cached zoo model
digits-relu-mlp, and failures found before any explanation is computed.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import json
import os
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from certify.cli import main
from certify.errors import EXIT_INVALID_INPUT, EXIT_UNSUPPORTED, EXIT_UNUSABLE, EXIT_USAGE
from certify.explain.registry import METHODS

SEED = int(os.environ.get("CERTIFY_FUZZ_SEED", "17"))  # another seed draws other invocations
CASES = 600
MODEL = "digits-relu-mlp"  # flat inputs of 64 features, 10 classes; trained once and cached
BAD_FLOATS = ["inf", "-inf", "nan", "NaN", "-1", "0", "1e400", "-1e400", "abc", "", "0x10", "1,5", "--"]
HUGE_INTS = ["99999999999999999999", "-99999999999999999999", str(2**64), str(-(2**63) - 1)]
METHODS_WITH_PARAMS = {  # method -> (a parameter, values it refuses)
    "smoothgrad": ("sigma", ["-1", "inf", "nan", "null", "true", '"a"', "[1]"]),
    "moreaugrad": ("rho", ["-1", "0", "nan", "1e400", "abc", "[0.3]", "{}"]),
    "integrated-gradients": ("n_steps", ["0", "-3", "1.5", "1e400", "true", "x"]),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Bad files of every kind (and one good input), made once."""
    d = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(SEED)
    made: dict[str, Path] = {"folder": d / "folder", "missing": d / "missing.npy"}
    made["folder"].mkdir()

    def write(name: str, data: bytes) -> None:
        made[name] = d / name
        made[name].write_bytes(data)

    write("empty.npy", b"")
    write("empty.pt", b"")
    write("garbage.npy", rng.bytes(512))
    write("garbage.pt", rng.bytes(512))
    write("truncated.npy", _npy_bytes(np.zeros(64, np.float32))[:100])
    write("input.txt", b"0.5 " * 64)
    write("input.csv", b",".join([b"0.5"] * 64))
    write("noext", _npy_bytes(np.zeros(64, np.float32)))
    write("garbage.vnnlib", b"(declare-const X_0 Real)\n(assert (<= X_0")
    arrays = {"batch2.npy": np.zeros((2, 64), np.float32), "short.npy": np.zeros(63, np.float32),
              "image.npy": np.zeros((3, 8, 8), np.float32), "zero.npy": np.zeros((0, 64), np.float32),
              "nan.npy": np.full(64, np.nan, np.float32), "inf.npy": np.full((1, 64), np.inf, np.float32),
              "complex.npy": np.zeros(64, np.complex64), "strings.npy": np.array(["a"] * 64)}
    for name, array in arrays.items():
        write(name, _npy_bytes(array))
    made["object.npy"] = d / "object.npy"
    np.save(made["object.npy"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for name, obj in {"dict.pt": {"x": torch.zeros(64)}, "list.pt": [torch.zeros(64)],
                      "batch3.pt": torch.zeros(3, 64)}.items():
        made[name] = d / name
        torch.save(obj, made[name])
    nested = 10**5
    write("nested.json", b"[" * nested + b"]" * nested)
    write("nested-object.json", b'{"a":' * nested + b"1" + b"}" * nested)
    for name, doc in {"list.json": [], "number.json": 3, "string.json": "certificate",
                      "wrong-schema.json": {"claims": "none", "provenance": 1}, "null.json": None}.items():
        write(name, json.dumps(doc).encode())
    write("truncated.json", b'{"provenance": {"package": "certify')
    write("binary.json", rng.bytes(300))
    write("exists.json", b"{}")
    write("mods.py", b"def boom():\n    raise RuntimeError('kaboom')\n\ndef three():\n    return 3\n")
    write("model.onnx", rng.bytes(256))
    return made


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _explain(rng: random.Random, out: str, *extra: str, method: str = "gradient") -> list[str]:
    """An explain invocation of the cached model with `extra` options, in a random order of its options."""
    options = [["--model", MODEL], ["--method", method], ["--out", out], list(extra)]
    rng.shuffle(options)
    return ["explain", *[a for group in options for a in group]]


def generate(rng: random.Random, f: dict[str, Path], n: int) -> list[tuple[str, list[str], int]]:
    """n invocations (category, argv, expected exit code), drawn round-robin over the categories."""
    out = str(f["folder"] / "certificate.json")
    s = {k: str(v) for k, v in f.items()}
    commands = ["explain", "verify", "verify-property", "prox", "test-importance", "evaluate", "report", "demo", "check"]

    def unknown_command():
        word = rng.choice(["frobnicate", "explian", "verfy", "EXPLAIN", "--", "-x", "batchh", "ver ify", "\u00e9", "0"])
        return [word, *rng.sample(["--model", MODEL, "--out", out], rng.randint(0, 4))]

    def unknown_option():
        command = rng.choice(commands)
        option = rng.choice(["--bogus", "--modle", "--eps-", "--overwrite-all", "--param-x", "-z", "--json=1", "--quick=yes"])
        required = {"explain": ["--model", MODEL, "--method", "gradient", "--out", out], "verify": [s["exists.json"]],
                    "verify-property": [MODEL, s["garbage.vnnlib"]], "prox": ["--model", "x"],
                    "test-importance": ["--model", MODEL], "evaluate": ["--model", MODEL], "report": [s["folder"]]}
        return [command, *required.get(command, []), option, rng.choice(["1", "x", "inf"])]

    def missing_required():
        return rng.choice([["explain"], ["explain", "--model", MODEL], ["explain", "--method", "gradient", "--out", out],
                           ["verify"], ["verify-property", MODEL], ["prox"], ["test-importance"], ["evaluate"],
                           ["report"], ["explain", "--model", MODEL, "--method", "gradient", "--out", out, "--eps"]])

    def bad_number():
        which = rng.choice(["--eps", "--index", "--topk", "--target-float", "evaluate-eps", "evaluate-k", "prox-sigma",
                            "prox-seed", "timeout"])
        if which == "--target-float":
            return _explain(rng, out, "--target", rng.choice(["1.5", "inf", "nan", "one", ""]))
        if which in ("--index", "--topk"):  # integers: negative, huge (beyond the test split or the features) or not
            values = [v for v in BAD_FLOATS + HUGE_INTS + ["1.5", "1e3"] if not (which == "--index" and v == "0")]
            return _explain(rng, out, which, rng.choice(values))
        eps = rng.choice(BAD_FLOATS + ["1e-400", "-0.0"])  # a radius: finite and > 0 (1e-400 underflows to 0)
        if which == "--eps":
            return _explain(rng, out, which, eps)
        if which == "evaluate-eps":
            return ["evaluate", "--model", MODEL, "--methods", "gradient", "--out", str(f["folder"]), "--eps", "0.1", eps]
        if which == "evaluate-k":
            return ["evaluate", "--model", MODEL, "--methods", "gradient", "--out", str(f["folder"]), "--k",
                    rng.choice(["nan", "inf", "-0.5", "0", "1.5", "x"])]
        if which == "prox-sigma":
            return ["prox", "--model", "x", "--sigma", rng.choice(["0", "-1", "inf", "nan", "1e400", "x"])]
        if which == "prox-seed":
            return ["prox", "--model", "x", "--seed", rng.choice(["-1", str(2**63), "1.5", "x"] + HUGE_INTS)]
        return ["verify-property", MODEL, s["garbage.vnnlib"], "--timeout", rng.choice(["0", "-1", "inf", "nan", "1e400"])]

    def bad_target():
        return _explain(rng, out, "--target", rng.choice(HUGE_INTS + ["10", "11", "-1", "1000", str(2**31)]))

    def bad_input_file():
        name = rng.choice(["missing", "folder", "empty.npy", "empty.pt", "garbage.npy", "garbage.pt", "truncated.npy",
                           "input.txt", "input.csv", "noext", "garbage.vnnlib", "batch2.npy", "short.npy", "image.npy",
                           "zero.npy", "nan.npy", "inf.npy", "complex.npy", "strings.npy", "object.npy", "dict.pt",
                           "list.pt", "batch3.pt"])
        if rng.random() < 0.8:
            return _explain(rng, out, "--input", s[name])
        return ["test-importance", "--model", MODEL, "--regions", "features", "--input", s[name]]

    def bad_certificate():
        name = rng.choice(["missing", "folder", "empty.npy", "garbage.npy", "nested.json", "nested-object.json",
                           "list.json", "number.json", "string.json", "wrong-schema.json", "null.json", "truncated.json",
                           "binary.json", "exists.json", "input.txt"])
        path = rng.choice([s[name], "/dev/zero", "/dev/null"]) if rng.random() < 0.15 else s[name]
        return ["verify", path, *(["--json"] if rng.random() < 0.5 else [])]

    def bad_param():
        method = rng.choice(["gradient", *METHODS_WITH_PARAMS])
        if method == "gradient" or rng.random() < 0.4:
            key = rng.choice(["foo", "rho", "sigma", "group_size", "n-steps-x", "model", "eps2", "Rho", "samples"])
            if key.replace("-", "_") in inspect.signature(METHODS[method]).parameters and key != "model":
                key = "foo"  # a parameter the method takes: not an unknown one
            return _explain(rng, out, "--param", f"{key}={rng.choice(['1', '0.3', 'x', 'null'])}", method=method)
        key, values = METHODS_WITH_PARAMS[method]
        return _explain(rng, out, "--param", f"{key}={rng.choice(values)}", method=method)

    def bad_param_syntax():
        value = rng.choice(["rho", "=1", "", "noequals", "=", "==", "rho=" + "[" * 10**5 + "]" * 10**5,
                            "rho=" + '{"a":' * 10**5, "rho=1" + "0" * 5000])
        return _explain(rng, out, "--param", value)

    def name_too_long():
        name = "x" * rng.choice([256, 300, 5000])
        kind = rng.choice(["--out", "--input", "verify"])
        if kind == "verify":
            return ["verify", name + ".json"]
        return _explain(rng, name + ".json" if kind == "--out" else out, *(["--input", name + ".npy"] if kind == "--input" else []))

    def bad_model():
        spec = rng.choice(["no-such-zoo-model", "zoo:nothing", "nomodule_xyz:net", "mods:nothere", "mods:boom",
                           "mods:three", s["model.onnx"], str(f["folder"] / "missing.onnx"), "missing.pt", ":", "a:b:c"])
        if rng.random() < 0.7:
            return ["explain", "--model", spec, "--method", "gradient", "--out", out, "--input", s["image.npy"]]
        return ["test-importance", "--model", spec]

    def bad_verify_model():
        spec = rng.choice(["no-such-zoo-model", "nomodule_xyz:net", "mods:boom", "mods:three"])
        return ["verify", s["exists.json"], "--model", spec]

    def unknown_method():
        name = rng.choice(["limes", "grad", "Gradient", "sparse-moreaugrad", "shap", ""])
        if rng.random() < 0.5:
            return _explain(rng, out, method=name)
        return ["evaluate", "--model", MODEL, "--out", str(f["folder"]), "--methods", "gradient",
                rng.choice(["limes", "h-shap", "grad-cam", "sobol", "shapley-value-sampling", "Gradient"])]

    def bad_out():
        where = rng.choice(["missing-parent", "folder", "file-for-folder"])
        if where == "missing-parent":
            return _explain(rng, str(f["folder"] / "no" / "such" / "c.json"))
        if where == "folder":
            return _explain(rng, str(f["folder"]))
        command = rng.choice(["evaluate", "demo", "check"])
        extra = {"evaluate": ["--model", MODEL, "--methods", "gradient"], "demo": ["--quick"], "check": ["--quick"]}
        return [command, *extra[command], "--out", s["exists.json"]]

    categories = {  # name -> (maker, documented exit code)
        "unknown command": (unknown_command, EXIT_USAGE),
        "unknown option": (unknown_option, EXIT_USAGE),
        "missing required argument": (missing_required, EXIT_USAGE),
        "bad number": (bad_number, EXIT_USAGE),
        "target out of range": (bad_target, EXIT_INVALID_INPUT),
        "bad input file": (bad_input_file, EXIT_INVALID_INPUT),
        "bad certificate file": (bad_certificate, EXIT_UNUSABLE),
        "bad method parameter": (bad_param, EXIT_USAGE),
        "bad --param syntax": (bad_param_syntax, EXIT_USAGE),
        "bad model spec": (bad_model, EXIT_UNSUPPORTED),
        "bad model spec for verify": (bad_verify_model, EXIT_UNUSABLE),
        "unknown method": (unknown_method, EXIT_UNSUPPORTED),
        "bad output path": (bad_out, EXIT_USAGE),
        "file name too long": (name_too_long, None),  # the code of the option: --out 64, --input 65, verify 2
    }
    names = list(categories)
    cases = []
    for i in range(n):
        name = names[i % len(names)]
        maker, code = categories[name]
        argv = maker()
        if code is None:
            code = EXIT_UNUSABLE if argv[0] == "verify" else EXIT_INVALID_INPUT if "--input" in argv else EXIT_USAGE
        cases.append((name, argv, code))
    return cases


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_generated_bad_invocations_exit_with_their_documented_code(files, monkeypatch):
    monkeypatch.chdir(files["folder"].parent)  # mods.py importable as module:callable
    monkeypatch.syspath_prepend(str(files["folder"].parent))
    cases = generate(random.Random(SEED), files, CASES)
    wrong = []
    for category, argv, expected in cases:
        code, _, err = _run(argv)
        last = err.strip().splitlines()[-1] if err.strip() else ""
        if code != expected or "Traceback" in err or "error" not in last or not last.startswith("certify"):
            wrong.append(f"{category}: {argv} -> exit {code} (expected {expected}); stderr ends {last[:200]!r}")
    counts = Counter(category for category, _, _ in cases)
    print(f"\n{len(cases)} bad invocations ({len(counts)} categories): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    assert len(cases) >= 500 and len(counts) == 14
    assert not wrong, f"{len(wrong)} of {len(cases)} invocations broke the contract:\n" + "\n".join(wrong[:40])
    assert not (files["folder"] / "certificate.json").exists()  # no bad invocation wrote its certificate
    assert not any(p.name.endswith(".partial") for p in files["folder"].parent.rglob("*"))
