"""Bounds for VNN-LIB properties (certify.bounds.property): CROWN, alpha-CROWN and branch and bound through
`property_bounds`, checked against dense enumeration on tiny 2-D boxes (a sound lower bound never exceeds
the least value on a grid). The methods' own tests: test_alpha_crown.py, test_bab.py; the decision procedure
(certify.attacks.property): tests/attacks/test_verify_property.py."""
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from property_grid import classification, grid_values, predicted, tiny_net  # noqa: E402

from certify.bounds.network import from_module  # noqa: E402
from certify.bounds.property import property_bounds, property_rows  # noqa: E402
from certify.errors import UsageError  # noqa: E402


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.05, 0.2, 0.5]))
def test_bounds_never_exceed_the_grid_minimum_and_bab_never_proves_a_violated_property(seed, eps):
    model = tiny_net(seed)
    centre = np.random.default_rng(seed).uniform(-1, 1, 2)
    prop = classification(centre, eps, predicted(model, centre))
    net = from_module(model, (2,))
    grid = grid_values(model, prop)  # [G, R]: each row its own conjunction here
    grid_min = grid.min(0)
    crown = property_bounds(net, prop, "crown")
    alpha = property_bounds(net, prop, "alpha-crown", iterations=20)
    bab = property_bounds(net, prop, "bab", deadline=time.perf_counter() + 5.0, batch=16)
    assert (crown.lower.numpy() <= grid_min + 1e-12).all()
    assert (alpha.lower.numpy() <= grid_min + 1e-12).all()
    score = lambda v: (float(v.clamp(max=0).sum()), float(v.sum()))  # noqa: E731
    assert score(alpha.lower) >= score(crown.lower)  # never worse than CROWN's root (certify.bounds.alpha_crown)
    for i, value in bab.by_bab.items():
        assert value <= grid_min[i] + 1e-12
    violated = bool((grid_min <= 0).any())
    if violated:
        assert not crown.holds and not alpha.holds and not bab.holds
    if bab.holds:
        assert not violated


def test_property_rows_stack_the_conjunctions_as_c_y_minus_d():
    prop = classification([0.0, 0.0], 0.1, 1)
    rows, consts, slices = property_rows(prop)
    assert rows.shape == (1, 2, 3) and consts.shape == (1, 2)
    assert slices == [slice(0, 1), slice(1, 2)]
    y = np.array([0.5, 2.0, -1.0])
    assert np.allclose(rows[0].numpy() @ y + consts[0].numpy(), [2.0 - 0.5, 2.0 + 1.0])


def test_property_bounds_refuses_an_unknown_method_and_a_mismatched_network():
    net = from_module(tiny_net(0), (2,))
    with pytest.raises(UsageError, match="unknown property method 'lp'"):
        property_bounds(net, classification([0.0, 0.0], 0.1, 0), "lp")
    with pytest.raises(UsageError, match="the property has 2 inputs and 4 outputs, the network 2 and 3"):
        property_bounds(net, classification([0.0, 0.0], 0.1, 0, classes=4))
