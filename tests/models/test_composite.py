"""certify.models.composite: the composite-digit task (determinism, labels == non-empty support, tiles taken
from the right split, the zoo CNN's accuracy)."""
import pytest
import torch

from certify.errors import UsageError
from certify.models import zoo
from certify.models.composite import (
    CompositeDataset,
    composite_digits,
    composite_support,
    make_composites,
    tile_pixels,
    tile_scores,
)
from certify.models.datasets import digits_images, load_dataset
from certify.models.training import accuracy


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits-composite")


DIGITS = digits_images()


def test_shapes_range_and_balance(data):
    assert isinstance(data, CompositeDataset) and data.name == "digits-composite"
    assert data.x_train.shape == (4000, 1, 16, 16) and data.x_test.shape == (1000, 1, 16, 16)
    assert data.x_train.dtype == torch.float32 and data.num_classes == 2
    assert float(data.x_train.min()) >= 0.0 and float(data.x_train.max()) <= 1.0
    assert data.y_train.sum() == 2000 and data.y_test.sum() == 500
    assert data.support_train.shape == (4000, 2, 2) and data.support_test.dtype == torch.bool
    assert data.domain_lo.shape == (1, 16, 16) and float(data.domain_hi.min()) == 1.0


def test_label_is_support_non_empty(data):
    for split in ("train", "test"):
        support = composite_support(data, split)
        y = data.y_train if split == "train" else data.y_test
        assert torch.equal(y.bool(), support.flatten(1).any(dim=1))
    counts = data.support_test.flatten(1).sum(dim=1)
    assert set(counts[data.y_test == 1].tolist()) == {1, 2}  # positives hold 1 or 2 target tiles


def test_tiles_are_digits_of_the_right_split_and_class(data):
    digits = digits_images()
    for x, support, pool, labels in [
        (data.x_test[:50], data.support_test[:50], digits.x_test, digits.y_test),
        (data.x_train[:50], data.support_train[:50], digits.x_train, digits.y_train),
    ]:
        tiles = x.reshape(50, 1, 2, 8, 2, 8).permute(0, 2, 4, 1, 3, 5).reshape(-1, 1, 8, 8)
        dist = (tiles.flatten(1)[:, None, :] - pool.flatten(1)[None]).abs().sum(-1)
        match = dist.min(dim=1)
        assert float(match.values.max()) == 0.0  # every tile is a digit of that split
        assert torch.equal(labels[match.indices] == data.target_digit, support.reshape(-1))


def test_deterministic_and_seed_dependent():
    a, b = composite_digits(DIGITS, n_train=64, n_test=32), composite_digits(DIGITS, n_train=64, n_test=32)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.support_test, b.support_test)
    c = composite_digits(DIGITS, n_train=64, n_test=32, seed=5)
    assert not torch.equal(a.x_train, c.x_train)
    state = torch.get_rng_state()
    composite_digits(DIGITS, n_train=16, n_test=16)
    assert torch.equal(state, torch.get_rng_state())


def test_three_by_three_and_other_targets():
    d = composite_digits(DIGITS, grid=3, target_digit=7, n_train=60, n_test=30)
    assert d.x_train.shape == (60, 1, 24, 24) and d.support_train.shape == (60, 3, 3)
    assert torch.equal(d.y_train.bool(), d.support_train.flatten(1).any(1))
    assert int(d.support_train.flatten(1).sum(1).max()) <= 3


def test_pixel_and_tile_helpers(data):
    masks = tile_pixels(data.support_test[:4])
    assert masks.shape == (4, 1, 16, 16)
    assert torch.equal(tile_scores(masks.float(), 2), 64.0 * data.support_test[:4].float())
    assert torch.equal(tile_scores(masks.float(), 2, reduce="mean"), data.support_test[:4].float())


def test_refusals():
    digits = digits_images()
    with pytest.raises(UsageError):
        make_composites(digits.x_test, digits.y_test, 10, grid=1)
    with pytest.raises(UsageError):
        make_composites(digits.x_test, digits.y_test, 10, max_targets=5)
    with pytest.raises(UsageError):
        make_composites(digits.x_test, digits.y_test, 10, target_digit=11)
    with pytest.raises(UsageError, match="not a composite"):
        composite_support(digits)
    with pytest.raises(UsageError):
        composite_support(composite_digits(DIGITS, n_train=8, n_test=8), "valid")


def test_zoo_cnn_detects_the_target(data):
    model, zdata = zoo.load("composite-relu-cnn")
    assert isinstance(zdata, CompositeDataset) and not model.training
    assert accuracy(model, zdata.x_test, zdata.y_test) >= 0.95
    with torch.no_grad():
        p = model(zdata.x_train.mean(dim=0, keepdim=True)).softmax(dim=1)
    assert float(p[0, 1]) < 0.5  # the mean image (h-Shap's default reference) reads as "absent"
