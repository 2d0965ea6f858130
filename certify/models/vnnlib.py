"""VNN-LIB properties, the subset the VNN-COMP benchmarks use (2021-2024, format 1.0).

No maintained Python parser of this format installs here: the `vnnlib` package on PyPI (1.0.2) parses
VNN-LIB 2.0 only, and rejects the competition's 1.0 files at their first `(declare-const ...)`. This is a
small parser of exactly the subset below; anything else is refused with the reason (UnsupportedError).

    (declare-const X_i Real)  ... inputs X_0 .. X_{n-1}
    (declare-const Y_j Real)  ... outputs Y_0 .. Y_{m-1}
    (assert (<= X_i c)) / (assert (>= X_i c))  (either side may be the constant; also `<` `>`, read as
                                                 closed bounds, which only enlarges the box checked)
    (assert FORMULA) over Y: comparisons (<=, >=, <, >) between linear terms of Y and constants (`(+ ...)`,
                             `(- ...)`, `(* c Y_j)`), combined with `and` / `or`.

Semantics (VNN-COMP): the asserts describe a COUNTEREXAMPLE. The property is violated ("sat") when some x
in the input box gives outputs y satisfying the output formula, and holds ("unsat") when none does. The
output formula is brought to disjunctive normal form: a list of conjunctions, each a set of rows
`c . y <= d` (a strict `<` is kept as `<=`: proving the closed version infeasible proves the strict one).
The property holds if, for every conjunction, some row has min over the box of (d - c . y) > 0.

`Property.label` is the class c when the formula is the classification robustness query "some Y_j >= Y_c"
(one single-row conjunction Y_j - Y_c >= 0 per j != c); `Property.ball()` recovers the centre image and
radius when the box is an L-infinity ball clipped to a domain such as [0, 1].
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from certify.errors import InvalidInputError, UnsupportedError

_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_VAR = re.compile(r"^([XY])_(\d+)$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_NONFINITE = re.compile(r"^[+-]?(nan|inf|infinity)$", re.IGNORECASE)


@dataclass
class Property:
    """Input box [lower, upper] (float64, the file's numbers rounded to nearest) and the output formula in
    DNF: `disjuncts[k] = (C_k [r, m], d_k [r])`, the counterexample region of conjunction k being
    {y : C_k y <= d_k}."""

    lower: np.ndarray
    upper: np.ndarray
    num_outputs: int
    disjuncts: list[tuple[np.ndarray, np.ndarray]]
    path: str = ""
    comments: list[str] = field(default_factory=list)

    @property
    def num_inputs(self) -> int:
        return int(self.lower.size)

    @property
    def label(self) -> int | None:
        """c when the output formula is exactly `OR_{j != c} Y_j >= Y_c` (classification robustness)."""
        if len(self.disjuncts) != self.num_outputs - 1 or self.num_outputs < 2:
            return None
        found: set[int] = set()
        label = None
        for c, d in self.disjuncts:
            if c.shape[0] != 1 or d[0] != 0.0:
                return None
            row = c[0]
            plus, minus = np.flatnonzero(row == 1.0), np.flatnonzero(row == -1.0)
            if np.count_nonzero(row) != 2 or plus.size != 1 or minus.size != 1:
                return None
            # row . y <= 0 with +1 at the label and -1 at j: y_c - y_j <= 0, i.e. Y_j >= Y_c
            if label is None:
                label = int(plus[0])
            if int(plus[0]) != label:
                return None
            found.add(int(minus[0]))
        if label is None or found != set(range(self.num_outputs)) - {label}:
            return None
        return label

    def ball(self, domain: tuple[float, float] = (0.0, 1.0), tol: float = 1e-6) -> tuple[np.ndarray, float] | None:
        """(centre, eps) when the box is {x : ||x - centre||_inf <= eps} intersected with [domain]: eps is the
        largest half-width; an unclipped coordinate's centre is its midpoint, a coordinate clipped at one side
        is eps away from the other side. None when the box is not of that form (within `tol`)."""
        lo, hi = self.lower, self.upper
        half = (hi - lo) / 2
        eps = float(half.max())
        if not eps > 0:
            return None
        d_lo, d_hi = domain
        at_lo, at_hi = lo <= d_lo + tol, hi >= d_hi - tol
        centre = np.where(at_lo & ~at_hi, hi - eps, np.where(at_hi & ~at_lo, lo + eps, (lo + hi) / 2))
        expected_lo = np.maximum(centre - eps, d_lo)
        expected_hi = np.minimum(centre + eps, d_hi)
        if np.abs(expected_lo - lo).max() > tol or np.abs(expected_hi - hi).max() > tol:
            return None
        if (at_lo & at_hi).any():  # clipped on both sides: the centre is not determined
            return None
        return np.clip(centre, d_lo, d_hi), eps


def _tokens(text: str) -> list[tuple[str, int]]:
    """(token, 1-based line) pairs, comments (`;` to the end of the line) dropped."""
    return [(m.group(0), number) for number, line in enumerate(text.splitlines(), 1)
            for m in _TOKEN.finditer(line.split(";", 1)[0])]


def _parse_sexprs(tokens: list[tuple[str, int]]) -> list[tuple[Any, int]]:
    """The top-level forms, each with the line it starts on."""
    stack: list[list[Any]] = [[]]
    lines: list[int] = []
    for tok, line in tokens:
        if tok == "(":
            if len(stack) == 1:
                lines.append(line)
            stack.append([])
        elif tok == ")":
            if len(stack) == 1:
                raise InvalidInputError(f"VNN-LIB line {line}: unbalanced ')'")
            done = stack.pop()
            stack[-1].append(done)
        else:
            if len(stack) == 1:
                lines.append(line)
            stack[-1].append(tok)
    if len(stack) != 1:
        raise InvalidInputError(f"VNN-LIB: unbalanced '(' (file truncated?): the form opened on line {lines[-1]} is not closed")
    return list(zip(stack[0], lines))


def _variables(expr: Any) -> list[str]:
    """The X_i / Y_j names in a form, in order of appearance (for messages)."""
    if isinstance(expr, str):
        return [expr] if _VAR.match(expr) else []
    return [v for sub in expr for v in _variables(sub)]


def _to_float(value: Fraction, what: str, signed: bool = True) -> float:
    """`value` rounded to the nearest float64; InvalidInputError (naming `what`) when it is beyond float64's
    range (e.g. 1e400), which no input box or output formula can mean. `signed=False` states its magnitude
    (a formula's numbers are stored with the signs of its normal form, not the file's)."""
    try:
        out = float(value)
    except OverflowError:
        out = math.inf
    if not math.isfinite(out):
        stated = f"is {_short(value)}" if signed else f"has magnitude {_short(abs(value))}"
        raise InvalidInputError(f"{what} {stated}, beyond the float64 range (|v| <= 1.8e308)")
    return out


def _short(value: Fraction) -> str:
    """A Fraction too large for float, written as sign, leading digits and power of ten."""
    digits = str(abs(value.numerator // value.denominator))
    sign = "-" if value < 0 else ""
    return f"{sign}{digits[0]}.{digits[1:4] or '0'}e+{len(digits) - 1}"


def _number(tok: Any) -> Fraction | None:
    if isinstance(tok, str) and _NUMBER.match(tok):
        return Fraction(tok)
    if isinstance(tok, str) and _NONFINITE.match(tok):
        raise InvalidInputError(f"{tok!r} is not a finite number (a bound or coefficient must be finite)")
    return None


def _linear(expr: Any) -> tuple[dict[tuple[str, int], Fraction], Fraction]:
    """(coefficients {(kind, index): c}, constant) of a linear term, exactly (Fractions)."""
    num = _number(expr)
    if num is not None:
        return {}, num
    if isinstance(expr, str):
        m = _VAR.match(expr)
        if not m:
            raise UnsupportedError(f"VNN-LIB: unknown symbol {expr!r} (only X_i, Y_j and numbers are modelled)")
        return {(m.group(1), int(m.group(2))): Fraction(1)}, Fraction(0)
    if not expr:
        raise InvalidInputError("VNN-LIB: empty expression ()")
    head, args = expr[0], expr[1:]
    parts = [_linear(a) for a in args]
    if head == "+":
        coeffs: dict = {}
        const = Fraction(0)
        for c, k in parts:
            for key, v in c.items():
                coeffs[key] = coeffs.get(key, 0) + v
            const += k
        return coeffs, const
    if head == "-":
        if len(parts) == 1:
            c, k = parts[0]
            return {key: -v for key, v in c.items()}, -k
        first, rest = parts[0], parts[1:]
        coeffs, const = dict(first[0]), first[1]
        for c, k in rest:
            for key, v in c.items():
                coeffs[key] = coeffs.get(key, 0) - v
            const -= k
        return coeffs, const
    if head == "*":
        variable = [(c, k) for c, k in parts if c]
        if len(variable) > 1:
            raise UnsupportedError("VNN-LIB: a product of two variables is not linear")
        factor = Fraction(1)
        for c, k in parts:
            if not c:
                factor *= k
        if not variable:
            return {}, factor
        (c, k), = variable
        return {key: v * factor for key, v in c.items()}, k * factor
    raise UnsupportedError(f"VNN-LIB: operator {head!r} is not in the supported subset (+, -, *, <=, >=, <, >, and, or)")


def _atom(expr: list[Any]) -> tuple[dict, Fraction]:
    """A comparison as `coeffs . v <= const` (exact)."""
    op, args = expr[0], expr[1:]
    if len(args) != 2:
        raise UnsupportedError(f"VNN-LIB: comparison {op} with {len(args)} arguments (2 expected)")
    (ca, ka), (cb, kb) = _linear(args[0]), _linear(args[1])
    if op in ("<=", "<"):  # a - b <= 0
        left, right = (ca, ka), (cb, kb)
    else:  # >=, >: b - a <= 0
        left, right = (cb, kb), (ca, ka)
    coeffs = dict(left[0])
    for key, v in right[0].items():
        coeffs[key] = coeffs.get(key, 0) - v
    return {k: v for k, v in coeffs.items() if v != 0}, right[1] - left[1]


def _dnf(expr: Any) -> list[list[tuple[dict, Fraction]]]:
    """Disjunctive normal form of a formula: a list of conjunctions of atoms."""
    if not isinstance(expr, list) or not expr:
        raise UnsupportedError(f"VNN-LIB: {expr!r} is not a formula")
    head = expr[0]
    if head in ("<=", ">=", "<", ">"):
        return [[_atom(expr)]]
    if head == "and":
        result: list[list] = [[]]
        for sub in expr[1:]:
            result = [a + b for a in result for b in _dnf(sub)]
            if len(result) > 100_000:
                raise UnsupportedError("VNN-LIB: the formula's disjunctive normal form is too large")
        return result
    if head == "or":
        return [conj for sub in expr[1:] for conj in _dnf(sub)]
    raise UnsupportedError(f"VNN-LIB: connective {head!r} is not in the supported subset (and, or, comparisons)")


def parse_vnnlib(source: str | Path, text: str | None = None) -> Property:
    """Parse a VNN-LIB file (or `text`) of the competition subset (module docstring)."""
    path = str(source)
    if text is None:
        try:
            text = Path(source).read_text()
        except OSError as exc:
            raise InvalidInputError(f"cannot read VNN-LIB file {path}: {exc}") from exc
    comments = [line.strip()[1:].strip() for line in text.splitlines() if line.strip().startswith(";") and line.strip()[1:].strip()]
    declared: dict[str, set[int]] = {"X": set(), "Y": set()}
    lower: dict[int, float] = {}
    upper: dict[int, float] = {}
    output_conjuncts: list[list[list[tuple[dict, Fraction]]]] = []
    lower_at: dict[int, int] = {}  # line of the assert giving X_i its (tightest) lower / upper bound
    upper_at: dict[int, int] = {}
    output_lines: list[int] = []
    for form, line in _parse_sexprs(_tokens(text)):
        where = f"VNN-LIB line {line}"
        if not isinstance(form, list) or not form:
            raise InvalidInputError(f"{where}: unexpected top-level token {form!r}")
        if form[0] == "declare-const":
            if len(form) != 3 or not isinstance(form[1], str) or form[2] != "Real":
                raise UnsupportedError(f"{where}: unsupported declaration {form!r}")
            m = _VAR.match(form[1])
            if not m:
                raise UnsupportedError(f"{where}: variable {form[1]!r} is neither X_i nor Y_j")
            declared[m.group(1)].add(int(m.group(2)))
            continue
        if form[0] != "assert" or len(form) != 2:
            raise UnsupportedError(f"{where}: top-level command {form[0]!r} is not supported (declare-const, assert)")
        names = ", ".join(dict.fromkeys(_variables(form))) or "no variable"
        try:
            dnf = _dnf(form[1])
        except (InvalidInputError, UnsupportedError) as exc:
            message = str(exc).removeprefix("VNN-LIB: ")
            raise type(exc)(f"{where} (constraint on {names}): {message}") from None
        kinds = {key[0] for conj in dnf for coeffs, _ in conj for key in coeffs}
        if kinds == {"X"}:
            if len(dnf) != 1:
                raise UnsupportedError(f"{where}: a disjunction over the inputs (several input boxes) is not supported")
            for coeffs, const in dnf[0]:
                if len(coeffs) != 1:
                    raise UnsupportedError(f"{where}: an input constraint over several inputs is not a box")
                ((_, i), c), = coeffs.items()
                side = "upper" if c > 0 else "lower"
                bound = _to_float(const / c, f"{where}: the {side} bound of X_{i}")  # c * x_i <= const
                if c > 0:
                    if bound < upper.get(i, math.inf):
                        upper[i], upper_at[i] = bound, line
                else:
                    if bound > lower.get(i, -math.inf):
                        lower[i], lower_at[i] = bound, line
        elif kinds == {"Y"}:
            output_conjuncts.append(dnf)
            output_lines.append(line)
        elif not kinds:
            raise UnsupportedError(f"{where}: an assert without variables")
        else:
            raise UnsupportedError(f"{where}: an assert mixing inputs and outputs is not supported")
    n_in = max(declared["X"]) + 1 if declared["X"] else 0
    n_out = max(declared["Y"]) + 1 if declared["Y"] else 0
    if declared["X"] != set(range(n_in)) or declared["Y"] != set(range(n_out)) or not n_in or not n_out:
        raise InvalidInputError("VNN-LIB: inputs X_0..X_{n-1} and outputs Y_0..Y_{m-1} must all be declared")
    for i in list(lower) + list(upper):
        if i >= n_in:
            line = lower_at.get(i, upper_at.get(i))
            raise InvalidInputError(f"VNN-LIB line {line}: X_{i} is not declared (inputs X_0..X_{n_in - 1})")
    missing = [i for i in range(n_in) if i not in lower or i not in upper]
    if missing:
        raise UnsupportedError(f"VNN-LIB: input(s) {missing[:5]} have no lower or upper bound (an unbounded box)")
    lo = np.array([lower[i] for i in range(n_in)], dtype=np.float64)
    hi = np.array([upper[i] for i in range(n_in)], dtype=np.float64)
    if (lo > hi).any():
        i = int(np.argmax(lo > hi))
        raise InvalidInputError(f"VNN-LIB: empty input box at X_{i}: lower bound {float(lo[i])!r} (line {lower_at[i]}) > upper "
                                f"bound {float(hi[i])!r} (line {upper_at[i]})")
    # the conjunction of the output asserts, in DNF
    if not output_conjuncts:
        raise UnsupportedError("VNN-LIB: no output constraint")
    for dnf, line in zip(output_conjuncts, output_lines):  # every number of the formula as a float64, or refused
        for conj in dnf:
            for coeffs, const in conj:
                for (kind, j), v in coeffs.items():
                    if j >= n_out:
                        raise InvalidInputError(f"VNN-LIB line {line}: Y_{j} is not declared (outputs Y_0..Y_{n_out - 1})")
                    _to_float(v, f"VNN-LIB line {line}: the coefficient of Y_{j}", signed=False)
                names = ", ".join(f"Y_{j}" for _, j in coeffs)
                _to_float(const, f"VNN-LIB line {line}: the constant of the constraint on {names}", signed=False)
    conjunctions: list[list[tuple[dict, Fraction]]] = [[]]
    for dnf in output_conjuncts:
        conjunctions = [a + b for a in conjunctions for b in dnf]
    disjuncts = []
    for conj in conjunctions:
        c = np.zeros((len(conj), n_out), dtype=np.float64)
        d = np.zeros(len(conj), dtype=np.float64)
        for r, (coeffs, const) in enumerate(conj):
            for (kind, j), v in coeffs.items():
                c[r, j] = float(v)
            d[r] = float(const)
        disjuncts.append((c, d))
    return Property(lo, hi, n_out, disjuncts, path, comments)


def violates(prop: Property, y: np.ndarray) -> bool:
    """Whether outputs y [m] satisfy the counterexample formula (some conjunction C y <= d holds)."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    return any(bool((c @ y <= d).all()) for c, d in prop.disjuncts)
