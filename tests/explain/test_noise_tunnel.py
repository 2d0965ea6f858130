"""NoiseTunnel (certify/explain/noise_tunnel.py) against Captum's NoiseTunnel in float64 with the same noise,
reproduced draw for draw: Captum draws torch.normal(0, torch.tensor(stdev)) in float32 from torch's global
generator, per chunk of nt_samples_batch_size copies, per input tensor in order, example-major; ours takes
those draws divided by stdev as `nt_noise`. smoothgrad / smoothgrad_sq / vargrad over Gradient (= Saliency)
and IntegratedGradients (per-example baselines, per-call n_steps), tuple inputs and additional forward args;
stdevs = 0 exactly; the seeded generator equals SmoothGrad's; wrapping an explainer without tuple inputs."""
from __future__ import annotations

import copy

import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import NoiseTunnel as CaptumNT
from captum.attr import Saliency
from torch import nn

from certify.errors import UsageError
from certify.explain import Gradient, IntegratedGradients, MoreauGrad, SmoothGrad
from certify.explain.noise_tunnel import NoiseTunnel
from certify.models import zoo
from conftest import assert_close_rel

F64 = torch.float64
EXACT = 1e-10
NT_TYPES = ["smoothgrad", "smoothgrad_sq", "vargrad"]


@pytest.fixture(scope="module")
def digits64():
    model, data = zoo.load("digits-softplus-mlp")
    return copy.deepcopy(model).double().eval(), data.x_test[:5].double(), data.y_test[:5].clone()


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(4, 5), nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, x1, x2, scale):
        return self.out(torch.tanh(self.a(x1 * scale) + self.b(x2.flatten(1))))


