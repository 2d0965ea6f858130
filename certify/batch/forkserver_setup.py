"""Imported first by the process pool's forkserver (`certify.batch.executors.PRELOAD`). Ctrl-C is the parent's to
handle, so the forkserver ignores SIGINT, also while it imports torch for the workers (a Ctrl-C then printed a
KeyboardInterrupt traceback from the forkserver); the workers it forks inherit SIG_IGN. (The parent also starts the
forkserver with SIGINT ignored, a disposition that survives exec, which covers the interpreter's own start.)
A worker forked after its parent was interrupted cannot open the pool's semaphores, which the parent removed
when it exited (FileNotFoundError from `SemLock._rebuild` while the worker starts): that worker exits silently,
not with a traceback on the terminal. `certify.batch.executors._worker_init` restores the default hook.

Both take effect only when imported by `multiprocessing.forkserver.main` (the forkserver loading its preload):
imported anywhere else (a test importing every module, say) the module changes nothing, so no other process loses
its Ctrl-C."""
import signal
import sys


def _starting_worker_hook(kind, value, tb) -> None:
    if not issubclass(kind, FileNotFoundError):
        sys.__excepthook__(kind, value, tb)


def in_forkserver() -> bool:
    """Whether this import runs inside `multiprocessing.forkserver.main` (the forkserver importing its preload)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "main" and frame.f_globals.get("__name__") == "multiprocessing.forkserver":
            return True
        frame = frame.f_back
    return False


if in_forkserver():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.excepthook = _starting_worker_hook
