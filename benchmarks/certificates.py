"""Certificate generation vs independent verification time (issue: verification >= 10x faster).

For each method preset on each model: the time to explain and certify N examples (batched), and the time
to re-check the same N certificates with the independent checker, per certificate; prints the ratio.

    python3 benchmarks/certificates.py [--n 8] [--model NAME ...]
"""
from __future__ import annotations

import argparse
import time

import torch

from certify.certificates.builder import certify_explanations
from certify.certificates.checker import verify_certificate
from certify.explain.registry import PRESETS, make_preset
from certify.models import zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--model", action="append", help="zoo model(s) (default: the softplus and ReLU digits MLPs)")
    args = parser.parse_args()
    print(f"{args.n} examples per method, torch threads {torch.get_num_threads()}")
    print(f"{'model':20s} {'method':22s} {'generate s/cert':>16s} {'verify s/cert':>14s} {'ratio':>8s}  target >= 10")
    for name in args.model or ["digits-softplus-mlp", "digits-relu-mlp"]:
        model, data = zoo.load(name)
        x = data.x_test[: args.n]
        for label in PRESETS:
            explainer = make_preset(label, model, domain=data.domain)
            certify_explanations(explainer, x[:1])  # warm-up
            start = time.perf_counter()
            certs = certify_explanations(explainer, x, model_spec=name)
            generate = (time.perf_counter() - start) / len(certs)
            start = time.perf_counter()
            valid = [verify_certificate(c, model).valid for c in certs]
            verify = (time.perf_counter() - start) / len(certs)
            status = "met" if generate / verify >= 10 else "MISSED"
            print(f"{name:20s} {label:22s} {generate:16.4f} {verify:14.4f} {generate / verify:8.1f}  {status}; {sum(valid)}/{len(valid)} valid")


if __name__ == "__main__":
    main()
