"""radius-lower claims: honest CROWN and LP claims verify in exact arithmetic (random small ReLU nets,
digits-relu-mlp in Linf and L2); a radius raised by 10% fails naming a margin; a tiny raise that is still
provable passes; edited slopes and multipliers are re-derived (valid or a named failure, never trusted);
hidden boxes are never read from the witness. (Issuing and its refusals: tests/certificates/test_relaxation_claims.py.)"""
import copy
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from certify.certificates.checker import verify_certificate
from certify.certificates.semantics import translate
from certify.certificates.document import Certificate, decode_array, encode_array, parse_certificate
from certify.certificates.relaxation_check import Exact, ExactSet, _ceil_sqrt, prove_margins
from certify.certificates.relaxation_claims import relaxation_radius_claim
from certify.models import zoo
from certify.bounds.network import from_module
from certify.models.builders import mlp
from certify.models.hashing import model_hash


PROVENANCE = {"package": "test", "torch": "", "numpy": "", "created": "", "device": "cpu",
              "explainer": {"method": "lagrange-dual", "params": {}}}
FUNCTION = {"description": "test", "semantics": {},
            "conformance": {"tolerance": 0.0, "max_deviation": 0.0, "points": 1, "passed": True}}


def _certificate(model, x, target, claim):
    cert = Certificate({**PROVENANCE, "model": {"sha256": model_hash(model)}}, FUNCTION, encode_array(x.double().numpy()),
                       encode_array(np.zeros(x.shape)), target, "given", [claim])
    return parse_certificate(cert.to_json())


def _check(model, cert, value=None, witness=None):
    """(status, detail) of the one claim, optionally with its value or witness replaced."""
    cert = copy.deepcopy(cert)
    if value is not None:
        cert.claims[0].value = value
    if witness is not None:
        cert.claims[0].witness = witness
    (check,) = verify_certificate(cert, model).checks
    return check.status, check.detail


class _Failed(Exception):
    pass


def _decode(record):
    return decode_array(record, "witness")


def _zero_final(witness):
    zeroed = copy.deepcopy(witness)
    for key in ("w", "y1", "y2"):
        zeroed["final"][key] = [encode_array(np.zeros_like(decode_array(a, key))) for a in witness["final"][key]]
    return zeroed


def _random_net(seed, widths=(4, 12, 10, 3)):
    torch.manual_seed(seed)
    return mlp(widths[0], widths[-1], hidden=widths[1:-1]).double().eval()


def _claim_and_cert(model, x, p, domain=None, method="crown", tol=1e-4):
    target = int(model(x.to(next(model.parameters()).dtype)).argmax())
    claim = relaxation_radius_claim(model, x, target, p, domain, method, tol=tol)
    return claim, _certificate(model, x, target, claim)


def _honest_raised_loosened(model, x, p, domain, method, tol=1e-4):
    claim, cert = _claim_and_cert(model, x, p, domain, method, tol)
    assert claim.kind == "certified" and claim.value > 0, claim.reason
    assert (claim.params["domain"] is not None) == (domain is not None)
    status, detail = _check(model, cert)
    assert status == "valid", detail
    status, detail = _check(model, cert, value=claim.value * 1.1)
    assert status == "invalid" and "margin f_" in detail, detail
    assert _check(model, cert, value=claim.value * 0.5)[0] == "valid"  # loosened: still true
    return claim


