"""certify.runs: atomic writes under concurrency, and run directories (manifest, resume, refusal, overwrite,
interrupt, a report's view of one run)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from certify.errors import InvalidInputError, UsageError
from certify.runs import MANIFEST, RunDirectory, atomic_save, atomic_write, file_sha256, read_manifest, run_files

PAYLOAD = 20_000  # bytes of padding per document: a torn or interleaved write would not parse


def _document(writer: str, index: int) -> str:
    return json.dumps({"writer": writer, "index": index, "padding": "x" * PAYLOAD})


def _assert_one_complete_document(path: Path, writers: set[str], per_writer: int) -> None:
    doc = json.loads(path.read_text())
    assert doc["writer"] in writers and 0 <= doc["index"] < per_writer
    assert doc["padding"] == "x" * PAYLOAD
    assert [p.name for p in path.parent.iterdir()] == [path.name], "temporary files were left behind"


def test_1000_concurrent_writes_from_threads_all_succeed(tmp_path):
    target = tmp_path / "certificate.json"

    def writes(writer: int) -> int:
        for i in range(125):
            atomic_write(target, _document(f"thread-{writer}", i))
        return 125

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(writes, range(8))) == 1000
    _assert_one_complete_document(target, {f"thread-{w}" for w in range(8)}, 125)


def test_1000_concurrent_writes_from_processes_all_succeed(tmp_path):
    """8 processes x 125 writes to one path (the old fixed `X.partial` name failed 31 of 600 such writes)."""
    target = tmp_path / "certificate.json"
    script = textwrap.dedent(f"""
        import json, sys
        from certify.runs import atomic_write
        for i in range(125):
            atomic_write(sys.argv[1], json.dumps({{"writer": sys.argv[2], "index": i, "padding": "x" * {PAYLOAD}}}))
        print("ok")
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(target), f"process-{w}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for w in range(8)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err for _, err in results]
    assert all(out.strip() == "ok" for out, _ in results)
    _assert_one_complete_document(target, {f"process-{w}" for w in range(8)}, 125)


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = atomic_write(tmp_path / "a.bin", b"old")

    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save(target, broken)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_a_missing_parent_or_a_folder_target_is_a_usage_error_naming_it(tmp_path):
    with pytest.raises(UsageError, match="nowhere"):
        atomic_write(tmp_path / "nowhere" / "a.json", "{}")
    with pytest.raises(UsageError, match="is a folder"):
        atomic_write(tmp_path, "{}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="FIFOs and symlinks")
def test_a_fifo_or_a_symlink_target_is_refused_and_left_as_it_is(tmp_path):
    """`--out /dev/full` once replaced the device node with a regular file; a FIFO or a symlink at the target is
    refused by name, never replaced nor written through (the link's target keeps its content)."""
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match=r"fifo\.json: it is a FIFO"):
        atomic_write(fifo, "{}")
    assert fifo.is_fifo()
    (tmp_path / "real.json").write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to("real.json")
    with pytest.raises(UsageError, match=r"link\.json: it is a symbolic link"):
        atomic_save(link, lambda f: f.write(b"{}"))
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "nowhere.json")
    with pytest.raises(UsageError, match="dangling.json"):
        atomic_write(dangling, "{}")
    assert link.is_symlink() and dangling.is_symlink() and (tmp_path / "real.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.json", "fifo.json", "link.json", "real.json"]


def _run(path: Path, command=("certify", "demo", "--out", "x"), overwrite=False, files=("a.json", "b.json")):
    with RunDirectory(path, command=list(command), overwrite=overwrite) as run:
        for name in files:
            run.write(name, json.dumps({"name": name}))
    return run


def test_a_finished_run_lists_its_files_with_hashes_and_versions(tmp_path):
    out = tmp_path / "run"
    _run(out)
    manifest = read_manifest(out)
    assert manifest["status"] == "finished" and manifest["finished"] >= manifest["started"]
    assert manifest["command"] == ["certify", "demo", "--out", "x"]
    assert set(manifest["versions"]) == {"certify", "torch", "python"}
    assert set(manifest["files"]) == {"a.json", "b.json"}
    assert all(manifest["files"][n]["sha256"] == file_sha256(out / n) for n in manifest["files"])
    assert set(run_files(out)) == {"a.json", "b.json"}


def _interrupted_run(out) -> None:
    """A `certify demo` run into `out` that wrote a.json, then was interrupted."""
    with pytest.raises(KeyboardInterrupt):
        with RunDirectory(out, command=["certify", "demo"]) as run:
            run.write("a.json", "{}")
            raise KeyboardInterrupt


def test_an_interrupt_marks_the_run_interrupted_keeps_finished_files_and_resumes(tmp_path):
    out = tmp_path / "run"
    _interrupted_run(out)
    first = read_manifest(out)
    assert first["status"] == "interrupted" and "finished" not in first and set(first["files"]) == {"a.json"}
    with RunDirectory(out, command=["certify", "demo"]) as run:
        assert run.reused("a.json") and not run.reused("b.json")
        run.write("b.json", "{}")
    second = read_manifest(out)
    assert second["status"] == "finished" and second["resumes"] == first["run_id"] != second["run_id"]
    assert second["files"]["a.json"]["reused"] is True and "reused" not in second["files"]["b.json"]


def test_a_resumed_run_drops_a_file_changed_since(tmp_path):
    out = tmp_path / "run"
    _interrupted_run(out)
    (out / "a.json").write_text('{"tampered": 1}')
    with RunDirectory(out, command=["certify", "demo"]) as run:
        assert not run.reused("a.json") and "a.json" not in run.manifest["files"]


