"""Discover, run and tabulate the theorem checks (`certify check`, and the pytest entry point)."""
from __future__ import annotations

import importlib
import json
import pkgutil
import platform
import traceback
from pathlib import Path
from typing import Iterable

import proofs_checks
from certify.runs import atomic_write
from proofs_checks.framework import MIN_CLAIM_CASES, REGISTRY, CheckContext, CheckResult, TheoremCheck, run_check

INFRASTRUCTURE = {"framework", "runner", "nets"}

# Rows of the design's theorem registry (DESIGN section 6), in its order; rows without a module yet are
# listed as "not implemented" so the table never hides what is missing.
DESIGN_ROWS: list[tuple[str, str, str]] = [
    ("MG-T1.1", "paper Thm 1(1)", "grad g^rho(x) = grad g(z*) where g is differentiable at z*"),
    ("MG-T1.2", "paper Thm 1(2)", "grad g^rho(x) = (x - z*)/rho"),
    ("MG-T1.3", "paper Thm 1(3)", "grad g^rho is 1/min(rho, 1/lambda - rho)-Lipschitz"),
    ("MG-C1", "paper Cor 1", "MG stability under ||delta||_2 <= eps"),
    ("MG-P1", "paper Prop 1", "Gaussian smoothing of an L-Lipschitz f is sqrt(2/pi) L/sigma-smooth"),
    ("MG-T2", "paper Thm 2", "ST/GST identities of the sparse envelopes"),
    ("MG-C2", "paper Cor 2", "sparse stability: false as stated; corrected bound"),
    ("MG-LOC", "DESIGN section 11", "Corollary 1 with the local lambda on B(x, eps + rho L)"),
    ("MG-A1", "paper Alg 1", "linear convergence of the fixed-step inner solver"),
    ("MG-ENV", "convex analysis", "closed-form Moreau envelopes match the solver"),
    ("LD-KKT", "proposal Sec 3", "stationarity at the computed optimum"),
    ("LD-LIN", "proposal Sec 3-4", "linear classifiers: exact r*; Algorithm 1 rate"),
    ("LD-GAP", "proposal Sec 3-4", "local strong duality claim, measured"),
    ("LD-SOUND", "verification", "certified lower <= exact r* <= witnessed upper"),
    ("LIP", "verification", "sampled <= LipSDP <= product bound"),
    ("CURV", "verification", "certified lambda >= observed negative curvature"),
    ("LPN-PROX", "talk (Gribonval & Nikolova)", "gradients of convex functions are proxes"),
    ("LPN-R", "talk (LPN)", "regulariser recovery on closed forms"),
    ("LPN-PM", "talk (LPN)", "proximal matching approaches the MAP denoiser"),
    ("LPN-PNP", "talk (LPN)", "PnP proximal gradient with a learned prox converges"),
    ("HSHAP", "talk (h-Shap)", "exactness and cost under the OR-game assumption"),
    ("XRT", "talk (SHAP-XRT)", "E[p] <= 1 - K/(K+1) gamma; validity under the null"),
    ("SKIT", "talk (testing by betting)", "type-I error <= alpha (Ville)"),
]


def discover() -> dict[str, TheoremCheck]:
    """Import every check module of the package (each registers itself) and return the registry.

    A module that fails to import is registered as a check of its own, id "<module> (import failed)",
    whose run raises with the import's traceback: it shows as verdict "error" (exit 1) instead of taking
    every other row down with it."""
    for info in pkgutil.iter_modules(proofs_checks.__path__):
        if info.name not in INFRASTRUCTURE and not info.name.startswith("test_"):
            try:
                importlib.import_module(f"proofs_checks.{info.name}")
            except Exception:  # noqa: BLE001 - reported as an "error" row, never hidden
                REGISTRY[f"{info.name} (import failed)"] = _import_failure(info.name, traceback.format_exc(limit=8))
    return REGISTRY


def _import_failure(module: str, trace: str) -> TheoremCheck:
    def run(ctx: CheckContext, report: object) -> None:
        raise ImportError(f"proofs_checks.{module} failed to import:\n{trace}")

    return TheoremCheck(f"{module} (import failed)", f"module proofs_checks.{module} failed to import",
                        f"proofs_checks/{module}.py", "", run)


