"""The kill test of issue 17: `certify batch` over 500 digits inputs x 3 certified methods (gradient, smoothgrad,
moreaugrad with the preset's rho = 0.3), SIGKILLed at 5 random moments and resumed each time with the same
command, then run to the end.

Each kill hits the parent process only (its workers exit on their own), at a moment drawn uniformly in the
first `--window` seconds after that run's first commit, so every run is killed mid-work (tasks in flight,
certificates of finished tasks committed, others not). Prints, per run, what it found done and how many keys it
re-does (attempted by an earlier run, never committed), then the final count (must be 1,500: one per key, no
duplicate), the total re-done, and `certify verify --store` (every certificate re-checked).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/batch_kill.py [--inputs 500] [--kills 5] [--workers 2] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = "gradient,smoothgrad,moreaugrad"


def count(store: Path) -> int:
    if not store.exists():
        return 0
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute("SELECT COUNT(*) FROM certificates").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=500)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--window", type=float, default=2.0, help="seconds after a run's first commit to kill within")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CERTIFY_NO_PROGRESS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "runs.sqlite"
        command = [sys.executable, "-m", "certify.cli", "batch", "--model", "zoo:digits-softplus-mlp",
                   "--dataset", "digits-flat", "--split", "train", "--limit", str(args.inputs), "--methods", METHODS,
                   "--param", "moreaugrad:rho=0.3", "--workers", str(args.workers), "--store", str(store)]
        expected = 3 * args.inputs
        start = time.perf_counter()
        kills = 0
        while kills < args.kills:
            before = count(store)
            proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            while count(store) == before and proc.poll() is None:
                time.sleep(0.02)
            delay = rng.uniform(0, args.window)
            time.sleep(delay)
            if proc.poll() is not None:
                print(f"run {kills + 1}: finished before its kill ({count(store)} stored); no more kills possible")
                break
            proc.kill()  # SIGKILL
            proc.wait()
            kills += 1
            print(f"kill {kills}: {delay:.2f} s after the run's first commit; {count(store)} of {expected} stored")
        final = subprocess.run(command, env=env, capture_output=True, text=True)
        print(final.stdout.strip())
        if final.returncode != 0:
            print(final.stderr, file=sys.stderr)
            return 1
        with sqlite3.connect(store) as db:
            n, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT input_id || '|' || method || '|' || params) "
                                     "FROM certificates").fetchone()
            runs = db.execute("SELECT run_id, ended IS NOT NULL, already_done, redone, computed FROM runs").fetchall()
        for run_id, ended, already, redone, computed in runs:
            print(f"  run {run_id}: {'finished' if ended else 'killed  '} found {already} done, re-does {redone}"
                  + (f", computed {computed}" if ended else ""))
        redone_total = sum(r[3] for r in runs)
        verify = subprocess.run([sys.executable, "-m", "certify.cli", "verify", "--store", str(store)],
                                env=env, capture_output=True, text=True)
        print(verify.stdout.strip())
        ok = n == distinct == expected and verify.returncode == 0
        print(f"final: {n} certificates ({distinct} distinct keys; expected {expected}), {kills} kills, "
              f"{redone_total} certificates re-done in total, verify exit {verify.returncode}; "
              f"{time.perf_counter() - start:.0f} s -> {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
