"""Generation vs independent verification time of the certificates whose generation searches (issue 18, 2b).

For each zoo model and each searching method (MoreauGrad, the Lagrange dual), every round, interleaved:
`certify_explanations` of N examples (batched; seconds per certificate), then `verify_certificate` of the same N
certificates (seconds per certificate; the checker's translation cache is emptied first, so the round pays one
translation per model and input shape, as `certify verify --store` of a batch does). Prints median (min-max) over
the rounds and the ratio of the medians; the target is generation / verification >= 10. With --cli, the cold
`certify verify FILE` of one certificate (a fresh process, its wall time) against one certificate's generation
in process.

    python3 benchmarks/verify_speed.py [--n 8] [--rounds 3] [--model NAME ...] [--method LABEL ...] [--cli]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _timing import certify_command, spread, wall

from certify.certificates import semantics
from certify.certificates.builder import certify_explanations
from certify.certificates.checker import verify_certificate
from certify.explain.registry import make_preset
from certify.models import zoo

TARGET = 10.0


def cold_verify(path: Path) -> float:
    """Wall seconds of `certify verify PATH` in a fresh process (OMP_NUM_THREADS=1)."""
    return wall([*certify_command(), "verify", str(path)], {**os.environ, "OMP_NUM_THREADS": "1"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="certificates per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", action="append", help="zoo model(s) (default: the softplus and ReLU digits MLPs)")
    parser.add_argument("--method", action="append", help="preset(s) (default: moreaugrad, lagrange-dual)")
    parser.add_argument("--cli", action="store_true", help="also time the cold `certify verify` of one certificate")
    args = parser.parse_args()
    print(f"{args.n} certificates per round, {args.rounds} interleaved rounds, torch threads {torch.get_num_threads()}")
    header = f"{'model':20s} {'method':14s} {'generate s/cert':>26s} {'verify s/cert':>26s} {'ratio':>7s}"
    print(header + ("  cold CLI verify s (ratio)" if args.cli else ""))
    for name in args.model or ["digits-softplus-mlp", "digits-relu-mlp"]:
        model, data = zoo.load(name)
        x = data.x_test[: args.n]
        for label in args.method or ["moreaugrad", "lagrange-dual"]:
            explainer = make_preset(label, model, domain=data.domain)
            certify_explanations(explainer, x[:1], model_spec=name)  # warm-up
            generate, verify, cold = [], [], []
            valid = True
            with tempfile.TemporaryDirectory() as tmp:
                for _ in range(args.rounds):
                    start = time.perf_counter()
                    certs = certify_explanations(explainer, x, model_spec=name)
                    generate.append((time.perf_counter() - start) / len(certs))
                    semantics.clear_translation_cache()
                    start = time.perf_counter()
                    valid &= all(verify_certificate(c, model).valid for c in certs)
                    verify.append((time.perf_counter() - start) / len(certs))
                    if args.cli:
                        path = Path(tmp) / f"{label}.json"
                        certs[0].write(path)
                        cold.append(cold_verify(path))
            ratio = statistics.median(generate) / statistics.median(verify)
            line = (f"{name:20s} {label:14s} {spread(generate, digits=4):>26s} {spread(verify, digits=4):>26s} {ratio:7.1f}"
                    f"  {'met' if ratio >= TARGET else 'MISSED'}{'' if valid else ' (A CERTIFICATE DID NOT VERIFY)'}")
            if args.cli:
                line += f"  {spread(cold, digits=4)} ({statistics.median(generate) / statistics.median(cold):.2f})"
            print(line)


if __name__ == "__main__":
    main()
