"""Captum-compatible calls (issue 16, item 1) against Captum 0.9 in float64, to 1e-10 relative: per-call method
options (the constructor's values as defaults, recorded in Explanation.params), return_convergence_delta,
additional_forward_args, tuple inputs and index-tuple targets for outputs [N, C, H, W], for Gradient
(= Saliency(abs=False)), IntegratedGradients and SmoothGrad; refusals by the other explainers.

Captum multiplies the gradients by its quadrature weights cast to float32 (`torch.tensor(step_sizes).float()` in
captum/attr/_core/integrated_gradients.py), so float64 equality to 1e-10 needs weights that float32 holds
exactly; its Riemann nodes come from torch.linspace in float32 too. Exact cases: left, right and middle rules with
n_steps a power of two, Gauss-Legendre and the trapezoid with n_steps = 2; the others agree to Captum's float32
rounding (checked at 1e-7). The trapezoid rule differs by the
documented factor (n - 1)/n (certify.explain.integrated_gradients)."""
from __future__ import annotations

import copy

import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import NoiseTunnel as CaptumNT
from captum.attr import Saliency
from torch import nn

from certify.errors import TargetError, UsageError
from certify.explain import Gradient, IntegratedGradients, MoreauGrad, SmoothGrad
from certify.models import zoo
from conftest import assert_close_rel

F64 = torch.float64
EXACT = 1e-10


@pytest.fixture(scope="module")
def digits64():
    """The digits softplus MLP in float64 (a copy), 5 test images and their labels."""
    model, data = zoo.load("digits-softplus-mlp")
    return copy.deepcopy(model).double().eval(), data.x_test[:5].double(), data.y_test[:5].clone()


class TwoInputs(nn.Module):
    """model(x1 [N, 4], x2 [N, 2, 3], scale [N, 4], shift: float) -> logits [N, 3]."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 5), nn.Linear(6, 5)
        self.out = nn.Linear(5, 3)

    def forward(self, x1, x2, scale=None, shift=0.0):
        x1 = x1 if scale is None else x1 * scale
        return self.out(nn.functional.softplus(self.a(x1) + self.b(x2.flatten(1)))) + shift


class Segmenter(nn.Module):
    """Dense outputs [N, C=3, H, W] of images [N, 2, H, W] (a per-pixel classifier)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Softplus(), nn.Conv2d(4, 3, 3, padding=1))

    def forward(self, x):
        return self.net(x)


def _seeded(module: nn.Module, seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for p in module.parameters():
            nn.init.normal_(p, std=0.5)
    return module.double().eval()


@pytest.fixture(scope="module")
def two_inputs():
    g = torch.Generator().manual_seed(5)
    x1, x2 = torch.randn(4, 4, generator=g, dtype=F64), torch.randn(4, 2, 3, generator=g, dtype=F64)
    scale = 1.0 + torch.rand(4, 4, generator=g, dtype=F64)
    return _seeded(TwoInputs(), 1), (x1, x2), scale


@pytest.fixture(scope="module")
def segmenter():
    return _seeded(Segmenter(), 2), torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(6), dtype=F64)


def _close_tuple(ours, theirs, rtol=EXACT):
    assert isinstance(ours, tuple) and len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        assert_close_rel(a, b, rtol)


def test_gradient_equals_saliency_without_abs(digits64):
    model, x, y = digits64
    assert_close_rel(Gradient(model).attribute(x, target=y), Saliency(model).attribute(x, target=y, abs=False), EXACT)


# (rule, n_steps, rtol): 1e-10 where float32 holds Captum's nodes and weights exactly; otherwise the
# agreement of Captum's float32 nodes (torch.linspace in float32 for the trapezoid) and weights (relative
# rounding 6e-8 each).
CASES = [
    ("gausslegendre", 2, EXACT), ("gausslegendre", 16, 1e-7),
    ("riemann_left", 8, EXACT), ("riemann_right", 16, EXACT), ("riemann_middle", 8, EXACT), ("riemann_middle", 16, EXACT),
    ("riemann_trapezoid", 2, EXACT), ("riemann_trapezoid", 16, 1e-7),
]


@pytest.mark.parametrize("method, n_steps, rtol", CASES)
def test_integrated_gradients_per_call_options_equal_captum(digits64, method, n_steps, rtol):
    """n_steps and method per call on an explainer built with other values, per-example baselines; the delta
    of return_convergence_delta equals Captum's (trapezoid: ours is the delta of our own attributions)."""
    model, x, y = digits64
    baselines = torch.rand(x.shape, generator=torch.Generator().manual_seed(2), dtype=F64)  # one per example
    ig = IntegratedGradients(model, n_steps=3, method="riemann_left")
    ours, delta = ig.attribute(x, target=y, baselines=baselines, n_steps=n_steps, method=method, return_convergence_delta=True)
    theirs, their_delta = CaptumIG(model).attribute(
        x, baselines=baselines, target=y, n_steps=n_steps, method=method, return_convergence_delta=True
    )
    if method == "riemann_trapezoid":
        assert_close_rel(ours * (n_steps - 1) / n_steps, theirs, rtol)
        with torch.no_grad():
            gap = model(x).gather(1, y.view(-1, 1)).squeeze(1) - model(baselines).gather(1, y.view(-1, 1)).squeeze(1)
        assert_close_rel(delta, ours.sum(dim=1) - gap, EXACT)
        return
    assert_close_rel(ours, theirs, rtol)
    assert delta.shape == (x.shape[0],)
    assert torch.allclose(delta, their_delta, rtol=0, atol=rtol * float(ours.abs().sum(dim=1).max()))


