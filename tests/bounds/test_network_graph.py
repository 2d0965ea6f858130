"""Graph translation (`from_module` on residual, branching, pooling and smooth-activation models, a dropped
softmax head), its conformance check and the softplus deviation with skips."""
import copy
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certify.bounds.activations import Activation
from certify.bounds.network import apply_head, conformance, from_module, rounding_bound
from certify.errors import UnsupportedError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from graph_models import GRAPH_MODELS, REFUSED  # noqa: E402
from translation_models import AugmentedAlias  # noqa: E402

F64 = torch.float64


def _points(shape, seed, scale=1.0, count=16):
    return torch.randn(count, *shape, generator=torch.Generator().manual_seed(seed), dtype=F64) * scale


def _n_output(net, x):
    with torch.no_grad():
        return apply_head(net.head, net.forward(x.reshape(x.shape[0], -1)))


def _model_output(model, x):
    with torch.no_grad():
        return copy.deepcopy(model).double()(x).reshape(x.shape[0], -1)


def _assert_exact(model, net, shape, seed=0):
    """N (through its head) equals the model evaluated in float64, at ordinary and at large inputs."""
    for scale in (1.0, 100.0, 1e4):
        x = _points(shape, seed, scale)
        want, got = _model_output(model, x), _n_output(net, x)
        assert got.shape == want.shape
        assert float((got - want).abs().max()) <= 1e-10 * (1 + float(want.abs().max())), scale


def _built(name):
    build, shape = GRAPH_MODELS[name]
    return build(0), shape


@pytest.mark.parametrize("name", sorted(GRAPH_MODELS))
def test_graph_models_translate_exactly_and_conform(name):
    build, shape = GRAPH_MODELS[name]
    model = build(0)
    net = from_module(model, shape)
    _assert_exact(model, net, shape)
    # the IR's shapes: W_k reads h_k, S_kj reads h_j (j < k), one activation per hidden layer
    sizes = [math.prod(shape)] + [w.shape[0] for w in net.weights[:-1]]
    assert len(net.activations) == net.depth - 1
    for k, w in enumerate(net.weights):
        assert w.shape == (net.biases[k].shape[0], sizes[k])
        for j, s in net.skips.get(k, {}).items():
            assert j < k and s.shape == (w.shape[0], sizes[j])
    assert net.is_chain == (not net.skips)
    assert net.semantics["skips"] == {str(k): sorted(row) for k, row in net.skips.items()}
    x = _points(shape, 1, count=3)
    for dtype in (torch.float32, torch.float64):
        result = conformance(build(0).to(dtype), net, x.to(dtype))
        assert result.passed, (dtype, result.detail)
        assert result.max_deviation <= result.tolerance
    # the tolerance is a rounding bound, not a blanket: at the inputs it stays far below the outputs' scale
    tol = 2 * rounding_bound(net, x, 2.0**-24, torch.float32) + net.deviation
    assert float(tol.max()) < 1e-4 * (1 + float(_model_output(model, x).abs().max()))


@pytest.mark.parametrize("module", [nn.ReLU(), nn.LeakyReLU(0.1), nn.Softplus(), nn.Sigmoid(), nn.Tanh(), nn.GELU(),
                                    nn.GELU(approximate="tanh"), nn.SiLU()], ids=repr)
def test_conformance_rounds_each_activation_as_activations_evaluation_error(module):
    """The conformance bound of an activation is its own `Activation.evaluation_error` in the model's dtype
    (one definition, with the amplification of rounded inner arguments): identity Linear layers around a single
    activation, z from -40 to 40, where torch's float32 kernel stays within the bound."""
    def identity():
        lin = nn.Linear(1, 1)
        lin.weight.data.fill_(1.0)
        lin.bias.data.zero_()
        return lin

    model = nn.Sequential(identity(), module, identity()).eval()
    net = from_module(model, (1,))
    act = net.activations[0]
    z = torch.linspace(-40.0, 40.0, 4001, dtype=F64).float().double().reshape(-1, 1)  # representable in float32
    b32, b64 = rounding_bound(net, z, 2.0**-24, torch.float32), rounding_bound(net, z, 2.0**-53, torch.float64)
    assert bool((b32 >= act.evaluation_error(z, torch.float32)).all())
    assert bool((b64 <= b32).all())
    with torch.no_grad():
        got = model.float()(z.float()).double()
    assert bool(((got - act(z)).abs() <= b32).all())  # without the safety factor 2 of `conformance`


def test_chains_stay_chains_and_graphs_have_skips():
    chains = {"sigmoid-mlp", "tanh-mlp", "gelu-mlp", "gelu-tanh-mlp", "silu-mlp", "leaky-relu-mlp", "sequence-1d",
              "softmax-head", "log-softmax-head", "grouped-dilated-conv"}
    for name, (build, shape) in GRAPH_MODELS.items():
        net = from_module(build(0), shape)
        assert net.is_chain == (name in chains), name


def test_activation_names_and_parameters():
    expected = {"sigmoid-mlp": "sigmoid", "tanh-mlp": "tanh", "gelu-mlp": "gelu", "gelu-tanh-mlp": "gelu_tanh",
                "silu-mlp": "silu", "leaky-relu-mlp": "leaky_relu"}
    for name, act in expected.items():
        assert [a.name for a in from_module(*_built(name)).activations] == [act, act]
    net = from_module(*_built("leaky-relu-mlp"))
    assert net.activations[0].negative_slope == 0.1
    net = from_module(*_built("sequence-1d"))
    assert net.activations == [Activation("leaky_relu", negative_slope=0.1)]


