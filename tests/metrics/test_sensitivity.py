"""Max-sensitivity against Captum's `sensitivity_max` on the same draws, and against closed forms."""
import copy
import math

import pytest
import torch
from captum.metrics import sensitivity_max
from torch import nn

from certify.errors import TargetError, UsageError
from certify.explain import Gradient, SmoothGrad
from certify.metrics import max_sensitivity
from certify.metrics.sensitivity import uniform_ball
from certify.models import zoo


@pytest.fixture(scope="module")
def mlp64():
    model, data = zoo.load("digits-softplus-mlp")
    model = copy.deepcopy(model).double()
    x = data.x_test[:6].double()
    return model, x, model(x).argmax(dim=1)


@pytest.mark.parametrize("method", ["gradient", "smoothgrad"])
def test_max_sensitivity_equals_captum_on_the_same_draws(mlp64, method):
    model, x, target = mlp64
    explainer = Gradient(model) if method == "gradient" else SmoothGrad(model, sigma=0.1, samples=8, seed=0)

    def captum_explanation(inputs, target):  # Captum passes the original inputs as a 1-tuple
        if isinstance(inputs, tuple):
            return (explainer.attribute(inputs[0], target),)
        return explainer.attribute(inputs, target)

    ours = max_sensitivity(explainer.attribute, x, target, radius=0.05, n_samples=7, seed=3)
    draws = uniform_ball(0.05, torch.Generator().manual_seed(3))
    theirs = sensitivity_max(captum_explanation, x, perturb_func=draws, n_perturb_samples=7, target=target)
    assert torch.all(ours > 0)
    torch.testing.assert_close(ours, theirs.double(), rtol=1e-10, atol=1e-14)


def test_identity_explanation_gives_the_largest_draw():
    """Phi(x) = x: ||Phi(y) - Phi(x)||_2 = ||y - x||_2 <= r sqrt(D), and the estimate is the largest of the
    draws' norms (relative: divided by ||x||_2)."""
    x = torch.rand(4, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.1
    radius, n = 0.1, 25
    draws = uniform_ball(radius, torch.Generator().manual_seed(9))(x.repeat_interleave(n, dim=0))
    largest = (draws - x.repeat_interleave(n, dim=0)).norm(dim=1).view(4, n).max(dim=1).values
    absolute = max_sensitivity(lambda points, _: points, x, radius=radius, n_samples=n, relative=False, seed=9)
    relative = max_sensitivity(lambda points, _: points, x, radius=radius, n_samples=n, seed=9)
    torch.testing.assert_close(absolute, largest, rtol=1e-15, atol=0)
    torch.testing.assert_close(relative, largest / x.norm(dim=1), rtol=1e-15, atol=0)
    assert torch.all(absolute <= radius * math.sqrt(16)) and torch.all(absolute > radius * math.sqrt(16 / 3) * 0.5)


def test_a_linear_model_has_zero_gradient_sensitivity():
    model = nn.Linear(5, 3).double().eval()
    x = torch.randn(4, 5, dtype=torch.float64)
    result = max_sensitivity(Gradient(model).attribute, x, torch.tensor([0, 1, 2, 1]), radius=0.5, batch_size=3)
    assert torch.all(result == 0)


def test_batching_keeps_the_value_of_a_deterministic_perturbation(mlp64):
    model, x, target = mlp64
    shift = lambda points: points + 0.03  # noqa: E731
    whole = max_sensitivity(Gradient(model).attribute, x, target, n_samples=3, perturbation=shift)
    chunked = max_sensitivity(Gradient(model).attribute, x, target, n_samples=3, perturbation=shift, batch_size=4)
    torch.testing.assert_close(whole, chunked, rtol=1e-12, atol=0)


def test_bad_input_is_refused(mlp64):
    model, x, target = mlp64
    explainer = Gradient(model).attribute
    with pytest.raises(UsageError, match="radius"):
        max_sensitivity(explainer, x, target, radius=0.0)
    with pytest.raises(UsageError, match="n_samples"):
        max_sensitivity(explainer, x, target, n_samples=0)
    with pytest.raises(TargetError, match="entries"):
        max_sensitivity(explainer, x, target[:3])
