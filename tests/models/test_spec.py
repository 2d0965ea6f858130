"""certify.models.spec: every kind of model SPEC (zoo name, TorchScript file, module:callable and
path/to/file.py:callable), eval mode on return, DataParallel unwrapping, and the package's own error
(UnsupportedError, exit code 66) for every bad spec; an ONNX file with a VNN-LIB input from the CLI.
(Loading ONNX files belongs to certify.models.onnx, TorchScript graphs to certify.models.torchscript.)"""
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mnistfc_data as M  # noqa: E402

from certify.cli import main  # noqa: E402
from certify.errors import EXIT_OK, EXIT_UNSUPPORTED, CertifyError, UnsupportedError  # noqa: E402
from certify.models import model_hash, zoo  # noqa: E402
from certify.models.spec import load_model  # noqa: E402

# TorchScript is a documented SPEC kind; torch's deprecation notices for it are not what is tested here
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    """A user module on sys.path with factories of every shape a spec may point at."""
    (tmp_path / "spec_user_models.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            def build():
                return nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2))  # train mode

            instance = nn.Linear(3, 2)  # a module instance, also in train mode
            not_a_model = [1, 2, 3]

            def returns_a_tensor():
                return torch.zeros(2)

            def needs_arguments(width):
                return nn.Linear(width, 2)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "spec_user_models"
    sys.modules.pop("spec_user_models", None)


def test_model_specs(tmp_path):
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


def test_zoo_specs_return_the_zoo_model_and_its_data():
    model, data = load_model("zoo:blobs-relu-mlp")
    direct, direct_data = zoo.load("blobs-relu-mlp")
    assert not model.training and model_hash(model) == model_hash(direct)
    assert data.name == direct_data.name == "blobs" and torch.equal(data.x_test, direct_data.x_test)


def test_torchscript_file_under_any_suffix_is_loaded_in_eval_mode(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)).train()
    for name in ("m.ts", "m.torchscript", "m.bin"):  # an existing file is tried whatever its suffix
        path = tmp_path / name
        torch.jit.script(model).save(str(path))
        loaded, data = load_model(str(path))
        assert data is None and not loaded.training
        x = torch.randn(5, 3)
        assert torch.equal(loaded(x), loaded(x))  # dropout off: eval mode
        assert torch.equal(loaded(x), model.eval()(x))
        model.train()


def test_a_file_that_is_not_torchscript_is_unsupported(tmp_path):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"not a TorchScript archive")
    with pytest.raises(UnsupportedError, match="is not a TorchScript model file") as info:
        load_model(str(bad))
    assert info.value.exit_code == EXIT_UNSUPPORTED
    state = tmp_path / "state.pt"
    torch.save(nn.Linear(2, 2).state_dict(), state)  # a state dict is not a model
    with pytest.raises(UnsupportedError, match="is not a TorchScript model file"):
        load_model(str(state))


def test_a_missing_model_file_says_so(tmp_path):
    for suffix in (".pt", ".pth", ".ts", ".torchscript"):
        missing = tmp_path / f"missing{suffix}"
        with pytest.raises(UnsupportedError, match="does not exist"):
            load_model(str(missing))


def test_module_callable_specs_come_back_in_eval_mode(user_module):
    built, data = load_model(f"{user_module}:build")
    assert data is None and isinstance(built, nn.Sequential) and not built.training
    assert not any(m.training for m in built.modules())
    instance, _ = load_model(f"{user_module}:instance")
    assert isinstance(instance, nn.Linear) and not instance.training


def test_module_callable_specs_that_are_not_models_are_unsupported(user_module):
    with pytest.raises(UnsupportedError, match="returned list, not a torch.nn.Module"):
        load_model(f"{user_module}:not_a_model")
    with pytest.raises(UnsupportedError, match="returned Tensor, not a torch.nn.Module"):
        load_model(f"{user_module}:returns_a_tensor")
    with pytest.raises(UnsupportedError, match=r"cannot import 'missing' from module"):
        load_model(f"{user_module}:missing")
    with pytest.raises(UnsupportedError, match=r"cannot import 'thing' from module 'no_such_module_for_spec'"):
        load_model("no_such_module_for_spec:thing")


@pytest.mark.parametrize("spec", ["torch.nn:Linear", "spec_user_models:needs_arguments"])
def test_a_factory_that_cannot_be_called_without_arguments_is_a_package_error(user_module, spec):
    """DESIGN section 7: a bad SPEC gives the package's own error (an exit code), never a traceback.

    `module:callable` must name a callable that returns a module when called with no arguments; one that
    needs arguments is a bad spec."""
    with pytest.raises(UnsupportedError, match="no arguments") as info:
        load_model(spec)
    assert isinstance(info.value, CertifyError) and isinstance(info.value.__cause__, TypeError)


