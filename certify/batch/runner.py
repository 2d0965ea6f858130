"""`certify batch`: certify every (input, method) of a data set or a folder of inputs that the store does not
hold yet, on a process pool or Ray (`certify.batch.executors`), the parent being the single writer of the
store (`certify.batch.store`).

A task is one method on a chunk of inputs (one batched explanation, `certify_explanations` on [chunk, ...]);
a worker returns the chunk's certificates as JSON text and the parent inserts each in its own transaction.
Before a task is submitted its keys are recorded as attempted, so a rerun after a kill knows which keys it
re-does (attempted by an earlier run, never committed) apart from the ones it does for the first time.
The certificate of each input is the one `certify explain` writes for it (same parameter preparation:
`certify.explain.registry.command_line_params`), with the predicted class as the target.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from certify.batch.store import CertificateStore, canonical_params
from certify.errors import InvalidInputError, UsageError

INPUT_SUFFIXES = (".npy", ".pt")


@dataclass(frozen=True)
class Inputs:
    """Inputs to certify: `ids[i]` names `x[i]` (x: float32 [N, *input_shape])."""
    ids: list[str]
    x: np.ndarray


def dataset_inputs(name: str, split: str = "test", limit: int | None = None) -> Inputs:
    """The first `limit` examples (all when None) of an embedded data set's split (train or test); ids
    NAME:SPLIT:INDEX."""
    from certify.models.datasets import load_dataset

    if split not in ("train", "test"):
        raise UsageError(f"--split must be train or test, got {split!r}")
    data = load_dataset(name)
    x = data.x_train if split == "train" else data.x_test
    if limit is not None:
        if limit < 1:
            raise UsageError(f"--limit must be >= 1, got {limit}")
        x = x[:limit]
    return Inputs([f"{name}:{split}:{i}" for i in range(x.shape[0])], x.detach().float().numpy())


def directory_inputs(folder: str | Path, input_shape: tuple[int, ...] | None = None) -> Inputs:
    """Every .npy and .pt file (a tensor) of `folder`, sorted by name, each one example with or without its batch
    dimension (`input_shape`: the model's per-example shape when known), read as `certify explain --input` reads
    one (`certify.validation.load_array_file`, `single_example`); ids FILE@HASH, HASH the first 16 hex digits of
    the example's `array_sha256` (the hash its certificate records for its input, float32 [1, ...]), so a
    changed file is a new input and `verify --store` binds each id to its certificate. UsageError for a missing
    or empty folder; InvalidInputError naming the file for an unreadable one, one that is not of real numbers,
    a batch of more than one, or shapes that differ."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--inputs {folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix in INPUT_SUFFIXES and p.is_file())
    if not files:
        raise UsageError(f"--inputs {folder}: no .npy or .pt files")
    from certify.certificates.claims import array_sha256
    from certify.validation import load_array_file, single_example

    ids, rows = [], []
    for path in files:
        x = load_array_file(path, "--inputs").detach()
        if x.layout != torch.strided:
            raise InvalidInputError(f"--inputs file {path}: a {x.layout} tensor; save a dense one (x.to_dense())")
        x = single_example(x, input_shape, f"--inputs file {path}").float()
        if not bool(torch.isfinite(x).all()):
            raise InvalidInputError(f"--inputs file {path}: the example holds NaN or Inf")
        rows.append(x)
        ids.append(f"{path.name}@{array_sha256(x.numpy())[:16]}")
    shapes = {tuple(r.shape) for r in rows}
    if len(shapes) > 1:
        raise InvalidInputError(f"--inputs {folder}: the examples have different shapes {sorted(shapes)}")
    return Inputs(ids, torch.cat(rows).numpy())


@dataclass(frozen=True)
class Task:
    """One method on a chunk of inputs (x: [chunk, ...])."""
    model: str
    method: str
    params: dict[str, Any]
    eps: float
    k: int | None
    ids: list[str]
    x: np.ndarray


@dataclass(frozen=True)
class TaskResult:
    """The chunk's certificates (input id, certificate JSON) and the wall time of the task in seconds."""
    certificates: list[tuple[str, str]]
    seconds: float


_MODELS: dict[str, tuple] = {}


def loaded_model(spec: str) -> tuple:
    """(model, its zoo data or None) for a model SPEC, loaded once per process (`load_model`)."""
    from certify.models.spec import load_model

    if spec not in _MODELS:
        _MODELS[spec] = load_model(spec)
    return _MODELS[spec]


def certify_task(task: Task) -> TaskResult:
    """Run in a worker: explain and certify the task's chunk in one batch (torch on one thread)."""
    from certify.certificates.builder import certify_explanations
    from certify.explain.registry import command_line_params, make_explainer

    torch.set_num_threads(1)
    start = time.perf_counter()
    model, data = loaded_model(task.model)
    explainer = make_explainer(task.method, model, **command_line_params(task.method, task.params, data, task.eps))
    certs = certify_explanations(explainer, torch.as_tensor(task.x), eps=task.eps, k=task.k, model_spec=task.model)
    return TaskResult([(i, c.to_json()) for i, c in zip(task.ids, certs)], time.perf_counter() - start)


@dataclass
class BatchConfig:
    """`methods`: method names; `params`: the parameters of every method (`all`) and of one method (its name)."""
    model: str
    methods: list[str]
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    eps: float = 0.1
    k: int | None = None
    chunk: int = 16

    def method_params(self, method: str) -> dict[str, Any]:
        return {**self.params.get("all", {}), **self.params.get(method, {})}

    def key_params(self, method: str) -> str:
        """The canonical parameters JSON of the store's key: model SPEC, eps, k and the method's parameters."""
        return canonical_params({"model": self.model, "eps": self.eps, "k": self.k, "params": self.method_params(method)})


@dataclass
class BatchSummary:
    store: str
    executor: str
    workers: int
    planned: int  # (input, method) pairs asked for
    already_done: int  # in the store before this run, or committed by a concurrent run meanwhile
    redone: int  # attempted by an earlier run, never committed: computed again
    computed: int  # inserted by this run
    seconds: float
    per_method: dict[str, dict[str, float]]  # method -> certificates inserted, worker seconds


def validate(config: BatchConfig) -> None:
    """Fail before any task runs: unknown methods or parameters (UsageError / UnsupportedError from
    `make_explainer`), a bad chunk size, parameters for a method not asked for."""
    from certify.explain.registry import command_line_params, make_explainer

    if config.chunk < 1:
        raise UsageError(f"--chunk must be >= 1, got {config.chunk}")
    if not config.methods or len(set(config.methods)) != len(config.methods):
        raise UsageError(f"--methods must name distinct methods, got {config.methods}")
    stray = sorted(set(config.params) - {"all", *config.methods})
    if stray:
        raise UsageError(f"--param METHOD:KEY=VALUE for methods not in --methods: {stray}")
    model, data = loaded_model(config.model)
    for method in config.methods:
        make_explainer(method, model, **command_line_params(method, config.method_params(method), data, config.eps))
        config.key_params(method)


def run_batch(config: BatchConfig, inputs: Inputs, store: CertificateStore, executor, command: str,
              progress: bool = True) -> BatchSummary:
    """Certify every (input, method) the store lacks; each certificate is committed as soon as its task returns.
    On any exception (KeyboardInterrupt included) the tasks in flight are cancelled, the run's row is closed
    with its count, and the exception propagates; committed certificates stay. The caller closes `executor`. At most 2 x workers tasks are in flight (memory bounded by the chunk size)."""
    from certify.progress import checkpoint, progress_bar

    start = time.perf_counter()
    planned = len(inputs.ids) * len(config.methods)
    per_method = {m: {"certificates": 0, "seconds": 0.0} for m in config.methods}
    already = redone = computed = 0
    run_id, bar, queue, in_flight = None, None, [], {}
    try:
        validate(config)
        for method in config.methods:
            key = config.key_params(method)
            done, attempted = store.done(method, key), store.attempted(method, key)
            todo = [i for i, name in enumerate(inputs.ids) if name not in done]
            already += len(inputs.ids) - len(todo)
            redone += sum(inputs.ids[i] in attempted for i in todo)
            for s in range(0, len(todo), config.chunk):
                rows = todo[s : s + config.chunk]
                queue.append(Task(config.model, method, config.method_params(method), config.eps, config.k,
                                  [inputs.ids[i] for i in rows], inputs.x[rows]))
        queue.reverse()  # popped from the end: the tasks in order
        run_id = store.begin_run(command, planned, already, redone)
        bar = progress_bar(None, desc="certify batch", total=planned, unit="cert") if progress else None
        if bar is not None:
            bar.update(already)
        while queue or in_flight:
            checkpoint()  # a Ctrl-C swallowed where Python cannot raise it (a weakref or gc callback): stop here
            while queue and len(in_flight) < 2 * executor.workers:
                task = queue.pop()
                key = config.key_params(task.method)
                done = store.done_among(task.ids, task.method, key)  # committed meanwhile by a concurrent run
                if done:
                    already += len(done)
                    if bar is not None:
                        bar.update(len(done))
                    keep = [j for j, name in enumerate(task.ids) if name not in done]
                    if not keep:
                        continue
                    task = replace(task, ids=[task.ids[j] for j in keep], x=task.x[keep])
                store.mark_attempted(task.ids, task.method, key, run_id)
                in_flight[executor.submit(certify_task, task)] = task
            if not in_flight:  # every task left was committed by a concurrent run
                continue
            done_now, _ = executor.wait(list(in_flight))
            for handle in done_now:
                task = in_flight.pop(handle)
                result = executor.result(handle)
                key = config.key_params(task.method)
                each = result.seconds / max(1, len(result.certificates))
                for input_id, text in result.certificates:
                    inserted = store.insert(input_id, task.method, key, text, each, run_id)
                    computed += inserted
                    already += not inserted  # committed by a concurrent run while this one computed it
                per_method[task.method]["certificates"] += len(result.certificates)
                per_method[task.method]["seconds"] += result.seconds
                if bar is not None:
                    bar.update(len(result.certificates))
    except BaseException:
        executor.cancel(list(in_flight))
        raise
    finally:
        if bar is not None:
            bar.close()
        if run_id is not None:
            store.end_run(run_id, computed, already)
    return BatchSummary(str(store.path), executor.name, executor.workers, planned, already, redone, computed,
                        time.perf_counter() - start, per_method)
