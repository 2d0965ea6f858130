"""SmoothGrad (certify/explain/smoothgrad.py): equal to Captum's NoiseTunnel with the same noise (absolute
and per-example relative sigma), chunking-invariant, batched equal to per-example, seeded, sigma = 0 is the
gradient, bad parameters refused."""
import pytest
import torch
from captum.attr import NoiseTunnel, Saliency

from certify.errors import UsageError
from certify.explain import Gradient, SmoothGrad
from conftest import assert_close_rel


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


@pytest.mark.parametrize("make", [lambda m: SmoothGrad(m, sigma=-1.0), lambda m: SmoothGrad(m, samples=0)])
def test_bad_parameters_are_refused(digits_mlp, make):
    with pytest.raises(UsageError):
        make(digits_mlp[0])
