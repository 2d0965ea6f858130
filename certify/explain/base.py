"""The explainer base class and the Explanation record (Captum-compatible calling convention).

`attribute(inputs, target=None, **kw)` returns a tensor with the inputs' shape, batch first; `target` is an
int, one class per example (list or tensor), or None for the predicted class (DESIGN section 3). `explain`
returns the same attributions with the method's parameters, the targets used and per-example diagnostics.
Every public call validates its inputs, the model's mode and the targets before any computation.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from certify.validation import TargetLike, check_eval_mode, evaluate_logits, resolve_target, validate_inputs


@dataclass
class Explanation:
    """Attributions [N, ...] plus what produced them.

    `diagnostics` maps a name to a per-example tensor of length N (e.g. the completeness delta of
    Integrated Gradients, or a solver's residual norm and iteration count)."""

    attributions: Tensor
    target: Tensor
    method: str
    params: dict[str, Any]
    diagnostics: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.attributions.shape[0]


class Explainer(ABC):
    """Shared base of every explainer: validation, target resolution and the attribute/explain pair.

    Subclasses implement `_explain(inputs, target, **kw)` on validated inputs with resolved targets
    (a long tensor [N] on the inputs' device) and name themselves with `method_name`."""

    method_name: str = "explainer"

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model

    def params(self) -> dict[str, Any]:
        """The constructor parameters that determine the explanation (recorded in certificates)."""
        return {}

    def explain(self, inputs: Tensor, target: TargetLike = None, **kwargs: Any) -> Explanation:
        inputs = validate_inputs(inputs)
        check_eval_mode(self.model)
        with torch.no_grad():
            logits = evaluate_logits(self.model, inputs)
        resolved = resolve_target(target, logits)
        return self._explain(inputs, resolved, **kwargs)

    def attribute(self, inputs: Tensor, target: TargetLike = None, **kwargs: Any) -> Tensor:
        return self.explain(inputs, target, **kwargs).attributions

    @abstractmethod
    def _explain(self, inputs: Tensor, target: Tensor, **kwargs: Any) -> Explanation:
        """Compute the explanation of validated `inputs` for classes `target`."""
