"""`certify batch` in process (certify.batch.runner, executors, verify): a small batch on the process pool,
resuming, inputs from a folder, refused parameters, and `verify_store` catching a wrong row."""
import json

import numpy as np
import pytest
import torch

from certify.batch.executors import ProcessExecutor, make_executor
from certify.batch.runner import BatchConfig, dataset_inputs, directory_inputs, run_batch
from certify.batch.store import CertificateStore, sha256_text
from certify.batch.verify import verify_store
from certify.errors import InvalidInputError, UnsupportedError, UsageError

MODEL = "zoo:digits-softplus-mlp"


def _run(path, config, inputs, workers=1):
    with CertificateStore(path) as store, ProcessExecutor(workers) as executor:
        return run_batch(config, inputs, store, executor, "test", progress=False)


def test_small_batch_on_the_process_pool(tmp_path):
    path = tmp_path / "runs.sqlite"
    config = BatchConfig(MODEL, ["gradient", "smoothgrad"], {"smoothgrad": {"samples": 16}}, eps=0.1, chunk=6)
    inputs = dataset_inputs("digits-flat", "test", 20)
    summary = _run(path, config, inputs, workers=2)
    assert (summary.planned, summary.already_done, summary.computed, summary.redone) == (40, 0, 40, 0)
    assert summary.per_method["gradient"]["certificates"] == 20
    with CertificateStore(path) as store:
        rows = list(store.rows())
    assert sorted((r.input_id, r.method) for r in rows) == sorted((i, m) for i in inputs.ids for m in config.methods)
    smooth = next(r for r in rows if r.method == "smoothgrad")
    assert json.loads(smooth.params) == {"eps": 0.1, "k": None, "model": MODEL, "params": {"samples": 16}}
    assert json.loads(smooth.certificate)["provenance"]["explainer"]["params"]["samples"] == 16
    report = verify_store(path, progress=False)
    assert (report.certificates, report.valid, report.invalid) == (40, 40, [])
    with CertificateStore(path) as store:
        assert {r.status for r in store.rows()} == {"valid"}
    again = _run(path, config, dataset_inputs("digits-flat", "test", 24))  # 4 more inputs: only those computed
    assert (again.already_done, again.computed, again.redone) == (40, 8, 0)


def test_verify_store_names_wrong_rows(tmp_path):
    path = tmp_path / "runs.sqlite"
    _run(path, BatchConfig(MODEL, ["gradient"], chunk=4), dataset_inputs("digits-flat", "test", 3))
    with CertificateStore(path) as store:
        rows = {r.input_id: r for r in store.rows()}
        # a certificate stored under another input's key (its hash re-stamped: only the binding check can see it)
        moved = rows["digits-flat:test:0"].certificate
        store.db.execute("UPDATE certificates SET certificate = ?, sha256 = ? WHERE input_id = 'digits-flat:test:1'",
                         (moved, sha256_text(moved)))
        store.db.execute("UPDATE certificates SET certificate = certificate || ' ' WHERE input_id = 'digits-flat:test:2'")
    report = verify_store(path, progress=False)
    assert report.valid == 1
    problems = {r["input_id"]: " ".join(r["problems"]) for r in report.invalid}
    assert "not the example digits-flat:test:1" in problems["digits-flat:test:1"]
    assert "sha256" in problems["digits-flat:test:2"]


def test_inputs_from_a_folder(tmp_path):
    data = dataset_inputs("digits-flat", "test", 3)
    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / "a.npy", data.x[0])  # without the batch dimension
    torch.save(torch.as_tensor(data.x[1:2]), folder / "b.pt")  # with it
    (folder / "notes.txt").write_text("ignored")
    inputs = directory_inputs(folder, (64,))
    assert inputs.x.shape == (2, 64) and np.array_equal(inputs.x, data.x[:2])
    assert inputs.ids[0].startswith("a.npy@") and inputs.ids[1].startswith("b.pt@")
    summary = _run(tmp_path / "runs.sqlite", BatchConfig(MODEL, ["gradient"]), inputs)
    assert summary.computed == 2
    np.save(folder / "c.npy", data.x[:2])  # a batch of two
    with pytest.raises(InvalidInputError, match="c.npy"):
        directory_inputs(folder, (64,))
    (folder / "c.npy").write_bytes(b"garbage")
    with pytest.raises(InvalidInputError, match="cannot read --inputs file .*c.npy"):
        directory_inputs(folder, (64,))
    with pytest.raises(UsageError, match="no .npy or .pt"):
        directory_inputs(_empty(tmp_path), (64,))


def _empty(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty


@pytest.mark.parametrize("config, error, match", [
    (BatchConfig(MODEL, ["gradient"], {"all": {"rho": 0.3}}), UsageError, "unknown parameters"),
    (BatchConfig(MODEL, ["gradient"], {"moreaugrad": {"rho": 0.3}}), UsageError, "not in --methods"),
    (BatchConfig(MODEL, ["no-such-method"]), UnsupportedError, "unknown explanation method"),
    (BatchConfig(MODEL, ["gradient", "gradient"]), UsageError, "distinct"),
])
def test_refused_before_any_task(tmp_path, config, error, match):
    with CertificateStore(tmp_path / "runs.sqlite") as store, make_executor("process", 1) as executor:
        with pytest.raises(error, match=match):
            run_batch(config, dataset_inputs("digits-flat", "test", 2), store, executor, "t", False)
        assert store.count() == 0


def test_executor_arguments():
    with pytest.raises(UsageError, match="--ray-address needs --executor ray"):
        make_executor("process", 1, "auto")
    with pytest.raises(UsageError, match="workers"):
        make_executor("process", 0)
