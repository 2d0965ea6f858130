"""The explainer base class and the Explanation record (Captum-compatible calling convention).

`attribute(inputs, target=None, **kw)` returns a tensor with the inputs' shape, batch first; `target` is an
int, one class per example (list or tensor), or None for the predicted class (DESIGN section 3). `explain`
returns the same attributions with the method's parameters, the targets used and per-example diagnostics.
Every public call validates its inputs, the model's mode, the targets and its keyword options before any
computation, and its attributions after.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from certify.errors import UsageError
from certify.validation import (
    TargetLike,
    autograd_enabled,
    check_eval_mode,
    check_finite_attributions,
    evaluate_logits,
    grad_ready,
    resolve_target,
    validate_inputs,
)


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

    Subclasses implement `_explain(inputs, target, **options)` on validated inputs with resolved targets
    (a long tensor [N] on the inputs' device), name themselves with `method_name` and list the keyword
    options `explain`/`attribute` accept beyond inputs and target in `explain_options` (e.g. Integrated
    Gradients' `baselines`). Both public calls work inside `torch.inference_mode()` and `torch.no_grad()`
    (gradients are computed with autograd switched back on, on a normal copy of inference-mode inputs), and
    both refuse non-finite attributions (InvalidInputError naming the examples) rather than return them;
    only rows an explainer itself reports as failed (diagnostic `diverged`) keep NaN attributions."""

    method_name: str = "explainer"
    explain_options: tuple[str, ...] = ()

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model

    def params(self) -> dict[str, Any]:
        """The constructor parameters that determine the explanation (recorded in certificates)."""
        return {}

    def explain(self, inputs: Tensor, target: TargetLike = None, **options: Any) -> Explanation:
        """The explanation of `inputs` [N, ...] for `target` (None: the predicted class; an int; or one class
        per example), with the method's parameters and per-example diagnostics. `options`: see
        `explain_options` of the method."""
        unknown = sorted(set(options) - set(self.explain_options))
        if unknown:
            accepted = ", ".join(self.explain_options) if self.explain_options else "none"
            raise UsageError(
                f"{type(self).__name__}.explain() and .attribute() got unknown options {unknown}; "
                f"accepted options besides inputs and target: {accepted}"
            )
        inputs = validate_inputs(inputs)
        check_eval_mode(self.model)
        with autograd_enabled():
            inputs = grad_ready(inputs, self.model)
            with torch.no_grad():
                logits = evaluate_logits(self.model, inputs)
            resolved = grad_ready(resolve_target(target, logits))
            explanation = self._explain(inputs, resolved, **options)
        check_finite_attributions(explanation.attributions, self.method_name, explanation.diagnostics.get("diverged"))
        return explanation

    def attribute(self, inputs: Tensor, target: TargetLike = None, **options: Any) -> Tensor:
        """The attributions of `explain(inputs, target, **options)`: a tensor with the inputs' shape."""
        return self.explain(inputs, target, **options).attributions

    @abstractmethod
    def _explain(self, inputs: Tensor, target: Tensor, **options: Any) -> Explanation:
        """Compute the explanation of validated `inputs` for classes `target`."""
