"""The checker's own translation (certify.certificates.semantics): graphs (tests/graph_models.py) and chains,
refusals, agreement with the bound layer's translation, its conformance check, forward/gradient helpers,
the activation constants, the path-sum Lipschitz bound, and its independence."""
import ast
import copy
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from certify.bounds.network import from_module
from certify.certificates import semantics as S
from certify.certificates.semantics import SemanticsError
from certify.errors import UnsupportedError
from certify.models import zoo


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from graph_models import GRAPH_MODELS, REFUSED, Residual  # noqa: E402
from translation_models import AugmentedAlias, functional_model, residual_model as _residual_model  # noqa: E402


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
    # the TorchScript front door only rebuilds a ScriptModule's graph; conformance compares N with the ScriptModule
    assert {name for name in imported if name.startswith("certify")} <= {"certify.errors", "certify.vocabulary", "certify.models.torchscript",
                                                                        "certify.models.integrity"}


def test_residual_translates_to_a_skip_into_the_next_layer():
    model = _residual_model()
    stages = S.translate(model, (4,))
    block = model[0]
    assert [a[0] for a in stages.acts] == ["relu", "relu"] and not stages.is_chain
    assert list(stages.skips) == [1] and list(stages.skips[1]) == [0]  # z_1 = W h_1 + S x: the input added back
    assert torch.equal(stages.skips[1][0], torch.eye(4, dtype=torch.float64))
    assert torch.equal(stages.mats[1], block[2].weight.detach().double())
    x = torch.randn(5, 4, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(S.forward(stages, x), copy.deepcopy(model).double()(x), rtol=0, atol=1e-12)


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


def test_torchscript_graph_is_translated_like_the_eager_module():
    torch.manual_seed(4)
    eager = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    want = S.translate(eager, (3,))
    for compiled in (torch.jit.script(eager), torch.jit.trace(eager, torch.zeros(1, 3))):
        stages = S.translate(compiled, (3,))
        assert stages.acts == want.acts and all(torch.equal(a, b) for a, b in zip(stages.mats + stages.biases, want.mats + want.biases))
        assert S.check_conformance(compiled, stages, torch.randn(3, 3))[2]


# ------------------------------------------------------------------------------------------ graphs (issue 12)


def _model64(name: str):  # type: ignore[no-untyped-def]
    build, shape = GRAPH_MODELS[name]
    model = build(0)
    return model, copy.deepcopy(model).double(), shape


def _points(shape: tuple[int, ...], count: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.3, 1.0, 3.0] * count)[:count].reshape((count,) + (1,) * len(shape)).double()
    return torch.randn((count,) + shape, generator=gen, dtype=torch.float64) * scale


def _output(stages: S.Stages, logits: torch.Tensor) -> torch.Tensor:
    if stages.head == "softmax":
        return torch.softmax(logits, dim=1)
    if stages.head == "log_softmax":
        return torch.log_softmax(logits, dim=1)
    return logits


@pytest.mark.parametrize("name", sorted(GRAPH_MODELS))
def test_graph_model_translates_and_computes_the_model_in_float64(name):
    model, model64, shape = _model64(name)
    stages = S.translate(model, shape)
    for k, row in stages.skips.items():
        for j, s in row.items():
            assert j < k and s.shape == (stages.mats[k].shape[0], stages.mats[j].shape[1])
    for k in range(1, len(stages.mats)):
        assert stages.mats[k].shape[1] == stages.mats[k - 1].shape[0]  # h_k has the width of z_{k-1}
    x = _points(shape, 9, 1)
    with torch.no_grad():
        want = model64(x)
    got = _output(stages, S.forward(stages, x))
    assert float((got - want).abs().max()) <= 1e-10


