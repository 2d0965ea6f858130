"""Model builders: MLPs and small CNNs as `nn.Sequential` of Linear, Conv2d, Flatten and ReLU/Softplus,
the layer types the verification layer supports."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from certify.errors import UsageError

ACTIVATIONS = ("relu", "softplus")


def activation(name: str, beta: float = 1.0) -> nn.Module:
    """ReLU, or Softplus of sharpness beta: log(1 + exp(beta t)) / beta, whose second derivative lies in
    (0, beta / 4]."""
    if name == "relu":
        return nn.ReLU()
    if name == "softplus":
        if beta <= 0:
            raise UsageError(f"softplus beta must be positive, got {beta}")
        return nn.Softplus(beta=beta)
    raise UsageError(f"unknown activation {name!r}; choose one of {ACTIVATIONS}")


def mlp(
    in_features: int,
    num_classes: int,
    hidden: Sequence[int] = (64, 64),
    act: str = "relu",
    beta: float = 1.0,
    flatten: bool = False,
) -> nn.Sequential:
    """Fully connected network in -> hidden... -> num_classes with `act` between layers."""
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), activation(act, beta)]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def small_cnn(
    in_channels: int,
    image_size: int,
    num_classes: int,
    channels: Sequence[int] = (8, 16),
    act: str = "relu",
    beta: float = 1.0,
) -> nn.Sequential:
    """Conv(3x3, pad 1) -> act -> Conv(3x3, stride 2, pad 1) -> act ... -> Flatten -> Linear."""
    layers: list[nn.Module] = []
    c_in, size = in_channels, image_size
    for i, c_out in enumerate(channels):
        stride = 1 if i == 0 else 2
        layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), activation(act, beta)]
        c_in, size = c_out, (size - 1) // stride + 1
    layers += [nn.Flatten(), nn.Linear(c_in * size * size, num_classes)]
    return nn.Sequential(*layers)


class Normalize(nn.Module):
    """Per-channel affine normalisation (x - mean) / std in front of a model; supported by the bound code."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).flatten())
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).flatten())

    def forward(self, x):  # type: ignore[no-untyped-def]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)
