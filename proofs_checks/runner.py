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
from proofs_checks.framework import REGISTRY, CheckContext, CheckResult, TheoremCheck, run_check

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


def run_checks(
    only: Iterable[str] | None = None, quick: bool = True, progress: bool = False
) -> list[CheckResult]:
    """Run the registered checks (all, or the ids in `only`) and return their results in table order."""
    registry = discover()
    ids = ordered_ids(registry)
    if only:
        wanted = list(only)
        unknown = [i for i in wanted if i not in registry]
        if unknown:
            from certify.errors import UsageError

            raise UsageError(f"unknown theorem id(s) {unknown}; known: {ids}")
        ids = [i for i in ids if i in wanted]
    ctx = CheckContext(quick=quick)
    if progress:
        from certify.progress import progress_bar

        iterator = progress_bar(ids, desc="theorem checks", unit="check")
    else:
        iterator = ids
    return [run_check(registry[i], ctx) for i in iterator]


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def table_markdown(results: list[CheckResult], quick: bool, include_missing: bool = True) -> str:
    """The theorem table as Markdown: one row per check, then each check's tallies and notes."""
    lines = [
        "# Theorem table",
        "",
        f"Mode: {'quick' if quick else 'full'}. Generated by `certify check{' --quick' if quick else ''}`"
        f" (Python {platform.python_version()}).",
        "",
        "Verdicts: *holds* (0 violations of what the package relies on); *refuted* (a source's claim fails:"
        " counterexample given, the package does not certify it); *violated* (a bound the package relies on"
        " failed: a bug); *evidence* (a measurement); *not implemented*.",
        "",
        "| id | source | verdict | cases | violations | worst ratio observed/bound | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    done = {r.id for r in results}
    for r in results:
        lines.append(
            f"| {r.id} | {r.source} | **{r.verdict}** | {r.cases} | {r.violations} | {_fmt_ratio(r.worst_ratio)} | {r.seconds:.1f} |"
        )
    if include_missing:
        for rid, source, _ in DESIGN_ROWS:
            if rid not in done:
                lines.append(f"| {rid} | {source} | not implemented | - | - | - | - |")
    for r in results:
        lines += ["", f"## {r.id}: {r.title}", "", f"Source: {r.source}. Verdict: **{r.verdict}**.", ""]
        lines += ["```", r.statement, "```", ""]
        lines += ["| part | role | kind | cases | violations | worst ratio | note |", "|---|---|---|---|---|---|---|"]
        for t in r.tallies:
            note = t.get("counterexample") or t.get("worst_case") or ""
            if "observed" in t:
                o = t["observed"]
                note = f"min {o['min']:.4g}, median {o['median']:.4g}, max {o['max']:.4g} over {o['n']}"
            note = note.replace("|", "/").replace("\n", " ")
            lines.append(
                f"| {t['name']} | {t['role']} | {t['kind']} | {t['cases']} | {t['violations']} | {_fmt_ratio(t['worst_ratio'])} | {note} |"
            )
        if r.counterexample:
            lines += ["", f"Counterexample: {r.counterexample}"]
        for n in r.notes:
            lines += ["", n]
    return "\n".join(lines) + "\n"


def write_table(results: list[CheckResult], out_dir: Path, quick: bool) -> tuple[Path, Path]:
    """Write THEOREMS.md and THEOREMS.json into `out_dir` (created if needed); returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "THEOREMS.md"
    js = out_dir / "THEOREMS.json"
    md.write_text(table_markdown(results, quick))
    js.write_text(json.dumps({"quick": quick, "results": [r.as_dict() for r in results]}, indent=2, default=str))
    return md, js


def has_violation(results: list[CheckResult]) -> bool:
    return any(r.verdict in ("violated", "error") for r in results)
