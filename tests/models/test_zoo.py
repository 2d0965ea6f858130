"""The zoo: accuracy, determinism of training (stable weights hash), caching, and data shapes."""
import pytest
import torch

from certify.errors import UnsupportedError
from certify.models import load_dataset, model_hash, zoo
from certify.models.training import accuracy, train_classifier


@pytest.mark.parametrize(
    "name", ["digits-softplus-mlp", "digits-relu-mlp", "digits-softplus-cnn", "breast-cancer-relu-mlp"]
)
def test_required_zoo_models_reach_accuracy(name):
    model, data = zoo.load(name)
    assert not model.training
    assert accuracy(model, data.x_test, data.y_test) >= 0.95
    assert model(data.x_test[:2]).shape == (2, data.num_classes)


def test_data_shapes_and_domains():
    images, flat = load_dataset("digits"), load_dataset("digits-flat")
    assert images.x_train.shape[1:] == (1, 8, 8) and flat.x_train.shape[1:] == (64,)
    assert torch.equal(images.x_test.flatten(1), flat.x_test)  # same split
    assert images.x_train.min() >= 0 and images.x_train.max() <= 1
    cancer = load_dataset("breast-cancer")
    assert abs(float(cancer.x_train.mean())) < 1e-5
    assert torch.all(cancer.x_train >= cancer.domain_lo - 1e-6) and torch.isinf(cancer.domain_hi).all()
    assert load_dataset("moons").num_classes == 2 and load_dataset("blobs").num_classes == 3


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
    with pytest.raises(UnsupportedError, match="unknown data set"):
        load_dataset("mnist")


def test_model_specs(tmp_path):
    from certify.models.spec import load_model

    by_prefix, data = load_model("zoo:digits-relu-mlp")
    by_name, _ = load_model("digits-relu-mlp")
    assert model_hash(by_prefix) == model_hash(by_name) and data.name == "digits-flat"
    scripted = tmp_path / "m.pt"
    torch.jit.script(by_name).save(str(scripted))
    loaded, none = load_model(str(scripted))
    assert none is None and not loaded.training
    x = data.x_test[:3]
    assert torch.equal(loaded(x), by_name(x))
    factory, _ = load_model("torch.nn:Identity")
    assert isinstance(factory, torch.nn.Identity)
    for bad in ("zoo:nope", str(tmp_path / "missing.pt"), "no_such_module:thing", "nonsense"):
        with pytest.raises(UnsupportedError):
            load_model(bad)