@pytest.mark.parametrize("name", ["softmax-head", "log-softmax-head"])
def test_softmax_head_is_dropped_and_recorded(name):
    model, shape = _built(name)
    net = from_module(model, shape)
    head = "softmax" if name == "softmax-head" else "log_softmax"
    assert net.head == head and net.semantics["head"]["name"] == head and "logits" in net.semantics["head"]["note"]
    x = _points(shape, 2)
    # N is the logits: the model without its last module
    body = copy.deepcopy(model)[:-1].double()
    with torch.no_grad():
        assert torch.allclose(net.forward(x), body(x), atol=1e-12, rtol=0)
    # a twin whose head is another function does not conform to N
    twin = copy.deepcopy(model)
    twin[-1] = nn.LogSoftmax(dim=1) if head == "softmax" else nn.Softmax(dim=1)
    assert not conformance(twin, net, x.float()).passed


def _drop_first_skip(net):
    broken = copy.copy(net)
    k = min(net.skips)
    row = dict(net.skips[k])
    row.pop(min(row))
    broken.skips = {**net.skips, k: row}
    return broken


@pytest.mark.parametrize("name", sorted(GRAPH_MODELS))
def test_mistranslations_fail_conformance(name):
    model, shape = _built(name)
    net = from_module(model, shape)
    x = _points(shape, 3, count=4).float()
    if not net.is_chain:
        result = conformance(model, _drop_first_skip(net), x)
        assert not result.passed and result.max_deviation > result.tolerance, result.detail
    perturbed = copy.copy(net)
    perturbed.weights = list(net.weights)
    k = max(range(net.depth), key=lambda i: float(net.weights[i].abs().max()))
    w = net.weights[k].clone()
    flat = int(w.abs().argmax())
    w.view(-1)[flat] += 0.5 * (1 + abs(float(w.view(-1)[flat])))
    perturbed.weights[k] = w
    result = conformance(model, perturbed, x)
    assert not result.passed, result.detail


@pytest.mark.parametrize("name", ["sigmoid-mlp", "gelu-mlp", "silu-mlp"])
def test_a_wrong_activation_fails_conformance(name):
    """N with tanh in place of the model's activation (or gelu_tanh in place of the exact gelu: they differ
    by up to ~5e-4) is a different function."""
    model, shape = _built(name)
    net = from_module(model, shape)
    swapped = copy.copy(net)
    swapped.activations = [Activation("gelu_tanh" if name == "gelu-mlp" else "tanh")] * 2
    assert not conformance(model, swapped, _points(shape, 3, count=4).float()).passed


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_models_name_the_op(name):
    build, shape, op = REFUSED[name]
    with pytest.raises(UnsupportedError, match=op):
        from_module(build(0), shape)


class _Lambda(nn.Module):
    def __init__(self, fn, *modules):
        super().__init__()
        self.layers = nn.ModuleList(modules)
        self.fn = fn

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.fn(self, x)


def _fc(n_in=4, n_out=4):
    return nn.Linear(n_in, n_out)


REFUSALS = [
    ("x * x", lambda s, x: s.layers[0](x) * x, "mul"),
    ("x / f(x)", lambda s, x: x / s.layers[0](x), "div"),
    ("2 / f(x)", lambda s, x: 2.0 / s.layers[0](x), "division by an input-dependent value"),
    ("a constant times a constant", lambda s, x: s.layers[0](x) + s.layers[0].bias * 2.0, "constants only"),
    ("a constant broadcast over the batch", lambda s, x: s.layers[0](x) + s.layers[0].weight, "batch"),
    ("torch.max over a dim", lambda s, x: torch.max(s.layers[0](x), dim=1, keepdim=True)[0], "max"),
    ("indexing", lambda s, x: s.layers[0](x)[:, :2], "getitem"),
    ("softmax inside", lambda s, x: s.layers[0](torch.softmax(x, dim=1)), "softmax is modelled only as the final output"),
    ("softmax over the batch", lambda s, x: torch.softmax(s.layers[0](x), dim=0), "class dimension"),
    ("mean over everything", lambda s, x: s.layers[0](x).mean(), "batch"),
    ("permute the batch", lambda s, x: s.layers[0](x).permute(1, 0), "batch"),
    ("squeeze without dim", lambda s, x: s.layers[0](x).unsqueeze(1).squeeze(), "dim"),
    ("F.linear with a parameter", lambda s, x: F.linear(x, s.layers[0].weight), "linear"),
    ("in-place relu read again", lambda s, x: (lambda h: h + h.relu_())(s.layers[0](x)), "in place"),
    ("in-place relu of a viewed value", lambda s, x: (lambda h: h.view(h.size(0), 2, 2).flatten(1) + h.relu_())(s.layers[0](x)), "in place"),
    ("F.dropout in training", lambda s, x: F.dropout(s.layers[0](x), 0.5, training=True), "training"),
    ("max_pool2d returning indices", lambda s, x: F.max_pool2d(s.layers[0](x).view(-1, 1, 2, 2), 2, return_indices=True)[0],
     "max_pool2d_with_indices"),
    ("exp", lambda s, x: torch.exp(s.layers[0](x)), "exp"),
    ("hardtanh", lambda s, x: F.hardtanh(s.layers[0](x)), "hardtanh"),
    ("two outputs", lambda s, x: (s.layers[0](x), x), "returns"),
]


