"""What every benchmark here shares (not a benchmark itself: `dev.py bench` skips names starting with "_"):
interleaved timing of several sides in one process, and the "median (min-max)" figure they all print.

Scripts run as `python benchmarks/NAME.py` have this folder first on sys.path, so `from _timing import ...` works.
"""
from __future__ import annotations

import statistics
import time
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
