"""Issuing radius-lower claims (certify/certificates/relaxation_claims.py) on tiny ReLU nets: the claim verifies
in the independent checker, its value lies below the norm of a witnessed flip (a perturbation that changes
the decision, found by the minimal-perturbation solver and re-evaluated here), its witness is built on
exactly the written radius, and unsupported models, misclassified inputs and bad arguments are refused.
(The checker's side, tightened and edited witnesses, is tests/certificates/test_relaxation_check.py.)"""
import math
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from certify.bounds.network import from_module
from certify.certificates.checker import verify_certificate
from certify.certificates.relaxation_claims import relaxation_radius_claim
from certify.errors import UsageError
from certify.explain.minimal_perturbation import minimal_perturbation
from certify.models.builders import mlp
from test_relaxation_check import _certificate, _random_net


def _witnessed_flip(model, x, c, p, domain):
    """The norm of a perturbation that provably changes the decision (evaluated here), or inf if none found."""
    lo_hi = None if domain is None else domain
    result = minimal_perturbation(model, x, torch.tensor([c]), p=p, domain=lo_hi, restarts=2, seed=0)
    delta = result.delta.detach().double()
    point = x + delta
    if domain is not None:
        assert bool((point >= domain[0] - 1e-12).all() and (point <= domain[1] + 1e-12).all())
    if int(model(point).argmax()) == c:
        return math.inf
    return float(delta.flatten().norm(p))


@settings(max_examples=8, deadline=None, derandomize=True, database=None)
@given(seed=st.integers(0, 10**6), p=st.sampled_from([math.inf, 2.0, 1.0]), boxed=st.booleans(),
       method=st.sampled_from(["crown", "lp"]))
def test_claim_verifies_and_lies_below_a_witnessed_flip(seed, p, boxed, method):
    model = _random_net(seed % 1000, widths=(3, 8, 3))
    x = torch.rand(1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    c = int(model(x).argmax())
    domain = (torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)) if boxed else None
    if method == "lp" and p == 1.0:
        method = "crown"  # the LP scheme covers l2 and linf balls
    claim = relaxation_radius_claim(model, x, c, p, domain, method, tol=1e-3)
    assert claim.kind == "certified", claim.reason
    assert claim.params["target"] == c and claim.params["p"] == {1.0: 1, 2.0: 2, math.inf: "inf"}[p]
    assert (claim.params["domain"] is None) != boxed
    assert claim.witness["radius"] == claim.value > 0  # the witness is built on exactly the written radius
    assert len(claim.witness["alphas"]) == 1  # one hidden layer: its lower slopes
    flip = _witnessed_flip(model, x, c, p, domain)
    assert boxed or math.isfinite(flip)  # without a box some other class is always reachable on these nets
    assert claim.value <= flip
    (check,) = verify_certificate(_certificate(model, x, c, claim), model).checks
    assert check.status == "valid", check.detail


def test_lp_claims_carry_their_multipliers():
    model = _random_net(3, widths=(4, 8, 8, 3))
    x = torch.randn(1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    claim = relaxation_radius_claim(model, x, int(model(x).argmax()), math.inf, None, "lp", tol=1e-3)
    assert claim.kind == "certified"
    if claim.params["relaxation"] == "lp":
        assert {"tightening", "final"} <= set(claim.witness)
        assert set(claim.witness["final"]) == {"classes", "w", "y1", "y2"}
    else:  # a tightening LP was not optimal: the CROWN witness, said so in the method
        assert "CROWN witness" in claim.method


def test_refusals():
    softplus = mlp(4, 3, hidden=(8,), act="softplus").double().eval()
    x = torch.randn(1, 4, dtype=torch.float64)
    claim = relaxation_radius_claim(softplus, x, 0, 2)
    assert claim.kind == "refused" and "ReLU" in claim.reason
    pooled = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.MaxPool1d(2), nn.Linear(2, 2)).double().eval()
    claim = relaxation_radius_claim(pooled, x, 0, 2)
    assert claim.kind == "refused" and "not supported" in claim.reason
    model = _random_net(1)
    wrong = int(model(x).argmin())
    claim = relaxation_radius_claim(model, x, wrong, math.inf)
    assert claim.kind == "refused" and "no positive radius" in claim.reason
    assert verify_certificate(_certificate(model, x, wrong, claim), model).checks[0].status == "refused"


