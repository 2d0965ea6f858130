"""Benchmark of the Lagrange-dual explainer's minimal-perturbation solver (issue 5).

1. Tiny ReLU nets (6-12-12-3, ANCHORS 4.10) where the MILP gives the exact r* (L-inf and L1, domain [0, 1]^6):
   median relative excess of the found radius over r*, success rate, fraction within 2% of r*, gradient
   evaluations and time per batched explanation, default ("fmn") vs the proposal's Algorithm 1 ("gda").
   Target: default within 2% of the exact r* on >= 90% of the inputs.
2. digits-relu-mlp (test subset, L2, domain [0, 1]^64): success rate, median radius, median excess over the
   better of the two methods, certified CROWN lower bound and the gap, cost.

Run: .venv/bin/python benchmarks/lagrange_dual.py [--quick]
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from certify.explain.minimal_perturbation import minimal_perturbation
from certify.bounds.milp import exact_minimal_radius
from certify.bounds.network import from_module
from certify.bounds.radius import certified_radius
from certify.models import zoo
from proofs_checks.ld_sound_radius import tiny_inputs, tiny_relu_net

TARGET_FRACTION, TARGET_EXCESS = 0.90, 0.02
METHODS = {"default (fmn)": {"method": "fmn"}, "gda (Algorithm 1)": {"method": "gda", "restarts": 1}}


def run(model, x, target, p, domain, options, max_iter):
    start = time.perf_counter()
    result = minimal_perturbation(model, x, target, p=p, domain=domain, max_iter=max_iter, **options)
    return result, time.perf_counter() - start


def tiny_nets(nets: int, per_net: int, max_iter: int) -> bool:
    print(f"== tiny ReLU nets 6-12-12-3: {nets} nets x {per_net} inputs, domain [0,1]^6, max_iter={max_iter}")
    ok = True
    for p in (math.inf, 1.0):
        exact, found, seconds, evaluations = [], {m: [] for m in METHODS}, {m: 0.0 for m in METHODS}, {m: 0 for m in METHODS}
        for seed in range(nets):
            net, x = tiny_relu_net(seed), tiny_inputs(seed, per_net)
            target = net(x).argmax(1)
            exact.append(exact_minimal_radius(from_module(net, (6,)), x, target, p, domain=(torch.zeros(6), torch.ones(6))).value)
            for name, options in METHODS.items():
                result, elapsed = run(net, x, target, p, (0.0, 1.0), options, max_iter)
                found[name].append(result.norm)
                seconds[name] += elapsed
                evaluations[name] += int(result.gradient_evaluations.sum())
        r_star = torch.cat(exact).numpy()
        print(f"-- p = {p}: exact r* median {np.median(r_star):.4g} (MILP, HiGHS)")
        for name in METHODS:
            norms = torch.cat(found[name]).numpy()
            success = np.isfinite(norms)
            excess = np.where(success, norms / r_star - 1.0, np.inf)
            within = float(np.mean(excess <= TARGET_EXCESS))
            count = r_star.size
            print(
                f"   {name:18s} success {success.mean():.0%}  median excess {np.median(excess):.2e}  "
                f"within 2%: {within:.0%}  grad evals/example {evaluations[name] / count:.0f}  "
                f"time/batch of {per_net}: {seconds[name] / nets:.2f} s  sound (>= r*): {bool(np.all(norms >= r_star - 1e-7))}"
            )
            if name.startswith("default"):
                verdict = within >= TARGET_FRACTION
                ok &= verdict
                print(f"   target: default within 2% of r* on >= 90% of inputs -> {within:.0%}: {'MET' if verdict else 'NOT MET'}")
    return ok


def digits(count: int, max_iter: int) -> None:
    model, data = zoo.load("digits-relu-mlp")
    x = data.x_test[:count]
    target = model(x).argmax(1)
    print(f"== digits-relu-mlp: {count} test inputs, L2, domain [0,1]^64, max_iter={max_iter}")
    results = {name: run(model, x, target, 2.0, data.domain, options, max_iter) for name, options in METHODS.items()}
    best = torch.minimum(*[r.norm for r, _ in results.values()]).numpy()
    net = from_module(model, data.input_shape)
    start = time.perf_counter()
    lower = certified_radius(net, x, target, 2, method="crown", domain=data.domain).value.numpy()
    crown_seconds = time.perf_counter() - start
    for name, (result, elapsed) in results.items():
        norms = result.norm.numpy()
        success = np.isfinite(norms)
        print(
            f"   {name:18s} success {success.mean():.0%}  median radius {np.median(norms):.4g}  "
            f"median excess over best found {np.median(norms / best - 1):.2e}  grad evals/example "
            f"{result.gradient_evaluations.double().mean():.0f}  time/batch: {elapsed:.2f} s"
        )
    default = results["default (fmn)"][0].norm.numpy()
    print(f"   certified CROWN lower bound median {np.median(lower):.4g} ({crown_seconds:.1f} s); "
          f"median gap (default upper - lower) {np.median(default - lower):.4g}, "
          f"median ratio lower/upper {np.median(lower / default):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small batches: one thread avoids oversubscription on shared CPUs
    met = tiny_nets(nets=2 if args.quick else 4, per_net=4 if args.quick else 8, max_iter=500)
    digits(count=8 if args.quick else 32, max_iter=500)
    print(f"TARGET {'MET' if met else 'NOT MET'}")


if __name__ == "__main__":
    main()
