"""The `certify` command (DESIGN section 7).

Exit codes (certify.errors): 0 success; 1 a check or claim failed; 2 unusable certificate or certificate store;
64 usage error (also: out of memory for the work the parameters ask); 65 invalid input data; 66 unsupported model,
layer or method; 70 internal error; 75 a property neither proven nor refuted (`verify-property`, and `verify` of
such a certificate); 130 interrupted (Ctrl-C); 141 the reader of the output went away (SIGPIPE, e.g. `| head`). Every failure ends with one line on stderr naming the problem (tests/cli/test_cli_fuzz.py drives the
contract with generated bad invocations); files to write are checked before any work is done.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Sequence

import certify
from certify.batch.cli import add_parsers as add_batch_parsers, add_store_option, cmd_verify_store
from certify.errors import (EXIT_FAILED, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_PIPE, EXIT_UNKNOWN,
                            EXIT_USAGE, CertifyError, UnsupportedError)
from certify.progress import interruptible

DEBUG_ENV = "CERTIFY_DEBUG"  # set to 1 (or pass --debug) for the traceback of an internal error


class _Parser(argparse.ArgumentParser):
    """argparse with the package's usage-error exit code (64) instead of 2, which `verify` reserves."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _run_command(args: argparse.Namespace) -> list[str]:
    """A run's identity for its manifest (certify.runs.RunDirectory): the subcommand and every option that changes
    what it writes (not --out, --json, --debug nor --overwrite)."""
    skip = {"out", "json", "debug", "overwrite", "run", "command"}
    return ["certify", args.command, *(f"--{k.replace('_', '-')}={v}" for k, v in sorted(vars(args).items())
                                       if k not in skip)]


def _cmd_demo(args: argparse.Namespace) -> int:
    from certify.demo import DemoConfig, run_demo

    _check_out_dir(args.out)
    summary = run_demo(Path(args.out), DemoConfig.quick() if args.quick else DemoConfig(), command=_run_command(args),
                       overwrite=args.overwrite)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        if summary.get("reused"):
            print(f"certify demo: {summary['files']['html']} and the other files: kept from the finished run of the same "
                  "command (manifest.json); pass --overwrite to run it again")
        else:
            print(f"certify demo: wrote {summary['files']['html']} (and {Path(summary['files']['markdown']).name}, heatmaps.png, certificates/, THEOREMS.md, summary.json)")
        bad = [i for i, v in summary["theorems"].items() if v in ("violated", "error")]
        if bad:
            print(f"theorem checks that failed: {', '.join(bad)}")
        for method, verified in summary["certificates"].items():
            print(f"  {method:22s} certificates {verified}")
        for why in summary.get("skipped_methods", []):
            print(f"  skipped: {why}")
        for denoiser, answer in summary["prox"].items():
            print(f"  {denoiser:22s} prox certificate: {answer}")
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from proofs_checks.runner import has_violation, run_checks, selected_ids, table_markdown, write_table

    from certify.runs import RunDirectory

    _check_out_dir(args.out)
    selected_ids(args.only)  # an unknown id is a usage error before the run folder is touched
    out = Path(args.out)
    with RunDirectory(out, command=_run_command(args), overwrite=args.overwrite) as run:
        if run.done:  # the same command finished there (said on stderr): nothing is rerun
            table = json.loads((out / "THEOREMS.json").read_text())
            if args.json:
                print(json.dumps({**table, "reused": True, "markdown": str(out / "THEOREMS.md"),
                                  "json": str(out / "THEOREMS.json")}, indent=2, default=str))
            else:
                print(f"{out / 'THEOREMS.md'} and {out / 'THEOREMS.json'}: kept from the finished run of the same command "
                      "(manifest.json); pass --overwrite to run the checks again")
            return EXIT_FAILED if any(r["verdict"] in ("violated", "error") for r in table["results"]) else EXIT_OK
        results = run_checks(only=args.only, quick=args.quick, progress=True)
        md, js = write_table(results, out, quick=args.quick)
        run.record(md, js)
    if args.json:
        print(json.dumps({"results": [r.as_dict() for r in results], "markdown": str(md), "json": str(js)}, indent=2, default=str))
    else:
        table = table_markdown(results, args.quick, include_missing=not args.only)
        print(table.split("\n## ")[0].rstrip())
        print(f"\nwrote {md} and {js}")
    return EXIT_FAILED if has_violation(results) else EXIT_OK


def _check_out_file(path: str | None, option: str) -> None:
    """Refuse, before any work, a file to write whose folder does not exist or that names a folder (UsageError)."""
    from certify.errors import UsageError

    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name in it (e.g. {target / 'certificate.json'})")
    if not target.parent.is_dir():
        raise UsageError(f"{option} {path}: the folder {target.parent} does not exist (create it first)")


def _check_out_dir(path: str, option: str = "--out") -> None:
    """Refuse, before any work, an output folder that is an existing file (UsageError); a missing folder is created
    by the command."""
    from certify.errors import UsageError

    if Path(path).exists() and not Path(path).is_dir():
        raise UsageError(f"{option} {path} is a file; give a folder (it is created if missing)")


MAX_CERTIFICATE_BYTES = 1 << 30  # `certify verify` reads no more than this (a certificate is far smaller)


def _check_certificate_file(path: str) -> None:
    """Refuse a certificate path that is not a regular file (a folder, a device such as /dev/zero, a FIFO: reading
    it could never end) or is larger than MAX_CERTIFICATE_BYTES: CertificateFormatError (exit 2). A missing file is
    left to the reader, which reports it the same way."""
    from certify.errors import CertificateFormatError

    target = Path(path)
    try:
        if not target.exists():
            return
        regular, size = target.is_file(), target.stat().st_size
    except OSError as exc:  # e.g. a name too long for the file system
        raise CertificateFormatError(f"cannot read certificate {path[:200]}: {exc.strerror}") from None
    if not regular:
        raise CertificateFormatError(f"{path} is not a regular file, so it cannot be a certificate")
    if size > MAX_CERTIFICATE_BYTES:
        raise CertificateFormatError(f"{path} has {size} bytes, more than the {MAX_CERTIFICATE_BYTES} a certificate "
                                     "may have")