@pytest.mark.parametrize("name", sorted(GRAPH_MODELS))
def test_graph_gradient_matches_autograd_of_the_model(name):
    _, model64, shape = _model64(name)
    stages = S.translate(model64, shape)
    logits_of = model64
    if stages.head is not None:  # N is the network before the dropped head
        assert isinstance(model64, nn.Sequential) and type(model64[-1]) in (nn.Softmax, nn.LogSoftmax)
        logits_of = model64[:-1]
    gen = torch.Generator().manual_seed(2)
    for x in _points(shape, 3, 3):
        row = torch.randn(stages.mats[-1].shape[0], generator=gen, dtype=torch.float64)
        xi = x.unsqueeze(0).clone().requires_grad_(True)
        (want,) = torch.autograd.grad((logits_of(xi)[0] * row).sum(), xi)
        assert torch.allclose(S.gradient(stages, x, row), want[0], rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", sorted(GRAPH_MODELS))
def test_graph_conformance_passes_in_float32_and_float64_and_catches_mis_translations(name):
    model, model64, shape = _model64(name)
    stages = S.translate(model, shape)
    x = _points(shape, 3, 4).float()
    for runnable in (model, model64):
        dev, tol, passed = S.check_conformance(runnable, stages, x)
        assert passed and dev <= tol
    biases = list(stages.biases)
    biases[-1] = biases[-1].clone()
    biases[-1][0] += 0.5
    wrong = [replace(stages, biases=biases)]
    if stages.skips:
        wrong.append(replace(stages, skips={}))  # the residual / branch / max-pool paths forgotten
    if stages.head is not None:
        wrong.append(replace(stages, head=None))  # the head not applied
    for bad in wrong:
        for runnable in (model, model64):
            assert not S.check_conformance(runnable, bad, x)[2]


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_graph_models_name_the_operator(name):
    build, shape, op = REFUSED[name]
    with pytest.raises(SemanticsError, match=op) as err:
        S.translate(build(0), shape)
    assert isinstance(err.value, UnsupportedError) and "\n" not in str(err.value)


class _Wrap(nn.Module):
    def __init__(self, body) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.body = body

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.body(self.fc(x))


@pytest.mark.parametrize("body, words", [
    (lambda h: torch.softmax(h, dim=1) + h, "softmax"),  # a softmax that is not the output
    (lambda h: h.max(dim=1).values.unsqueeze(1), "max"),
    (lambda h: h[:, :2], "indexing"),
    (lambda h: h / h.sum(dim=1, keepdim=True), "division by a value"),
    (lambda h: h.sum(), "sum over all"),
    (lambda h: F.dropout(h, 0.5, True), "training=True"),
    (lambda h: 1.0 / (h + 3.0), "division by a value"),
    (lambda h: h.squeeze(), "squeeze"),
    (lambda h: h.mean(), "mean over all"),
    (lambda h: torch.relu_(h) + h, "in-place"),
    (lambda h: F.relu(h, True) + h, "in-place"),
    (lambda h: F.leaky_relu(h, 0.1, True) * 2.0 + h, "in-place"),
    (lambda h: F.hardswish(h), "hardswish"),
    (lambda h: torch.cat([h, h], dim=0), "batch"),
    (lambda h: h.permute(1, 0), "batch"),
    (lambda h: h * torch.sigmoid(h), "product"),
])
def test_graph_ops_that_are_not_modelled_are_refused_naming_them(body, words):
    model = _Wrap(body).eval()
    with pytest.raises(SemanticsError, match=words):
        S.translate(model, (4,))


class _FunctionalForms(nn.Module):
    """Functional pooling, sum, clone, eval dropout, torch.subtract / divide / negative, transpose, squeeze."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = F.max_pool2d(F.relu(self.conv(x)), 2, 2, 0, 1, True)
        h = F.avg_pool2d(h, 2, ceil_mode=True) + F.adaptive_avg_pool2d(h, (2, 2)).clone()
        h = torch.subtract(h, torch.divide(F.dropout(h, 0.3, False), 3.0))
        h = torch.negative(h.transpose(2, 3).sum(dim=3, keepdim=True).squeeze(3))
        return self.fc(h.reshape(h.size(0), -1))


def test_functional_pooling_reductions_and_aliases_translate_exactly():
    torch.manual_seed(6)
    model = _FunctionalForms().eval()
    stages = S.translate(model, (2, 7, 7))
    x = torch.randn(4, 2, 7, 7, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(S.forward(stages, x), copy.deepcopy(model).double()(x), rtol=0, atol=1e-12)
    assert S.check_conformance(model, stages, x.float())[2]
    net = from_module(model, (2, 7, 7))
    assert torch.allclose(net.forward(x.reshape(4, -1)), S.forward(stages, x), rtol=0, atol=1e-10)


def test_maxpool_padding_is_excluded_not_read_as_a_value():
    """All-negative inputs: a padded zero would win every border window; the model and N agree."""
    model = nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), nn.Flatten()).eval()
    stages = S.translate(model, (1, 5, 5))
    x = -1.0 - torch.rand(4, 1, 5, 5, dtype=torch.float64)
    assert torch.equal(S.forward(stages, x), model.double()(x))
    assert all(a == ("relu",) for a in stages.acts) and len(stages.acts) == 4  # ceil(log2 9) tournament rounds


def test_activations_by_module_function_and_method_and_the_summary_of_a_graph():
    class Acts(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):  # type: ignore[no-untyped-def]
            h = F.leaky_relu(self.fc(x), 0.2) + F.gelu(x, approximate="tanh") + x.sigmoid() + F.silu(x)
            return F.log_softmax(torch.tanh(h) - F.gelu(x), dim=-1)

    torch.manual_seed(0)
    model = Acts().eval()
    stages = S.translate(model, (3,))
    assert stages.acts == [("leaky_relu", 0.2), ("gelu_tanh",), ("sigmoid",), ("silu",), ("tanh",), ("gelu",)]
    summary = S.summary(stages)
    assert summary["head"] == "log_softmax" and summary["activations"][0] == {"name": "leaky_relu", "negative_slope": 0.2}
    assert summary["skips"] == {"1": [0], "2": [0], "3": [0], "4": [1, 2, 3], "5": [0], "6": [5]}
    x = torch.randn(6, 3, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(_output(stages, S.forward(stages, x)), copy.deepcopy(model).double()(x), rtol=0, atol=1e-12)
    assert S.check_conformance(model, stages, x.float())[2]


_ALL_ACTS = [("relu",), ("leaky_relu", 0.1), ("leaky_relu", -2.5), ("softplus", 1.0, 20.0), ("softplus", 3.0, 20.0),
             ("sigmoid",), ("tanh",), ("gelu",), ("gelu_tanh",), ("silu",)]


def _peak(f, lo: float = -40.0, hi: float = 40.0) -> float:  # type: ignore[no-untyped-def]
    """max |f| on a grid over [lo, hi], refined twice around the grid's argmax."""
    for _ in range(3):
        z = torch.linspace(lo, hi, 200_001, dtype=torch.float64)
        values = f(z).abs()
        i = int(values.argmax())
        step = (hi - lo) / 200_000
        lo, hi = float(z[i]) - step, float(z[i]) + step
    return float(values.max())


def _derivative(act: tuple, z: torch.Tensor, order: int) -> torch.Tensor:
    zz = z.clone().requires_grad_(True)
    (d1,) = torch.autograd.grad(S.activate(act, zz).sum(), zz, create_graph=order > 1)
    return torch.autograd.grad(d1.sum(), zz)[0] if order > 1 else d1.detach()


@pytest.mark.parametrize("act", _ALL_ACTS, ids=lambda a: "-".join(map(str, a)))
def test_activation_slopes_and_constants_on_a_dense_grid(act):
    z = torch.linspace(-40, 40, 400_001, dtype=torch.float64)
    assert torch.allclose(S.slope(act, z), _derivative(act, z, 1), rtol=0, atol=1e-12)
    sup = _peak(lambda t: S.slope(act, t))
    assert sup <= S.lipschitz(act) <= sup + 1e-9  # the constant is an upper bound, and a tight one
    if math.isfinite(S.curvature(act)):
        sup2 = _peak(lambda t: _derivative(act, t, 2))
        assert sup2 <= S.curvature(act) + 1e-15 and S.curvature(act) <= sup2 + 1e-9  # (autograd's own rounding)


@pytest.mark.parametrize("act, torch_fn", [
    (("leaky_relu", 0.1), lambda t: F.leaky_relu(t, 0.1)), (("softplus", 1.0, 20.0), F.softplus),
    (("softplus", 4.0, 20.0), lambda t: F.softplus(t, beta=4.0)), (("sigmoid",), torch.sigmoid), (("tanh",), torch.tanh),
    (("gelu",), F.gelu), (("gelu_tanh",), lambda t: F.gelu(t, approximate="tanh")), (("silu",), F.silu),
], ids=lambda a: a[0] if isinstance(a, tuple) else "")
def test_activation_rounding_covers_torch_in_float32_and_float64(act, torch_fn):
    """act_rounding bounds |torch's activation - the exact one| in float32 (with 2 u, as the conformance check
    passes it: the slope / beta are float32 too) and float64 (the exact one taken as `activate` in float64,
    whose own error the float64 bound covers)."""
    z = torch.cat([torch.linspace(-60, 60, 200_001), torch.logspace(-30, 3, 20_001), -torch.logspace(-30, 3, 20_001)])
    if act[0] == "softplus":
        z = z[act[1] * z <= act[2]]  # beyond the threshold torch's softplus is the identity: deviation_bound's part
    exact = S.activate(act, z.double())
    err32 = (torch_fn(z).double() - exact).abs()
    bound32 = S.act_rounding(act, z.double(), exact, 2 * (2.0**-24 + 2.0**-53), torch.finfo(torch.float32).tiny)
    assert bool((err32 <= bound32).all()), float((err32 - bound32).max())
    err64 = (torch_fn(z.double()) - exact).abs()
    assert bool((err64 <= 2 * S.act_rounding(act, z.double(), exact, 2.0**-53)).all())


@pytest.mark.parametrize("name", sorted(GRAPH_MODELS))
def test_path_sum_lipschitz_bound_covers_sampled_gradients(name):
    _, model64, shape = _model64(name)
    stages = S.translate(model64, shape)
    eye = torch.eye(stages.mats[-1].shape[0], dtype=torch.float64)
    for row in (eye[0], eye[0] - eye[1]):
        grads = torch.stack([S.gradient(stages, x, row).reshape(-1) for x in _points(shape, 48, 5)])
        assert float(grads.norm(dim=1).max()) <= S.lipschitz_bound(stages, row, 2.0)
        assert float(grads.abs().sum(dim=1).max()) <= S.lipschitz_bound(stages, row, math.inf)


def test_path_sum_lipschitz_bound_of_a_chain_is_the_product_bound():
    model, data = zoo.load("digits-relu-mlp")
    stages = S.translate(model, tuple(data.input_shape))
    row = torch.zeros(10, dtype=torch.float64)
    row[3], row[5] = 1.0, -1.0
    head = stages.mats[-1].T @ row
    product = float(head.norm(2)) * math.prod(float(torch.linalg.matrix_norm(w, ord=2)) for w in stages.mats[:-1])
    assert S.lipschitz_bound(stages, row, 2.0) == product
    product_inf = float(head.abs().sum()) * math.prod(float(w.abs().sum(dim=1).max()) for w in stages.mats[:-1])
    assert S.lipschitz_bound(stages, row, math.inf) == product_inf


def test_residual_path_sum_hand_value():
    """x + W2 relu(W1 x): L_2 <= ||c^T W2|| ||W1|| + ||c^T I|| (the skip from the input into the last layer)."""
    torch.manual_seed(5)
    model = Residual(nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 3))).eval()
    stages = S.translate(model, (3,))
    w1, w2 = model.block[0].weight.detach().double(), model.block[2].weight.detach().double()
    row = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
    hand = float((w2.T @ row).norm()) * float(torch.linalg.matrix_norm(w1, ord=2)) + float(row.norm())
    assert math.isclose(S.lipschitz_bound(stages, row, 2.0), hand, rel_tol=1e-12)


