"""certify.models.torchscript: a TorchScript file (scripted or traced, saved and loaded) is rebuilt as an fx
GraphModule that computes exactly what the ScriptModule computes, with every parameter kept (softplus beta
and threshold, GELU's approximation: what an ONNX export would lose); the translation of the rebuilt graph
is the eager model's, the conformance check compares the ScriptModule itself (so a wrong rebuild fails it),
what cannot be rebuilt is refused naming the op, and `certify explain` / `certify verify` /
`certify verify-property` work on a TorchScript file from the CLI."""
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mnistfc_data as M  # noqa: E402

from certify.bounds.network import conformance, from_module  # noqa: E402
from certify.certificates import semantics as S  # noqa: E402
from certify.cli import main  # noqa: E402
from certify.errors import EXIT_OK, UnsupportedError  # noqa: E402
from certify.models import zoo  # noqa: E402
from certify.models.spec import load_model  # noqa: E402
from certify.models.torchscript import to_graph_module, translatable  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")


class Residual(nn.Module):
    """Normalisation by buffers, conv + BN + ReLU, a residual add, max pooling, x.view(x.size(0), -1), a
    log-softmax head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8, 3)
        self.register_buffer("mean", torch.tensor(0.5))

    def forward(self, x):
        x = (x - self.mean) / 0.25
        h = F.relu(self.bn(self.conv(x)))
        h = self.pool(h + x)
        return F.log_softmax(self.fc(h.view(h.size(0), -1)), dim=1)


class Smooth(nn.Module):
    """Every smooth activation with non-default arguments, add / sub / rsub with alpha, average pooling,
    cat, mean, transpose."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3, stride=2, dilation=1, groups=2)
        self.pool = nn.AvgPool1d(2, count_include_pad=False, padding=1)
        self.adaptive = nn.AdaptiveAvgPool1d(2)
        self.fc = nn.Linear(12, 5)
        self.acts = nn.ModuleList([nn.Softplus(beta=2.0, threshold=15.0), nn.GELU(approximate="tanh"), nn.SiLU(),
                                   nn.LeakyReLU(0.2), nn.Sigmoid(), nn.Tanh()])

    def forward(self, x):
        x = torch.rsub(x, 1.0, alpha=2.0) - torch.add(x, x, alpha=0.5) + torch.sub(x, 0.25, alpha=3.0)
        h = self.pool(self.conv(x))
        h = torch.cat([self.adaptive(h).flatten(1), h.mean(dim=2)], dim=1)
        h = h.unsqueeze(2).transpose(1, 2).reshape(h.size(0), -1)
        for act in self.acts:
            h = act(h)
        return self.fc(h)


