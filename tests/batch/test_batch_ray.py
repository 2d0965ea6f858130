"""`certify batch --executor ray`: a small batch on a Ray instance started locally by the command, the parent
the single writer; every certificate verifies, and a rerun finds them all done."""
import pytest

from certify.batch.executors import RayExecutor
from certify.batch.runner import BatchConfig, dataset_inputs, run_batch
from certify.batch.store import CertificateStore
from certify.batch.verify import verify_store

pytest.importorskip("ray", reason="ray is not installed (the batch extra: pip install 'certify[batch]')")


def test_small_batch_on_local_ray(tmp_path):
    path = tmp_path / "runs.sqlite"
    config = BatchConfig("zoo:digits-softplus-mlp", ["gradient", "smoothgrad"], {"smoothgrad": {"samples": 16}}, chunk=4)
    inputs = dataset_inputs("digits-flat", "test", 12)
    with CertificateStore(path) as store, RayExecutor(2) as executor:
        assert executor.started_here and executor.ray.is_initialized()
        summary = run_batch(config, inputs, store, executor, "test", progress=False)
    assert not executor.ray.is_initialized()  # the Ray started here is stopped on leaving
    assert (summary.executor, summary.planned, summary.computed) == ("ray", 24, 24)
    report = verify_store(path, progress=False)
    assert (report.valid, report.invalid, report.per_method) == (24, [], {"gradient": 12, "smoothgrad": 12})
