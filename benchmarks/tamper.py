"""Tamper suite benchmark (issue 10, Acceptance): >= 5,000 Hypothesis mutations of honest certificates of
every method (gradient, integrated-gradients, smoothgrad, moreaugrad vanilla / sparse / group / smoothed,
lagrange-dual p = 2 and inf) on the softplus and ReLU digits MLPs and the tiny blobs ReLU net. Every
mutated certificate goes through the independent checker in process; every ACCEPTED one is judged by the
test oracle (`tests/certificates/tamper_oracle.py`), which recomputes the truth of each certified claim.

Prints the counts per method and per mutation family (tried / accepted / rejected / format error / crash /
accepted-and-false / accepted with an unbound explanation), the false certificates accepted (if any) and
the checker crashes; exits 1 if a false certificate was accepted (or the checker crashed on a parseable
certificate), else 0. "unbound": every claim true, but the stored explanation of a closed-form method
(gradient, IG) is not that method's output as the provenance states it (reported, not counted as false).

    OMP_NUM_THREADS=1 python3 benchmarks/tamper.py [--n 5000] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "certificates"))
import tamper_oracle as T  # noqa: E402  (test code: the oracle is not part of the package)


def run(n: int, seed: int, cases=None) -> T.Suite:
    return T.run_mutations(cases or T.build_cases(), n, seed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inputs", type=int, default=2, help="test inputs per model (certificates per method)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    cases = T.build_cases(indices=tuple(range(args.inputs)))
    built = time.perf_counter() - start
    suite = run(args.n, args.seed, cases)
    seconds = time.perf_counter() - start
    tally = suite.tally
    print(f"tamper suite: {sum(tally.tried.values())} mutations of {len(cases)} honest certificates "
          f"(built in {built:.1f}s), {seconds:.0f}s in all, torch threads {torch.get_num_threads()}\n")
    print("per method:")
    print(tally.table(0))
    print("\nper mutation family:")
    print(tally.table(1))
    undetermined = suite.total_undetermined()
    print(f"\noracle judgements left undetermined (no converged exact MoreauGrad, numeric failure): {undetermined}")
    for o in suite.oracles.values():
        for line in o.failures[:5]:
            print("  oracle could not judge:", line)
    if tally.false_by_claim:
        print("\naccepted-and-false verdicts by the false claim's type:", dict(tally.false_by_claim))
    for method, family, what, false in tally.examples:
        print(f"FALSE CERTIFICATE ACCEPTED [{method} / {family}] {what}: {false}")
    for method, family, what, unbound in tally.unbound_examples:
        print(f"EXPLANATION NOT BOUND (claims true) [{method} / {family}] {what}: {unbound}")
    for method, family, what, outcome in tally.crashes:
        print(f"CHECKER CRASH [{method} / {family}] {what}: {outcome}")
    bad = sum(tally.false_accepted.values())
    print(f"\naccepted and false: {bad}  (must be 0); checker crashes: {sum(tally.crashed.values())}; "
          f"accepted with a closed-form explanation that is not the stated method's output (no claim false): "
          f"{sum(tally.unbound.values())}")
    return 1 if bad or tally.crashed else 0


if __name__ == "__main__":
    sys.exit(main())
