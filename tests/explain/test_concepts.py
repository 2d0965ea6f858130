"""Semantic concepts as directions in a representation (certify.explain.concepts)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from certify.errors import InvalidInputError, UnsupportedError, UsageError
from certify.explain.concepts import (
    capture_activations,
    class_probability,
    concept_directions,
    digit_predicates,
    hidden_representation,
    random_directions,
    split_sequential,
)
from certify.models.datasets import load_dataset


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 16), nn.Softplus(), nn.Linear(16, 10)).eval()


def _state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_extraction_leaves_model_unchanged():
    model = _model()
    before = _state(model)
    x = torch.rand(8, 64)
    logits = model(x)
    h = hidden_representation(model, x)
    torch.testing.assert_close(h, model[1](model[0](x)))
    h2 = capture_activations(model, model[1], x)
    torch.testing.assert_close(h, h2)
    torch.testing.assert_close(class_probability(model, h, 3), torch.softmax(logits, 1)[:, 3].detach())
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    assert not model.training and len(model) == 3
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    torch.testing.assert_close(model(x), logits)


def test_hook_removed_on_error():
    model = _model()
    with pytest.raises(RuntimeError):
        capture_activations(model, model[1], torch.rand(2, 7))  # wrong width: the forward fails
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    with pytest.raises(UsageError):
        capture_activations(model, nn.ReLU(), torch.rand(2, 64))


def test_split_sequential():
    model = _model()
    body, head = split_sequential(model)
    assert len(body) == 2 and head[0] is model[2]
    with pytest.raises(UsageError):
        split_sequential(model, at=0)
    with pytest.raises(UnsupportedError):
        split_sequential(nn.Linear(3, 2))
    with pytest.raises(UsageError):
        class_probability(model, torch.rand(2, 16), 10)


def test_digit_predicates_mean_what_they_say():
    img = np.zeros((3, 8, 8))
    img[0, :4] = 1.0  # ink only in the top half
    img[1, :, 3:5] = 1.0  # a vertical bar in the centre
    img[2, 1, 2:6] = img[2, 6, 2:6] = img[2, 1:7, 2] = img[2, 1:7, 5] = 1.0  # a closed ring (hole 4x2)
    p = digit_predicates(img.reshape(3, 64))
    assert p["top_half"][0] == 1.0 and p["top_half"][1] == 0.5
    assert p["centre_column"][1] == 1.0 and p["centre_column"][0] == 0.5
    assert p["loop"].tolist() == [0.0, 0.0, 8.0]
    with pytest.raises(UsageError):
        digit_predicates(img, ["nonsense"])
    with pytest.raises(InvalidInputError):
        digit_predicates(np.zeros((2, 10)))


@pytest.mark.parametrize("method", ["ridge", "logistic", "mean-diff"])
def test_concept_directions_track_the_predicate(method):
    data = load_dataset("digits-flat")
    x = data.x_train[:600]
    model = _model()
    h = hidden_representation(model, x)
    preds = digit_predicates(x, ["loop", "centre_column"])
    bank = concept_directions(h, preds, method=method)
    assert bank.directions.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(bank.directions, axis=1), 1.0)
    z = bank.scores(h)
    for k, name in enumerate(bank.names):
        assert np.corrcoef(z[:, k], preds[name])[0, 1] > 0.3
    with pytest.raises(UsageError):
        concept_directions(h, preds, method="pca")
    with pytest.raises(InvalidInputError):
        concept_directions(h, {"flat": np.ones(600)})


def test_random_directions_unit_and_seeded():
    a, b = random_directions(16, 3, seed=1), random_directions(16, 3, seed=1)
    assert np.array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0)
    with pytest.raises(UsageError):
        random_directions(0)
