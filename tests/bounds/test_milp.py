import math
import sys
from pathlib import Path

import pytest
import torch

from certify.bounds.activations import Activation
from certify.bounds.crown import margin_lower_bounds
from certify.bounds.milp import exact_margin_lower_bounds, exact_minimal_radius
from certify.bounds.network import from_module
from certify.bounds.results import Kind
from certify.errors import UnsupportedError, UsageError
from proofs_checks.nets import NetSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from graph_networks import exact_piecewise_min, margin_rows, skip_network  # noqa: E402

DOMAIN = (torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64))


def _case(seed=0):
    net = from_module(NetSpec(5, (10, 8), 3, "relu", 1.0, 3.0, seed).build(), (5,))
    x = 0.3 + 0.4 * torch.rand(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return net, x, net.forward(x).argmax(1)


@pytest.mark.parametrize("p", [1, "inf"])
def test_minimal_radius_has_a_flipping_witness_and_respects_upper(p):
    net, x, target = _case()
    result = exact_minimal_radius(net, x, target, p, DOMAIN)
    assert result.kind is Kind.SOLVER_REPORTED and "mip_rel_gap" in result.details["tolerances"]
    order = 1 if p == 1 else math.inf
    for i, point in enumerate(result.witness["points"]):
        assert point is not None
        logits = net.forward(point[None])[0]
        assert logits.max() - logits[target[i]] >= -1e-6  # on or past the decision boundary
        assert abs(float(torch.linalg.vector_norm(point - x[i], ord=order)) - float(result.value[i])) < 1e-6
    # with a valid upper radius the answer is the same; with one below r* there is no flip (NaN)
    again = exact_minimal_radius(net, x, target, p, DOMAIN, upper=result.value * 1.5)
    assert torch.allclose(again.value, result.value, atol=1e-6)
    below = exact_minimal_radius(net, x, target, p, DOMAIN, upper=result.value * 0.5)
    assert torch.isnan(below.value).all()


def test_exact_margins_are_above_crown_bounds():
    net, x, target = _case(2)
    exact = exact_margin_lower_bounds(net, x, target, 0.1, "inf", DOMAIN).value
    crown = margin_lower_bounds(net, x, target, 0.1, "inf", DOMAIN).value
    off = torch.isfinite(crown)
    assert (crown[off] <= exact[off] + 1e-7).all()
    assert torch.isinf(exact[~off]).all()


def test_l2_and_unbounded_problems_are_refused():
    net, x, target = _case()
    with pytest.raises(UnsupportedError, match="mixed-integer QP"):
        exact_minimal_radius(net, x, target, 2, DOMAIN)
    with pytest.raises(UsageError, match="bounded region"):
        exact_minimal_radius(net, x, target, "inf")


@pytest.mark.parametrize("act", [Activation("relu"), Activation("leaky_relu", negative_slope=0.2)])
def test_a_piecewise_linear_graph_is_encoded_with_its_skips(act):
    """On a ReLU or leaky ReLU graph (skips into every layer, one layer reading only its skip) the MILP's
    margin minima equal the exact enumeration of activation patterns, and the minimal-radius witness flips N."""
    net = skip_network(act, seed=3, sizes=(2, 4, 3, 3), reads_only_skips=True)
    x = torch.tensor([[0.2, -0.4]], dtype=torch.float64)
    target = net.forward(x).argmax(1)
    for eps in (0.02, 0.5):  # mostly stable units, then many unstable ones
        milp = exact_margin_lower_bounds(net, x, target, eps, math.inf).value[0]
        lo, hi = x[0] - eps, x[0] + eps
        for j in range(3):
            if j != int(target):
                exact = exact_piecewise_min(net, margin_rows(target, 3)[0, j], lo, hi)
                assert float(milp[j]) == pytest.approx(exact, abs=1e-6)
    radius = exact_minimal_radius(net, x, target, math.inf, domain=(-3.0, 3.0))
    point = radius.witness["points"][0].reshape(1, -1)
    logits = net.forward(point)[0]
    assert float((logits - logits[target]).max()) >= -1e-7  # on or past the decision boundary (solver tolerance)
    assert float((point - x).abs().max()) == pytest.approx(float(radius.value[0]), abs=1e-6)
