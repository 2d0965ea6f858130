"""Small random networks (float64) and Hypothesis strategies for them, shared by the property checks."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st
from torch import nn

from certify.models.builders import mlp


@dataclass(frozen=True)
class NetSpec:
    """A random MLP: input size, hidden widths (each <= 32), classes, activation, softplus beta, weight
    scale and seed. `build()` is deterministic in these fields, so a failing case can be rebuilt from its repr."""

    inputs: int
    hidden: tuple[int, ...]
    classes: int
    act: str
    beta: float
    scale: float
    seed: int

    def build(self) -> nn.Sequential:
        generator = torch.Generator().manual_seed(self.seed)
        net = mlp(self.inputs, self.classes, self.hidden, self.act, self.beta).double()
        with torch.no_grad():
            for p in net.parameters():
                fan_in = p.shape[1] if p.dim() == 2 else p.shape[0]
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64) * self.scale / fan_in**0.5)
        return net.eval()


def net_specs(
    act: str | None = None,
    max_inputs: int = 8,
    max_width: int = 32,
    max_depth: int = 2,
    classes: tuple[int, int] = (2, 4),
) -> st.SearchStrategy[NetSpec]:
    """Hypothesis strategy over small random MLPs (ReLU or softplus unless `act` fixes one)."""
    return st.builds(
        NetSpec,
        inputs=st.integers(2, max_inputs),
        hidden=st.lists(st.integers(2, max_width), min_size=1, max_size=max_depth).map(tuple),
        classes=st.integers(*classes),
        act=st.just(act) if act else st.sampled_from(["relu", "softplus"]),
        beta=st.sampled_from([1.0, 2.0]),
        scale=st.floats(0.5, 2.0),
        seed=st.integers(0, 2**31 - 1),
    )
