"""Shared fixtures: zoo models (trained once and cached on disk) and a few of their test inputs."""
import pytest
import torch

from certify.models import zoo


@pytest.fixture(scope="session", params=["digits-softplus-mlp", "digits-relu-mlp", "digits-softplus-cnn"])
def zoo_case(request):
    """(name, model, inputs [6, ...], labels) for the digits zoo models."""
    model, data = zoo.load(request.param)
    return request.param, model, data.x_test[:6].clone(), data.y_test[:6].clone()


@pytest.fixture(scope="session")
def digits_mlp():
    model, data = zoo.load("digits-softplus-mlp")
    return model, data


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    """Relative closeness in the max norm: ||actual - expected||_inf <= rtol * max(||expected||_inf, tiny)."""
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual - expected).abs().max()
    assert err <= rtol * scale, f"max error {err:.3g} > {rtol} * {scale:.3g}"
