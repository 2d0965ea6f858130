"""Summaries with 95% confidence intervals for the study's numbers.

* means: Student's t-interval, mean +- t_{0.975, n-1} s / sqrt(n) (s the sample standard deviation);
* proportions: the Clopper-Pearson exact interval (Clopper & Pearson, Biometrika 1934), from the beta quantiles;
* ratios of paired means (a speed-up, a relative stability gain): the percentile bootstrap over the inputs
  (Efron & Tibshirani 1993, ch. 13), resampling the pairs together.

A claim of a paper is judged only from n >= MIN_EVIDENCE inputs (`enough`); below that the verdict is "not
enough evidence". With one value the interval is [value, value] for no spread is known; it is labelled by n.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor

LEVEL = 0.95
MIN_EVIDENCE = 30  # inputs needed before a paper claim is declared reproduced or refuted
BOOTSTRAP = 2000


def summary(values: Tensor) -> dict[str, Any]:
    """mean, std, min, max, median, n and the t-interval `ci95` [lo, hi] of the mean of `values` (any shape,
    flattened; non-finite entries are dropped and counted in `n_dropped`)."""
    v = values.detach().flatten().double().cpu()
    finite = v[torch.isfinite(v)]
    n = int(finite.numel())
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "median": math.nan, "n": 0,
                "ci95": [math.nan, math.nan], "n_dropped": int(v.numel())}
    mean, std = float(finite.mean()), float(finite.std()) if n > 1 else 0.0
    half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1)) * std / math.sqrt(n) if n > 1 else 0.0
    out = {"mean": mean, "std": std, "min": float(finite.min()), "max": float(finite.max()),
           "median": float(finite.median()), "n": n, "ci95": [mean - half, mean + half]}
    if n < v.numel():
        out["n_dropped"] = int(v.numel()) - n
    return out


def proportion(successes: Tensor) -> dict[str, Any]:
    """The fraction of True entries of the boolean `successes`, n, and its Clopper-Pearson interval `ci95`."""
    s = successes.detach().flatten().cpu()
    n, k = int(s.numel()), int(s.sum())
    alpha = 1 - LEVEL
    lo = float(stats.beta.ppf(alpha / 2, k, n - k + 1)) if k > 0 else 0.0
    hi = float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k)) if k < n else 1.0
    return {"mean": k / n if n else math.nan, "n": n, "ci95": [lo, hi]}


def ratio_of_means(numerator: Tensor, denominator: Tensor, seed: int = 0) -> dict[str, Any]:
    """mean(numerator) / mean(denominator) over paired entries [n], with the percentile-bootstrap interval
    `ci95` (BOOTSTRAP resamples of the pairs, seeded)."""
    a = numerator.detach().flatten().double().cpu().numpy()
    b = denominator.detach().flatten().double().cpu().numpy()
    n = a.size
    value = float(a.mean() / b.mean())
    picks = np.random.default_rng(seed).integers(0, n, size=(BOOTSTRAP, n))
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = a[picks].mean(axis=1) / b[picks].mean(axis=1)
    lo, hi = np.nanquantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]) if n > 1 else (value, value)
    return {"mean": value, "n": int(n), "ci95": [float(lo), float(hi)], "interval": "percentile bootstrap"}


def enough(n: int) -> bool:
    """Whether n inputs suffice to declare a paper claim reproduced or refuted."""
    return n >= MIN_EVIDENCE


def interval(s: dict[str, Any], digits: int = 3) -> str:
    """'mean [lo, hi] (n = n)' for a summary, proportion or ratio."""
    lo, hi = s["ci95"]
    return f"{s['mean']:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}] (n = {s['n']})"
