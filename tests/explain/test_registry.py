"""Explainers by name (certify/explain/registry.py): every method is registered under its own method_name,
`make_explainer` passes parameters through and names the accepted ones when given an unknown one, unknown
methods and presets are refused, and every preset builds the explainer it names (a domain only where taken)."""
import pytest
import torch
from torch import nn

from certify.errors import UnsupportedError, UsageError
from certify.explain import (DeepLift, GradCam, Gradient, IntegratedGradients, KernelShap, Lime, Occlusion, RelEx,
                             ShapleyValueSampling, SmoothGrad, SobolIndices, SparsifiedSmoothGrad)
from certify.explain.hshap import HShap
from certify.explain.lagrange_dual import LagrangeDual
from certify.explain.moreaugrad import MoreauGrad
from certify.explain.registry import METHODS, PRESETS, make_explainer, make_preset


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Softplus(), nn.Linear(6, 3)).eval()


def test_every_method_is_registered_under_its_own_name():
    assert METHODS == {cls.method_name: cls for cls in (
        Gradient, IntegratedGradients, SmoothGrad, MoreauGrad, LagrangeDual, HShap, SparsifiedSmoothGrad, RelEx, DeepLift,
        KernelShap, ShapleyValueSampling, Lime, Occlusion, GradCam, SobolIndices)}


def test_parameters_are_passed_through(model):
    explainer = make_explainer("moreaugrad", model, rho=0.2, sparsity=0.1)
    assert isinstance(explainer, MoreauGrad) and explainer.rho == 0.2 and explainer.sparsity == 0.1
    assert explainer.model is model
    ig = make_explainer("integrated-gradients", model, n_steps=7)
    assert ig.params()["n_steps"] == 7


def test_unknown_method_names_the_known_ones(model):
    with pytest.raises(UnsupportedError, match="unknown explanation method 'limes'.*'gradient'"):
        make_explainer("limes", model)


def test_unknown_parameter_names_the_accepted_ones(model):
    with pytest.raises(UsageError, match="unknown parameters \\['rh0'\\] for method 'moreaugrad'; accepted: rho, "):
        make_explainer("moreaugrad", model, rh0=0.2)
    with pytest.raises(UsageError, match="accepted: none"):
        make_explainer("gradient", model, sigma=0.1)


def test_open_ended_constructors_check_their_own_options(model):
    assert make_explainer("lagrange-dual", model, method="gda", step_size=0.1).solver_options == {"step_size": 0.1}
    with pytest.raises(UsageError):
        make_explainer("lagrange-dual", model, not_an_option=1.0)


@pytest.mark.parametrize("label", sorted(PRESETS))
def test_every_preset_builds_its_method_with_its_parameters(model, label):
    name, params = PRESETS[label]
    explainer = make_preset(label, model)
    assert isinstance(explainer, METHODS[name])
    for key, value in params.items():
        if key != "p":
            assert explainer.params()[key] == value


def test_presets_take_overrides_and_a_domain_only_where_the_method_does(model):
    lagrange = make_preset("lagrange-dual", model, domain=(0.0, 1.0), p=float("inf"))
    assert lagrange.domain == (0.0, 1.0) and lagrange.params()["p"] == "inf"
    gradient = make_preset("gradient", model, domain=(0.0, 1.0))  # the domain is ignored, not an error
    assert isinstance(gradient, Gradient)
    assert make_preset("moreaugrad", model, rho=0.1).rho == 0.1
    with pytest.raises(UnsupportedError, match="unknown method preset"):
        make_preset("fast", model)


def test_presets_that_need_a_missing_extra_say_so_and_the_quick_demo_leaves_them_out(monkeypatch):
    """A plain `pip install certify` has neither Captum nor SALib: their presets name the extra, and the quick demo
    runs the others (it had exited 66 on the first Captum preset)."""
    import importlib.util

    from certify.demo import DemoConfig
    from certify.explain.registry import missing_extra

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("captum", "SALib") else real(name, *a))
    assert "captum" in missing_extra("deeplift") and "certify[baselines]" in missing_extra("lime")
    assert missing_extra("gradient") is None and missing_extra("sparsified-smoothgrad") is None
    labels = [label for label, _ in DemoConfig.quick().methods]
    assert "deeplift" not in labels and "kernel-shap" not in labels and "moreaugrad" in labels
