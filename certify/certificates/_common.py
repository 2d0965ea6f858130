"""What the checker and the relaxation re-check share (no cycle between them): the `Invalid` exception, the
checker's outward rounding, and the checker's own view of the model as stages (mats, biases, acts).

The stages come from `certify.certificates.semantics.translate` (the checker's own translation, by
tracing). The checker imports neither `certify.bounds`, `certify.explain` nor `certify.attacks`."""
from __future__ import annotations

import torch
from torch import Tensor

from certify.vocabulary import CHECKER_SAFETY

SAFETY = CHECKER_SAFETY
# absolute floor of the checker's rounding: far below the issuers' 1e-300, so that the few dozen roundings a
# re-derivation chains never exceed the floor an issuer adds once (a zero bound stays verifiable)
TINY = 1e-310


class Invalid(Exception):
    """A claim that fails its re-check (the message says why)."""


def up(value: float) -> float:
    return value + abs(value) * SAFETY + TINY


def down(value: float) -> float:
    return value - abs(value) * SAFETY - TINY


def act_beta(act: tuple) -> float:
    return float(act[1]) if act[0] == "softplus" else 1.0


def exact_act(act: tuple, z: Tensor) -> Tensor:
    """The activation of N: relu, or exact softplus max(z, 0) + log1p(exp(-beta |z|)) / beta (no threshold)."""
    if act[0] == "relu":
        return torch.relu(z)
    beta = act_beta(act)
    return torch.relu(z) + torch.log1p(torch.exp(-beta * z.abs())) / beta


def act_derivative(act: tuple, z: Tensor) -> Tensor:
    if act[0] == "relu":
        return (z > 0).to(z.dtype)
    return torch.sigmoid(act_beta(act) * z)


def spectral_norm(matrix: Tensor) -> float:
    return float(torch.linalg.matrix_norm(matrix, ord=2)) if matrix.numel() else 0.0
