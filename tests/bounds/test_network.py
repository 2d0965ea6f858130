"""Translation by tracing (`from_module`), the softplus threshold deviation and the conformance check."""
import copy
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from certify.bounds.activations import Activation, softplus_gap
from certify.bounds.network import conformance, from_module, rounding_bound
from certify.errors import UnsupportedError
from certify.models import zoo
from certify.models.builders import Normalize

ZOO = zoo.names()


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from translation_models import functional_model, residual_model as _residual_model  # noqa: E402


def test_residual_forward_override_translates_with_an_identity_skip():
    """x + f(x) written as an overridden forward: the add becomes the skip S_{1,0} = I of the block's second
    layer, and the translation is exact and conforms."""
    model = _residual_model()
    net = from_module(model, (4,))
    assert not net.is_chain and list(net.skips) == [1] and list(net.skips[1]) == [0]
    assert torch.equal(net.weights[1], model[0][2].weight.detach().double())
    assert torch.equal(net.skips[1][0], torch.eye(4, dtype=torch.float64))
    assert net.semantics["skips"] == {"1": [0]}
    assert conformance(model, net, torch.randn(3, 4, generator=torch.Generator().manual_seed(1))).passed


def test_conformance_catches_a_residual_translated_as_its_sequential_body():
    model = _residual_model()
    body = nn.Sequential(*list(model[0]), *list(model)[1:]).eval()  # what walking model.modules() used to give
    net = from_module(body, (4,))
    result = conformance(model, net, torch.randn(3, 4, generator=torch.Generator().manual_seed(1)))
    assert not result.passed
    assert result.max_deviation > 1e-2 > result.tolerance
    assert "FAILED" in result.detail


def test_softplus_threshold_one_is_refused_naming_the_threshold():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Softplus(beta=1, threshold=1), nn.Linear(8, 3)).eval()
    with pytest.raises(UnsupportedError) as err:
        from_module(model, (4,))
    message = str(err.value)
    assert "threshold=1" in message and "0.313" in message  # log1p(e^-1) = 0.3133
    # the same weights with the default threshold translate, and that N does not conform to the threshold=1 model
    twin = copy.deepcopy(model)
    twin[1].threshold = 20.0
    net = from_module(twin, (4,))
    result = conformance(model, net, torch.randn(4, 4, generator=torch.Generator().manual_seed(2)))
    assert not result.passed and result.max_deviation > 1e-3


@pytest.mark.parametrize("threshold,accepted", [(1.0, False), (10.0, False), (13.9, False), (14.0, True), (20.0, True), (50.0, True), (math.inf, True), (-5.0, False)])
def test_threshold_rule(threshold, accepted):
    model = nn.Sequential(nn.Linear(3, 5), nn.Softplus(beta=2.0, threshold=threshold), nn.Linear(5, 2)).eval()
    if accepted:
        net = from_module(model, (3,))
        assert net.activations[0] == Activation("softplus", 2.0, threshold)
        assert net.semantics["activations"][0]["threshold"] == (threshold if math.isfinite(threshold) else "inf")
    else:
        with pytest.raises(UnsupportedError, match="threshold"):
            from_module(model, (3,))


def test_deviation_is_the_gap_carried_through_the_absolute_weights():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 6), nn.Softplus(beta=2.0), nn.Linear(6, 5), nn.Softplus(), nn.Linear(5, 2)).eval()
    net = from_module(model, (3,))
    g1 = math.log1p(math.exp(-20.0)) / 2.0
    g2 = math.log1p(math.exp(-20.0))
    w2, w3 = model[2].weight.detach().double().abs(), model[4].weight.detach().double().abs()
    expected = float((w3 @ (w2 @ torch.full((6,), g1, dtype=torch.float64) + g2)).max())
    assert expected <= net.deviation <= expected * (1 + 1e-12)
    assert net.semantics["deviation"] == net.deviation
    assert softplus_gap(2.0, 20.0) >= g1
    relu = from_module(nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2)).eval(), (3,))
    assert relu.deviation == 0.0


@pytest.mark.parametrize("name", ZOO)
def test_zoo_models_translate_and_conform_including_far_points(name):
    model, data = zoo.load(name)
    net = from_module(model, tuple(data.input_shape))
    assert net.is_chain and net.skips == {} and net.head is None and net.semantics["head"] is None
    assert net.deviation <= 1e-6  # torch's default threshold 20: 2.06e-9 per unit, carried through |W|
    if all(a.name == "relu" for a in net.activations):
        assert net.deviation == 0.0
    result = conformance(model, net, data.x_test[:2], data.x_train[:32])
    assert result.passed, result.detail
    assert result.points == 2 + 32 + 32
    assert result.max_deviation <= result.tolerance
    # the tolerance is a rounding bound, not a blanket: at the inputs it stays far below the logits' scale
    x = data.x_test[:2]
    tol_x = 2 * rounding_bound(net, x.double(), 2.0**-24, torch.float32) + net.deviation
    assert float(tol_x.max()) < 1e-3 * float(model(x).detach().abs().max())


