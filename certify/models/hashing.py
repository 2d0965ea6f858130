"""Content hashes that identify a model (architecture and weights) and an input, for caches and certificates."""
from __future__ import annotations

import hashlib
import inspect
import types

import torch
from torch import Tensor, nn


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
    patch torch itself."""
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
