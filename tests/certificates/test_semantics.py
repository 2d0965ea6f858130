"""The checker's own translation (certify.certificates.semantics): refusals, agreement with the bound
layer's translation, its conformance check, forward/gradient helpers, and its independence."""
import ast
import copy
import math
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from certify.bounds.network import from_module
from certify.certificates import semantics as S
from certify.certificates.semantics import SemanticsError
from certify.errors import UnsupportedError
from certify.models import zoo


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from translation_models import functional_model, residual_model as _residual_model  # noqa: E402


def test_checker_module_imports_no_bound_explainer_or_attack_code():
    source = Path(S.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    for banned in ("certify.bounds", "certify.explain", "certify.attacks"):
        assert not any(name == banned or name.startswith(banned + ".") for name in imported), imported
    assert {name for name in imported if name.startswith("certify")} <= {"certify.errors", "certify.vocabulary"}


def test_residual_refused_naming_the_add():
    with pytest.raises(SemanticsError) as err:
        S.translate(_residual_model(), (4,))
    assert "add" in str(err.value) and "residual" in str(err.value)
    assert isinstance(err.value, UnsupportedError)


def test_residual_body_does_not_conform():
    model = _residual_model()
    body = nn.Sequential(*list(model[0]), *list(model)[1:]).eval()
    dev, tol, passed = S.check_conformance(model, S.translate(body, (4,)), torch.randn(3, 4))
    assert not passed and dev > 1e-2 > tol


def test_softplus_threshold_one_refused():
    model = nn.Sequential(nn.Linear(4, 8), nn.Softplus(beta=1, threshold=1), nn.Linear(8, 3)).eval()
    with pytest.raises(SemanticsError, match="threshold=1"):
        S.translate(model, (4,))
    twin = copy.deepcopy(model)
    twin[1].threshold = 20.0
    _, _, passed = S.check_conformance(model, S.translate(twin, (4,)), torch.randn(4, 4))
    assert not passed


def test_batchnorm_without_running_stats_refused():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8, track_running_stats=False), nn.ReLU(), nn.Linear(8, 3)).eval()
    with pytest.raises(SemanticsError, match="running statistics"):
        S.translate(model, (4,))


@pytest.mark.parametrize("bias", [True, False])
def test_linear_classifier(bias):
    torch.manual_seed(1)
    model = nn.Linear(6, 3, bias=bias).eval()
    stages = S.translate(model, (6,))
    assert stages.acts == [] and len(stages.mats) == 1
    assert torch.equal(stages.mats[0], model.weight.detach().double())
    assert S.deviation_bound(stages) == 0.0
    assert S.check_conformance(model, stages, torch.randn(2, 6))[2]


@pytest.mark.parametrize("name", zoo.names())
def test_agrees_with_the_bound_layer_translation_on_every_zoo_model(name):
    model, data = zoo.load(name)
    shape = tuple(data.input_shape)
    net = from_module(model, shape)
    stages = S.translate(model, shape)
    assert len(stages.mats) == len(net.weights)
    for a, b in zip(stages.mats, net.weights):
        assert a.shape == b.shape and float((a - b).abs().max()) <= 1e-12
    for a, b in zip(stages.biases, net.biases):
        assert float((a - b).abs().max()) <= 1e-12
    assert stages.acts == [("relu",) if a.name == "relu" else ("softplus", a.beta, a.threshold) for a in net.activations]
    assert math.isclose(S.deviation_bound(stages), net.deviation, rel_tol=1e-12, abs_tol=0.0)
    dev, tol, passed = S.check_conformance(model, stages, data.x_test[:2], data.x_train[:32])
    assert passed and dev <= tol


def test_moons_threshold_point_conforms():
    model, data = zoo.load("moons-softplus-mlp")
    stages = S.translate(model, (2,))
    x = torch.tensor([[-3.473, 0.580]])
    assert S.check_conformance(model, stages, x, data.x_train)[2]
    assert S.check_conformance(copy.deepcopy(model).double(), stages, x, data.x_train)[2]


def test_monkeypatched_stage_fails_conformance():
    model, data = zoo.load("digits-relu-mlp")
    stages = S.translate(model, tuple(data.input_shape))
    stages.mats[1] = stages.mats[1].clone()
    stages.mats[1][2, :] += 0.02  # one hidden unit's weights off by 0.02 (rounding bound here: ~1e-3)
    _, _, passed = S.check_conformance(model, stages, data.x_test[:4], data.x_train[:32])
    assert not passed


