"""The certificate store of `certify batch`: one SQLite file (standard library `sqlite3`, WAL journal) holding
one certificate per (input id, method, canonical parameters JSON), each inserted in its own transaction as soon
as it is finished, so that a run killed at any moment (SIGKILL included) loses only the certificates not yet
committed, and a rerun of the same command resumes.

Tables:

* `certificates`: `input_id`, `method`, `params` (canonical JSON: sorted keys, no spaces; the model SPEC, eps,
  k and the method's parameters), the certificate JSON, its sha256 (hex, of the UTF-8 text), `status`
  (`issued`; `valid` / `invalid` once `certify verify --store` has checked it), `seconds` (the task's wall time
  divided by its number of inputs), `run_id`. UNIQUE(input_id, method, params), inserted with INSERT OR IGNORE:
  a certificate computed twice (a task re-done after a kill) is stored once.
* `attempts`: the keys handed to a worker, recorded (one transaction per task) before the task is submitted;
  a key attempted by an earlier run but absent from `certificates` was lost to an interruption and is re-done.
* `runs`: one row per `certify batch` invocation (command, start and end times, counts).

Durability: WAL with `synchronous=NORMAL` makes a committed transaction survive the death of the process (the
kill test); only a power loss can drop the last commits, never corrupt the file.

Export: JSON Lines (`export_jsonl`) and Parquet (`export_parquet`, pyarrow: the `batch` extra).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from certify.errors import CertificateFormatError, UnsupportedError, UsageError

OPEN_SECONDS = 60.0  # how long opening waits for another process that holds the store (also sqlite3's timeout)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY,
    command TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    planned INTEGER,
    already_done INTEGER,
    redone INTEGER,
    computed INTEGER
);
CREATE TABLE IF NOT EXISTS certificates (
    id INTEGER PRIMARY KEY,
    input_id TEXT NOT NULL,
    method TEXT NOT NULL,
    params TEXT NOT NULL,
    certificate TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    status TEXT NOT NULL,
    seconds REAL NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    UNIQUE (input_id, method, params)
);
CREATE TABLE IF NOT EXISTS attempts (
    input_id TEXT NOT NULL,
    method TEXT NOT NULL,
    params TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    UNIQUE (input_id, method, params)
);
"""

COLUMNS = ("input_id", "method", "params", "certificate", "sha256", "status", "seconds", "run_id")


def canonical_params(params: dict) -> str:
    """The canonical JSON of a parameter dict (sorted keys, no spaces): equal dicts give equal keys.
    UsageError when a value is not JSON (NaN and infinities included)."""
    try:
        return json.dumps(params, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"parameters {params!r} are not JSON values: {exc}") from None


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Row:
    """One stored certificate (`certificate`: its JSON text)."""
    input_id: str
    method: str
    params: str
    certificate: str
    sha256: str
    status: str
    seconds: float
    run_id: int


