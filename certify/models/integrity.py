"""Is torch still torch? A check that the torch code a model runs through has not been replaced.

Both translations (the issuer's `certify.bounds.network.from_module` and the checker's
`certify.certificates.semantics.translate`) model an op by what torch's OWN implementation computes: an
`nn.Linear` is W x + b, a call_function node whose target is `F.relu` is a ReLU, a call_method `.view` is a
reshape. A model factory can change what those names do without touching the model: replace
`nn.Module.__call__`, `nn.Linear.forward` or `nn.Conv2d._conv_forward` on the class, or `F.relu` /
`torch.Tensor.view` in the module. The traced graph then looks exactly like an honest one while the model
computes something else (a second attacker's finding: a class-level `nn.Module.__call__` patch gave a false
property-holds and a Lipschitz bound of 1e-300, both accepted by the checker).

`check_torch_integrity(model)` raises UnsupportedError when:
* any attribute of a torch class in the MRO of any of the model's modules (nn.Module itself included:
  `__call__`, `_call_impl`, ...; `_ConvNd._conv_forward`; every `forward`) is not the object it was when
  certify was imported (the classes torch defines by then are kept as a snapshot of their `vars()`; a
  reviewer's finding, stop 28: a replacement decorated with `functools.wraps(nn.Linear.forward)` carries
  `__wrapped__` = torch's own forward and passed a check that judged a function by what it unwraps to);
* on a torch class made later (fx makes one per GraphModule), or for an attribute added since, any code that
  does not live in torch's installed package: every layer of a function's `__wrapped__` chain (generic
  decorators of the standard library pass and their wrapped function is judged), the functions of static and
  class methods, properties and partial objects (`_foreign_code`);
* any of the torch functions and Tensor methods the translations map to ops (`TRACKED`) is no longer the
  object it was when certify was imported, or is a Python function from outside torch's package, or a
  builtin of another name (e.g. `torch.relu = torch.abs`).
A patch made before certify is imported with a torch-internal function of the same name is not detected;
the CLI imports certify before it imports a user's model.
"""
from __future__ import annotations

import functools
import inspect
import os
import types
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from certify.errors import UnsupportedError

_TORCH_DIR = str(Path(torch.__file__).resolve().parent)

_F_NAMES = ("relu", "leaky_relu", "softplus", "sigmoid", "tanh", "gelu", "silu", "softmax", "log_softmax",
            "dropout", "avg_pool1d", "avg_pool2d", "max_pool1d", "max_pool2d", "adaptive_avg_pool1d",
            "adaptive_avg_pool2d", "linear", "conv1d", "conv2d", "batch_norm", "pad", "max_pool1d_with_indices",
            "max_pool2d_with_indices", "_max_pool1d", "_max_pool2d")
_TORCH_NAMES = ("relu", "relu_", "sigmoid", "tanh", "flatten", "cat", "concat", "add", "sub", "subtract", "mul",
                "multiply", "div", "divide", "neg", "negative", "mean", "sum", "softmax", "log_softmax", "permute",
                "transpose", "squeeze", "unsqueeze", "reshape", "conv1d", "conv2d", "batch_norm", "avg_pool1d",
                "max_pool1d", "max_pool2d", "adaptive_avg_pool1d", "clone", "sigmoid_", "tanh_")
_TENSOR_NAMES = ("relu", "relu_", "sigmoid", "tanh", "view", "reshape", "flatten", "permute", "transpose",
                 "squeeze", "unsqueeze", "contiguous", "mean", "sum", "add", "sub", "mul", "div", "neg", "softmax",
                 "log_softmax", "size", "clone", "__add__", "__radd__", "__iadd__", "__sub__", "__rsub__",
                 "__isub__", "__mul__", "__rmul__", "__imul__", "__truediv__", "__itruediv__", "__neg__",
                 "__getitem__", "add_", "sub_", "mul_", "div_")


def _tracked() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for prefix, owner, names in (("torch.nn.functional", F, _F_NAMES), ("torch", torch, _TORCH_NAMES),
                                 ("torch.Tensor", torch.Tensor, _TENSOR_NAMES)):
        for name in names:
            if hasattr(owner, name):
                found[f"{prefix}.{name}"] = getattr(owner, name)
    return found


TRACKED = _tracked()  # taken when certify is imported
_OWNERS = {"torch.nn.functional": F, "torch": torch, "torch.Tensor": torch.Tensor}
# (name, owner, attribute, original) of every TRACKED entry: the lookups `check_torch_integrity` repeats on each call
_TRACKED_LOOKUPS = tuple((name, _OWNERS[name.rsplit(".", 1)[0]], name.rsplit(".", 1)[1], original)
                         for name, original in TRACKED.items())


def _from_torch(fn: Any) -> bool:
    """A Python function whose code lives in torch's installed package."""
    code = getattr(fn, "__code__", None)
    return code is not None and _in_torch(code.co_filename)


@functools.lru_cache(maxsize=None)
def _in_torch(filename: str) -> bool:
    """Whether the file `filename` lies inside torch's package folder (resolved once per file name: resolving is
    most of the cost of a check)."""
    try:
        return str(Path(filename).resolve()).startswith(_TORCH_DIR + os.sep)
    except (OSError, ValueError):
        return False


