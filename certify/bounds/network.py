"""Canonical form of a supported network for the verification layer: alternating dense affine maps and
elementwise activations, in float64.

    z_1 = W_1 x + b_1,  a_k = sigma_k(z_k),  z_{k+1} = W_{k+1} a_k + b_{k+1},  logits = z_L.

Supported modules: Linear, Conv2d, AvgPool2d, Flatten, Identity, eval-mode Dropout and BatchNorm1d/2d,
`certify.models.builders.Normalize` (consecutive affine modules are merged into one map), ReLU, and
Softplus of any sharpness beta (with the default threshold: torch switches to the identity above
beta*t > 20, where softplus and t differ by < 3e-9 relatively; bounds treat it as exact softplus).
Nested Sequentials are flattened. Anything else raises UnsupportedError naming the module.

Affine maps are stored as dense matrices (built by pushing the standard basis through the module), which
is exact and simple for the small models this layer targets; memory grows as (inputs x units).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from certify.errors import UnsupportedError
from certify.models.builders import Normalize

AFFINE_TYPES = (nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.Flatten, nn.Identity, nn.Dropout, nn.BatchNorm1d, nn.BatchNorm2d, Normalize)
ACTIVATION_TYPES = (nn.ReLU, nn.Softplus)


@dataclass(frozen=True)
class Activation:
    """An elementwise activation: "relu", or "softplus" with sharpness beta (log(1 + e^{beta t}) / beta)."""

    name: str
    beta: float = 1.0

    def __call__(self, z: Tensor) -> Tensor:
        return torch.relu(z) if self.name == "relu" else nn.functional.softplus(z, beta=self.beta)

    def derivative(self, z: Tensor) -> Tensor:
        return (z > 0).to(z.dtype) if self.name == "relu" else torch.sigmoid(self.beta * z)

    def enclosure(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Rigorous float64 enclosure [lo, hi] of sigma(z) (elementwise), covering both the exact
        softplus max(z, 0) + log1p(e^{-beta|z|}) / beta and torch's thresholded version (which returns z
        where beta z > 20, below the exact value by log1p(e^{-beta z}) / beta < 2.1e-9 / beta)."""
        if self.name == "relu":
            value = torch.relu(z)
            return value, value
        value = torch.relu(z) + torch.log1p(torch.exp(-self.beta * z.abs())) / self.beta
        margin = 8.0 * 2.0**-53 * value.abs() + 1e-300
        lo = torch.minimum(value, torch.where(self.beta * z > 20.0, z, value))
        return lo - margin, value + margin

    @property
    def threshold_gap(self) -> float:
        """sup of (exact softplus - torch's thresholded softplus) = log1p(e^{-20}) / beta; 0 for ReLU."""
        return math.log1p(math.exp(-20.0)) / self.beta if self.name == "softplus" else 0.0

    @property
    def max_second_derivative(self) -> float:
        """sup sigma''(t): beta/4 for softplus; a ReLU has no bounded second derivative (inf)."""
        return self.beta / 4.0 if self.name == "softplus" else float("inf")


@dataclass
class AffineNetwork:
    """weights[k] is [out_k, in_k], biases[k] is [out_k]; activations[k] follows affine map k, and there
    is one activation fewer than affine maps (the last map gives the logits)."""

    weights: list[Tensor]
    biases: list[Tensor]
    activations: list[Activation]
    input_shape: tuple[int, ...]

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def num_classes(self) -> int:
        return self.weights[-1].shape[0]

    @property
    def input_size(self) -> int:
        return self.weights[0].shape[1]

    def forward(self, x: Tensor) -> Tensor:
        """Logits for flat inputs x [N, input_size] (float64 for rigorous use)."""
        h = x
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T + b
            if k < len(self.activations):
                h = self.activations[k](h)
        return h

    def pre_activations(self, x: Tensor) -> list[Tensor]:
        """[z_1, ..., z_L] for flat inputs x [N, input_size]."""
        zs, h = [], x
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T + b
            zs.append(h)
            if k < len(self.activations):
                h = self.activations[k](h)
        return zs

    def to(self, device: torch.device | str) -> "AffineNetwork":
        return AffineNetwork(
            [w.to(device) for w in self.weights], [b.to(device) for b in self.biases], self.activations, self.input_shape
        )


def _flatten_modules(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, nn.Sequential):
        return [leaf for child in model for leaf in _flatten_modules(child)]
    return [model]


def _dense(modules: list[nn.Module], in_shape: tuple[int, ...]) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """Matrix and bias of a composition of affine modules, by pushing the basis through it in float64."""
    n = 1
    for s in in_shape:
        n *= s
    import copy

    chain = nn.Sequential(*[copy.deepcopy(m) for m in modules]).double().eval()
    with torch.no_grad():
        basis = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
        zero = torch.zeros(1, *in_shape, dtype=torch.float64)
        bias_out = chain(zero)
        out_shape = tuple(bias_out.shape[1:])
        weight = (chain(basis) - bias_out).reshape(n, -1).T.contiguous()
    return weight, bias_out.reshape(-1), out_shape


def from_module(model: nn.Module, input_shape: tuple[int, ...]) -> AffineNetwork:
    """Canonical float64 form of `model` for one example of shape `input_shape` (no batch dimension)."""
    if model.training:
        raise UnsupportedError("bounds need the model in eval mode; call model.eval() first")
    weights: list[Tensor] = []
    biases: list[Tensor] = []
    activations: list[Activation] = []
    pending: list[nn.Module] = []
    shape = tuple(input_shape)
    for module in _flatten_modules(model):
        if isinstance(module, AFFINE_TYPES):
            pending.append(module)
        elif isinstance(module, ACTIVATION_TYPES):
            if not pending:
                raise UnsupportedError(f"two activations in a row ({module}) are not supported")
            w, b, shape = _dense(pending, shape)
            weights.append(w)
            biases.append(b)
            pending = []
            if isinstance(module, nn.ReLU):
                activations.append(Activation("relu"))
            else:
                activations.append(Activation("softplus", float(module.beta)))
        else:
            raise UnsupportedError(
                f"unsupported layer {type(module).__name__} ({module}); supported: "
                + ", ".join(t.__name__ for t in AFFINE_TYPES + ACTIVATION_TYPES)
            )
    if not pending:
        raise UnsupportedError("the network must end with an affine layer giving the logits")
    w, b, _ = _dense(pending, shape)
    weights.append(w)
    biases.append(b)
    return AffineNetwork(weights, biases, activations, tuple(input_shape))