class Basic(nn.Module):
    """A ResNet basic block as torchvision writes it (`out += identity`, ReLU(inplace=True)) between a
    strided stem and adaptive pooling, dropout and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.pool, self.drop, self.fc = nn.AdaptiveAvgPool2d((1, 1)), nn.Dropout(0.2), nn.Linear(4, 3)

    def forward(self, x):
        x = self.relu(self.stem(x))
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        out = self.relu(out)
        return self.fc(self.drop(torch.flatten(self.pool(out), 1)))


class Branchy(nn.Module):
    def forward(self, x):
        if bool(x.sum() > 0):
            return x
        return -x


class Guarded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        if bool(x.abs().max() > 50.0):
            raise ValueError("input out of range")
        return self.fc(x)


class PadOnly(nn.Module):
    def forward(self, x):
        return F.pad(x, (1, 1), mode="reflect").flatten(1)


class TwoInputs(nn.Module):
    def forward(self, x, y):
        return x + y


def _round_trip(module: nn.Module, example: torch.Tensor, kind: str, path) -> torch.jit.ScriptModule:
    compiled = torch.jit.script(module) if kind == "script" else torch.jit.trace(module, example)
    compiled.save(str(path))
    loaded, data = load_model(str(path))
    assert data is None and isinstance(loaded, torch.jit.ScriptModule) and not loaded.training
    return loaded


@pytest.mark.parametrize("kind", ["script", "trace"])
@pytest.mark.parametrize("build,shape", [(Residual, (1, 4, 4)), (Smooth, (2, 9))])
def test_the_rebuilt_graph_computes_exactly_what_the_script_computes(tmp_path, kind, build, shape):
    torch.manual_seed(0)
    eager = build().eval()
    if isinstance(eager, Residual):  # non-trivial running statistics
        eager.bn.running_mean.uniform_(-1, 1)
        eager.bn.running_var.uniform_(0.5, 2)
    script = _round_trip(eager, torch.randn(1, *shape), kind, tmp_path / "m.pt")
    rng = torch.get_rng_state()
    graph = to_graph_module(script, shape)
    assert torch.equal(torch.get_rng_state(), rng)  # layers are rebuilt without random initialisation
    x = torch.randn(7, *shape) * 3
    assert torch.equal(graph(x), script(x))
    assert torch.allclose(graph(x), eager(x), atol=1e-6)
    assert graph.certify_source["format"] == "torchscript" and "aten::linear" in graph.certify_source["ops"]
    modules = {type(m) for m in graph.modules()}
    if build is Residual:
        assert {nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.Linear, nn.LogSoftmax, nn.ReLU} <= modules
    else:
        softplus = next(m for m in graph.modules() if isinstance(m, nn.Softplus))
        gelu = next(m for m in graph.modules() if isinstance(m, nn.GELU))
        leaky = next(m for m in graph.modules() if isinstance(m, nn.LeakyReLU))
        assert (softplus.beta, softplus.threshold, gelu.approximate, leaky.negative_slope) == (2.0, 15.0, "tanh", 0.2)
        assert {nn.Conv1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.SiLU, nn.Sigmoid, nn.Tanh} <= modules


@pytest.mark.parametrize("name", zoo.names())
def test_every_zoo_model_as_torchscript_translates_to_the_eager_translation(tmp_path, name):
    eager, data = zoo.load(name)
    shape = tuple(data.x_test.shape[1:])
    reference = from_module(eager, shape)
    for kind in ("script", "trace"):
        script = _round_trip(eager, data.x_test[:1], kind, tmp_path / f"{kind}.pt")
        net = from_module(script, shape)
        assert all(torch.equal(a, b) for a, b in zip(net.weights + net.biases, reference.weights + reference.biases))
        assert net.deviation == reference.deviation and net.activations == reference.activations
        assert conformance(script, net, data.x_test[:2], data.x_test[:32]).passed


def test_a_float64_script_is_rebuilt_in_float64(tmp_path):
    eager = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double().eval()
    script = _round_trip(eager, torch.randn(1, 3, dtype=torch.float64), "script", tmp_path / "m.pt")
    graph = to_graph_module(script, (3,))
    x = torch.randn(5, 3, dtype=torch.float64)
    assert graph(x).dtype == torch.float64 and torch.equal(graph(x), script(x))


@pytest.mark.parametrize("kind", ["script", "trace"])
def test_translation_of_a_torchscript_chain_is_the_eager_translation(tmp_path, kind):
    torch.manual_seed(1)
    eager = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Softplus(beta=2.0, threshold=15.0), nn.Linear(8, 3)).eval()
    script = _round_trip(eager, torch.randn(1, 4, 4), kind, tmp_path / "m.pt")
    assert translatable(eager, (4, 4)) is eager  # an eager model is translated as it is
    net, reference = from_module(translatable(script, (4, 4)), (4, 4)), from_module(eager, (4, 4))
    assert all(torch.equal(a, b) for a, b in zip(net.weights + net.biases, reference.weights + reference.biases))
    assert net.deviation == reference.deviation > 0  # the threshold 15 was kept: its deviation is in N's record
    x = torch.rand(2, 4, 4)
    check = conformance(script, net, x)  # the ScriptModule as the user runs it vs N
    assert check.passed, check.detail
    stages = S.translate(translatable(script, (4, 4)), (4, 4))
    assert S.check_conformance(script, stages, x)[2]


@pytest.mark.parametrize("kind", ["script", "trace"])
@pytest.mark.parametrize("build,shape", [(Residual, (1, 4, 4)), (Smooth, (2, 9)), (Basic, (1, 8, 8))])
def test_graphs_rebuilt_from_torchscript_translate_and_conform(tmp_path, kind, build, shape):
    """Residual adds (also in place), pooling, batch norm, constants read by get_attr, every smooth
    activation and a log-softmax head: both translations accept the rebuilt graph and N conforms to the
    ScriptModule."""
    torch.manual_seed(4)
    script = _round_trip(build().eval(), torch.randn(1, *shape), kind, tmp_path / "m.pt")
    graph = translatable(script, shape)
    net = from_module(graph, shape)
    x = torch.randn(2, *shape)
    check = conformance(script, net, x)
    assert check.passed, check.detail
    assert (net.head is not None) == (build is Residual) and net.is_chain == (build is Smooth)
    assert S.check_conformance(script, S.translate(graph, shape), x)[2]


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_convolution_padding_modes_are_rebuilt_as_the_convolution_padding(tmp_path, mode):
    """nn.Conv1d / Conv2d with a padding mode run aten::pad then an unpadded convolution; the pair is
    rebuilt as one convolution with that padding_mode (and 'same' padding as it is)."""
    torch.manual_seed(5)
    cases = [(nn.Sequential(nn.Conv2d(1, 2, 3, padding=(1, 2), padding_mode=mode), nn.Flatten(), nn.Linear(70, 2)), (1, 5, 5)),
             (nn.Sequential(nn.Conv1d(2, 2, 3, padding="same", padding_mode=mode), nn.Flatten(), nn.Linear(18, 2)), (2, 9))]
    for eager, shape in cases:
        for kind in ("script", "trace"):
            script = _round_trip(eager.eval(), torch.randn(1, *shape), kind, tmp_path / f"{kind}.pt")
            graph = to_graph_module(script, shape)
            assert [m.padding_mode for m in graph.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))] == [mode]
            x = torch.randn(3, *shape)
            assert torch.equal(graph(x), script(x))
            assert conformance(script, from_module(script, shape), x).passed


def test_a_wrong_rebuild_fails_the_conformance_check_against_the_script(tmp_path):
    """The design's safety net: N comes from the rebuilt graph, the check runs the ScriptModule."""
    torch.manual_seed(2)
    eager = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    script = _round_trip(eager, torch.randn(1, 6), "script", tmp_path / "m.pt")
    graph = to_graph_module(script, (6,))
    with torch.no_grad():
        next(m for m in graph.modules() if isinstance(m, nn.Linear)).weight[0, 0] += 0.5
    check = conformance(script, from_module(graph, (6,)), torch.randn(2, 6))
    assert not check.passed and "FAILED" in check.detail


