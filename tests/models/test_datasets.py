"""certify.models.datasets: shapes, the fixed stratified split, the input domains and refusals."""
import math

import numpy as np
import pytest
import torch
from sklearn import datasets as skdata

from certify.errors import EXIT_UNSUPPORTED, UnsupportedError
from certify.models.datasets import LOADERS, SPLIT_SEED, TEST_FRACTION, Dataset, load_dataset

# name -> (total examples, per-example shape, classes)
EXPECTED = {
    "digits": (1797, (1, 8, 8), 10),
    "digits-flat": (1797, (64,), 10),
    "breast-cancer": (569, (30,), 2),
    "blobs": (600, (2,), 3),
    "moons": (600, (2,), 2),
    "digits-composite": (5000, (1, 16, 16), 2),  # 2x2 tiles of digits: is a 0 present? (issue 15)
}


def test_every_loader_is_listed_and_expected():
    assert set(LOADERS) == set(EXPECTED)
    assert SPLIT_SEED == 0 and TEST_FRACTION == 0.2


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shapes_dtypes_and_split_sizes(name):
    total, shape, classes = EXPECTED[name]
    data = load_dataset(name)
    assert isinstance(data, Dataset) and data.name == name
    n_test = math.ceil(TEST_FRACTION * total)  # scikit-learn rounds the test share up
    assert data.x_test.shape == (n_test, *shape) and data.x_train.shape == (total - n_test, *shape)
    assert data.y_train.shape == (total - n_test,) and data.y_test.shape == (n_test,)
    assert data.x_train.dtype == data.x_test.dtype == torch.float32
    assert data.y_train.dtype == data.y_test.dtype == torch.long
    assert data.input_shape == shape and data.num_classes == classes
    labels = torch.cat([data.y_train, data.y_test])
    assert set(labels.tolist()) == set(range(classes))
    assert data.x_train.is_contiguous() and torch.isfinite(data.x_train).all() and torch.isfinite(data.x_test).all()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_split_is_stratified(name):
    """Each class's share of the test split is TEST_FRACTION of its examples, up to one example."""
    data = load_dataset(name)
    for c in range(data.num_classes):
        in_test = int((data.y_test == c).sum())
        overall = in_test + int((data.y_train == c).sum())
        assert abs(in_test - TEST_FRACTION * overall) <= 1


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loading_is_deterministic(name):
    a, b = load_dataset(name), load_dataset(name)
    for field in ("x_train", "y_train", "x_test", "y_test", "domain_lo", "domain_hi"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_domain_contains_every_example_and_broadcasts_to_one_example(name):
    data = load_dataset(name)
    lo, hi = data.domain
    assert lo is data.domain_lo and hi is data.domain_hi
    assert torch.broadcast_shapes(lo.shape, data.input_shape) == data.input_shape
    assert (lo <= hi).all()
    for x in (data.x_train, data.x_test):
        assert (x >= lo).all() and (x <= hi).all()


def test_data_shapes_and_domains():
    images, flat = load_dataset("digits"), load_dataset("digits-flat")
    assert images.x_train.shape[1:] == (1, 8, 8) and flat.x_train.shape[1:] == (64,)
    assert torch.equal(images.x_test.flatten(1), flat.x_test)  # same split
    assert torch.equal(images.y_test, flat.y_test)
    assert images.x_train.min() >= 0 and images.x_train.max() <= 1
    assert torch.equal(images.domain_lo, torch.zeros(1, 8, 8)) and torch.equal(images.domain_hi, torch.ones(1, 8, 8))
    cancer = load_dataset("breast-cancer")
    assert abs(float(cancer.x_train.mean())) < 1e-5
    assert torch.all(cancer.x_train >= cancer.domain_lo - 1e-6) and torch.isinf(cancer.domain_hi).all()
    assert load_dataset("moons").num_classes == 2 and load_dataset("blobs").num_classes == 3


def test_digits_are_scikit_learn_digits_over_sixteen():
    """The pixels are the bundled 0..16 counts divided by 16: every value is a multiple of 1/16."""
    flat = load_dataset("digits-flat")
    x = torch.cat([flat.x_train, flat.x_test])
    assert torch.equal(x * 16, (x * 16).round()) and x.max() == 1.0
    raw = torch.as_tensor(skdata.load_digits().data / 16.0, dtype=torch.float32)
    assert torch.equal(x.sum(0), raw.sum(0))  # a permutation of the same rows


def test_breast_cancer_is_standardised_with_the_training_statistics():
    cancer = load_dataset("breast-cancer")
    assert torch.allclose(cancer.x_train.mean(0), torch.zeros(30), atol=1e-5)
    assert torch.allclose(cancer.x_train.std(0), torch.ones(30), atol=1e-5)
    assert not torch.allclose(cancer.x_test.mean(0), torch.zeros(30), atol=1e-3)  # test set not re-standardised
    # the raw features are >= 0, so the standardised zero bounds every example from below, exactly
    raw = skdata.load_breast_cancer().data
    assert (raw >= 0).all()
    assert (cancer.x_test >= cancer.domain_lo).all() and (cancer.x_train >= cancer.domain_lo).all()
    assert (cancer.domain_lo < 0).all() and torch.isinf(cancer.domain_hi).all() and (cancer.domain_hi > 0).all()


@pytest.mark.parametrize("name", ["blobs", "moons"])
def test_synthetic_sets_are_unbounded(name):
    data = load_dataset(name)
    assert torch.equal(data.domain_lo, torch.full((2,), -np.inf)) and torch.equal(data.domain_hi, torch.full((2,), np.inf))


def test_unknown_data_set_is_unsupported_and_names_the_choices():
    with pytest.raises(UnsupportedError, match="unknown data set 'mnist'") as info:
        load_dataset("mnist")
    assert info.value.exit_code == EXIT_UNSUPPORTED
    assert all(name in str(info.value) for name in LOADERS)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # `from None`: no KeyError chain
