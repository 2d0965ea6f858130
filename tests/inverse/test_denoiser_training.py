"""Denoiser training (certify.inverse.training): losses, gamma schedule, determinism, projection, and that each
loss reaches its Bayes estimator where that is known in closed form."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from certify.errors import InvalidInputError, UsageError
from certify.inverse.lpn import LPN
from certify.inverse.training import _stages, denoising_loss, train_denoiser


def test_losses_per_example() -> None:
    est = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    clean = torch.tensor([[0.0, 0.0], [0.0, -3.0]])
    assert torch.allclose(denoising_loss(est, clean, "l2"), torch.tensor([5.0, 9.0]))
    assert torch.allclose(denoising_loss(est, clean, "l1"), torch.tensor([3.0, 3.0]))
    pm = denoising_loss(est, clean, "pm", gamma=2.0)  # the paper's /gamma^2 (not the slide's /gamma)
    assert torch.allclose(pm, 1 - torch.exp(torch.tensor([-5.0 / 4, -9.0 / 4])))
    assert torch.all((pm >= 0) & (pm < 1))
    with pytest.raises(UsageError):
        denoising_loss(est, clean, "pm")
    with pytest.raises(UsageError):
        denoising_loss(est, clean, "huber")


def test_schedule() -> None:
    assert _stages("l2", 100, None, 0) == [("l2", None, 100)]
    plan = _stages("pm", 100, (0.5, 0.3, 0.1), 20)
    assert plan[0] == ("l1", None, 20)
    assert [g for _, g, _ in plan[1:]] == [0.5, 0.3, 0.1] and sum(n for *_, n in plan[1:]) == 100
    for bad in [("pm", 10, None, 0), ("pm", 10, (0.1, -1.0), 0), ("pm", 2, (0.3, 0.2, 0.1), 0), ("l3", 10, None, 0),
                ("l2", 0, None, 0), ("l2", 10, None, -1)]:
        with pytest.raises(UsageError):
            _stages(*bad)


def _gaussian(n: int = 4000) -> torch.Tensor:
    return torch.randn(n, 1, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("loss,kw", [("l2", {}), ("l1", {}), ("pm", {"gamma": (1.0, 0.5)})])
def test_linear_denoiser_reaches_the_gaussian_bayes_estimator(loss: str, kw: dict) -> None:
    """x ~ N(0, 1), y = x + v: posterior N(y/2, 1/2), whose mean, median and mode (the MAP, hence the proximal
    matching minimiser at any gamma, the posterior being symmetric and unimodal) are all y/2."""
    model = nn.Linear(1, 1)
    train_denoiser(model, _gaussian(), 1.0, loss=loss, steps=600, lr=2e-2, batch_size=256, progress=False, **kw)
    assert not model.training
    assert model.weight.item() == pytest.approx(0.5, abs=0.06)
    assert model.bias.item() == pytest.approx(0.0, abs=0.06)


def test_deterministic_and_rng_untouched() -> None:
    clean = _gaussian(500)

    def weights(seed: int, model: nn.Module | None = None) -> torch.Tensor:
        model = model or nn.Sequential(nn.Linear(1, 8), nn.Softplus(), nn.Linear(8, 1))
        train_denoiser(model, clean, 0.5, steps=30, seed=seed, progress=False)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    model = nn.Sequential(nn.Linear(1, 8), nn.Softplus(), nn.Linear(8, 1))
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = weights(0, model)
    after = torch.rand(3)
    assert torch.equal(before, after)  # the caller's global RNG is restored
    assert torch.equal(a, weights(0))
    assert not torch.equal(a, weights(1))


class _Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.calls = 0

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.lin(y)

    def project_(self) -> None:
        self.calls += 1


def test_project_after_every_step_and_augment() -> None:
    model = _Counting()
    seen = []

    def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        seen.append(batch.shape)
        return batch
    train_denoiser(model, torch.rand(50, 2), 0.1, loss="pm", gamma=(0.5, 0.2), steps=10, warm_start_steps=5,
                   augment=augment, batch_size=7, progress=False)
    assert model.calls == 15 + 1  # once before the first step, then after each of the 15 steps
    assert len(seen) == 15 and seen[0] == (7, 2)


def test_lpn_stays_feasible_and_finite_on_laplace_data() -> None:
    """Large inputs saturate softplus units; f = grad psi must still train without NaN (double backward), and the
    non-negative weights stay non-negative after every step (a high learning rate pushes them below 0)."""
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(2000, 1, generator=gen) - 0.5
    clean = -torch.sign(u) * torch.log1p(-2 * u.abs().clamp(max=0.4999))  # Laplace(0, 1), |x| up to ~8
    lpn = LPN(1, hidden=16, layers=3, alpha=0.01)
    train_denoiser(lpn, clean * 3, 1.0, loss="l2", steps=60, lr=5e-2, batch_size=256, progress=False)
    assert all(torch.isfinite(p).all() for p in lpn.parameters())
    assert all(float(w.detach().min()) >= 0 for _, w in lpn.constrained())
    with torch.no_grad():
        out = lpn(torch.linspace(-20, 20, 101).unsqueeze(1))
    assert torch.isfinite(out).all() and torch.all(out[1:] >= out[:-1] - 1e-5)  # monotone: a gradient of a convex psi


def test_average_last_is_an_average() -> None:
    clean = _gaussian(500)

    def trained(avg: int) -> nn.Linear:
        model = nn.Linear(1, 1)
        return train_denoiser(model, clean, 1.0, steps=40, lr=0.1, average_last=avg, progress=False)

    last, one, avg = trained(0), trained(1), trained(20)
    assert torch.equal(last.weight, one.weight)  # averaging the last step alone is the last iterate
    assert not torch.equal(last.weight, avg.weight)
    with pytest.raises(UsageError):
        trained(-1)


def test_input_errors() -> None:
    model = nn.Linear(1, 1)
    with pytest.raises(InvalidInputError):
        train_denoiser(model, torch.tensor([[math.nan]]), 0.1, progress=False)
    with pytest.raises(InvalidInputError):
        train_denoiser(model, torch.ones(5), 0.1, progress=False)
    with pytest.raises(UsageError):
        train_denoiser(model, torch.ones(5, 1), -0.1, progress=False)
    with pytest.raises(UsageError):
        train_denoiser(model, torch.ones(5, 1), 0.1, lr=0.0, progress=False)
