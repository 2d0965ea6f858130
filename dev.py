#!/usr/bin/env python3
"""Set-up and entry points for a fresh machine that has only Python (>= 3.10).

    python3 dev.py demo [ARGS...]   create .venv if needed, install certify, run `certify demo ARGS`
    python3 dev.py test [ARGS...]   same set-up, then the default test suite (pytest, slow checks excluded)
    python3 dev.py test-slow        the checks marked slow
    python3 dev.py bench            every script under benchmarks/

The virtual environment lives in `.venv/` next to this file. torch is installed first, and only when the
environment has none: by default the CPU build `torch==2.13.0` (CERTIFY_TORCH overrides the requirement),
so that a GPU user who has put their own CUDA build into `.venv` keeps it. The install is redone only when
pyproject.toml changes (a stamp file records its hash).
"""
from __future__ import annotations

import hashlib
import os
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
    _run(PY, "-m", "pip", "install", "-q", "-e", f"{ROOT}[test]")
    STAMP.write_text(wanted)


def _env() -> dict[str, str]:
    """The environment for the commands: one intra-op thread unless the user chose otherwise. The zoo's
    models are tiny, and torch's thread pool makes their small tensor operations several times slower on
    a 2-core machine (up to 100x when other processes share the cores)."""
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "test-slow", "bench"}:
        print(__doc__)
        return 64
    ensure_env()
    command, rest = argv[0], argv[1:]
    if command == "demo":
        cmd = [BIN / "certify", "demo", *rest]
    elif command == "test":
        cmd = [PY, "-m", "pytest", "-q", *rest]
    elif command == "test-slow":
        cmd = [PY, "-m", "pytest", "-q", "-m", "slow", *rest]
    else:
        scripts = sorted((ROOT / "benchmarks").glob("*.py"))
        return max((subprocess.run([str(PY), str(s), *rest], cwd=ROOT, env=_env()).returncode for s in scripts), default=0)
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, env=_env()).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
