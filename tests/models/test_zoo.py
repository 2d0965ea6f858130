"""The zoo: accuracy, determinism of training (stable weights hash) and caching. (Data sets, specs,
builders, hashing and training have their own modules: test_datasets.py, test_spec.py, ...)"""
import pytest
import torch

from certify.errors import UnsupportedError
from certify.models import model_hash, zoo
from certify.models.training import accuracy, train_classifier


@pytest.mark.parametrize(
    "name", ["digits-softplus-mlp", "digits-relu-mlp", "digits-softplus-cnn", "breast-cancer-relu-mlp"]
)
def test_required_zoo_models_reach_accuracy(name):
    model, data = zoo.load(name)
    assert not model.training
    assert accuracy(model, data.x_test, data.y_test) >= 0.95
    assert model(data.x_test[:2]).shape == (2, data.num_classes)


def test_training_is_deterministic_and_thread_independent(tmp_path, monkeypatch):
    """Retraining from the recipe reproduces the cached weights bit for bit, whatever the thread count."""
    name = "breast-cancer-relu-mlp"
    cached, data = zoo.load(name)
    spec = zoo.recipe(name)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        fresh = train_classifier(spec.build(data), data, spec.epochs, spec.lr, spec.batch_size, spec.weight_decay, spec.seed)
    finally:
        torch.set_num_threads(threads)
    assert model_hash(fresh) == model_hash(cached)
    assert torch.get_num_threads() == threads


def test_corrupt_cache_entry_is_retrained(tmp_path, monkeypatch):
    monkeypatch.setenv("CERTIFY_CACHE", str(tmp_path))
    model, _ = zoo.load("blobs-relu-mlp")
    (entry,) = (tmp_path / "models").glob("blobs-relu-mlp-*.pt")
    entry.write_bytes(b"not a checkpoint")
    again, _ = zoo.load("blobs-relu-mlp")
    assert model_hash(again) == model_hash(model)


def test_unknown_names_are_refused():
    with pytest.raises(UnsupportedError, match="unknown zoo model"):
        zoo.load("imagenet-resnet")
