"""How often the forward explainers evaluate the model, and how many points per pass (certify.explain.base,
issue 18 part 4): Gradient runs one forward pass, the validation's, whether the target is given or predicted;
Integrated Gradients reads the scores at its inputs from that pass; the path and sampling methods and NoiseTunnel
chunk by default to `points_per_chunk` points per pass, with results that do not depend on the chunking."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from certify.errors import InvalidInputError, TargetError
from certify.explain import Gradient, IntegratedGradients, SmoothGrad
from certify.explain.base import CHUNK_ELEMENTS, points_per_chunk
from certify.explain.noise_tunnel import NoiseTunnel
from certify.explain.sparsified_smoothgrad import SparsifiedSmoothGrad


class Counted(nn.Module):
    """A softplus MLP that records the batch size of every forward call."""

    def __init__(self, features: int = 6, classes: int = 3) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(features, 16), nn.Softplus(), nn.Linear(16, classes))
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return self.net(x)


@pytest.fixture()
def model() -> Counted:
    return Counted().eval()


@pytest.fixture()
def x() -> torch.Tensor:
    return torch.rand(5, 6, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("target", [None, 2, [0, 1, 2, 0, 1]])
def test_gradient_evaluates_the_model_once(model, x, target) -> None:
    explanation = Gradient(model).explain(x, target)
    assert model.calls == [5]
    xs = x.clone().requires_grad_(True)
    expected_target = model.net(x).argmax(1) if target is None else torch.as_tensor(target).expand(5)
    scores = model.net(xs).gather(1, expected_target.view(-1, 1)).sum()
    (expected,) = torch.autograd.grad(scores, xs)
    torch.testing.assert_close(explanation.attributions, expected)
    assert torch.equal(explanation.target, expected_target)


def test_gradient_still_validates_the_target_and_the_outputs_first(model, x) -> None:
    with pytest.raises(TargetError, match="out of range"):
        Gradient(model).explain(x, 3)

    class Infinite(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.cat([z[:, :2], torch.full_like(z[:, :1], float("inf"))], dim=1)

    with pytest.raises(InvalidInputError, match="NaN or Inf logits"):
        Gradient(Infinite().eval()).explain(x, 0)


def test_integrated_gradients_evaluates_the_inputs_once(model, x) -> None:
    IntegratedGradients(model, n_steps=4, internal_batch_size=8).explain(x, 1)
    # the validation at the inputs (reused for the completeness gap), then 20 path points by 8, then the baselines
    assert model.calls == [5, 8, 8, 4, 5]


def test_points_per_chunk_fills_the_budget_and_never_splits_the_batch() -> None:
    assert points_per_chunk(torch.zeros(3, 64)) == CHUNK_ELEMENTS // 64
    assert points_per_chunk((torch.zeros(3, 1, 8, 8), torch.zeros(3, 64))) == CHUNK_ELEMENTS // 128
    assert points_per_chunk(torch.zeros(3, 64), elements=100) == 3  # at least the batch
    assert points_per_chunk(torch.zeros(2, 3, 224, 224)) == 2


def test_integrated_gradients_chunks_by_default() -> None:
    model = Counted(features=64).eval()
    x = torch.rand(400, 64, generator=torch.Generator().manual_seed(2))
    steps = 2 * CHUNK_ELEMENTS // (64 * 400) + 7  # more than two default chunks of path points
    chunk = points_per_chunk(x)
    default = IntegratedGradients(model, n_steps=steps, method="riemann_middle").attribute(x, 0)
    path_calls = model.calls[1:-1]
    assert max(path_calls) == chunk and sum(path_calls) == 400 * steps and len(path_calls) == -(-400 * steps // chunk) >= 3
    whole = IntegratedGradients(model, n_steps=steps, method="riemann_middle", internal_batch_size=400 * steps).attribute(x, 0)
    torch.testing.assert_close(default, whole, rtol=1e-5, atol=1e-6)


def test_smoothgrad_chunks_by_default_and_its_draws_do_not_depend_on_the_chunking(model) -> None:
    x = torch.rand(50, 6, generator=torch.Generator().manual_seed(3))
    samples = CHUNK_ELEMENTS // (6 * 50) + 5  # more than one default chunk of copies
    default = SmoothGrad(model, samples=samples, seed=4).attribute(x, 1)
    per_example = points_per_chunk(x) // 50
    assert model.calls[1:] == [50 * per_example, 50 * (samples - per_example)]
    for chunk in (samples, 7):
        other = SmoothGrad(model, samples=samples, seed=4, samples_per_chunk=chunk).attribute(x, 1)
        torch.testing.assert_close(other, default, rtol=1e-5, atol=1e-7)
    different_seed = SmoothGrad(model, samples=samples, seed=5).attribute(x, 1)
    assert not torch.allclose(different_seed, default, rtol=1e-5, atol=1e-7)


def test_sparsified_smoothgrad_chunks_by_default(model) -> None:
    x = torch.rand(50, 6, generator=torch.Generator().manual_seed(5))
    samples = CHUNK_ELEMENTS // (6 * 50) + 3
    default = SparsifiedSmoothGrad(model, sigma=0.2, samples=samples, l0=2, seed=1).attribute(x, 0)
    assert model.calls[1:] == [50 * (points_per_chunk(x) // 50), 50 * 3]
    whole = SparsifiedSmoothGrad(model, sigma=0.2, samples=samples, l0=2, seed=1, samples_per_chunk=samples).attribute(x, 0)
    assert torch.equal(default, whole)


def test_noise_tunnel_chunks_by_default_and_its_seeded_draws_do_not_depend_on_the_chunking(model) -> None:
    x = torch.rand(50, 6, generator=torch.Generator().manual_seed(6))
    samples = CHUNK_ELEMENTS // (6 * 50) + 2
    default = NoiseTunnel(Gradient(model), nt_type="vargrad", nt_samples=samples, stdevs=0.2, seed=3).attribute(x, 2)
    per_example = points_per_chunk(x) // 50
    # the validation pass, then per chunk of copies the wrapped Gradient's single pass
    assert model.calls == [50, 50 * per_example, 50 * (samples - per_example)]
    chunked = NoiseTunnel(Gradient(model), nt_type="vargrad", nt_samples=samples, stdevs=0.2, seed=3, nt_samples_batch_size=9)
    torch.testing.assert_close(chunked.attribute(x, 2), default, rtol=1e-4, atol=1e-8)
