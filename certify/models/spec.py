"""Model SPECs (DESIGN section 7): a zoo name (`zoo:digits-softplus-mlp` or just the name), an ONNX file
(`net.onnx`, converted by onnx2torch into a torch.fx GraphModule: certify.models.onnx), a TorchScript
file, or `module:callable` (also `path/to/file.py:callable`) returning an nn.Module, with the current
directory importable as `python -m` makes it. DataParallel / DistributedDataParallel wrappers are
unwrapped. Every model comes back in eval mode.

A TorchScript file comes back as the loaded ScriptModule: it is what explanations and conformance checks
run. Its graph is compiled code that torch.fx cannot trace, so the translations rebuild it as an fx graph
(certify.models.torchscript.translatable, called by certify.bounds.network.from_module and the checker's
certify.certificates.semantics.translate), or refuse naming the op that cannot be rebuilt."""
from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
from pathlib import Path

import torch
from torch import nn

from certify.errors import CertifyError, UnsupportedError
from certify.models.structure import require_acyclic
from certify.models import zoo
from certify.models.datasets import Dataset

TORCHSCRIPT_SUFFIXES = {".pt", ".pth", ".ts", ".torchscript"}


def unwrap_parallel(model: nn.Module) -> nn.Module:
    """The module inside nn.DataParallel / DistributedDataParallel wrappers (any depth).

    Raises UnsupportedError when a wrapper carries a forward / pre / backward hook or an instance-level
    forward: stripping it would drop what it changes (the translations refuse the same on wrappers)."""
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        hooks = (model._forward_hooks or model._forward_pre_hooks or model._backward_hooks
                 or getattr(model, "_backward_pre_hooks", None))
        if hooks or "forward" in model.__dict__:
            raise UnsupportedError(
                f"the {type(model).__name__} wrapper has a hook or its own forward, which can change what it computes; "
                "certify models only hook-free modules"
            )
        model = model.module
    return model


def _import_user_module(module_name: str):
    """Import `module_name` (dotted, or a .py file path) with the current directory importable."""
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.exists():
            raise UnsupportedError(f"module file {module_name!r} does not exist")
        name = f"certify_user_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise UnsupportedError(f"cannot import {module_name!r} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:  # `python -m` puts the current directory first
        sys.path.insert(0, cwd)
    return importlib.import_module(module_name)