def test_moons_point_where_torch_switches_to_the_identity():
    model, data = zoo.load("moons-softplus-mlp")
    net = from_module(model, (2,))
    x = torch.tensor([[-3.473, 0.580]])
    z1 = net.pre_activations(x.double())[0]
    assert bool((z1 > 20.0).any())  # a hidden unit crosses torch's threshold here
    model64 = copy.deepcopy(model).double()
    with torch.no_grad():
        gap = float((model64(x.double()) - net.forward(x.double())).abs().max())
    assert 0 < gap <= net.deviation  # the switch is visible in float64, and within the certified deviation
    assert conformance(model, net, x, data.x_train).passed
    assert conformance(model64, net, x, data.x_train).passed


@pytest.mark.parametrize("bias", [True, False])
def test_linear_classifier_translates_with_no_activation(bias):
    torch.manual_seed(4)
    for model in (nn.Linear(5, 3, bias=bias).eval(), nn.Sequential(nn.Linear(5, 3, bias=bias)).eval()):
        net = from_module(model, (5,))
        assert net.depth == 1 and net.activations == [] and net.deviation == 0.0
        assert torch.equal(net.weights[0], model.weight.detach().double() if isinstance(model, nn.Linear) else model[0].weight.detach().double())
        assert torch.equal(net.biases[0], torch.zeros(3, dtype=torch.float64) if not bias else (model.bias if isinstance(model, nn.Linear) else model[0].bias).detach().double())
        assert conformance(model, net, torch.randn(2, 5)).passed


def test_batchnorm_without_running_stats_is_refused():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8, track_running_stats=False), nn.ReLU(), nn.Linear(8, 3)).eval()
    with pytest.raises(UnsupportedError) as err:
        from_module(model, (4,))
    assert "track_running_stats=False" in str(err.value) and "per-example" in str(err.value)
    # a net translated from a twin with running statistics does not conform to it (batch dependence)
    twin = copy.deepcopy(model)
    twin[1] = nn.BatchNorm1d(8).eval()
    result = conformance(model, from_module(twin, (4,)), torch.randn(3, 4))
    assert not result.passed


def test_batchnorm2d_without_running_stats_fails_conformance_by_batch_dependence():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2, track_running_stats=False), nn.Flatten(), nn.Linear(32, 3)).eval()
    twin = copy.deepcopy(model)
    twin[1] = nn.BatchNorm2d(2).eval()
    result = conformance(model, from_module(twin, (1, 4, 4)), torch.randn(3, 1, 4, 4))
    assert not result.passed


def test_conformance_fails_on_a_monkeypatched_weight():
    model, data = zoo.load("digits-softplus-mlp")
    net = from_module(model, tuple(data.input_shape))
    net.weights[0] = net.weights[0].clone()
    net.weights[0][3, 10] += 1e-3
    result = conformance(model, net, data.x_test[:2], data.x_train[:32])
    assert not result.passed and result.max_deviation > result.tolerance


@pytest.mark.parametrize(
    "module,why",
    [
        (nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1), nn.Linear(3, 2)), "softmax is modelled only as the final output"),
        (nn.Sequential(nn.Linear(4, 3), nn.Hardtanh(), nn.Linear(3, 2)), "Hardtanh"),
        (nn.Sequential(nn.Linear(4, 3)).train(), "training mode"),
        (nn.Sequential(nn.Linear(4, 3), nn.Softplus(beta=-1.0), nn.Linear(3, 2)), "beta"),
    ],
)
def test_other_refusals(module, why):
    if why != "training mode":
        module.eval()
    with pytest.raises(UnsupportedError, match=why):
        from_module(module, (4,))


def test_forward_hook_is_refused():
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    handle = model[0].register_forward_hook(lambda m, i, o: 2 * o)
    try:
        with pytest.raises(UnsupportedError, match="forward or backward hook"):
            from_module(model, (4,))
    finally:
        handle.remove()
    assert from_module(model, (4,)).depth == 1


