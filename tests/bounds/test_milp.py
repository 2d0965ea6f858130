import math

import pytest
import torch

from certify.bounds.crown import margin_lower_bounds
from certify.bounds.milp import exact_margin_lower_bounds, exact_minimal_radius
from certify.bounds.network import from_module
from certify.bounds.results import Kind
from certify.errors import UnsupportedError, UsageError
from proofs_checks.nets import NetSpec

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
