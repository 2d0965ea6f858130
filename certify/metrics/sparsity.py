"""Sparsity of explanations, per example: the Gini index of |a| and the fraction of exact zeros."""
from __future__ import annotations

import torch
from torch import Tensor


def gini_index(a: Tensor) -> Tensor:
    """Gini index of |a| (Hurley & Rickard 2009; as in Quantus' Sparseness): with |a| sorted ascending,
    sum_i (2i - n - 1) |a|_(i) / (n sum_i |a|_i), i = 1..n. 0 for a uniform map, (n-1)/n for a one-hot map,
    and 0 for the all-zero map by convention. Scale invariant."""
    v = a.detach().flatten(1).double().abs().sort(dim=1).values
    n = v.shape[1]
    i = torch.arange(1, n + 1, dtype=torch.float64, device=v.device)
    total = v.sum(dim=1)
    return torch.where(total > 0, ((2 * i - n - 1) * v).sum(dim=1) / (n * total.clamp_min(1e-300)), torch.zeros_like(total))


def zero_fraction(a: Tensor) -> Tensor:
    """Fraction of entries that are exactly zero."""
    return (a.detach().flatten(1) == 0).double().mean(dim=1)