@pytest.mark.parametrize("label,fn,op", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_unsupported_graph_ops_are_refused_naming_the_op(label, fn, op):
    torch.manual_seed(0)
    model = _Lambda(fn, _fc()).eval()
    with pytest.raises(UnsupportedError, match=op):
        from_module(model, (4,))


class _Constants(nn.Module):
    """Constant tensors read with get_attr (a buffer and a parameter) in add / sub / mul / div, python numbers,
    torch.add with alpha, an in-place relu whose input is not read again, transpose / unsqueeze / squeeze,
    sum over a dimension and F.gelu(approximate='tanh') / x.sigmoid() / F.leaky_relu / F.silu."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.out = nn.Linear(6, 3)
        self.register_buffer("scale", torch.linspace(0.5, 2.0, 6))
        self.shift = nn.Parameter(torch.linspace(-1.0, 1.0, 6))

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = self.fc(x) * self.scale + self.shift
        h = torch.add(h, F.gelu(h, approximate="tanh"), alpha=0.5) - 0.25
        h = h.unsqueeze(2).transpose(1, 2).squeeze(1)
        g = (2.0 - h).relu_()
        h = g / self.scale + h.sigmoid() + F.leaky_relu(h, 0.3) + F.silu(h)
        h = h.unsqueeze(2).sum(dim=2)
        return self.out(h / 3)


class _TorchvisionBlock(nn.Module):
    """torchvision's BasicBlock idiom: ReLU(inplace=True), `out += identity`, a 1x1 strided downsample."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.down = nn.Sequential(nn.Conv2d(2, 4, 1, stride=2, bias=False), nn.BatchNorm2d(4))
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.fc = nn.Linear(36, 3)

    def forward(self, x):  # type: ignore[no-untyped-def]
        identity = self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        out += identity
        out = self.relu(out)
        return self.fc(torch.flatten(self.pool(out), 1))


class _Conv1dModes(nn.Module):
    """Conv1d with every padding mode and dilation (branches concatenated), AvgPool1d without padded counts,
    AdaptiveAvgPool2d with windows of unequal sizes, negation and scaling in a concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(2, 2, 3, padding=2, dilation=2, padding_mode=m) for m in ("zeros", "reflect", "replicate", "circular")
        )
        self.pool = nn.AvgPool1d(3, stride=2, padding=1, count_include_pad=False)
        self.adapt = nn.AdaptiveAvgPool2d((3, 2))
        self.fc = nn.Linear(18, 3)

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = torch.cat([torch.tanh(c(x)) for c in self.convs], dim=1)  # [8, 9]
        h = self.adapt(self.pool(h).unsqueeze(1)).flatten(1)  # [8, 5] -> [1, 3, 2] -> [6]
        return self.fc(torch.cat([h, -h, 2 * h], dim=1))


EXTRA = {
    "constants": (_Constants, (6,)),
    "torchvision-block": (_TorchvisionBlock, (2, 8, 8)),
    "conv1d-modes": (_Conv1dModes, (2, 9)),
}


def _seeded_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("name", sorted(EXTRA))
def test_more_graph_idioms_translate_exactly_and_conform(name):
    cls, shape = EXTRA[name]
    torch.manual_seed(4)
    model = _seeded_bn(cls())
    net = from_module(model, shape)
    _assert_exact(model, net, shape)
    for dtype in (torch.float32, torch.float64):
        assert conformance(copy.deepcopy(model).to(dtype), net, _points(shape, 5, count=3).to(dtype)).passed


MAXPOOLS = [
    (nn.MaxPool2d(2), (2, 6, 6)),
    (nn.MaxPool2d(3, stride=2, padding=1), (1, 7, 7)),
    (nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (1, 8, 8)),
    (nn.MaxPool2d(2, stride=2, ceil_mode=True), (1, 5, 5)),
    (nn.MaxPool2d((2, 3), stride=(1, 2), padding=(1, 1), dilation=(2, 1)), (2, 6, 7)),
    (nn.MaxPool2d(3, stride=1, padding=1, dilation=2, ceil_mode=True), (1, 6, 5)),
    (nn.MaxPool2d(5, stride=3), (1, 5, 8)),
    (nn.MaxPool1d(3, stride=2, padding=1), (3, 8)),
    (nn.MaxPool1d(4, stride=3, padding=2, dilation=1, ceil_mode=True), (2, 10)),
    (nn.MaxPool1d(2, dilation=3), (1, 9)),
]


@pytest.mark.parametrize("pool,shape", MAXPOOLS, ids=[f"{p}-{s}" for p, s in MAXPOOLS])
def test_maxpool_is_exact_with_padding_ceil_mode_and_dilation(pool, shape):
    """N = max over each window exactly (padded entries excluded: an all-negative input would expose zeros),
    in ceil(log2 window) ReLU layers."""
    net = from_module(nn.Sequential(pool, nn.Flatten()).eval(), shape)
    kernel = pool.kernel_size if isinstance(pool.kernel_size, tuple) else (pool.kernel_size,) * (len(shape) - 1)
    assert len(net.activations) == math.ceil(math.log2(math.prod(kernel)))
    assert all(a.name == "relu" for a in net.activations)
    for x in (_points(shape, 6), -_points(shape, 7).abs() - 1.0, _points(shape, 8, 1e6)):
        with torch.no_grad():
            want = pool.double()(x).reshape(x.shape[0], -1)
        got = net.forward(x.reshape(x.shape[0], -1))
        assert float((got - want).abs().max()) <= 1e-15 * (1 + float(want.abs().max()))
    assert conformance(pool.float(), net, _points(shape, 9, count=2).float()).passed


class _SoftplusResidual(nn.Module):
    """z = W2 softplus(W1 x) + x, then softplus and a head: the torch thresholds bite where beta * z > 20."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(3, 5), nn.Linear(5, 3), nn.Linear(3, 2)

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = x + self.fc2(F.softplus(self.fc1(x), beta=2.0))
        return self.out(F.softplus(h))


def test_softplus_deviation_with_a_residual_bounds_torchs_thresholded_model():
    torch.manual_seed(8)
    model = _SoftplusResidual().eval()
    net = from_module(model, (3,))
    assert not net.is_chain and list(net.skips) == [1] and torch.equal(net.skips[1][0], torch.eye(3, dtype=F64))
    # the recurrence by hand: d_h1 = g1, d_z1 = |W2| g1 (the skip reads the exact input: 0), d_h2 = d_z1 + g2,
    # logits |W3| d_h2
    g1, g2 = math.log1p(math.exp(-20.0)) / 2.0, math.log1p(math.exp(-20.0))
    w2, w3 = model.fc2.weight.detach().double().abs(), model.out.weight.detach().double().abs()
    expected = float((w3 @ (w2 @ torch.full((5,), g1, dtype=F64) + g2)).max())
    assert expected <= net.deviation <= expected * (1 + 1e-12)
    assert net.semantics["deviation"] == net.deviation
    # where the thresholds bite, torch's thresholded model (float64) differs from N, within the deviation
    x = _points((3,), 10, 30.0, count=256)
    z0, z1 = net.pre_activations(x)[:2]
    bites = ((2.0 * z0 > 20.0).any(dim=1) | (z1 > 20.0).any(dim=1)) & (z0 > -50).all(dim=1)
    assert int(bites.sum()) >= 10
    gap = (_model_output(model, x) - net.forward(x)).abs().max(dim=1).values
    assert float(gap[bites].max()) > 0  # the switch is visible in float64
    assert float(gap.max()) <= net.deviation
    assert conformance(model, net, x[:4].float()).passed
    assert conformance(model.double(), net, x[:4]).passed


def test_deviation_through_a_skip_and_a_lipschitz_activation():
    """A residual that adds a softplus output to a sigmoid branch: the gap reaches the logits both through W
    and through the skip, and through the sigmoid times its Lipschitz constant 1/4."""

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.out = nn.Linear(2, 4), nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):  # type: ignore[no-untyped-def]
            s = F.softplus(self.a(x), beta=1.0, threshold=14.0)
            return self.out(torch.sigmoid(self.b(s)) + s)

    torch.manual_seed(9)
    model = Mixed().eval()
    net = from_module(model, (2,))
    g = math.log1p(math.exp(-14.0))
    wb, wo = model.b.weight.detach().double().abs(), model.out.weight.detach().double().abs()
    d_s = torch.full((4,), g, dtype=F64)
    expected = float((wo @ (0.25 * (wb @ d_s)) + wo @ d_s).max())
    assert expected <= net.deviation <= expected * (1 + 1e-12)
    x = _points((2,), 11, 20.0, count=512)
    gap = (_model_output(model, x) - net.forward(x)).abs().max()
    assert 0 < float(gap) <= net.deviation


