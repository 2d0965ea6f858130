"""Sparsified SmoothGrad (certify/explain/sparsified_smoothgrad.py): the mean of top-l0 indicators of |grad|
(each draw marks exactly l0 features, so the map sums to l0), equal to a per-draw reference loop, invariant to
chunking with the seeded generator, batched equal to per-example with the same noise, the gradient's top-l0 set
at tiny sigma, seeded, and bad parameters refused."""
import pytest
import torch

from certify.errors import InvalidInputError, UsageError
from certify.explain import Gradient
from certify.explain.sparsified_smoothgrad import SparsifiedSmoothGrad
from certify.metrics.similarity import topk_mask


def test_map_is_the_mean_of_top_l0_indicators_of_noisy_gradients(zoo_case):
    _, model, x, y = zoo_case
    m, sigma, l0 = 5, 0.2, 7
    noise = torch.randn((x.shape[0], m, *x.shape[1:]), generator=torch.Generator().manual_seed(2))
    p = SparsifiedSmoothGrad(model, sigma=sigma, samples=m, l0=l0).attribute(x, target=y, noise=noise)
    grad = Gradient(model)
    expected = torch.stack([
        topk_mask(grad.attribute(x + sigma * noise[:, t], target=y), l0).double() for t in range(m)
    ]).sum(0).view_as(x)
    assert torch.equal((p.double() * m).round(), expected)  # counts of draws marking each feature
    assert torch.allclose(p.flatten(1).sum(1).double(), torch.full((x.shape[0],), float(l0), dtype=torch.float64))


def test_generator_draws_are_sample_major_and_chunking_invariant(digits_mlp):
    model, data = digits_mlp
    x = data.x_test[:3]
    whole = SparsifiedSmoothGrad(model, samples=10, seed=4).explain(x)
    chunked = SparsifiedSmoothGrad(model, samples=10, seed=4, samples_per_chunk=3).attribute(x)
    assert torch.equal(whole.attributions, chunked)
    noise = torch.randn((10, 3, *x.shape[1:]), generator=torch.Generator().manual_seed(4)).transpose(0, 1)
    assert torch.equal(SparsifiedSmoothGrad(model, samples=10).attribute(x, noise=noise), chunked)
    assert whole.method == "sparsified-smoothgrad" and whole.params["seed"] == 4
    assert whole.diagnostics["l0"].tolist() == [7, 7, 7]  # ceil(0.1 * 64)
    other = SparsifiedSmoothGrad(model, samples=10, seed=5).attribute(x)
    assert not torch.equal(other, chunked)
    assert torch.equal(SparsifiedSmoothGrad(model).attribute(x, samples=10, seed=5), other)  # per-call options


def test_batched_equals_per_example_with_same_noise(zoo_case):
    _, model, x, y = zoo_case
    noise = torch.randn((x.shape[0], 6, *x.shape[1:]), generator=torch.Generator().manual_seed(3))
    sg = SparsifiedSmoothGrad(model, sigma=0.1, samples=6, l0=0.2)
    batched = sg.attribute(x, target=y, noise=noise)
    single = torch.cat([sg.attribute(x[i : i + 1], target=int(y[i]), noise=noise[i : i + 1]) for i in range(x.shape[0])])
    assert torch.equal(batched, single)


def test_tiny_sigma_gives_the_gradient_top_l0_set(digits_mlp):
    model, data = digits_mlp
    x = data.x_test[:4]
    p = SparsifiedSmoothGrad(model, sigma=1e-9, samples=4, l0=5).attribute(x)
    assert p.shape == x.shape and set(p.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(p.flatten(1).bool(), topk_mask(Gradient(model).attribute(x), 5))


@pytest.mark.parametrize("kwargs", [
    {"sigma": 0.0}, {"sigma": float("inf")}, {"samples": 0}, {"l0": 0}, {"l0": 1.5}, {"l0": True},
    {"seed": -1}, {"seed": 0.5}, {"samples_per_chunk": 0},
])
def test_bad_parameters_refused(digits_mlp, kwargs):
    with pytest.raises(UsageError):
        SparsifiedSmoothGrad(digits_mlp[0], **kwargs)


def test_l0_above_feature_count_and_bad_noise_refused(digits_mlp):
    model, data = digits_mlp
    with pytest.raises(UsageError):
        SparsifiedSmoothGrad(model, l0=65).attribute(data.x_test[:2])
    with pytest.raises(InvalidInputError):
        SparsifiedSmoothGrad(model, samples=3).attribute(data.x_test[:2], noise=torch.zeros((2, 4, 64)))
