"""alpha-CROWN (certify.bounds.alpha_crown): the certified root is valid for every slope choice, never worse
than CROWN, actually improves on it, and its intermediate boxes contain every pre-activation of the box;
checked against dense enumeration on tiny 2-D ReLU nets."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from property_grid import classification, grid_values, predicted, tiny_net  # noqa: E402

from certify.bounds.alpha_crown import alpha_crown_lower_bound, rigorous_root  # noqa: E402
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


def _score(value):
    return float(value.clamp(max=0).sum()), float(value.sum())


@pytest.mark.parametrize("seed", range(4))
def test_alpha_crown_is_between_crown_and_the_grid_minimum(seed):
    model, prop, net, input_set, rows, consts = _case(seed)
    value, details = alpha_crown_lower_bound(net, input_set, rows, consts, iterations=30)
    grid_min = grid_values(model, prop, 121).min(0)
    assert value.shape == (1, rows.shape[1])
    assert (value[0].numpy() <= grid_min + 1e-12).all()
    assert _score(value) >= _score(details["crown"])  # never worse than CROWN: the root with the better score


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
    assert details["iterations"] == 0
    assert torch.equal(value, details["crown"])
    assert details["root"] is details["crown_root"]


def test_intermediate_boxes_contain_every_pre_activation_on_the_grid():
    _, prop, net, input_set, rows, consts = _case(2)
    _, details = alpha_crown_lower_bound(net, input_set, rows, consts, iterations=20)
    pre = net.pre_activations(_grid_points(prop))
    boxes = details["root"].boxes
    assert len(boxes) == len(net.activations)
    for k, (lo, hi) in enumerate(boxes):
        assert (pre[k] >= lo - 1e-12).all() and (pre[k] <= hi + 1e-12).all(), k


@pytest.mark.parametrize("seed", range(3))
def test_the_certified_root_is_sound_for_arbitrary_slopes(seed):
    """Every alpha in [0, 1] gives valid boxes and a valid bound, not just the optimised ones; and the stored
    slopes cover exactly the units unstable in the boxes."""
    model, prop, net, input_set, rows, consts = _case(seed)
    gen = torch.Generator().manual_seed(seed)
    widths = [w.shape[0] for w in net.weights[:-1]]
    inter = [[torch.rand(2 * widths[k], widths[j], generator=gen) for j in range(k)] for k in range(len(widths))]
    final = [torch.rand(rows.shape[1], w, generator=gen) for w in widths]
    root = rigorous_root(net, input_set, rows, consts, inter, final)
    assert (root.value.numpy() <= grid_values(model, prop, 121).min(0) + 1e-12).all()
    pre = net.pre_activations(_grid_points(prop))
    for k, ((lo, hi), units) in enumerate(zip(root.boxes, root.unstable)):
        assert (pre[k] >= lo - 1e-12).all() and (pre[k] <= hi + 1e-12).all(), k
        assert torch.equal(units, torch.nonzero((lo < 0) & (hi > 0)).reshape(-1))
        assert all(a.shape == (2 * widths[k], root.unstable[j].numel()) for j, a in enumerate(root.root_alphas[k]))
    assert root.final.shape == (rows.shape[1], sum(u.numel() for u in root.unstable))


def test_a_non_relu_network_is_refused():
    model = nn.Sequential(nn.Linear(2, 4), nn.Softplus(), nn.Linear(4, 3)).eval()
    prop = classification([0.0, 0.0], 0.1, 0)
    rows, consts, _ = property_rows(prop)
    with pytest.raises(UnsupportedError, match="softplus"):
        alpha_crown_lower_bound(from_module(model, (2,)), property_set(prop), rows, consts)
