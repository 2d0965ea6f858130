"""Regressions from a fresh user's attack on the certificate store (issue 17, user17 report): `verify --store` binds
each row's key (input id, eps, k, method parameters, model) to its certificate, names malformed rows and deleted
ones; a corrupt SQLite file is exit 2 for verify, export and batch; `--inputs DIR` reads files as `certify explain`
does; Ctrl-C while the pool starts prints one line; concurrent runs on one store count every certificate."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from certify.batch.executors import ProcessExecutor
from certify.batch.runner import BatchConfig, dataset_inputs, directory_inputs, run_batch
from certify.batch.store import CertificateStore, sha256_text
from certify.batch.verify import verify_store
from certify.cli import main
from certify.errors import EXIT_UNUSABLE, InvalidInputError

MODEL = "zoo:digits-softplus-mlp"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CERTIFY_NO_PROGRESS": "1"}


def _run(path, config, inputs):
    with CertificateStore(path) as store, ProcessExecutor(1) as executor:
        return run_batch(config, inputs, store, executor, "test", progress=False)


def _restamp(db, where, text):
    db.execute(f"UPDATE certificates SET certificate = ?, sha256 = ? WHERE {where}", (text, sha256_text(text)))


def _value(db, column: str, input_id: str):
    return db.execute(f"SELECT {column} FROM certificates WHERE input_id = ?", (input_id,)).fetchone()[0]


def _copy(src: Path, dst: Path) -> Path:
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    return dst


@pytest.fixture(scope="module")
def folder_store(tmp_path_factory):
    """A store of 3 inputs given as a folder of .npy files (ids FILE@HASH), gradient method."""
    root = tmp_path_factory.mktemp("folder")
    x = dataset_inputs("digits-flat", "test", 3).x
    (root / "in").mkdir()
    for i in range(3):
        np.save(root / "in" / f"x{i}.npy", x[i])
    path = root / "runs.sqlite"
    _run(path, BatchConfig(MODEL, ["gradient"], chunk=3), directory_inputs(root / "in", (64,)))
    return path


@pytest.fixture(scope="module")
def dataset_store(tmp_path_factory):
    """Two stores of the same 3 digits inputs, eps 0.1 and eps 0.05 (gradient)."""
    root = tmp_path_factory.mktemp("dataset")
    inputs = dataset_inputs("digits-flat", "test", 3)
    for eps in (0.1, 0.05):
        _run(root / f"eps{eps}.sqlite", BatchConfig(MODEL, ["gradient"], eps=eps, chunk=3), inputs)
    return root


def test_an_untouched_store_verifies(folder_store, dataset_store):
    for path in (folder_store, dataset_store / "eps0.1.sqlite"):
        report = verify_store(path, progress=False)
        assert report.all_valid and report.valid == 3 and report.missing == []


def test_swapped_folder_certificates_are_invalid(folder_store, tmp_path):
    path = _copy(folder_store, tmp_path / "swapped.sqlite")
    with sqlite3.connect(path) as db:
        rows = dict(db.execute("SELECT input_id, certificate FROM certificates"))
        a, b = sorted(rows)[:2]
        _restamp(db, f"input_id = '{a}'", rows[b])
        _restamp(db, f"input_id = '{b}'", rows[a])
    assert {r["input_id"] for r in verify_store(path, progress=False).invalid} == {a, b}


def test_a_certificate_under_an_invented_id_is_invalid(folder_store, tmp_path):
    path = _copy(folder_store, tmp_path / "dup.sqlite")
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO certificates (input_id, method, params, certificate, sha256, status, seconds, run_id) "
                   "SELECT 'fake.npy@0123456789abcdef', method, params, certificate, sha256, status, seconds, run_id "
                   "FROM certificates LIMIT 1")
    assert [r["input_id"] for r in verify_store(path, progress=False).invalid] == ["fake.npy@0123456789abcdef"]


@pytest.mark.parametrize("change", [{"eps": 0.5}, {"k": 3}, {"params": {"n_steps": 7}}])
def test_a_key_edited_away_from_its_certificate_is_invalid(dataset_store, tmp_path, change):
    path = _copy(dataset_store / "eps0.1.sqlite", tmp_path / "edited.sqlite")
    with sqlite3.connect(path) as db:
        key = json.loads(_value(db, "params", "digits-flat:test:1"))
        db.execute("UPDATE certificates SET params = ? WHERE input_id = 'digits-flat:test:1'",
                   (json.dumps({**key, **change}, sort_keys=True, separators=(",", ":")),))
    report = verify_store(path, progress=False)
    assert [r["input_id"] for r in report.invalid] == ["digits-flat:test:1"]
    assert [r["input_id"] for r in report.missing] == ["digits-flat:test:1"]  # the original key lost its row


def test_a_certificate_of_another_eps_is_invalid(dataset_store, tmp_path):
    path = _copy(dataset_store / "eps0.1.sqlite", tmp_path / "mixed.sqlite")
    with sqlite3.connect(dataset_store / "eps0.05.sqlite") as other:
        foreign = _value(other, "certificate", "digits-flat:test:0")
    with sqlite3.connect(path) as db:
        _restamp(db, "input_id = 'digits-flat:test:0'", foreign)
    (row,) = verify_store(path, progress=False).invalid
    assert row["input_id"] == "digits-flat:test:0" and "eps" in row["problems"][0]


def test_dropped_stability_claims_are_invalid(dataset_store, tmp_path):
    path = _copy(dataset_store / "eps0.1.sqlite", tmp_path / "dropped.sqlite")
    with sqlite3.connect(path) as db:
        cert = json.loads(_value(db, "certificate", "digits-flat:test:0"))
        cert["claims"] = [c for c in cert["claims"] if "eps" not in c["params"] and "k" not in c["params"]]
        _restamp(db, "input_id = 'digits-flat:test:0'", json.dumps(cert))
    assert [r["input_id"] for r in verify_store(path, progress=False).invalid] == ["digits-flat:test:0"]


def test_deleted_rows_are_reported_missing(dataset_store, tmp_path):
    path = _copy(dataset_store / "eps0.1.sqlite", tmp_path / "deleted.sqlite")
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM certificates WHERE input_id = 'digits-flat:test:2'")
    report = verify_store(path, progress=False)
    assert not report.all_valid and [r["input_id"] for r in report.missing] == ["digits-flat:test:2"]


@pytest.mark.parametrize("column, value", [("params", "not json"), ("params", "{}"), ("params", "[1, 2]"),
                                           ("certificate", b"\x00\xff")])
def test_a_malformed_row_is_named_invalid(dataset_store, tmp_path, column, value):
    path = _copy(dataset_store / "eps0.1.sqlite", tmp_path / "bad.sqlite")
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE certificates SET {column} = ? WHERE input_id = 'digits-flat:test:0'", (value,))
    report = verify_store(path, progress=False)
    assert [r["input_id"] for r in report.invalid] == ["digits-flat:test:0"] and report.valid == 2


def test_a_corrupt_store_is_exit_2_for_verify_export_and_batch(dataset_store, tmp_path, capsys):
    path = _copy(dataset_store / "eps0.1.sqlite", tmp_path / "flip.sqlite")
    raw = bytearray(path.read_bytes())
    page = 4096
    raw[page : 2 * page] = bytes(b ^ 0xFF for b in raw[page : 2 * page])  # a b-tree page flipped
    path.write_bytes(bytes(raw))
    for argv in (["verify", "--store", str(path)], ["export", "--store", str(path), "--out", str(tmp_path / "e.jsonl")],
                 ["batch", "--model", MODEL, "--dataset", "digits-flat", "--limit", "3", "--methods", "gradient",
                  "--store", str(path)]):
        assert main(argv) == EXIT_UNUSABLE, argv
        assert str(path) in capsys.readouterr().err
    assert not (tmp_path / "e.jsonl").exists()


@pytest.mark.parametrize("array", [np.zeros(64, np.complex64) + 5j, np.array(["a"] * 64),
                                   np.zeros(64, dtype=[("a", "f4")]), np.full(64, np.nan, np.float32)],
                         ids=["complex", "str", "structured", "nan"])
def test_folder_inputs_refuse_what_explain_refuses(tmp_path, array):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(InvalidInputError, match="x.npy"):
        directory_inputs(tmp_path, (64,))


def test_folder_inputs_read_a_tensor_that_requires_grad(tmp_path):
    value = torch.arange(64.0, requires_grad=True)
    torch.save(value, tmp_path / "x.pt")
    inputs = directory_inputs(tmp_path, (64,))
    assert inputs.x.shape == (1, 64) and np.array_equal(inputs.x[0], value.detach().numpy())


@pytest.mark.parametrize("delay", [0.0, 1.0, 2.0])
def test_ctrl_c_while_the_pool_starts_prints_one_line(tmp_path, delay):
    """SIGINT to the process group while the forkserver imports torch printed a KeyboardInterrupt traceback from
    it; a worker forked after the parent exited printed FileNotFoundError from SemLock._rebuild. The signal is sent
    `delay` seconds after the command opened its store (before that, a loaded machine may still be importing)."""
    store = tmp_path / "s.sqlite"
    p = subprocess.Popen([sys.executable, "-m", "certify.cli", "batch", "--model", MODEL, "--dataset", "digits-flat",
                          "--methods", "gradient,smoothgrad", "--store", str(store), "--chunk", "4"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=ENV)
    deadline = time.monotonic() + 60
    while not store.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=120)  # until the forkserver and workers, which share stderr, are gone too
    assert p.returncode == 130 and err.strip().splitlines() == ["certify batch: interrupted"], err[-2000:]


def test_two_concurrent_runs_count_every_certificate(tmp_path):
    store = tmp_path / "two.sqlite"
    command = [sys.executable, "-m", "certify.cli", "batch", "--model", MODEL, "--dataset", "digits-flat", "--limit",
               "60", "--methods", "gradient,smoothgrad", "--param", "smoothgrad:samples=16", "--store", str(store),
               "--chunk", "4", "--json"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
             for _ in range(2)]
    summaries = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    for s in summaries:
        assert s["already_done"] + s["computed"] == s["planned"] == 120 and s["stored"] == 120
    assert sum(s["computed"] for s in summaries) == 120
    assert verify_store(store, progress=False).all_valid


def test_only_keys_of_finished_runs_can_be_missing(tmp_path):
    """An interrupted run (already_done + computed < planned) leaves attempted keys uncommitted: not missing."""
    with CertificateStore(tmp_path / "runs.sqlite") as store:
        run = store.begin_run("interrupted", planned=2, already_done=0, redone=0)
        store.mark_attempted(["a", "b"], "gradient", "{}", run)
        store.insert("a", "gradient", "{}", "{}", 0.1, run)
        store.end_run(run, computed=1, already_done=0)
        assert store.missing() == []
        run = store.begin_run("finished", planned=2, already_done=1, redone=1)
        store.mark_attempted(["b"], "gradient", "{}", run)
        store.insert("b", "gradient", "{}", "{}", 0.1, run)
        store.end_run(run, computed=1, already_done=1)
        assert store.missing() == []
        store.db.execute("DELETE FROM certificates")
        assert store.missing() == [("b", "gradient", "{}")]  # "a": its latest attempt was the interrupted run's


def test_folder_inputs_refuse_a_sparse_tensor(tmp_path):
    torch.save(torch.zeros(64).to_sparse(), tmp_path / "x.pt")
    with pytest.raises(InvalidInputError, match="x.pt.*sparse"):
        directory_inputs(tmp_path, (64,))


def test_importing_the_forkserver_setup_elsewhere_changes_nothing():
    """The module ignores SIGINT only inside a forkserver: imported by any other process (here a fresh interpreter
    importing it the way a test importing every module does) Ctrl-C still raises KeyboardInterrupt, so child processes
    do not inherit an ignored SIGINT either."""
    probe = ("import signal, sys, certify.batch.forkserver_setup as f; "
             "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler, sys.excepthook is sys.__excepthook__)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV, timeout=120)
    assert out.stdout.split() == ["True", "True"], out.stderr
