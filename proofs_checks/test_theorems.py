"""pytest entry point: every registered theorem check, quick mode by default, full mode marked slow.

A source's claim that fails is a finding (its own verdict, "refuted" or "not supported by the evidence"), not
a failure; a bound the package relies on that fails ("violated"), or a check that crashes ("error"), fails the
test."""
from functools import cache

import pytest

from proofs_checks.framework import MIN_CLAIM_CASES, CheckContext, CheckResult, run_check
from proofs_checks.runner import discover, ordered_ids

REGISTRY = discover()
IDS = ordered_ids(REGISTRY)


@cache
def quick_result(theorem_id: str) -> CheckResult:
    return run_check(REGISTRY[theorem_id], CheckContext(quick=True))


def _assert_sound(result: CheckResult) -> None:
    details = result.counterexample or "\n".join(result.notes)
    assert result.verdict not in ("violated", "error"), f"{result.id}: {result.verdict}: {details}"
    assert result.cases > 0, f"{result.id} ran no case"
    for claim in result.source_claims:
        if claim["n"] < MIN_CLAIM_CASES:
            assert claim["verdict"] in ("not enough evidence", "refuted"), claim
        if claim["verdict"] == "refuted" and claim["n"] < MIN_CLAIM_CASES:
            assert claim["numbers"]["counterexamples"] > 0, f"{result.id}: refuted from n < {MIN_CLAIM_CASES} without a counterexample"


@pytest.mark.parametrize("theorem_id", IDS)
def test_theorem_quick(theorem_id: str) -> None:
    _assert_sound(quick_result(theorem_id))


@pytest.mark.slow
@pytest.mark.parametrize("theorem_id", IDS)
def test_theorem_full(theorem_id: str) -> None:
    _assert_sound(run_check(REGISTRY[theorem_id], CheckContext(quick=False)))


def test_algorithm_one_rate_claim_is_not_reported_as_holding() -> None:
    """Issue 16, item 5: LD-LIN's facts hold, but the proposal's O(1/sqrt(T)) claim gets its own verdict, with the
    fitted exponent, its confidence interval and n, from at least MIN_CLAIM_CASES problems."""
    result = quick_result("LD-LIN")
    assert result.verdict == "holds"
    rate = [c for c in result.source_claims if "O(1/sqrt(T))" in c["claim"]]
    assert len(rate) == 2  # eta = 0.5/sqrt(T) and fixed steps
    for claim in rate:
        assert claim["n"] >= MIN_CLAIM_CASES
        lower, upper = claim["numbers"]["95% CI"]
        assert lower <= claim["numbers"]["fitted exponent of T (mean over problems)"] <= upper
        expected = "supported" if lower <= claim["numbers"]["claimed exponent"] else "not supported by the evidence"
        assert claim["verdict"] == expected, claim


def test_local_strong_duality_claim_is_not_reported_as_holding() -> None:
    """Issue 16, item 5: LD-GAP reports the fraction of inputs where the certified lower bound equals r*, with its
    interval and n, as the proposal's claim's verdict."""
    result = quick_result("LD-GAP")
    assert result.verdict == "holds"
    (claim,) = result.source_claims
    assert "strong duality" in claim["claim"] and claim["n"] >= MIN_CLAIM_CASES
    zero, total = map(int, claim["numbers"]["inputs with lower = exact r*"].split("/"))
    assert total == claim["n"]
    assert claim["verdict"] == ("supported" if zero == total else "not supported by the evidence")
    lower, upper = claim["numbers"]["95% CI"]
    assert lower <= zero / total <= upper
