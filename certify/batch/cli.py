"""The commands of the certificate store: `certify batch`, `certify export` and `certify verify --store`.

`add_parsers(add)` adds `batch` and `export` to the `certify` command (`add(name, **kwargs)` returns a new
sub-parser, as in `certify.cli.build_parser`); `add_store_option(verify)` adds `--store` to `certify verify`,
whose handler calls `cmd_verify_store`; `certify.cli.main` runs them and maps errors and Ctrl-C to exit codes. Exit codes are `certify.errors`': 0 done
(`verify --store`: every certificate valid), 1 a certificate is invalid or missing, 2 the store is not a
certificate store or is corrupt, 64 usage, 65 invalid input, 66 unsupported, 130 interrupted (committed certificates stay; rerun the same command to resume).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict
from typing import Callable

from certify.errors import EXIT_FAILED, EXIT_OK, UsageError


def _param(text: str) -> tuple[str, str, object]:
    """[METHOD:]KEY=VALUE -> (METHOD or "all", KEY, VALUE), VALUE read as JSON when it parses, else a string."""
    key, sep, value = text.partition("=")
    method, colon, name = key.rpartition(":")
    if not sep or not name or (colon and not method):
        raise argparse.ArgumentTypeError(f"expected [METHOD:]KEY=VALUE, got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return method or "all", name.replace("-", "_"), parsed


def _methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise argparse.ArgumentTypeError(f"expected METHOD[,METHOD...], got {text!r}")
    return methods


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _eps(text: str) -> float:
    from certify.validation import positive_number

    try:
        return positive_number(float(text), "eps")
    except (UsageError, ValueError):
        raise argparse.ArgumentTypeError(f"eps must be a finite number > 0, got {text!r}") from None


def cmd_batch(args: argparse.Namespace) -> int:
    from certify.batch.executors import make_executor
    from certify.batch.runner import BatchConfig, dataset_inputs, directory_inputs, loaded_model, run_batch, validate
    from certify.batch.store import CertificateStore

    params: dict[str, dict] = {}
    for method, key, value in args.param or []:
        params.setdefault(method, {})[key] = value
    config = BatchConfig(args.model, args.methods, params, args.eps, args.topk, args.chunk)
    if args.dataset:
        inputs = dataset_inputs(args.dataset, args.split, args.limit)
    elif args.limit is not None:
        raise UsageError("--limit takes the first examples of --dataset; for --inputs, give a folder with the files")
    else:
        data = loaded_model(args.model)[1]
        inputs = directory_inputs(args.inputs, None if data is None else tuple(data.input_shape))
    validate(config)  # before any executor starts (a local Ray takes seconds)
    with CertificateStore(args.store) as store, make_executor(args.executor, args.workers, args.ray_address) as executor:
        command = shlex.join(["certify", *sys.argv[1:]])
        summary = run_batch(config, inputs, store, executor, command, progress=not args.json)
        total = store.count()
    if args.json:
        print(json.dumps({**asdict(summary), "stored": total}, indent=1))
    else:
        print(f"store {summary.store}: {summary.already_done + summary.computed} of {summary.planned} certificates "
              f"({summary.already_done} already done, {summary.computed} computed now, of which {summary.redone} re-done: "
              f"started by an earlier run and not committed) in {summary.seconds:.1f} s on {summary.workers} "
              f"{summary.executor} worker(s); {total} in the store")
        for method, row in summary.per_method.items():
            if row["certificates"]:
                print(f"  {method:24s} {row['certificates']:6d} certificates, {row['certificates'] / row['seconds']:.2f} "
                      "per worker-second")
    return EXIT_OK


def cmd_verify_store(args: argparse.Namespace) -> int:
    """`certify verify --store PATH [--json]`: exit 0 when every certificate verifies and none is missing, else 1
    (each named)."""
    from certify.batch.verify import verify_store

    report = verify_store(args.store, progress=not args.json, run_model_code=args.run_model_code)
    if args.json:
        print(json.dumps({**asdict(report), "valid_store": report.all_valid}, indent=1))
    else:
        for row in report.invalid:
            print(f"INVALID: {row['input_id']} / {row['method']} {row['params']}: {'; '.join(row['problems'])}")
        for row in report.missing:
            print(f"MISSING: {row['input_id']} / {row['method']} {row['params']}: attempted by a finished run, "
                  "no certificate")
        per = ", ".join(f"{m} {n}" for m, n in sorted(report.per_method.items()))
        print(f"store {report.store}: {report.valid} of {report.certificates} certificates valid" + (f" ({per})" if per else "")
              + (f"; {len(report.missing)} missing" if report.missing else ""))
    return EXIT_OK if report.all_valid else EXIT_FAILED


def cmd_export(args: argparse.Namespace) -> int:
    from certify.batch.store import CertificateStore, export_jsonl, export_parquet

    writers = {".jsonl": export_jsonl, ".parquet": export_parquet}
    suffix = "." + args.out.rpartition(".")[2].lower()
    if suffix not in writers:
        raise UsageError(f"--out {args.out}: the format is taken from the suffix, .jsonl or .parquet")
    with CertificateStore(args.store, create=False) as store:
        n = writers[suffix](store, args.out)
    print(json.dumps({"out": args.out, "certificates": n}) if args.json else f"wrote {n} certificates to {args.out}")
    return EXIT_OK


def add_parsers(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add `batch` and `export` (`add(name, help=...)` returns the new sub-parser)."""
    batch = add("batch", help="certify a whole data set or folder of inputs into an SQLite store; resumable",
                description="Certify every (input, method) not yet in the store, on a local process pool or on Ray, "
                "each certificate committed as soon as it is finished. Killed at any moment, the same command "
                "resumes. Exit 0 done, 64 usage, 65 invalid input, 66 unsupported, 130 interrupted.")
    batch.add_argument("--model", required=True, help="model SPEC (zoo name, ONNX, TorchScript, module:callable)")
    source = batch.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="embedded data set (digits, digits-flat, breast-cancer, ...)")
    source.add_argument("--inputs", metavar="DIR", help="folder of .npy / .pt files, one example each")
    batch.add_argument("--split", choices=("train", "test"), default="test", help="the data set's split (default test)")
    batch.add_argument("--limit", type=_count, help="only the first N examples of the split")
    batch.add_argument("--methods", type=_methods, required=True, metavar="M1,M2,...", help="explanation methods")
    batch.add_argument("--param", type=_param, action="append", metavar="[METHOD:]KEY=VALUE",
                       help="method parameter, repeatable; with METHOD: for that method only (moreaugrad:rho=0.3)")
    batch.add_argument("--eps", type=_eps, default=0.1, help="L2 radius of the stability claims (default 0.1)")
    batch.add_argument("--topk", type=_count, default=None, help="k of the top-k claim (default 10%% of the features)")
    batch.add_argument("--store", required=True, metavar="FILE.sqlite", help="the certificate store (created if missing)")
    batch.add_argument("--workers", type=_count, default=1, help="worker processes (default 1)")
    batch.add_argument("--chunk", type=_count, default=16, help="inputs per task, explained in one batch (default 16)")
    batch.add_argument("--executor", choices=("process", "ray"), default="process",
                       help="local process pool (default) or Ray (started locally unless --ray-address)")
    batch.add_argument("--ray-address", metavar="ADDR", help="a Ray cluster: auto, or ray://HEAD:10001 (Ray Client)")
    batch.add_argument("--json", action="store_true", help="print the run's summary as JSON (no progress bar)")
    batch.set_defaults(run=cmd_batch)

    export = add("export", help="export a certificate store to JSON Lines or Parquet")
    export.add_argument("--store", required=True, metavar="FILE.sqlite", help="the certificate store")
    export.add_argument("--out", required=True, metavar="FILE.jsonl|FILE.parquet",
                        help="output file; .parquet needs pyarrow (the batch extra)")
    export.add_argument("--json", action="store_true", help="print the result as JSON")
    export.set_defaults(run=cmd_export)


def add_store_option(verify: argparse.ArgumentParser) -> None:
    """`certify verify --store FILE.sqlite`: every certificate of a store (`cmd_verify_store`)."""
    verify.add_argument("--store", metavar="FILE.sqlite", help="check every certificate of a certificate store instead "
                        "of one file: exit 0 all valid, 1 some invalid (named)")
