"""Model SPECs (DESIGN section 7): a zoo name (`zoo:digits-softplus-mlp` or just the name), a TorchScript
file, or `module:callable` returning an nn.Module. Every model comes back in eval mode."""
from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from certify.errors import UnsupportedError
from certify.models import zoo
from certify.models.datasets import Dataset


def load_model(spec: str) -> tuple[nn.Module, Dataset | None]:
    """(model in eval mode, its zoo data set or None) for a model SPEC."""
    if spec.startswith("zoo:") or spec in zoo.RECIPES:
        return zoo.load(spec)
    path = Path(spec)
    if path.suffix in {".pt", ".pth", ".ts", ".torchscript"} or path.exists():
        if not path.exists():
            raise UnsupportedError(f"model file {spec!r} does not exist")
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as exc:
            raise UnsupportedError(f"{spec!r} is not a TorchScript model file: {exc}") from exc
        return model.eval(), None
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise UnsupportedError(f"cannot import {attr!r} from module {module_name!r}: {exc}") from exc
        model = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
        if not isinstance(model, nn.Module):
            raise UnsupportedError(f"{spec!r} returned {type(model).__name__}, not a torch.nn.Module")
        return model.eval(), None
    raise UnsupportedError(
        f"model spec {spec!r} is neither a zoo name ({', '.join(zoo.names())}), a TorchScript file, nor module:callable"
    )
