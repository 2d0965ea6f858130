"""What the checker modules share (no cycle between them): the `Invalid` exception, the checker's outward
rounding and the spectral norm.

The checker's own view of the model is `certify.certificates.semantics.translate` (its own translation, by
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


def spectral_norm(matrix: Tensor) -> float:
    return float(torch.linalg.matrix_norm(matrix, ord=2)) if matrix.numel() else 0.0
