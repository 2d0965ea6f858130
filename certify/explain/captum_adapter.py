"""The shared adapter for the baselines computed by Captum (Kokhlikyan et al., "Captum: A unified and generic
model interpretability library for PyTorch", arXiv 2009.07896): DeepLIFT, KernelSHAP, Shapley value sampling,
LIME, Occlusion and Grad-CAM (one module each, `certify.explain.deeplift` ... `gradcam`).

An adapter is an `Explainer` like any other: `attribute(inputs, target=None, **options)` validates the inputs,
the model's mode and the targets (None: the predicted class), hands Captum the validated inputs and the resolved
targets (a long tensor [N]), and returns the attributions with the inputs' shape and dtype, signed as Captum
computes them; `explain` adds the method's parameters and Captum's diagnostics (e.g. DeepLIFT's convergence
delta). Options are constructor parameters recorded by `params()`, and a call may override them
(`call_options`, e.g. `KernelShap(model).attribute(x, n_samples=200)`; `Explanation.params` records the values
used); the data-like options are per call only (`baselines`, and `feature_mask` for the sampling methods). One
input tensor per call, a model with logits [N, C], no `additional_forward_args` (the base class refuses the rest).

Captum is an optional run-time extra: it is imported at the first call, and a missing Captum raises
UnsupportedError ("install the baselines extra: pip install 'certify[baselines]'").

Determinism: Captum's samplers (LIME's Bernoulli coalitions, KernelSHAP's coalition sizes and Gaussian
thresholds, Shapley value sampling's permutations) draw from torch's global CPU generator. An adapter with an
integer `seed` runs Captum inside `torch.random.fork_rng` with that generator seeded, so two calls give identical
attributions, equal to Captum's after `torch.manual_seed(seed)`, and the caller's random stream is left as it
was; `seed=None` draws from the global generator as Captum itself does.

No certificate claim can rest on these explanations: the independent checker re-derives none of them (each
method belongs among the unbound methods of `certify.certificates.checker.UNBOUND`).
"""
from __future__ import annotations

import contextlib
import importlib
import warnings
from abc import abstractmethod
from types import ModuleType
from typing import Any, Iterator

import torch
from torch import Tensor

from certify.errors import InvalidInputError, UnsupportedError
from certify.explain.base import Explainer, Explanation
from certify.validation import baseline_tensor

INSTALL_HINT = "install the baselines extra: pip install 'certify[baselines]'"


def import_extra(module: str) -> ModuleType:
    """`module` of an optional baselines dependency (Captum, SALib), imported on first use; UnsupportedError naming
    the extra when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        raise UnsupportedError(f"this explanation method runs through {package}, which is not installed; {INSTALL_HINT}") from exc


def captum_attr() -> ModuleType:
    """The module `captum.attr`, imported on first use (`import_extra`)."""
    return import_extra("captum.attr")


@contextlib.contextmanager
def seeded_cpu_generator(seed: int | None) -> Iterator[None]:
    """Run the block with torch's global CPU generator seeded with `seed` and restore its state afterwards;
    `seed=None` runs the block on the global generator as it is."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def captum_baselines(inputs: Tensor, baselines: Tensor | float | None) -> Tensor | None:
    """`baselines` in the form Captum takes: None (Captum's zeros), else `certify.validation.baseline_tensor` (a
    number or a tensor broadcast to the inputs [N, ...]). InvalidInputError as that function."""
    return None if baselines is None else baseline_tensor(inputs, baselines)


def checked_feature_mask(inputs: Tensor, feature_mask: Tensor | None) -> Tensor | None:
    """A feature mask for the sampling methods: integer ids 0..M-1 (every id used), one per input entry, of shape
    [1, ...] or [N, ...] broadcastable to the inputs (entries with the same id are switched on and off together);
    None: every entry is its own feature. InvalidInputError otherwise."""
    if feature_mask is None:
        return None
    if not isinstance(feature_mask, Tensor) or feature_mask.is_floating_point() or feature_mask.dtype == torch.bool:
        raise InvalidInputError("feature_mask must be an integer tensor of feature ids")
    if feature_mask.dim() != inputs.dim() or feature_mask.shape[0] not in (1, inputs.shape[0]):
        raise InvalidInputError(
            f"feature_mask must have shape [1, ...] or [N, ...] like inputs {tuple(inputs.shape)}, "
            f"got {tuple(feature_mask.shape)}"
        )
    try:
        torch.broadcast_shapes(feature_mask.shape, inputs.shape)
    except RuntimeError as exc:
        raise InvalidInputError(
            f"feature_mask of shape {tuple(feature_mask.shape)} does not broadcast to inputs {tuple(inputs.shape)}"
        ) from exc
    ids = torch.unique(feature_mask)
    if int(ids[0]) != 0 or int(ids[-1]) != ids.numel() - 1:
        raise InvalidInputError(f"feature_mask ids must be 0..M-1 with every id used, got ids {ids[:10].tolist()}")
    return feature_mask.to(device=inputs.device, dtype=torch.long)


class CaptumExplainer(Explainer):
    """Base of the Captum adapters: imports Captum at the call, runs the subclass's Captum method on the validated
    inputs and resolved targets (seeded with `self.seed` where the method samples; the Captum notices listed in
    `notices` silenced), and returns an Explanation with the inputs' shape and dtype. Subclasses implement
    `_attribute(captum, inputs, target, **options)` returning the attributions and per-example diagnostics."""

    explain_options = ("baselines",)
    seed: int | None = None  # sampling methods set it; the deterministic ones never draw
    notices: tuple[str, ...] = ()  # the starts of Captum's informational warnings this method silences

    def _explain(self, inputs: Tensor, target: Tensor, **options: Any) -> Explanation:
        captum = captum_attr()
        with seeded_cpu_generator(self.seed), warnings.catch_warnings():
            for notice in self.notices:
                warnings.filterwarnings("ignore", message=notice)
            attributions, diagnostics = self._attribute(captum, inputs, target, **options)
        return Explanation(attributions.detach().to(inputs.dtype), target, self.method_name, self.params(), diagnostics)

    @abstractmethod
    def _attribute(self, captum: ModuleType, inputs: Tensor, target: Tensor, **options: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """Attributions [N, ...] (the inputs' shape) and per-example diagnostics from the Captum method."""
