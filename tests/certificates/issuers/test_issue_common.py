"""What the issuers share (certify/certificates/issuers/common.py): the translated network N and its
refusals, the exact float64 gradient of N_c with its rounding bound, the model claims about N_c, the claim
list, the function block and the provenance."""
import copy
import math
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from certify.bounds.activations import NAMES, Activation
from certify.bounds.network import AffineNetwork, from_module
from certify.certificates.claims import issue, refuse
from certify.certificates.issuers.common import (
    ClaimList, Issuing, exact_gradient, exact_logits, model_claims, provenance, translate, unit_row)
from certify.explain import Gradient
from certify.models.hashing import model_hash

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from graph_networks import GRAPH_MODELS, skip_network, translated  # noqa: E402
from graph_models import REFUSED  # noqa: E402


def _net(act: str, widths=(4, 7, 5, 3), seed: int = 0, scale: float = 1.0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU() if act == "relu" else nn.Softplus(beta=2.0))
    net = nn.Sequential(*layers).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    return net


def _autograd(model: nn.Module, row: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    points = points.clone().requires_grad_(True)
    (model(points) @ row).sum().backward()
    return points.grad


@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(act=st.sampled_from(["relu", "softplus"]), seed=st.integers(0, 10**6), scale=st.floats(0.3, 4.0),
       c=st.integers(0, 2))
def test_exact_gradient_matches_autograd_within_its_rounding_bound(act, seed, scale, c):
    model = _net(act, seed=seed, scale=scale)
    net = from_module(model, (4,))
    points = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    row = unit_row(3, c)
    g, bound = exact_gradient(net, row, points)
    reference = _autograd(model, row, points)
    # autograd rounds too: the two differ by at most our bound plus autograd's own (of the same order)
    assert bool(((g - reference).norm(dim=1) <= 2 * bound + 1e-15).all())
    assert bool((bound < 1e-10 * (1 + reference.norm(dim=1))).all())  # float64: the bound is tiny
    assert torch.allclose(exact_logits(net, points), model(points), rtol=0, atol=1e-12)


def test_relu_pattern_uncertain_inside_rounding_widens_the_bound():
    model = _net("relu")
    net = from_module(model, (4,))
    w, b = model[0].weight.detach(), model[0].bias.detach()
    # a point on the kink of hidden unit 0: w_0 . x + b_0 = 0
    x = torch.zeros(1, 4, dtype=torch.float64)
    x[0, 0] = -float(b[0]) / float(w[0, 0])
    _, at_kink = exact_gradient(net, unit_row(3, 0), x)
    _, away = exact_gradient(net, unit_row(3, 0), x + 0.3)
    assert float(at_kink[0]) > 1e3 * float(away[0])


def test_exact_logits_use_exact_softplus_not_the_threshold():
    model = nn.Sequential(nn.Linear(1, 1), nn.Softplus(beta=1.0, threshold=20.0), nn.Linear(1, 1)).double().eval()
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.weight.fill_(1.0)
            layer.bias.zero_()
    net = from_module(model, (1,))
    t = torch.tensor([[25.0]], dtype=torch.float64)
    assert float(exact_logits(net, t)) == pytest.approx(25.0 + math.log1p(math.exp(-25.0)), rel=1e-15)
    assert float(model(t).detach()) == 25.0  # torch switches to the identity above the threshold


def test_unit_row():
    assert unit_row(4, 2).tolist() == [0.0, 0.0, 1.0, 0.0] and unit_row(4, 2).dtype == torch.float64


def _untranslatable() -> tuple[nn.Module, tuple[int, ...]]:
    build, shape, _ = REFUSED["product"]
    return build(0), shape


def test_translate_gives_the_network_or_the_reason():
    assert translate(_net("softplus"), (4,)).depth == 3
    model, shape = _untranslatable()
    reason = translate(model, shape)
    assert isinstance(reason, str) and reason.startswith("the model cannot be translated exactly")


def test_issuing_state_refuses_per_example_on_a_failed_conformance_check():
    model = _net("softplus")
    x = torch.randn(2, 4, dtype=torch.float64)
    state = Issuing.build(model, x, 3)
    assert state.reason is None and state.refusal(0) is None and len(state.functions) == 2
    block = state.functions[0]
    assert block["conformance"]["passed"] and block["conformance"]["max_deviation"] <= block["conformance"]["tolerance"]
    failed = copy.deepcopy(state)
    failed.functions[1]["conformance"].update(passed=False, max_deviation=0.5, tolerance=1e-6, points=7)
    assert failed.refusal(0) is None
    assert failed.refusal(1).startswith("the conformance check failed: N differs from the model by 0.5 > tolerance 1e-06 on 7")
    model, shape = _untranslatable()
    untranslatable = Issuing.build(model, torch.randn(2, *shape), 3)
    assert untranslatable.net is None and untranslatable.refusal(1) == untranslatable.reason


def test_model_claims_of_softplus_and_relu_nets():
    x = torch.randn(1, 4, dtype=torch.float64)
    soft = model_claims(Issuing.build(_net("softplus"), x, 3), 1, None)
    assert [c.id for c in soft] == ["implementation-deviation", "lipschitz", "weak-convexity", "curvature"]
    assert all(c.kind == "certified" and c.params.get("target", 1) == 1 for c in soft)
    lip = soft[1]
    assert lip.params == {"target": 1, "p": 2} and lip.value > 0
    relu = {c.id: c for c in model_claims(Issuing.build(_net("relu"), x, 3), 1, None)}
    assert relu["implementation-deviation"].value <= 1e-299 and relu["lipschitz"].kind == "certified"
    assert relu["weak-convexity"].kind == relu["curvature"].kind == "refused" and "ReLU" in relu["curvature"].reason
    refused = model_claims(Issuing.build(_net("softplus"), x, 3), 1, "why not")
    assert all(c.kind == "refused" and c.reason == "why not" for c in refused)


def test_lipschitz_claim_bounds_sampled_gradient_norms():
    model = _net("softplus", scale=2.0)
    x = torch.randn(200, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    lip = model_claims(Issuing.build(model, x[:1], 3), 0, None)[1].value
    assert float(_autograd(model, unit_row(3, 0), x).norm(dim=1).max()) <= lip


def test_claim_list_lookups():
    claims = ClaimList()
    claims.add(issue("lipschitz", "lipschitz", {"target": 0, "p": 2}, 2.0, "m"))
    claims.add(refuse("curvature", "curvature", {"target": 0, "radius": None}, "m", "no"))
    assert claims.get("lipschitz").value >= 2.0 and claims.get("missing") is None
    assert claims.certified("lipschitz") == claims.get("lipschitz").value
    assert claims.certified("curvature") is None and claims.certified("missing") is None


def test_provenance_is_json_ready():
    model = _net("softplus")
    explainer = Gradient(model)
    prov = provenance(model, "zoo:x", explainer, 1.5)
    assert prov["model"]["sha256"] == model_hash(model) and prov["model"]["dtype"] == "float64"
    assert prov["explainer"]["method"] == "gradient" and prov["seconds"] == 1.5
    assert prov["torch"] == torch.__version__


# ----------------------------------------------------------------------------------- graphs and heads

@pytest.mark.parametrize("name", [f"skip-{a}" for a in NAMES] + list(GRAPH_MODELS))
def test_exact_gradient_of_a_graph_matches_autograd_within_its_rounding_bound(name):
    """Backprop through every skip (and every activation's derivative error)."""
    if name.startswith("skip-"):
        net = skip_network(Activation(name[5:]), seed=1, scale=2.0)
    else:
        net, _ = translated(name)
    points = torch.randn(4, net.input_size, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    row = unit_row(net.num_classes, 1)
    g, bound = exact_gradient(net, row, points)
    reference = _autograd(net.forward, row, points)
    assert bool(((g - reference).norm(dim=1) <= 2 * bound + 1e-15).all())
    assert torch.allclose(exact_logits(net, points), net.forward(points), rtol=0, atol=0)


def test_a_dropped_skip_would_be_seen_by_the_gradient_check():
    net = skip_network(Activation("tanh"), seed=4)
    points = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    row = unit_row(3, 0)
    g, bound = exact_gradient(net, row, points)
    chain = AffineNetwork(net.weights, net.biases, net.activations, (4,), skips={1: net.skips[1], 2: {1: net.skips[2][1]}})
    assert float(((g - _autograd(chain.forward, row, points)).norm(dim=1) - 2 * bound).min()) > 1e-3


@pytest.mark.parametrize("head", ["softmax-head", "log-softmax-head"])
def test_a_dropped_softmax_refuses_score_claims_but_not_the_deviation(head):
    build, shape = GRAPH_MODELS[head]
    model = build(0)
    state = Issuing.build(model, torch.randn(2, *shape), 3)
    assert state.refusal(0) is None and state.net.head is not None
    name = state.net.head
    output = "probability" if head == "softmax-head" else "log-probability"
    assert state.score_refusal(0) == (f"the model ends in {name}: the explanation is of the {output}, the bounds "
                                      f"would be about the logit (N is the network before the dropped {name})")
    claims = {c.id: c for c in model_claims(state, 1, None)}
    assert claims["implementation-deviation"].kind == "certified"
    for id_ in ("lipschitz", "weak-convexity", "curvature"):
        assert claims[id_].kind == "refused" and claims[id_].reason == state.score_refusal(0)


def test_model_claims_of_a_residual_graph():
    build, shape = GRAPH_MODELS["residual-mlp"]
    model = build(0)
    x = torch.randn(200, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    state = Issuing.build(model, x[:2].float(), 3)
    assert state.refusal(0) is None and not state.net.is_chain
    claims = {c.id: c for c in model_claims(state, 0, None)}
    assert claims["lipschitz"].kind == "certified" and "ReLU" in claims["curvature"].reason
    assert float(_autograd(state.net.forward, unit_row(3, 0), x.flatten(1)).norm(dim=1).max()) <= claims["lipschitz"].value
