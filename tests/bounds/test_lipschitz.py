"""Lipschitz bounds: the product of layer norms (certified) and the gradient-norm estimate."""
import math
import sys
from pathlib import Path

import pytest
import torch

from certify.bounds.activations import Activation
from certify.bounds.lipschitz import lipschitz_estimate, lipschitz_product
from certify.bounds.network import from_module
from certify.errors import UnsupportedError, UsageError
from certify.models import zoo
from proofs_checks.nets import NetSpec

MARGINS = torch.tensor([[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]], dtype=torch.float64)


def _net(act="softplus", hidden=(8, 6), seed=0):
    spec = NetSpec(5, hidden, 3, act, 1.0, 1.5, seed)
    model = spec.build()
    return model, from_module(model, (5,))


def _jacobians(model, points):
    """[M, classes, n] by one backward pass per class."""
    points = points.clone().requires_grad_(True)
    out = model(points)
    return torch.stack([torch.autograd.grad(out[:, k].sum(), points, retain_graph=True)[0] for k in range(out.shape[1])], 1)


def test_product_matches_layer_norms():
    _, net = _net()
    expected_l2 = math.prod(float(torch.linalg.matrix_norm(w, ord=2)) for w in net.weights)
    expected_inf = math.prod(float(w.abs().sum(1).max()) for w in net.weights)
    assert lipschitz_product(net, 2).value == pytest.approx(expected_l2, rel=1e-12)
    assert lipschitz_product(net, "inf").value == pytest.approx(expected_inf, rel=1e-12)
    rows = lipschitz_product(net, 2, MARGINS).value
    hidden = math.prod(float(torch.linalg.matrix_norm(w, ord=2)) for w in net.weights[:-1])
    assert torch.allclose(rows, torch.linalg.vector_norm(MARGINS @ net.weights[-1], dim=1) * hidden, rtol=1e-12)
    assert rows.shape == (2,) and lipschitz_product(net, 2).value.shape == ()


@pytest.mark.parametrize("act", ["relu", "softplus"])
def test_product_bounds_every_sampled_jacobian(act):
    model, net = _net(act)
    points = torch.randn(200, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3
    jac = _jacobians(model, points)
    assert torch.linalg.matrix_norm(jac, ord=2).max() <= lipschitz_product(net, 2).value
    assert jac.abs().sum(-1).amax(-1).max() <= lipschitz_product(net, "inf").value
    margin_grads = MARGINS @ jac  # [M, K, n]
    assert (torch.linalg.vector_norm(margin_grads, dim=-1) <= lipschitz_product(net, 2, MARGINS).value).all()
    assert (margin_grads.abs().sum(-1) <= lipschitz_product(net, "inf", MARGINS).value).all()


@pytest.mark.parametrize("p", [2, "inf"])
def test_estimate_is_a_gradient_norm_below_the_certified_value(p):
    model, net = _net("softplus")
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    estimate = lipschitz_estimate(net, x, p, MARGINS, radius=1.0, samples=16, steps=5)
    assert (estimate.value <= lipschitz_product(net, p, MARGINS).value).all()
    q = 2 if p == 2 else 1
    at_x = torch.linalg.vector_norm(MARGINS @ _jacobians(model, x), ord=q, dim=-1)  # [3, K]
    assert (estimate.details["per_example"] >= at_x - 1e-12).all()
    assert estimate.kind.value == "estimated"


def test_estimate_ascent_improves_on_sampling():
    _, net = _net("softplus", seed=3)
    x = torch.zeros(1, 5, dtype=torch.float64)
    sampled = lipschitz_estimate(net, x, 2, None, radius=2.0, samples=4, steps=0).value
    ascended = lipschitz_estimate(net, x, 2, None, radius=2.0, samples=4, steps=30).value
    assert ascended >= sampled


def test_linear_model_is_exact():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).double().eval()
    net = from_module(model, (4,))
    expected = torch.linalg.vector_norm(MARGINS @ net.weights[0], dim=1)
    assert torch.allclose(lipschitz_product(net, 2, MARGINS).value, expected, rtol=1e-12)


def test_bad_parameters():
    _, net = _net()
    with pytest.raises(UnsupportedError, match="p = 2 and p = inf"):
        lipschitz_product(net, 1)
    with pytest.raises(UsageError, match="shape"):
        lipschitz_product(net, 2, torch.ones(2, 4))
    with pytest.raises(UsageError, match="features"):
        lipschitz_estimate(net, torch.zeros(1, 7))


def test_zoo_model():
    model, data = zoo.load("digits-relu-mlp")
    net = from_module(model, data.input_shape)
    bound = lipschitz_product(net, 2)
    estimate = lipschitz_estimate(net, data.x_test[:2], 2, samples=8, steps=2)
    assert bound.kind.value == "certified" and 0 < estimate.value <= bound.value


# ----------------------------------------------------------------------------------- graphs with skips

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from graph_networks import GRAPH_MODELS, skip_network, translated  # noqa: E402


def _rows(classes: int) -> torch.Tensor:
    eye = torch.eye(classes, dtype=torch.float64)
    return eye[0] - eye[1:]


@pytest.mark.parametrize("name", ["skip-relu", "skip-sigmoid", *GRAPH_MODELS])
def test_graph_path_sum_bounds_every_sampled_jacobian(name):
    if name.startswith("skip-"):
        net = skip_network(Activation(name[5:]), seed=1, scale=2.0)
    else:
        net, _ = translated(name)
    points = torch.randn(150, net.input_size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    jac = _jacobians(net.forward, points)
    rows = _rows(net.num_classes)
    assert torch.linalg.matrix_norm(jac, ord=2).max() <= lipschitz_product(net, 2).value
    assert jac.abs().sum(-1).amax(-1).max() <= lipschitz_product(net, "inf").value
    margin_grads = rows @ jac
    assert (torch.linalg.vector_norm(margin_grads, dim=-1) <= lipschitz_product(net, 2, rows).value).all()
    assert (margin_grads.abs().sum(-1) <= lipschitz_product(net, "inf", rows).value).all()


@pytest.mark.parametrize("p", [2, "inf"])
def test_graph_path_sum_is_the_documented_recursion(p):
    """L(h_1) = a ||W_0||, L(h_2) = a (||W_1|| L(h_1) + ||S_10||), L = ||W_2|| L(h_2) + ||S_21|| L(h_1) + ||S_20||,
    with a = 1/4 (sigmoid's sup |sigma'|), computed here from the norms in plain floats."""
    net = skip_network(Activation("sigmoid"), seed=3)
    norm = (lambda w: float(torch.linalg.matrix_norm(w, ord=2))) if p == 2 else (lambda w: float(w.abs().sum(1).max()))
    (w0, w1, w2), s = net.weights, net.skips
    l1 = 0.25 * norm(w0)
    l2 = 0.25 * (norm(w1) * l1 + norm(s[1][0]))
    expected = norm(w2) * l2 + norm(s[2][1]) * l1 + norm(s[2][0])
    bound = float(lipschitz_product(net, p).value)
    assert expected <= bound <= expected * (1 + 1e-12)
    row = torch.tensor([[1.0, -1.0, 0.0]], dtype=torch.float64)
    q = 2 if p == 2 else 1
    rnorm = lambda w: float(torch.linalg.vector_norm(row @ w, ord=q))  # noqa: E731
    expected_row = rnorm(w2) * l2 + rnorm(s[2][1]) * l1 + rnorm(s[2][0])
    assert expected_row <= float(lipschitz_product(net, p, row).value[0]) <= expected_row * (1 + 1e-12)