def ordered_ids(registry: dict[str, TheoremCheck]) -> list[str]:
    design = [row[0] for row in DESIGN_ROWS]
    extra = sorted(set(registry) - set(design))
    return [i for i in design if i in registry] + extra


def selected_ids(only: Iterable[str] | None = None, registry: dict | None = None) -> list[str]:
    """The ids to run, in table order: all, or those in `only`; UsageError naming any unknown id."""
    registry = discover() if registry is None else registry
    ids = ordered_ids(registry)
    if not only:
        return ids
    wanted = list(only)
    unknown = [i for i in wanted if i not in registry]
    if unknown:
        from certify.errors import UsageError

        raise UsageError(f"unknown theorem id(s) {unknown}; known: {ids}")
    return [i for i in ids if i in wanted]


def run_checks(
    only: Iterable[str] | None = None, quick: bool = True, progress: bool = False
) -> list[CheckResult]:
    """Run the registered checks (all, or the ids in `only`) and return their results in table order."""
    registry = discover()
    ids = selected_ids(only, registry)
    ctx = CheckContext(quick=quick)
    if progress:
        from certify.progress import progress_bar

        iterator = progress_bar(ids, desc="theorem checks", unit="check")
    else:
        iterator = ids
    return [run_check(registry[i], ctx) for i in iterator]


# The theorem table's columns and their definitions (shown in the table's header, the JSON and the report).
COLUMNS: dict[str, str] = {
    "id": "the row of the theorem registry (DESIGN section 6)",
    "source": "the document (and place in it) the row's statement comes from",
    "package facts": "verdict on the inequalities and identities the package relies on (the row's must-hold"
                     " parts): holds = 0 violations; violated = at least one (a bug: `certify check` exits 1);"
                     " evidence = the row checks no must-hold fact; error = the check raised",
    "source claims": "each claim of the source the row tests, with its own verdict and its number of cases n:"
                     " supported, not supported by the evidence, refuted, or not enough evidence"
                     f" (fewer than {MIN_CLAIM_CASES} cases; a verified counterexample refutes a universal"
                     " statement whatever n); the figures are in the row's section",
    "cases": "cases examined over all the row's parts (must-hold facts, source claims and measurements)",
    "violations": "violations of the must-hold facts (must be 0)",
    "worst ratio": "the largest observed/allowed over the must-hold cases (error/tolerance for identities);"
                   " above 1 only within the rounding tolerance shown in the next column; - if none is finite",
    "tolerance": "the rounding allowance of the worst case (rtol: relative to the bound, atol: absolute), shown"
                 " when the worst ratio exceeds 1",
    "seconds": "wall-clock time of the row's check",
}

# The columns of each row's table of parts.
PART_COLUMNS: dict[str, str] = {
    "part": "one inequality, identity or measurement of the row",
    "role": "must-hold (the package relies on it), paper-claim (a source's statement tested case by case) or"
            " evidence (a measurement without pass/fail meaning)",
    "kind": "how the cases were made: symbolic, closed-form, property (Hypothesis), adversarial search or"
            " measurement",
    "cases": "cases of this part",
    "violations": "cases where the inequality or identity failed",
    "worst ratio": "the largest observed/allowed over the part's cases (error/tolerance for identities)",
    "note": "the first violating case, else the worst case and its tolerance, or the measurement's min,"
            " median and max",
}

# The columns of each row's table of source claims.
CLAIM_COLUMNS: dict[str, str] = {
    "claim": "the source's words, quoted or paraphrased with the place in the source",
    "verdict": "supported, not supported by the evidence, refuted, or not enough evidence",
    "n": "independent cases behind the verdict",
    "numbers": "the measured figures the verdict rests on",
    "rule": "how the verdict follows from the numbers",
}


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def claims_cell(claims: list[dict]) -> str:
    """The source-claims cell of a row: each claim's verdict and n."""
    return "; ".join(f"{c['verdict']} (n={c['n']})" for c in claims) or "-"


