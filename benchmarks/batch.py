"""Throughput of `certify batch` (issue 17): certificates per second per method on 1 and 2 workers, the local
process pool against Ray (started locally), on digits inputs with the default zoo model.

Each measurement is one `run_batch` of `--inputs` digits inputs x one method into a fresh store, on an executor
already started and warmed up (one task per method first), timed in the parent from the first task submitted to
the last certificate committed: the rate a long run sustains. Executor start-up (pool or Ray) is timed apart.
Rounds are interleaved (every executor and worker count once per round, the order reversed on odd rounds), and
each figure is the median (min-max) over the rounds; ratios are of the medians.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/batch.py [--inputs 96] [--rounds 3] [--chunk 16]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _timing import spread

from certify.batch.executors import make_executor
from certify.batch.runner import BatchConfig, dataset_inputs, run_batch
from certify.batch.store import CertificateStore

MODEL = "zoo:digits-softplus-mlp"
METHODS = {"gradient": {}, "smoothgrad": {}, "moreaugrad": {"rho": 0.3}}  # moreaugrad at the preset's rho


def measure(kind: str, workers: int, inputs, chunk: int, folder: Path, results: dict) -> None:
    start = time.perf_counter()
    with make_executor(kind, workers) as executor:
        warm = dataset_inputs("digits-flat", "train", chunk * workers)
        for method, params in METHODS.items():
            config = BatchConfig(MODEL, [method], {method: params}, chunk=chunk)
            if method == next(iter(METHODS)):
                results.setdefault((kind, workers, "start-up s"), []).append(time.perf_counter() - start)
            with CertificateStore(folder / f"warm-{kind}-{workers}-{method}-{time.time_ns()}.sqlite") as store:
                run_batch(config, warm, store, executor, "warm-up", progress=False)
            with CertificateStore(folder / f"{kind}-{workers}-{method}-{time.time_ns()}.sqlite") as store:
                t = time.perf_counter()
                summary = run_batch(config, inputs, store, executor, "benchmark", progress=False)
                seconds = time.perf_counter() - t
            assert summary.computed == len(inputs.ids)
            results.setdefault((kind, workers, method), []).append(summary.computed / seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=16)
    args = parser.parse_args()
    inputs = dataset_inputs("digits-flat", "test", args.inputs)
    setups = [(kind, workers) for kind in ("process", "ray") for workers in (1, 2)]
    results: dict[tuple, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for kind, workers in setups if r % 2 == 0 else reversed(setups):
                measure(kind, workers, inputs, args.chunk, Path(tmp), results)
            print(f"round {r + 1} of {args.rounds} done", flush=True)
    print(f"\ncertificates per second ({args.inputs} inputs, chunk {args.chunk}; median (min-max) over {args.rounds} rounds)")
    print(f"{'method':12s} {'executor':8s} {'1 worker':>22s} {'2 workers':>22s} {'2 / 1':>6s}")
    for method in [*METHODS, "start-up s"]:
        for kind in ("process", "ray"):
            one, two = results[(kind, 1, method)], results[(kind, 2, method)]
            print(f"{method:12s} {kind:8s} {spread(one, digits=2):>22s} {spread(two, digits=2):>22s} "
                  f"{statistics.median(two) / statistics.median(one):6.2f}")
    print("\nray / process (median rates; start-up: seconds)")
    for method in [*METHODS, "start-up s"]:
        ratios = [statistics.median(results[("ray", w, method)]) / statistics.median(results[("process", w, method)])
                  for w in (1, 2)]
        print(f"{method:12s} 1 worker {ratios[0]:5.2f}   2 workers {ratios[1]:5.2f}")


if __name__ == "__main__":
    main()