def test_semantics_describe_the_graph():
    model, shape = _built("resnet-block")
    net = from_module(model, shape)
    sem = net.semantics
    assert sem["layers"] == [w.shape[0] for w in net.weights]
    assert sem["skips"] == {str(k): sorted(row) for k, row in net.skips.items()} and sem["skips"]
    assert sem["head"] is None and sem["input_shape"] == list(shape)
    assert any("add" in op for op in sem["ops"]) and any("(relu)" in op for op in sem["ops"])
    assert [a["name"] for a in sem["activations"]] == [a.name for a in net.activations]
    pooled = from_module(*_built("maxpool-cnn"))
    assert any("MaxPool2d" in op for op in pooled.semantics["ops"])
    assert len(pooled.activations) == 1 + 2  # the conv's ReLU and the 2x2 tournament


def test_forward_and_pre_activations_with_skips_follow_the_equations():
    model, shape = _built("branches")
    net = from_module(model, shape)
    x = _points(shape, 12).reshape(16, -1)
    hs, zs = [x], []
    for k in range(net.depth):
        z = hs[k] @ net.weights[k].T + net.biases[k] + sum((hs[j] @ s.T for j, s in net.skips.get(k, {}).items()), torch.zeros(1, dtype=F64))
        zs.append(z)
        if k < len(net.activations):
            hs.append(net.activations[k](z))
    assert all(torch.allclose(a, b, atol=1e-14, rtol=0) for a, b in zip(net.pre_activations(x), zs))
    assert torch.equal(net.forward(x), net.pre_activations(x)[-1])
    moved = net.to("cpu")
    assert moved.skips.keys() == net.skips.keys() and moved.head == net.head and moved.ops is net.ops


@pytest.mark.parametrize("name", sorted(GRAPH_MODELS))
def test_layers_match_the_checkers_translation_unit_for_unit(name):
    """The checker (certify.certificates.semantics, written independently) builds the same layers, skips and
    unit order - max pooling included - so per-unit data of a certificate means the same unit on both sides."""
    from certify.certificates import semantics as S

    model, shape = _built(name)
    net = from_module(model, shape)
    stages = S.translate(model, shape)
    assert [tuple(m.shape) for m in stages.mats] == [tuple(w.shape) for w in net.weights]
    assert {k: sorted(row) for k, row in stages.skips.items()} == {k: sorted(row) for k, row in net.skips.items()}
    assert [a[0] for a in stages.acts] == [a.name for a in net.activations] and stages.head == net.head
    pairs = list(zip(stages.mats, net.weights)) + list(zip(stages.biases, net.biases))
    pairs += [(stages.skips[k][j], s) for k, row in net.skips.items() for j, s in row.items()]
    for theirs, ours in pairs:
        assert torch.allclose(torch.as_tensor(theirs, dtype=F64), ours, atol=1e-12, rtol=0)


