"""alpha-CROWN (certify.bounds.alpha_crown): the bound is valid for every slope choice, never looser than
CROWN, actually improves on it, and its intermediate boxes contain every pre-activation of the box; checked
against dense enumeration on tiny 2-D ReLU nets."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from property_grid import classification, grid_values, predicted, tiny_net  # noqa: E402

from certify.bounds.alpha_crown import alpha_crown_lower_bound, evaluate  # noqa: E402
from certify.bounds.ibp import interval_bounds  # noqa: E402
from certify.bounds.network import from_module  # noqa: E402
from certify.bounds.property import property_rows, property_set  # noqa: E402
from certify.errors import UnsupportedError  # noqa: E402


def _case(seed, eps=0.5, widths=(2, 10, 10, 3)):
    model = tiny_net(seed, widths)
    centre = np.random.default_rng(seed).uniform(-1, 1, 2)
    prop = classification(centre, eps, predicted(model, centre))
    net = from_module(model, (2,))
    rows, consts, _ = property_rows(prop)
    return model, prop, net, property_set(prop), rows, consts


def _grid_points(prop, n=121):
    xs = np.linspace(prop.lower[0], prop.upper[0], n)
    ys = np.linspace(prop.lower[1], prop.upper[1], n)
    return torch.tensor(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2), dtype=torch.float64)


@pytest.mark.parametrize("seed", range(4))
def test_alpha_crown_is_between_crown_and_the_grid_minimum(seed):
    model, prop, net, input_set, rows, consts = _case(seed)
    value, details = alpha_crown_lower_bound(net, input_set, rows, consts, iterations=30)
    grid_min = grid_values(model, prop, 121).min(0)
    assert value.shape == (1, rows.shape[1])
    assert (value[0].numpy() <= grid_min + 1e-12).all()
    assert (value >= details["crown"] - 1e-12).all()
    assert 1 <= details["snapshots"] <= 4


def test_alpha_crown_improves_on_crown_somewhere():
    gains = []
    for seed in range(6):
        _, _, net, input_set, rows, consts = _case(seed)
        value, details = alpha_crown_lower_bound(net, input_set, rows, consts, iterations=30)
        gains.append(float((value - details["crown"]).max()))
    assert max(gains) > 1e-3, gains


def test_zero_iterations_returns_the_crown_bound():
    _, _, net, input_set, rows, consts = _case(1)
    value, details = alpha_crown_lower_bound(net, input_set, rows, consts, iterations=0)
    assert details["iterations"] == 0 and details["snapshots"] == 1
    assert torch.equal(value, details["crown"])


def test_intermediate_boxes_contain_every_pre_activation_on_the_grid():
    _, prop, net, input_set, rows, consts = _case(2)
    _, details = alpha_crown_lower_bound(net, input_set, rows, consts, iterations=20)
    pre = net.pre_activations(_grid_points(prop))
    assert len(details["boxes"]) == len(net.activations)
    for k, (lo, hi) in enumerate(details["boxes"]):
        assert (pre[k] >= lo - 1e-12).all() and (pre[k] <= hi + 1e-12).all(), k


@pytest.mark.parametrize("seed", range(3))
def test_evaluate_is_sound_for_arbitrary_slopes(seed):
    """Every alpha in [0, 1] gives a valid bound, not just the optimised ones."""
    model, prop, net, input_set, rows, consts = _case(seed)
    _, details = alpha_crown_lower_bound(net, input_set, rows, consts, iterations=0)
    gen = torch.Generator().manual_seed(seed)
    alphas = {k: [torch.rand(a.shape, generator=gen, dtype=torch.float64) for a in v] for k, v in details["alphas"].items()}
    ibp = [(lo, hi) for lo, hi in interval_bounds(net, input_set)[:-1]]
    with torch.no_grad():
        value, _ = evaluate(net, input_set, rows, consts, alphas, ibp)
    assert (value[0].numpy() <= grid_values(model, prop, 121).min(0) + 1e-12).all()


def test_a_non_relu_network_is_refused():
    model = nn.Sequential(nn.Linear(2, 4), nn.Softplus(), nn.Linear(4, 3)).eval()
    prop = classification([0.0, 0.0], 0.1, 0)
    rows, consts, _ = property_rows(prop)
    with pytest.raises(UnsupportedError, match="non-ReLU activation"):
        alpha_crown_lower_bound(from_module(model, (2,)), property_set(prop), rows, consts)
