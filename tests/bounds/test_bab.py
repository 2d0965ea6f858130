"""ReLU-split branch and bound (certify.bounds.bab), through `property_bounds(..., "bab")` and its split
subdomain bound: checked against dense enumeration on tiny 2-D boxes, and on the real mnistfc net."""
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mnistfc_data as M  # noqa: E402
from property_grid import classification, grid_values, predicted, tiny_net  # noqa: E402

from certify.attacks.property import pgd_counterexample  # noqa: E402
from certify.bounds.network import from_module  # noqa: E402
from certify.bounds.property import property_bounds  # noqa: E402


def test_bab_proves_what_crown_cannot_on_a_tiny_net():
    """Completeness in practice: on a small net, a property that holds with a clear margin on the grid but
    that CROWN cannot prove is proven by splitting."""
    found = 0
    for seed in range(40):
        model = tiny_net(seed, (2, 12, 12, 3))
        centre = np.random.default_rng(seed).uniform(-1, 1, 2)
        prop = classification(centre, 0.6, predicted(model, centre))
        if grid_values(model, prop).min(0).min() < 0.02:
            continue
        net = from_module(model, (2,))
        if property_bounds(net, prop, "crown").holds:
            continue
        bab = property_bounds(net, prop, "bab", deadline=time.perf_counter() + 10.0, batch=32)
        assert bab.holds, bab.details
        found += 1
        if found == 3:
            break
    assert found >= 1


@pytest.mark.parametrize("seed", range(6))
def test_split_subdomain_bound_never_exceeds_the_subdomain_grid_minimum(seed):
    """The Lagrangian split term (beta) has the right sign: a subdomain's bound, optimised hard, stays below
    the least objective value on the grid points that satisfy the split constraint."""
    from certify.bounds.bab import _optimised_bound
    from certify.bounds.activations import default_alpha
    from certify.bounds.crown import layer_bounds
    from certify.bounds.property import property_rows, property_set

    model = tiny_net(seed, (2, 10, 10, 3))
    centre = np.random.default_rng(seed).uniform(-1, 1, 2)
    prop = classification(centre, 0.8, 0)
    net = from_module(model, (2,))
    input_set = property_set(prop)
    boxes, _ = layer_bounds(net, input_set, "crown")
    rows, consts, _ = property_rows(prop)
    lo, hi = boxes[1]
    unstable = torch.nonzero((lo[0] < 0) & (hi[0] > 0)).reshape(-1)
    assert unstable.numel() > 0
    unit = int(unstable[0])
    xs = np.linspace(prop.lower[0], prop.upper[0], 161)
    ys = np.linspace(prop.lower[1], prop.upper[1], 161)
    pts = torch.tensor(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2), dtype=torch.float64)
    z = net.pre_activations(pts)[1][:, unit]
    values = net.forward(pts) @ rows[0].T + consts[0]
    for active in (True, False):
        act = [torch.zeros(1, b[0].shape[1], dtype=torch.bool) for b in boxes]
        ina = [torch.zeros(1, b[0].shape[1], dtype=torch.bool) for b in boxes]
        (act if active else ina)[1][0, unit] = True
        clamped = [(torch.where(a, b[0].clamp(min=0), b[0]), torch.where(i, b[1].clamp(max=0), b[1])) for b, a, i in zip(boxes, act, ina)]
        alphas = [default_alpha(net.activations[j], *clamped[j])[:, None, :].clone() for j in range(len(clamped))]
        betas = [torch.zeros(1, 1, b[0].shape[1], dtype=torch.float64) for b in clamped]
        bound, _, _ = _optimised_bound(net, input_set, rows[:, :1], consts[:, :1], clamped, act, ina, 60, 0.5, alphas, betas)
        inside = z >= 0 if active else z <= 0
        if bool(inside.any()):
            assert (bound[0] <= values[inside][:, :1].min(0).values + 1e-9).all()


def test_mnistfc_branch_and_bound_proves_a_pair_crown_cannot():
    model = M.model("mnist-net_256x2.onnx")
    net = from_module(model, model.certify_input_shape)
    prop = M.prop("prop_9_0.03.vnnlib")
    assert not property_bounds(net, prop, "crown").holds
    bound = property_bounds(net, prop, "bab", deadline=time.perf_counter() + 40.0)
    assert bound.holds and bound.margin > 0
    assert all(outcome.proven for outcome in bound.details["conjunctions"].values())
    point, _ = pgd_counterexample(model, prop, (784, 1), seconds=1.0)
    assert point is None


def test_softplus_network_bab_is_sound_on_the_grid():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(2, 8), nn.Softplus(), nn.Linear(8, 8), nn.Softplus(), nn.Linear(8, 3)).eval()
    for seed in range(4):
        centre = np.random.default_rng(seed).uniform(-1, 1, 2)
        prop = classification(centre, 0.3, predicted(model, centre))
        net = from_module(model, (2,))
        grid_min = grid_values(model, prop).min(0)
        bab = property_bounds(net, prop, "bab", deadline=time.perf_counter() + 3.0, batch=16)
        for i, value in bab.by_bab.items():
            assert value <= grid_min[i] + 1e-9
        assert (bab.lower.numpy() <= grid_min + 1e-9).all()
        if (grid_min <= 0).any():
            assert not bab.holds
