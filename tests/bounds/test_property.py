"""Bounds for VNN-LIB properties (certify.bounds.property): CROWN, alpha-CROWN (certify.bounds.alpha_crown)
and ReLU-split branch and bound (certify.bounds.bab), checked against dense enumeration on tiny 2-D boxes
(a sound lower bound never exceeds the least value on a grid), and on the real mnistfc nets against the
PGD counterexample search (certify.attacks.property)."""
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mnistfc_data as M  # noqa: E402

from certify.attacks.property import check_counterexample, pgd_counterexample, verify_property  # noqa: E402
from certify.bounds.network import from_module  # noqa: E402
from certify.bounds.property import property_bounds  # noqa: E402
from certify.models.vnnlib import Property  # noqa: E402


def _net(seed: int, widths=(2, 8, 8, 3)):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


def _grid_values(model, prop: Property, n: int = 201) -> np.ndarray:
    """[G, R] values C y - d of every row on an n x n grid of the 2-D box (float64 model)."""
    xs = np.linspace(prop.lower[0], prop.upper[0], n)
    ys = np.linspace(prop.lower[1], prop.upper[1], n)
    pts = torch.tensor(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2), dtype=torch.float64)
    with torch.no_grad():
        out = model.double()(pts).numpy()
    model.float()
    c = np.concatenate([c for c, _ in prop.disjuncts])
    d = np.concatenate([d for _, d in prop.disjuncts])
    return out @ c.T - d


def _classification(centre, eps, label, classes=3) -> Property:
    lower, upper = np.asarray(centre) - eps, np.asarray(centre) + eps
    disjuncts = []
    for j in range(classes):
        if j != label:
            row = np.zeros((1, classes))
            row[0, label], row[0, j] = 1.0, -1.0  # y_label - y_j <= 0: a counterexample
            disjuncts.append((row, np.zeros(1)))
    return Property(lower, upper, classes, disjuncts)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.05, 0.2, 0.5]))
def test_bounds_never_exceed_the_grid_minimum_and_bab_never_proves_a_violated_property(seed, eps):
    model = _net(seed)
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-1, 1, 2)
    with torch.no_grad():
        label = int(model(torch.tensor(centre, dtype=torch.float32)[None]).argmax())
    prop = _classification(centre, eps, label)
    net = from_module(model, (2,))
    grid = _grid_values(model, prop)  # [G, R]: each row its own conjunction here
    grid_min = grid.min(0)
    crown = property_bounds(net, prop, "crown")
    alpha = property_bounds(net, prop, "alpha-crown", iterations=20)
    bab = property_bounds(net, prop, "bab", deadline=time.perf_counter() + 5.0, batch=16)
    assert (crown.lower.numpy() <= grid_min + 1e-12).all()
    assert (alpha.lower.numpy() <= grid_min + 1e-12).all()
    assert (alpha.lower.numpy() >= crown.lower.numpy() - 1e-9).all()  # starts from CROWN's slopes
    for i, value in bab.by_bab.items():
        assert value <= grid_min[i] + 1e-12
    violated = bool((grid_min <= 0).any())
    if violated:
        assert not crown.holds and not alpha.holds and not bab.holds
    if bab.holds:
        assert not violated


def test_bab_proves_what_crown_cannot_on_a_tiny_net():
    """Completeness in practice: on a small net, a property that holds with a clear margin on the grid but
    that CROWN cannot prove is proven by splitting."""
    found = 0
    for seed in range(40):
        model = _net(seed, (2, 12, 12, 3))
        centre = np.random.default_rng(seed).uniform(-1, 1, 2)
        with torch.no_grad():
            label = int(model(torch.tensor(centre, dtype=torch.float32)[None]).argmax())
        prop = _classification(centre, 0.6, label)
        if _grid_values(model, prop).min(0).min() < 0.02:
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


def test_mnistfc_crown_proves_and_pgd_refutes_and_never_both():
    model = M.model("mnist-net_256x2.onnx")
    net = from_module(model, model.certify_input_shape)
    holds = M.prop("prop_2_0.03.vnnlib")
    bound = property_bounds(net, holds, "crown")
    assert bound.holds and bound.margin > 0.5
    point, _ = pgd_counterexample(model, holds, (784, 1), seconds=1.0)
    assert point is None
    violated = M.prop("prop_7_0.03.vnnlib")
    point, info = pgd_counterexample(model, violated, (784, 1), seconds=5.0)
    assert point is not None and point.dtype == torch.float32
    ok, evaluation = check_counterexample(model, violated, point, (784, 1))
    assert ok and evaluation["inside"]
    assert not property_bounds(net, violated, "crown").holds
    result = verify_property(model, violated, timeout=10.0, net=net)
    assert result.status == "violated" and result.counterexample is not None
    assert (result.counterexample >= violated.lower).all() and (result.counterexample <= violated.upper).all()


@pytest.mark.parametrize("seed", range(6))
def test_split_subdomain_bound_never_exceeds_the_subdomain_grid_minimum(seed):
    """The Lagrangian split term (beta) has the right sign: a subdomain's bound, optimised hard, stays below
    the least objective value on the grid points that satisfy the split constraint."""
    from certify.bounds.bab import _optimised_bound
    from certify.bounds.crown import default_alpha
    from certify.bounds.crown import layer_bounds
    from certify.bounds.property import property_rows, property_set

    model = _net(seed, (2, 10, 10, 3))
    centre = np.random.default_rng(seed).uniform(-1, 1, 2)
    prop = _classification(centre, 0.8, 0)
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
        with torch.no_grad():
            label = int(model(torch.tensor(centre, dtype=torch.float32)[None]).argmax())
        prop = _classification(centre, 0.3, label)
        net = from_module(model, (2,))
        grid_min = _grid_values(model, prop).min(0)
        bab = property_bounds(net, prop, "bab", deadline=time.perf_counter() + 3.0, batch=16)
        for i, value in bab.by_bab.items():
            assert value <= grid_min[i] + 1e-9
        assert (bab.lower.numpy() <= grid_min + 1e-9).all()
        if (grid_min <= 0).any():
            assert not bab.holds
