"""Capture what a numerical solver prints, so that it never reaches the command's stdout or stderr.

HiGHS, Clarabel and SCS print from compiled code straight to the process's file descriptors 1 and 2, past
Python's `sys.stdout`; `certify ... --json` must still print exactly one JSON document. `solver_output()` points
fds 1 and 2 (and `sys.stdout` / `sys.stderr`) at a temporary file for the duration of a solve and silences Python
warnings raised in it, and undoes every one of these changes on exit, exceptions and Ctrl-C included (the
Zennit convention for context managers: every side effect undone). What was printed is kept in `Captured.text`.

The redirection is process-wide: output printed by other threads during a solve is captured too.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from typing import Iterator

STREAM_FDS = (1, 2)  # stdout, stderr
MAX_KEPT_CHARS = 1 << 16  # of the captured output kept in Captured.text (a solver log can be long)


@dataclass
class Captured:
    """What the block printed on fds 1 and 2 and on `sys.stdout` / `sys.stderr` (filled when the block exits;
    the last MAX_KEPT_CHARS characters, decoded as UTF-8 with replacement)."""

    text: str = ""


@functools.lru_cache(maxsize=1)
def _c_fflush():
    """The C library's fflush, or None where it cannot be loaded (e.g. some Windows builds)."""
    try:
        return ctypes.CDLL(None).fflush
    except (OSError, AttributeError, TypeError):
        return None


def _flush_c_streams() -> None:
    """fflush(NULL): push C stdio buffers to their fds, so that buffered solver output lands in the capture file
    and not on the restored terminal later."""
    fflush = _c_fflush()
    if fflush is not None:
        fflush(None)


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or replaced stream has nothing to flush
            stream.flush()


@contextlib.contextmanager
def solver_output() -> Iterator[Captured]:
    """Run the block with fds 1 and 2, `sys.stdout` and `sys.stderr` redirected to a temporary file and Python
    warnings ignored; restore all of them on exit (also on exceptions). Yields a `Captured` whose `text` holds the
    output once the block has exited. An fd that is not open is left alone."""
    captured = Captured()
    _flush_python_streams()
    _flush_c_streams()
    with tempfile.TemporaryFile(mode="w+b") as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved: list[tuple[int, int]] = []
        text_sink = open(sink.fileno(), "w", encoding="utf-8", errors="replace", closefd=False)
        try:
            for fd in STREAM_FDS:
                try:
                    saved.append((fd, os.dup(fd)))
                except OSError:  # fd not open: nothing to redirect
                    continue
                os.dup2(sink.fileno(), fd)
            with contextlib.redirect_stdout(text_sink), contextlib.redirect_stderr(text_sink):
                yield captured
        finally:
            text_sink.flush()
            _flush_c_streams()
            for fd, copy in reversed(saved):
                os.dup2(copy, fd)
                os.close(copy)
            text_sink.close()
            sink.seek(0, os.SEEK_END)
            size = sink.tell()
            sink.seek(max(0, size - 4 * MAX_KEPT_CHARS))
            captured.text = sink.read().decode("utf-8", errors="replace")[-MAX_KEPT_CHARS:]
