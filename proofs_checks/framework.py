"""The theorem-check framework: a registry of checks, tallies of observed/bound ratios, and verdicts.

A check is a function registered with `@theorem(...)`; the docstring of its module states the theorem
exactly (source document and equation). The function receives a `CheckContext` (quick or full mode, the
seed) and a `Report` to fill with tallies and source claims:

* `report.tally(name, role="must-hold")`: an inequality or identity the package relies on. Any violation
  makes the row's verdict "violated" (a bug in the bound, the code or the assumptions) and `certify check`
  exit 1.
* `report.tally(name, role="paper-claim", claim=...)`: a universal statement of a source document tested
  case by case. Its cases become a source-claim entry (tallies with the same `claim` are pooled): one
  verified counterexample refutes the statement; "supported" needs 0 counterexamples in at least
  `MIN_CLAIM_CASES` cases. A refutation is a finding, not a failure: the build does not fail, and the package
  must not certify that claim.
* `report.claim(...)`: a source claim judged from measurements (a fitted rate, a fraction of inputs); the
  check states the rule it applied. Fewer than `MIN_CLAIM_CASES` cases give "not enough evidence".
* `report.tally(name, role="evidence")`: a measurement reported without a pass/fail meaning.

Row verdicts, on the package's must-hold facts only: "holds", "violated", "evidence" (the row checks no
must-hold fact), "error" (the check raised). Source-claim verdicts, beside them: "supported", "not supported
by the evidence", "refuted", "not enough evidence".
"""
from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np
# hypothesis is a run-time dependency of certify (pyproject.toml): `certify check` and `certify demo` run
# these property tests, so a plain `pip install certify` has it.
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

Role = Literal["must-hold", "paper-claim", "evidence"]
Verdict = Literal["holds", "violated", "evidence", "error", "not implemented"]
ClaimVerdict = Literal["supported", "not supported by the evidence", "refuted", "not enough evidence"]

MIN_CLAIM_CASES = 30  # fewest cases from which a source claim is declared supported, refuted or not supported


@dataclass
class Tally:
    """Counts cases of one inequality `observed <= bound` (or identity |a - b| <= tol) and keeps the worst.

    `ratio` is observed / bound for inequalities and error / tolerance for identities, so a ratio above 1
    is a violation in both; the first violating case is kept as the counterexample."""

    name: str
    role: Role = "must-hold"
    kind: str = "property"  # "symbolic", "property", "adversarial", "closed-form", "measurement"
    claim: str = ""  # paper-claim tallies: the source claim they test (tallies with the same claim are pooled)
    cases: int = 0
    violations: int = 0
    worst_ratio: float = -math.inf
    worst_case: str = ""
    worst_tolerance: str = ""
    counterexample: str = ""
    values: list[float] = field(default_factory=list)

    def _count(self, ratio: float, violated: bool, case: str, tolerance: str = "") -> bool:
        self.cases += 1
        if ratio > self.worst_ratio or math.isnan(ratio):
            self.worst_ratio, self.worst_case, self.worst_tolerance = ratio, case, tolerance
        if violated:
            self.violations += 1
            if not self.counterexample:
                self.counterexample = case
        return not violated

    def record(self, observed: float, bound: float, case: str = "", rtol: float = 0.0, atol: float = 0.0) -> bool:
        """One case of `observed <= bound` (allowing `rtol * |bound| + atol` for rounding). Returns True if it held.

        The ratio observed/bound may exceed 1 without a violation only within that allowance, which is kept
        with the worst case (`worst_tolerance`)."""
        observed, bound = float(observed), float(bound)
        slack = rtol * abs(bound) + atol
        violated = not (observed <= bound + slack)  # NaN counts as a violation
        ratio = observed / bound if bound > 0 else (0.0 if observed <= 0 else math.inf)
        detail = f"{case}: observed {observed:.6g} vs bound {bound:.6g}" if case else f"observed {observed:.6g} vs bound {bound:.6g}"
        allowance = ", ".join(f"{name} {value:.3g}" for name, value in (("rtol", rtol), ("atol", atol)) if value)
        return self._count(ratio, violated, detail, allowance)

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
        if self.claim:
            out["claim"] = self.claim
        if self.worst_tolerance:
            out["worst_tolerance"] = self.worst_tolerance
        if self.counterexample:
            out["counterexample"] = self.counterexample
        if self.worst_case and not self.counterexample:
            out["worst_case"] = self.worst_case
        if self.values:
            v = sorted(self.values)
            out["observed"] = {"min": v[0], "median": v[len(v) // 2], "max": v[-1], "n": len(v)}
        return out


@dataclass
class SourceClaim:
    """A source document's claim and the verdict the evidence gives it.

    `claim`: the source's words (quoted, or paraphrased with the place in the source); `numbers`: the
    measured figures the verdict rests on (names to values); `n`: the number of independent cases behind
    them; `rule`: how the verdict follows from the numbers."""

    claim: str
    source: str
    verdict: ClaimVerdict
    numbers: dict[str, Any]
    n: int
    rule: str

    def numbers_text(self) -> str:
        """The figures as `name value; ...` (4 significant digits)."""
        return "; ".join(f"{name} {_fmt_value(value)}" for name, value in self.numbers.items())

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "numbers_text": self.numbers_text()}


def _fmt_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt_value(v) for v in value) + "]"
    return str(value)