def test_deviation_bound_through_a_residual_graph_hand_value():
    torch.manual_seed(2)
    model = Residual(nn.Sequential(nn.Linear(3, 4), nn.Softplus(beta=4.0, threshold=25.0), nn.Linear(4, 3))).eval()
    stages = S.translate(model, (3,))
    gap = math.log1p(math.exp(-25.0)) / 4.0
    expected = float((model.block[2].weight.detach().double().abs() @ torch.full((4,), gap, dtype=torch.float64)).max())
    assert expected <= S.deviation_bound(stages) <= expected * (1 + 1e-12)


@pytest.mark.parametrize("name", sorted(GRAPH_MODELS))
def test_both_translations_compute_the_same_function_on_graph_models(name):
    """The bound layer's graph translation (certify.bounds.network) and the checker's own agree as functions
    (their matrices may differ by decomposition) and on the dropped head."""
    model, _, shape = _model64(name)
    net = from_module(model, shape)
    stages = S.translate(model, shape)
    assert net.head == stages.head
    x = _points(shape, 12, 6)
    want = net.forward(x.reshape(x.shape[0], -1))
    got = S.forward(stages, x)
    assert float(((got - want).abs() / (1 + want.abs())).max()) <= 1e-10


@pytest.mark.parametrize("name", sorted(GRAPH_MODELS))
def test_path_sum_formula_is_the_issuers(name):
    """The issuer's path-sum (certify.bounds.lipschitz, with its rigorous rounding margins) and the checker's
    own give the same bound on the graph models, the issuer's not below the checker's by more than the
    constants' last digits (an honest Lipschitz claim, written 1e-9 above, then verifies)."""
    from certify.bounds.lipschitz import lipschitz_product

    model, _, shape = _model64(name)
    net = from_module(model, shape)
    stages = S.translate(model, shape)
    eye = torch.eye(stages.mats[-1].shape[0], dtype=torch.float64)
    for row in (eye[0], eye[1] - eye[0]):
        for p in (2.0, math.inf):
            issuer = float(lipschitz_product(net, p, row).value[0])
            checker = S.lipschitz_bound(stages, row, p)
            assert checker <= issuer * (1 + 1e-12) and issuer <= checker * (1 + 1e-9)  # issuers write 1e-9 above


