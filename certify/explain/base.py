"""The explainer base class and the Explanation record (Captum-compatible calling convention).

`attribute(inputs, target=None, *, additional_forward_args=None, **options)` returns a tensor with the
inputs' shape, batch first; `target` is an int, one class per example (list or tensor), or None for the
predicted class (DESIGN section 3). `explain` returns the same attributions with the method's parameters, the
targets used and per-example diagnostics. `options` are the method's per-call options (`explain_options`,
e.g. Integrated Gradients' `baselines`) and the constructor parameters a call may override (`call_options`,
e.g. `n_steps`; the constructor's values are the defaults, and `Explanation.params` records the values used).

Explainers with `forward_interface` (Gradient, IntegratedGradients, SmoothGrad, NoiseTunnel) also take, as
Captum does, a tuple of input tensors for a model of several inputs (attributions come back as a matching
tuple), `additional_forward_args` (the model is called as `model(*inputs, *additional_forward_args)`), and
index-tuple targets for outputs [N, d_1, ..., d_k] (target (c, i, j) selects output[n, c, i, j]; a list of
tuples gives one per example). The others explain one input tensor of a [N, C]-output model and refuse these
with a UsageError.

Every public call validates its inputs, the model's mode, the targets and its keyword options before any
computation, and its attributions after. The model's outputs at the inputs, which that validation needs (their
shape and finiteness, the predicted class or the range of a given target), are computed once and reused by the
explanation (`EvaluatedForward`): Gradient differentiates them, Integrated Gradients reads its completeness
scores from them, so neither evaluates the model at its inputs a second time.

Sampling and path methods (SmoothGrad, Integrated Gradients, Sparsified SmoothGrad, NoiseTunnel's copies)
evaluate their points in chunks of at most `points_per_chunk` points by default, so that their peak memory stays
within a fixed budget (`CHUNK_ELEMENTS` input entries per forward/backward pass, or one pass over the batch if
that is more) whatever n_steps or the sample count; a larger `internal_batch_size` / `samples_per_chunk` /
`nt_samples_batch_size` trades memory for fewer passes.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from certify.errors import UsageError
from certify.scores import Forward, select_scores
from certify.validation import (
    autograd_enabled,
    check_explainable,
    check_finite_attributions,
    evaluate_outputs,
    forward_args,
    grad_ready,
    resolve_output_target,
    validate_input_tuple,
)

FORWARD_EXPLAINERS = "Gradient, IntegratedGradients, SmoothGrad and NoiseTunnel"

CHUNK_ELEMENTS = 2**17
"""Input entries (all input tensors together) evaluated in one forward/backward pass by default: 512 KiB of float32
points (2,048 digits images), whose autograd graph takes about 45 MiB on the digits CNN (`benchmarks/ig_memory.py`:
Integrated Gradients with n_steps 200 on 2,000 digits peaks at 1.19x the model-and-import baseline, 18x with every
point in one pass)."""


def points_per_chunk(inputs: Tensor | tuple[Tensor, ...], elements: int = CHUNK_ELEMENTS) -> int:
    """The default number of points (path points, noisy copies) per forward/backward pass of a sampling or path
    method for `inputs` [N, ...] (one tensor or a tuple): as many as fill `elements` input entries, and never fewer
    than N (one pass over the batch itself, what Gradient costs), so peak memory grows with the batch, not with
    n_steps or the sample count."""
    tensors = inputs if isinstance(inputs, tuple) else (inputs,)
    per_point = sum(x[0].numel() for x in tensors)
    return max(tensors[0].shape[0], elements // max(per_point, 1))


@dataclass(frozen=True)
class EvaluatedForward(Forward):
    """`Forward` for a batch whose outputs at the examples themselves, `evaluated` [N, ...], were computed once by
    `Explainer.explain`'s validation at `leaves` (the input tensors, detached; with the graph kept when the
    explainer's `gradient_at_inputs` is True) and are reused instead of evaluating the model there again."""

    leaves: tuple[Tensor, ...] = ()
    evaluated: Tensor | None = None

    def input_scores(self, target: Tensor) -> Tensor:
        """The selected outputs at the examples: shape [N] (see `select_scores` for `target`), detached."""
        return select_scores(self.evaluated.detach(), target)

    def input_gradients(self, target: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """`Forward.gradients` at the examples themselves from the kept graph: (scores [N], one gradient per input
        tensor with its shape, dtype and device), by one backward pass and no forward pass. Only once per call,
        and only for an explainer with `gradient_at_inputs` (otherwise no graph was kept)."""
        scores = select_scores(self.evaluated, target)  # d(sum of scores): ones as the scores' gradient, no sum node
        grads = torch.autograd.grad(scores, self.leaves, torch.ones_like(scores), allow_unused=True)
        return scores.detach(), tuple(torch.zeros_like(x) if g is None else g for x, g in zip(self.leaves, grads))


@dataclass
class Explanation:
    """Attributions [N, ...] (a tuple of them, one per input tensor, for tuple inputs) plus what produced them.

    `target` is the long tensor [N] of classes explained ([N, k] index tuples for outputs with more than two
    dimensions); `params` the method's parameters used by this call; `diagnostics` maps a name to a per-example
    tensor of length N (e.g. the completeness delta of Integrated Gradients, or a solver's residual norm and
    iteration count)."""

    attributions: Tensor | tuple[Tensor, ...]
    target: Tensor
    method: str
    params: dict[str, Any]
    diagnostics: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        first = self.attributions[0] if isinstance(self.attributions, tuple) else self.attributions
        return first.shape[0]


class Explainer(ABC):
    """Shared base of every explainer: validation, target resolution, per-call options and the
    attribute/explain pair.

    Subclasses implement `_explain` on validated inputs with resolved targets (a long tensor [N], or [N, k]
    index tuples, on the inputs' device), name themselves with `method_name`, list the per-call options in
    `explain_options` and the constructor parameters a call may override in `call_options` (such a class's
    `params()` returns every constructor parameter by name, so that `configured` can rebuild it). With
    `forward_interface = False`, `_explain(inputs: Tensor, target, **options)` evaluates `self.model(inputs)`
    itself; with True, `_explain(inputs: tuple[Tensor, ...], target, forward: Forward, **options)` evaluates
    the model only through `forward` (tuple inputs, additional forward arguments, index-tuple targets) and
    returns one attribution tensor per input tensor; `forward` is an `EvaluatedForward` holding the model's
    outputs at the inputs (computed by the validation), with their graph when `gradient_at_inputs` is True.

    Both public calls work inside `torch.inference_mode()` and `torch.no_grad()` (gradients are computed with
    autograd switched back on, on a normal copy of inference-mode inputs), and both refuse non-finite
    attributions (InvalidInputError naming the examples) rather than return them; only rows an explainer itself
    reports as failed (diagnostic `diverged`) keep NaN attributions."""

    method_name: str = "explainer"
    explain_options: tuple[str, ...] = ()
    call_options: tuple[str, ...] = ()
    forward_interface: bool = False
    gradient_at_inputs: bool = False

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model

    def params(self) -> dict[str, Any]:
        """The constructor parameters that determine the explanation (recorded in certificates)."""
        return {}

    def configured(self, **overrides: Any) -> Explainer:
        """This explainer with the constructor parameters `overrides` (names from `call_options`) replaced:
        `self` when there are none, else a new explainer built by the constructor, which validates them
        (UsageError naming a bad value)."""
        if not overrides:
            return self
        return type(self)(self.model, **{**self.params(), **overrides})

    def explain(
        self, inputs: Tensor | tuple[Tensor, ...], target: Any = None, *, additional_forward_args: Any = None,
        **options: Any,
    ) -> Explanation:
        """The explanation of `inputs` [N, ...] for `target` (None: the predicted class; an int; one class per
        example; index tuples for outputs with more than two dimensions), with the parameters used and
        per-example diagnostics. `options`: the method's `explain_options` and `call_options`.

        Raises UsageError (unknown option, or tuple inputs / additional_forward_args for an explainer without
        `forward_interface`), InvalidInputError (inputs or model outputs), TargetError, ModelModeError."""
        name = type(self).__name__
        explainer, per_call = self, {}
        if options:
            unknown = sorted(set(options) - set(self.explain_options) - set(self.call_options))
            if unknown:
                accepted = ", ".join(self.explain_options + self.call_options) or "none"
                besides = "inputs, target and additional_forward_args" if self.forward_interface else "inputs and target"
                raise UsageError(
                    f"{name}.explain() and .attribute() got unknown options {unknown}; accepted options besides {besides}: {accepted}"
                )
            explainer = self.configured(**{k: v for k, v in options.items() if k in self.call_options})
            per_call = {k: v for k, v in options.items() if k in self.explain_options}
        if not self.forward_interface:
            if isinstance(inputs, tuple):
                raise UsageError(
                    f"{name}.explain() and .attribute() take one input tensor, got a tuple of {len(inputs)}; tuple "
                    f"inputs (a model of several inputs) are taken by {FORWARD_EXPLAINERS}"
                )
            if additional_forward_args is not None:
                raise UsageError(
                    f"{name}.explain() and .attribute() do not take additional_forward_args (the method evaluates "
                    f"model(inputs) itself); additional_forward_args are taken by {FORWARD_EXPLAINERS}"
                )
        tensors = validate_input_tuple(inputs)
        check_explainable(self.model)
        with autograd_enabled():
            tensors = tuple(grad_ready(x) for x in tensors)
            args = tuple(grad_ready(a) if isinstance(a, Tensor) else a for a in forward_args(additional_forward_args))
            keep = self.forward_interface and self.gradient_at_inputs
            leaves = tuple(x.detach().requires_grad_(True) for x in tensors) if keep else tensors
            with torch.set_grad_enabled(keep):
                outputs = evaluate_outputs(self.model, leaves, args, matrix=not self.forward_interface)
            resolved = grad_ready(resolve_output_target(target, outputs.detach()))
            if self.forward_interface:
                forward = EvaluatedForward(self.model, args, tensors[0].shape[0], leaves, outputs)
                explanation = explainer._explain(tensors, resolved, forward, **per_call)
            else:
                explanation = explainer._explain(tensors[0], resolved, **per_call)
        check_finite_attributions(explanation.attributions, self.method_name, explanation.diagnostics.get("diverged"))
        if isinstance(inputs, Tensor) and isinstance(explanation.attributions, tuple):
            (explanation.attributions,) = explanation.attributions
        return explanation

    def attribute(
        self, inputs: Tensor | tuple[Tensor, ...], target: Any = None, *, additional_forward_args: Any = None,
        **options: Any,
    ) -> Tensor | tuple[Tensor, ...]:
        """The attributions of `explain(inputs, target, additional_forward_args=..., **options)`: a tensor with
        the inputs' shape, or a tuple matching tuple inputs."""
        return self.explain(inputs, target, additional_forward_args=additional_forward_args, **options).attributions

    @abstractmethod
    def _explain(self, inputs: Any, target: Tensor, *args: Any, **options: Any) -> Explanation:
        """Compute the explanation of validated `inputs` for `target` (see the class docstring)."""