def _unknown_method(name: str, command: str) -> str:
    """Why `certify COMMAND --method(s) NAME` cannot run it, in the registry's names (`certify.explain.registry`):
    `explain` takes a method (METHODS), `evaluate` a method's preset (PRESETS, named after its method, or a variant
    of it such as sparse-moreaugrad)."""
    from certify.explain.registry import METHODS, PRESETS

    if command == "explain" and name in PRESETS:
        method, params = PRESETS[name]
        settings = " ".join(f"--param {k}={json.dumps(v)}" for k, v in params.items())
        return f"{name!r} is a preset of `certify evaluate`, not a method: use --method {method} {settings}".rstrip()
    if command == "evaluate" and name in METHODS:
        return (f"method {name!r} has no preset in the robustness study of `certify evaluate` (explain it with "
                f"`certify explain --method {name}`); studied: {', '.join(sorted(PRESETS))}")
    known = sorted(METHODS) if command == "explain" else sorted(PRESETS)
    return f"unknown explanation method {name!r}; choose one of {', '.join(known)}"


def _param(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE read as JSON when it parses (numbers, true/false, null), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text[:80]!r}")
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value
    except (ValueError, RecursionError):  # an integer of more than 4300 digits; nesting beyond the recursion limit
        raise argparse.ArgumentTypeError(f"the value of {key[:80]} is too long or nested too deeply to read") from None


def _positive(name: str):
    """An argparse type for a finite number > 0 (`certify.validation.positive_number`): inf, nan, 0 and negative
    values are usage errors (exit 64), never parameters of a claim."""
    def parse(text: str) -> float:
        from certify.errors import UsageError
        from certify.validation import positive_number

        try:
            return positive_number(float(text), name)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a finite number > 0, got {text!r}") from None
    return parse


_radius = _positive("eps")


def _shape(text: str) -> tuple[int, ...]:
    """--input-shape C,H,W (any rank >= 1): positive integers separated by commas (or x)."""
    parts = [p for p in text.replace("x", ",").replace(" ", "").split(",") if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(s <= 0 for s in shape):
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, like 1,28,28; got {text!r}")
    return shape


def _input_shape(args: argparse.Namespace, model, data) -> tuple[int, ...] | None:
    """The per-example input shape of the model, when known: recorded by the model (ONNX), else --input-shape,
    else the zoo data set's; UsageError when --input-shape disagrees with the recorded shape."""
    from certify.errors import UsageError
    from certify.models.onnx import input_shape_of

    recorded, given = input_shape_of(model), args.input_shape
    if recorded is not None and given is not None and tuple(given) != recorded:
        raise UsageError(f"--input-shape {','.join(map(str, given))} differs from the input shape {recorded} the model "
                         "records")
    return recorded or given or (data.input_shape if data is not None else None)


def _load_input(args: argparse.Namespace, model, data) -> "torch.Tensor":  # noqa: F821
    """The one input to explain [1, ...]: --input FILE (.npy or .pt, with or without the batch dimension, reshaped
    to the model's input shape when it is known), or row --index of the test split of --dataset (default: the zoo
    model's)."""
    from certify.errors import UsageError
    from certify.models.datasets import load_dataset
    from certify.validation import load_array_file, single_example

    if args.input:
        x, shape = load_array_file(args.input, "--input"), _input_shape(args, model, data)
        given = args.input_shape is not None and shape == tuple(args.input_shape)
        if given and x.numel() != math.prod(shape) and tuple(x.shape[1:]) != shape:  # not a batch of such examples
            raise UsageError(f"--input-shape {','.join(map(str, shape))} holds {math.prod(shape)} values, but the input "
                             f"has {x.numel()} (shape {tuple(x.shape)})")  # the option disagrees with the data
        return _in_model_dtype(single_example(x, shape, "--input"), model)
    dataset = load_dataset(args.dataset) if args.dataset else data
    if dataset is None:
        raise UsageError("give --input FILE, or --dataset NAME with --index I (the model is not from the zoo)")
    if not 0 <= args.index < dataset.x_test.shape[0]:
        raise UsageError(f"--index {args.index} out of range: the {dataset.name} test split has {dataset.x_test.shape[0]} examples")
    shape = _input_shape(args, model, data)
    if shape is not None and tuple(dataset.input_shape) != tuple(shape):
        hint = f" (this zoo model's data set is {data.name})" if data is not None else ""
        raise UsageError(f"--dataset {dataset.name} has examples of shape {tuple(dataset.input_shape)}, the model takes "
                         f"{tuple(shape)}{hint}")
    return _in_model_dtype(dataset.x_test[args.index : args.index + 1], model)


def _in_model_dtype(x: "torch.Tensor", model) -> "torch.Tensor":  # noqa: F821
    """x in the dtype of the model's floating-point parameters (a float64 .npy, NumPy's default, for a float32
    model: the model would refuse to multiply them; the input it explains is the one it computes on)."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    return x.to(dtype) if dtype is not None and x.is_floating_point() and x.dtype != dtype else x


def _cmd_explain(args: argparse.Namespace) -> int:
    import torch

    from certify.certificates.builder import certify_explanations
    from certify.errors import UsageError
    from certify.certificates.summary import STABILITY_VACUOUS, explanation_norm, vacuous_label, vacuous_reason
    from certify.explain.registry import METHODS, command_line_params, make_explainer
    from certify.models.spec import load_model

    _check_out_file(args.out, "--out")
    if args.method not in METHODS:
        raise UnsupportedError(_unknown_method(args.method, "explain"))
    model, data = load_model(args.model)
    x = _vnnlib_input(args, model) if _is_vnnlib(args.input) else _load_input(args, model, data)
    params = command_line_params(args.method, dict(args.param or []), data, args.eps)
    explainer = make_explainer(args.method, model, **params)
    (cert,) = certify_explanations(explainer, x, target=args.target, eps=args.eps, k=args.topk, model_spec=args.model)
    cert.write(Path(args.out))
    norm = explanation_norm(cert, Path(args.out).parent)
    vacuous = {c.id: vacuous_reason(c, norm) for c in cert.claims}
    if args.json:  # the certificate, each claim with "vacuous" (certify.certificates.summary); the file is unchanged
        document = json.loads(cert.to_json())
        for c in document["claims"]:
            c["vacuous"] = vacuous[c["id"]]
        print(json.dumps(document, indent=1))
    else:
        print(f"wrote {args.out}: {args.method} explanation of class {cert.target}")
        if getattr(explainer, "rho_auto", None) is not None:
            rho = next((c.params["rho"] for c in cert.claims if "rho" in c.params), None)
            solver = next((c for c in cert.claims if c.id == "solver-error"), None)
            if rho is not None and solver is not None and solver.kind != "refused":
                print(f"  rho = {rho:.4g}, chosen to minimise Corollary 1's certified stability bound at eps = "
                      f"{explainer.eps:g} (the stability claim states the smaller of that and beta eps / (1 - rho lambda); "
                      "--param rho=... to set it)")
            elif rho is not None:
                print(f"  rho = {rho:.4g}: no rho is admissible for this model's certified bounds (a fallback; the "
                      "claims below say why they refuse)")
        untranslated = cert.function.get("refused")
        if untranslated:
            print(f"  no bound-based claims: {untranslated}")
        for c in cert.claims:
            reason = c.reason or ""
            if untranslated and untranslated in reason:  # said once above
                reason = "the model is not translated (above)"
            value = "refused: " + reason if c.value is None else f"{c.relation} {c.value:.6g} ({c.kind})"
            if vacuous[c.id]:  # true, but certifies nothing: never shown as a plain certified number
                of_a = f"; ||a||_2 = {norm:.6g}" if vacuous[c.id] == STABILITY_VACUOUS else ""
                value = f"{vacuous_label(vacuous[c.id])}: {c.relation} {c.value:.6g} ({c.kind}{of_a})"
            print(f"  {c.id:24s} {value}")
        empty = [i for i, r in vacuous.items() if r]
        if empty:
            print(f"  vacuous (true, but certify nothing): {', '.join(empty)}")
    return EXIT_OK


def _is_vnnlib(path: str | None) -> bool:
    return bool(path) and Path(path).suffix.lower() == ".vnnlib"


def _vnnlib_input(args: argparse.Namespace, model) -> "torch.Tensor":  # noqa: F821
    """--input PROP.vnnlib: the box's centre image (an L-infinity ball clipped to [0, 1]; else the box's
    midpoint) shaped as the model's input, and its label as the target unless --target is given."""
    import torch

    from certify.models.spec import check_property_fits, property_input_shape
    from certify.models.vnnlib import parse_vnnlib

    prop = parse_vnnlib(args.input)
    ball = prop.ball()
    centre = ball[0] if ball is not None else (prop.lower + prop.upper) / 2
    shape = property_input_shape(model, prop.num_inputs, args.input_shape)
    check_property_fits(model, prop.lower, prop.upper, prop.num_outputs, shape, args.input_shape is not None)
    x = torch.as_tensor(centre, dtype=torch.float32).reshape(1, *shape)
    box = (f"an L-inf ball of radius {ball[1]:.6g} around its centre, clipped to [0, 1]" if ball is not None
           else "not an L-inf ball clipped to [0, 1]: explaining its midpoint")
    label = prop.label
    if args.target is None and label is not None:
        args.target = label
    print(f"{args.input}: input box is {box}; label {label if label is not None else '(not a classification property)'}",
          file=sys.stderr)
    return x




