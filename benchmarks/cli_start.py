"""Cold-start wall time of the `certify` command against a bare `python -c 'import torch'` (issue 18, part 2).

Each round runs every command once, in turn, as a fresh process (interleaved, so that the machine's load
falls on all of them alike): `import torch`, `certify verify CERT` of a MoreauGrad certificate (issued once
before the rounds by `certify explain`), `certify --help` and `certify explain --help`. Prints each command's
median (min-max) seconds over the rounds and its ratio to the median of `import torch`; the target for
`verify` is <= 1.2x. OMP_NUM_THREADS=1 is set for every process. Bytecode is cached as in an installed
package (PYTHONDONTWRITEBYTECODE is dropped; the .pyc files go to a temporary PYTHONPYCACHEPREFIX, written by
a warm-up run of each command), so no command pays for compiling sources.

    python3 benchmarks/cli_start.py [--rounds 7] [--model digits-softplus-mlp]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _timing import certify_command, wall

TARGET = 1.2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--model", default="digits-softplus-mlp", help="zoo model of the MoreauGrad certificate")
    args = parser.parse_args()
    certify = certify_command()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        cert = str(Path(tmp) / "moreaugrad.json")
        subprocess.run([*certify, "explain", "--model", args.model, "--method", "moreaugrad", "--index", "0",
                        "--out", cert], env=env, check=True, stdout=subprocess.DEVNULL)
        commands = {
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "certify verify CERT": [*certify, "verify", cert],
            "certify --help": [*certify, "--help"],
            "certify explain --help": [*certify, "explain", "--help"],
        }
        for command in commands.values():  # warm-up: writes the bytecode and fills the file cache
            wall(command, env)
        times: dict[str, list[float]] = {label: [] for label in commands}
        for _ in range(args.rounds):
            for label, command in commands.items():
                times[label].append(wall(command, env))
    base = statistics.median(times["python -c 'import torch'"])
    print(f"{args.rounds} interleaved rounds, OMP_NUM_THREADS=1, MoreauGrad certificate of {args.model}")
    print(f"{'command':28s} {'median s':>9s} {'(min-max)':>15s} {'/ import torch':>15s}")
    for label, values in times.items():
        median = statistics.median(values)
        print(f"{label:28s} {median:9.3f} ({min(values):.3f}-{max(values):.3f}) {median / base:14.2f}x")
    ratio = statistics.median(times["certify verify CERT"]) / base
    print(f"verify / import torch = {ratio:.2f} (target <= {TARGET}: {'met' if ratio <= TARGET else 'MISSED'})")


if __name__ == "__main__":
    main()
