"""Explainers by name, for the CLI and the demo: `make_explainer(name, model, **params)`."""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from certify.errors import UnsupportedError
from certify.explain.base import Explainer
from certify.explain.gradient import Gradient
from certify.explain.integrated_gradients import IntegratedGradients
from certify.explain.moreaugrad import MoreauGrad
from certify.explain.smoothgrad import SmoothGrad

METHODS: dict[str, Callable[..., Explainer]] = {
    Gradient.method_name: Gradient,
    IntegratedGradients.method_name: IntegratedGradients,
    SmoothGrad.method_name: SmoothGrad,
    MoreauGrad.method_name: MoreauGrad,
}


def make_explainer(name: str, model: nn.Module, **params: Any) -> Explainer:
    """The explainer registered under `name`, constructed with `params`."""
    if name not in METHODS:
        raise UnsupportedError(f"unknown explanation method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name](model, **params)