def test_integrated_gradients_internal_batch_size_and_scalar_baselines_equal_captum(digits64):
    model, x, y = digits64
    ours = IntegratedGradients(model).attribute(x, target=y, n_steps=16, method="riemann_middle", internal_batch_size=7, baselines=0.25)
    theirs = CaptumIG(model).attribute(x, baselines=0.25, target=y, n_steps=16, method="riemann_middle", internal_batch_size=7)
    assert_close_rel(ours, theirs, EXACT)


def test_per_call_options_are_recorded_and_default_to_the_constructor(digits64):
    model, x, y = digits64
    ig = IntegratedGradients(model, n_steps=4, method="riemann_left")
    assert ig.explain(x, y).params == ig.params()  # what certificates record (certify_explanations)
    explanation = ig.explain(x, y, n_steps=8, baselines=0.5)
    assert explanation.params == {"n_steps": 8, "method": "riemann_left", "internal_batch_size": None, "baselines": 0.5}
    assert ig.n_steps == 4  # the explainer itself is unchanged
    torch.testing.assert_close(explanation.attributions, IntegratedGradients(model, n_steps=8, method="riemann_left").attribute(x, y, baselines=0.5), rtol=0, atol=0)
    sg = SmoothGrad(model, sigma=0.1, samples=4)
    assert sg.explain(x, y).params == sg.params()
    per_call = sg.explain(x, y, sigma=0.3, samples=6, relative=True, samples_per_chunk=4, seed=9)
    assert per_call.params == {"sigma": 0.3, "samples": 6, "relative": True, "samples_per_chunk": 4, "seed": 9}
    torch.testing.assert_close(per_call.attributions, SmoothGrad(model, sigma=0.3, samples=6, relative=True, samples_per_chunk=4, seed=9).attribute(x, y), rtol=1e-12, atol=0)


@pytest.mark.parametrize("call", [dict(n_steps=0), dict(method="simpson"), dict(internal_batch_size=0)])
def test_bad_per_call_values_are_usage_errors(digits64, call):
    model, x, _ = digits64
    with pytest.raises(UsageError):
        IntegratedGradients(model).attribute(x, **call)


def test_a_bad_keyword_names_the_public_call_and_the_accepted_options(digits64):
    model, x, _ = digits64
    with pytest.raises(UsageError) as info:
        IntegratedGradients(model).attribute(x, n_step=64)
    message = str(info.value)
    assert "IntegratedGradients.explain() and .attribute()" in message and "_explain" not in message
    assert all(name in message for name in ("baselines", "n_steps", "method", "internal_batch_size"))
    with pytest.raises(UsageError, match="return_convergence_delta must be True or False"):
        IntegratedGradients(model).attribute(x, return_convergence_delta="yes")


def test_additional_forward_args_equal_captum(two_inputs):
    model, (x1, x2), scale = two_inputs
    args = (x2, scale, 0.5)  # x2 passed as a forward argument: only x1 is attributed
    target = torch.tensor([0, 2, 1, 2])
    wrapped = lambda a, b, s, t: model(a, b, s, t)  # noqa: E731 (Captum takes any callable)
    assert_close_rel(Gradient(model).attribute(x1, target, additional_forward_args=args),
                     Saliency(wrapped).attribute(x1, target=target, abs=False, additional_forward_args=args), EXACT)
    ours = IntegratedGradients(model).attribute(x1, target, additional_forward_args=args, n_steps=8, method="riemann_right")
    theirs = CaptumIG(wrapped).attribute(x1, target=target, additional_forward_args=args, n_steps=8, method="riemann_right")
    assert_close_rel(ours, theirs, EXACT)
    # one non-tuple value is one argument: model(x1, x2)
    assert_close_rel(Gradient(model).attribute(x1, target, additional_forward_args=x2),
                     Saliency(model).attribute(x1, target=target, abs=False, additional_forward_args=x2), EXACT)


def test_smoothgrad_with_additional_forward_args_equals_captum_noise_tunnel(two_inputs):
    """Same noise: Captum draws torch.normal(0, stdev) in float32 from the global generator; ours takes
    those draws divided by stdev as its `noise` option."""
    model, (x1, x2), scale = two_inputs
    target = torch.tensor([1, 0, 2, 2])
    torch.manual_seed(4)
    draws = torch.normal(0, torch.tensor(0.2).repeat((4 * 6, 4))).view(4, 6, 4).double()
    ours = SmoothGrad(model, sigma=0.2, samples=6).attribute(x1, target, additional_forward_args=(x2, scale), noise=draws / 0.2)
    torch.manual_seed(4)
    theirs = CaptumNT(Saliency(model)).attribute(
        x1, nt_type="smoothgrad", nt_samples=6, stdevs=0.2, target=target, abs=False, additional_forward_args=(x2, scale)
    )
    assert_close_rel(ours, theirs, EXACT)