def _cmd_verify_property(args: argparse.Namespace) -> int:
    """The answer printed and the exit code are the certificate's (issued in memory, re-checked by the
    independent checker, written only with --out): "holds" only when its holds claim verifies, "violated" only
    when its counterexample does; whatever the search found that the certificate cannot carry is "unknown"."""
    import numpy as np

    from certify.attacks.property import verify_property
    from certify.certificates.issuers.property import checked_property_certificate
    from certify.errors import UsageError
    from certify.models.spec import check_property_fits, load_model, property_input_shape
    from certify.models.vnnlib import parse_vnnlib

    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise UsageError(f"--timeout must be a finite number of seconds > 0, got {args.timeout}")
    _check_out_file(args.out, "--out")
    _check_out_file(args.counterexample, "--counterexample")
    model, _ = load_model(args.model)
    prop = parse_vnnlib(args.property)
    shape = property_input_shape(model, prop.num_inputs, args.input_shape)
    check_property_fits(model, prop.lower, prop.upper, prop.num_outputs, shape, args.input_shape is not None)
    methods = {"crown": ("crown",), "alpha-crown": ("crown", "alpha-crown"), "bab": ("crown", "bab")}[args.method]
    result = verify_property(model, prop, timeout=args.timeout, input_shape=shape, methods=methods, seed=args.seed)
    found = result.status
    out = Path(args.out) if args.out else None
    cert, _ = checked_property_certificate(model, prop, result, shape, args.method, args.timeout, args.model, out)
    if cert.answer != found:
        result.notes.append(f"{found} by {result.method or 'the search'}, but the certificate answers {cert.answer!r}: "
                            f"{cert.claims[0].reason}")
        result.status = cert.answer
    if out is not None:
        cert.write(out)
    if args.counterexample and result.counterexample is not None:
        np.save(args.counterexample, result.counterexample)
    if args.json:
        print(json.dumps({**result.to_json(), "found": found, **({"certificate": args.out} if out else {})}, indent=1))
    else:
        if result.status == "holds":
            print(f"holds: certified by {cert.claims[0].method} (lower bound {cert.claims[0].value:.6g} > 0 on every "
                  f"output constraint over the whole input box, re-derived by the independent checker; search "
                  f"{result.method}, bound {'none' if result.margin is None else format(result.margin, '.6g')}) in "
                  f"{result.seconds:.2f} s")
        elif result.status == "violated":
            y, y64 = result.outputs["model dtype"], result.outputs["float64"]
            print(f"violated: counterexample found by {result.method} in {result.seconds:.2f} s, inside the box and "
                  f"violating the output constraint in the model's dtype (outputs {np.round(y, 5).tolist()}) and in "
                  f"float64 (outputs {np.round(y64, 5).tolist()})")
            if args.counterexample:
                print(f"  counterexample written to {args.counterexample}")
        else:
            print(f"{result.status} after {result.seconds:.2f} s")
            if args.counterexample and result.counterexample is not None:
                print(f"  the point found (not certified) written to {args.counterexample}")
        for note in result.notes:
            print(f"  {note}")
        if out is not None:
            print(f"  certificate written to {args.out} (answer {cert.answer}; re-check with `certify verify {args.out}`)")
    return {"holds": EXIT_OK, "violated": EXIT_FAILED}.get(result.status, EXIT_UNKNOWN)


_CHECKER_VACUOUS = re.compile(r" \[VACUOUS: ([^\]]*)\]")


def _checker_vacuous(check) -> str | None:
    """The checker's own label of a claim that verifies but guarantees nothing (' [VACUOUS: why]' in its
    detail, e.g. a radius lower bound that no point of the domain can reach)."""
    found = _CHECKER_VACUOUS.search(check.detail)
    return found.group(1) if found else None


