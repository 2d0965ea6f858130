"""ONNX front door (certify.models.onnx, via certify.models.spec.load_model) on the real VNN-COMP 2021
mnistfc networks: all three load, translate exactly (certify.bounds.network.from_module and the checker's
own certify.certificates.semantics.translate agree), reproduce onnxruntime's outputs on the benchmark's 15
images and classify them plausibly."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mnistfc_data as M  # noqa: E402

from certify.bounds.network import conformance, from_module  # noqa: E402
from certify.certificates import semantics as S  # noqa: E402
from certify.errors import UnsupportedError  # noqa: E402
from certify.models.spec import load_model  # noqa: E402


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:  # part of the onnx extra: a missing install is a failure, not a skip
        pytest.fail(f"onnxruntime is not installed (pip install 'certify[onnx]'): {exc}")
    return onnxruntime


@pytest.mark.parametrize("net_name", M.NETS)
def test_mnistfc_net_translates_and_reproduces_onnxruntime(net_name):
    ort = _onnxruntime()
    model = M.model(net_name)
    assert not model.training and model.certify_input_shape == (784, 1)
    assert model.certify_source["ops"] == ["Flatten", "Gemm", "Relu"]
    net = from_module(model, model.certify_input_shape)
    hidden = int(net_name.split("x")[1].split(".")[0])
    assert [w.shape[0] for w in net.weights] == [256] * hidden + [10] and net.deviation == 0.0
    images, labels = M.images()
    x = torch.as_tensor(images, dtype=torch.float32).reshape(-1, 784, 1)
    session = ort.InferenceSession(str(M.data_dir() / net_name), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    reference = np.concatenate([session.run(None, {name: x[i : i + 1].numpy()})[0] for i in range(x.shape[0])])
    ours = net.forward(x.reshape(-1, 784).double()).numpy()
    converted = model(x).detach().double().numpy()
    scale = np.abs(reference).max()
    assert np.abs(ours - reference).max() <= 1e-5 * scale  # float32 runtime vs exact float64 network
    assert np.abs(converted - reference).max() <= 1e-5 * scale
    accuracy = float((reference.argmax(1) == labels).mean())
    assert (ours.argmax(1) == reference.argmax(1)).all()
    assert accuracy >= 13 / 15, f"{net_name}: {accuracy:.2f} on the 15 benchmark images (test accuracy ~0.97)"
    check = conformance(model, net, x[:4])
    assert check.passed, check.detail
    stages = S.translate(model, model.certify_input_shape)
    assert len(stages.mats) == len(net.weights)
    for a, b in zip(stages.mats, net.weights):
        assert torch.equal(a, b)
    assert S.check_conformance(model, stages, x[:4])[2]


def test_onnx_spec_errors_are_package_errors(tmp_path):
    with pytest.raises(UnsupportedError, match="does not exist"):
        load_model(str(tmp_path / "missing.onnx"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(UnsupportedError, match="not a valid ONNX model"):
        load_model(str(bad))


def test_onnx_graph_with_an_unmodelled_op_is_refused_naming_it(tmp_path):
    """A converted graph goes through the same translation as any model: what it does not model exactly
    (here Exp) is refused by name, by both translations; a Sigmoid, which both model, is accepted."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((3, 4), dtype=np.float32), "w")
    models = {}
    for op in ("Exp", "Sigmoid"):
        graph = helper.make_graph(
            [helper.make_node("Gemm", ["x", "w"], ["h"], transB=1), helper.make_node(op, ["h"], ["y"])],
            "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [w],
        )
        path = tmp_path / f"{op}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
        models[op], data = load_model(str(path))
        assert data is None and models[op].certify_input_shape == (4,)
    assert torch.allclose(models["Exp"](torch.ones(2, 4)), torch.exp(torch.full((2, 3), 4.0)))
    with pytest.raises(UnsupportedError, match="exp"):
        from_module(models["Exp"], (4,))
    with pytest.raises(UnsupportedError, match="exp"):
        S.translate(models["Exp"], (4,))
    net = from_module(models["Sigmoid"], (4,))
    assert [a.name for a in net.activations] == ["sigmoid"] and [w.shape[0] for w in net.weights] == [3, 3]
    assert conformance(models["Sigmoid"], net, torch.randn(2, 4)).passed


def test_missing_converter_names_the_install_line(monkeypatch):
    import importlib.util

    import certify.models.onnx as O

    real = importlib.util.find_spec
    monkeypatch.delitem(sys.modules, "onnx2torch", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx2torch" else real(name, *a))
    with pytest.raises(UnsupportedError, match=r"pip install 'certify\[onnx\]'"):
        O.import_converter()


def test_a_broken_torchvision_does_not_block_the_converter(monkeypatch):
    """The PyPI torchvision beside a CPU torch fails at import (RuntimeError); onnx2torch is then imported
    with a stand-in, and the real import error is left in place for everyone else."""
    import importlib

    import certify.models.onnx as O

    for name in [k for k in sys.modules if k == "onnx2torch" or k.startswith("onnx2torch.") or k.startswith("torchvision")]:
        monkeypatch.delitem(sys.modules, name)
    real_import = importlib.import_module

    def fake(name, *args):
        if name == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake)
    monkeypatch.setattr(O, "torchvision_note", None)
    onnx, converter = O.import_converter()
    assert converter.__name__ == "onnx2torch" and "stand-in" in O.torchvision_note
    assert "torchvision" not in sys.modules  # the stand-in served onnx2torch only