_ACT_MODULES = {"relu": nn.ReLU, "leaky": lambda: nn.LeakyReLU(0.2), "softplus": lambda: nn.Softplus(beta=2.0),
                "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
                "silu": nn.SiLU}


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 9999), acts=st.lists(st.sampled_from(sorted(_ACT_MODULES)), min_size=3, max_size=3),
       residual=st.booleans(), pool=st.sampled_from(["none", "max", "max-padded", "avg"]))
def test_property_random_graphs_translate_exactly_and_conform(seed, acts, residual, pool):
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(1, 3, 3, padding=1), _ACT_MODULES[acts[0]]()]
    layers += {"none": [], "max": [nn.MaxPool2d(2)], "max-padded": [nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)],
               "avg": [nn.AvgPool2d(2)]}[pool]
    if residual:
        layers.append(Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), _ACT_MODULES[acts[1]](), nn.Conv2d(3, 3, 1))))
    layers += [_ACT_MODULES[acts[2]](), nn.Flatten()]
    with torch.no_grad():
        width = nn.Sequential(*layers)(torch.zeros(1, 1, 6, 5)).shape[1]
    model = nn.Sequential(*layers, nn.Linear(width, 3)).eval()
    stages = S.translate(model, (1, 6, 5))
    x = _points((1, 6, 5), 6, seed)
    with torch.no_grad():
        assert float((S.forward(stages, x) - copy.deepcopy(model).double()(x)).abs().max()) <= 1e-10
    assert S.check_conformance(model, stages, x.float())[2]
    row = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
    grads = torch.stack([S.gradient(stages, p, row).reshape(-1) for p in x])
    assert float(grads.norm(dim=1).max()) <= S.lipschitz_bound(stages, row, 2.0)
    net = from_module(model, (1, 6, 5))
    assert float((net.forward(x.reshape(6, -1)) - S.forward(stages, x)).abs().max()) <= 1e-10


