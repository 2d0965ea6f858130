"""Imported first by the process pool's forkserver (`certify.batch.executors.PRELOAD`). Ctrl-C is the parent's to
handle, so the forkserver ignores SIGINT from the start, also while it imports torch for the workers (a Ctrl-C
then printed a KeyboardInterrupt traceback from the forkserver); the workers it forks inherit SIG_IGN.
A worker forked after its parent was interrupted cannot open the pool's semaphores, which the parent removed
when it exited (FileNotFoundError from `SemLock._rebuild` while the worker starts): that worker exits silently,
not with a traceback on the terminal. `certify.batch.executors._worker_init` restores the default hook."""
import signal
import sys

signal.signal(signal.SIGINT, signal.SIG_IGN)


def _starting_worker_hook(kind, value, tb) -> None:
    if not issubclass(kind, FileNotFoundError):
        sys.__excepthook__(kind, value, tb)


sys.excepthook = _starting_worker_hook