def test_tuple_inputs_equal_captum(two_inputs):
    model, inputs, scale = two_inputs
    target = [2, 1, 0, 1]
    _close_tuple(Gradient(model).attribute(inputs, target), Saliency(model).attribute(inputs, target=target, abs=False))
    baselines = (torch.full_like(inputs[0], 0.1), -0.2)
    ours, delta = IntegratedGradients(model, n_steps=16, method="riemann_middle").attribute(
        inputs, target, baselines=baselines, additional_forward_args=(scale,), return_convergence_delta=True
    )
    theirs, their_delta = CaptumIG(model).attribute(
        inputs, baselines=baselines, target=target, additional_forward_args=(scale,), n_steps=16, method="riemann_middle",
        return_convergence_delta=True,
    )
    _close_tuple(ours, theirs)
    assert torch.allclose(delta, their_delta, rtol=0, atol=1e-12)
    explanation = Gradient(model).explain(inputs, target)
    assert isinstance(explanation.attributions, tuple) and len(explanation) == 4
    single = Gradient(model).attribute(inputs[0], target, additional_forward_args=inputs[1])
    assert isinstance(single, torch.Tensor)  # a tensor in, a tensor out
    assert_close_rel(single, explanation.attributions[0], EXACT)


def test_tuple_smoothgrad_equals_captum_noise_tunnel(two_inputs):
    """Captum draws per chunk, per input tensor in order: ours takes the same draws as `noise`."""
    model, (x1, x2), _ = two_inputs
    target = torch.tensor([0, 1, 2, 0])
    torch.manual_seed(8)
    d1 = torch.normal(0, torch.tensor(0.3).repeat((4 * 5, 4))).view(4, 5, 4).double()
    d2 = torch.normal(0, torch.tensor(0.3).repeat((4 * 5, 2, 3))).view(4, 5, 2, 3).double()
    ours = SmoothGrad(model, sigma=0.3, samples=5).explain((x1, x2), target, noise=(d1 / 0.3, d2 / 0.3))
    torch.manual_seed(8)
    theirs = CaptumNT(Saliency(model)).attribute((x1, x2), nt_type="smoothgrad", nt_samples=5, stdevs=0.3, target=target, abs=False)
    _close_tuple(ours.attributions, theirs)
    assert ours.diagnostics["noise_std"].shape == (4, 2)


def test_index_tuple_targets_for_dense_outputs_equal_captum(segmenter):
    model, x = segmenter
    per_example = [(0, 1, 2), (2, 4, 0), (1, 3, 3)]
    for target in [(1, 2, 3), per_example]:
        assert_close_rel(Gradient(model).attribute(x, target), Saliency(model).attribute(x, target=target, abs=False), EXACT)
        ours = IntegratedGradients(model, n_steps=8, method="riemann_left").attribute(x, target, internal_batch_size=5)
        theirs = CaptumIG(model).attribute(x, target=target, n_steps=8, method="riemann_left", internal_batch_size=5)
        assert_close_rel(ours, theirs, EXACT)
    explanation = Gradient(model).explain(x, per_example)
    assert explanation.target.tolist() == [list(t) for t in per_example]
    # two 3 x 3 convolutions: output[0, 0, 1, 2] depends on input rows 0..3 only, and on row 3 somewhere
    a = explanation.attributions[0]
    assert float(a[:, 4:, :].abs().max()) == 0.0 and float(a[:, 3, :].abs().max()) > 0.0


@pytest.mark.parametrize("target, message", [
    (None, "index tuple of length 3"),
    (1, "index tuple of length 3"),
    ((1, 2), "one index tuple of length 3"),
    ([(0, 1, 2), (0, 1, 2)], r"\(2, 3\)"),
    ((3, 0, 0), "out of range"),
    ((0, 0, 5), "out of range"),
])
def test_bad_index_targets_are_target_errors(segmenter, target, message):
    model, x = segmenter
    with pytest.raises(TargetError, match=message):
        Gradient(model).attribute(x, target)


def test_other_explainers_refuse_tuple_inputs_and_forward_args(two_inputs, digits64):
    model, inputs, _ = two_inputs
    mg = MoreauGrad(model, rho=0.5, max_iter=20)
    with pytest.raises(UsageError, match=r"MoreauGrad.explain\(\) and .attribute\(\) take one input tensor.*IntegratedGradients"):
        mg.attribute(inputs, 0)
    with pytest.raises(UsageError, match="do not take additional_forward_args"):
        mg.attribute(inputs[0], 0, additional_forward_args=inputs[1])
    net, x, _ = digits64
    with pytest.raises(UsageError, match="accepted options besides inputs and target: none"):
        MoreauGrad(net, rho=0.5, max_iter=20).attribute(x, rho=0.1)
