"""Content hashes that identify a model (architecture and weights) and an input, for caches and certificates;
the checked cache of trained weights (`cached_weights`) the zoos keep under $CERTIFY_CACHE."""
from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import stat
import sys
import types
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from certify.errors import UsageError
from certify.models.structure import require_acyclic
from certify.runs import atomic_save

T = TypeVar("T")
CACHE_FORMAT = 1  # one file: {"format", "recipe" (JSON text), "weights_sha256", "state_dict"}


def _update_with_tensor(digest: "hashlib._Hash", tensor: Tensor) -> None:
    t = tensor.detach().to("cpu").contiguous()
    digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
    digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())


def _code_of(module: nn.Module) -> bytes:
    """What decides the module's function beyond its repr and tensors: the source of `forward` for classes
    not defined by torch itself (a user's class, a certify builder), an instance-level `forward` (a
    monkeypatch), the TorchScript code of a ScriptModule's forward, and the number of hooks of each kind.
    torch's own modules are named by their type in the repr; hashing their source would tie every
    certificate to one torch release. (Calling a ScriptModule caches its compiled forward in the instance
    __dict__; that is not a monkeypatch and does not change the hash.)"""
    parts = []
    own = module.__dict__.get("forward")
    if own is not None and not isinstance(own, torch._C.ScriptMethod):
        parts.append("instance forward:" + _source(own))
    cls = type(module)
    if isinstance(module, torch.fx.GraphModule):  # its forward is generated from its graph (e.g. converted ONNX)
        parts.append("graph:" + module.code)
    elif isinstance(module, torch.jit.ScriptModule):  # compiled code: the repr names only the original class
        if module._c._has_method("forward"):
            code, constants = module._c._get_method("forward").code_with_constants  # CONSTANTS.cN of a trace
            parts.append("torchscript:" + code)
            for name in sorted(constants):
                value = constants[name]
                parts.append(f"{name}=" + (tensor_hash(value) if isinstance(value, Tensor) else repr(value)))
    elif not cls.__module__.startswith("torch."):
        parts.append(f"{cls.__module__}.{cls.__qualname__}:" + _source(cls.forward))
    hooks = [len(getattr(module, name, {}) or {}) for name in
             ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")]
    if any(hooks):
        parts.append(f"hooks:{hooks}")
    return "\n".join(parts).encode()


def _source(function: object) -> str:
    """The source text of a function, or (defined where no source is kept) a fingerprint of its bytecode."""
    try:
        return inspect.getsource(function)  # type: ignore[arg-type]
    except (OSError, TypeError):
        code = getattr(function, "__code__", None)
        if code is None:
            return repr(type(function))
        return _code_fingerprint(code)


def _code_fingerprint(code: types.CodeType) -> str:
    consts = [_code_fingerprint(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return code.co_code.hex() + repr(consts) + repr(code.co_names)


def model_hash(model: nn.Module) -> str:
    """sha256 of the module tree (its repr), the code that decides each module's function (`_code_of`: the
    forward source of non-torch classes, instance-level forwards, hooks) and every parameter and buffer
    (name, dtype, shape, bytes). Two models with the same hash compute the same function unless they
    patch torch itself. Raises UnsupportedError for a module cycle (`structure.require_acyclic`)."""
    require_acyclic(model)  # repr() would recurse forever on one
    digest = hashlib.sha256(repr(model).encode())
    for name, module in model.named_modules():
        code = _code_of(module)
        if code:
            digest.update(name.encode() + b"\0" + code)
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        _update_with_tensor(digest, tensor)
    return digest.hexdigest()


def tensor_hash(tensor: Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes."""
    digest = hashlib.sha256()
    _update_with_tensor(digest, tensor)
    return digest.hexdigest()


def state_dict_hash(state: Mapping[str, Tensor]) -> str:
    """sha256 of a state dict: every entry's name, dtype, shape and bytes, in key order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode() + b"\0")
        _update_with_tensor(digest, state[name])
    return digest.hexdigest()


def _recipe_text(recipe: Mapping[str, Any]) -> str:
    return json.dumps(recipe, sort_keys=True)


def save_cached(path: Path, state: Mapping[str, Tensor], recipe: Mapping[str, Any]) -> Path:
    """Write one cache file holding the weights, their `state_dict_hash` and the recipe they were trained from,
    atomically (`certify.runs.atomic_save`: concurrent trainers of the same entry leave one complete file)."""
    entry = {"format": CACHE_FORMAT, "recipe": _recipe_text(recipe), "weights_sha256": state_dict_hash(state),
             "state_dict": {k: v.detach().cpu() for k, v in state.items()}}
    return atomic_save(path, lambda f: torch.save(entry, f))


class UnusableCache(Exception):
    """A cache file that must be rebuilt; the message completes "the cached ... {path} ..." (e.g. "was trained
    from another recipe"). Raised by the `check` of `read_cache_file`, never out of it."""


def read_cache_file(path: Path, check: Callable[[Any], T], unusable: Callable[[str], None]) -> T | None:
    """`check(entry)` for the object `torch.load(..., weights_only=True)` reads from the cache file `path`; None when
    `path` does not exist, and None after `unusable(why)` (one line on stderr, by the caller's wording) when the
    file is unusable: not a regular file (a FIFO, a device such as /dev/zero behind a symlink: refused from its
    fstat, before any read), or when reading, unpickling or `check` raises anything (UnusableCache: its message;
    any other exception, e.g. the KeyError or IndexError of random bytes: "is unreadable (TYPE)"). Reads at most
    the size fstat gives. Never raises for a bad file; shared by the model and data-set caches."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
    except FileNotFoundError:
        return None
    except OSError as exc:
        unusable(f"is unreadable ({type(exc).__name__}: {exc.strerror})")
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                unusable("is not a regular file (a device, FIFO or socket, perhaps behind a symlink)")
                return None
            data = f.read(info.st_size)
        with warnings.catch_warnings():  # torch warns about the "pickle protocol" of random bytes: one line only
            warnings.simplefilter("ignore")
            entry = torch.load(io.BytesIO(data), weights_only=True)
        return check(entry)
    except UnusableCache as exc:
        unusable(str(exc))
    except Exception as exc:  # any damage to the bytes, whatever torch or pickle raise for it: rebuild
        unusable(f"is unreadable ({type(exc).__name__})")
    return None


def _unusable(path: Path, why: str) -> None:
    print(f"certify: the cached model {path} {why}; retraining it", file=sys.stderr)


def _checked_weights(entry: Any, recipe: Mapping[str, Any]) -> dict[str, Tensor]:
    """The state dict of a model cache entry, or UnusableCache saying why it is not the one to load."""
    state = entry.get("state_dict") if isinstance(entry, dict) and entry.get("format") == CACHE_FORMAT else None
    if not (isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, Tensor) and v.layout == torch.strided
                                            for k, v in state.items())):
        raise UnusableCache("has no recorded weights hash (another format)")
    if entry.get("recipe") != _recipe_text(recipe):
        raise UnusableCache("was trained from another recipe")
    if state_dict_hash(state) != entry.get("weights_sha256"):
        raise UnusableCache("holds weights whose sha256 differs from the one recorded at training (changed on disk)")
    if not all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()):
        raise UnusableCache("holds NaN or infinite weights")
    return state


def load_cached(path: Path, recipe: Mapping[str, Any]) -> dict[str, Tensor] | None:
    """The weights cached in `path` when they are exactly those `save_cached` wrote for `recipe`; None when there
    is no such file, and None with one line on stderr saying why when the file is unusable (`read_cache_file`):
    not a regular file, unreadable (flipped bytes in the container, a truncated file, random bytes, an older
    format without a hash, sparse tensors), another recipe, weights whose hash differs from the recorded one
    (bytes flipped inside a tensor, weights overwritten with zeros or NaN), or non-finite weights. Never raises
    for a bad file."""
    return read_cache_file(path, lambda entry: _checked_weights(entry, recipe), lambda why: _unusable(path, why))


def cached_weights(model: nn.Module, path: Path, recipe: Mapping[str, Any], train: Callable[[], Any]) -> nn.Module:
    """`model` with the weights cached in `path` for `recipe` (`load_cached`), or else trained by `train()` (which
    trains `model` in place) and cached (`save_cached`; the folder is created; a cache that cannot be written, e.g.
    a symlink in place of the file, is skipped with one line on stderr). Returns `model`."""
    state = load_cached(path, recipe)
    if state is not None:
        expected = {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}
        if {k: (v.shape, v.dtype) for k, v in state.items()} == expected:  # checked first: a failed load_state_dict
            model.load_state_dict(state)  # may have overwritten some tensors, and training must start from the init
            return model
        _unusable(path, "holds tensors of other names or shapes than the model's")
    train()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_cached(path, model.state_dict(), recipe)
    except (OSError, UsageError) as exc:  # an unwritable cache (or a symlink or device in its place) costs a
        print(f"certify: the trained weights were not cached ({exc})", file=sys.stderr)  # retrain next time
    return model
