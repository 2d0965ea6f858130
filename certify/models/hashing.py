"""Content hashes that identify a model (architecture and weights) and an input, for caches and certificates."""
from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn


def _update_with_tensor(digest: "hashlib._Hash", tensor: Tensor) -> None:
    t = tensor.detach().to("cpu").contiguous()
    digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
    digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())


def model_hash(model: nn.Module) -> str:
    """sha256 of the module tree (its repr) and every parameter and buffer (name, dtype, shape, bytes)."""
    digest = hashlib.sha256(repr(model).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        _update_with_tensor(digest, tensor)
    return digest.hexdigest()


def tensor_hash(tensor: Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes."""
    digest = hashlib.sha256()
    _update_with_tensor(digest, tensor)
    return digest.hexdigest()