def claim_verdict(finding: ClaimVerdict, n: int) -> ClaimVerdict:
    """`finding` when it rests on at least MIN_CLAIM_CASES cases, else "not enough evidence"."""
    return finding if n >= MIN_CLAIM_CASES else "not enough evidence"


def mean_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, lower, upper): Student-t confidence interval for the mean of independent values (n >= 2)."""
    data = np.asarray(values, dtype=float)
    if data.size < 2:
        raise ValueError(f"a confidence interval needs at least 2 values, got {data.size}")
    mean = float(data.mean())
    half = float(stats.t.ppf(0.5 + confidence / 2, data.size - 1) * data.std(ddof=1) / math.sqrt(data.size))
    return mean, mean - half, mean + half


def proportion_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact binomial) confidence interval for a proportion successes/n (n >= 1)."""
    alpha = 1.0 - confidence
    lower = 0.0 if successes == 0 else float(stats.beta.ppf(alpha / 2, successes, n - successes + 1))
    upper = 1.0 if successes == n else float(stats.beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return lower, upper


@dataclass
class Report:
    """What one check found: its tallies, source claims judged from measurements, and free-text notes."""

    tallies: list[Tally] = field(default_factory=list)
    claims: list[SourceClaim] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def tally(self, name: str, role: Role = "must-hold", kind: str = "property", claim: str = "") -> Tally:
        t = Tally(name=name, role=role, kind=kind, claim=claim)
        self.tallies.append(t)
        return t

    def claim(self, claim: str, source: str, finding: ClaimVerdict, numbers: dict[str, Any], n: int, rule: str) -> SourceClaim:
        """Record a source claim judged from measurements on `n` cases; the verdict is `finding` only from
        n >= MIN_CLAIM_CASES cases ("not enough evidence" otherwise)."""
        entry = SourceClaim(claim, source, claim_verdict(finding, n), numbers, n, rule)
        self.claims.append(entry)
        return entry

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
    worst_tolerance: str
    counterexample: str
    seconds: float
    tallies: list[dict[str, Any]]
    source_claims: list[dict[str, Any]]
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
    """The row's verdict on what must hold; source claims carry their own verdicts."""
    must_hold = [t for t in tallies if t.role == "must-hold"]
    if any(t.violations for t in must_hold):
        return "violated"
    return "holds" if must_hold else "evidence"


CASE_BY_CASE_RULE = (f"a universal statement tested case by case: one verified counterexample refutes it; supported "
                     f"needs 0 counterexamples in at least {MIN_CLAIM_CASES} cases")


def case_by_case_claims(tallies: list[Tally], source: str) -> list[SourceClaim]:
    """One source-claim entry per claim tested by paper-claim tallies (tallies with the same `claim` pooled)."""
    groups: dict[str, list[Tally]] = {}
    for t in tallies:
        if t.role == "paper-claim":
            groups.setdefault(t.claim or t.name, []).append(t)
    claims = []
    for text, group in groups.items():
        n = sum(t.cases for t in group)
        violations = sum(t.violations for t in group)
        ratios = [t.worst_ratio for t in group if t.cases]
        numbers: dict[str, Any] = {"cases": n, "counterexamples": violations,
                                   "worst ratio observed/claimed": max(ratios) if ratios else None}
        counter = next((t.counterexample for t in group if t.counterexample), "")
        if counter:
            numbers["counterexample"] = counter
        verdict: ClaimVerdict = "refuted" if violations else claim_verdict("supported", n)
        claims.append(SourceClaim(text, source, verdict, numbers, n, CASE_BY_CASE_RULE))
    return claims


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
    graded = [t for t in report.tallies if t.role == "must-hold" and t.cases and math.isfinite(t.worst_ratio)]
    worst = max(graded, key=lambda t: t.worst_ratio, default=None)
    counter = next((t.counterexample for t in report.tallies if t.counterexample and t.role == "must-hold"), "")
    claims = report.claims + case_by_case_claims(report.tallies, check.source)
    return CheckResult(
        id=check.id,
        title=check.title,
        source=check.source,
        statement=check.statement,
        verdict=verdict,
        cases=sum(t.cases for t in report.tallies),
        violations=sum(t.violations for t in report.tallies if t.role == "must-hold"),
        worst_ratio=None if worst is None else worst.worst_ratio,
        worst_tolerance="" if worst is None else worst.worst_tolerance,
        counterexample=counter,
        seconds=seconds,
        tallies=[t.summary() for t in report.tallies],
        source_claims=[c.as_dict() for c in claims],
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