def test_x_times_sigmoid_x_is_one_silu_layer():
    """SiLU as ONNX exports it (Sigmoid then Mul by the same input) is one SiLU activation, in either operand
    order; when the sigmoid is also read elsewhere, or reads another node computing the same value, the
    product stays a product of two values and is refused."""
    for fn in (lambda s, x: s.layers[1]((lambda h: h * torch.sigmoid(h))(s.layers[0](x))),
               lambda s, x: s.layers[1]((lambda h: h.sigmoid() * h)(s.layers[0](x)))):
        torch.manual_seed(1)
        model = _Lambda(fn, _fc(4, 5), _fc(5, 3)).eval()
        net = from_module(model, (4,))
        assert net.is_chain and [a.name for a in net.activations] == ["silu"]
        _assert_exact(model, net, (4,))
        assert conformance(model, net, _points((4,), 13, count=3).float()).passed
    # each torch.sigmoid call is its own node: the first fuses into the product, the second stays a sigmoid
    torch.manual_seed(1)
    twice = _Lambda(lambda s, x: (lambda h: s.layers[1](h * torch.sigmoid(h)) + torch.sigmoid(h).sum(1, keepdim=True))(s.layers[0](x)),
                    _fc(4, 5), _fc(5, 3)).eval()
    net = from_module(twice, (4,))
    assert [a.name for a in net.activations] == ["silu", "sigmoid"]
    _assert_exact(twice, net, (4,))
    refused = [
        lambda s, x: (lambda h, g: h * g + g)(s.layers[0](x), torch.sigmoid(s.layers[0](x))),  # sigmoid read twice
        lambda s, x: s.layers[0](x) * torch.sigmoid(s.layers[0](x)),  # two Linear calls: two different nodes
    ]
    for fn in refused:
        torch.manual_seed(1)
        with pytest.raises(UnsupportedError, match="mul"):
            from_module(_Lambda(fn, _fc(4, 5)).eval(), (4,))


class _RandomGraph(nn.Module):
    """A seeded random DAG over a growing list of values (the input first): Linear of any earlier value, an
    activation of any earlier value, a + c * b of two earlier values of equal width, their concatenation,
    and a final Linear of the last value concatenated with a random earlier one - fx unrolls the instruction
    list into the graph."""

    def __init__(self, seed: int, steps: int = 9) -> None:
        super().__init__()
        self.acts = nn.ModuleList([nn.ReLU(), nn.LeakyReLU(0.2), nn.Softplus(beta=2.0), nn.Sigmoid(), nn.Tanh(), nn.GELU(), nn.SiLU()])
        gen = torch.Generator().manual_seed(seed)
        pick = lambda n: int(torch.randint(n, (1,), generator=gen))  # noqa: E731
        widths, self.program, self.linears = [4], [], nn.ModuleList()
        for _ in range(steps):
            kind = ("linear", "act", "add", "cat")[pick(4)]
            i = pick(len(widths))
            same = [j for j, w in enumerate(widths) if w == widths[i] and j != i]
            if kind == "linear" or (kind == "add" and not same) or (kind == "cat" and widths[i] + widths[-1] > 12):
                self.linears.append(nn.Linear(widths[i], 2 + pick(5)))
                self.program.append(("linear", i, len(self.linears) - 1))
                widths.append(self.linears[-1].out_features)
            elif kind == "act":
                self.program.append(("act", i, pick(len(self.acts))))
                widths.append(widths[i])
            elif kind == "add":
                self.program.append(("add", i, same[pick(len(same))], float(torch.randn(1, generator=gen))))
                widths.append(widths[i])
            else:
                self.program.append(("cat", i, len(widths) - 1))
                widths.append(widths[i] + widths[-1])
        self.tail = pick(len(widths) - 1)
        self.out = nn.Linear(widths[-1] + widths[self.tail], 3)

    def forward(self, x):  # type: ignore[no-untyped-def]
        values = [x]
        for step in self.program:
            if step[0] == "linear":
                values.append(self.linears[step[2]](values[step[1]]))
            elif step[0] == "act":
                values.append(self.acts[step[2]](values[step[1]]))
            elif step[0] == "add":
                values.append(values[step[1]] + step[3] * values[step[2]])
            else:
                values.append(torch.cat([values[step[1]], values[step[2]]], dim=1))
        return self.out(torch.cat([values[-1], values[self.tail]], dim=1))


@pytest.mark.parametrize("seed", range(12))
def test_random_graphs_translate_exactly_conform_and_catch_a_dropped_skip(seed):
    torch.manual_seed(seed)
    model = _RandomGraph(seed).eval()
    net = from_module(model, (4,))
    _assert_exact(model, net, (4,), seed)
    x = _points((4,), seed, count=3)
    for dtype in (torch.float32, torch.float64):
        assert conformance(copy.deepcopy(model).to(dtype), net, x.to(dtype)).passed
    if not net.is_chain:  # dead code makes no layers, so every skip reaches the logits
        broken = _drop_first_skip(net)
        probe = _points((4,), seed + 100, 10.0, count=64)
        assert float((broken.forward(probe.reshape(64, -1)) - net.forward(probe.reshape(64, -1))).abs().max()) > 1e-3
        assert not conformance(model, broken, x.float(), probe.float()).passed


