"""Gradient, Integrated Gradients and SmoothGrad against Captum (same quadrature, same noise), and
batched results against per-example results."""
import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import NoiseTunnel, Saliency

from certify.errors import UsageError
from certify.explain import Gradient, IntegratedGradients, SmoothGrad
from conftest import assert_close_rel


def test_gradient_equals_captum_saliency(zoo_case):
    _, model, x, _ = zoo_case
    ours = Gradient(model).attribute(x, target=3)
    theirs = Saliency(model).attribute(x, target=3, abs=False)
    assert_close_rel(ours, theirs)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"])
def test_integrated_gradients_equals_captum(zoo_case, method):
    _, model, x, y = zoo_case
    baseline = torch.full_like(x, 0.1)
    ours = IntegratedGradients(model, n_steps=16, method=method).explain(x, target=y, baselines=baseline)
    theirs, delta = CaptumIG(model).attribute(
        x, baselines=baseline, target=y, n_steps=16, method=method, return_convergence_delta=True
    )
    if method == "riemann_trapezoid":
        # Captum's trapezoid weights are 1/n with halved ends (they sum to (n-1)/n); ours are the
        # trapezoid rule's 1/(n-1): the attributions differ exactly by that factor.
        assert_close_rel(ours.attributions, theirs * 16 / 15)
    else:
        assert_close_rel(ours.attributions, theirs)
        assert torch.allclose(ours.diagnostics["completeness_delta"], delta.to(x.dtype), atol=1e-4)


def test_integrated_gradients_chunking_does_not_change_result(digits_mlp):
    model, data = digits_mlp
    x = data.x_test[:5]
    whole = IntegratedGradients(model, n_steps=20).attribute(x)
    chunked = IntegratedGradients(model, n_steps=20, internal_batch_size=7).attribute(x)
    assert_close_rel(chunked, whole, 1e-6)


def test_integrated_gradients_completeness_improves_with_steps(digits_mlp):
    """Gauss-Legendre converges fast on a smooth softplus net: the completeness gap must shrink."""
    model, data = digits_mlp
    x = data.x_test[:8].double()
    model64 = model.double()
    try:
        coarse = IntegratedGradients(model64, n_steps=2).explain(x).diagnostics["completeness_delta"].abs().max()
        fine = IntegratedGradients(model64, n_steps=64).explain(x).diagnostics["completeness_delta"].abs().max()
    finally:
        model.float()
    assert fine < 1e-8 < coarse


def test_smoothgrad_equals_captum_noise_tunnel(zoo_case):
    _, model, x, y = zoo_case
    ours = SmoothGrad(model, sigma=0.2, samples=12, seed=7).attribute(x, target=y)
    torch.manual_seed(7)  # Captum draws from the global generator in the same (example-major) layout
    theirs = NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=12, stdevs=0.2, target=y, abs=False)
    assert_close_rel(ours, theirs)


def test_smoothgrad_relative_sigma_scales_by_each_example_range(zoo_case):
    """Captum takes one absolute stdev per input tensor; relative sigma is checked against per-example
    Captum calls with each example's own stdev and the same noise."""
    _, model, x, y = zoo_case
    x = x * torch.linspace(0.5, 1.5, x.shape[0]).view(-1, *([1] * (x.dim() - 1)))  # different ranges
    sg = SmoothGrad(model, sigma=0.2, samples=12, relative=True, seed=7)
    ours = sg.attribute(x, target=y)
    flat = x.flatten(1)
    stdev = 0.2 * (flat.max(1).values - flat.min(1).values)
    torch.manual_seed(7)
    noise = torch.randn((x.shape[0], 12, *x.shape[1:]))
    expected = torch.stack([
        Saliency(model).attribute(x[i] + stdev[i] * noise[i], target=int(y[i]), abs=False).mean(0)
        for i in range(x.shape[0])
    ])
    assert_close_rel(ours, expected)


def test_smoothgrad_chunks_bound_memory_with_same_noise(digits_mlp):
    model, data = digits_mlp
    x = data.x_test[:4]
    noise = torch.randn((4, 10, *x.shape[1:]), generator=torch.Generator().manual_seed(1))
    whole = SmoothGrad(model, samples=10).attribute(x, noise=noise)
    chunked = SmoothGrad(model, samples=10, samples_per_chunk=3).attribute(x, noise=noise)
    assert_close_rel(chunked, whole, 1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: Gradient(m),
        lambda m: IntegratedGradients(m, n_steps=8),
        lambda m: IntegratedGradients(m, n_steps=8, method="riemann_trapezoid", internal_batch_size=5),
    ],
)
def test_batched_equals_per_example(zoo_case, make):
    _, model, x, y = zoo_case
    explainer = make(model)
    batched = explainer.attribute(x, target=y)
    single = torch.cat([explainer.attribute(x[i : i + 1], target=int(y[i])) for i in range(x.shape[0])])
    assert_close_rel(batched, single, 1e-5)


def test_smoothgrad_batched_equals_per_example_with_same_noise(zoo_case):
    _, model, x, y = zoo_case
    noise = torch.randn((x.shape[0], 6, *x.shape[1:]), generator=torch.Generator().manual_seed(3))
    sg = SmoothGrad(model, sigma=0.1, samples=6)
    batched = sg.attribute(x, target=y, noise=noise)
    single = torch.cat([sg.attribute(x[i : i + 1], target=int(y[i]), noise=noise[i : i + 1]) for i in range(x.shape[0])])
    assert_close_rel(batched, single, 1e-5)


def test_smoothgrad_seed_reproducible_and_zero_sigma_is_gradient(digits_mlp):
    model, data = digits_mlp
    x = data.x_test[:3]
    a = SmoothGrad(model, samples=5, seed=11).attribute(x)
    b = SmoothGrad(model, samples=5, seed=11).attribute(x)
    c = SmoothGrad(model, samples=5, seed=12).attribute(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert_close_rel(SmoothGrad(model, sigma=0.0, samples=3).attribute(x), Gradient(model).attribute(x), 1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: IntegratedGradients(m, n_steps=0),
        lambda m: IntegratedGradients(m, method="simpson"),
        lambda m: IntegratedGradients(m, internal_batch_size=0),
        lambda m: SmoothGrad(m, sigma=-1.0),
        lambda m: SmoothGrad(m, samples=0),
    ],
)
def test_bad_parameters_are_refused(digits_mlp, make):
    with pytest.raises(UsageError):
        make(digits_mlp[0])
