"""Exact rational oracle of CROWN's back-substitution (tests only): the bound of rows . z_layer with given lines,
in Fractions of the float64 values, shared by tests/bounds/test_crown.py and test_crown_attack_facts.py."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch

from certify.bounds.network import AffineNetwork

exact = np.vectorize(lambda v: Fraction(float(v)), otypes=[object])
positive = np.vectorize(lambda v: max(v, Fraction(0)), otypes=[object])
smaller = np.vectorize(min, otypes=[object])


def exact_pass(net: AffineNetwork, layer: int, rows: np.ndarray, relaxations: list, i: int,
               row: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(constant [m], input coefficients [m, n]) of the back-substitution of rows [m, n_layer] . z_layer for
    example i with the given lines (per unit [N, n], or per objective row [N, K, n]: those of row `row`), in
    exact rational arithmetic (the lines chosen by the exact sign of each coefficient; skip terms gathered into
    the coefficient of the h_j they read)."""
    def line(field: torch.Tensor) -> np.ndarray:
        return exact((field[i] if field.dim() == 2 else field[i, row]).numpy())

    lam = exact(rows)
    value = np.array([Fraction(0)] * lam.shape[0], dtype=object)
    skipped: dict = {}
    for k in range(layer, -1, -1):
        value = value + lam.dot(exact(net.biases[k].numpy()))
        for j, skip in net.skips.get(k, {}).items():
            part = lam.dot(exact(skip.numpy()))
            skipped[j] = skipped[j] + part if j in skipped else part
        lam = lam.dot(exact(net.weights[k].numpy()))
        if k in skipped:
            lam = lam + skipped.pop(k)
        if k == 0:
            break
        rel = relaxations[k - 1]
        pos = positive(lam)
        neg = lam - pos
        value = value + pos.dot(line(rel.lower_intercept)) + neg.dot(line(rel.upper_intercept))
        lam = pos * line(rel.lower_slope) + neg * line(rel.upper_slope)
    return value, lam
