"""SKIT's rejection rates and times (issue 15; Teneggi & Sulam, NeurIPS 2024; ANCHORS 5.4).

Part 1, the synthetic model Z1 ~ N(1,1), Z2 ~ N(-1,1), Z3 = Z1 + N(0,1), Y = sigmoid(b1 Z1 + b2 Z2 Z3 +
b3 Z3) + N(0, 0.01^2), for b = (1, 0, 1) (Z2 is null, marginally and conditionally) and b = (0, 1, 1) (Z1
is null given Z2, Z3 but not marginally): SKIT (Y independent of Z_j) and c-SKIT (Y independent of Z_j
given Z_{-j}, exact Gaussian conditional sampler) for each of Z1, Z2, Z3.

Part 2, semantic concepts of the zoo model "digits-softplus-mlp" (h = its 64 hidden activations, Y-hat =
its probability of a class): concept directions fitted by ridge regression from h to a predicate of the
image (certify.explain.concepts), Z = <c, h>, SKIT of Y-hat independent of Z with streams drawn with
replacement from the 1797 digits (a fresh seeded stream per repetition). Rows: concepts that should matter
("loop" for class 0, "centre_column" for class 1), weaker ones ("ink", "top_half"), a random direction in
h-space (NOT a null: any direction of h carries information about g(h)), and the permuted control (the
concept of an independent draw, so Y-hat is independent of Z: a true null, rate must be <= alpha). e-BH
across the 6 concepts of each class is applied per repetition to the wealths K_T of games played to the
end (stop=False: a wealth stopped at 1/alpha is too small for e-BH's thresholds m/(alpha k)); the column is
the fraction of repetitions in which the concept is an e-BH discovery.

Columns: H0 (whether the null holds, "?" when unknown), rejection rate over the repetitions, median
rejection time in steps (SKIT uses 2 samples per step, c-SKIT 1) among the rejections, and seconds.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/skit_concepts.py [--quick] [--reps 100] [--alpha 0.05]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from certify.explain.concepts import class_probability, concept_directions, digit_predicates, hidden_representation
from certify.explain.concepts import random_directions
from certify.explain.skit import (
    SYNTHETIC_COV,
    SYNTHETIC_MEAN,
    cskit,
    ebh,
    gaussian_conditional_sampler,
    skit,
    synthetic_concepts,
)
from certify.models import zoo


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths))


def synthetic(reps: int, steps: int, csteps: int, alpha: float) -> list[list[str]]:
    rows = []
    for b, nulls in (((1.0, 0.0, 1.0), {"SKIT": {1}, "c-SKIT": {1}}), ((0.0, 1.0, 1.0), {"SKIT": set(), "c-SKIT": {0}})):
        y, z = synthetic_concepts(2 * max(steps, csteps), beta=b, reps=reps, seed=int(10 * b[0] + b[1]) + 1)
        # SKIT: all three concepts in one batch of 3 * reps tests
        start = time.perf_counter()
        res = skit(np.concatenate([y] * 3), np.concatenate([z[..., j] for j in range(3)]), alpha, tau_max=steps)
        secs = time.perf_counter() - start
        for j in range(3):
            part = slice(j * reps, (j + 1) * reps)
            rate, times = res.rejected[part].mean(), res.rejection_time[part][res.rejected[part]]
            rows.append(["SKIT", str(b), f"Z{j + 1}", "yes" if j in nulls["SKIT"] else "no", f"{rate:.2f}",
                         f"{np.median(times):.0f}" if times.size else "-", f"{steps}", f"{secs / 3:.1f}"])
        for j in range(3):
            start = time.perf_counter()
            sampler = gaussian_conditional_sampler(SYNTHETIC_MEAN, SYNTHETIC_COV, j)
            res = cskit(y[:, :csteps], z[:, :csteps], j, sampler, alpha, tau_max=csteps, seed=100 + j)
            rows.append(["c-SKIT", str(b), f"Z{j + 1}", "yes" if j in nulls["c-SKIT"] else "no",
                         f"{res.rejection_rate():.2f}",
                         "-" if np.isnan(res.median_rejection_time()) else f"{res.median_rejection_time():.0f}",
                         f"{csteps}", f"{time.perf_counter() - start:.1f}"])
    return rows


def semantic(reps: int, steps: int, alpha: float) -> tuple[list[list[str]], list[str]]:
    model, data = zoo.load("digits-softplus-mlp")
    x = torch.cat([data.x_train, data.x_test])
    h = hidden_representation(model, x)
    names = ["loop", "centre_column", "ink", "top_half"]
    bank = concept_directions(h, digit_predicates(x, names), method="ridge")
    z_all = np.concatenate([bank.scores(h), h.numpy().astype(np.float64) @ random_directions(h.shape[1], 1, seed=7).T],
                           axis=1)  # [N, 5]
    labels = names + ["random direction"]
    n = x.shape[0]
    rows, notes = [], []
    for target in (0, 1):
        yhat = class_probability(model, h, target).numpy().astype(np.float64)
        rng = np.random.default_rng(1000 + target)
        idx = rng.integers(0, n, size=(reps, 2 * steps))
        other = rng.integers(0, n, size=(reps, 2 * steps))  # independent draws for the permuted control
        ys = [yhat[idx]] * (len(labels) + 1)
        zs = [z_all[idx, k] for k in range(len(labels))] + [z_all[other, 0]]
        tags = labels + ["permuted control (loop)"]
        start = time.perf_counter()
        res = skit(np.concatenate(ys), np.concatenate(zs), alpha, tau_max=steps, stop=False)
        secs = time.perf_counter() - start
        m = len(tags)
        e = res.e_value.reshape(m, reps)
        discoveries = np.stack([ebh(e[:, r], alpha) for r in range(reps)], axis=1)  # [m, reps]
        for k, tag in enumerate(tags):
            part = slice(k * reps, (k + 1) * reps)
            rej, times = res.rejected[part], res.rejection_time[part]
            rows.append([f"class {target}", tag, "yes" if tag.startswith("permuted") else ("no" if tag.startswith("random") else "?"),
                         f"{rej.mean():.2f}", f"{np.median(times[rej]):.0f}" if rej.any() else "-",
                         f"{discoveries[k].mean():.2f}", f"{steps}", f"{secs / m:.1f}"])
        notes.append(f"class {target}: {reps} repetitions x {m} concepts = {res.rejected.size} tests in one batch, "
                     f"{secs:.1f} s")
    return rows, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and steps")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--alpha", type=float, default=0.05)
    args = parser.parse_args()
    reps = args.reps or (30 if args.quick else 100)
    steps, csteps, zsteps = (200, 400, 200) if args.quick else (1000, 1000, 200)
    print(f"alpha = {args.alpha}, {reps} repetitions; null rejection rates must be <= alpha "
          f"(Monte Carlo tolerance alpha + 3 sqrt(alpha(1-alpha)/r) = "
          f"{args.alpha + 3 * np.sqrt(args.alpha * (1 - args.alpha) / reps):.3f})\n")
    widths = [7, 16, 4, 6, 10, 15, 9, 8]
    print("Synthetic model (ANCHORS 5.4)")
    print(_row(["test", "beta", "Z", "H0", "rej rate", "median tau", "tau_max", "seconds"], widths))
    for r in synthetic(reps, steps, csteps, args.alpha):
        print(_row(r, widths))
    print("\nSemantic concepts of digits-softplus-mlp (SKIT, Y-hat = P(class) independent of Z = <c, h>)")
    widths = [8, 24, 4, 9, 11, 11, 8, 8]
    print(_row(["Y-hat", "concept", "H0", "rej rate", "median tau", "e-BH disc", "tau_max", "seconds"], widths))
    rows, notes = semantic(reps, zsteps, args.alpha)
    for r in rows:
        print(_row(r, widths))
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
