"""Score functions f_c(x) (the logit of class c, DESIGN section 3) and their batched input gradients.

Examples are independent (the model is in eval mode), so the gradient of sum_i f_{c_i}(x_i) with respect to
the batch gives every example's own gradient in one backward pass.

Captum's calling convention is supported through `Forward`: a model of several input tensors is called as
`model(*inputs, *additional_forward_args)`, and a target selects one output entry per example: a class index
of outputs [N, C], or an index tuple (i_1, ..., i_k) of outputs [N, d_1, ..., d_k] (target (c, i, j) selects
output[n, c, i, j]).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


def select_scores(outputs: Tensor, target: Tensor) -> Tensor:
    """outputs[n, target[n]] for every row n: shape [M]. `target` is a long tensor [M] (outputs [M, C]) or
    [M, k] (index tuples into outputs [M, d_1, ..., d_k])."""
    if target.dim() == 1 and outputs.dim() == 2:  # the common case: gather's backward is cheaper than indexing's
        return outputs.gather(1, target.view(-1, 1)).squeeze(1)
    index = target.view(target.shape[0], -1)
    return outputs[(torch.arange(outputs.shape[0], device=outputs.device), *index.unbind(1))]


def take_rows(value: Any, rows: Tensor, batch_size: int) -> Any:
    """`value` for points that belong to examples `rows` [M] of a batch of `batch_size`: a tensor whose first
    dimension is `batch_size` is per-example and indexed by `rows` (Captum expands such tensors the same way),
    tuples and dicts are mapped entry by entry, anything else is shared by all points and returned as is."""
    if isinstance(value, tuple):
        return tuple(take_rows(v, rows, batch_size) for v in value)
    if isinstance(value, dict):
        return {k: take_rows(v, rows, batch_size) for k, v in value.items()}
    if isinstance(value, Tensor) and value.dim() >= 1 and value.shape[0] == batch_size:
        return value[rows]
    return value


@dataclass(frozen=True)
class Forward:
    """The model with its additional forward arguments `args` for a batch of `batch_size` examples: points
    (e.g. noisy copies or path points) are evaluated as `model(*points, *args_of_their_examples)`."""

    model: nn.Module
    args: tuple[Any, ...] = ()
    batch_size: int = 0

    def outputs(self, inputs: tuple[Tensor, ...], rows: Tensor | None = None) -> Tensor:
        """The model's outputs at `inputs` (one tensor per model input, [M, ...] each); `rows` [M]: the example
        each point belongs to (None: the points are the examples themselves)."""
        args = self.args if rows is None else take_rows(self.args, rows, self.batch_size)
        return self.model(*inputs, *args)

    def scores(self, inputs: tuple[Tensor, ...], target: Tensor, rows: Tensor | None = None) -> Tensor:
        """The selected output of every point: shape [M] (see `select_scores` for `target`)."""
        return select_scores(self.outputs(inputs, rows), target)

    def gradients(
        self, inputs: tuple[Tensor, ...], target: Tensor, rows: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """(scores [M], their gradients with respect to each input tensor) with one forward and one backward
        pass; detached, each gradient with its input's shape, dtype and device (zeros for an input the
        selected output does not depend on)."""
        with torch.enable_grad():
            xs = tuple(x.detach().requires_grad_(True) for x in inputs)
            scores = self.scores(xs, target, rows)
            grads = torch.autograd.grad(scores.sum(), xs, allow_unused=True)
        return scores.detach(), tuple(torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads))


def class_scores(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """f_{c_i}(x_i) for every example i: shape [N]."""
    return Forward(model).scores((inputs,), target)


def score_gradients(model: nn.Module, inputs: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(f_{c_i}(x_i), grad_x f_{c_i}(x_i)) for the whole batch with one forward and one backward pass.

    The returned gradient is detached and has the input's shape, dtype and device."""
    scores, (grad,) = Forward(model).gradients((inputs,), target)
    return scores, grad
