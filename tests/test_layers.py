"""The import contracts of pyproject.toml ([tool.importlinter], explained in ARCHITECTURE.md) hold, and the
guard bites: a copy of the package with one deliberately wrong import fails them."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports.exe" if os.name == "nt" else "lint-imports")

# The order ARCHITECTURE.md and DESIGN section 2 promise, top to bottom.
EXPECTED_LAYERS = [
    "certify.cli",
    "certify.demo | certify.batch",
    "certify.evaluation",
    "proofs_checks",
    "certify.reports",
    "certify.certificates",
    "certify.radius_bounds",
    "certify.attacks",
    "certify.explain | certify.inverse",
    "certify.bounds",
    "certify.metrics | certify.models | certify.validation | certify.scores | certify.progress | certify.quiet",
    "certify.runs",
    "certify.vocabulary",
    "certify.errors",
]


def _lint(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the tree at `root` (its pyproject.toml, its packages first on the path)."""
    if not LINT.exists():
        pytest.fail(f"{LINT} is missing: import-linter is part of the test extra (pip install -e '.[test]')")
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(LINT), "--no-cache", "--no-logo"],  # reads root/pyproject.toml
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def _contracts() -> dict[str, dict]:
    from importlinter.api import read_configuration

    config = read_configuration(str(ROOT / "pyproject.toml"))
    assert sorted(config["session_options"]["root_packages"]) == ["certify", "proofs_checks"]
    return {c["id"]: c for c in config["contracts_options"]}


def test_the_contracts_state_the_designed_order():
    contracts = _contracts()
    assert set(contracts) >= {"layers", "independent-checker", "no-cycles"}
    assert contracts["layers"]["type"] == "layers"
    assert contracts["layers"]["layers"] == EXPECTED_LAYERS
    checker = contracts["independent-checker"]
    assert checker["type"] == "forbidden"
    assert {"certify.certificates.checker", "certify.certificates.property_check",
            "certify.certificates.relaxation_check", "certify.certificates.semantics"} <= set(checker["source_modules"])
    assert {"certify.explain", "certify.bounds", "certify.attacks"} <= set(checker["forbidden_modules"])
    assert checker.get("allow_indirect_imports", "False") in ("False", "false", False)  # chains count too
    assert "ignore_imports" not in checker and "ignore_imports" not in contracts["layers"]


def test_the_package_keeps_its_import_contracts():
    result = _lint(ROOT)
    assert result.returncode == 0, "import contracts broken (see ARCHITECTURE.md):\n" + result.stdout + result.stderr


def _copy_tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("certify", "proofs_checks"):
        shutil.copytree(ROOT / package, root / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def _add_import(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}  # deliberately wrong import (tests/test_layers.py)\n")


def test_a_wrong_layer_import_is_caught(tmp_path):
    root = _copy_tree(tmp_path)
    _add_import(root / "certify" / "bounds" / "sets.py", "import certify.explain.gradient")
    result = _lint(root)
    assert result.returncode != 0, result.stdout
    assert "certify layers, top to bottom BROKEN" in result.stdout
    assert "certify.bounds.sets -> certify.explain.gradient" in result.stdout


@pytest.mark.parametrize("imports, chain", [
    # indirect chains count: the checker importing a module that imports the solver breaks the contract
    ((("certificates/checker.py", "certify.metrics.sparsity"), ("metrics/sparsity.py", "certify.explain.base")),
     "certify.certificates.checker -> certify.metrics.sparsity"),
    # the property and local-constant checkers are part of the independent checker
    ((("certificates/property_check.py", "certify.bounds.sets"),), "certify.certificates.property_check -> certify.bounds.sets"),
    ((("certificates/local_check.py", "certify.bounds.local"),), "certify.certificates.local_check -> certify.bounds.local"),
], ids=["checker-indirect", "property_check", "local_check"])
def test_the_checker_reaching_solver_or_bound_code_is_caught(tmp_path, imports, chain):
    root = _copy_tree(tmp_path)
    for module, target in imports:
        _add_import(root / "certify" / module, f"import {target}")
    result = _lint(root)
    assert result.returncode != 0, result.stdout
    assert "the certificate checker imports no solver, verification or attack code BROKEN" in result.stdout
    assert chain in result.stdout


def test_the_prox_checker_reaching_the_lpn_is_caught(tmp_path):
    """The prox checker re-implements psi from the parameters: importing certify.inverse (the LPN it checks)
    breaks its own contract."""
    root = _copy_tree(tmp_path)
    _add_import(root / "certify" / "certificates" / "prox_check.py", "import certify.inverse.lpn")
    result = _lint(root)
    assert result.returncode != 0, result.stdout
    assert "the prox checker re-derives psi from the parameters" in result.stdout and "BROKEN" in result.stdout
    assert "certify.certificates.prox_check -> certify.inverse.lpn" in result.stdout


def test_the_importance_checker_reaching_the_shap_xrt_code_is_caught(tmp_path):
    """The importance-test checker draws by its own copy of the sampling protocol: importing the library's
    SHAP-XRT (whose sampler it re-checks) breaks the independent-checker contract."""
    root = _copy_tree(tmp_path)
    _add_import(root / "certify" / "certificates" / "xrt_check.py", "import certify.explain.shap_xrt")
    result = _lint(root)
    assert result.returncode != 0, result.stdout
    assert "certify.certificates.xrt_check -> certify.explain.shap_xrt" in result.stdout


def test_the_theorem_suite_may_not_import_the_cli(tmp_path):
    """The package and the theorem suite import each other only downwards: proofs_checks -> certify.cli fails."""
    root = _copy_tree(tmp_path)
    _add_import(root / "proofs_checks" / "nets.py", "import certify.cli")
    result = _lint(root)
    assert result.returncode != 0, result.stdout
    assert "proofs_checks.nets -> certify.cli" in result.stdout


def test_every_top_level_module_has_a_layer():
    """A new module or subpackage of certify cannot sit outside the contract unnoticed."""
    layered = {name.strip() for layer in _contracts()["layers"]["layers"] for name in layer.split("|")}
    package = ROOT / "certify"
    top = {f"certify.{p.stem}" for p in package.glob("*.py") if p.name != "__init__.py"}
    top |= {f"certify.{p.name}" for p in package.iterdir() if (p / "__init__.py").exists()}
    assert top <= layered, f"modules in no layer of pyproject.toml's contract: {sorted(top - layered)}"