def test_dead_code_makes_no_layers_but_its_in_place_ops_are_checked():
    """fx keeps values the output never reads: they make no layers (a dead GELU branch must not reach the
    bounds), while an in-place op in dead code still refuses when its input is read elsewhere."""

    class Dead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.out = nn.Linear(4, 5), nn.Linear(5, 3)

        def forward(self, x):  # type: ignore[no-untyped-def]
            h = torch.relu(self.fc(x))
            unused = F.gelu(self.fc(x) * 2.0) + h  # noqa: F841 - dead code, as users leave it
            return self.out(h)

    torch.manual_seed(2)
    model = Dead().eval()
    net = from_module(model, (4,))
    assert net.is_chain and [a.name for a in net.activations] == ["relu"]
    _assert_exact(model, net, (4,))

    class DeadMutation(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.out = nn.Linear(4, 5), nn.Linear(5, 3)

        def forward(self, x):  # type: ignore[no-untyped-def]
            h = self.fc(x)
            h.relu_()  # its result is never read, but h is: eager runs out(relu(h))
            return self.out(h)

    with pytest.raises(UnsupportedError, match="in place"):
        from_module(DeadMutation().eval(), (4,))


class _MnistExample(nn.Module):
    """The PyTorch MNIST example's forward (functional max pooling, dropout modules, flatten, log_softmax),
    scaled down; plus F.avg_pool2d / F.adaptive_avg_pool1d / F.dropout(training=False)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 3, 3, 1), nn.Conv2d(3, 4, 3, 1)
        self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(0.5)
        self.fc1, self.fc2 = nn.Linear(4 * 2 * 2 + 4, 16), nn.Linear(16, 10)

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        pooled = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)  # [4, 2, 2]
        x = F.max_pool2d(x, 2, ceil_mode=True)  # [4, 2, 2]
        x = self.dropout1(x + pooled)
        x = torch.cat([torch.flatten(x, 1), F.adaptive_avg_pool1d(x.flatten(2), 1).flatten(1)], dim=1)
        x = F.dropout(F.relu(self.fc1(x)), 0.5, training=self.training)
        x = self.fc2(self.dropout2(x))
        return F.log_softmax(x, dim=1)


def test_functional_pooling_and_dropout_as_in_the_pytorch_mnist_example():
    torch.manual_seed(3)
    model = _MnistExample().eval()
    net = from_module(model, (1, 8, 8))
    assert net.head == "log_softmax" and not net.is_chain
    assert [a.name for a in net.activations] == ["relu"] * 5  # conv1, conv2, 2 tournament rounds, fc1
    _assert_exact(model, net, (1, 8, 8))
    assert conformance(model, net, _points((1, 8, 8), 14, count=3).float()).passed


# --- in-place ops on aliases ----------------------------------------------------------------------------

def _both_refuse(model, shape, match):
    """Both translations (the issuer's and the checker's, written independently) refuse the model."""
    from certify.certificates import semantics

    with pytest.raises(UnsupportedError, match=match):
        from_module(model, shape)
    with pytest.raises(UnsupportedError, match=match):
        semantics.translate(model, shape)


def _both_translate(model, shape, x):
    from certify.certificates import semantics

    net = from_module(model, shape)
    assert conformance(model, net, x).passed
    stages = semantics.translate(model, shape)
    assert semantics.check_conformance(model, stages, x)[2]
    return net


# values that may share storage with z (a view, or z itself): an in-place op on any of them mutates z
ALIASES = {
    "view": lambda s, z: z.view(z.size(0), 4),
    "reshape": lambda s, z: z.reshape(z.size(0), 2, 2),
    "flatten(1)": lambda s, z: z.flatten(1),
    "torch.flatten": lambda s, z: torch.flatten(z, 1),
    "unsqueeze": lambda s, z: z.unsqueeze(1),
    "transpose": lambda s, z: z.unsqueeze(2).transpose(1, 2),
    "permute": lambda s, z: z.unsqueeze(2).permute(0, 2, 1),
    "squeeze": lambda s, z: z.unsqueeze(1).squeeze(1),
    "expand": lambda s, z: z.unsqueeze(1).expand(-1, 2, -1),
    "slicing": lambda s, z: z[:, :2],
    "contiguous": lambda s, z: z.contiguous(),
    "nn.Identity": lambda s, z: s.ident(z),
    "nn.Dropout (eval)": lambda s, z: s.drop(z),
    "nn.Flatten": lambda s, z: s.flat(z),
    "F.dropout(training=False)": lambda s, z: F.dropout(z, 0.5, training=False),
}
MUTATIONS = {
    "relu_": lambda s, a: a.relu_(),
    "torch.relu_": lambda s, a: torch.relu_(a),
    "F.relu(inplace=True)": lambda s, a: F.relu(a, inplace=True),
    "nn.ReLU(inplace=True)": lambda s, a: s.act(a),
    "F.leaky_relu(inplace=True)": lambda s, a: F.leaky_relu(a, 0.1, True),
    "add_": lambda s, a: a.add_(-5.0),
    "mul_": lambda s, a: a.mul_(-1.0),
    "sub_": lambda s, a: a.sub_(1.0),
    "F.dropout(inplace=True)": lambda s, a: F.dropout(a, 0.5, False, True),
}


class _Alias(nn.Module):
    """z = fc(x); alias(z) mutated in place; the output reads z (dead: the mutation's result is unused, as in
    the attack; live: it is used too)."""

    def __init__(self, alias, mutate, live=False) -> None:
        super().__init__()
        self.fc, self.out = nn.Linear(4, 4), nn.Linear(4, 3)
        self.ident, self.drop, self.flat, self.act = nn.Identity(), nn.Dropout(0.5), nn.Flatten(), nn.ReLU(inplace=True)
        self.alias, self.mutate, self.live = alias, mutate, live

    def forward(self, x):  # type: ignore[no-untyped-def]
        z = self.fc(x)
        m = self.mutate(self, self.alias(self, z))
        y = self.out(z)
        return y + m.flatten(1).sum(dim=1, keepdim=True) if self.live else y


@pytest.mark.parametrize("alias", sorted(ALIASES))
@pytest.mark.parametrize("mutate", sorted(MUTATIONS))
def test_in_place_op_on_an_alias_is_refused_by_both_translations(alias, mutate):
    """An in-place op whose input may be a view of (or the same tensor as) another value mutates that value in
    eager mode, which the traced graph does not show: refused (aliasing), dead or live. Indexing and expand
    are refused as ops of their own where they are live."""
    for live in (False, True):
        model = _Alias(ALIASES[alias], MUTATIONS[mutate], live).eval()
        match = "alias|indexing|getitem|expand" if alias in ("slicing", "expand") else "alias"
        _both_refuse(model, (4,), match)


@pytest.mark.parametrize("mutate", sorted(MUTATIONS))
def test_in_place_op_on_the_model_input_is_refused(mutate):
    class OnInput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.act = nn.Linear(4, 3), nn.ReLU(inplace=True)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.fc(MUTATIONS[mutate](self, x))

    _both_refuse(OnInput().eval(), (4,), "alias")


def test_in_place_ops_on_fresh_values_still_translate_in_both():
    torch.manual_seed(11)
    model = _seeded_bn(_FreshNoPool())
    x = _points((1, 2, 2), 3, count=4).float()
    net = _both_translate(model, (1, 2, 2), x)
    _assert_exact(model, net, (1, 2, 2))
    torch.manual_seed(4)
    block = _seeded_bn(_TorchvisionBlock())
    _both_translate(block, (2, 8, 8), _points((2, 8, 8), 5, count=2).float())


class _FreshNoPool(nn.Module):
    """In-place ops on fresh values only: ReLU(inplace=True) after Conv / BatchNorm / Linear, `out +=
    identity` then ReLU(inplace=True) (torchvision), relu_ of a clone (z itself is not mutated), a chain
    of in-place ops on an out-of-place difference, tanh_ of torch.cat, F.relu(inplace=True) after pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(inplace=True)
        self.fc, self.fc2, self.out = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(10, 3)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = self.act(self.bn(self.conv(x)))  # [2, 2, 2]
        pooled = F.relu(self.pool(h), inplace=True).flatten(1)  # [2]
        z = self.fc(h.flatten(1))
        out = self.fc2(z)
        out += z
        out = self.act(out)
        c = z.clone().relu_()
        s = (z - 1.0).add_(2.0).mul_(0.5)
        t = torch.cat([z, c], dim=1).tanh_().reshape(z.size(0), 2, 8).sum(dim=1)
        return self.out(torch.cat([out + c + s + t, pooled], dim=1))


class _AttackAlias(nn.Module):
    """The attack: ReLU(inplace=True) on z.contiguous() (z itself in eager mode) mutates z, which the head
    reads; z < 0 only on a slab 0.3 < x0 < 0.302 that conformance points miss. Eager reads relu(z)."""

    def __init__(self, live=False) -> None:
        super().__init__()
        a, d = 0.3, 1e-3
        self.fc1, self.fc2, self.fc2b = nn.Linear(2, 3), nn.Linear(3, 1), nn.Linear(3, 1)
        self.relu, self.act, self.head, self.use = nn.ReLU(), nn.ReLU(inplace=True), nn.Linear(2, 2), nn.Linear(1, 2)
        self.live = live
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, 0], [1.0, 0], [1.0, 0]]))
            self.fc1.bias.copy_(torch.tensor([-a, -a - d, -a - 2 * d]))
            w = torch.tensor([[1.0, -2.0, 1.0]]) * (-2.0 / d)
            for fc in (self.fc2, self.fc2b):
                fc.weight.copy_(w)
                fc.bias.fill_(1.0)
            self.head.weight.copy_(torch.tensor([[-1.0, 1.0], [0.0, 0.0]]))
            self.head.bias.copy_(torch.tensor([0.1, 0.0]))
            self.use.weight.zero_()
            self.use.bias.zero_()

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = self.relu(self.fc1(x))
        z = self.fc2(h)
        if self.live:
            out = self.act(z.flatten(1))  # used: alias_live
        else:
            self.act(z.contiguous())  # result unused: alias_model
        y = self.head(torch.cat([z, self.fc2b(h)], dim=1))
        return y + self.use(out) if self.live else y