class _AddAlpha(nn.Module):
    """torch.add / torch.sub with alpha: left + alpha * right, on two values and on a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 3)

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = torch.relu(self.a(x))
        return self.b(torch.sub(torch.add(x, h, alpha=0.5), 0.25, alpha=2.0))


def test_add_and_sub_with_alpha_are_translated_like_the_issuer_does() -> None:
    torch.manual_seed(0)
    model = _AddAlpha().eval()
    x = torch.randn(6, 4, dtype=torch.float64)
    stages = S.translate(model, (4,))
    want = model.double()(x).detach()
    assert float((S.forward(stages, x) - want).abs().max()) < 1e-12
    assert float((from_module(model, (4,)).forward(x) - want).abs().max()) < 1e-12
    assert S.check_conformance(model.float(), stages, x[:1].float())[2]


class _InPlace(nn.Module):
    def __init__(self, body) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.fc, self.out, self.act, self.ident = nn.Linear(4, 4), nn.Linear(4, 3), nn.ReLU(inplace=True), nn.Identity()
        self.body = body

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.out(self.body(self, self.fc(x)))


@pytest.mark.parametrize("body", [
    lambda s, z: (s.act(z.contiguous()), z)[1],  # the attack: ReLU(inplace=True) on z.contiguous() (z itself)
    lambda s, z: z + s.act(z.flatten(1)),  # the live variant: a view of z, mutated and read
    lambda s, z: (z.view(z.size(0), 2, 2).relu_(), z)[1],
    lambda s, z: (s.ident(z).add_(1.0), z)[1],
    lambda s, z: (F.dropout(z, 0.5, training=False).mul_(2.0), z)[1],
    lambda s, z: (z.unsqueeze(1).transpose(1, 2).relu_(), z)[1],
    lambda s, z: (F.relu(z.reshape(z.size(0), 4), inplace=True), z)[1],
], ids=["contiguous", "flatten-live", "view", "Identity", "F.dropout", "transpose", "reshape"])
def test_checker_refuses_in_place_ops_on_values_that_may_alias_another(body):
    with pytest.raises(SemanticsError, match="aliasing"):
        S.translate(_InPlace(body).eval(), (4,))


def test_checker_refuses_in_place_ops_on_the_input_and_augmented_assignment_on_a_shared_value():
    class OnInput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):  # type: ignore[no-untyped-def]
            x.relu_()
            return self.fc(x)

    with pytest.raises(SemanticsError, match="aliasing"):
        S.translate(OnInput().eval(), (4,))
    with pytest.raises(SemanticsError, match="in-place"):
        S.translate(AugmentedAlias().eval(), (4,))


def test_checker_accepts_in_place_ops_on_fresh_values():
    """nn.ReLU(inplace=True) after Conv / BatchNorm / Linear and torchvision's `out += identity; relu(out)`."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn, self.relu = nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(inplace=True)
            self.fc, self.fc2, self.out = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 3)

        def forward(self, x):  # type: ignore[no-untyped-def]
            h = self.relu(self.bn(self.conv(x))).flatten(1)
            identity = self.relu(self.fc(h))
            out = self.fc2(identity)
            out += identity
            out = self.relu(out)
            return self.out(out.clone().relu_())

    torch.manual_seed(5)
    model = Block().eval()
    stages = S.translate(model, (1, 2, 2))
    x = torch.randn(3, 1, 2, 2)
    assert S.check_conformance(model, stages, x)[2]
    with torch.no_grad():
        assert torch.allclose(S.forward(stages, x.double()), copy.deepcopy(model).double()(x.double()), atol=1e-10)


