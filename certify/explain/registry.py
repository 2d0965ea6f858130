"""Explainers by name, for the CLI and the demo: `make_explainer(name, model, **params)`."""
from __future__ import annotations

import importlib.util
import inspect
from typing import Any, Callable

from torch import nn

from certify.errors import UnsupportedError, UsageError
from certify.explain.base import Explainer
from certify.explain.captum_adapter import CaptumExplainer
from certify.explain.deeplift import DeepLift
from certify.explain.gradcam import GradCam
from certify.explain.gradient import Gradient
from certify.explain.hshap import HShap
from certify.explain.integrated_gradients import IntegratedGradients
from certify.explain.kernel_shap import KernelShap, ShapleyValueSampling
from certify.explain.lagrange_dual import LagrangeDual
from certify.explain.lime import Lime
from certify.explain.moreaugrad import MoreauGrad
from certify.explain.occlusion import Occlusion
from certify.explain.relex import RelEx
from certify.explain.smoothgrad import SmoothGrad
from certify.explain.sobol import SobolIndices
from certify.explain.sparsified_smoothgrad import SparsifiedSmoothGrad

METHODS: dict[str, Callable[..., Explainer]] = {
    Gradient.method_name: Gradient,
    IntegratedGradients.method_name: IntegratedGradients,
    SmoothGrad.method_name: SmoothGrad,
    MoreauGrad.method_name: MoreauGrad,
    LagrangeDual.method_name: LagrangeDual,
    HShap.method_name: HShap,
    SparsifiedSmoothGrad.method_name: SparsifiedSmoothGrad,
    RelEx.method_name: RelEx,
    # through Captum and SALib (the baselines extra: pip install 'certify[baselines]'), imported at the first call
    DeepLift.method_name: DeepLift,
    KernelShap.method_name: KernelShap,
    ShapleyValueSampling.method_name: ShapleyValueSampling,
    Lime.method_name: Lime,
    Occlusion.method_name: Occlusion,
    GradCam.method_name: GradCam,
    SobolIndices.method_name: SobolIndices,
}


def command_line_params(method: str, params: dict[str, Any], data: Any, eps: float) -> dict[str, Any]:
    """The parameters `certify explain` and `certify batch` give `make_explainer` for `--param` values `params` of
    `method`, a model whose data set is `data` (a `certify.models.datasets.Dataset`, or None) and the stability
    radius `eps`: `sample=train|test` becomes the data's rows; the data's input box becomes `domain` (or, for an
    unbounded box, its training rows `sample`), unless given; MoreauGrad's rho defaults to `auto` (minimising
    Corollary 1's bound at `eps`). UsageError for `model` (never a parameter) or a `sample` name without data."""
    import torch

    params = dict(params)
    accepted = inspect.signature(METHODS[method]).parameters if method in METHODS else {}
    if "model" in params:  # the explainer's first argument, never a --param
        named = [n for n, p in accepted.items() if n != "model" and p.kind != p.VAR_KEYWORD]
        raise UsageError(f"--param model=... is not a parameter of method {method!r} (give the model with --model); "
                         f"accepted: {', '.join(named) or 'none'}")
    if "sample" in accepted and isinstance(params.get("sample"), str):
        if data is None or params["sample"] not in ("train", "test"):
            raise UsageError("--param sample=train or sample=test takes the rows of the model's data set (a zoo model)")
        params["sample"] = data.x_train if params["sample"] == "train" else data.x_test
    if data is not None and "domain" in accepted and "sample" not in params:
        finite = all(bool(torch.isfinite(torch.as_tensor(side)).all()) for side in data.domain)
        if "sample" in accepted and not finite:  # a distribution over an unbounded box: the training rows
            params["sample"] = data.x_train
        else:
            params.setdefault("domain", data.domain)
    if method == "moreaugrad" and params.setdefault("rho", "auto") == "auto":
        params.setdefault("eps", eps)
    return params


def make_explainer(name: str, model: nn.Module, **params: Any) -> Explainer:
    """The explainer registered under `name`, constructed with `params`; a parameter the method does not take
    is a UsageError naming the accepted ones."""
    if name not in METHODS:
        raise UnsupportedError(f"unknown explanation method {name!r}; choose one of {sorted(METHODS)}")
    signature = inspect.signature(METHODS[name])
    named = [n for n, prm in signature.parameters.items() if n != "model" and prm.kind != prm.VAR_KEYWORD]
    open_ended = any(prm.kind == prm.VAR_KEYWORD for prm in signature.parameters.values())
    unknown = sorted(set(params) - set(named))
    seed = params.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise UsageError(f"seed must be an integer in [0, 2^63), got {seed!r}")  # torch's generators take 64 bits
    if unknown and not open_ended:  # an open-ended constructor (solver options) checks its own extra options
        raise UsageError(f"unknown parameters {unknown} for method {name!r}; accepted: {', '.join(named) or 'none'}")
    return METHODS[name](model, **params)


# Named configurations used by the demo, `certify evaluate` and the benchmarks (label -> method, params).
# rho = 0.3 keeps rho * lambda < 1 on the default model (lambda <= 2.4 for every class), so MoreauGrad
# explanations there are certified; sparsity 0.25 zeroes about a third of the digits' features.
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "gradient": ("gradient", {}),
    "integrated-gradients": ("integrated-gradients", {"n_steps": 32}),
    "smoothgrad": ("smoothgrad", {"sigma": 0.15, "samples": 64, "relative": True, "seed": 0}),
    "moreaugrad": ("moreaugrad", {"rho": 0.3, "tol": 1e-5}),
    "sparse-moreaugrad": ("moreaugrad", {"rho": 0.3, "sparsity": 0.25, "tol": 1e-5}),
    "lagrange-dual": ("lagrange-dual", {"p": 2}),
    # the baselines of issue 16, with cheap settings (the robustness study explains each input many times);
    # sigma 0.15 is absolute here (Sparsified SmoothGrad's certificate needs it), about 15% of the digits' range
    "sparsified-smoothgrad": ("sparsified-smoothgrad", {"sigma": 0.15, "samples": 256, "l0": 0.1, "seed": 0}),
    "relex": ("relex", {"sigma": 0.1, "samples": 8, "iterations": 30, "seed": 0}),
    "deeplift": ("deeplift", {}),
    "kernel-shap": ("kernel-shap", {"n_samples": 64, "seed": 0}),
    "lime": ("lime", {"n_samples": 64, "seed": 0}),
    "occlusion": ("occlusion", {}),  # a one-entry window
}


def make_preset(label: str, model: nn.Module, domain: Any = None, **overrides: Any) -> Explainer:
    """The explainer of preset `label`, with parameters overridden by `overrides`; `domain` (the input
    box of the data) is passed to the methods that take one (the Lagrange-dual explainer)."""
    if label not in PRESETS:
        raise UnsupportedError(f"unknown method preset {label!r}; choose one of {sorted(PRESETS)}")
    name, params = PRESETS[label]
    if domain is not None and "domain" in inspect.signature(METHODS[name]).parameters:
        params = {**params, "domain": domain}
    return make_explainer(name, model, **{**params, **overrides})


def missing_extra(label: str) -> str | None:
    """Why preset `label` cannot run in this environment (the optional package its method runs through, Captum or
    SALib, is not installed: the baselines extra), or None when it can."""
    name, _ = PRESETS[label]
    method = METHODS[name]
    needs = "captum" if issubclass(method, CaptumExplainer) else "SALib" if method is SobolIndices else None
    if needs is not None and importlib.util.find_spec(needs) is None:
        return f"{label} runs through {needs}, which is not installed (pip install 'certify[baselines]')"
    return None
