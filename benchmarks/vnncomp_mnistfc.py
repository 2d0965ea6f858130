"""The VNN-COMP 2021 mnistfc benchmark (shared/data/vnncomp2021-mnistfc, beside the repository clone): every
(network, property) pair of mnistfc_instances.csv decided by `certify verify-property`'s logic
(certify.attacks.property.verify_property) within a time limit, and a table per network:

    holds (certified by CROWN / alpha-CROWN / branch and bound, with a witness) | violated (counterexample from
    PGD or proposed by branch and bound, re-evaluated in the model's dtype and in float64) | unknown, seconds per
    instance (median, max) and the size of the witnesses of the certified pairs (median, max bytes).

Each answer is the property certificate's, as `certify verify-property` prints it: "holds" and "violated" count only
when the independent checker (certify.certificates.checker) re-derives the certificate's claim from its witness or
counterexample (an answer it rejects counts as unknown; the seconds include issuing and re-checking).

Guard: after every "holds" a fresh attack with another seed looks for a counterexample again; a pair with
both is printed as CONTRADICTION (a soundness bug) and counted apart, never as certified.

The full run (the issue-12 acceptance: 90 pairs, 60 s each, one process, one thread per process on the 2-core
machine; about 40 minutes, most of it the 60 s unknowns):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vnncomp_mnistfc.py --timeout 60 --json mnistfc.json

A short check (the first 3 pairs of each network, 20 s each):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vnncomp_mnistfc.py --instances 3 --timeout 20

Options: [--nets 256x2] [--props prop_1_ prop_2_] [--method bab|crown|alpha-crown] [--guard-seconds 2]
[--device cuda] (the bounds, the search and the attacks on a GPU; the certificates are re-checked on the CPU by the
independent checker as always, and their seconds are counted).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from certify.attacks.property import pgd_counterexample, verify_property
from certify.bounds.network import from_module
from certify.bounds.property import witness_bytes
from certify.certificates.issuers.property import checked_property_certificate
from certify.models.spec import load_model
from certify.models.vnnlib import parse_vnnlib

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vnncomp2021-mnistfc"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per pair (default 60; the csv's limit if lower)")
    parser.add_argument("--nets", nargs="*", default=[], help="substrings selecting networks (default all)")
    parser.add_argument("--props", nargs="*", default=[], help="substrings selecting properties (default all)")
    parser.add_argument("--instances", type=int, default=0, help="only the first N selected pairs of each network (default all)")
    parser.add_argument("--method", choices=("crown", "alpha-crown", "bab"), default="bab",
                        help="crown only; crown then alpha-crown; crown then branch and bound (default)")
    parser.add_argument("--guard-seconds", type=float, default=2.0, help="extra attack after each 'holds' (default 2)")
    parser.add_argument("--json", help="write the per-pair results here")
    parser.add_argument("--data", default=str(DATA), help=f"benchmark folder (default {DATA})")
    parser.add_argument("--device", default="cpu", help="where the bounds and attacks run: cpu (default) or cuda")
    args = parser.parse_args(argv)
    if args.device != "cpu" and not torch.cuda.is_available():
        print(f"--device {args.device}: torch sees no CUDA device", file=sys.stderr)
        return 2
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    data = Path(args.data)
    if not data.is_dir():
        print(f"missing benchmark folder {data}", file=sys.stderr)
        return 2
    methods = {"crown": ("crown",), "alpha-crown": ("crown", "alpha-crown"), "bab": ("crown", "bab")}[args.method]
    with open(data / "mnistfc_instances.csv") as handle:
        pairs = [(n, p, float(t)) for n, p, t in csv.reader(handle) if n.strip()]
    pairs = [(n, p, t) for n, p, t in pairs
             if (not args.nets or any(s in n for s in args.nets)) and (not args.props or any(s in p for s in args.props))]
    if args.instances > 0:
        pairs = [pair for net in dict.fromkeys(n for n, _, _ in pairs) for pair in [q for q in pairs if q[0] == net][:args.instances]]
    models: dict[str, tuple] = {}
    rows = []
    for net_name, prop_name, limit in pairs:
        if net_name not in models:
            model, _ = load_model(str(data / net_name))
            models[net_name] = (model, from_module(model, model.certify_input_shape).to(args.device))
        model, net = models[net_name]
        model.to(args.device)
        prop = parse_vnnlib(data / prop_name)
        timeout = min(args.timeout, limit)
        result = verify_property(model, prop, timeout=timeout, net=net, methods=methods)
        found = result.status
        start = time.perf_counter()
        model.to("cpu")  # the independent checker re-derives the answer on the CPU
        cert, _ = checked_property_certificate(model, prop, result, model.certify_input_shape, args.method, timeout)
        result.seconds += time.perf_counter() - start
        status = cert.answer
        if status != found:
            result.notes.append(f"{found} by {result.method}, but the re-checked certificate answers {status!r}")
        if status == "holds" and args.guard_seconds > 0:
            model.to(args.device)
            point, _ = pgd_counterexample(model, prop, model.certify_input_shape, seconds=args.guard_seconds, seed=12345)
            if point is not None:
                status = "CONTRADICTION"
        margin = "" if result.margin is None else f"{result.margin:+.3g}"
        size = witness_bytes(result.witness) if status == "holds" and result.witness is not None else None
        extra = "" if size is None else f" witness {size} B"
        if status == "unknown":  # how far the search got (its bound is float32 and not certified)
            extra += "".join(f"  [{n}]" for n in result.notes if n.startswith("branch and bound:"))
        print(f"{net_name:22s} {prop_name:22s} {status:13s} {result.method:12s} {margin:>10s} {result.seconds:7.2f} s{extra}", flush=True)
        rows.append({"network": net_name, "property": prop_name, "status": status, "method": result.method,
                     "margin": result.margin, "seconds": result.seconds, "witness_bytes": size, "notes": result.notes})
    print()
    print(f"{'network':22s} {'pairs':>5s} {'certified':>9s} {'violated':>8s} {'unknown':>7s} {'contradiction':>13s} "
          f"{'median s':>8s} {'max s':>6s} {'witness B (median, max)':>24s}")
    groups = [(n, [r for r in rows if r["network"] == n]) for n in dict.fromkeys(r["network"] for r in rows)]
    for net_name, mine in groups + [("all", rows)]:
        count = {s: sum(r["status"] == s for r in mine) for s in ("holds", "violated", "unknown", "CONTRADICTION")}
        secs = [r["seconds"] for r in mine]
        sizes = [r["witness_bytes"] for r in mine if r["witness_bytes"] is not None]
        witness = f"{statistics.median(sizes):.0f}, {max(sizes)}" if sizes else "-"
        print(f"{net_name:22s} {len(mine):5d} {count['holds']:9d} {count['violated']:8d} {count['unknown']:7d} "
              f"{count['CONTRADICTION']:13d} {statistics.median(secs):8.2f} {max(secs):6.1f} {witness:>24s}")
    total = {s: sum(r["status"] == s for r in rows) for s in ("holds", "violated", "unknown", "CONTRADICTION")}
    if args.json:
        Path(args.json).write_text(json.dumps({"timeout": args.timeout, "method": args.method,
                                               "threads": torch.get_num_threads(), "pairs": rows}, indent=1))
    return 1 if total["CONTRADICTION"] else 0


if __name__ == "__main__":
    sys.exit(main())