def test_a_python_file_path_spec(tmp_path):
    source = tmp_path / "my_net.py"
    source.write_text("from torch import nn\n\ndef make():\n    return nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.3))\n")
    try:
        model, data = load_model(f"{source}:make")
        assert data is None and isinstance(model, nn.Sequential) and not model.training
    finally:
        sys.modules.pop("certify_user_my_net", None)
    with pytest.raises(UnsupportedError, match="does not exist"):
        load_model(f"{tmp_path / 'absent.py'}:make")


def test_a_module_that_raises_on_import_is_unsupported(tmp_path, monkeypatch):
    (tmp_path / "spec_broken_models.py").write_text("raise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(UnsupportedError, match="RuntimeError: no GPU here"):
            load_model("spec_broken_models:build")
    finally:
        sys.modules.pop("spec_broken_models", None)


def test_data_parallel_wrappers_are_unwrapped(tmp_path, monkeypatch):
    (tmp_path / "spec_wrapped_models.py").write_text(
        "from torch import nn\n\ninner = nn.Linear(3, 2)\nwrapped = nn.DataParallel(nn.DataParallel(inner))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        model, _ = load_model("spec_wrapped_models:wrapped")
        assert model is sys.modules["spec_wrapped_models"].inner and not model.training
    finally:
        sys.modules.pop("spec_wrapped_models", None)


def test_every_zoo_name_is_routed_to_the_zoo(monkeypatch):
    """Plain names and zoo: names go to zoo.load (checked without training anything)."""
    seen = []
    monkeypatch.setattr(zoo, "load", lambda name: seen.append(name) or ("model", "data"))
    for name in zoo.names():
        assert load_model(name) == ("model", "data")
        assert load_model(f"zoo:{name}") == ("model", "data")
    assert seen == [n for name in zoo.names() for n in (name, f"zoo:{name}")]


def test_an_unrecognised_spec_lists_the_zoo_names():
    with pytest.raises(UnsupportedError, match="neither a zoo name") as info:
        load_model("nonsense")
    assert all(name in str(info.value) for name in zoo.names())
    with pytest.raises(UnsupportedError, match="unknown zoo model 'zoo:nope'"):
        load_model("zoo:nope")


def test_a_factory_calling_sys_exit_is_a_package_error_not_a_silent_exit(tmp_path, monkeypatch):
    """`certify verify` loads the spec a certificate names; `sys:exit` ended the process with status 0."""
    from certify.models.spec import load_model as _load

    with pytest.raises(UnsupportedError, match="SystemExit"):
        _load("sys:exit")
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(0)\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnsupportedError, match="SystemExit"):
        _load("exits:anything")


def test_explain_an_onnx_file_with_a_vnnlib_input_from_the_cli(tmp_path, capsys):
    """`certify explain --model net.onnx --input prop.vnnlib` on a VNN-COMP mnistfc net: exit 0 and the
    bound-based claims are issued (the converted graph is translated and conforms to the ONNX model)."""
    out = tmp_path / "cert.json"
    net, prop = M.data_dir() / "mnist-net_256x2.onnx", M.data_dir() / "prop_0_0.03.vnnlib"
    assert main(["explain", "--model", str(net), "--input", str(prop), "--method", "gradient", "--out", str(out)]) == EXIT_OK
    assert "no bound-based claims" not in capsys.readouterr().out
    cert = json.loads(out.read_text())
    assert cert["function"]["conformance"]["passed"] and cert["target"] == M.prop("prop_0_0.03.vnnlib").label
    claims = {c["id"]: c for c in cert["claims"]}
    for bound in ("implementation-deviation", "lipschitz", "explanation-error"):
        assert claims[bound]["kind"] == "certified" and claims[bound]["value"] is not None, claims[bound]
    assert claims["curvature"]["value"] is None and "ReLU" in claims["curvature"]["reason"]  # a precise refusal


def test_a_wrapper_with_a_hook_is_refused_not_stripped() -> None:
    from torch import nn

    from certify.errors import UnsupportedError
    from certify.models.spec import unwrap_parallel

    inner = nn.Sequential(nn.Linear(2, 2)).eval()
    wrapper = nn.DataParallel(inner)
    assert unwrap_parallel(wrapper) is inner
    wrapper.register_forward_hook(lambda m, i, o: -o)
    with pytest.raises(UnsupportedError, match="hook"):
        unwrap_parallel(wrapper)
