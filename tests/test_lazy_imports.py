"""Lazy imports (issue 18, part 2): `certify verify` loads neither scikit-learn, scipy's optimisation stack, cvxpy
nor matplotlib, and the data-set cache (certify.models.datasets) that lets a zoo model load without them."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from certify.cli import main
from certify.models.datasets import LOADERS, cache_dir, load_dataset

HEAVY = ("sklearn", "cvxpy", "matplotlib", "scipy.optimize", "sympy")

# Runs argv[2:] through the CLI in a fresh interpreter, then prints which HEAVY modules it imported.
PROBE = """
import json, sys
from certify.cli import main
heavy = sys.argv[1].split(",")
code = main(sys.argv[2:])
print(json.dumps({"code": code, "loaded": sorted(m for m in heavy if m in sys.modules)}))
"""
LOAD_PROBE = """
import json, sys
from certify.models.datasets import load_dataset
load_dataset(sys.argv[1])
print(json.dumps(sorted(m for m in ("sklearn", "scipy.optimize") if m in sys.modules)))
"""


def _run(script: str, *args: str) -> str:
    """The last line a fresh interpreter running `script` prints (it inherits this process's environment)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture()
def empty_cache(tmp_path, monkeypatch):
    """A fresh, empty $CERTIFY_CACHE for this test and its subprocesses."""
    monkeypatch.setenv("CERTIFY_CACHE", str(tmp_path / "cache"))


def test_verify_of_a_moreaugrad_certificate_imports_no_heavy_package(tmp_path):
    """`explain` (in this process) caches the model and its data set; `verify` in a fresh process then needs neither
    scikit-learn nor the other heavy packages."""
    cert = tmp_path / "cert.json"
    assert main(["explain", "--model", "digits-softplus-mlp", "--method", "moreaugrad", "--index", "0",
                 "--out", str(cert)]) == 0
    result = json.loads(_run(PROBE, ",".join(HEAVY), "verify", str(cert)))
    assert result == {"code": 0, "loaded": []}


def test_the_probe_sees_scikit_learn_when_a_data_set_is_built(empty_cache):
    """The control: a data set not in the cache is built with scikit-learn, and the probe reports it; once
    cached, loading it imports neither scikit-learn nor scipy.optimize."""
    assert json.loads(_run(LOAD_PROBE, "digits-flat")) == ["scipy.optimize", "sklearn"]
    assert json.loads(_run(LOAD_PROBE, "digits-flat")) == []


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_a_cached_data_set_equals_a_fresh_build(name, empty_cache):
    fresh = LOADERS[name]()
    load_dataset(name)  # builds and caches
    assert len(list(cache_dir().glob(f"{name}-*.pt"))) == 1
    cached = load_dataset(name)
    assert type(cached) is type(fresh)
    for field in dataclasses.fields(fresh):
        a, b = getattr(fresh, field.name), getattr(cached, field.name)
        if isinstance(a, torch.Tensor):
            assert a.dtype == b.dtype and torch.equal(a, b), field.name
        else:
            assert a == b, field.name


@pytest.mark.parametrize("damage", ["unreadable", "changed tensor"])
def test_a_damaged_cache_entry_is_rebuilt_not_trusted(damage, empty_cache, capsys):
    fresh = LOADERS["moons"]()
    load_dataset("moons")
    (entry,) = cache_dir().glob("moons-*.pt")
    if damage == "unreadable":
        entry.write_bytes(b"not a torch file")
    else:  # a valid file whose inputs were changed after it was written
        record = torch.load(entry, weights_only=True)
        record["x_train"][0, 0] += 1.0
        torch.save(record, entry)
    data = load_dataset("moons")
    assert torch.equal(data.x_train, fresh.x_train)
    assert "rebuilding it" in capsys.readouterr().err
    assert torch.equal(load_dataset("moons").x_train, fresh.x_train)  # the rewritten entry is used again
    assert capsys.readouterr().err == ""