def test_bad_arguments_are_usage_errors():
    model, x = _random_net(0), torch.randn(1, 4, dtype=torch.float64)
    with pytest.raises(UsageError, match="unknown relaxation method"):
        relaxation_radius_claim(model, x, 0, 2, method="milp")
    with pytest.raises(UsageError, match="one example expected"):
        relaxation_radius_claim(model, torch.randn(2, 4, dtype=torch.float64), 0, 2)
    with pytest.raises(UsageError):
        relaxation_radius_claim(model, x, 0, 3)


# ----------------------------------------------------------------------------------- graphs with skips

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from graph_networks import GRAPH_MODELS, margin_rows, pgd_min, sampled_min  # noqa: E402


@pytest.mark.parametrize("name", ["residual-mlp", "maxpool-cnn", "resnet-block"])
def test_relu_graph_claims_hold_against_sampling_and_attacks(name):
    """A ReLU graph (residual adds, max-pool as ReLU tournaments) gets a CROWN claim; on its ball no sampled or
    attacked point flips the decision of N."""
    build, shape = GRAPH_MODELS[name]
    model = build(0).double()
    x = torch.randn(1, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    c = int(model(x).argmax())
    claim = relaxation_radius_claim(model, x, c, math.inf)
    assert claim.kind == "certified", claim.reason
    assert claim.params["relaxation"] == "crown" and claim.witness["radius"] == claim.value > 0
    net = from_module(model, shape)
    rows = margin_rows(torch.tensor([c]), net.num_classes)
    off = rows.abs().sum(-1) > 0
    flat = x.reshape(1, -1)
    worst = torch.minimum(sampled_min(net, flat, rows, claim.value, math.inf, count=500),
                          pgd_min(net, flat, rows, claim.value, math.inf, steps=10))
    assert (worst[off] > 0).all()


def _lp_graph_claim_verifies(name, p):
    build, shape = GRAPH_MODELS[name]
    model = build(0).double()
    x = torch.randn(1, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    c = int(model(x).argmax())
    crown = relaxation_radius_claim(model, x, c, p)
    lp = relaxation_radius_claim(model, x, c, p, method="lp")
    assert lp.kind == "certified", lp.reason
    assert lp.params["relaxation"] == "lp" and lp.witness["tightening"], lp.method  # the LP scheme, boxes tightened
    assert lp.value >= crown.value - 1e-4  # the LP starts from the CROWN boxes and keeps each margin's better bound
    (check,) = verify_certificate(_certificate(model, x, c, lp), model).checks
    assert check.status == "valid", check.detail
    net = from_module(model, shape)
    rows = margin_rows(torch.tensor([c]), net.num_classes)
    off = rows.abs().sum(-1) > 0
    flat = x.reshape(1, -1)
    worst = torch.minimum(sampled_min(net, flat, rows, lp.value, p, count=500), pgd_min(net, flat, rows, lp.value, p, steps=10))
    assert (worst[off] > 0).all()
    return crown, lp


@pytest.mark.parametrize("p", [math.inf, 2.0])
def test_lp_radius_claim_on_a_residual_relu_graph_verifies(p):
    """The LP scheme on a graph: the checker's dual bound gathers each layer output's coefficient from every
    layer that reads it, so multipliers from the LP with skip terms re-check; here the LP tightens the box of
    the layer that reads the residual add (layer 2) and certifies a larger radius than CROWN."""
    crown, lp = _lp_graph_claim_verifies("residual-mlp", p)
    build, shape = GRAPH_MODELS["residual-mlp"]
    assert set(from_module(build(0), shape).skips) == {2}  # z_2 = W_2 h_2 + b_2 + S_21 h_1
    assert 2 in [entry["layer"] for entry in lp.witness["tightening"]]
    assert lp.value > crown.value


@pytest.mark.slow
def test_lp_radius_claim_on_a_maxpool_graph_verifies():
    """Max-pool as ReLU tournaments (skips into every tournament layer): the LP claim re-checks (about 80 s)."""
    _lp_graph_claim_verifies("maxpool-cnn", math.inf)


def test_other_activations_are_refused_by_name():
    build, shape = GRAPH_MODELS["gelu-mlp"]
    claim = relaxation_radius_claim(build(0).double(), torch.zeros(1, *shape, dtype=torch.float64), 0, 2)
    assert claim.kind == "refused" and claim.reason.endswith("hidden layer 0 of this network has GELU")
