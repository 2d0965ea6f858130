"""Deterministic CPU training of the small zoo models (seconds each)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from certify.models.datasets import Dataset


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch on one thread inside the block (summation order, hence rounding, is then fixed), and
    restore the previous thread count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_classifier(
    model: nn.Module,
    data: Dataset,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    seed: int,
) -> nn.Module:
    """Adam on the cross-entropy, shuffled mini-batches from a seeded generator, on CPU in float32.

    Returns the model in eval mode. The result depends only on the arguments (same weights every run)."""
    with single_threaded(), torch.random.fork_rng():  # the caller's global RNG state is restored
        torch.manual_seed(seed)  # parameter initialisation
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        generator = torch.Generator().manual_seed(seed)
        optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs)
        loss_fn = nn.CrossEntropyLoss()
        n = data.x_train.shape[0]
        model.train()
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                optimiser.zero_grad()
                loss_fn(model(data.x_train[idx]), data.y_train[idx]).backward()
                optimiser.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of examples whose predicted class equals the label."""
    return float((model(x).argmax(dim=1) == y).float().mean())