def test_functional_and_method_forms_and_wrappers():
    model = functional_model(6)
    net = from_module(model, (1, 4, 4))
    assert [a.name for a in net.activations] == ["softplus", "relu"]
    assert net.activations[0].beta == 2.0 and net.activations[0].threshold == 30.0
    assert conformance(model, net, torch.randn(3, 1, 4, 4)).passed
    wrapped = from_module(nn.DataParallel(model).eval(), (1, 4, 4))  # every wrapper level is checked (eval, no hooks)
    assert all(torch.equal(a, b) for a, b in zip(wrapped.weights, net.weights))
    x = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    assert torch.allclose(net.forward(x.reshape(5, -1)), model.double()(x), atol=1e-10)


def test_view_dropping_the_batch_dimension_is_refused():
    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.fc(x.view(1, -1))

    with pytest.raises(UnsupportedError, match="batch"):
        from_module(Bad().eval(), (4,))


@pytest.mark.parametrize("threshold", [14.0, 20.0, 30.0, math.inf])
def test_enclosure_contains_torch_and_exact_for_accepted_thresholds(threshold):
    z = torch.linspace(-60, 60, 24001, dtype=torch.float64)
    for beta in (0.5, 1.0, 2.0):
        act = Activation("softplus", beta, threshold)
        lo, hi = act.enclosure(z)
        torch_value = F.softplus(z, beta=beta, threshold=threshold)
        exact = torch.logaddexp(torch.zeros_like(z), beta * z) / beta
        assert (lo <= torch_value).all() and (torch_value <= hi).all()
        assert (lo <= exact).all() and (exact <= hi).all()
        assert (hi - lo).max() <= act.threshold_gap + 1e-12 * z.abs().max()


def _random_net(widths, acts, betas, with_norm):
    layers: list[nn.Module] = [Normalize([0.3] * widths[0], [1.7] * widths[0])] if with_norm else []
    for i, (a, b) in enumerate(zip(acts, betas)):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        layers.append(nn.ReLU() if a == "relu" else nn.Softplus(beta=b))
    layers.append(nn.Linear(widths[len(acts)], 3))
    return nn.Sequential(*layers).eval()


@settings(max_examples=25, deadline=None)
@given(
    depth=st.integers(0, 3),
    width=st.integers(1, 12),
    act=st.sampled_from(["relu", "softplus"]),
    beta=st.floats(0.25, 8.0),
    with_norm=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 10_000),
)
def test_property_translation_reproduces_the_model(depth, width, act, beta, with_norm, dtype, seed):
    torch.manual_seed(seed)
    widths = [4] + [width] * depth
    model = _random_net(widths, [act] * depth, [beta] * depth, with_norm).to(dtype)
    net = from_module(model, (4,))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 4, generator=gen) * torch.tensor([[1.0], [10.0], [100.0], [1000.0]])
    result = conformance(model, net, x)
    assert result.passed, result.detail
    if dtype == torch.float64:
        with torch.no_grad():
            assert result.max_deviation <= 1e-9 * (1 + float(model(x.double()).abs().max()))


def test_internal_overflow_fails_conformance_but_dtype_range_overflow_is_skipped():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 4), nn.Softplus(threshold=math.inf), nn.Linear(4, 2)).eval()
    net = from_module(model, (3,))
    result = conformance(model, net, torch.randn(1, 3))
    assert not result.passed and "overflows internally" in result.detail
    half = nn.Sequential(nn.Linear(3, 40), nn.ReLU(), nn.Linear(40, 2)).eval()
    with torch.no_grad():
        half[0].weight.mul_(300.0)
    half = half.half()
    result = conformance(half, from_module(half, (3,)), torch.randn(1, 3))
    assert result.passed and "were not compared" in result.detail, result.detail


