"""The theorem table (proofs_checks.framework, proofs_checks.runner, and the report's "Theorem checks" section):
source claims carry their own verdicts beside the package's must-hold facts, no claim is declared supported or
refuted from fewer than MIN_CLAIM_CASES measured cases, and every column is defined (issue 16, item 5)."""
import json

import pytest

from certify.reports.report import write_report
from proofs_checks.framework import MIN_CLAIM_CASES, CheckContext, Report, TheoremCheck, run_check
from proofs_checks.runner import CLAIM_COLUMNS, COLUMNS, PART_COLUMNS, table_markdown, write_table


def _result(func):
    return run_check(TheoremCheck("T-X", "a test row", "a source, Eq. 1", "statement", func), CheckContext())


def _measured(n: int, finding: str):
    def check(ctx: CheckContext, report: Report) -> None:
        report.tally("fact", kind="symbolic").record_true(True)
        report.claim("the source says the rate is T^-1/2", "a source, Sec. 4", finding,
                     {"fitted exponent": 0.01, "95% CI": [-0.1, 0.12]}, n, "the rule")
    return _result(check)


@pytest.mark.parametrize("finding", ["supported", "refuted", "not supported by the evidence"])
def test_measured_claim_needs_enough_cases(finding):
    few, enough = _measured(MIN_CLAIM_CASES - 1, finding), _measured(MIN_CLAIM_CASES, finding)
    assert few.source_claims[0]["verdict"] == "not enough evidence"
    assert enough.source_claims[0]["verdict"] == finding
    assert few.verdict == enough.verdict == "holds"  # the row's verdict is about the package's facts only


def _case_by_case(cases: int, violating: int, claim: str = ""):
    def check(ctx: CheckContext, report: Report) -> None:
        tally = report.tally("claim as stated", role="paper-claim", claim=claim)
        for k in range(cases):
            tally.record(2.0 if k < violating else 0.5, 1.0, f"case {k}")
    return _result(check)


def test_case_by_case_claim_verdicts():
    assert _case_by_case(MIN_CLAIM_CASES - 1, 0).source_claims[0]["verdict"] == "not enough evidence"
    assert _case_by_case(MIN_CLAIM_CASES, 0).source_claims[0]["verdict"] == "supported"
    refuted = _case_by_case(3, 1)
    (claim,) = refuted.source_claims
    assert claim["verdict"] == "refuted" and claim["numbers"]["counterexamples"] == 1
    assert claim["numbers"]["counterexample"].startswith("case 0")
    assert refuted.verdict == "evidence" and refuted.violations == 0  # no must-hold part; a finding, not a failure


def test_paper_claim_tallies_with_the_same_claim_are_pooled():
    def check(ctx: CheckContext, report: Report) -> None:
        for name, count in (("exact", 2), ("random", MIN_CLAIM_CASES)):
            tally = report.tally(name, role="paper-claim", claim="Cor 2 as stated")
            for _ in range(count):
                tally.record(0.5, 1.0)
    (claim,) = _result(check).source_claims
    assert claim["claim"] == "Cor 2 as stated" and claim["n"] == MIN_CLAIM_CASES + 2 and claim["verdict"] == "supported"


def test_must_hold_violation_is_still_a_failure():
    def check(ctx: CheckContext, report: Report) -> None:
        report.tally("bound").record(2.0, 1.0, "x = 3")
    result = _result(check)
    assert result.verdict == "violated" and result.violations == 1 and "x = 3" in result.counterexample


def _mixed(ctx: CheckContext, report: Report) -> None:
    report.tally("solver accuracy").record(1.004, 1.0, "seed 3", rtol=1e-2)
    report.claim("the dual gap vanishes locally", "a source, Sec. 3", "not supported by the evidence",
                 {"inputs with lower = exact": "0/40", "95% CI": [0.0, 0.0881]}, 40, "supported only if the gap is 0 everywhere")


def test_ratio_above_one_shows_its_tolerance():
    result = _result(_mixed)
    assert result.verdict == "holds" and result.worst_ratio > 1 and result.worst_tolerance == "rtol 0.01"
    row = next(line for line in table_markdown([result], quick=True).splitlines() if line.startswith("| T-X |"))
    assert "| 1.004 | rtol 0.01 |" in row


def test_markdown_and_json_define_every_column_and_carry_the_claims(tmp_path):
    result = _result(_mixed)
    md_path, js_path = write_table([result], tmp_path, quick=True)
    md = md_path.read_text()
    header = md.split("\n## ")[0]  # what `certify check` prints
    for columns in (COLUMNS, CLAIM_COLUMNS, PART_COLUMNS):
        for name in columns:
            assert f"- *{name}*: " in header, name
    table_header = next(line for line in header.splitlines() if line.startswith("| id | source |"))
    assert [c.strip() for c in table_header.strip("|").split("|")] == list(COLUMNS)
    row = next(line for line in header.splitlines() if line.startswith("| T-X |"))
    assert "**holds**" in row and "not supported by the evidence (n=40)" in row
    claim_row = next(line for line in header.splitlines() if "the dual gap vanishes locally" in line)
    assert "**not supported by the evidence** | 40 |" in claim_row and "0/40" in claim_row and "[0, 0.0881]" in claim_row
    table = json.loads(js_path.read_text())
    assert table["columns"] == COLUMNS and table["claim_columns"] == CLAIM_COLUMNS
    (claim,) = table["results"][0]["source_claims"]
    assert claim["verdict"] == "not supported by the evidence" and claim["n"] == 40
    assert claim["numbers"]["95% CI"] == [0.0, 0.0881] and claim["source"] == "a source, Sec. 3"


def test_report_section_shows_claims_and_column_definitions(tmp_path):
    write_table([_result(_mixed)], tmp_path, quick=True)
    (tmp_path / "summary.json").write_text(json.dumps({
        "description": "test", "method_rows": [], "certificate_note": "note", "claim_rows": [], "environment": {}}))
    md_path, page, _ = write_report(tmp_path)
    md = md_path.read_text()
    section = md[md.index("## Theorem checks"):]
    for name, text in COLUMNS.items():
        assert f"{name}: {text}." in section
    assert "| T-X | a source, Eq. 1 | holds | not supported by the evidence (n=40) |" in section
    assert "the dual gap vanishes locally | not supported by the evidence | 40 |" in section
    assert "rtol 0.01" in section and "not supported by the evidence" in page.read_text()
