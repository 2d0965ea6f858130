"""The certificate store (certify.batch.store): round trip, one row per key, attempts, exports."""
import json
import sqlite3
import sys

import pytest

from certify.batch.store import CertificateStore, canonical_params, export_jsonl, export_parquet, sha256_text
from certify.errors import CertificateFormatError, UnsupportedError, UsageError

CERT = json.dumps({"schema": "x", "claims": [1, 2]})


@pytest.fixture
def store(tmp_path):
    with CertificateStore(tmp_path / "runs.sqlite") as s:
        yield s


def test_round_trip_and_wal(store, tmp_path):
    run = store.begin_run("certify batch ...", planned=1, already_done=0, redone=0)
    key = canonical_params({"b": 1, "a": [0.5]})
    assert store.insert("digits:test:0", "gradient", key, CERT, 0.25, run)
    (row,) = list(store.rows())
    assert (row.input_id, row.method, row.params, row.certificate) == ("digits:test:0", "gradient", key, CERT)
    assert row.sha256 == sha256_text(CERT) and row.status == "issued" and row.seconds == 0.25 and row.run_id == run
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.runs()[0]["ended"] is None  # a run killed now keeps its row and plan
    store.end_run(run, computed=1)
    assert store.runs()[0]["computed"] == 1 and store.runs()[0]["ended"] is not None
    with CertificateStore(tmp_path / "runs.sqlite", create=False) as again:  # committed: seen by a new connection
        assert again.done("gradient", key) == {"digits:test:0"}


def test_one_row_per_key(store):
    run = store.begin_run("c", 1, 0, 0)
    key = canonical_params({"eps": 0.1})
    assert store.insert("i", "gradient", key, CERT, 1.0, run)
    assert not store.insert("i", "gradient", key, CERT.replace("x", "y"), 2.0, run)  # a re-done certificate
    assert store.insert("i", "smoothgrad", key, CERT, 1.0, run)  # another method: another key
    assert store.insert("i", "gradient", canonical_params({"eps": 0.2}), CERT, 1.0, run)  # other parameters
    assert store.count() == 3
    assert next(store.rows()).certificate == CERT  # the first insert is kept
    with pytest.raises(sqlite3.IntegrityError):  # the key is UNIQUE in the table itself, not only in insert()
        store.db.execute("INSERT INTO certificates (input_id, method, params, certificate, sha256, status, seconds, "
                         "run_id) VALUES ('i', 'gradient', ?, '', '', 'issued', 0, 1)", (key,))


def test_canonical_params():
    assert canonical_params({"b": 1, "a": {"d": 2, "c": 3}}) == canonical_params({"a": {"c": 3, "d": 2}, "b": 1})
    assert canonical_params({"a": 1}) == '{"a":1}'
    with pytest.raises(UsageError, match="not JSON"):
        canonical_params({"rho": float("nan")})


def test_attempts(store):
    run = store.begin_run("c", 1, 0, 0)
    store.mark_attempted(["a", "b"], "gradient", "{}", run)
    store.mark_attempted(["b", "c"], "gradient", "{}", run + 1)
    assert store.attempted("gradient", "{}") == {"a", "b", "c"}
    assert store.attempted("smoothgrad", "{}") == set()
    assert dict(store.db.execute("SELECT input_id, run_id FROM attempts"))["b"] == run + 1  # the latest attempt kept


def test_not_a_store(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(CertificateFormatError, match="not a certificate store"):
        CertificateStore(junk)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(CertificateFormatError, match="not a certificate store"):
        CertificateStore(other)  # another application's database: no tables added to it
    assert [r[0] for r in sqlite3.connect(other).execute("SELECT name FROM sqlite_master")] == ["t"]
    with pytest.raises(UsageError, match="no certificate store"):
        CertificateStore(tmp_path / "missing.sqlite", create=False)
    with pytest.raises(UsageError, match="does not exist"):
        CertificateStore(tmp_path / "no" / "dir.sqlite")


def _fill(store, n):
    run = store.begin_run("c", 1, 0, 0)
    for i in range(n):
        store.insert(f"digits:test:{i}", "gradient", canonical_params({"eps": 0.1}), json.dumps({"i": i}), 0.5, run)


def test_export_jsonl(store, tmp_path):
    _fill(store, 3)
    out = tmp_path / "certs.jsonl"
    assert export_jsonl(store, out) == 3
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["certificate"]["i"] for r in lines] == [0, 1, 2]
    assert lines[1]["input_id"] == "digits:test:1" and lines[1]["params"] == {"eps": 0.1}
    assert lines[1]["sha256"] == sha256_text(json.dumps({"i": 1}))
    assert list(tmp_path.glob("*.partial")) == []


def test_export_parquet(store, tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet", reason="the batch extra (pyarrow) is not installed")
    import certify.batch.store as module

    monkeypatch.setattr(module, "PARQUET_ROWS", 2)  # several row groups
    _fill(store, 5)
    out = tmp_path / "certs.parquet"
    assert export_parquet(store, out) == 5
    table = pq.read_table(out)
    assert table.num_rows == 5 and pq.ParquetFile(out).num_row_groups == 3
    assert table.column("input_id").to_pylist() == [f"digits:test:{i}" for i in range(5)]
    assert [json.loads(c)["i"] for c in table.column("certificate").to_pylist()] == list(range(5))


def test_export_parquet_without_pyarrow(store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    with pytest.raises(UnsupportedError, match=r"certify\[batch\]"):
        export_parquet(store, tmp_path / "x.parquet")


def test_opening_retries_while_another_process_locks_a_new_store(tmp_path, monkeypatch):
    """Two processes opening one new store at once: SQLite answers "database is locked" without waiting (the
    switch to WAL takes an exclusive lock); opening retries that (until OPEN_SECONDS), and any other SQLite error
    is reported at once as not a certificate store."""
    import sqlite3

    from certify.batch import store as store_module

    real, calls = store_module.CertificateStore._prepare, []

    def locked_twice(self, create):
        calls.append(1)
        if len(calls) <= 2:
            raise sqlite3.OperationalError("database is locked")
        return real(self, create)

    def failing(message):
        def prepare(self, create):
            raise sqlite3.OperationalError(message)
        return prepare

    monkeypatch.setattr(store_module.CertificateStore, "_prepare", locked_twice)
    with store_module.CertificateStore(tmp_path / "new.sqlite") as store:
        assert store.missing() == [] and len(calls) == 3
    monkeypatch.setattr(store_module.CertificateStore, "_prepare", failing("disk I/O error"))
    with pytest.raises(CertificateFormatError, match="disk I/O error"):
        store_module.CertificateStore(tmp_path / "other.sqlite")
    monkeypatch.setattr(store_module, "OPEN_SECONDS", 0.0)
    monkeypatch.setattr(store_module.CertificateStore, "_prepare", failing("database is locked"))
    with pytest.raises(CertificateFormatError, match="locked"):
        store_module.CertificateStore(tmp_path / "third.sqlite")