def _genuine(name: str, current: Any) -> bool:
    if isinstance(current, types.FunctionType):
        return _from_torch(current)
    short = name.rsplit(".", 1)[1]
    own = getattr(current, "__name__", short)
    # builtins and descriptors keep their C name; torch.concat / subtract / multiply / divide / negative alias others
    return own == short or short in ("concat", "subtract", "multiply", "divide", "negative", "_max_pool1d",
                                     "_max_pool2d", "max_pool1d_with_indices", "max_pool2d_with_indices") or (
        (short, own) in (("__itruediv__", "__idiv__"), ("__neg__", "neg")))


def _torch_class(cls: type) -> bool:
    return (cls.__module__ or "").split(".")[0] == "torch"


def _torch_module_classes() -> list[type]:
    """Every torch class in the MRO of an nn.Module subclass that torch defines when certify is imported."""
    found: dict[type, None] = {}
    pending = [nn.Module]
    while pending:
        cls = pending.pop()
        if _torch_class(cls):
            found.update(dict.fromkeys(c for c in inspect.getmro(cls) if _torch_class(c)))
        pending.extend(cls.__subclasses__())
    return list(found)


# vars() of those classes when certify is imported (the objects themselves: an identity stays theirs while kept)
_CLASS_SNAPSHOTS = {cls: dict(vars(cls)) for cls in _torch_module_classes()}
_MISSING = object()
_WRAPPER_FILES = ("functools", "contextlib", "warnings", "typing_extensions")  # generic decorators' own code
_MAX_WRAPPERS = 64


def _generic_wrapper(fn: types.FunctionType) -> bool:
    """A decorator's wrapper from the standard library or typing_extensions (contextlib.contextmanager's helper,
    warnings.deprecated's wrapper), which calls the function in its __wrapped__ (judged in turn)."""
    return hasattr(fn, "__wrapped__") and Path(fn.__code__.co_filename).stem in _WRAPPER_FILES


def _foreign_code(value: Any, generated_ok: bool = False) -> str | None:
    """The file of the first code in `value` (a class attribute) that is not torch's own, or None. Functions count
    with every layer of their __wrapped__ chain (each from torch, or a generic wrapper whose wrapped function
    is judged in turn: a replacement decorated with functools.wraps(torch's function) is foreign); static and
    class methods, properties (getter, setter, deleter) and partial objects by the functions they hold; builtins
    and descriptors written in C are torch's or Python's. `generated_ok`: fx's code of a GraphModule's graph."""
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        return next((f for f in map(_foreign_code, (value.fget, value.fset, value.fdel)) if f is not None), None)
    if isinstance(value, (functools.partial, functools.partialmethod)):
        return _foreign_code(value.func)
    layer, depth = value, 0
    while isinstance(layer, types.FunctionType):
        name = layer.__code__.co_filename
        if not (_from_torch(layer) or _generic_wrapper(layer) or (generated_ok and name.startswith("<eval_with_key>"))):
            return name
        layer, depth = getattr(layer, "__wrapped__", None), depth + 1
        if depth > _MAX_WRAPPERS:
            return f"{name} (a chain of more than {_MAX_WRAPPERS} wrappers)"
    return None if layer is None or not isinstance(layer, (property, functools.partial, functools.partialmethod,
                                                            staticmethod, classmethod)) else _foreign_code(layer)


def check_torch_integrity(model: nn.Module) -> None:
    """Raise UnsupportedError naming the first torch method or function that is not torch's own (module doc)."""
    seen: set[type] = set()
    modules = list(model.modules()) if isinstance(model, nn.Module) else []
    for module in modules:
        for cls in inspect.getmro(type(module)):
            if cls in seen or not _torch_class(cls):
                continue
            seen.add(cls)
            snapshot = _CLASS_SNAPSHOTS.get(cls)
            for attr, value in vars(cls).items():
                if snapshot is not None:
                    kept = snapshot.get(attr, _MISSING)
                    if value is kept:
                        continue
                    if kept is not _MISSING:
                        raise UnsupportedError(
                            f"{cls.__module__}.{cls.__qualname__}.{attr} has been replaced since certify was imported: "
                            "the ops of this model would not compute what torch's own implementation does, which is "
                            "what certify models")
                foreign = _foreign_code(value, generated_ok=attr == "forward" and issubclass(cls, torch.fx.GraphModule))
                if foreign is not None:
                    raise UnsupportedError(
                        f"{cls.__module__}.{cls.__qualname__}.{attr} has been replaced by code outside torch "
                        f"({foreign}): the ops of this model would not compute what torch's own "
                        "implementation does, which is what certify models"
                    )
    for name, owner, short, original in _TRACKED_LOOKUPS:
        current = getattr(owner, short, None)
        if current is not original or not _genuine(name, current):
            raise UnsupportedError(
                f"{name} has been replaced since certify was imported (or is not torch's own): the traced ops "
                "would not compute what torch's implementation does, which is what certify models"
            )
