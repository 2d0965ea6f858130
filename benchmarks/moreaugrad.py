"""MoreauGrad benchmark (issue 3): on the digits softplus MLP and CNN, batch 128, CPU.

(a) overhead ratio = solver wall time / (gradient evaluations x time of one batched gradient), with every
    example kept active for a fixed number of iterations (tol below reach), accelerated method;   target <= 1.10
(b) per-explanation time, batched vs a per-example loop over the same solver (default tol 1e-5);  target >= 20x
(c) gradient evaluations per example to reach residual 1e-6, accelerated vs fixed-step at the paper's
    defaults (step 0.1, rho = 1), in float64 (float32 rounding floors the residual near 1e-6);     target >= 3x

Usage: python benchmarks/moreaugrad.py [--threads 1] [--loop-examples 16]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from certify.explain import MoreauGrad
from certify.models import zoo
from certify.scores import score_gradients

BATCH = 128


def _time(fn, repeats: int = 1) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def overhead_ratio(model, x, target, iterations: int = 100) -> tuple[float, float, float]:
    t_grad = _time(lambda: score_gradients(model, x, target), repeats=30)
    solver = MoreauGrad(model, rho=1.0, tol=1e-300, max_iter=iterations)
    wall = _time(lambda: solver.explain(x, target), repeats=3)
    return wall / ((iterations + 1) * t_grad), wall, t_grad


def batched_vs_loop(model, x, target, loop_examples: int) -> tuple[float, float]:
    solver = MoreauGrad(model, rho=1.0)
    batched = _time(lambda: solver.explain(x, target)) / x.shape[0]
    start = time.perf_counter()
    for i in range(loop_examples):
        solver.explain(x[i : i + 1], target[i : i + 1])
    single = (time.perf_counter() - start) / loop_examples
    return batched, single


def evaluations_to_tolerance(model, x, target) -> tuple[float, float, float, float]:
    model64, x64 = copy.deepcopy(model).double(), x.double()
    runs = {}
    for method, step in (("accelerated", None), ("fixed-step", 0.1)):
        d = MoreauGrad(model64, rho=1.0, step=step, method=method, tol=1e-6, max_iter=5000).explain(x64, target).diagnostics
        runs[method] = (float(d["gradient_evaluations"].double().mean()), float(d["converged"].double().mean()))
    return runs["accelerated"] + runs["fixed-step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    parser.add_argument("--loop-examples", type=int, default=16, help="examples timed in the per-example loop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {BATCH}, CPU")
    for name in ("digits-softplus-mlp", "digits-softplus-cnn"):
        model, data = zoo.load(name)
        x = data.x_test[:BATCH]
        with torch.no_grad():
            target = model(x).argmax(dim=1)
        ratio, wall, t_grad = overhead_ratio(model, x, target)
        batched, single = batched_vs_loop(model, x, target, args.loop_examples)
        acc, acc_conv, fixed, fixed_conv = evaluations_to_tolerance(model, x, target)
        print(f"\n{name} (input {tuple(x.shape[1:])})")
        print(f"  (a) overhead ratio {ratio:.3f}  (target <= 1.10: {'met' if ratio <= 1.10 else 'MISSED'}); "
              f"101 iterations {wall * 1e3:.1f} ms, one batched gradient {t_grad * 1e3:.3f} ms")
        print(f"  (b) per explanation: batched {batched * 1e3:.3f} ms, per-example loop {single * 1e3:.2f} ms, "
              f"speed-up {single / batched:.1f}x  (target >= 20x: {'met' if single / batched >= 20 else 'MISSED'})")
        print(f"  (c) gradient evaluations to residual 1e-6: accelerated {acc:.1f} (converged {acc_conv:.0%}), "
              f"fixed-step {fixed:.1f} (converged {fixed_conv:.0%}), ratio {fixed / acc:.1f}x  "
              f"(target >= 3x: {'met' if fixed / acc >= 3 else 'MISSED'})")


if __name__ == "__main__":
    main()