def test_lipschitz_bound_of_several_rows_is_each_rows_bound():
    model, data = zoo.load("digits-softplus-mlp")
    stages = S.translate(model, tuple(data.input_shape))
    rows = torch.randn(5, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for p in (2.0, math.inf):
        lips = S.layer_lipschitz(stages, p)
        together = S.lipschitz_bound(stages, rows, p, lips)
        assert together.shape == (5,)
        for row, value in zip(rows, together):
            assert math.isclose(float(value), S.lipschitz_bound(stages, row, p), rel_tol=1e-14)
    with pytest.raises(ValueError, match="p = 1"):
        S.layer_lipschitz(stages, 1.0)


# ------------------------------------------------------------------ the kept translations (cached_translation)

def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Softplus(), nn.Linear(6, 3)).eval()


def test_a_translation_is_kept_per_model_object_and_input_shape():
    from certify.models.hashing import model_hash

    model = _mlp()
    kept = S.cached_translation(model, (4,), model_hash(model))
    assert S.cached_translation(model, (4,), model_hash(model)) is kept
    twin = copy.deepcopy(model)  # the same function, another object: its own entry
    assert S.cached_translation(twin, (4,), model_hash(twin)) is not kept
    for fresh, cached in zip(S.translate(model, (4,)).mats, kept.stages.mats):
        assert torch.equal(fresh, cached)
    S.clear_translation_cache()
    assert S.cached_translation(model, (4,), model_hash(model)) is not kept


