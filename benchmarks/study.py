"""The acceptance table of issue 16 (item 4): `certify evaluate` on digits-softplus-mlp and digits-softplus-cnn with
every method preset and every metric, each cell a mean with its 95% confidence interval, Sparsified SmoothGrad's
certified top-k next to MoreauGrad's, the verdicts on the papers' claims and the parameter sweep.

Equivalent command per model:
    certify evaluate --model zoo:MODEL --n 64 --eps 0.1 0.25 1.0 --steps 10 --restarts 1 --methods <every preset> --metrics --sweep

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/study.py [--n 64] [--models ...] [--out study-output]
(on two shared CPU cores at n = 64: about 4 minutes for the MLP, 25 for the CNN; writes OUT/MODEL/evaluation.json).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from certify.evaluation import STUDIED, StudyConfig, SweepConfig, run_study, run_sweep
from certify.evaluation.table import render, render_sweep
from certify.models import zoo

MODELS = ("digits-softplus-mlp", "digits-softplus-cnn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="test inputs per model (default 64; verdicts need >= 30)")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--methods", nargs="+", default=list(STUDIED))
    parser.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.25, 1.0])
    parser.add_argument("--out", default="study-output")
    args = parser.parse_args()
    for name in args.models:
        model, data = zoo.load(name)
        start = time.perf_counter()
        result = run_study(model, data, name, args.methods,
                           StudyConfig(n=args.n, eps=tuple(args.eps), steps=10, restarts=1, metrics=True))
        result["sweep"] = run_sweep(model, data, SweepConfig(n=min(args.n, 32), eps=max(args.eps)))
        out = Path(args.out) / name
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(json.dumps(result, indent=1))
        print(f"== {name} ({time.perf_counter() - start:.0f} s)")
        print(render(result))
        print()
        print(render_sweep(result["sweep"]))
        print()


if __name__ == "__main__":
    main()