def _prox_points(args: argparse.Namespace, model) -> "torch.Tensor":  # noqa: F821
    """Noisy points y = x + sigma v for the prox evidence: x from --data (digits, mnist or a .npy/.pt file of
    clean inputs [N, ...]), default by the denoiser's size (an LPN's dim: 64 digits, 784 MNIST, else N(0, I))."""
    import torch

    from certify.errors import InvalidInputError, UsageError
    from certify.inverse.evidence import sample_points
    from certify.inverse.study import digits_images, mnist_images
    from certify.validation import load_array_file

    size = getattr(model, "dim", None)
    if size is None and args.input_shape is not None:
        size = math.prod(args.input_shape)
    data = args.data or {64: "digits", 784: "mnist"}.get(size, "normal")
    if data == "digits":
        clean = digits_images(64).flatten(1)
    elif data == "mnist":
        clean = mnist_images(15).flatten(1)
    elif data == "normal":
        if size is None:
            raise UsageError("give --data (digits, mnist or a file of clean inputs) or --input-shape: the denoiser's "
                             "input size is unknown")
        clean = torch.randn(64, size, generator=torch.Generator().manual_seed(args.seed), dtype=torch.float64)
    else:
        if not Path(data).is_file():
            raise UsageError(f"--data {data!r} is neither digits, mnist nor a file")
        clean = load_array_file(data, "--data").to(torch.float64)
        if clean.dim() < 2 or clean.shape[0] < 1 or not bool(torch.isfinite(clean).all()):
            raise InvalidInputError(f"{data}: expected finite clean inputs [N, ...], got shape {tuple(clean.shape)}")
    if size is not None and clean[0].numel() != size:
        raise InvalidInputError(f"the data's inputs have {clean[0].numel()} features; the denoiser takes {size}"
                                + (" (--input-shape)" if getattr(model, "dim", None) is None else ""))
    if args.input_shape is not None:
        clean = clean.reshape(clean.shape[0], *args.input_shape)
    return sample_points(clean, args.sigma, args.points, seed=args.seed)


MAX_PROX_POINTS = 4096
PROX_GLOSS = {  # what each number of a prox certificate is, for people
    "prox-structure": ": alpha, psi's strong-convexity modulus",
    "prox-violation-cycle": ": the cycle sum S minus its rounding bound (> 0 proves f is not a prox)",
    "jacobian-asymmetry": ": the worst ||J - J^T||_F / ||J||_F found (0 for a gradient field)",
    "jacobian-min-eigenvalue": ": the smallest eigenvalue of (J + J^T)/2 found (>= 0 for a prox)",
    "cyclic-monotonicity-sampled": ": the largest normalised cycle sum S / sum ||d_i||^2 found (<= 0: no violation)",
}


