"""ONNX front door: an ONNX file becomes a torch.fx GraphModule by the maintained converter onnx2torch, so
it lands in the same traced-graph translation as any eager model (certify.bounds.network.from_module, and
the checker's own certify.certificates.semantics.translate), with the same conformance check.

Install: `pip install 'certify[onnx]'` (onnx, onnx2torch, onnxruntime). onnx2torch imports torchvision at
import time (only its NMS and RoiAlign converters use it). The torchvision wheels on PyPI are built against
the CUDA torch; beside a CPU build of torch (torch==X+cpu) the matching torchvision wheel installs but
fails to import ("operator torchvision::nms does not exist": its _C.so needs libtorch_cuda.so). certify
then imports onnx2torch with a stand-in `torchvision` whose `ops` raise when called, so a graph with NMS
or RoiAlign is refused (those ops are not modelled anyway) and every other converter works; a working
torchvision is always used as is. Keep pip from upgrading torch to reach a newer torchvision by naming
the installed torch on the same command line, e.g. `pip install 'certify[onnx]' torch==2.13.0`.

What is accepted: one graph input of shape [batch, *example] (the batch dimension symbolic or 1, every
other dimension known) and one output; the per-example shape is recorded on the module as
`certify_input_shape`, and `certify_source` records the file, opset and converter. Whether the converted
graph is modelled exactly is the translation's decision (it names the op when it refuses).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

from torch import nn

from certify.errors import InvalidInputError, UnsupportedError

INSTALL_HINT = "pip install 'certify[onnx]'  (onnx, onnx2torch; onnxruntime to compare outputs)"
TORCHVISION_STUB_NOTE = (
    "torchvision could not be imported ({error}); onnx2torch was imported with a stand-in torchvision, so "
    "only graphs without NMS / RoiAlign convert"
)
torchvision_note: str | None = None  # set when the stand-in was used (reported in certify_source)


def _purge_torchvision() -> None:
    for name in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
        del sys.modules[name]


def _stub_torchvision() -> tuple[types.ModuleType, types.ModuleType]:
    def unavailable(*_args: Any, **_kwargs: Any) -> Any:
        raise UnsupportedError("this ONNX graph needs torchvision (NMS / RoiAlign), which cannot be imported here")

    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    for name in ("nms", "batched_nms", "roi_align", "box_convert"):
        setattr(ops, name, unavailable)
    tv.ops = ops  # type: ignore[attr-defined]
    tv.__version__ = "0+certify-stand-in"  # type: ignore[attr-defined]
    return tv, ops


def import_converter() -> tuple[Any, Any]:
    """(onnx, onnx2torch) modules; UnsupportedError with the install line when they are missing."""
    global torchvision_note
    try:
        onnx = importlib.import_module("onnx")
    except ImportError as exc:
        raise UnsupportedError(f"loading an ONNX model needs the onnx package: {INSTALL_HINT} ({exc})") from exc
    if "onnx2torch" in sys.modules:
        return onnx, sys.modules["onnx2torch"]
    if importlib.util.find_spec("onnx2torch") is None:
        raise UnsupportedError(f"loading an ONNX model needs the converter onnx2torch: {INSTALL_HINT}")
    try:
        importlib.import_module("torchvision")
    except Exception as exc:  # noqa: BLE001 - ImportError (absent) or RuntimeError/OSError (CUDA build beside CPU torch)
        _purge_torchvision()
        tv, ops = _stub_torchvision()
        sys.modules["torchvision"], sys.modules["torchvision.ops"] = tv, ops
        torchvision_note = TORCHVISION_STUB_NOTE.format(error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        try:
            converter = importlib.import_module("onnx2torch")
        finally:  # the stand-in serves onnx2torch only; anyone else importing torchvision gets the real error
            sys.modules.pop("torchvision", None)
            sys.modules.pop("torchvision.ops", None)
        return onnx, converter
    return onnx, importlib.import_module("onnx2torch")


def _dims(value_info: Any) -> list[int | str]:
    dims: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return dims


def load_onnx(path: str | Path) -> nn.Module:
    """The ONNX file as an eval-mode torch.fx GraphModule (float32, CPU), with `certify_input_shape`
    (per-example input shape) and `certify_source` attributes."""
    path = Path(path)
    if not path.exists():
        raise UnsupportedError(f"model file {str(path)!r} does not exist")
    onnx, onnx2torch = import_converter()
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001 - a corrupt or invalid file
        raise UnsupportedError(f"{str(path)!r} is not a valid ONNX model: {type(exc).__name__}: {exc}") from exc
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(proto.graph.output) != 1:
        raise UnsupportedError(
            f"{path.name}: the graph has {len(inputs)} input(s) and {len(proto.graph.output)} output(s); certify models "
            "one input tensor and one output (the logits)"
        )
    dims = _dims(inputs[0])
    if not dims:
        raise UnsupportedError(f"{path.name}: input {inputs[0].name!r} has no shape; certify needs [batch, *example]")
    batch, example = dims[0], dims[1:]
    if not (batch == 1 or isinstance(batch, str)) or any(not isinstance(d, int) or d <= 0 for d in example):
        raise UnsupportedError(
            f"{path.name}: input {inputs[0].name!r} has shape {dims}; certify needs [batch, *example] with the batch "
            "dimension 1 or symbolic and every other dimension known"
        )
    try:
        module = onnx2torch.convert(proto)
    except Exception as exc:  # noqa: BLE001 - the converter names the op it cannot convert
        raise UnsupportedError(f"onnx2torch cannot convert {path.name}: {type(exc).__name__}: {exc}") from exc
    module = module.float().eval()
    module.certify_input_shape = tuple(int(d) for d in example)  # type: ignore[assignment]
    module.certify_source = {  # type: ignore[assignment]
        "format": "onnx",
        "file": str(path),
        "opset": [f"{o.domain or 'ai.onnx'}:{o.version}" for o in proto.opset_import],
        "converter": f"onnx2torch {getattr(onnx2torch, '__version__', _version('onnx2torch'))}",
        "ops": sorted({n.op_type for n in proto.graph.node}),
        **({"note": torchvision_note} if torchvision_note else {}),
    }
    return module


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001
        return "unknown"


def input_shape_of(model: nn.Module) -> tuple[int, ...] | None:
    """The per-example input shape a loaded ONNX model records, else None."""
    shape = getattr(model, "certify_input_shape", None)
    return tuple(shape) if shape is not None else None


def check_input(model: nn.Module, x: Any) -> None:
    shape = input_shape_of(model)
    if shape is not None and tuple(x.shape[1:]) != shape:
        raise InvalidInputError(f"the ONNX model takes examples of shape {shape}, got {tuple(x.shape[1:])}")
