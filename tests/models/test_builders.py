"""certify.models.builders: the activations, MLP and CNN builders and the Normalize layer, against their
documented structure and closed forms."""
import math

import pytest
import torch
from torch import nn

from certify.errors import EXIT_USAGE, UsageError
from certify.models.builders import ACTIVATIONS, Normalize, activation, mlp, small_cnn


def test_activation_builds_the_named_layer():
    assert type(activation("relu")) is nn.ReLU
    soft = activation("softplus", beta=2.5)
    assert type(soft) is nn.Softplus and soft.beta == 2.5
    assert ACTIVATIONS == ("relu", "softplus")


@pytest.mark.parametrize("beta", [0.0, -1.0])
def test_non_positive_softplus_beta_is_a_usage_error(beta):
    with pytest.raises(UsageError, match="beta must be positive") as info:
        activation("softplus", beta)
    assert info.value.exit_code == EXIT_USAGE


def test_unknown_activation_names_the_choices():
    with pytest.raises(UsageError, match=r"unknown activation 'tanh'.*relu.*softplus"):
        activation("tanh")
    with pytest.raises(UsageError):
        mlp(4, 2, act="gelu")


@pytest.mark.parametrize("beta", [0.5, 1.0, 4.0])
def test_softplus_second_derivative_peaks_at_beta_over_four(beta):
    """The docstring's claim: sigma'' lies in (0, beta / 4], attained at t = 0 (on |beta t| <= 12, below
    torch's switch to the identity at beta t > 20, where the second derivative is 0)."""
    layer = activation("softplus", beta)
    t = torch.linspace(-12.0 / beta, 12.0 / beta, 241, dtype=torch.float64, requires_grad=True)
    (first,) = torch.autograd.grad(layer(t).sum(), t, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), t)
    assert (second > 0).all()
    assert second.max().item() == pytest.approx(beta / 4, rel=1e-12)
    assert second[120].item() == pytest.approx(beta / 4, rel=1e-12)  # t = 0


def test_mlp_structure_and_parameter_count():
    model = mlp(10, 3, hidden=(7, 5), act="softplus", beta=2.0)
    kinds = [type(m) for m in model]
    assert kinds == [nn.Linear, nn.Softplus, nn.Linear, nn.Softplus, nn.Linear]
    shapes = [tuple(m.weight.shape) for m in model if isinstance(m, nn.Linear)]
    assert shapes == [(7, 10), (5, 7), (3, 5)]
    assert all(m.beta == 2.0 for m in model if isinstance(m, nn.Softplus))
    assert sum(p.numel() for p in model.parameters()) == (10 * 7 + 7) + (7 * 5 + 5) + (5 * 3 + 3)
    assert model(torch.randn(4, 10)).shape == (4, 3)


def test_mlp_without_hidden_layers_is_one_linear_map():
    model = mlp(6, 4, hidden=())
    assert len(model) == 1 and isinstance(model[0], nn.Linear) and model[0].weight.shape == (4, 6)


def test_mlp_flatten_accepts_images():
    model = mlp(64, 10, hidden=(8,), flatten=True)
    assert isinstance(model[0], nn.Flatten)
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(RuntimeError):  # without flatten an image batch does not fit the first Linear
        mlp(64, 10, hidden=(8,))(torch.rand(2, 1, 8, 8))


@pytest.mark.parametrize("size", [5, 7, 8, 9])
@pytest.mark.parametrize("channels", [(4,), (4, 6), (3, 4, 5)])
def test_small_cnn_spatial_size_formula(size, channels):
    """The first conv keeps the size (3x3, pad 1), each later one maps s -> (s - 1) // 2 + 1 (stride 2)."""
    model = small_cnn(2, size, 5, channels=channels, act="relu")
    expected = size
    for _ in channels[1:]:
        expected = (expected - 1) // 2 + 1
    final = model[-1]
    assert isinstance(final, nn.Linear) and final.in_features == channels[-1] * expected * expected
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(1, 1)] + [(2, 2)] * (len(channels) - 1)
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert model(torch.rand(3, 2, size, size)).shape == (3, 5)


def test_small_cnn_uses_the_requested_activation():
    model = small_cnn(1, 8, 10, channels=(4, 8), act="softplus", beta=3.0)
    acts = [m for m in model if isinstance(m, (nn.ReLU, nn.Softplus))]
    assert len(acts) == 2 and all(isinstance(a, nn.Softplus) and a.beta == 3.0 for a in acts)


def test_normalize_closed_form_on_images_and_vectors():
    norm = Normalize([1.0, -2.0, 0.5], [2.0, 4.0, 0.25])
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    expected = torch.stack([(x[:, 0] - 1.0) / 2.0, (x[:, 1] + 2.0) / 4.0, (x[:, 2] - 0.5) / 0.25], dim=1)
    assert torch.equal(norm(x), expected)
    v = torch.tensor([[3.0, 2.0, 1.0]])
    assert torch.equal(norm(v), torch.tensor([[1.0, 1.0, 2.0]]))


def test_normalize_statistics_are_float32_buffers_in_the_state_dict():
    """Buffers (not parameters): they follow .to() and are part of the state dict, hence of the model hash."""
    norm = Normalize([[0.5]], [[0.25]])
    assert norm.mean.dtype == torch.float32 and norm.mean.shape == (1,)
    assert set(norm.state_dict()) == {"mean", "std"} and list(norm.parameters()) == []
    assert norm.double().mean.dtype == torch.float64
    assert math.isclose(norm(torch.ones(1, 1, 2, 2, dtype=torch.float64)).max().item(), 2.0)
