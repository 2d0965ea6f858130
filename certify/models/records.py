"""The data-set record every loader returns (certify.models.datasets, certify.models.composite)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Dataset:
    """A classification data set with a fixed split; tensors are float32 inputs and long labels."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    domain_lo: Tensor
    domain_hi: Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def domain(self) -> tuple[Tensor, Tensor]:
        return self.domain_lo, self.domain_hi
