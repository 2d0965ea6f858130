"""Score functions f_c(x) (the logit of class c, DESIGN section 3) and their batched input gradients.

Examples are independent (the model is in eval mode), so the gradient of sum_i f_{c_i}(x_i) with respect to
the batch gives every example's own gradient in one backward pass.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def class_scores(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """f_{c_i}(x_i) for every example i: shape [N]."""
    return model(inputs).gather(1, target.view(-1, 1)).squeeze(1)


def score_gradients(model: nn.Module, inputs: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(f_{c_i}(x_i), grad_x f_{c_i}(x_i)) for the whole batch with one forward and one backward pass.

    The returned gradient is detached and has the input's shape, dtype and device."""
    with torch.enable_grad():
        x = inputs.detach().requires_grad_(True)
        scores = class_scores(model, x, target)
        (grad,) = torch.autograd.grad(scores.sum(), x)
    return scores.detach(), grad
