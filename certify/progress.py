"""Progress bars for long work (tqdm), written to stderr so `--json` output on stdout stays clean, and the Ctrl-C
checkpoints they carry (`interruptible`)."""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_interrupted = {"pending": False}  # a plain flag: the signal handler must take no lock (a second Ctrl-C inside it)


def progress_enabled() -> bool:
    """Bars are shown on an interactive stderr unless CERTIFY_NO_PROGRESS is set."""
    return sys.stderr.isatty() and not os.environ.get("CERTIFY_NO_PROGRESS")


def checkpoint() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C arrived inside `interruptible` (every bar step calls this)."""
    if _interrupted["pending"]:
        raise KeyboardInterrupt


class _Bar(tqdm):
    """tqdm whose every step is a Ctrl-C checkpoint."""

    def __iter__(self) -> Iterator[Any]:
        for item in super().__iter__():
            checkpoint()
            yield item

    def update(self, n: float | None = 1) -> bool | None:
        checkpoint()
        return super().update(n)


def progress_bar(iterable: Iterable[T] | None, desc: str, total: int | None = None, unit: str = "it") -> Any:
    """A tqdm bar over `iterable` (or a manual one, `update`d, for None); hidden unless `progress_enabled`."""
    return _Bar(iterable, desc=desc, total=total, unit=unit, disable=not progress_enabled(), file=sys.stderr)


@contextmanager
def interruptible(final: bool = False) -> Iterator[None]:
    """Within the block, Ctrl-C (SIGINT) raises KeyboardInterrupt as usual AND is remembered, so that an interrupt
    Python swallowed (raised inside a garbage-collector callback, a __del__ or a weakref callback, where it is
    printed as "Exception ignored" and the work goes on: hypothesis installs such a gc callback) is raised again
    at the next progress-bar step (or batch loop step, `checkpoint`), without the "Exception ignored" report.
    Installed only in the main thread and where SIGINT has Python's default handler (an ignored SIGINT, e.g. a
    background job, stays ignored); the previous handler is restored on exit,
    except after a Ctrl-C with `final` (the command line: the process then only shuts down), where further
    SIGINTs are ignored so that a second Ctrl-C cannot interrupt the shutdown with a traceback."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return

    def on_interrupt(signum: int, frame: Any) -> None:
        _interrupted["pending"] = True
        raise KeyboardInterrupt

    previous_hook = sys.unraisablehook

    def unraisable(record: Any) -> None:  # the swallowed interrupt is raised again later: no "Exception ignored"
        if not (record.exc_type is KeyboardInterrupt and _interrupted["pending"]):
            previous_hook(record)

    _interrupted["pending"] = False
    signal.signal(signal.SIGINT, on_interrupt)
    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        # after a Ctrl-C the process is on its way out: a second one must not break its shutdown (atexit handlers)
        signal.signal(signal.SIGINT, signal.SIG_IGN if _interrupted["pending"] and final else signal.default_int_handler)
        sys.unraisablehook = previous_hook
        _interrupted["pending"] = False
