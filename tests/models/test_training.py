"""certify.models.training: training depends only on its arguments (bit for bit), leaves the caller's RNG
and thread count as they were, and learns; `accuracy` against hand-made logits."""
import pytest
import torch
from torch import nn

from certify.models.builders import mlp
from certify.models.datasets import load_dataset
from certify.models.hashing import model_hash
from certify.models.training import accuracy, single_threaded, train_classifier

ARGS = dict(epochs=3, lr=1e-2, batch_size=64, weight_decay=1e-4)


@pytest.fixture(scope="module")
def blobs():
    return load_dataset("blobs")


def _train(data, seed=0, init_seed=0, **overrides):
    torch.manual_seed(init_seed)  # the model's initial weights: training must not depend on them
    model = mlp(2, 3, hidden=(8,), act="softplus")
    return train_classifier(model, data, seed=seed, **{**ARGS, **overrides})


class _ThreadProbe(nn.Module):
    """Identity that records torch's thread count whenever it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[int] = set()

    def forward(self, x):
        self.seen.add(torch.get_num_threads())
        return x


def test_result_depends_only_on_the_arguments(blobs):
    first = _train(blobs, seed=0, init_seed=1)
    second = _train(blobs, seed=0, init_seed=2)  # other initial weights, other global RNG state
    assert model_hash(first) == model_hash(second)
    assert model_hash(_train(blobs, seed=1)) != model_hash(first)
    assert model_hash(_train(blobs, seed=0, lr=5e-3)) != model_hash(first)


def test_returns_the_same_model_in_eval_mode(blobs):
    model = mlp(2, 3, hidden=(8,)).train()
    out = train_classifier(model, blobs, seed=0, **ARGS)
    assert out is model and not model.training


def test_the_callers_global_rng_state_is_restored(blobs):
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    expected = torch.rand(5)
    torch.set_rng_state(state)
    model = mlp(2, 3, hidden=(8,))
    torch.set_rng_state(state)
    train_classifier(model, blobs, seed=0, **ARGS)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(torch.rand(5), expected)


def test_training_runs_single_threaded_and_restores_the_thread_count(blobs):
    previous = torch.get_num_threads()
    probe = _ThreadProbe()
    model = nn.Sequential(probe, mlp(2, 3, hidden=(8,)))
    try:
        torch.set_num_threads(2)
        train_classifier(model, blobs, seed=0, **{**ARGS, "epochs": 1})
        assert probe.seen == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_result_does_not_depend_on_the_callers_thread_count(blobs):
    previous = torch.get_num_threads()
    hashes = set()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            hashes.add(model_hash(_train(blobs, seed=3)))
    finally:
        torch.set_num_threads(previous)
    assert len(hashes) == 1


def test_single_threaded_restores_the_count_after_an_error():
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(KeyError):
            with single_threaded():
                assert torch.get_num_threads() == 1
                raise KeyError("boom")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_training_learns_the_blobs(blobs):
    torch.manual_seed(0)
    untrained = mlp(2, 3, hidden=(8,))
    model = _train(blobs, seed=0, epochs=10)
    assert accuracy(model, blobs.x_test, blobs.y_test) >= 0.9
    loss = nn.CrossEntropyLoss()
    with torch.no_grad():
        assert loss(model(blobs.x_train), blobs.y_train) < loss(untrained(blobs.x_train), blobs.y_train)


def test_accuracy_on_hand_made_logits():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [5.0, 0.0, 6.0], [0.0, 0.0, 1.0]])

    class Fixed(nn.Module):
        def forward(self, x):
            return logits[x.long().view(-1)]

    x = torch.arange(4.0).view(4, 1)
    assert accuracy(Fixed(), x, torch.tensor([0, 1, 2, 2])) == 1.0
    assert accuracy(Fixed(), x, torch.tensor([0, 1, 0, 0])) == 0.5
    assert accuracy(Fixed(), x, torch.tensor([1, 0, 0, 1])) == 0.0
    assert isinstance(accuracy(Fixed(), x, torch.tensor([0, 0, 0, 0])), float)


def test_accuracy_builds_no_autograd_graph():
    model = nn.Linear(2, 2)
    seen = []
    model.register_forward_hook(lambda m, i, out: seen.append(out.requires_grad))
    accuracy(model, torch.randn(3, 2), torch.zeros(3, dtype=torch.long))
    assert seen == [False]