@pytest.mark.parametrize("p", [math.inf, 2, 1])
def test_honest_crown_claims_verify_and_raised_ones_fail_on_random_nets(p):
    for seed in range(4):
        x = torch.randn(1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        domain = (x[0] - 0.5, x[0] + 2.0) if seed % 2 else None
        assert _honest_raised_loosened(_random_net(seed), x, p, domain, "crown").params["relaxation"] == "crown"


@pytest.mark.parametrize("p", [math.inf, 2])
def test_honest_lp_claims_verify_and_raised_ones_fail_on_random_nets(p):
    schemes = []
    for seed in range(2):
        x = torch.randn(1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        domain = (x[0] - 0.5, x[0] + 2.0) if seed % 2 else None
        claim = _honest_raised_loosened(_random_net(seed, widths=(4, 8, 8, 3)), x, p, domain, "lp", tol=1e-3)
        schemes.append(claim.params["relaxation"])
    assert "lp" in schemes  # (a "crown" witness only where a solve was not optimal at the radius)


@pytest.fixture(scope="module")
def digits():
    model, data = zoo.load("digits-relu-mlp")
    x = data.x_test[:1]
    return model, x, (data.domain_lo, data.domain_hi)


@pytest.mark.parametrize("p", [math.inf, 2])
def test_digits_crown_claims_verify_exactly(digits, p):
    model, x, domain = digits
    claim, cert = _claim_and_cert(model, x, p, domain)
    assert claim.kind == "certified" and claim.value > 1e-3 and claim.method.startswith("crown-bisection")
    assert _check(model, cert)[0] == "valid"
    status, detail = _check(model, cert, value=claim.value * 1.1)
    assert status == "invalid" and "not proven > 0" in detail
    # raised by less than the bisection's resolution: still provable, and accepted (it is still true)
    assert _check(model, cert, value=claim.value * (1 + 1e-7))[0] == "valid"


def test_slopes_are_used_as_given_and_checked(digits):
    model, x, domain = digits
    claim, cert = _claim_and_cert(model, x, math.inf, domain)
    alphas = [decode_array(a, "alpha") for a in claim.witness["alphas"]]
    # any alpha in [0, 1] is a valid lower line: an edited slope is re-derived with, never rejected as such
    flipped = copy.deepcopy(claim.witness)
    flipped["alphas"] = [encode_array(1.0 - a) for a in alphas]
    status, detail = _check(model, cert, witness=flipped)
    assert status == "valid" or "not proven > 0" in detail
    halved = copy.deepcopy(claim.witness)
    halved["alphas"] = [encode_array(np.full_like(a, 0.5)) for a in alphas]
    status, detail = _check(model, cert, witness=halved)
    assert status == "valid" or "not proven > 0" in detail
    # a slope outside [0, 1] is not a valid relu lower line: fails
    bad = copy.deepcopy(claim.witness)
    bad["alphas"][1] = encode_array(np.where(alphas[1] > 0, 1.5, alphas[1]))
    status, detail = _check(model, cert, witness=bad)
    assert status == "invalid" and "[0, 1]" in detail


def test_hidden_boxes_are_rederived_not_read(digits):
    """A witness carrying hand-tightened boxes (here: every unit pinned to a stable point box) is not
    evidence of a radius-lower claim (the checker never reads boxes, it re-derives them): rejected."""
    model, x, domain = digits
    claim, cert = _claim_and_cert(model, x, math.inf, domain)
    forged = copy.deepcopy(claim.witness)
    forged["boxes"] = [{"lo": encode_array(np.ones(64)), "hi": encode_array(np.ones(64))} for _ in range(2)]
    status, detail = _check(model, cert, value=claim.value * 1.1, witness=forged)
    assert status == "invalid" and "boxes" in detail
    status, detail = _check(model, cert, value=claim.value * 1.1)
    assert status == "invalid" and "not proven > 0" in detail


def test_lp_multipliers_are_rederived():
    model = _random_net(0, widths=(4, 16, 16, 3))
    x = torch.randn(1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    claim, cert = _claim_and_cert(model, x, math.inf, method="lp", tol=1e-3)
    assert claim.kind == "certified", claim.reason
    witness = claim.witness
    assert witness["tightening"], "expected unstable units tightened by LPs in layer 1"
    assert _check(model, cert)[0] == "valid"
    # final multipliers zeroed: the dual bound collapses to c^T b_top plus the input term, and each margin
    # falls back to its CROWN bound (still valid): strictly lower bounds, or a named failure
    zeroed = _zero_final(witness)
    stages = translate(model, (4,))
    weights, biases = stages.mats, stages.biases
    target, x0 = cert.target, x.reshape(-1).numpy()
    p, scheme = claim.params["p"], claim.params["relaxation"]
    honest = prove_margins(weights, biases, x0, target, claim.value, witness, _decode, _Failed, p, scheme)
    try:
        crown_only = prove_margins(weights, biases, x0, target, claim.value, zeroed, _decode, _Failed, p, scheme)
        assert all(z <= h + 1e-9 * (1 + abs(h)) for z, h in zip(crown_only, honest))
    except _Failed as exc:
        assert "not proven > 0" in str(exc)
    # negative y multipliers are clipped to 0 (a valid choice), never used with their sign
    negated = copy.deepcopy(witness)
    negated["final"]["y2"] = [encode_array(-decode_array(a, "y2")) for a in witness["final"]["y2"]]
    status, detail = _check(model, cert, witness=negated)
    assert status == "valid" or "not proven > 0" in detail
    # a tightening multiplier scaled up: the box it gives is re-derived from it (looser or empty), never trusted
    scaled = copy.deepcopy(witness)
    scaled["tightening"][0]["lower"]["w"] = [encode_array(3 * decode_array(a, "w")) for a in witness["tightening"][0]["lower"]["w"]]
    status, detail = _check(model, cert, witness=scaled)
    assert status == "valid" or "not proven > 0" in detail or "empty" in detail


def test_exact_arithmetic_is_exact():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(size=20) * 10.0 ** rng.integers(-30, 30, 20), [0.0, 5e-324, -1e300]])
    a = Exact.of(values)
    assert (a.floor() == values).all() and (a.ceil() == values).all()
    total = (Exact.of(np.array([0.1])) + Exact.of(np.array([0.2])))
    exact = Fraction(0.1) + Fraction(0.2)
    lo, hi = total.floor()[0], total.ceil()[0]
    assert Fraction(lo) <= exact <= Fraction(hi) and lo < hi  # 0.1 + 0.2 is not a float
    assert [_ceil_sqrt(n) for n in (0, 1, 2, 4, 10**40 + 1)] == [0, 1, 2, 2, 10**20 + 1]


def test_l2_support_is_a_lower_bound_within_rounding():
    rng = np.random.default_rng(1)
    x0, r = rng.normal(size=7), rng.normal(size=(3, 7))
    eps = 0.37
    support = ExactSet.build(x0, eps, 2.0, None).lower_support(Exact.of(r))
    exact_low = [Fraction(v) for v in support.floor()]
    reference = r @ x0 - eps * np.linalg.norm(r, axis=1)
    for low, ref, row in zip(exact_low, reference, r):
        assert low <= Fraction(float(ref)) + Fraction(1, 10**12)
        # the bound is attained up to rounding at x0 - eps r / ||r||
        assert float(low) > ref - 1e-12 * (1 + abs(ref))
    box = ExactSet.build(x0, eps, math.inf, (x0 - 0.1, x0 + 1.0)).lower_support(Exact.of(r))
    np.testing.assert_allclose(box.floor(), (np.minimum(r * (x0 - 0.1), r * (x0 + eps))).sum(1), rtol=1e-12)


@pytest.mark.slow
def test_digits_lp_claim_beyond_crown_rests_on_its_multipliers(digits):
    """On digits-relu-mlp the LP radius exceeds the CROWN one (about 2 minutes of LP solves): it verifies
    exactly, and without its final multipliers (CROWN bounds only) or its tightening LPs it fails."""
    model, x, domain = digits
    claim, cert = _claim_and_cert(model, x, math.inf, domain, "lp")
    crown, _ = _claim_and_cert(model, x, math.inf, domain, "crown")
    assert claim.params["relaxation"] == "lp" and claim.value > crown.value
    assert _check(model, cert)[0] == "valid"
    status, detail = _check(model, cert, witness=_zero_final(claim.witness))
    assert status == "invalid" and "not proven > 0" in detail
    untightened = copy.deepcopy(claim.witness)
    untightened["tightening"] = []
    status, detail = _check(model, cert, witness=untightened)
    assert status == "invalid" and "not proven > 0" in detail


@pytest.mark.parametrize("name", ["residual-mlp", "maxpool-cnn", "resnet-block"])
def test_radius_claims_on_relu_graphs_with_skips_verify_exactly_and_hold(name):
    """ReLU graphs (a residual MLP, a MaxPool CNN as ReLU layers, a ResNet block): the checker's translation has
    skip terms, the exact back-substitution gathers them, honest claims verify, raised ones fail, and no
    sampled point of the certified ball (corners by sign patterns, uniform) changes the decision."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from graph_models import GRAPH_MODELS

    build, shape = GRAPH_MODELS[name]
    model = build(0)
    assert translate(model, shape).skips
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(1))
    claim = _honest_raised_loosened(model, x, math.inf, None, "crown")
    target = claim.params["target"]
    gen = torch.Generator().manual_seed(2)
    signs = torch.randint(0, 2, (512, *shape), generator=gen).double() * 2 - 1
    uniform = torch.rand(512, *shape, generator=gen, dtype=torch.float64) * 2 - 1
    points = x.double() + claim.value * torch.cat([signs, uniform])
    with torch.no_grad():
        assert (model.double()(points).argmax(1) == target).all()
    model.float()


def test_the_lp_dual_bound_on_a_relu_graph_matches_crown_and_holds_for_any_multipliers():
    """dual_bound on a residual MLP (skips): with the multipliers that make the triangle LP's Lagrangian equal to
    CROWN's back-substitution (slopes 1: y1 = Q+ on active / unstable units, y2 = -Q-, w = y1 - s y2, Q the
    coefficient gathered from every layer reading the value) it reproduces the exact CROWN bound (a missing skip
    term would not), and with random multipliers it stays below c . z_top at sampled points of the ball."""
    import sys
    from pathlib import Path

    from certify.certificates.relaxation_check import ReluNetwork, crown_boxes

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from graph_models import GRAPH_MODELS

    build, shape = GRAPH_MODELS["residual-mlp"]
    model = build(0).double()
    raw = translate(model, shape)
    assert raw.skips
    net = ReluNetwork(raw.mats, raw.biases, raw.skips)
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, net.weights[0].ints.shape[1])
    input_set = ExactSet.build(x0, 0.4, math.inf, None)
    boxes, lines = crown_boxes(net, input_set, [np.ones(w) for w in net.widths[:-1]], _Failed)
    top = net.depth - 1
    rows = rng.standard_normal((16, net.widths[-1]))
    crown = net.backward(input_set, top, Exact.of(rows), lines).floor()
    mats = {k: [(k, np.asarray(raw.mats[k]))] + [(j, np.asarray(v)) for j, v in sorted(raw.skips.get(k, {}).items())]
            for k in range(top + 1)}
    g, q, duals = {top: rows}, {}, {"w": [None] * top, "y1": [None] * top, "y2": [None] * top}
    for k in range(top, 0, -1):
        for j, a in mats[k]:
            q[j] = q.get(j, 0.0) + g[k] @ a
        lo, hi = boxes[k - 1]
        chord = np.where((lo < 0) & (hi > 0), hi / np.where(hi > lo, hi - lo, 1.0), 0.0)
        s = np.where(lo >= 0, 1.0, chord)
        coeff = q.pop(k)
        y1 = np.maximum(coeff, 0.0) * (hi > 0)
        y2 = -np.minimum(coeff, 0.0)
        g[k - 1] = y1 - s * y2
        duals["w"][k - 1], duals["y1"][k - 1], duals["y2"][k - 1] = g[k - 1], y1, y2
    exact = {key: [Exact.of(v) for v in values] for key, values in duals.items()}
    dual = net.dual_bound(input_set, top, Exact.of(rows), exact, boxes, lines).floor()
    assert np.allclose(dual, crown, rtol=1e-9, atol=1e-9)
    points = torch.as_tensor(x0 + rng.uniform(-0.4, 0.4, (4000, x0.size)))
    with torch.no_grad():
        sampled = (model(points).numpy() @ rows.T).min(axis=0)
    assert (crown <= sampled + 1e-9).all()
    for _ in range(5):
        duals = {key: [Exact.of(rng.standard_normal((16, w)) if key == "w" else rng.uniform(0, 1, (16, w)))
                       for w in net.widths[:-1]] for key in ("w", "y1", "y2")}
        assert (net.dual_bound(input_set, top, Exact.of(rows), duals, boxes, lines).floor() <= sampled + 1e-9).all()
    model.float()


def test_crown_witness_tables_give_each_margin_its_own_slopes(digits, monkeypatch):
    """A CROWN claim's alphas are tables [K, n_k]: row c the boxes' slopes, row j the slopes of margin f_c - f_j
    (the better of the parallel and adaptive rules). Each margin re-derived with its own row is at least the
    bound with the boxes' slopes everywhere (the one-slope-per-unit form, still accepted; compared on a
    smaller ball, where both prove every margin, the checker failing on the first unproven one); a per-margin slope
    outside [0, 1] or a table with the wrong number of rows fails, naming the problem. (Radii use the adaptive
    boxes, on which the adaptive slopes win every margin here; the parallel boxes make the rows differ.)"""
    import certify.bounds.radius as radius
    import certify.certificates.relaxation_claims as relaxation_claims

    monkeypatch.setattr(radius, "RADIUS_SLOPES", "parallel")
    monkeypatch.setattr(relaxation_claims, "RADIUS_SLOPES", "parallel")
    model, x, domain = digits
    claim, cert = _claim_and_cert(model, x, math.inf, domain)
    tables = [decode_array(a, "alpha") for a in claim.witness["alphas"]]
    target = claim.params["target"]
    assert [t.shape for t in tables] == [(10, 64), (10, 64)]
    net = from_module(model, (64,))
    x0 = torch.as_tensor(x, dtype=torch.float64).reshape(-1).numpy()
    box = tuple(np.asarray(d, dtype=np.float64) for d in domain)

    def margins(alphas):
        return np.array(prove_margins(net.weights, net.biases, x0, target, claim.value / 2, {"alphas": alphas},
                                      lambda a: a, _Failed, "inf", "crown", box))

    own = margins(tables)
    shared = margins([t[target] for t in tables])
    assert (own >= shared - 1e-12).all() and (own > shared + 1e-9).any()
    status, detail = _check(model, cert, witness={**claim.witness, "alphas": [encode_array(t[target]) for t in tables]})
    assert status == "valid" or "not proven > 0" in detail
    others = [j for j in range(10) if j != target]
    bad = copy.deepcopy(claim.witness)
    raised = tables[1].copy()
    raised[others[0]] = np.where(raised[others[0]] > 0, 1.5, raised[others[0]])
    bad["alphas"] = [encode_array(tables[0]), encode_array(raised)]
    status, detail = _check(model, cert, witness=bad)
    assert status == "invalid" and "per-margin alphas must lie in [0, 1]" in detail
    short = copy.deepcopy(claim.witness)
    short["alphas"] = [encode_array(t[:5]) for t in tables]
    status, detail = _check(model, cert, witness=short)
    assert status == "invalid" and "10 rows" in detail
