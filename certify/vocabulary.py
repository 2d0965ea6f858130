"""The shared vocabulary of the package: one definition of each concept that several layers name.

This is the bottom layer (it imports only the standard library, torch and `certify.errors`), so the
solver, the verification layer, the issuers and the independent checker may all import it.

* Norms: `NORMS`, `parse_norm` (the one place a norm spelling is accepted), `dual_norm`, and the two
  renderings `norm_name` (text in statements) and `norm_json` (JSON has no infinity).
* Constants of the theory: `STEIN_CONSTANT` = sqrt(2/pi) (Proposition 1 of MoreauGrad, sharpened by
  Stein's lemma) and `SQRT2` (the top-k margin).
* Rounding: `BUILDER_MARGIN` (relative outward rounding of a value an issuer writes) with `round_up` /
  `round_down`, and `CHECKER_SAFETY` (relative outward rounding of a value the checker re-derives; it is
  smaller, so the checker accepts what the issuer wrote but not a value rounded the wrong way).
* `Kind`: what a number is worth (certified, probabilistic, estimated, solver-reported, refused), shared by
  the verification layer's `BoundResult` and the certificate's claims.
* `Domain`: the input-domain box [lower, upper] with its single JSON encoding.

Claim types (statements, parameters, assumptions) live in `certify.certificates.claims`, not here.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from enum import Enum
from typing import Any, Union

import torch
from torch import Tensor

from certify.errors import UsageError

# ----------------------------------------------------------------------------------------------- kinds


class Kind(str, Enum):
    """How much a number is worth (DESIGN section 5): *certified* (a proven bound, computed in float64 with
    outward rounding where it must be rigorous, re-derived by the checker), *probabilistic* (holds with the
    stated confidence), *estimated* (a heuristic, no guarantee), *solver-reported* (a solver's optimum, up to
    its recorded tolerances, not re-checkable), *refused* (no number can be guaranteed; a reason says why).
    A str enum: `Kind.CERTIFIED == "certified"`, and `Kind(text)` reads the JSON value back."""

    CERTIFIED = "certified"
    PROBABILISTIC = "probabilistic"
    ESTIMATED = "estimated"
    SOLVER_REPORTED = "solver-reported"
    REFUSED = "refused"


KINDS: tuple[str, ...] = tuple(k.value for k in Kind)
"""The kind names as they appear in JSON, in the order of `Kind`."""

# ----------------------------------------------------------------------------------------------- norms

NORMS: tuple[float, float, float] = (1.0, 2.0, math.inf)
"""The supported norm exponents p, as floats: 1, 2 and infinity."""

_NORM_SPELLINGS = {"1": 1.0, "l1": 1.0, "2": 2.0, "l2": 2.0, "inf": math.inf, "linf": math.inf}
ACCEPTED_NORM_SPELLINGS = "1, 2, inf (also 1.0, 2.0, math.inf, 'l1', 'l2', 'linf')"
"""The spellings `parse_norm` accepts, as the text its error message shows."""


def parse_norm(p: Any) -> float:
    """The norm exponent p as a float in `NORMS` (1.0, 2.0 or math.inf).

    Accepts the numbers 1, 2, 1.0, 2.0, math.inf and the strings "1", "2", "l1", "l2", "inf", "linf"
    (strings case-insensitive, surrounding blanks ignored). Anything else (3, 0, -inf, NaN, True, "l3",
    None) raises `UsageError` naming the accepted spellings."""
    value: float | None = None
    if isinstance(p, str):
        value = _NORM_SPELLINGS.get(p.strip().lower())
    elif isinstance(p, numbers.Real) and not isinstance(p, bool):
        value = float(p)
    if value is None or value not in NORMS:
        raise UsageError(f"norm p={p!r} is not supported; accepted spellings: {ACCEPTED_NORM_SPELLINGS}")
    return value


def dual_norm(p: Any) -> float:
    """The dual exponent q of p (1/p + 1/q = 1): 1 <-> inf, 2 -> 2. `p` in any spelling `parse_norm` accepts."""
    return {1.0: math.inf, 2.0: 2.0, math.inf: 1.0}[parse_norm(p)]


def norm_name(p: Any) -> str:
    """The norm as text in statements and messages: "1", "2" or "inf"."""
    value = parse_norm(p)
    return "inf" if value == math.inf else str(int(value))


def norm_json(p: Any) -> Union[int, str]:
    """The norm as a JSON value: 1, 2 or "inf" (JSON has no infinity); `parse_norm` reads it back."""
    value = parse_norm(p)
    return "inf" if value == math.inf else int(value)


# ------------------------------------------------------------------------------------------- constants

STEIN_CONSTANT: float = math.sqrt(2.0 / math.pi)
"""sqrt(2/pi) = E|Z| for Z ~ N(0, 1): Proposition 1 of MoreauGrad sharpened by Stein's lemma, a Gaussian
smoothing h = E f(. + sigma Z) of an L-Lipschitz f has ||Hess h|| <= STEIN_CONSTANT * L / sigma."""

SQRT2: float = math.sqrt(2.0)
"""sqrt(2): feature i stays in the top-k by |a| under any change ||d||_2 <= B if |a_i| - |a_(k+1)| > sqrt(2) B."""

# -------------------------------------------------------------------------------------------- rounding

BUILDER_MARGIN: float = 1e-9
"""Relative outward rounding of every value an issuer writes into a certificate (`round_up`, `round_down`)."""

CHECKER_SAFETY: float = 1e-12
"""Relative outward rounding of every value the checker re-derives in float64 (smaller than BUILDER_MARGIN,
so an issuer's honestly rounded value passes and one rounded the wrong way does not)."""

_TINY = 1e-300  # absolute floor, so that a zero value is widened too

# Input splitting of the local constants (DESIGN section 11; certify.bounds.local.cover_cells and the checker's
# certify.certificates.local_check, each with its own code): a ball over at most SPLIT_MAX_FEATURES inputs is
# covered by the cells of a grid of SPLIT_CELLS ** (1/n) (a power of two) cells per axis, and each constant is
# the worst over the cells that meet the ball.
SPLIT_MAX_FEATURES = 3
SPLIT_CELLS = 64


def round_up(value: float) -> float:
    """An upper bound as an issuer writes it: value widened by the relative BUILDER_MARGIN (and 1e-300)."""
    value = float(value)
    return value + abs(value) * BUILDER_MARGIN + _TINY


def round_down(value: float) -> float:
    """A lower bound as an issuer writes it: value narrowed by the relative BUILDER_MARGIN (and 1e-300)."""
    value = float(value)
    return value - abs(value) * BUILDER_MARGIN - _TINY


# ---------------------------------------------------------------------------------------------- domain

Bound = Union[float, list, None]


def _side(value: Any, name: str, unbounded: float) -> Bound:
    """One side of a domain as a float, a nested list of finite floats, or None (unbounded everywhere)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise UsageError(f"domain {name} must be a number, a nested list of numbers or null, got {value!r}")
    try:
        t = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UsageError(f"domain {name} must be a number, a nested list of numbers or null: {exc}") from None
    if t.numel() == 0:
        raise UsageError(f"domain {name} is empty")
    if torch.isnan(t).any():
        raise UsageError(f"domain {name} contains NaN")
    if bool((t == unbounded).all()):
        return None  # unbounded on every coordinate: the same set as no bound
    if not bool(torch.isfinite(t).all()):
        raise UsageError(f"domain {name} mixes finite and infinite entries; give finite bounds or null")
    return float(t.item()) if t.dim() == 0 else t.tolist()


@dataclass(frozen=True)
class Domain:
    """The input domain box {x : lower <= x <= upper}, elementwise.

    Each side is a float, a nested list of floats (the shape of one example, or broadcastable to it), or
    None for a side unbounded everywhere. The constructor also takes tensors and arrays, and +-inf for an
    unbounded side; it stores plain floats / lists, checks that the entries are finite and that
    lower <= upper wherever both are given, and raises `UsageError` otherwise."""

    lower: Bound = None
    upper: Bound = None

    def __post_init__(self) -> None:
        lower = _side(self.lower, "lower", -math.inf)
        upper = _side(self.upper, "upper", math.inf)
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        if lower is not None and upper is not None:
            lo, hi = torch.as_tensor(lower, dtype=torch.float64), torch.as_tensor(upper, dtype=torch.float64)
            try:
                bad = bool((lo > hi).any())
            except RuntimeError as exc:
                raise UsageError(f"domain lower and upper do not broadcast: {exc}") from None
            if bad:
                raise UsageError("domain lower bound exceeds its upper bound")

    @classmethod
    def of(cls, domain: Any) -> "Domain | None":
        """A Domain from None (no domain), a Domain, a pair (lower, upper), or the JSON object of `to_json`."""
        if domain is None or isinstance(domain, Domain):
            return domain
        if isinstance(domain, dict):
            return cls.from_json(domain)
        try:
            lower, upper = domain
        except (TypeError, ValueError):
            raise UsageError("domain must be a pair (lower, upper) of scalars or tensors, or None") from None
        return cls(lower, upper)

    @property
    def bounded(self) -> bool:
        """Whether at least one side bounds the inputs."""
        return self.lower is not None or self.upper is not None

    def to_json(self) -> dict:
        """The one JSON encoding: {"lower": ..., "upper": ...}, each a number, nested lists, or null."""
        return {"lower": self.lower, "upper": self.upper}

    @classmethod
    def from_json(cls, obj: Any) -> "Domain | None":
        """The Domain written by `to_json`; JSON null gives None (no domain). Anything else raises UsageError."""
        if obj is None:
            return None
        if not isinstance(obj, dict) or set(obj) != {"lower", "upper"}:
            raise UsageError(f"a domain is null or an object with exactly the keys 'lower' and 'upper', got {obj!r}")
        return cls(obj["lower"], obj["upper"])

    def tensors(
        self,
        shape: tuple[int, ...] | torch.Size,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(lo, hi) broadcast to `shape` (an unbounded side is -inf / +inf); UsageError if they do not broadcast."""
        def side(value: Bound, fill: float) -> Tensor:
            t = torch.as_tensor(fill if value is None else value, dtype=dtype, device=device)
            try:
                return torch.broadcast_to(t, tuple(shape)).clone()
            except RuntimeError:
                raise UsageError(f"domain of shape {tuple(t.shape)} does not broadcast to {tuple(shape)}") from None

        return side(self.lower, -math.inf), side(self.upper, math.inf)

    def contains(self, x: Any) -> bool:
        """Whether every entry of x (one example, or a batch whose trailing dimensions the sides broadcast
        to) lies in [lower, upper]. Exact comparison in float64; NaN is never contained."""
        t = torch.as_tensor(x).detach().to(torch.float64)
        lo, hi = self.tensors(t.shape, torch.float64, t.device)
        return bool(((t >= lo) & (t <= hi)).all())

    def describe(self) -> str:
        """A short text for statements: the box, or "R^n" when unbounded."""
        if not self.bounded:
            return "R^n"

        def text(value: Bound) -> str:
            return "per-coordinate bounds" if isinstance(value, list) else f"{value:g}"

        lo = "-inf" if self.lower is None else text(self.lower)
        hi = "inf" if self.upper is None else text(self.upper)
        return f"[{lo}, {hi}]"
