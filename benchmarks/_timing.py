"""What every benchmark here shares (not a benchmark itself: `dev.py bench` skips names starting with "_"):
interleaved timing of several sides in one process, the "median (min-max)" figure they all print, and the wall
time of a fresh `certify` process.

Scripts run as `python benchmarks/NAME.py` have this folder first on sys.path, so `from _timing import ...` works.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

CPU = torch.device("cpu")


def synchronise(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously), so that a timing covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(sides: dict[str, Callable[[], object]], rounds: int, device: torch.device = CPU) -> dict[str, list[float]]:
    """Seconds of each side per round: one untimed call each, then `rounds` rounds calling every side in turn."""
    for fn in sides.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            synchronise(device)
            start = time.perf_counter()
            fn()
            synchronise(device)
            times[name].append(time.perf_counter() - start)
    return times


def round_ratios(numerator: Callable[[], object], denominator: Callable[[], object], rounds: int,
                 device: torch.device = CPU) -> list[float]:
    """Per-round ratios numerator time / denominator time, the two sides alternating within each round."""
    times = interleaved({"numerator": numerator, "denominator": denominator}, rounds, device)
    return [a / b for a, b in zip(times["numerator"], times["denominator"])]


def spread(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    """median (min-max) of `values` times `scale`."""
    v = [x * scale for x in values]
    return f"{statistics.median(v):.{digits}f} ({min(v):.{digits}f}-{max(v):.{digits}f})"


def certify_command() -> list[str]:
    """The installed `certify` script beside this interpreter, else `python -m certify.cli`."""
    script = Path(sys.executable).parent / "certify"
    return [str(script)] if script.exists() else [sys.executable, "-m", "certify.cli"]


def wall(command: list[str], env: dict[str, str]) -> float:
    """Seconds from start to exit of `command`; RuntimeError when it exits non-zero."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return seconds