def _definitions(columns: dict[str, str]) -> list[str]:
    return [f"- *{name}*: {text}." for name, text in columns.items()]


def _header(columns: dict[str, str]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def table_markdown(results: list[CheckResult], quick: bool, include_missing: bool = True) -> str:
    """The theorem table as Markdown: the column definitions, one row per check (its verdict on the package's
    facts beside its source claims' verdicts), then each check's source claims, tallies and notes."""
    lines = [
        "# Theorem table",
        "",
        f"Mode: {'quick' if quick else 'full'}. Generated by `certify check{' --quick' if quick else ''}`"
        f" (Python {platform.python_version()}).",
        "",
        "Columns:",
        "",
        *_definitions(COLUMNS),
        "",
        *_header(COLUMNS),
    ]
    done = {r.id for r in results}
    for r in results:
        tolerance = r.worst_tolerance if r.worst_ratio is not None and r.worst_ratio > 1 else "-"
        lines.append(
            f"| {r.id} | {r.source} | **{r.verdict}** | {claims_cell(r.source_claims)} | {r.cases} | {r.violations} |"
            f" {_fmt_ratio(r.worst_ratio)} | {tolerance or '-'} | {r.seconds:.1f} |"
        )
    if include_missing:
        for rid, source, _ in DESIGN_ROWS:
            if rid not in done:
                lines.append(f"| {rid} | {source} | not implemented | - | - | - | - | - | - |")
    claimed = [(r.id, c) for r in results for c in r.source_claims]
    if claimed:
        lines += ["", "Source claims (the numbers behind the verdicts of the source-claims column):", "",
                  *_definitions({"id": COLUMNS["id"], **CLAIM_COLUMNS}), "", *_header({"id": "", **CLAIM_COLUMNS})]
        for rid, c in claimed:
            lines.append(f"| {rid} | {_cell(c['claim'])} | **{c['verdict']}** | {c['n']} | {_cell(c['numbers_text'])} |"
                         f" {_cell(c['rule'])} |")
    if results:
        lines += ["", "Each row's section below gives its statement and a table of its parts. Part columns:", "",
                  *_definitions(PART_COLUMNS)]
    for r in results:
        lines += ["", f"## {r.id}: {r.title}", "", f"Source: {r.source}. Package facts: **{r.verdict}**."
                  f" Source claims: {claims_cell(r.source_claims)}.", ""]
        lines += ["```", r.statement, "```", ""]
        lines += _header(PART_COLUMNS)
        for t in r.tallies:
            note = t.get("counterexample") or t.get("worst_case") or ""
            if t.get("worst_tolerance") and not t.get("counterexample"):
                note += f" (tolerance {t['worst_tolerance']})"
            if "observed" in t:
                o = t["observed"]
                note = f"min {o['min']:.4g}, median {o['median']:.4g}, max {o['max']:.4g} over {o['n']}"
            lines.append(
                f"| {_cell(t['name'])} | {t['role']} | {t['kind']} | {t['cases']} | {t['violations']} | {_fmt_ratio(t['worst_ratio'])} | {_cell(note)} |"
            )
        if r.counterexample:
            lines += ["", f"Counterexample: {r.counterexample}"]
        for n in r.notes:
            lines += ["", n]
    return "\n".join(lines) + "\n"


def write_table(results: list[CheckResult], out_dir: Path, quick: bool) -> tuple[Path, Path]:
    """Write THEOREMS.md and THEOREMS.json (with the column definitions) into `out_dir` (created if needed);
    returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "THEOREMS.md"
    js = out_dir / "THEOREMS.json"
    atomic_write(md, table_markdown(results, quick))
    table = {"quick": quick, "columns": COLUMNS, "claim_columns": CLAIM_COLUMNS, "part_columns": PART_COLUMNS,
             "results": [r.as_dict() for r in results]}
    atomic_write(js, json.dumps(table, indent=2, default=str))
    return md, js


def has_violation(results: list[CheckResult]) -> bool:
    return any(r.verdict in ("violated", "error") for r in results)