def test_an_input_check_is_dropped_and_where_it_raises_the_conformance_check_fails(tmp_path):
    """`if ...: raise` guards are removed from the rebuilt graph (it computes what the model computes
    wherever the model returns); the conformance check runs the ScriptModule at far points, where this
    one raises, so no bound-based claim rests on N."""
    script = _round_trip(Guarded().eval(), torch.randn(1, 3), "script", tmp_path / "m.pt")
    graph = to_graph_module(script, (3,))
    assert graph.certify_source["guards"] == 1
    x = torch.randn(4, 3)
    assert torch.equal(graph(x), script(x))
    check = conformance(script, from_module(script, (3,)), x)
    assert not check.passed and "raised" in check.detail and "input out of range" in check.detail


def test_what_cannot_be_rebuilt_is_refused_naming_the_op(tmp_path):
    cases = [
        (torch.jit.script(Branchy()), (3,), "prim::If"),
        (torch.jit.script(nn.Sequential(nn.Linear(3, 3), nn.Hardswish())), (3,), "aten::hardswish"),
        (torch.jit.trace(nn.ConvTranspose2d(1, 1, 2), torch.zeros(1, 1, 3, 3)), (1, 3, 3), "transposed convolution"),
        (torch.jit.script(TwoInputs()), (3,), "takes 2 required inputs"),
        (torch.jit.script(PadOnly()), (2, 5), "aten::pad"),
    ]
    for compiled, shape, needle in cases:
        with pytest.raises(UnsupportedError) as info:
            translatable(compiled.eval(), shape)
        text = str(info.value)
        assert needle in text and "module:callable" in text and "ONNX" in text and "\n" not in text, text
    training = torch.jit.script(nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5)))
    with pytest.raises(UnsupportedError, match="training mode"):
        translatable(training, (3,))


def _softplus_mlp_file(tmp_path):
    torch.manual_seed(3)
    eager = nn.Sequential(nn.Linear(16, 12), nn.Softplus(), nn.Linear(12, 4)).eval()
    model, x = tmp_path / "model.pt", tmp_path / "x.pt"
    torch.jit.script(eager).save(str(model))
    torch.save(torch.rand(1, 16), x)
    return model, x


def test_explain_and_verify_a_torchscript_file_from_the_cli(tmp_path, capsys):
    model, x = _softplus_mlp_file(tmp_path)
    out = tmp_path / "cert.json"
    assert main(["explain", "--model", str(model), "--input", str(x), "--method", "gradient", "--eps", "0.01",
                 "--out", str(out)]) == EXIT_OK
    assert "no bound-based claims" not in capsys.readouterr().out
    cert = json.loads(out.read_text())
    assert cert["function"]["conformance"]["passed"]
    claims = {c["id"]: c for c in cert["claims"]}
    for bound in ("lipschitz", "curvature", "explanation-error"):
        assert claims[bound]["value"] is not None and claims[bound]["kind"] == "certified", claims[bound]
    assert main(["verify", str(out)]) == EXIT_OK
    assert "certificate valid" in capsys.readouterr().out


def test_verify_property_on_a_traced_mnistfc_net_from_the_cli(tmp_path, capsys):
    """A VNN-COMP mnistfc net saved as TorchScript (traced from its ONNX conversion) is certified by
    `certify verify-property` on a property that holds, as the ONNX file is."""
    onnx_model, _ = load_model(str(M.data_dir() / "mnist-net_256x2.onnx"))
    path = tmp_path / "mnist.pt"
    torch.jit.trace(onnx_model, torch.zeros(1, 784)).save(str(path))
    prop = str(M.data_dir() / "prop_2_0.03.vnnlib")
    assert main(["verify-property", str(path), prop, "--timeout", "30", "--method", "crown"]) == EXIT_OK
    assert capsys.readouterr().out.startswith("holds: certified by crown")