@pytest.mark.parametrize("live", [False, True], ids=["alias_model", "alias_live"])
def test_attack_alias_models_are_refused_by_both_translations(live):
    model = _AttackAlias(live).eval()
    with torch.no_grad():  # the model as run: y0 drops by ~1 on the slab (z mutated), which N would not show
        y = model(torch.tensor([[0.301, 0.0], [0.0, 0.0]]))
    assert abs(float(y[0, 0] - y[1, 0])) > 0.5
    _both_refuse(model, (2,), "alias")


# --- dropped softmax head: the carried logit error -------------------------------------------------------

def _attack_softmax_head() -> nn.Sequential:
    a, d = 0.3, 1e-3
    m = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2), nn.Softmax(dim=1))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[1.0, 0], [1.0, 0], [1.0, 0]]))
        m[0].bias.copy_(torch.tensor([-a, -a - d, -a - 2 * d]))
        m[2].weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 1.0]]) * torch.tensor([[1.0], [4.0 / d]]))
        m[2].bias.copy_(torch.tensor([3.0, 2.0]))
    return m.eval()


def test_softmax_head_carries_the_largest_logit_error_to_every_output():
    """softmax's output j depends on every logit, so a logit's rounding reaches every output: the carried
    bound is L_head * max_i err_i, not L_head * err_j. The float32 attack model (logit 0 a constant, logit 1
    with weights 4e3) conforms on both sides; a mis-translation under the head still fails."""
    from certify.certificates import semantics

    model = _attack_softmax_head().float()
    body = nn.Sequential(*list(model)[:-1]).eval()
    x = torch.zeros(1, 2)
    net = from_module(model, (2,))
    assert net.head == "softmax"
    result = conformance(model, net, x)
    assert result.passed, result.detail
    assert conformance(body, from_module(body, (2,)), x).passed
    stages = semantics.translate(model, (2,))
    assert semantics.check_conformance(model, stages, x)[2]
    # the bound: every output gets L_head * (largest logit error) at the point
    points = torch.cat([x.double(), torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=F64) * 100])
    with_head = rounding_bound(net, points, 2.0**-24, torch.float32)
    logits = rounding_bound(from_module(body, (2,)), points, 2.0**-24, torch.float32)
    assert bool((with_head >= 0.5 * logits.amax(dim=1, keepdim=True)).all())
    # a mis-translation under the head (logit 1's bias off by 0.5) fails
    broken = from_module(model, (2,))
    broken.biases[-1] = broken.biases[-1] + torch.tensor([0.0, 0.5], dtype=F64)
    assert not conformance(model, broken, x).passed
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        wrong[2].bias.add_(torch.tensor([0.0, 0.5]))
    assert not conformance(wrong, net, x).passed
    assert not semantics.check_conformance(wrong, stages, x)[2]