def test_an_edited_model_is_translated_again():
    from certify.models.hashing import model_hash

    model = _mlp()
    kept = S.cached_translation(model, (4,), model_hash(model))
    with torch.no_grad():
        model[0].weight[0, 0] += 0.5  # in place: the same object, another function
    again = S.cached_translation(model, (4,), model_hash(model))
    assert again is not kept
    assert float(again.stages.mats[0][0, 0] - kept.stages.mats[0][0, 0]) == pytest.approx(0.5)
    assert S.check_conformance(model, again.stages, torch.randn(2, 4))[2]
    assert not S.check_conformance(model, kept.stages, torch.randn(2, 4))[2]


@pytest.mark.parametrize("change", ["patched torch", "hook", "training mode"])
def test_a_kept_translation_is_refused_when_translate_would_refuse(change):
    """The refusals that do not depend on the traced graph are checked again on every hit (the hash of a model
    does not see a patched torch class or a global hook)."""
    from certify.models.hashing import model_hash

    model = _mlp()
    fingerprint = model_hash(model)
    S.cached_translation(model, (4,), fingerprint)
    if change == "patched torch":
        original = nn.Linear.forward
        nn.Linear.forward = lambda self, x: original(self, x) * 2.0  # type: ignore[method-assign]
        try:
            with pytest.raises(SemanticsError, match="replaced"):
                S.cached_translation(model, (4,), fingerprint)
        finally:
            nn.Linear.forward = original  # type: ignore[method-assign]
    elif change == "hook":
        handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: o)
        try:
            with pytest.raises(SemanticsError, match="global forward"):
                S.cached_translation(model, (4,), fingerprint)
        finally:
            handle.remove()
    else:
        model[2].train()
        with pytest.raises(SemanticsError, match="training mode"):
            S.cached_translation(model, (4,), fingerprint)
        model.eval()
    S.cached_translation(model, (4,), fingerprint)  # restored: accepted again


