import math
import sys
from pathlib import Path

import pytest
import torch

from certify.bounds.activations import Activation
from certify.bounds.crown import margin_lower_bounds
from certify.bounds.milp import exact_minimal_radius
from certify.bounds.network import from_module
from certify.bounds.radius import certified_radius, lipschitz_radius
from certify.bounds.results import Kind
from certify.errors import UsageError
from proofs_checks.nets import NetSpec

DOMAIN = (torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64))


def _case(seed=0, act="relu"):
    net = from_module(NetSpec(5, (10, 8), 3, act, 1.0, 3.0, seed).build(), (5,))
    x = 0.3 + 0.4 * torch.rand(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return net, x, net.forward(x).argmax(1)


def test_radii_are_ordered_ibp_crown_lp_exact():
    net, x, target = _case(0)
    ibp = certified_radius(net, x, target, "inf", "ibp", DOMAIN, tol=1e-3).value
    crown = certified_radius(net, x, target, "inf", "crown", DOMAIN, tol=1e-3)
    lp = certified_radius(net, x, target, "inf", "lp", DOMAIN, tol=1e-3).value
    exact = exact_minimal_radius(net, x, target, "inf", DOMAIN).value
    assert crown.kind is Kind.CERTIFIED and (crown.value > 0).all()
    assert (ibp <= crown.value + 1e-3).all() and (crown.value <= lp).all() and (lp <= exact).all()
    # the radius is certified: margins stay positive over the ball of that radius
    bounds = margin_lower_bounds(net, x, target, crown.value, "inf", DOMAIN).value
    assert (bounds > 0).all()


def test_softplus_radius_is_below_sampled_flips_and_misclassified_inputs_get_zero():
    net, x, target = _case(1, "softplus")
    radius = certified_radius(net, x, target, 2, "crown").value
    wrong = (target + 1) % 3
    assert (certified_radius(net, x, wrong, 2, "crown").value == 0).all()
    d = torch.randn(20000, 2, 5, dtype=torch.float64)
    d = d / d.norm(dim=-1, keepdim=True) * radius[None, :, None]
    flips = net.forward((x + d).reshape(-1, 5)).argmax(-1).reshape(20000, 2) != target
    assert not flips.any()


def test_lipschitz_radius_is_below_the_exact_l1_radius():
    net, x, target = _case(2)
    # |m(x) - m(y)| <= ||(e_c - e_j)^T W_L||_inf * prod_k ||W_k||_{1->1} ||x - y||_1 (ReLU is 1-Lipschitz)
    hidden = math.prod(float(w.abs().sum(0).max()) for w in net.weights[:-1])
    rows = net.weights[-1][:, None, :] - net.weights[-1][None, :, :]
    constants = rows.abs().amax(-1) * hidden
    lip = lipschitz_radius(net, x, target, constants).value
    exact = exact_minimal_radius(net, x, target, 1, DOMAIN).value
    assert (lip > 0).all() and (lip <= exact).all()


def test_bad_radius_arguments():
    net, x, target = _case()
    with pytest.raises(UsageError, match="method"):
        certified_radius(net, x, target, 2, "milp")
    with pytest.raises(UsageError, match="tol"):
        certified_radius(net, x, target, 2, tol=0)


# ----------------------------------------------------------------------------------- graphs with skips

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from graph_networks import margin_rows, pgd_min, sampled_min, skip_network  # noqa: E402


@pytest.mark.parametrize("act", ["relu", "tanh", "silu"])
def test_graph_radii_are_sound_against_sampling_and_attacks(act):
    net = skip_network(Activation(act), seed=2, scale=1.5)
    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    target = net.forward(x).argmax(1)
    rows = margin_rows(target, 3)
    off = rows.abs().sum(-1) > 0
    ibp = certified_radius(net, x, target, 2, "ibp", tol=1e-3).value
    crown = certified_radius(net, x, target, 2, "crown", tol=1e-3).value
    assert (crown > 0).all() and (crown >= ibp - 1e-3).all()
    for i in range(3):
        one = x[i : i + 1]
        worst = torch.minimum(sampled_min(net, one, rows[i : i + 1], float(crown[i]), 2, count=500),
                              pgd_min(net, one, rows[i : i + 1], float(crown[i]), 2, steps=15))
        assert (worst[off[i : i + 1]] > 0).all()
