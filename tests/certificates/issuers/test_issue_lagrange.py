"""Claims of Lagrange-dual explanations (certify/certificates/issuers/lagrange.py) on tiny ReLU nets: the flip
witness flips the model as run and N, its value is the norm of the perturbation returned; the certified
lower bounds lie below it (and below the MILP optimum); the gap is their difference; refusals say why."""
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from certify.certificates.builder import certify_explanations
from certify.certificates.checker import verify_certificate
from certify.certificates.issuers.common import Issuing
from certify.certificates.issuers.lagrange import flip_witness
from certify.explain.lagrange_dual import LagrangeDual

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from graph_models import GRAPH_MODELS, REFUSED  # noqa: E402


def _relu(seed: int = 0, inputs: int = 4) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(inputs, 6), nn.ReLU(), nn.Linear(6, 3)).eval()


def _x(n: int = 3, inputs: int = 4) -> torch.Tensor:
    return torch.rand(n, inputs, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("p", [2, math.inf, 1])
def test_radius_claims_bracket_the_minimal_flip(p):
    model, x = _relu(), _x()
    certs = certify_explanations(LagrangeDual(model, p=p, domain=(0.0, 1.0)), x, eps=0.1, k=1)
    for i, cert in enumerate(certs):
        claims = {c.id: c for c in cert.claims}
        upper = claims["radius-upper"]
        assert upper.kind == "certified", upper.reason
        assert upper.params == {"target": cert.target, "p": {2: 2, math.inf: "inf", 1: 1}[p],
                                "domain": {"lower": 0.0, "upper": 1.0}}
        delta = torch.tensor(upper.witness["delta"]["values"], dtype=torch.float64)
        point = x[i : i + 1].double() + delta
        assert int(model(point.float()).argmax()) != cert.target  # flips the model as run (float32)
        assert float(point.min()) >= 0.0 and float(point.max()) <= 1.0  # inside the domain
        assert upper.value >= float(delta.flatten().norm(p))
        lowers = [claims[k] for k in ("radius-lipschitz", "radius-relaxation") if claims[k].kind == "certified"]
        assert lowers and all(c.value <= upper.value for c in lowers)
        if "radius-exact" in claims and claims["radius-exact"].kind == "solver-reported":
            assert max(c.value for c in lowers) <= claims["radius-exact"].value <= upper.value * (1 + 1e-6)
        gap = claims["radius-gap"]
        best = max(lowers, key=lambda c: c.value)
        assert gap.assumptions == ["radius-upper", best.id]
        assert gap.value == pytest.approx(upper.value - best.value, rel=1e-8, abs=1e-12)
        report = verify_certificate(cert, model)
        assert report.valid, report.failures()


def test_exact_radius_only_for_small_relu_nets_in_l1_and_linf():
    model, x = _relu(1), _x(1)
    (linf,) = certify_explanations(LagrangeDual(model, p=math.inf, domain=(0.0, 1.0)), x, eps=0.1, k=1)
    (l2,) = certify_explanations(LagrangeDual(model, p=2, domain=(0.0, 1.0)), x, eps=0.1, k=1)
    assert linf.claim("radius-exact").kind == "solver-reported"
    assert set(linf.claim("radius-exact").witness) == {"solver", "tolerances", "status"}
    assert "radius-exact" not in {c.id for c in l2.claims}


def test_flip_witness_refuses_a_perturbation_that_does_not_flip():
    model, x = _relu(), _x(1)
    state = Issuing.build(model, x, 3)
    c = int(model(x).argmax())
    found = flip_witness(state, x, torch.zeros_like(x), c, 2.0, None)
    assert isinstance(found, str) and "does not flip" in found


def test_flip_witness_scales_a_perturbation_just_short_of_the_boundary():
    """A perturbation landing just before the decision boundary is scaled (by 1.001 .. 1.1) until it flips,
    and the value is the norm of the perturbation actually returned."""
    model, x = _relu(), _x(1)
    state = Issuing.build(model, x, 3)
    c = int(model(x).argmax())
    (cert,) = certify_explanations(LagrangeDual(model, p=2), x, eps=0.1, k=1)
    delta = torch.tensor(cert.claim("radius-upper").witness["delta"]["values"], dtype=torch.float32)
    lo, hi = 0.0, 1.0  # bisect the flipping scale along delta
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if int(model(x + mid * delta).argmax()) != c else (mid, hi)
    short = lo * 0.9995 * delta  # does not flip; 1.001 x it does
    assert int(model(x + short).argmax()) == c
    found = flip_witness(state, x, short, c, 2.0, None)
    assert not isinstance(found, str)
    returned, norm = found
    assert int(model((x.double() + returned).float()).argmax()) != c
    assert norm == pytest.approx(float(returned.flatten().norm()), rel=1e-15)
    assert norm > float(short.double().norm())


def test_misclassified_input_and_translation_refusals():
    model, x = _relu(), _x(1)
    wrong = (int(model(x).argmax()) + 1) % 3
    (cert,) = certify_explanations(LagrangeDual(model, p=2), x, target=wrong, eps=0.1, k=1)
    upper = cert.claim("radius-upper")
    assert upper.kind == "refused" and "already misclassified" in upper.reason

    build, shape, _ = REFUSED["product"]
    (cert,) = certify_explanations(LagrangeDual(build(0), p=2), torch.rand(1, *shape), eps=0.1, k=1)
    for claim_id in ("radius-upper", "radius-lipschitz", "radius-relaxation"):
        assert cert.claim(claim_id).kind == "refused" and "cannot be translated" in cert.claim(claim_id).reason


def test_unbounded_domain_is_null_in_params():
    model, x = _relu(), _x(1)
    (cert,) = certify_explanations(LagrangeDual(model, p=2, domain=(-math.inf, math.inf)), x, eps=0.1, k=1)
    assert cert.claim("radius-upper").params["domain"] is None


@pytest.mark.parametrize("name", ["residual-mlp", "maxpool-cnn", "softmax-head", "sigmoid-mlp"])
def test_radius_claims_of_graphs_and_of_a_dropped_softmax(name):
    """Graphs get every radius claim (the relaxation one for ReLU graphs, max-pool included; a sigmoid is
    refused by name), the MILP runs on small ReLU graphs too, and a dropped softmax does not touch the margins."""
    build, shape = GRAPH_MODELS[name]
    model = build(0)
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(1))
    (cert,) = certify_explanations(LagrangeDual(model, p=math.inf, domain=(-2.0, 2.0)), x, eps=0.1, k=1)
    claims = {c.id: c for c in cert.claims}
    relaxation = claims["radius-relaxation"]
    assert claims["radius-lipschitz"].kind == "certified"
    if name == "sigmoid-mlp":  # saturates: the attack may find no flip in the domain, so no upper bound here
        assert relaxation.kind == "refused" and "hidden layer 0 of this network has sigmoid" in relaxation.reason
        return
    upper = claims["radius-upper"]
    assert upper.kind == "certified", upper.reason
    assert relaxation.kind == "certified", relaxation.reason
    assert 0 < relaxation.value <= upper.value and claims["radius-lipschitz"].value <= upper.value
    assert ("radius-exact" in claims) == (name in ("softmax-head", "residual-mlp"))  # small ReLU nets, graphs too
    if "radius-exact" in claims and claims["radius-exact"].kind == "solver-reported":
        assert relaxation.value <= claims["radius-exact"].value <= upper.value * (1 + 1e-6)
