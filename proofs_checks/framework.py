"""The theorem-check framework: a registry of checks, tallies of observed/bound ratios, and verdicts.

A check is a function registered with `@theorem(...)`; the docstring of its module states the theorem
exactly (source document and equation). The function receives a `CheckContext` (quick or full mode, the
seed) and a `Report` to fill with tallies:

* `report.tally(name, role="must-hold")`: an inequality or identity the package relies on. Any violation
  makes the verdict "violated" (a bug in the bound, the code or the assumptions) and `certify check`
  exit 1.
* `report.tally(name, role="paper-claim")`: a claim of a source document that is being tested. A
  violation is a finding: the verdict becomes "refuted" and the counterexample is kept; the build does
  not fail, and the package must not certify that claim.
* `report.tally(name, role="evidence")`: a measurement reported without a pass/fail meaning.

Verdicts: "holds", "refuted", "violated", "evidence" (only evidence tallies), "error" (the check raised).
"""
from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

# hypothesis is a run-time dependency of certify (pyproject.toml): `certify check` and `certify demo` run
# these property tests, so a plain `pip install certify` has it.
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

Role = Literal["must-hold", "paper-claim", "evidence"]
Verdict = Literal["holds", "refuted", "violated", "evidence", "error", "not implemented"]


@dataclass
class Tally:
    """Counts cases of one inequality `observed <= bound` (or identity |a - b| <= tol) and keeps the worst.

    `ratio` is observed / bound for inequalities and error / tolerance for identities, so a ratio above 1
    is a violation in both; the first violating case is kept as the counterexample."""

    name: str
    role: Role = "must-hold"
    kind: str = "property"  # "symbolic", "property", "adversarial", "closed-form", "measurement"
    cases: int = 0
    violations: int = 0
    worst_ratio: float = -math.inf
    worst_case: str = ""
    counterexample: str = ""
    values: list[float] = field(default_factory=list)

    def _count(self, ratio: float, violated: bool, case: str) -> bool:
        self.cases += 1
        if ratio > self.worst_ratio or math.isnan(ratio):
            self.worst_ratio, self.worst_case = ratio, case
        if violated:
            self.violations += 1
            if not self.counterexample:
                self.counterexample = case
        return not violated

    def record(self, observed: float, bound: float, case: str = "", rtol: float = 0.0, atol: float = 0.0) -> bool:
        """One case of `observed <= bound` (allowing `rtol * |bound| + atol` for rounding). Returns True if it held."""
        observed, bound = float(observed), float(bound)
        slack = rtol * abs(bound) + atol
        violated = not (observed <= bound + slack)  # NaN counts as a violation
        ratio = observed / bound if bound > 0 else (0.0 if observed <= 0 else math.inf)
        detail = f"{case}: observed {observed:.6g} vs bound {bound:.6g}" if case else f"observed {observed:.6g} vs bound {bound:.6g}"
        return self._count(ratio, violated, detail)

    def record_close(self, value: float, reference: float, tol: float, case: str = "") -> bool:
        """One case of the identity `value == reference` up to the absolute tolerance `tol`."""
        error = abs(float(value) - float(reference))
        violated = not (error <= tol)
        detail = f"{case}: |{float(value):.10g} - {float(reference):.10g}| = {error:.3g} (tol {tol:.1g})"
        return self._count(error / tol, violated, detail)

    def record_true(self, ok: bool, case: str = "") -> bool:
        """One case of a statement that is simply true or false (e.g. a symbolic identity)."""
        return self._count(0.0 if ok else math.inf, not ok, case or self.name)

    def observe(self, value: float) -> None:
        """A measurement without a bound (evidence tallies): kept for the summary."""
        self.cases += 1
        self.values.append(float(value))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "role": self.role,
            "kind": self.kind,
            "cases": self.cases,
            "violations": self.violations,
            "worst_ratio": None if self.worst_ratio in (-math.inf,) else self.worst_ratio,
        }
        if self.counterexample:
            out["counterexample"] = self.counterexample
        if self.worst_case and not self.counterexample:
            out["worst_case"] = self.worst_case
        if self.values:
            v = sorted(self.values)
            out["observed"] = {"min": v[0], "median": v[len(v) // 2], "max": v[-1], "n": len(v)}
        return out


@dataclass
class Report:
    """What one check found: its tallies and free-text notes."""

    tallies: list[Tally] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def tally(self, name: str, role: Role = "must-hold", kind: str = "property") -> Tally:
        t = Tally(name=name, role=role, kind=kind)
        self.tallies.append(t)
        return t

    def note(self, text: str) -> None:
        self.notes.append(text)


@dataclass
class CheckContext:
    """Mode of a run: `quick` for the default test suite and `certify check --quick`, full otherwise."""

    quick: bool = True
    seed: int = 0

    def examples(self, quick: int, full: int) -> int:
        return quick if self.quick else full


@dataclass
class TheoremCheck:
    id: str
    title: str
    source: str
    statement: str
    func: Callable[[CheckContext, Report], None]


@dataclass
class CheckResult:
    id: str
    title: str
    source: str
    statement: str
    verdict: Verdict
    cases: int
    violations: int
    worst_ratio: float | None
    counterexample: str
    seconds: float
    tallies: list[dict[str, Any]]
    notes: list[str]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


REGISTRY: dict[str, TheoremCheck] = {}


def theorem(id: str, title: str, source: str) -> Callable[[Callable[[CheckContext, Report], None]], Callable]:
    """Register a check. The statement is the docstring of the module that defines it."""

    def register(func: Callable[[CheckContext, Report], None]) -> Callable[[CheckContext, Report], None]:
        import sys

        module_doc = sys.modules[func.__module__].__doc__ or ""
        if id in REGISTRY and REGISTRY[id].func.__module__ != func.__module__:
            raise ValueError(f"theorem id {id} registered twice")
        REGISTRY[id] = TheoremCheck(id, title, source, module_doc.strip(), func)
        return func

    return register


def _verdict(tallies: list[Tally]) -> Verdict:
    if any(t.violations for t in tallies if t.role == "must-hold"):
        return "violated"
    if any(t.violations for t in tallies if t.role == "paper-claim"):
        return "refuted"
    if tallies and all(t.role == "evidence" for t in tallies):
        return "evidence"
    return "holds"


def run_check(check: TheoremCheck, ctx: CheckContext) -> CheckResult:
    """Run one check; an exception becomes verdict "error" with its traceback in the notes."""
    report = Report()
    start = time.perf_counter()
    try:
        check.func(ctx, report)
        verdict = _verdict(report.tallies)
    except Exception:  # noqa: BLE001 - a crashing check is reported, not hidden
        report.note(traceback.format_exc(limit=6))
        verdict = "error"
    seconds = time.perf_counter() - start
    graded = [t for t in report.tallies if t.role != "evidence"]
    ratios = [t.worst_ratio for t in graded if t.role == "must-hold" and t.cases and math.isfinite(t.worst_ratio)]
    counter = next((t.counterexample for t in report.tallies if t.counterexample and t.role == "must-hold"), "")
    counter = counter or next((f"{t.name}: {t.counterexample}" for t in report.tallies if t.counterexample), "")
    return CheckResult(
        id=check.id,
        title=check.title,
        source=check.source,
        statement=check.statement,
        verdict=verdict,
        cases=sum(t.cases for t in report.tallies),
        violations=sum(t.violations for t in report.tallies if t.role == "must-hold"),
        worst_ratio=max(ratios) if ratios else None,
        counterexample=counter,
        seconds=seconds,
        tallies=[t.summary() for t in report.tallies],
        notes=report.notes,
    )


def run_property(strategy: st.SearchStrategy, test: Callable[[Any], None], examples: int) -> None:
    """Run `test` on `examples` cases drawn by Hypothesis, deterministically (derandomised, no database).

    `test` records into tallies instead of asserting, so every case is counted and none stops the run."""
    runner = settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[p for p in settings.default.phases if p.name != "shrink"],
    )(given(strategy)(test))
    runner()