# `y += c` on a tensor is in place; a plain fx Proxy would record it as y + c (out of place), hiding the write
AUGMENTED = {
    "python alias y = z; y += 1": lambda s, z: (lambda y: (y.__iadd__(1.0), torch.cat([z, y], dim=1))[1])(z),
    "view then *=": lambda s, z: _augment_view(s, z),
    "x.data += 1": lambda s, z: _augment_data(s, z),
    "torch.add(out=z)": lambda s, z: (torch.add(z, 1.0, out=z), torch.cat([z, z], dim=1))[1],
    "torch.cat(out=z)": lambda s, z: (torch.cat([z], dim=1, out=z), torch.cat([z, z], dim=1))[1],
}


def _augment_view(s, z):  # type: ignore[no-untyped-def]
    v = z.view(z.size(0), 4)
    v *= -1.0
    return torch.cat([z, z], dim=1)


def _augment_data(s, z):  # type: ignore[no-untyped-def]
    v = z.data
    v += 1.0
    return torch.cat([z, z], dim=1)


class _Augmented(nn.Module):
    def __init__(self, body) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.fc, self.out, self.body = nn.Linear(4, 4), nn.Linear(8, 3), body

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.out(self.body(self, self.fc(x)))


@pytest.mark.parametrize("name", sorted(AUGMENTED))
def test_augmented_assignment_and_out_writes_on_shared_values_are_refused_by_both(name):
    _both_refuse(_Augmented(AUGMENTED[name]).eval(), (4,), "in place|in-place|alias|out=|other ops read|getattr")


def test_augmented_assignment_is_traced_as_in_place():
    _both_refuse(AugmentedAlias().eval(), (4,), "in place|other ops read")

    class Fresh(nn.Module):  # torchvision: out += identity on a fresh value, then more in-place ops on it
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.out = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)

        def forward(self, x):  # type: ignore[no-untyped-def]
            out = self.a(x)
            out += self.b(x)
            out *= 0.5
            out = torch.relu_(out)
            return self.out(out)

    torch.manual_seed(12)
    model = Fresh().eval()
    net = _both_translate(model, (4,), _points((4,), 1, count=3).float())
    _assert_exact(model, net, (4,))


def zero_negatives(t):  # type: ignore[no-untyped-def]
    """A user function wrapped as an fx leaf that mutates its argument (the second attacker's fxwrap)."""
    t.clamp_(min=0)
    return t


torch.fx.wrap("zero_negatives")


class _DeadMutation(nn.Module):
    """An unused op certify does not know, that modifies z in place: the model's output changes although the
    traced graph's output does not depend on the op."""

    def __init__(self, variant: str) -> None:
        super().__init__()
        self.fc1, self.fc2, self.variant = nn.Linear(2, 2), nn.Linear(2, 2), variant

    def forward(self, x):  # type: ignore[no-untyped-def]
        z = self.fc1(x)
        if self.variant == "aten":
            torch.ops.aten.relu_.default(z)
        else:
            zero_negatives(z)
        return self.fc2(z)


@pytest.mark.parametrize("variant", ["aten", "fxwrap"])
def test_an_unused_unknown_op_is_refused_since_it_may_mutate_its_input(variant: str) -> None:
    model = _DeadMutation(variant).eval()
    with pytest.raises(UnsupportedError, match="not modelled"):
        from_module(model, (2,))
