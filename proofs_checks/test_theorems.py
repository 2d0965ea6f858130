"""pytest entry point: every registered theorem check, quick mode by default, full mode marked slow.

A source's claim that fails is a finding ("refuted"), not a failure; a bound the package relies on that
fails ("violated"), or a check that crashes ("error"), fails the test."""
import pytest

from proofs_checks.framework import CheckContext, run_check
from proofs_checks.runner import discover, ordered_ids

REGISTRY = discover()
IDS = ordered_ids(REGISTRY)


def _assert_sound(result) -> None:
    details = result.counterexample or "\n".join(result.notes)
    assert result.verdict not in ("violated", "error"), f"{result.id}: {result.verdict}: {details}"
    assert result.cases > 0, f"{result.id} ran no case"


@pytest.mark.parametrize("theorem_id", IDS)
def test_theorem_quick(theorem_id: str) -> None:
    _assert_sound(run_check(REGISTRY[theorem_id], CheckContext(quick=True)))


@pytest.mark.slow
@pytest.mark.parametrize("theorem_id", IDS)
def test_theorem_full(theorem_id: str) -> None:
    _assert_sound(run_check(REGISTRY[theorem_id], CheckContext(quick=False)))
