"""Denoiser SPECs (`certify prox --model SPEC`, `certify verify` of a prox certificate): a trained network of the
inverse-problem zoo (`certify.inverse.zoo`, e.g. `lpn-digits-0.1`, also written `zoo:lpn-digits-0.1`), or any
model SPEC of certify.models.spec (ONNX file, TorchScript file, module:callable) whose module maps [B, ...] to
the same shape."""
from __future__ import annotations

from torch import nn

from certify.errors import UnsupportedError
from certify.inverse import zoo
from certify.models.spec import load_model


def load_denoiser(spec: str) -> nn.Module:
    """The denoiser named by `spec`, in eval mode. Raises UnsupportedError for a spec that names nothing loadable."""
    name = spec.removeprefix("zoo:")
    if name in zoo.names():
        return zoo.load_lpn(name).eval()
    try:
        return load_model(spec)[0].eval()
    except UnsupportedError as exc:
        raise UnsupportedError(f"{exc}; denoisers of the inverse-problem zoo: {', '.join(zoo.names())}") from None
