"""The kept artefacts under reports/ are those the current sources produce: reports/ARTEFACTS.json records
the sources each was generated from (rule: dev.py's docstring) and the hash of every output file; a change
to a source in an artefact's import closure, or an edited output, fails here until
`python3 dev.py artefacts` regenerates them."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "run python3 dev.py artefacts"


def _dev():
    spec = importlib.util.spec_from_file_location("certify_dev", ROOT / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dev = _dev()


def _manifest() -> dict:
    path = ROOT / dev.MANIFEST
    if not path.exists():
        pytest.fail(f"{dev.MANIFEST} is missing: {REGENERATE}")
    return json.loads(path.read_text())


def _diff(recorded: dict[str, str], current: dict[str, str]) -> str:
    changed = sorted(p for p in recorded.keys() & current.keys() if recorded[p] != current[p])
    added, removed = sorted(current.keys() - recorded.keys()), sorted(recorded.keys() - current.keys())
    return "; ".join(f"{label}: {', '.join(paths)}" for label, paths in
                     (("changed", changed), ("new", added), ("removed", removed)) if paths)


@pytest.mark.parametrize("name", sorted(dev.ARTEFACTS))
def test_kept_artefact_matches_its_sources(name):
    record = _manifest().get(name)
    if record is None:
        pytest.fail(f"artefact {name!r} is not recorded in {dev.MANIFEST}: {REGENERATE}")
    spec = dev.ARTEFACTS[name]
    assert record["entry"] == spec["entry"], f"the entry modules of {name!r} changed: {REGENERATE}"
    current = dev.source_hashes(ROOT, spec["entry"])
    assert record["sources_sha256"] == dev.combined_hash(record["sources"]), f"{dev.MANIFEST} was edited by hand"
    if record["sources_sha256"] != dev.combined_hash(current):
        pytest.fail(f"artefact {name!r} ({', '.join(spec['outputs'])}) is out of date with its sources "
                    f"({_diff(record['sources'], current)}): {REGENERATE}")
    outputs = dev.output_hashes(ROOT, spec["outputs"])
    if outputs != record["outputs"]:
        pytest.fail(f"artefact {name!r} differs from what {record['command']!r} wrote "
                    f"({_diff(record['outputs'], outputs)}): {REGENERATE}")


def test_theorem_table_lists_every_registered_row():
    """The symptom of issue 11: a kept table showing implemented rows as "not implemented"."""
    from proofs_checks.runner import discover

    lines = (ROOT / "reports" / "THEOREMS.md").read_text().splitlines()
    stale = [i for i in discover() if any(line.startswith(f"| {i} |") and "not implemented" in line for line in lines)]
    missing = [i for i in discover() if not any(line.startswith(f"| {i} |") for line in lines)]
    assert not stale, f"reports/THEOREMS.md shows registered rows {stale} as not implemented: {REGENERATE}"
    assert not missing, f"reports/THEOREMS.md has no row for {missing}: {REGENERATE}"


# ------------------------------------------------------------------------------- the rule itself


@pytest.fixture()
def tree(tmp_path) -> Path:
    root = tmp_path / "tree"
    for package in dev.PACKAGES:
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root


def _relative(root: Path, entries: list[str]) -> set[str]:
    return {f.relative_to(root).as_posix() for f in dev.source_closure(root, entries)}


def test_closure_follows_imports_including_dynamic_and_function_level(tree):
    theorems = _relative(tree, ["proofs_checks"])
    assert "certify/bounds/lipschitz.py" in theorems and "certify/vocabulary.py" in theorems
    assert "certify/__init__.py" in theorems and "certify/bounds/__init__.py" in theorems  # enclosing packages
    assert "certify/cli.py" not in theorems and "certify/certificates/checker.py" not in theorems
    example = _relative(tree, ["certify.demo"])
    # the demo calls the runner, which discovers every row dynamically
    assert {p for p in theorems if p.startswith("proofs_checks/")} <= example
    assert "certify/certificates/certificate.schema.json" in example  # package data
    # a function-level import is followed: certify.cli imports proofs_checks inside a function
    assert "proofs_checks/runner.py" in _relative(tree, ["certify.cli"])


def test_hash_changes_exactly_when_a_source_in_the_closure_changes(tree):
    entries = ["proofs_checks"]
    before = dev.combined_hash(dev.source_hashes(tree, entries))
    cli = tree / "certify" / "cli.py"
    cli.write_text(cli.read_text() + "\n# an edit outside the closure\n")
    assert dev.combined_hash(dev.source_hashes(tree, entries)) == before
    lipschitz = tree / "certify" / "bounds" / "lipschitz.py"
    lipschitz.write_text(lipschitz.read_text() + "\n# an edit inside the closure\n")
    assert dev.combined_hash(dev.source_hashes(tree, entries)) != before
