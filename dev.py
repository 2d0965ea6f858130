#!/usr/bin/env python3
"""Set-up and entry points for a fresh machine that has only Python (>= 3.10).

    python3 dev.py demo [ARGS...]   create .venv if needed, install certify, run `certify demo ARGS`
    python3 dev.py test [ARGS...]   same set-up (and Debian's chromium, when root), then the default test suite
                                    (pytest, slow checks excluded)
    python3 dev.py test-slow        the checks marked slow
    python3 dev.py test-gpu         the checks marked gpu (they need a CUDA device; see tests/test_gpu.py)
    python3 dev.py bench            every script under benchmarks/
    python3 dev.py artefacts        regenerate the kept artefacts under reports/ and their manifest

The virtual environment lives in `.venv/` next to this file. torch is installed first, and only when the
environment has none: by default the CPU build `torch==2.13.0` (CERTIFY_TORCH overrides the requirement),
so that a GPU user who has put their own CUDA build into `.venv` keeps it. The install is redone only when
pyproject.toml changes (a stamp file records its hash).

Kept artefacts (`artefacts`): reports/THEOREMS.md and .json (the full theorem check, `certify check`) and
reports/example/ (the quick demo, `certify demo --quick`). reports/ARTEFACTS.json records, for each, the
command, the sha256 of every output file and the sha256 of the sources it was generated from, by this rule:

    the source files of the import closure of the artefact's entry modules (`ARTEFACTS[...]["entry"]`):
    every module of the packages certify and proofs_checks that an entry module imports, directly or
    through other such modules, by any import statement (module level or inside a function), with the
    __init__ of every enclosing package; a dynamic importer pulls in its whole package (the theorem runner
    discovers every proofs_checks module, the model-spec resolver every certify.models module); plus
    the data files (.json, .npz, .npy, .csv, .txt) of every package directory in the closure. The hash
    is sha256 over the sorted lines "relative/path sha256-of-content".

tests/test_artefacts.py recomputes it and fails ("run python3 dev.py artefacts") when a source in the
closure changed, or an output file differs from the one recorded.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".certify-installed"
DEFAULT_TORCH = "torch==2.13.0"


def _run(*cmd: str | Path) -> None:
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT)


PACKAGES = ("certify", "proofs_checks")
DATA_SUFFIXES = (".json", ".npz", ".npy", ".csv", ".txt")
# module whose dynamic imports reach every module of a package -> that package
DYNAMIC_IMPORTERS = {"proofs_checks.runner": "proofs_checks", "certify.models.spec": "certify.models"}
MANIFEST = "reports/ARTEFACTS.json"
ARTEFACTS: dict[str, dict] = {
    "theorems": {
        "command": ["check", "--out", "reports", "--overwrite"],  # reports/ also holds the other artefacts
        "entry": ["proofs_checks"],
        "outputs": ["reports/THEOREMS.md", "reports/THEOREMS.json", "reports/manifest.json"],
    },
    "example": {
        "command": ["demo", "--quick", "--out", "reports/example"],
        "entry": ["certify.demo"],
        "outputs": ["reports/example"],
    },
}


def _modules(root: Path) -> dict[str, Path]:
    """Every module of PACKAGES under root: dotted name -> file (a package is its __init__.py)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported(module: str, path: Path) -> set[str]:
    """Dotted names an module's import statements name (anywhere in the file), relative ones resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            base = ".".join(base + ([node.module] if node.module else []))
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


def source_closure(root: Path, entries: list[str]) -> list[Path]:
    """The source files an artefact depends on (rule in the module docstring), sorted."""
    modules = _modules(root)

    def known(name: str) -> str | None:  # longest prefix that is a module of ours
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in modules:
                return ".".join(parts[:end])
        return None

    def with_package(name: str) -> set[str]:
        return {m for m in modules if m == name or m.startswith(name + ".")}

    todo = [m for entry in entries for m in with_package(entry)]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:end]) for end in range(1, len(parts))]  # enclosing packages' __init__
        todo += [m for m in (known(n) for n in _imported(module, modules[module])) if m]
        if module in DYNAMIC_IMPORTERS:
            todo += sorted(with_package(DYNAMIC_IMPORTERS[module]))
    files = {modules[m] for m in seen}
    for directory in {modules[m].parent for m in seen}:
        files |= {f for f in directory.iterdir() if f.is_file() and f.suffix in DATA_SUFFIXES}
    return sorted(files)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_hashes(root: Path, entries: list[str]) -> dict[str, str]:
    """relative path -> sha256 of its content, for every file of the closure."""
    return {f.relative_to(root).as_posix(): _sha256(f) for f in source_closure(root, entries)}


def combined_hash(hashes: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{p} {h}\n" for p, h in sorted(hashes.items())).encode()).hexdigest()


def output_hashes(root: Path, outputs: list[str]) -> dict[str, str]:
    """relative path -> sha256 of every file an artefact consists of (directories walked)."""
    files = []
    for out in outputs:
        path = root / out
        files += sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    return {f.relative_to(root).as_posix(): _sha256(f) for f in files}


def artefacts(names: list[str]) -> int:
    """Regenerate the kept artefacts (all, or the named ones) and record them in the manifest."""
    unknown = [n for n in names if n not in ARTEFACTS]
    if unknown:
        print(f"unknown artefact(s) {unknown}; known: {sorted(ARTEFACTS)}")
        return 64
    manifest_path = ROOT / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for name in names or list(ARTEFACTS):
        spec = ARTEFACTS[name]
        before = source_hashes(ROOT, spec["entry"])
        for out in spec["outputs"]:
            path = ROOT / out
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        print(f"artefact {name}: certify {' '.join(spec['command'])}", flush=True)
        code = subprocess.run([str(BIN / "certify"), *spec["command"]], cwd=ROOT, env=_env()).returncode
        if code != 0:
            print(f"artefact {name}: the command failed (exit {code}); manifest not updated")
            return code
        if source_hashes(ROOT, spec["entry"]) != before:
            print(f"artefact {name}: sources changed while it was generated; run `python3 dev.py artefacts` again")
            return 1
        manifest[name] = {
            "command": "certify " + " ".join(spec["command"]),
            "entry": spec["entry"],
            "rule": "import closure of the entry modules (dev.py docstring)",
            "sources_sha256": combined_hash(before),
            "sources": before,
            "outputs": output_hashes(ROOT, spec["outputs"]),
        }
        manifest_path.parent.mkdir(parents=True, exist_ok=True)
        manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"wrote {MANIFEST}")
    return 0


def _has_torch() -> bool:
    return subprocess.run([str(PY), "-c", "import torch"], capture_output=True).returncode == 0


def ensure_env() -> None:
    """Create .venv and install the package with its test extra, once per pyproject.toml version."""
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not _has_torch():
        _run(PY, "-m", "pip", "install", "-q", os.environ.get("CERTIFY_TORCH", DEFAULT_TORCH))
    # the installed torch is pinned on the same command line: onnx2torch needs torchvision, and an unpinned
    # resolve would replace a CPU torch by the newest CUDA build to match torchvision's newest wheel
    _run(PY, "-m", "pip", "install", "-q", "-e", f"{ROOT}[test,onnx,batch]", f"torch=={_torch_version()}")
    STAMP.write_text(wanted)


def _torch_version() -> str:
    """The installed torch's version without its local tag (2.13.0 for 2.13.0+cpu)."""
    out = subprocess.run([str(PY), "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True, check=True)
    return out.stdout.strip().split("+")[0]


def _env() -> dict[str, str]:
    """The environment for the commands: one intra-op thread unless the user chose otherwise. The zoo's
    models are tiny, and torch's thread pool makes their small tensor operations several times slower on
    a 2-core machine (up to 100x when other processes share the cores)."""
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


BROWSERS = ("chromium", "chromium-browser")


def ensure_browser() -> None:
    """Debian's chromium renders the report in tests/reports/test_report_browser.py (the report's layout at 700 and
    1400 px). Installed with apt-get when it is missing and this runs as root on a Debian-like system (as CI does);
    otherwise that test says how to install it."""
    if any(shutil.which(b) for b in BROWSERS) or not shutil.which("apt-get") or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return
    print("dev.py: installing Debian's chromium (headless) for the report's layout test", flush=True)
    quiet = {"stdout": subprocess.DEVNULL, "env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}}
    subprocess.run(["apt-get", "update", "-qq"], check=False, **quiet)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=False, **quiet)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "test-slow", "test-gpu", "bench", "artefacts"}:
        print(__doc__)
        return 64
    ensure_env()
    command, rest = argv[0], argv[1:]
    if command == "artefacts":
        return artefacts(rest)
    if command == "demo":
        cmd = [BIN / "certify", "demo", *rest]
    elif command == "test":
        ensure_browser()
        cmd = [PY, "-m", "pytest", "-q", *rest]
    elif command in ("test-slow", "test-gpu"):
        cmd = [PY, "-m", "pytest", "-q", "-m", command.removeprefix("test-"), *rest]
    else:
        scripts = sorted(s for s in (ROOT / "benchmarks").glob("*.py") if not s.name.startswith("_"))  # _timing: shared
        return max((subprocess.run([str(PY), str(s), *rest], cwd=ROOT, env=_env()).returncode for s in scripts), default=0)
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, env=_env()).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