def test_forward_and_gradient_match_the_float64_model():
    model, data = zoo.load("digits-softplus-cnn")
    stages = S.translate(model, tuple(data.input_shape))
    model64 = copy.deepcopy(model).double()
    x = data.x_test[:3].double()
    assert torch.allclose(S.forward(stages, x), model64(x).detach(), rtol=0, atol=1e-10)
    row = torch.zeros(10, dtype=torch.float64)
    row[3], row[7] = 1.0, -1.0
    xi = x[:1].clone().requires_grad_(True)
    (want,) = torch.autograd.grad((model64(xi)[0] * row).sum(), xi)
    assert torch.allclose(S.gradient(stages, x[0], row), want[0], rtol=0, atol=1e-10)
    (want3,) = torch.autograd.grad(model64(xi)[0, 3], xi)
    assert torch.allclose(S.gradient(stages, x[0], 3), want3[0], rtol=0, atol=1e-10)


def test_deviation_bound_hand_value():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.Softplus(beta=4.0, threshold=25.0), nn.Linear(4, 2)).eval()
    stages = S.translate(model, (3,))
    expected = float((model[2].weight.detach().double().abs() @ torch.full((4,), math.log1p(math.exp(-25.0)) / 4.0, dtype=torch.float64)).max())
    assert expected <= S.deviation_bound(stages) <= expected * (1 + 1e-12)
    assert S.summary(stages)["activations"] == [{"name": "softplus", "beta": 4.0, "threshold": 25.0}]


@settings(max_examples=20, deadline=None)
@given(depth=st.integers(0, 3), width=st.integers(1, 10), act=st.sampled_from(["relu", "softplus"]), seed=st.integers(0, 9999))
def test_property_both_translations_agree_and_conform(depth, width, act, seed):
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    w = 5
    for _ in range(depth):
        layers += [nn.Linear(w, width), nn.ReLU() if act == "relu" else nn.Softplus(beta=1.5)]
        w = width
    model = nn.Sequential(*layers, nn.Linear(w, 3)).eval()
    stages = S.translate(model, (5,))
    net = from_module(model, (5,))
    assert all(torch.equal(a, b) for a, b in zip(stages.mats, net.weights))
    x = torch.randn(3, 5) * torch.tensor([[1.0], [30.0], [1000.0]])
    assert S.check_conformance(model, stages, x)[2]


def test_internal_overflow_is_not_conformance():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 4), nn.Softplus(threshold=math.inf), nn.Linear(4, 2)).eval()
    stages = S.translate(model, (3,))
    assert not S.check_conformance(model, stages, torch.randn(1, 3))[2]  # exp overflows in float32 at far points


def test_functional_model_agrees_with_the_bound_layer():
    model = functional_model(7)
    stages = S.translate(model, (1, 4, 4))
    net = from_module(model, (1, 4, 4))
    assert stages.acts == [("softplus", 2.0, 30.0), ("relu",)]
    for a, b in zip(stages.mats + stages.biases, net.weights + net.biases):
        assert float((a - b).abs().max()) <= 1e-12
    assert S.check_conformance(model, stages, torch.randn(3, 1, 4, 4))[2]
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(S.forward(stages, x), copy.deepcopy(model).double()(x), rtol=0, atol=1e-10)


def test_onnx2torch_mnistfc_graph_translates_like_the_bound_layer():
    """issue 12: the checker's own translation of the converted mnistfc ONNX net equals the bound layer's."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import mnistfc_data as M

    model = M.model("mnist-net_256x4.onnx")
    stages = S.translate(model, model.certify_input_shape)
    net = from_module(model, model.certify_input_shape)
    assert stages.acts == [("relu",)] * 4 and len(stages.mats) == 5
    for a, b, c, d in zip(stages.mats, net.weights, stages.biases, net.biases):
        assert torch.equal(a, b) and torch.equal(c, d)
    x = torch.rand(2, 784, 1)
    assert S.check_conformance(model, stages, x)[2]


def test_torchscript_refused_by_the_checker_in_one_line():
    scripted = torch.jit.script(nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2)).eval())
    with pytest.raises(SemanticsError) as err:
        S.translate(scripted, (3,))
    assert "\n" not in str(err.value) and "TorchScript" in str(err.value)