def test_onnx2torch_mnistfc_graph_translates_exactly():
    """issue 12: the VNN-COMP mnistfc ONNX net, converted by onnx2torch into a torch.fx GraphModule (its Flatten
    and Gemm nodes become nn.Flatten and nn.Linear), is the chain Linear-ReLU-...-Linear with the ONNX weights."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import mnistfc_data as M

    model = M.model("mnist-net_256x2.onnx")
    net = from_module(model, model.certify_input_shape)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(net.weights) == len(linears) == 3 and net.activations == [Activation("relu")] * 2
    for w, b, lin in zip(net.weights, net.biases, linears):
        assert torch.equal(w, lin.weight.double()) and torch.equal(b, lin.bias.double())
    x = torch.rand(3, 784, 1)
    assert conformance(model, net, x).passed


def test_torchscript_translates_through_its_rebuilt_graph_or_is_refused_in_one_line():
    torch.manual_seed(5)
    eager = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2)).eval()
    scripted = torch.jit.script(eager)
    net, reference = from_module(scripted, (3,)), from_module(eager, (3,))
    assert all(torch.equal(a, b) for a, b in zip(net.weights, reference.weights))
    assert all(torch.equal(a, b) for a, b in zip(net.biases, reference.biases))
    assert conformance(scripted, net, torch.randn(2, 3)).passed  # the ScriptModule itself is what is compared

    class Exp(nn.Module):
        def forward(self, x):  # type: ignore[no-untyped-def]
            return torch.exp(x)

    with pytest.raises(UnsupportedError) as err:
        from_module(torch.jit.script(Exp().eval()), (3,))
    assert "\n" not in str(err.value) and "TorchScript" in str(err.value) and "RecursiveScriptModule" not in str(err.value)


def test_instance_level_forward_and_backward_hooks_are_refused_by_both_translations():
    """A Linear whose forward is replaced on the instance (an adapter-style monkeypatch) is a leaf to fx, so
    both translations would model the class's function, not the patched one; a backward hook changes what
    autograd (and the checker's Jacobians) see. Both are refused, with the reason."""
    from torch import nn as _nn

    from certify.certificates import semantics as S

    patched = _nn.Sequential(_nn.Linear(3, 4), _nn.Softplus(), _nn.Linear(4, 2)).eval()
    inner = patched[0].forward
    patched[0].forward = lambda x: inner(x) + 0.5
    with pytest.raises(UnsupportedError, match="instance-level forward"):
        from_module(patched, (3,))
    with pytest.raises(UnsupportedError, match="overrides forward"):
        S.translate(patched, (3,))
    hooked = _nn.Sequential(_nn.Linear(3, 4), _nn.Softplus(), _nn.Linear(4, 2)).eval()
    hooked.register_full_backward_hook(lambda m, gi, go: gi)
    with pytest.raises(UnsupportedError, match="backward hook"):
        from_module(hooked, (3,))
    with pytest.raises(UnsupportedError, match="backward hook"):
        S.translate(hooked, (3,))


def _hooked_wrappers():
    """(label, model): a hook (or monkeypatch) on a DataParallel / torch.compile WRAPPER, the pattern of the
    attack: the hook changes the output on a thin slab that conformance points miss."""

    def net():
        m = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
        with torch.no_grad():
            m[0].weight.zero_()
            m[0].bias.fill_(1.0)
            m[2].weight.zero_()
            m[2].bias.copy_(torch.tensor([0.1, 0.0]))
        return m.eval()

    def hook(mod, inputs, out):  # type: ignore[no-untyped-def]
        x = inputs[0]
        slab = ((x[:, :1] > 0.3) & (x[:, :1] < 0.302)).to(out.dtype)
        return out - torch.cat([slab, 0 * slab], 1)

    dp = nn.DataParallel(net()).eval()
    dp.register_forward_hook(hook)
    pre = nn.DataParallel(net()).eval()
    pre.register_forward_pre_hook(lambda m, i: (i[0] * 2,))
    back = nn.DataParallel(net()).eval()
    back.register_full_backward_hook(lambda m, gi, go: gi)
    compiled = torch.compile(net()).eval()
    compiled.register_forward_hook(hook)
    patched = torch.compile(net()).eval()
    patched.forward = lambda x: patched._orig_mod(x) * 2
    swapped = torch.compile(net()).eval()
    swapped._orig_mod = net()  # dynamo's forward still calls the first module
    nested = nn.DataParallel(compiled).eval()
    training = nn.DataParallel(net())  # the wrapper itself left in training mode
    return [("DataParallel forward hook", dp, "hook"), ("DataParallel pre hook", pre, "hook"),
            ("DataParallel backward hook", back, "hook"), ("compiled forward hook", compiled, "hook"),
            ("compiled monkeypatched forward", patched, "forward"), ("compiled wrapped module swapped", swapped, "forward"),
            ("DataParallel of a hooked compiled module", nested, "hook"), ("DataParallel in training mode", training, "training")]


def test_hooks_and_patches_on_wrappers_are_refused_by_both_translations():
    """The wrapper runs its own hooks around the module it wraps, so each wrapper level is checked before it is
    stripped (hooks, training mode, an instance-level forward other than torch.compile's own)."""
    from certify.certificates import semantics as S

    for label, model, why in _hooked_wrappers():
        with pytest.raises(UnsupportedError, match=why):
            from_module(model, (2,))
        with pytest.raises(UnsupportedError, match=why):
            S.translate(model, (2,))
    clean = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    for wrapped in (nn.DataParallel(clean).eval(), torch.compile(clean).eval(), nn.DataParallel(torch.compile(clean)).eval()):
        net = from_module(wrapped, (2,))
        assert all(torch.equal(a, b) for a, b in zip(net.weights, from_module(clean, (2,)).weights))
        assert len(S.translate(wrapped, (2,)).mats) == 2