class CertificateStore:
    """An open store (context manager). `path`: the SQLite file, created with its tables when missing or empty
    (`create`; else UsageError); CertificateFormatError when the file is not an SQLite database, is one with
    other tables, or is corrupt (`PRAGMA quick_check` on open, linear in the file's size)."""

    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise UsageError(f"no certificate store at {self.path}")
        if create and not self.path.parent.is_dir():
            raise UsageError(f"the folder of the store {self.path} does not exist")
        try:
            self.db = sqlite3.connect(self.path, timeout=OPEN_SECONDS, isolation_level=None)  # autocommit; explicit BEGIN
        except sqlite3.DatabaseError as exc:
            raise CertificateFormatError(f"{self.path} is not a certificate store (SQLite: {exc})") from None
        deadline = time.monotonic() + OPEN_SECONDS
        while True:
            try:
                found = self._prepare(create)
                break
            except sqlite3.OperationalError as exc:  # another process creating or converting the same new store
                if "locked" in str(exc) and time.monotonic() < deadline:
                    time.sleep(0.02 + 0.05 * random.random())
                    continue
                self.db.close()
                raise CertificateFormatError(f"{self.path} is not a certificate store (SQLite: {exc})") from None
            except sqlite3.DatabaseError as exc:
                self.db.close()
                raise CertificateFormatError(f"{self.path} is not a certificate store (SQLite: {exc})") from None
        if not {"runs", "certificates", "attempts"} <= found:
            self.db.close()
            raise CertificateFormatError(f"{self.path} is an SQLite file but not a certificate store (tables {sorted(found)})")

    def _prepare(self, create: bool) -> set[str]:
        """WAL mode, the integrity check and (a new or empty file, `create`) the schema; the store's tables. SQLite
        answers "database is locked" without waiting when two processes open one new file at once (switching to
        WAL takes an exclusive lock), so the caller retries that until OPEN_SECONDS have passed."""
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        found = self._tables()
        check = self.db.execute("PRAGMA quick_check(1)").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError("corrupt: " + " ".join(check.split())[:200])
        if create and not found:  # a new (or empty) file; never tables added to another application's database
            self.db.executescript(SCHEMA)
            found = self._tables()
        return found

    def _tables(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def __enter__(self) -> "CertificateStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def begin_run(self, command: str, planned: int, already_done: int, redone: int) -> int:
        """Record a run's start and plan (committed at once: a killed run keeps its row, `ended` NULL)."""
        cur = self.db.execute("INSERT INTO runs (command, started, planned, already_done, redone) VALUES (?, ?, ?, ?, ?)",
                              (command, time.time(), planned, already_done, redone))
        return int(cur.lastrowid)

    def end_run(self, run_id: int, computed: int, already_done: int | None = None) -> None:
        """Close a run (ended, also when interrupted) with the certificates it inserted and, when given, the final
        count of those it found done (before it started, or committed meanwhile by another run): a run that
        finished has already_done + computed = planned."""
        self.db.execute("UPDATE runs SET ended = ?, computed = ?, already_done = COALESCE(?, already_done) "
                        "WHERE run_id = ?", (time.time(), computed, already_done, run_id))

    def done(self, method: str, params: str) -> set[str]:
        """Input ids that already hold a certificate for (method, params)."""
        rows = self.db.execute("SELECT input_id FROM certificates WHERE method = ? AND params = ?", (method, params))
        return {r[0] for r in rows}

    def done_among(self, input_ids: list[str], method: str, params: str) -> set[str]:
        """Those of `input_ids` that hold a certificate for (method, params) now (one query)."""
        rows = self.db.execute(f"SELECT input_id FROM certificates WHERE method = ? AND params = ? AND input_id IN "
                               f"({', '.join('?' * len(input_ids))})", (method, params, *input_ids))
        return {r[0] for r in rows}

    def missing(self) -> list[tuple[str, str, str]]:
        """(input_id, method, params) of each key whose latest attempt was by a run that finished (ended, with
        already_done + computed = planned) and that holds no certificate: a row deleted since."""
        return self.db.execute(
            "SELECT a.input_id, a.method, a.params FROM attempts a JOIN runs r ON a.run_id = r.run_id "
            "WHERE r.ended IS NOT NULL AND r.already_done + r.computed = r.planned AND NOT EXISTS (SELECT 1 FROM "
            "certificates c WHERE c.input_id = a.input_id AND c.method = a.method AND c.params = a.params) "
            "ORDER BY a.rowid").fetchall()

    def attempted(self, method: str, params: str) -> set[str]:
        """Input ids whose (method, params) certificate some run handed to a worker."""
        rows = self.db.execute("SELECT input_id FROM attempts WHERE method = ? AND params = ?", (method, params))
        return {r[0] for r in rows}

    def mark_attempted(self, input_ids: Iterable[str], method: str, params: str, run_id: int) -> None:
        """Record, in one transaction, that these keys are handed to a worker (the latest attempt's run is kept)."""
        with self._transaction():
            self.db.executemany("INSERT INTO attempts VALUES (?, ?, ?, ?) ON CONFLICT (input_id, method, params) "
                                "DO UPDATE SET run_id = excluded.run_id",
                                [(i, method, params, run_id) for i in input_ids])

    def insert(self, input_id: str, method: str, params: str, certificate: str, seconds: float, run_id: int) -> bool:
        """Insert one certificate in its own transaction; False when its key was already stored (nothing changes)."""
        with self._transaction():
            cur = self.db.execute("INSERT OR IGNORE INTO certificates (input_id, method, params, certificate, sha256, "
                                  "status, seconds, run_id) VALUES (?, ?, ?, ?, ?, 'issued', ?, ?)",
                                  (input_id, method, params, certificate, sha256_text(certificate), seconds, run_id))
        return cur.rowcount == 1

    def set_status(self, statuses: Iterable[tuple[str, str, str, str]]) -> None:
        """(status, input_id, method, params) for each checked certificate, in one transaction."""
        with self._transaction():
            self.db.executemany("UPDATE certificates SET status = ? WHERE input_id = ? AND method = ? AND params = ?",
                                list(statuses))

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM certificates").fetchone()[0])

    def rows(self) -> Iterator[Row]:
        """Every stored certificate, in insertion order (read lazily)."""
        for r in self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM certificates ORDER BY id"):
            yield Row(*r)

    def runs(self) -> list[dict]:
        cur = self.db.execute("SELECT * FROM runs ORDER BY run_id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur]

    def _transaction(self):
        return _Transaction(self.db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception): the write lock is taken at the start."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, *exc) -> None:
        self.db.execute("ROLLBACK" if kind is not None else "COMMIT")


def _record(row: Row) -> dict:
    return {"input_id": row.input_id, "method": row.method, "params": json.loads(row.params), "sha256": row.sha256,
            "status": row.status, "seconds": row.seconds, "run_id": row.run_id}


def export_jsonl(store: CertificateStore, out: str | Path) -> int:
    """Write one JSON object per certificate (its key, sha256, status, seconds, run and the certificate itself,
    parsed) to `out`; returns the number written. Written to a temporary name and renamed."""
    def write(tmp: Path) -> int:
        n = 0
        with tmp.open("w") as f:
            for row in store.rows():
                f.write(json.dumps({**_record(row), "certificate": json.loads(row.certificate)}) + "\n")
                n += 1
        return n

    return _atomic(Path(out), write)


def export_parquet(store: CertificateStore, out: str | Path) -> int:
    """Write the store as one Parquet table (columns: the key, sha256, status, seconds, run_id, and the
    certificate as JSON text); returns the number of rows. Needs pyarrow (`pip install 'certify[batch]'`):
    UnsupportedError naming the extra when missing."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UnsupportedError("Parquet export needs pyarrow: pip install 'certify[batch]' (or pip install pyarrow)") from None
    schema = pa.schema([(name, pa.float64() if name == "seconds" else pa.int64() if name == "run_id" else pa.string())
                        for name in COLUMNS])
    def write(tmp: Path) -> int:
        n = 0
        with pq.ParquetWriter(tmp, schema) as writer:
            for chunk in _chunks(store.rows(), PARQUET_ROWS):  # bounded memory: one row group per chunk
                writer.write_table(pa.table({name: [getattr(r, name) for r in chunk] for name in COLUMNS}, schema=schema))
                n += len(chunk)
        return n

    return _atomic(Path(out), write)


def _atomic(out: Path, write) -> int:
    """`write(tmp)` to a unique temporary name beside `out`, renamed over it; the temporary removed on failure."""
    if not out.parent.is_dir():
        raise UsageError(f"the folder of {out} does not exist")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{time.time_ns()}.partial")
    try:
        n = write(tmp)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


PARQUET_ROWS = 1024


def _chunks(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