def _seed(text: str) -> int:
    """--seed: an integer in [0, 2^63)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"the seed must be in [0, 2^63), got {value}")
    return value


def _cmd_prox(args: argparse.Namespace) -> int:
    """Exit 0: certified prox; 1: certified not a prox (a violating cycle); 75: undecided (sampled evidence only)."""
    from certify.certificates.issuers.prox import checked_prox_certificate
    from certify.inverse.spec import load_denoiser

    import numpy as np
    import torch

    from certify.errors import InvalidInputError, UnsupportedError, UsageError

    if not 2 <= args.points <= MAX_PROX_POINTS:
        raise UsageError(f"--points must be in [2, {MAX_PROX_POINTS}] (a cycle needs two points), got {args.points}")
    _check_out_file(args.out, "--out")
    model = load_denoiser(args.model)
    points = _prox_points(args, model)
    failures = (RuntimeError, TypeError, ValueError, IndexError, ArithmeticError, np.linalg.LinAlgError)
    try:
        with torch.no_grad():
            out = model(points[:2].to(next(iter(model.parameters()), points).dtype))
    except failures as exc:
        hint = "" if args.input_shape is not None else "; give --input-shape if it takes another shape"
        raise UnsupportedError(f"the denoiser fails on inputs of shape {tuple(points.shape[1:])} "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}){hint}") from None
    if not isinstance(out, torch.Tensor) or out.shape != points[:2].shape:
        raise UnsupportedError(f"the denoiser maps inputs of shape {tuple(points.shape[1:])} to "
                               f"{tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else type(out).__name__}: a "
                               "denoiser returns its input's shape")
    if not bool(torch.isfinite(out).all()):
        raise InvalidInputError("the denoiser's output is not finite at the sampled points")
    try:
        cert, problems = checked_prox_certificate(model, points, model_spec=args.model, data=args.data or "default",
                                                  seed=args.seed, quick=not args.thorough)
    except failures as exc:
        raise UnsupportedError(f"the denoiser cannot be evaluated for the prox evidence "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if args.out:
        cert.write(Path(args.out))
    if args.json:
        print(cert.to_json())
    else:
        verdict = {"prox": "a proximal operator (certified: structure)",
                   "not-a-prox": "NOT a proximal operator (certified: a cycle on which it is not cyclically monotone)",
                   "undecided": "undecided (no structural proof; no violation found among the sampled evidence)"}
        print(f"{args.model}: {verdict[cert.answer]}")
        for c in cert.claims:
            value = "refused: " + (c.reason or "") if c.value is None else f"{c.relation} {c.value:.6g} ({c.kind})"
            gloss = "" if c.value is None else PROX_GLOSS.get(c.type, "")
            print(f"  {c.id:16s} {c.type:28s} {value}{gloss}")
        for problem in problems:
            print(f"  checker: {problem}")
        if args.out:
            print(f"wrote {args.out} (re-check: certify verify {args.out})")
    return {"prox": EXIT_OK, "not-a-prox": EXIT_FAILED}.get(cert.answer, EXIT_UNKNOWN)


MAX_XRT_TESTS = 1024  # regions tested in one run (each test evaluates (K + 1) M inputs)
MAX_XRT_INPUTS = 10**7  # model inputs of one run: regions x (K + 1) x M


def _xrt_reference(args: argparse.Namespace, data, shape: tuple[int, ...]) -> tuple["torch.Tensor", tuple[str, str] | None]:  # noqa: F821
    """The sampler's reference rows [R, d]: the first --reference-rows rows of the data set's split, or a file."""
    import torch

    from certify.errors import InvalidInputError, UsageError
    from certify.models.datasets import load_dataset
    from certify.validation import load_array_file

    if args.reference in ("train", "test"):
        dataset = load_dataset(args.dataset) if args.dataset else data
        if dataset is None:
            raise UsageError("give --reference FILE.npy (rows like the input): the model has no data set (--dataset NAME)")
        rows = dataset.x_train if args.reference == "train" else dataset.x_test
        source = (dataset.name, args.reference)
    else:
        if not Path(args.reference).is_file():
            raise UsageError(f"--reference {args.reference!r} is neither train, test nor a file")
        rows = load_array_file(args.reference, "--reference").to(torch.float64)
        source = None
    if rows.dim() < 2 or rows[0].numel() != math.prod(shape):
        raise InvalidInputError(f"the reference rows must be [R, ...] with {math.prod(shape)} features each (the input's), "
                                f"got shape {tuple(rows.shape)}")
    return rows[: args.reference_rows], source


def _cmd_test_importance(args: argparse.Namespace) -> int:
    """SHAP-XRT tests of every region at one input; exit 0 (the p-values are the result)."""
    import torch

    from certify.certificates.issuers.importance import checked_importance_certificate
    from certify.errors import UsageError
    from certify.explain.shap_xrt import MarginalSampler, region_labels
    from certify.models.spec import load_model

    _check_out_file(args.out, "--out")
    model, data = load_model(args.model)
    x = _load_input(args, model, data)[0]
    x = x.to(next(iter(model.parameters()), x).dtype)
    shape = tuple(x.shape)
    labels = region_labels(args.regions, shape)
    regions = int(labels.max()) + 1
    if regions > MAX_XRT_TESTS:
        raise UsageError(f"--regions {args.regions} makes {regions} regions, more than {MAX_XRT_TESTS} tests; use larger tiles")
    if args.k < 1 or args.m < 1 or args.reference_rows < 1 or not 0 < args.alpha < 1:
        raise UsageError("--k, --m and --reference-rows must be >= 1 and --alpha in (0, 1)")
    if regions * (args.k + 1) * args.m > MAX_XRT_INPUTS:
        raise UsageError(f"{regions} tests x (K + 1) x M = {regions * (args.k + 1) * args.m} model inputs, more than "
                         f"{MAX_XRT_INPUTS}; lower --k or --m, or use larger regions")
    rows, source = _xrt_reference(args, data, shape)
    groups = None if args.sampler != "regions" else labels
    sampler = MarginalSampler(rows.reshape(rows.shape[0], -1), "joint" if args.sampler == "joint" else "product", groups)
    features = [torch.nonzero(labels == r).flatten().tolist() for r in range(regions)]
    context = [[] if args.context == "empty" else torch.nonzero(labels != r).flatten().tolist() for r in range(regions)]
    names = [f"region-{r}" for r in range(regions)]
    cert, problems = checked_importance_certificate(
        model, x, features, context, sampler=sampler, reference=source, names=names, k=args.k, m=args.m,
        alpha=args.alpha, target=args.target, score=args.score, seed=args.seed, model_spec=args.model,
        data=f"{args.input or (args.dataset or (data.name if data else ''))}" + ("" if args.input else f"[{args.index}]"),
        out=Path(args.out) if args.out else None)
    if args.out:
        cert.write(Path(args.out))
    if args.json:
        print(cert.to_json())
        return EXIT_OK
    first = cert.claims[0].params
    print(f"SHAP-XRT of {regions} regions ({args.regions}) of {cert.provenance['data'] or 'the input'} for the "
          f"{args.score} of class {first['target']}: context C = "
          f"{'the empty set' if args.context == 'empty' else 'the other regions held at x'}, K = {args.k}, M = {args.m}, "
          f"sampler {args.sampler} over {rows.shape[0]} reference rows, alpha = {args.alpha:g}")
    if args.regions == "quadrants" or args.regions.startswith("tile:"):
        print("  regions are numbered row by row from the top left (quadrants: 0 top left, 1 top right, 2 bottom left, "
              "3 bottom right)")
    print(f"  {'region':10s} {'features':>8s} {'p':>8s} {'decision':9s} {'gamma-hat':>10s}")
    for c in cert.claims:
        if c.value is None:
            print(f"  {c.id:10s} {len(c.params['features']):8d} refused: {c.reason}")
        else:
            print(f"  {c.id:10s} {len(c.params['features']):8d} {c.value:8.4g} {c.params['decision']:9s} {c.witness['gamma']:10.4g}")
    for problem in problems:
        print(f"  checker: {problem}")
    rejected = [c.id for c in cert.claims if c.value is not None and c.params["decision"] == "reject"]
    print(f"rejected at alpha = {args.alpha:g}: {', '.join(rejected) if rejected else 'none'}. Each p is valid "
          "(P(p <= alpha) <= alpha) under the null that the region changes nothing in law, for the sampler's law "
          "(a statement about the data only where the sampler draws from their conditional law); "
          f"gamma-hat estimates the region's marginal contribution v(C u j) - v(C); {len(rejected)} rejections among "
          f"{regions} tests are not corrected for multiplicity.")
    if args.out:
        print(f"wrote {args.out} (re-check: certify verify {args.out})")
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from certify.errors import UsageError

    if (args.store is None) == (args.certificate is None):
        raise UsageError("give a certificate file or --store FILE.sqlite (one of them)")
    if args.store is not None:
        if args.model is not None:
            raise UsageError("--model is for one certificate file; a store's certificates name their models")
        return cmd_verify_store(args)
    from certify.certificates.checker import verify_file
    from certify.certificates.document import ImportanceCertificate, PropertyCertificate, ProxCertificate, read_certificate
    from certify.certificates.summary import vacuous_label, vacuous_reasons

    answer = None
    _check_certificate_file(args.certificate)
    cert = read_certificate(Path(args.certificate))
    if isinstance(cert, (PropertyCertificate, ProxCertificate)):
        answer = cert.answer
    report = verify_file(Path(args.certificate), args.model, run_model_code=args.run_model_code)
    subject = ("denoiser" if isinstance(cert, ProxCertificate) else "property" if isinstance(cert, PropertyCertificate)
               else "tests" if isinstance(cert, ImportanceCertificate) else "explanation")
    # claims that verify but certify nothing: shown apart, never counted as certified (certify.certificates.summary)
    reasons = vacuous_reasons(cert, Path(args.certificate).parent)
    vacuous = {c.id: reasons.get(c.id) or _checker_vacuous(c) for c in report.checks
               if c.status in ("valid", "valid (probabilistic)")}
    vacuous = {i: r for i, r in vacuous.items() if r}
    if args.json:
        print(json.dumps({"valid": report.valid, "problems": report.problems, "function": report.function, subject: report.binding,
                          **({} if answer is None else {"answer": answer}),
                          "claims": [{**c.__dict__, "vacuous": vacuous.get(c.id)} for c in report.checks]}, indent=2))
    else:
        for problem in report.problems:
            print(f"INVALID: {problem}")
        groups = (("re-derived by the checker", ("valid", "invalid")),
                  ("probabilistic, statistic recomputed from stored seeds", ("valid (probabilistic)",)),
                  ("not re-checkable (solver-reported; shown apart, not certified)", ("not re-checkable",)),
                  ("estimates (sampled evidence, re-evaluated at their witness; not certified)", ("estimate",)),
                  ("refused (no value; the reason)", ("refused",)))
        for title, statuses in groups:
            rows = [c for c in report.checks if c.status in statuses and c.id not in vacuous]
            if rows:
                print(f"{title}:")
                for c in rows:
                    print(f"  {c.id:24s} {c.status:21s} {c.detail}")
        rows = [c for c in report.checks if c.id in vacuous]
        if rows:
            print("vacuous (they verify, but certify nothing; shown apart, not counted as certified):")
            for c in rows:
                detail = _CHECKER_VACUOUS.sub("", c.detail)  # the reason is in the label
                print(f"  {c.id:24s} {c.status:21s} {vacuous_label(vacuous[c.id])}: {detail}")
        print(f"function: {report.function}")
        print(f"{subject}: {report.binding}")
        certified = [c for c in report.by_status("valid", "valid (probabilistic)") if c.id not in vacuous]
        if answer is not None:
            print(f"answer: {answer}" + (" (certificate valid)" if report.valid else " (certificate INVALID: " + "; ".join(report.failures()) + ")"))
        elif report.valid and not certified:
            print("certificate valid, but nothing is certified: every claim is refused, not re-checkable or vacuous")
        elif report.valid:
            print(f"certificate valid: {len(certified)} claims verified"
                  + (f", and {len(vacuous)} vacuous ({', '.join(vacuous)}: shown apart)" if vacuous else ""))
        else:
            print("certificate INVALID: " + "; ".join(report.failures()))
    if not report.valid:
        return EXIT_FAILED
    return EXIT_UNKNOWN if answer in ("unknown", "undecided") else EXIT_OK


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from certify.evaluation import STUDIED, StudyConfig, SweepConfig, run_study, run_sweep
    from certify.evaluation.table import render, render_sweep
    from certify.models.datasets import load_dataset
    from certify.models.spec import load_model
    from certify.errors import UsageError
    from certify.runs import RunDirectory

    _check_out_dir(args.out)
    unknown = [m for m in args.methods if m not in STUDIED]
    if unknown:
        raise UnsupportedError(_unknown_method(unknown[0], "evaluate"))
    model, data = load_model(args.model)
    if args.dataset:
        data = load_dataset(args.dataset)
    if data is None:
        raise UsageError("--dataset is required for a model that is not from the zoo")
    config = StudyConfig(n=args.n, eps=tuple(args.eps), k=args.k, steps=args.steps, restarts=args.restarts, seed=args.seed,
                         search_draws=args.search_draws, metrics=args.metrics)
    out = Path(args.out)
    with RunDirectory(out, command=_run_command(args), overwrite=args.overwrite) as run:
        reused = run.done
        if run.done:  # the same command finished there (said on stderr): its result, not recomputed
            result = json.loads((out / "evaluation.json").read_text())
        else:
            result = run_study(model, data, args.model, args.methods, config)
            if args.sweep:
                result["sweep"] = run_sweep(model, data, SweepConfig(n=args.n, eps=max(args.eps)))
            run.write("evaluation.json", json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(render(result))
        if args.sweep:
            print()
            print(render_sweep(result["sweep"]))
        print(f"{out / 'evaluation.json'}: kept from the finished run of the same command (manifest.json); pass "
              "--overwrite to run it again" if reused else f"wrote {out / 'evaluation.json'}")
    return EXIT_FAILED if result["violations"] else EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from certify.reports.report import write_report

    md, page, js = write_report(Path(args.directory))
    print(json.dumps({"html": str(page), "markdown": str(md), "json": str(js)}) if args.json else f"wrote {page}, {md.name} and {js.name}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="certify", description="Certified explanations for PyTorch classifiers.")
    parser.add_argument("--version", action="version", version=f"certify {certify.__version__}")
    parser.add_argument("--debug", action="store_true", default=False,
                        help=f"print the traceback of an internal error (also: {DEBUG_ENV}=1)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help=f"print the traceback of an internal error (also: {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    demo = add("demo", help="explain, certify and report on the embedded default model")
    demo.add_argument("--out", default="demo-output", help="output directory (default: demo-output)")
    demo.add_argument("--quick", action="store_true", help="fewer examples and samples (about a minute)")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument("--overwrite", action="store_true", help=("replace the run in --out (deletes only the files its manifest.json lists); without it, the same "
                      "command resumes an interrupted run there or does nothing after a finished one, and another "
                      "command or a folder of unlisted files is refused"))
    demo.set_defaults(run=_cmd_demo)

    check = add("check", help="run the theorem checks and write the theorem table")
    check.add_argument("--quick", action="store_true", help="fewer cases per theorem")
    check.add_argument("--only", nargs="+", metavar="ID", help="run only these theorem ids")
    check.add_argument("--out", default="reports", help="directory for THEOREMS.md/.json (default: reports)")
    check.add_argument("--json", action="store_true", help="print the results as JSON")
    check.add_argument("--overwrite", action="store_true", help=("replace the run in --out (deletes only the files its manifest.json lists); without it, the same "
                      "command resumes an interrupted run there or does nothing after a finished one, and another "
                      "command or a folder of unlisted files is refused"))
    check.set_defaults(run=_cmd_check)

    explain = add("explain", help="explain one input and write its certificate")
    explain.add_argument("--model", required=True, help="zoo name (zoo:NAME), ONNX file, TorchScript file or module:callable")
    explain.add_argument("--method", required=True, help="explanation method (gradient, integrated-gradients, smoothgrad, moreaugrad, ...)")
    source = explain.add_mutually_exclusive_group()
    source.add_argument("--input", help="one input as .npy or .pt (with or without the batch dimension), or a VNN-LIB "
                        "property (.vnnlib: its box's centre image, and its label as --target)")
    source.add_argument("--dataset", help="embedded data set to take the input from (default: the zoo model's)")
    explain.add_argument("--index", type=int, default=0, help="index into the data set's test split (default 0)")
    explain.add_argument("--target", type=int, default=None, help="class to explain (default: predicted)")
    explain.add_argument("--param", type=_param, action="append", metavar="KEY=VALUE", help="method parameter, repeatable (e.g. rho=0.3)")
    explain.add_argument("--eps", type=_radius, default=0.1, help="L2 radius of the stability claims (default 0.1)")
    explain.add_argument("--topk", type=int, default=None, help="k of the top-k claim (default 10%% of the features)")
    explain.add_argument("--input-shape", type=_shape, metavar="C,H,W", help="per-example input shape to reshape --input "
                         "to, for a model that records none (module:callable, TorchScript; ONNX models record theirs)")
    explain.add_argument("--out", required=True, help="certificate file to write (JSON)")
    explain.add_argument("--json", action="store_true", help="print the certificate, each claim with \"vacuous\" "
                         "(why it certifies nothing, or null; not in the file written)")
    explain.set_defaults(run=_cmd_explain)

    verify = add("verify", help="re-check a certificate: exit 0 valid, 1 a claim fails, 2 unusable input, "
                            "75 a valid property certificate whose answer is unknown, or a prox certificate that is undecided")
    verify.add_argument("certificate", nargs="?", help="certificate file (JSON)")
    verify.add_argument("--model", help="model SPEC (default: the one recorded in the certificate)")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.add_argument("--run-model-code", action="store_true",
                        help="load a model that the certificate (or store) names by Python code (module:callable); "
                             "without it such a certificate is refused (exit 2): its code would run in the checker")
    add_store_option(verify)
    verify.set_defaults(run=_cmd_verify)

    vprop = add("verify-property", help="decide a VNN-LIB property: holds (certified), violated (counterexample) or unknown",
                           description="Exit 0 holds, 1 violated, 75 unknown within the time limit.")
    vprop.add_argument("model", help="model SPEC (an ONNX file, zoo name, TorchScript file, module:callable)")
    vprop.add_argument("property", help="VNN-LIB file (input box, output constraint)")
    vprop.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    vprop.add_argument("--method", choices=("crown", "alpha-crown", "bab"), default="bab",
                       help="CROWN only, or CROWN then alpha-CROWN, or CROWN then branch and bound on ReLU splits "
                       "with optimised slopes and split multipliers (default bab)")
    vprop.add_argument("--counterexample", metavar="FILE.npy", help="write a counterexample found here")
    vprop.add_argument("--seed", type=int, default=0, help="attack seed (default 0)")
    vprop.add_argument("--input-shape", type=_shape, metavar="C,H,W", help="per-example input shape the property's flat "
                       "inputs X_0.. are reshaped to (row-major), for a model that records none (module:callable, "
                       "TorchScript; ONNX models record theirs); default: flat")
    vprop.add_argument("--out", metavar="CERT.json", help="write the answer's certificate (holds: the split-tree "
                       "witness; violated: the counterexample; unknown: the reason), re-checkable by `certify verify`")
    vprop.add_argument("--json", action="store_true", help="print the result as JSON")
    vprop.set_defaults(run=_cmd_verify_property)

    prox = add("prox", help="is a denoiser a proximal operator? exit 0 certified prox, 1 certified not a prox, 75 undecided",
               description="A certificate of what is proven about a denoiser f: for a learned proximal network, the "
               "structural proof (psi convex, so f = grad psi is a prox); for any other denoiser, a cycle on which f is not "
               "cyclically monotone (a proof that it is not a prox), and sampled evidence (Jacobian symmetry and "
               "positive semi-definiteness, cyclic monotonicity) with an adversarial search. Exit 0 prox, 1 not a prox, "
               "75 undecided.")
    prox.add_argument("--model", required=True, help="denoiser SPEC: an inverse-problem zoo name (lpn-digits-0.1, "
                      "mlp-digits-0.1, ...) or a model SPEC (ONNX, TorchScript, module:callable)")
    prox.add_argument("--data", help="clean inputs the evidence is sampled around: digits, mnist, or a .npy/.pt file "
                      "[N, ...] (default by the denoiser's size)")
    prox.add_argument("--sigma", type=_positive("sigma"), default=0.1, help="noise added to the clean inputs (default 0.1)")
    prox.add_argument("--points", type=int, default=16, help="sampled points (default 16)")
    prox.add_argument("--thorough", action="store_true", help="a longer adversarial search and more cycles")
    prox.add_argument("--input-shape", type=_shape, metavar="C,H,W", help="shape of one input for a denoiser that "
                      "does not take flat inputs")
    prox.add_argument("--seed", type=_seed, default=0)
    prox.add_argument("--out", metavar="CERT.json", help="write the prox certificate (re-check with certify verify)")
    prox.add_argument("--json", action="store_true", help="print the certificate as JSON")
    prox.set_defaults(run=_cmd_prox)

    timp = add("test-importance", help="SHAP-XRT: test whether each region of one input matters to the model, with "
               "p-values the checker recomputes",
               description="For every region j of one input, the SHAP-XRT randomisation test (Teneggi et al., TMLR 2023) "
               "of H0: holding j at x (in the context C) changes nothing in law; p = (1 + #{k: T~_k >= T})/(K + 1) is "
               "valid under H0 for the sampler's law. Writes an importance-test certificate whose p-values `certify "
               "verify` recomputes from the seeds. Exit 0.")
    timp.add_argument("--model", required=True, help="model SPEC (zoo name, ONNX, TorchScript, module:callable)")
    tsource = timp.add_mutually_exclusive_group()
    tsource.add_argument("--input", help="one input as .npy or .pt (with or without the batch dimension)")
    tsource.add_argument("--dataset", help="embedded data set to take the input and reference from (default: the zoo model's)")
    timp.add_argument("--index", type=int, default=0, help="index into the data set's test split (default 0)")
    timp.add_argument("--target", type=int, default=None, help="class scored (default: predicted)")
    timp.add_argument("--regions", default="quadrants", help="quadrants (default), tile:S (square tiles of side S) or "
                      "features (every feature its own region)")
    timp.add_argument("--context", choices=("empty", "others"), default="empty", help="C: the empty set (default; "
                      "j alone against the reference) or the other regions held at x")
    timp.add_argument("--sampler", choices=("regions", "joint", "features"), default="regions",
                      help="the law of the free features: each region from its own reference row (default), one "
                      "whole reference row per draw, or each feature from its own row")
    timp.add_argument("--reference", default="train", help="reference rows: train (default) or test split of the "
                      "data set, or a .npy/.pt file [R, ...]")
    timp.add_argument("--reference-rows", type=int, default=512, help="use the first R reference rows (default 512)")
    timp.add_argument("--score", choices=("probability", "logit", "output"), default="probability",
                      help="f: the target's softmax probability (default), its logit, or a single-output model's output")
    timp.add_argument("--k", type=int, default=99, help="null statistics K (default 99: p in steps of 0.01)")
    timp.add_argument("--m", type=int, default=16, help="draws per statistic M (default 16)")
    timp.add_argument("--alpha", type=float, default=0.05, help="level of each test (default 0.05)")
    timp.add_argument("--seed", type=_seed, default=0)
    timp.add_argument("--input-shape", type=_shape, metavar="C,H,W", help="per-example input shape for a model that "
                      "records none")
    timp.add_argument("--out", metavar="CERT.json", help="write the importance-test certificate (re-check with certify verify)")
    timp.add_argument("--json", action="store_true", help="print the certificate as JSON")
    timp.set_defaults(run=_cmd_test_importance)

    evaluate = add("evaluate", help="robustness study: metrics under random and adversarial perturbations vs certificates")
    evaluate.add_argument("--model", required=True, help="model SPEC")
    evaluate.add_argument("--dataset", help="embedded data set (default: the zoo model's)")
    evaluate.add_argument("--n", type=int, default=32, help="number of test inputs (default 32)")
    evaluate.add_argument("--eps", type=_radius, nargs="+", default=[0.1, 0.25, 0.5, 1.0], help="L2 radii")
    evaluate.add_argument("--methods", nargs="+", default=["gradient", "integrated-gradients", "smoothgrad", "moreaugrad", "sparse-moreaugrad"],
                          help="method presets (default: the gradient baselines and both MoreauGrad variants; also "
                               "lagrange-dual, sparsified-smoothgrad, relex, deeplift, kernel-shap, lime, occlusion: "
                               "attacked by a gradient-free random search)")
    evaluate.add_argument("--k", type=float, default=0.2, help="top-k as a fraction of the features (default 0.2)")
    evaluate.add_argument("--steps", type=int, default=20, help="attack steps (default 20)")
    evaluate.add_argument("--restarts", type=int, default=2, help="attack restarts (default 2)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--search-draws", type=int, default=8,
                          help="random points per input of the gradient-free search (default 8)")
    evaluate.add_argument("--metrics", action="store_true",
                          help="also deletion / insertion AUC, infidelity, max-sensitivity, corruptions, time, memory and "
                               "accuracy under FGSM / PGD")
    evaluate.add_argument("--sweep", action="store_true",
                          help="also the parameter sweep (MoreauGrad's rho and eta, SmoothGrad's sigma)")
    evaluate.add_argument("--out", default="evaluation-output", help="directory for evaluation.json")
    evaluate.add_argument("--json", action="store_true", help="print the results as JSON")
    evaluate.add_argument("--overwrite", action="store_true", help=("replace the run in --out (deletes only the files its manifest.json lists); without it, the same "
                      "command resumes an interrupted run there or does nothing after a finished one, and another "
                      "command or a folder of unlisted files is refused"))
    evaluate.set_defaults(run=_cmd_evaluate)

    report = add("report", help="rebuild the HTML/Markdown/JSON report from a run's artefacts")
    report.add_argument("directory", help="output directory of `certify demo` (summary.json, evaluation.json, ...)")
    report.add_argument("--json", action="store_true", help="print the written paths as JSON")
    report.set_defaults(run=_cmd_report)

    add_batch_parsers(add)  # batch, export (certify.batch.cli)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code (module docstring). A path the operating system refuses (a name
    too long, no permission) is a usage error (64) naming it, and so is running out of memory (a parameter that
    asks for more work than fits, e.g. n_steps or samples); any other exception the package did not raise on
    purpose is an internal error: exit 70 with one line naming it (the traceback with --debug or
    CERTIFY_DEBUG=1), never 1, which `verify-property` and `verify` give their own meanings; Ctrl-C exits 130.
    With --json, a failure also prints one JSON document {"error", "exit_code"} on stdout."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)  # argparse exits 64 itself (_Parser.error); --help and --version 0
        with interruptible(final=True):  # a Ctrl-C swallowed by a gc callback is raised again at the next step
            return int(args.run(args))
    except CertifyError as exc:
        return _fail(args, exc.exit_code, f"error: {exc}")
    except KeyboardInterrupt:
        return _fail(args, EXIT_INTERRUPTED, "interrupted")
    except BrokenPipeError:  # the reader closed the pipe (e.g. `| head`): stop quietly, never a failure code
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PIPE
    except OSError as exc:
        if exc.filename is None:  # not about a path: handled as an internal error below
            return _internal_error(args, argv, exc)
        # a path given (or derived from one given) that the system refuses: a name too long, no permission, ...
        return _fail(args, EXIT_USAGE, f"error: cannot use {str(exc.filename)[:200]}: {exc.strerror}")
    except Exception as exc:  # noqa: BLE001 - every other exception is a bug, reported as one (exit 70)
        if _out_of_memory(exc):
            text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            return _fail(args, EXIT_USAGE, f"error: out of memory ({text}); lower the work a parameter asks for "
                                           "(n_steps, samples, a batch) or give a smaller input")
        return _internal_error(args, argv, exc)


def _out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch's CPU allocator failing ("can't allocate memory") or torch.OutOfMemoryError (CUDA)."""
    return (isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
            or (isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)))


def _fail(args: argparse.Namespace | None, code: int, message: str) -> int:
    """One line `certify CMD: MESSAGE` on stderr, and with --json one JSON document on stdout; returns `code`."""
    print(f"{_prog(args)}: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": message.removeprefix("error: "), "exit_code": code}))
    return code


def _internal_error(args: argparse.Namespace | None, argv: list[str], exc: Exception) -> int:
    """Exit 70: one line naming the unexpected exception, and the traceback with --debug or CERTIFY_DEBUG=1."""
    debug = getattr(args, "debug", "--debug" in argv) or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return _fail(args, EXIT_INTERNAL, f"internal error: {type(exc).__name__}{': ' + text if text else ''} -- this is a "
                 f"bug in certify {certify.__version__}; please report it"
                 + ("" if debug else f" (rerun with --debug or {DEBUG_ENV}=1 for the traceback)"))


def _prog(args: argparse.Namespace | None) -> str:
    """`certify COMMAND` for messages, or `certify` before the command line is parsed."""
    return f"certify {args.command}" if args is not None else "certify"


if __name__ == "__main__":
    sys.exit(main())
