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


def test_branch_and_bound_refines_from_three_hidden_layers_and_its_witness_says_which():
    """certify.bounds.property.REFINE_FROM: with two hidden layers the leaves are bounded on the root's boxes
    (witness format 1), with three on their refined boxes (format 2); either certificate verifies and its value
    stays below the grid minimum."""
    import json

    from certify.attacks.property import verify_property
    from certify.bounds.property import REFINE_FROM
    from certify.certificates.checker import verify_certificate
    from certify.certificates.document import parse_certificate
    from certify.certificates.issuers.property import property_certificate

    assert REFINE_FROM == 3
    centre = np.array([0.3, -0.2])
    for widths, fmt in (((2, 8, 8, 3), 1), ((2, 8, 8, 8, 3), 2)):
        split = None
        for seed in range(12):
            model = tiny_net(seed, widths)
            for eps in (1.0, 1.5, 2.0, 3.0):
                prop = classification(centre, eps, predicted(model, centre))
                result = verify_property(model, prop, timeout=5.0, input_shape=(2,), methods=("crown", "bab"))
                if result.status == "holds" and any(t["splits"].size for t in result.witness["conjunctions"]):
                    split = model, prop, result
                    break
            if split:
                break
        assert split, f"no property of the {widths} nets needed splitting"
        model, prop, result = split
        assert result.witness["format"] == f"certify.relu-split-witness/{fmt}"
        cert = property_certificate(model, prop, result, (2,), "bab", 5.0)
        report = verify_certificate(parse_certificate(cert.to_json()), model, None)
        assert report.valid and cert.answer == "holds"
        assert 0 < json.loads(cert.to_json())["claims"][0]["value"] <= grid_values(model, prop).min()
