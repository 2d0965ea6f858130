"""Occlusion (Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014, section 4.2)
through `captum.attr.Occlusion`: a window of shape `sliding_window_shapes` slides over the input with step
`strides`; each position replaces the window by the baseline, and every entry receives the mean, over the windows
that cover it, of the score drop f_c(x) - f_c(x with the window occluded) (signed: positive where occluding lowers
the score). Entries no window covers get 0. Deterministic: one model call per window position.
"""
from __future__ import annotations

import numbers
from types import ModuleType

from torch import Tensor, nn

from certify.errors import InvalidInputError, UsageError
from certify.explain.captum_adapter import CaptumExplainer, captum_baselines
from certify.validation import positive_int


def _positive_ints(value: object, name: str) -> tuple[int, ...]:
    """`value` (an int or a tuple of ints) as a tuple of ints >= 1; UsageError otherwise."""
    values = (value,) if isinstance(value, numbers.Integral) else value
    if not isinstance(values, (tuple, list)) or not values:
        raise UsageError(f"{name} must be an integer or a tuple of integers >= 1, got {value!r}")
    return tuple(positive_int(v, name) for v in values)


class Occlusion(CaptumExplainer):
    """`Occlusion(model, sliding_window_shapes=None, strides=1, perturbations_per_eval=1)`: the window's shape over
    the non-batch dimensions (e.g. (1, 2, 2) for [N, 1, 8, 8] images, (3,) for [N, 30] vectors; None: one entry) and its step (an int
    for every dimension, or a tuple like the window); `explain`/`attribute` take `baselines` (tensor broadcastable
    to the inputs, number, or None for zeros). Errors: UsageError for non-positive sizes; InvalidInputError when
    the window's rank or size does not fit the inputs."""

    method_name = "occlusion"
    call_options = ("sliding_window_shapes", "strides", "perturbations_per_eval")

    def __init__(self, model: nn.Module, sliding_window_shapes: int | tuple[int, ...] | None = None,
                 strides: int | tuple[int, ...] = 1, perturbations_per_eval: int = 1) -> None:
        super().__init__(model)
        self.sliding_window_shapes = (None if sliding_window_shapes is None
                                      else _positive_ints(sliding_window_shapes, "sliding_window_shapes"))
        self.strides = _positive_ints(strides, "strides")
        if self.sliding_window_shapes is not None and len(self.strides) not in (1, len(self.sliding_window_shapes)):
            raise UsageError(f"strides {self.strides} must be one integer or one per window dimension "
                             f"{self.sliding_window_shapes}")
        self.perturbations_per_eval = positive_int(perturbations_per_eval, "perturbations_per_eval")

    def params(self) -> dict[str, object]:
        return {"sliding_window_shapes": None if self.sliding_window_shapes is None else list(self.sliding_window_shapes),
                "strides": list(self.strides),
                "perturbations_per_eval": self.perturbations_per_eval}

    def _attribute(self, captum: ModuleType, inputs: Tensor, target: Tensor, baselines: Tensor | float | None = None
                   ) -> tuple[Tensor, dict[str, Tensor]]:
        shape = tuple(inputs.shape[1:])
        window = self.sliding_window_shapes or (1,) * len(shape)  # default: each entry occluded alone
        if len(window) != len(shape) or any(w > s for w, s in zip(window, shape)):
            raise InvalidInputError(f"sliding_window_shapes {window} do not fit inputs of shape {shape} (one size "
                                    "per non-batch dimension, none larger than the input)")
        strides = self.strides * len(window) if len(self.strides) == 1 else self.strides
        attributions = captum.Occlusion(self.model).attribute(
            inputs, sliding_window_shapes=window, strides=strides, baselines=captum_baselines(inputs, baselines),
            target=target, perturbations_per_eval=self.perturbations_per_eval)
        return attributions, {}
