"""Where `certify batch` computes its tasks: a local process pool (default) or Ray. Workers only compute and
return certificates; the parent process is the single writer of the store (`certify.batch.store`).

* `ProcessExecutor(workers)`: `concurrent.futures.ProcessPoolExecutor` on a forkserver context (spawn where
  there is none): no worker inherits the parent's threads or open store; the forkserver and each worker ignore
  SIGINT (Ctrl-C stops the parent, which cancels the pool; `certify.batch.forkserver_setup`); a worker exits
  when the parent dies (a SIGKILLed run leaves no worker computing) and runs torch with one thread
  (`certify.batch.runner.certify_task`).
* `RayExecutor(workers, address)`: the same task function as a Ray remote function (`num_cpus=1` each).
  Without an address Ray is started locally by the command, `ray.init(num_cpus=workers,
  include_dashboard=False, log_to_driver=False)`, and stopped at the end.

Running on a cluster: start Ray on the cluster (`ray start --head` on one node, `ray start --address HEAD:6379`
on the others), with certify installed in the same Python environment on every node (the workers import
`certify.batch.runner` and load the model SPEC themselves: a zoo name, or a model file at the same path on
every node). Then run `certify batch ... --executor ray --ray-address auto` on a node of the cluster, or
`--ray-address ray://HEAD:10001` from outside it (Ray Client; the head must run the client server, which
`ray start --head` does by default). `--workers N` bounds the tasks in flight (2 N at a time). The store stays
on the machine running the command: certificates travel back to it and it alone writes them.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

from certify.errors import UnsupportedError, UsageError


def _worker_init(parent: int) -> None:
    """Ctrl-C is the parent's to handle; and a worker exits when the parent is gone (a SIGKILL leaves it blocked
    on its task queue otherwise, since it holds both ends of that pipe): a thread checks every PARENT_POLL s."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.excepthook = sys.__excepthook__  # the forkserver's start-up hook (`certify.batch.forkserver_setup`) ends here
    if os.name != "nt":
        threading.Thread(target=_exit_with, args=(parent,), daemon=True, name="certify-parent-watch").start()


PARENT_POLL = 0.5


def _exit_with(parent: int) -> None:
    while True:
        time.sleep(PARENT_POLL)
        try:
            os.kill(parent, 0)  # signal 0: a check only (POSIX; the watch is not started on Windows)
        except (ProcessLookupError, PermissionError):  # gone (or its pid reused by another user's process)
            os._exit(1)


# what a worker imports, loaded once by the forkserver (a worker's first task does not pay for it)
PRELOAD = ["certify.batch.forkserver_setup", "certify.batch.runner", "certify.certificates.builder",
           "certify.explain.registry", "certify.models.spec"]


class _Executor:
    """A context manager: closed on exit, its pending tasks cancelled when leaving on an exception."""

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc) -> None:
        self.close(cancel=kind is not None)


class ProcessExecutor(_Executor):
    """A local pool of `workers` processes."""

    name = "process"

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise UsageError(f"--workers must be >= 1, got {workers}")
        self.workers = workers
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if context.get_start_method() == "forkserver":
            context.set_forkserver_preload(PRELOAD)  # imported once, then forked
            # started now with SIGINT ignored, a disposition that survives exec: a Ctrl-C sent to the process group
            # while its interpreter starts (before forkserver_setup runs) would kill it with a fatal error message
            if threading.current_thread() is threading.main_thread():  # (signal handlers belong to the main thread)
                previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
                try:
                    multiprocessing.forkserver.ensure_running()
                finally:
                    signal.signal(signal.SIGINT, previous)
        self.pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init,
                                              initargs=(os.getpid(),))

    def submit(self, fn: Callable[[Any], Any], arg: Any) -> cf.Future:
        return self.pool.submit(fn, arg)

    def wait(self, handles: list) -> tuple[list, list]:
        """Block until at least one handle is done: (done, pending)."""
        done, pending = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        return list(done), list(pending)

    def result(self, handle: cf.Future) -> Any:
        return handle.result()

    def cancel(self, handles: list) -> None:
        """Cancel tasks not started yet (running ones finish; their results are dropped)."""
        for handle in handles:
            handle.cancel()

    def close(self, cancel: bool = False) -> None:
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


class RayExecutor(_Executor):
    """Tasks as Ray remote functions, on a local Ray started here (`address` None) or on the cluster at
    `address` (`auto`, `ray://host:10001`, `host:6379`). UnsupportedError when ray is not installed."""

    name = "ray"

    def __init__(self, workers: int, address: str | None = None) -> None:
        if workers < 1:
            raise UsageError(f"--workers must be >= 1, got {workers}")
        try:
            import ray
        except ImportError:
            raise UnsupportedError("--executor ray needs ray: pip install 'certify[batch]' (or pip install ray)") from None
        self.ray = ray
        self.workers = workers
        self.started_here = not ray.is_initialized()
        if self.started_here:
            if address is None:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        self.remote: dict[Callable, Any] = {}

    def submit(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        if fn not in self.remote:
            self.remote[fn] = self.ray.remote(num_cpus=1, max_retries=0)(fn)
        return self.remote[fn].remote(arg)

    def wait(self, handles: list) -> tuple[list, list]:
        done, pending = self.ray.wait(handles, num_returns=1)
        return list(done), list(pending)

    def result(self, handle: Any) -> Any:
        try:
            return self.ray.get(handle)
        except self.ray.exceptions.RayTaskError as exc:  # the task's own exception, with its exit code
            raise exc.as_instanceof_cause() from None

    def cancel(self, handles: list) -> None:
        for handle in handles:
            self.ray.cancel(handle, force=True)

    def close(self, cancel: bool = False) -> None:
        if self.started_here:
            self.ray.shutdown()


def make_executor(kind: str, workers: int, address: str | None = None) -> ProcessExecutor | RayExecutor:
    """The executor named by `--executor` (process or ray); `address` only with ray."""
    if kind == "process":
        if address is not None:
            raise UsageError("--ray-address needs --executor ray")
        return ProcessExecutor(workers)
    if kind == "ray":
        return RayExecutor(workers, address)
    raise UsageError(f"unknown executor {kind!r}; choose process or ray")
