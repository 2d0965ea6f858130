"""Input validation shared by every explainer and bound: one place that names each problem clearly."""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor, nn

from certify.errors import InvalidInputError, ModelModeError, TargetError

TargetLike = Union[None, int, Sequence[int], Tensor]


def check_eval_mode(model: nn.Module) -> None:
    """Refuse a model with any submodule in training mode: dropout and batch-norm would make the score
    function random or batch-dependent, and no explanation or bound of it would mean anything."""
    training = [name or type(model).__name__ for name, module in model.named_modules() if module.training]
    if training:
        shown = ", ".join(training[:5]) + (" ..." if len(training) > 5 else "")
        raise ModelModeError(f"model is in training mode (modules: {shown}); call model.eval() first")


def validate_inputs(inputs: object) -> Tensor:
    """Check that `inputs` is a floating tensor with a batch dimension and only finite values."""
    if not isinstance(inputs, Tensor):
        raise InvalidInputError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise InvalidInputError(f"inputs must have a floating dtype, got {inputs.dtype}")
    if inputs.dim() < 2:
        raise InvalidInputError(
            f"inputs must have a batch dimension first, got shape {tuple(inputs.shape)}; use x.unsqueeze(0)"
        )
    if inputs.shape[0] == 0:
        raise InvalidInputError("inputs has an empty batch")
    finite = torch.isfinite(inputs).flatten(1).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        raise InvalidInputError(f"inputs contain NaN or Inf (examples {bad[:10]})")
    return inputs


def evaluate_logits(model: nn.Module, inputs: Tensor) -> Tensor:
    """Run the model, turning a shape mismatch into an error that names the input shape, and check that
    the output is a [batch, classes] matrix of finite logits."""
    try:
        logits = model(inputs)
    except RuntimeError as exc:  # torch reports shape mismatches as RuntimeError
        raise InvalidInputError(
            f"the model cannot evaluate inputs of shape {tuple(inputs.shape)} and dtype {inputs.dtype}: {exc}"
        ) from exc
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != inputs.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise InvalidInputError(f"the model must return logits of shape [batch, classes]; got {shape}")
    if not bool(torch.isfinite(logits).all()):
        raise InvalidInputError("the model returned NaN or Inf logits for these inputs")
    return logits


def resolve_target(target: TargetLike, logits: Tensor) -> Tensor:
    """Turn `target` (None = predicted class, an int, or one class per example) into a long tensor [N]."""
    n, num_classes = logits.shape
    if target is None:
        return logits.argmax(dim=1)
    if isinstance(target, bool):
        raise TargetError("target must be an int, a per-example sequence or tensor of ints, or None")
    if isinstance(target, int):
        resolved = torch.full((n,), target, dtype=torch.long, device=logits.device)
    else:
        try:
            resolved = torch.as_tensor(target, device=logits.device)
        except (TypeError, ValueError) as exc:
            raise TargetError(f"target cannot be read as class indices: {exc}") from exc
        if resolved.is_floating_point() or resolved.dtype == torch.bool:
            raise TargetError(f"target must hold integer class indices, got dtype {resolved.dtype}")
        resolved = resolved.long().flatten() if resolved.dim() <= 1 else resolved
        if resolved.dim() != 1 or resolved.numel() != n:
            raise TargetError(f"target has {resolved.numel()} entries for a batch of {n} examples")
    out_of_range = (resolved < 0) | (resolved >= num_classes)
    if bool(out_of_range.any()):
        bad = resolved[out_of_range].tolist()
        raise TargetError(f"target classes {bad[:10]} out of range for a model with {num_classes} classes")
    return resolved