def test_the_same_finished_command_again_does_nothing_and_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    _run(out)
    before = (out / MANIFEST).read_text()
    with RunDirectory(out, command=["certify", "demo", "--out", "x"]) as run:
        assert run.done
    with RunDirectory(out, command=["certify", "demo", "--out", "x", "--overwrite"]) as run:  # the flag is no part
        assert run.done  # of the command's identity (here it is not passed on as overwrite=True)
    assert (out / MANIFEST).read_text() == before
    assert "nothing to do" in capsys.readouterr().err


def test_another_command_or_a_folder_without_manifest_is_refused(tmp_path):
    out = tmp_path / "run"
    _run(out)
    with pytest.raises(UsageError, match="--overwrite"):
        _run(out, command=("certify", "demo", "--quick"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "summary.json").write_text("{}")
    with pytest.raises(UsageError, match="--overwrite"):
        _run(foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["summary.json"]


def test_overwrite_deletes_only_the_files_the_old_manifest_lists(tmp_path):
    out = tmp_path / "run"
    _run(out, files=("a.json", "old.json"))
    (out / "mine.txt").write_text("a user's file")
    _run(out, command=("certify", "demo", "--quick"), overwrite=True, files=("a.json",))
    assert sorted(p.name for p in out.iterdir()) == ["a.json", MANIFEST, "mine.txt"]
    manifest = read_manifest(out)
    assert manifest["command"] == ["certify", "demo", "--quick"] and set(manifest["files"]) == {"a.json"}


def test_a_report_view_refuses_a_changed_file_and_ignores_unlisted_ones(tmp_path):
    out = tmp_path / "run"
    _run(out)
    (out / "stray.json").write_text("{}")
    assert set(run_files(out)) == {"a.json", "b.json"}
    (out / "b.json").write_text('{"name": "other run"}')
    with pytest.raises(InvalidInputError, match="b.json"):
        run_files(out)
    assert run_files(tmp_path) is None  # no manifest


def test_files_written_by_a_step_are_recorded_from_a_snapshot(tmp_path):
    out = tmp_path / "run"
    with RunDirectory(out, command=["certify", "check"]) as run:
        before = run.snapshot()
        (out / "sub").mkdir()
        (out / "sub" / "figure.png").write_bytes(b"png")
        assert run.record_changed(before) == ["sub/figure.png"]
        run.write(out / "table.json", "{}")
    assert set(read_manifest(out)["files"]) == {"sub/figure.png", "table.json"}


def test_a_run_folder_must_have_a_parent_and_not_be_a_file(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        _run(tmp_path / "missing" / "run")
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="is a file"):
        _run(tmp_path / "file")


def test_a_report_reads_only_its_runs_files_and_refuses_a_changed_one(tmp_path):
    from certify.reports.report import write_report

    out = tmp_path / "run"
    _run(out, files=("evaluation.json",))
    (out / "summary.json").write_text("{}")  # another run's summary, unlisted: as if absent
    with pytest.raises(UsageError, match="no summary.json of its run"):
        write_report(out)
    _run(tmp_path / "other", files=("summary.json",))
    (tmp_path / "other" / "summary.json").write_text('{"description": "changed"}')
    with pytest.raises(InvalidInputError, match="summary.json was changed"):
        write_report(tmp_path / "other")


def test_report_inputs_look_up_listed_files_lazily(tmp_path):
    from certify.runs import report_inputs

    out = tmp_path / "run"
    _run(out, files=("summary.json", "index.html"))
    (out / "index.html").write_text("rewritten by a later report")  # never read by a report: no refusal
    source = report_inputs(out)
    assert source("summary.json") == out / "summary.json"
    assert source("unlisted.png") is None
    with pytest.raises(InvalidInputError, match="index.html"):
        source("index.html")
    assert report_inputs(tmp_path)("run") is None  # no manifest: any existing file, and a folder is not one


_SUMMARY = json.dumps({"description": "test model", "method_rows": [], "certificate_note": "note",
                       "claim_rows": [], "environment": {"python": "3"}})


def test_a_report_refuses_any_changed_listed_file_but_its_own_outputs(tmp_path):
    """`certify report` once called an edited certificate valid (it checked only the files it reads); the pages
    it rewrites itself (index.md, index.html, report.json) are not inputs and may change."""
    from certify.reports.report import write_report

    out = tmp_path / "run"
    with RunDirectory(out, command=["certify", "demo"]) as run:
        run.write("summary.json", _SUMMARY)
        run.write("certificates/prox-0.json", '{"answer": "prox"}')
        before = run.snapshot()
        write_report(out)
        assert set(run.record_changed(before)) == {"index.md", "index.html", "report.json"}
    (out / "index.html").write_text("rewritten by a later report")
    write_report(out)
    (out / "certificates" / "prox-0.json").write_text('{"answer": "not-a-prox"}')
    stamp = (out / "index.html").stat().st_mtime_ns
    with pytest.raises(InvalidInputError, match="prox-0.json was changed"):
        write_report(out)
    assert (out / "index.html").stat().st_mtime_ns == stamp  # refused before anything is written


def test_a_report_without_manifest_says_its_files_are_unchecked(tmp_path, capsys):
    from certify.reports.report import write_report

    (tmp_path / "summary.json").write_text(_SUMMARY)
    write_report(tmp_path)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "no manifest.json" in err[0] and "not checked" in err[0]
