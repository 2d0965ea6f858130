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
import os
import sys
from pathlib import Path

import torch
from torch import nn

from certify.errors import CertifyError, UnsupportedError
from certify.models import zoo
from certify.models.datasets import Dataset

TORCHSCRIPT_SUFFIXES = {".pt", ".pth", ".ts", ".torchscript"}


def unwrap_parallel(model: nn.Module) -> nn.Module:
    """The module inside nn.DataParallel / DistributedDataParallel wrappers (any depth)."""
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
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


def load_model(spec: str) -> tuple[nn.Module, Dataset | None]:
    """(model in eval mode, its zoo data set or None) for a model SPEC."""
    if spec.startswith("zoo:") or spec in zoo.RECIPES:
        return zoo.load(spec)
    path = Path(spec)
    if path.suffix.lower() == ".onnx":
        from certify.models.onnx import load_onnx

        return load_onnx(path), None
    if path.suffix in TORCHSCRIPT_SUFFIXES or path.exists():
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
    if ":" in spec:
        return unwrap_parallel(_from_callable(spec)).eval(), None
    raise UnsupportedError(
        f"model spec {spec!r} is neither a zoo name ({', '.join(zoo.names())}), an ONNX file, a TorchScript file, "
        "nor module:callable"
    )