def test_a_kept_translation_goes_with_its_model():
    import gc

    from certify.models.hashing import model_hash

    S.clear_translation_cache()
    model = _mlp()
    S.cached_translation(model, (4,), model_hash(model))
    assert len(S._TRANSLATIONS) == 1
    del model
    gc.collect()
    assert len(S._TRANSLATIONS) == 0



def test_far_points_are_the_seeded_draws_of_each_scale():
    """`_far_directions` keeps the draws check_conformance makes for every x: the same numbers as 8 draws per scale
    in turn from the seeded generator, and x + s r g / ||g|| computed from them equals the per-scale formula bit for bit."""
    n, seed, r = 64, 1, 37.5
    gen = torch.Generator().manual_seed(seed)
    draws = [torch.randn(8, n, generator=gen, dtype=torch.float64) for _ in S.FAR_SCALES]
    g, g_norm = S._far_directions(seed, n)
    assert torch.equal(g, torch.cat(draws)) and torch.equal(g_norm, torch.cat([d.norm(dim=1, keepdim=True) for d in draws]))
    flat0 = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    per_scale = torch.cat([flat0 + s * r * d / d.norm(dim=1, keepdim=True) for s, d in zip(S.FAR_SCALES, draws)])
    assert torch.equal(flat0 + (S._FAR_SCALE_ROWS * r) * g / g_norm, per_scale)


@pytest.mark.parametrize("name", ["digits-softplus-mlp", "digits-relu-cnn"])
def test_conformance_with_kept_constants_is_the_conformance_without(name):
    model, data = zoo.load(name)
    stages = S.translate(model, tuple(data.x_test.shape[1:]))
    memo: dict = {}
    for x in (data.x_test[:1], data.x_test[1:2], data.x_test[:3]):
        fresh = S.check_conformance(model, stages, x)
        assert S.check_conformance(model, stages, x, memo=memo) == fresh and fresh[2]
    (absolute, deviation), = memo.values()
    assert deviation == S.deviation_bound(stages) and all(torch.equal(a, w.abs()) for a, w in zip(absolute[0], stages.mats))


def test_conformance_with_kept_constants_follows_a_skip_connection():
    model = _residual_model().eval()
    stages = S.translate(model, (4,))
    assert stages.skips
    memo: dict = {}
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(3))
    assert S.check_conformance(model, stages, x, memo=memo) == S.check_conformance(model, stages, x) == \
        S.check_conformance(model, stages, x, memo=memo)


def test_strip_unwraps_nested_wrappers_and_stops_at_the_module():
    inner = nn.Linear(3, 2).eval()
    assert S._strip(nn.DataParallel(nn.DataParallel(inner)).eval(), check=True) is inner
    assert S._strip(inner, check=True) is inner and S._strip(nn.Sequential(inner)).__class__ is nn.Sequential
    wrapped = nn.DataParallel(inner).eval()
    wrapped.register_forward_hook(lambda *a: None)  # a wrapper's own state is still checked on the way in
    with pytest.raises(SemanticsError, match="wrapper DataParallel has a forward or backward hook"):
        S._strip(wrapped, check=True)


@pytest.mark.parametrize("act", [("relu",), ("leaky_relu", 0.1), ("softplus", 2.0, 20.0), ("sigmoid",), ("tanh",), ("gelu",)])
def test_act_error_is_lipschitz_times_the_error_plus_the_rounding(act):
    z = torch.linspace(-30.0, 30.0, 301, dtype=torch.float64)
    e = torch.rand(301, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1e-9
    h = S.activate(act, z)
    assert torch.equal(S.act_error(act, e, z, h, 2.0**-24), S.lipschitz(act) * e + S.act_rounding(act, z, h, 2.0**-24))