def captum_draws(seed: int, inputs: tuple[torch.Tensor, ...], stdev: float, nt_samples: int, batch: int) -> tuple[torch.Tensor, ...]:
    """Captum's noise for these arguments, as standard-normal draws [N, nt_samples, ...] per input tensor."""
    torch.manual_seed(seed)
    sizes = [batch] * (nt_samples // batch) + ([nt_samples % batch] if nt_samples % batch else [])
    parts: list[list[torch.Tensor]] = [[] for _ in inputs]
    for size in sizes:
        for j, x in enumerate(inputs):
            n = x.shape[0]
            draw = torch.normal(0, torch.tensor(stdev).repeat((n * size, *x.shape[1:])))
            parts[j].append(draw.view(n, size, *x.shape[1:]))
    return tuple(torch.cat(p, dim=1).to(inputs[0].dtype) / stdev for p in parts)


@pytest.mark.parametrize("nt_type", NT_TYPES)
def test_noise_tunnel_over_gradient_equals_captum(digits64, nt_type):
    model, x, y = digits64
    (noise,) = captum_draws(3, (x,), 0.3, 7, 3)
    ours = NoiseTunnel(Gradient(model), nt_type=nt_type, nt_samples=7, stdevs=0.3, nt_samples_batch_size=3).attribute(x, y, nt_noise=noise)
    torch.manual_seed(3)
    theirs = CaptumNT(Saliency(model)).attribute(
        x, nt_type=nt_type, nt_samples=7, nt_samples_batch_size=3, stdevs=0.3, target=y, abs=False
    )
    assert_close_rel(ours, theirs, EXACT)


@pytest.mark.parametrize("nt_type", NT_TYPES)
def test_noise_tunnel_over_integrated_gradients_with_per_call_options_equals_captum(digits64, nt_type):
    """Per-example baselines are repeated for each example's copies; n_steps and method per call go to the
    wrapped explainer (riemann_middle, n_steps = 8: weights and nodes exact in Captum's float32)."""
    model, x, y = digits64
    baselines = torch.rand(x.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    (noise,) = captum_draws(5, (x,), 0.2, 4, 4)
    nt = NoiseTunnel(IntegratedGradients(model), nt_samples=2, stdevs=0.5)
    explanation = nt.explain(x, y, nt_type=nt_type, nt_samples=4, stdevs=0.2, nt_noise=noise, baselines=baselines,
                             n_steps=8, method="riemann_middle")
    torch.manual_seed(5)
    theirs = CaptumNT(CaptumIG(model)).attribute(
        x, nt_type=nt_type, nt_samples=4, stdevs=0.2, target=y, baselines=baselines, n_steps=8, method="riemann_middle"
    )
    assert_close_rel(explanation.attributions, theirs, EXACT)
    assert explanation.params["nt_type"] == nt_type and explanation.params["nt_samples"] == 4
    assert explanation.params["explainer_params"]["n_steps"] == 8 and nt.explainer.n_steps == 50


def test_noise_tunnel_tuple_inputs_and_forward_args_equal_captum():
    with torch.random.fork_rng():
        torch.manual_seed(2)
        model = TwoInputs().double().eval()
    g = torch.Generator().manual_seed(3)
    inputs = (torch.randn(4, 4, generator=g, dtype=F64), torch.randn(4, 2, 3, generator=g, dtype=F64))
    scale = 1.0 + torch.rand(4, 4, generator=g, dtype=F64)  # per example: repeated for each example's copies
    target = torch.tensor([2, 0, 1, 1])
    noise = captum_draws(9, inputs, 0.25, 5, 2)
    ours = NoiseTunnel(Gradient(model), nt_type="vargrad", nt_samples=5, stdevs=0.25, nt_samples_batch_size=2).attribute(
        inputs, target, additional_forward_args=scale, nt_noise=noise
    )
    torch.manual_seed(9)
    theirs = CaptumNT(Saliency(model)).attribute(
        inputs, nt_type="vargrad", nt_samples=5, nt_samples_batch_size=2, stdevs=0.25, target=target, abs=False,
        additional_forward_args=scale,
    )
    assert isinstance(ours, tuple) and len(ours) == 2
    for a, b in zip(ours, theirs):
        assert_close_rel(a, b, EXACT)


def test_zero_stdevs_equal_captum_exactly_and_reduce_to_the_method(digits64):
    model, x, y = digits64
    grad = Gradient(model).attribute(x, y)
    for nt_type, expected in [("smoothgrad", grad), ("smoothgrad_sq", grad**2), ("vargrad", torch.zeros_like(grad))]:
        ours = NoiseTunnel(Gradient(model), nt_type=nt_type, nt_samples=3, stdevs=0.0, seed=1).attribute(x, y)
        theirs = CaptumNT(Saliency(model)).attribute(x, nt_type=nt_type, nt_samples=3, stdevs=0.0, target=y, abs=False)
        scale = float(grad.abs().max())  # up to the rounding of a mean of 3 equal numbers
        assert float((ours - expected).abs().max()) <= EXACT * scale and float((theirs - expected).abs().max()) <= EXACT * scale


def test_seeded_noise_is_smoothgrads_and_chunking_keeps_the_moments(digits64):
    model, x, y = digits64
    nt = NoiseTunnel(Gradient(model), nt_samples=6, stdevs=0.3, seed=4)
    assert_close_rel(nt.attribute(x, y), SmoothGrad(model, sigma=0.3, samples=6, seed=4).attribute(x, y), EXACT)
    (noise,) = captum_draws(0, (x,), 1.0, 6, 6)
    whole = NoiseTunnel(Gradient(model), nt_type="vargrad", nt_samples=6, stdevs=0.3).attribute(x, y, nt_noise=noise)
    for batch in (1, 4):
        chunked = NoiseTunnel(Gradient(model), nt_type="vargrad", nt_samples=6, stdevs=0.3, nt_samples_batch_size=batch)
        assert_close_rel(chunked.attribute(x, y, nt_noise=noise), whole, EXACT)
    a = nt.attribute(x, y)
    assert torch.equal(a, nt.attribute(x, y)) and not torch.equal(a, nt.attribute(x, y, seed=5))


def test_wrapping_an_explainer_without_tuple_inputs(digits64):
    """MoreauGrad takes one tensor: wrapped, it explains the copies; tuple inputs are refused naming it."""
    model, x, y = digits64
    mg = MoreauGrad(model, rho=0.2, max_iter=30)
    nt = NoiseTunnel(mg, nt_samples=2, stdevs=0.1, seed=0)
    (noise,) = captum_draws(0, (x[:2],), 1.0, 2, 2)
    explanation = nt.explain(x[:2], y[:2], nt_noise=noise)
    copies = (x[:2].unsqueeze(1) + 0.1 * noise).flatten(0, 1)
    expected = mg.attribute(copies, y[:2].repeat_interleave(2)).view(2, 2, -1).mean(dim=1)
    assert_close_rel(explanation.attributions, expected, EXACT)
    assert explanation.method == "noise-tunnel" and explanation.params["explainer"] == "moreaugrad"
    with pytest.raises(UsageError, match=r"NoiseTunnel\(MoreauGrad\) cannot pass tuple inputs"):
        nt.attribute((x, x), y)
    with pytest.raises(UsageError, match="additional_forward_args"):
        nt.attribute(x, y, additional_forward_args=x)


@pytest.mark.parametrize("build", [
    lambda m: NoiseTunnel(m),
    lambda m: NoiseTunnel(Gradient(m), nt_type="sg"),
    lambda m: NoiseTunnel(Gradient(m), nt_samples=0),
    lambda m: NoiseTunnel(Gradient(m), stdevs=-0.1),
    lambda m: NoiseTunnel(Gradient(m), nt_samples_batch_size=0),
])
def test_bad_parameters_are_usage_errors(digits64, build):
    with pytest.raises(UsageError):
        build(digits64[0])


def test_unknown_options_name_the_public_call(digits64):
    model, x, _ = digits64
    with pytest.raises(UsageError) as info:
        NoiseTunnel(IntegratedGradients(model)).attribute(x, draw_baseline_from_distrib=True)
    message = str(info.value)
    assert "NoiseTunnel.explain() and .attribute()" in message and "_explain" not in message
    assert "nt_samples" in message and "baselines" in message and "n_steps" in message
