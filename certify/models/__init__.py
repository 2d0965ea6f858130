"""Embedded data sets, model builders, deterministic training and the model zoo."""
from certify.models.builders import mlp, small_cnn
from certify.models.datasets import Dataset, load_dataset
from certify.models.hashing import model_hash, tensor_hash
from certify.models.integrity import check_torch_integrity  # noqa: F401 - snapshot torch's functions at import

__all__ = ["Dataset", "load_dataset", "mlp", "small_cnn", "model_hash", "tensor_hash"]
