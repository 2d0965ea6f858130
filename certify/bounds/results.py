"""The record every number of the verification layer is returned in: value, kind, method, assumptions.

Kinds (DESIGN section 5): *certified* (a proven bound, computed in float64 with outward rounding where
it must be rigorous), *probabilistic* (holds with the stated confidence), *estimated* (a heuristic, no
guarantee), *solver-reported* (an optimum reported by a MILP solver, exact up to its recorded gap and
tolerances, not re-checkable), and *refused* (no number can be guaranteed: `reason` says why, and
`value` is None).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from certify.vocabulary import Kind

__all__ = ["BoundResult", "Kind"]  # Kind is defined once, in certify.vocabulary


@dataclass
class BoundResult:
    """One bound (a float, or a tensor of per-example / per-class values) and its provenance.

    `assumptions` lists what the value rests on, in words (e.g. "input in the L2 ball of radius 0.1
    around x", "softplus beta = 1"); `witness` holds what a checker needs to re-derive it (dual
    multipliers, intermediate bounds, slopes, a flipping perturbation)."""

    value: float | Tensor | None
    kind: Kind
    method: str
    assumptions: list[str] = field(default_factory=list)
    confidence: float | None = None
    reason: str | None = None
    witness: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def refused(self) -> bool:
        return self.kind is Kind.REFUSED

    @classmethod
    def refuse(cls, method: str, reason: str, assumptions: list[str] | None = None) -> "BoundResult":
        return cls(value=None, kind=Kind.REFUSED, method=method, assumptions=assumptions or [], reason=reason)
