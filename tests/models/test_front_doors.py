"""Front doors of certify.models.spec.load_model added for issue 12: module:callable with the current
directory importable (as `python -m` makes it) and .py file paths, DataParallel unwrapped, and TorchScript
files translated by both translations (their graph rebuilt) or refused in one line naming the op and what to
pass instead."""
import sys

import pytest
import torch
from torch import nn

from certify.bounds.network import conformance, from_module
from certify.certificates import semantics as S
from certify.errors import UnsupportedError
from certify.models.spec import load_model

# TorchScript is a documented SPEC kind; torch's deprecation notices for it are not what is tested here
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")

USER_MODULE = """
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))

def wrapped():
    return nn.DataParallel(build())
"""


@pytest.fixture()
def in_user_dir(tmp_path, monkeypatch):
    (tmp_path / "h7_cwd_models.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    saved = list(sys.path)
    monkeypatch.setattr(sys, "path", [p for p in saved if p not in ("", str(tmp_path))])
    yield tmp_path
    sys.modules.pop("h7_cwd_models", None)


def test_module_callable_imports_from_the_current_directory(in_user_dir):
    model, data = load_model("h7_cwd_models:build")
    assert data is None and isinstance(model, nn.Sequential) and not model.training


def test_a_python_file_path_is_accepted(in_user_dir):
    model, _ = load_model(str(in_user_dir / "h7_cwd_models.py") + ":build")
    assert isinstance(model, nn.Sequential)
    same, _ = load_model("h7_cwd_models.py:build")
    x = torch.randn(2, 2, 2)
    assert torch.equal(model(x), same(x))
    with pytest.raises(UnsupportedError, match="does not exist"):
        load_model("nowhere_h7.py:build")


def test_data_parallel_is_unwrapped(in_user_dir):
    model, _ = load_model("h7_cwd_models:wrapped")
    assert isinstance(model, nn.Sequential) and not model.training
    net = from_module(model, (2, 2))
    assert [w.shape[0] for w in net.weights] == [3, 2]


class _Branchy(nn.Module):
    def forward(self, x):
        if bool(x.sum() > 0):
            return x.flatten(1)
        return -x.flatten(1)


def test_torchscript_files_are_translated_by_both_translations_or_refused_in_one_line(tmp_path):
    """A ScriptModule goes to both translations as it is (they rebuild its graph: certify.models.torchscript);
    N conforms to the ScriptModule; one whose graph cannot be rebuilt is refused in one line that names the
    op and what to pass instead."""
    eager = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    x = torch.randn(3, 2, 2)
    for kind, compiled in (("script", torch.jit.script(eager)), ("trace", torch.jit.trace(eager, torch.zeros(1, 2, 2)))):
        path = tmp_path / f"{kind}.pt"
        compiled.save(str(path))
        model, _ = load_model(str(path))
        net = from_module(model, (2, 2))
        assert all(torch.equal(a, b) for a, b in zip(net.weights, from_module(eager, (2, 2)).weights))
        assert conformance(model, net, x).passed
        assert S.check_conformance(model, S.translate(model, (2, 2)), x)[2]
    branchy = tmp_path / "branchy.pt"
    torch.jit.script(_Branchy()).save(str(branchy))
    model, _ = load_model(str(branchy))
    with pytest.raises(UnsupportedError) as bound_side:
        from_module(model, (2, 2))
    with pytest.raises(UnsupportedError) as checker_side:
        S.translate(model, (2, 2))
    for err in (bound_side, checker_side):
        text = str(err.value)
        assert "\n" not in text and "prim::If" in text and "module:callable" in text and "ONNX" in text
