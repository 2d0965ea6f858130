"""certify.models.hashing: the content hashes identify weights and architecture bit for bit, and nothing else."""
import copy
import hashlib

import pytest
import torch
from torch import nn

from certify.models.builders import Normalize, mlp
from certify.models.hashing import model_hash, tensor_hash


def _model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return mlp(5, 3, hidden=(4,), act="softplus")


def _flip_lowest_bit(t: torch.Tensor, index: int = 0) -> None:
    with torch.no_grad():
        bits = t.view(-1).view(torch.int32)
        bits[index] ^= 1


def test_tensor_hash_is_sha256_of_dtype_shape_and_bytes():
    """The documented format, recomputed by hand (a change breaks every stored certificate)."""
    t = torch.tensor([[1.0, -2.0, 3.5], [0.0, 4.0, -0.25]])
    expected = hashlib.sha256(b"torch.float32(2, 3)" + t.numpy().tobytes()).hexdigest()
    assert tensor_hash(t) == expected
    assert len(tensor_hash(t)) == 64 and int(tensor_hash(t), 16) >= 0


def test_model_hash_is_sha256_of_repr_code_and_named_tensors():
    import inspect

    model = Normalize([0.5], [2.0])
    digest = hashlib.sha256(repr(model).encode())
    digest.update(b"\0" + f"certify.models.builders.Normalize:{inspect.getsource(Normalize.forward)}".encode())
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
        digest.update(value.numpy().tobytes())
    assert model_hash(model) == digest.hexdigest()


def test_one_weight_bit_changes_the_model_hash():
    model = _model()
    before = model_hash(model)
    _flip_lowest_bit(model[2].weight, index=5)
    after = model_hash(model)
    assert after != before
    _flip_lowest_bit(model[2].weight, index=5)
    assert model_hash(model) == before  # and flipping it back restores it


def test_one_bias_bit_and_one_buffer_bit_change_the_hash():
    model = _model()
    before = model_hash(model)
    _flip_lowest_bit(model[0].bias, index=3)
    assert model_hash(model) != before
    norm = nn.Sequential(Normalize([0.1, 0.2], [1.0, 1.0]), nn.Linear(2, 2))
    before = model_hash(norm)
    _flip_lowest_bit(norm[0].mean, index=1)  # a buffer, not a parameter
    assert model_hash(norm) != before


def test_hash_is_stable_across_copies_and_reloads():
    model = _model()
    assert model_hash(copy.deepcopy(model)) == model_hash(model)
    fresh = _model(seed=123)
    assert model_hash(fresh) != model_hash(model)
    fresh.load_state_dict(model.state_dict())
    assert model_hash(fresh) == model_hash(model)
    model.eval()
    assert model_hash(model) == model_hash(fresh)  # train/eval mode is not part of the content
    model(torch.randn(2, 5)).sum().backward()  # gradients are not part of it either
    assert model_hash(model) == model_hash(fresh)


def test_architecture_without_parameters_is_part_of_the_hash():
    """ReLU and Softplus networks with the same weights compute different functions: different hashes."""
    relu, soft = mlp(5, 3, hidden=(4,), act="relu"), mlp(5, 3, hidden=(4,), act="softplus")
    soft.load_state_dict(relu.state_dict())
    assert model_hash(relu) != model_hash(soft)
    sharper = mlp(5, 3, hidden=(4,), act="softplus", beta=2.0)
    sharper.load_state_dict(relu.state_dict())
    assert model_hash(sharper) != model_hash(soft)


def test_dtype_is_part_of_the_hash():
    """Same values in another dtype are another model (its rounding differs); bfloat16 is hashed too."""
    model = _model()
    as_double = copy.deepcopy(model).double()
    as_bf16 = copy.deepcopy(model).to(torch.bfloat16)
    hashes = {model_hash(model), model_hash(as_double), model_hash(as_bf16)}
    assert len(hashes) == 3
    assert model_hash(as_double) == model_hash(copy.deepcopy(model).double())  # stable within a dtype
    assert model_hash(as_bf16) == model_hash(copy.deepcopy(model).to(torch.bfloat16))
    with torch.no_grad():
        as_bf16[0].weight[0, 0] = as_bf16[0].weight[0, 0] * 2
    assert model_hash(as_bf16) != model_hash(copy.deepcopy(model).to(torch.bfloat16))


def test_tensor_hash_shape_dtype_layout_and_autograd():
    t = torch.arange(12, dtype=torch.float32)
    assert tensor_hash(t.view(3, 4)) != tensor_hash(t.view(4, 3)) != tensor_hash(t)  # same bytes, other shape
    assert tensor_hash(t) != tensor_hash(t.double())
    assert tensor_hash(t.view(3, 4).T) == tensor_hash(t.view(3, 4).T.contiguous())  # layout does not matter
    leaf = t.clone().requires_grad_(True)
    assert tensor_hash(leaf) == tensor_hash(t)
    assert tensor_hash(torch.tensor([0.0])) != tensor_hash(torch.tensor([-0.0]))  # bytes, not values


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_hash_does_not_depend_on_the_device(device):
    model = _model()
    moved = copy.deepcopy(model).to(device)
    assert model_hash(moved) == model_hash(model)
    assert tensor_hash(model[0].weight.to(device)) == tensor_hash(model[0].weight)


def test_model_hash_covers_the_code_that_decides_the_function():
    """Same repr and weights, other function: an instance-level forward (a monkeypatch), a hook, or a user
    class whose forward differs, each changes the hash (an attacker swapped a patched model in before)."""
    base = _model()
    patched = copy.deepcopy(base)
    linear = patched[0]
    linear.forward = lambda x, _f=linear.forward: _f(x) + 1.0
    assert model_hash(patched) != model_hash(base)
    hooked = copy.deepcopy(base)
    hooked[0].register_forward_hook(lambda m, i, o: o * 2)
    assert model_hash(hooked) != model_hash(base)

    class A(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x):
            return self.lin(x)

    class B(A):
        def forward(self, x):
            return self.lin(x) * 2

    a, b = A(), B()
    b.load_state_dict(a.state_dict())
    B.__name__, B.__qualname__ = A.__name__, A.__qualname__  # the same repr; only the code differs
    assert repr(a) == repr(b) and model_hash(a) != model_hash(b)
    assert model_hash(copy.deepcopy(base)) == model_hash(base)


class _Scaled(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.factor = factor  # a Python attribute: tracing bakes it into the code, not the repr or the tensors

    def forward(self, x):
        return self.lin(x) * self.factor


@pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")
def test_a_torchscript_hash_covers_its_code_and_survives_calls_and_reloads(tmp_path):
    """The repr of a ScriptModule names only the original class: its TorchScript code is hashed. Calling
    it caches the compiled forward in its __dict__, which must not change the hash (explain hashes after
    calling the model, verify before)."""
    one, two = _Scaled(1.0), _Scaled(2.0)
    two.load_state_dict(one.state_dict())
    x = torch.randn(1, 2)
    a, b = torch.jit.trace(one, x), torch.jit.trace(two, x)
    assert repr(a) == repr(b) and model_hash(a) != model_hash(b)
    a.save(str(tmp_path / "a.pt"))
    loaded = torch.jit.load(str(tmp_path / "a.pt"))
    before = model_hash(loaded)
    assert before == model_hash(torch.jit.load(str(tmp_path / "a.pt")))
    loaded(x)
    assert "forward" in loaded.__dict__ and model_hash(loaded) == before
