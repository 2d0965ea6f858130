"""`certify batch` killed and resumed (subprocess): SIGKILL at a random moment after some certificates are
committed, then the same command again, ends with exactly one valid certificate per key and reports the
re-done ones; Ctrl-C (SIGINT) exits 130 with one line and keeps every committed row."""
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from certify.batch.verify import verify_store

COMMAND = [sys.executable, "-m", "certify.cli", "batch", "--model", "zoo:digits-softplus-mlp",
           "--dataset", "digits-flat", "--limit", "40", "--methods", "gradient,smoothgrad",
           "--param", "smoothgrad:samples=16", "--chunk", "4", "--workers", "1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CERTIFY_NO_PROGRESS": "1"}


def _count(path) -> int:
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute("SELECT COUNT(*) FROM certificates").fetchone()[0]
    except sqlite3.OperationalError:  # the tables are not created yet
        return 0
    finally:
        db.close()


def _start_and_wait(store, at_least: int) -> subprocess.Popen:
    proc = subprocess.Popen(COMMAND + ["--store", str(store), "--json"], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while _count(store) < at_least:
        assert proc.poll() is None, f"the run ended before it was interrupted: {proc.communicate()}"
        assert time.monotonic() < deadline, "no certificate committed in 240 s"
        time.sleep(0.05)
    return proc


def _group_gone(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_sigkill_then_resume(tmp_path):
    store = tmp_path / "runs.sqlite"
    proc = _start_and_wait(store, at_least=6)
    time.sleep(random.Random(os.getpid()).uniform(0, 0.1))  # any moment after that (0.5 s let a fast run finish all 80)
    proc.kill()  # SIGKILL, the parent only: its workers are orphaned
    proc.wait()
    assert _group_gone(proc.pid, 60), "the killed run's workers did not exit"
    with sqlite3.connect(store) as db:
        committed = db.execute("SELECT COUNT(*) FROM certificates").fetchone()[0]
        lost = db.execute("SELECT COUNT(*) FROM attempts a WHERE NOT EXISTS (SELECT 1 FROM certificates c WHERE "
                          "c.input_id = a.input_id AND c.method = a.method AND c.params = a.params)").fetchone()[0]
    assert 6 <= committed < 80 and lost > 0  # tasks were in flight, their certificates not committed
    done = subprocess.run(COMMAND + ["--store", str(store), "--json"], env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["already_done"], summary["computed"], summary["redone"]) == (committed, 80 - committed, lost)
    with sqlite3.connect(store) as db:
        keys = db.execute("SELECT input_id, method, params FROM certificates").fetchall()
        runs = db.execute("SELECT ended, redone, computed FROM runs ORDER BY run_id").fetchall()
    assert runs[0] == (None, 0, None) and runs[1][1:] == (lost, 80 - committed)  # the killed run: never ended
    assert len(keys) == len(set(keys)) == 80
    assert {(k[0], k[1]) for k in keys} == {(f"digits-flat:test:{i}", m) for i in range(40) for m in ("gradient", "smoothgrad")}
    report = verify_store(store, progress=False)
    assert (report.valid, report.invalid) == (80, [])


def test_ctrl_c_exits_130_and_keeps_committed_rows(tmp_path):
    store = tmp_path / "runs.sqlite"
    proc = _start_and_wait(store, at_least=4)
    seen = _count(store)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert _count(store) >= seen
    with sqlite3.connect(store) as db:
        (ended, computed), = db.execute("SELECT ended, computed FROM runs").fetchall()
        assert ended is not None and computed == db.execute("SELECT COUNT(*) FROM certificates").fetchone()[0]
    assert verify_store(store, progress=False).invalid == []
    assert _group_gone(proc.pid, 60)