def _from_callable(spec: str) -> nn.Module:
    module_name, _, attr = spec.rpartition(":")
    try:
        module = _import_user_module(module_name)
        factory = getattr(module, attr)
    except CertifyError:
        raise
    except (ImportError, AttributeError) as exc:
        raise UnsupportedError(
            f"cannot import {attr!r} from module {module_name!r}: {exc} (the current directory {os.getcwd()} is on the "
            "import path; give a dotted module name or a .py file)"
        ) from exc
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's module raised (or called exit) while importing
        raise UnsupportedError(f"importing module {module_name!r} raised {type(exc).__name__}: {exc}") from exc
    if callable(factory) and not isinstance(factory, nn.Module):
        try:
            model = factory()
        except CertifyError:
            raise
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - e.g. a factory that needs arguments, or sys.exit
            raise UnsupportedError(
                f"{spec!r}: calling {attr}() with no arguments raised {type(exc).__name__}: {exc}; module:callable must "
                "name a module instance or a factory that takes no arguments"
            ) from exc
    else:
        model = factory
    if not isinstance(model, nn.Module):
        raise UnsupportedError(f"{spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def spec_kind(spec: str) -> str | None:
    """What a model SPEC names, by the rules `load_model` follows: "zoo", "onnx", "torchscript" (a file with a
    TorchScript suffix, or any existing file), "code" (module:callable, which imports and runs Python code), or
    None (nothing loadable)."""
    if spec.startswith("zoo:") or spec in zoo.RECIPES:
        return "zoo"
    path = Path(spec)
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if path.suffix in TORCHSCRIPT_SUFFIXES or path.exists():
        return "torchscript"
    return "code" if ":" in spec else None


def refuse_named_code(spec: str, named_by: str, remedy: str) -> None:
    """CertificateFormatError when `spec`, named by `named_by` (a certificate, a store), would run Python code
    (`spec_kind` "code"): the checker never runs code that a document names unless its user asks (`remedy`)."""
    if spec_kind(spec) == "code":
        from certify.errors import CertificateFormatError

        raise CertificateFormatError(
            f"{named_by} names its model by Python code ({spec!r}), and certify verify does not run code that a "
            f"document names: pass {remedy} if you trust that code, or give the model as ONNX, TorchScript or a zoo "
            "name")


def load_model(spec: str) -> tuple[nn.Module, Dataset | None]:
    """(model in eval mode, its zoo data set or None) for a model SPEC (`spec_kind`)."""
    kind = spec_kind(spec)
    if kind == "zoo":
        return zoo.load(spec)
    path = Path(spec)
    if kind == "onnx":
        from certify.models.onnx import load_onnx

        return load_onnx(path), None
    if kind == "torchscript":
        if not path.exists():
            raise UnsupportedError(f"model file {spec!r} does not exist")
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnsupportedError(
                f"{spec!r} is not a TorchScript model file ({first}); a state dict or a pickled module is not a model "
                "SPEC: give module:callable returning the eager module, or an ONNX export"
            ) from exc
        return model.eval(), None
    if kind == "code":
        model = unwrap_parallel(_from_callable(spec))
        require_acyclic(model)  # before eval(), which would recurse forever on a cycle
        return model.eval(), None
    raise UnsupportedError(
        f"model spec {spec!r} is neither a zoo name ({', '.join(zoo.names())}), an ONNX file, a TorchScript file, "
        "nor module:callable"
    )


def _first_weighted(model: nn.Module) -> tuple[str, torch.Size] | None:
    """(layer name, weight shape) of the first module, in registration order, holding a weight of rank >= 2
    (a Linear or convolution; TorchScript modules report their original class name). Only for messages."""
    for module in model.modules():
        try:
            weight = dict(module.named_parameters(recurse=False)).get("weight")
        except Exception:  # noqa: BLE001 - a module that cannot list its parameters: no hint
            weight = None
        if isinstance(weight, torch.Tensor) and not isinstance(weight, nn.parameter.UninitializedParameter) and weight.dim() >= 2:
            return getattr(module, "original_name", type(module).__name__), weight.shape
    return None


def property_input_shape(model: nn.Module, n_inputs: int, given: tuple[int, ...] | None = None,
                         option: str = "--input-shape") -> tuple[int, ...]:
    """The per-example input shape to reshape a property's flat box of `n_inputs` values to: the shape the
    model records (`certify_input_shape`, ONNX), else `given` (the CLI's `option`), else flat (n_inputs,).
    UsageError when `given` disagrees with the recorded shape or does not hold n_inputs values; InvalidInputError
    when the recorded shape does not hold n_inputs values."""
    from certify.errors import InvalidInputError, UsageError

    recorded = getattr(model, "certify_input_shape", None)
    if recorded is not None:
        recorded = tuple(int(s) for s in recorded)
        if given is not None and tuple(given) != recorded:
            raise UsageError(f"{option} {','.join(map(str, given))} differs from the input shape {recorded} the model records")
        size = math.prod(recorded)
        if size != n_inputs:
            raise InvalidInputError(f"the property has {n_inputs} inputs (X_0..X_{n_inputs - 1}), but the model takes "
                                    f"{size} (input shape {recorded})")
        return recorded
    if given is not None:
        size = math.prod(given)
        if size != n_inputs:
            raise UsageError(f"{option} {','.join(map(str, given))} holds {size} values, but the property has {n_inputs} "
                             f"inputs (X_0..X_{n_inputs - 1})")
        return tuple(int(s) for s in given)
    return (n_inputs,)


def check_property_fits(model: nn.Module, lower, upper, n_outputs: int, shape: tuple[int, ...],
                        shape_given: bool = False, option: str = "--input-shape") -> None:
    """Run `model` once at the centre of the box [lower, upper] (flat float64 arrays) reshaped to `shape`, and
    check it has `n_outputs` outputs. A model that cannot take the box is named with both sizes (its first
    Linear's inputs) or, when it takes images and no shape is known, with `option`: UsageError (the option is
    missing) or InvalidInputError (the property does not fit the model)."""
    import numpy as np

    from certify.errors import InvalidInputError, UsageError

    n_inputs = int(np.asarray(lower).size)
    dtype, device = torch.float32, torch.device("cpu")
    for t in list(model.parameters()) + list(model.buffers()):
        if not isinstance(t, nn.parameter.UninitializedParameter) and t.is_floating_point():
            dtype, device = t.dtype, t.device
            break
    centre = (np.asarray(lower, dtype=np.float64) + np.asarray(upper, dtype=np.float64)) / 2
    x = torch.as_tensor(centre).reshape(1, *shape).to(device=device, dtype=dtype)
    try:
        with torch.no_grad():
            y = model(x)
    except Exception as exc:  # noqa: BLE001 - any failure here means the property's inputs do not fit the model
        first = _first_weighted(model)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        cause = f"{type(exc).__name__}: {text}"
        if first is not None and len(first[1]) > 2 and len(shape) == 1:
            name, weight = first
            raise UsageError(f"the model's first layer is {name} (weight {list(weight)}), which takes images, and the model "
                             f"records no input shape: give {option} C,H,W with C*H*W = {n_inputs} (the property's inputs)"
                             f" [{cause}]") from exc
        if first is not None and len(first[1]) == 2 and len(shape) == 1 and int(first[1][1]) != n_inputs:
            name, weight = first
            raise InvalidInputError(f"the property has {n_inputs} inputs (X_0..X_{n_inputs - 1}), but the model's first "
                                    f"layer {name} takes {int(weight[1])} [{cause}]") from exc
        hint = "" if shape_given or len(shape) > 1 else f"; if the model takes images, give {option} C,H,W"
        raise InvalidInputError(f"the model cannot be evaluated on the property's {n_inputs} inputs shaped "
                                f"{tuple(shape)}: {cause}{hint}") from exc
    if not isinstance(y, torch.Tensor):
        raise UnsupportedError(f"the model returns {type(y).__name__}, not one tensor of outputs")
    m = int(y.numel())  # one example
    if m != n_outputs:
        raise InvalidInputError(f"the property constrains {n_outputs} outputs (Y_0..Y_{n_outputs - 1}), but the model "
                                f"has {m} outputs")
