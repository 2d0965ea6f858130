"""radius-lower claims: honest CROWN and LP claims verify with outward-rounded float64 (random small ReLU nets,
digits-relu-mlp in Linf and L2); a radius raised by 10% fails naming a margin; a tiny raise that is still
provable passes; edited slopes and multipliers are re-derived (valid or a named failure, never trusted);
hidden boxes are never read from the witness; the checker's bounds lie below the true margins at sampled points
and within rounding of the exact dyadic-rational oracle (tests/certificates/exact_relaxation.py). (Issuing and its refusals: tests/certificates/test_relaxation_claims.py.)"""
import copy
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from certify.certificates.checker import verify_certificate
from certify.certificates.semantics import translate
from certify.certificates.document import Certificate, decode_array, encode_array, parse_certificate
from certify.certificates.relaxation_check import (InputSet, crown_boxes, dual_bound, interval, prove_margins,
                                                   relu_graph)
from certify.certificates.relaxation_claims import relaxation_radius_claim
from certify.models import zoo
from certify.bounds.network import from_module
from certify.models.builders import mlp
from certify.models.hashing import model_hash
from exact_relaxation import Exact, ExactSet, ReluNetwork, _ceil_sqrt
from exact_relaxation import crown_boxes as exact_crown_boxes


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


def test_the_exact_oracle_is_exact():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(size=20) * 10.0 ** rng.integers(-30, 30, 20), [0.0, 5e-324, -1e300]])
    a = Exact.of(values)
    assert (a.floor() == values).all() and (a.ceil() == values).all()
    total = (Exact.of(np.array([0.1])) + Exact.of(np.array([0.2])))
    exact = Fraction(0.1) + Fraction(0.2)
    lo, hi = total.floor()[0], total.ceil()[0]
    assert Fraction(lo) <= exact <= Fraction(hi) and lo < hi  # 0.1 + 0.2 is not a float
    assert [_ceil_sqrt(n) for n in (0, 1, 2, 4, 10**40 + 1)] == [0, 1, 2, 2, 10**20 + 1]


@pytest.mark.parametrize("p", [2.0, 1.0, math.inf])
def test_the_support_is_below_the_exact_one_and_within_rounding_of_it(p):
    """InputSet.support of rows r (an enclosure of radius 0) against the exact oracle's: never above it, within
    1e-12 relative; with a domain, the larger of the ball and box values; an enclosure [r - d, r + d] only lowers
    it."""
    rng = np.random.default_rng(1)
    x0, r = rng.normal(size=7), rng.normal(size=(3, 7)) * 10.0 ** rng.integers(-5, 5, (3, 1))
    eps = 0.37
    for domain in (None, (x0 - 0.1, x0 + 1.0)):
        ours = InputSet(x0, eps, p, domain).support(r, np.zeros_like(r))
        exact = ExactSet.build(x0, eps, p, domain).lower_support(Exact.of(r))
        for value, ints in zip(ours, exact.ints):
            truth = Fraction(int(ints)) * Fraction(2) ** exact.exp
            assert Fraction(float(value)) <= truth
            assert float(value) >= float(truth) - 1e-12 * float(np.abs(r).sum() * (np.abs(x0).max() + 1))
        wider = InputSet(x0, eps, p, domain).support(r, np.full_like(r, 1e-3))
        assert (wider <= ours).all() and (wider < ours).any()


def test_underflowing_l2_coefficients_keep_the_radius_term():
    """Rows of 1e-170 (squares below float64's range): the L2 norm is scaled, not flushed to 0, so the support
    still charges eps ||r||_2 (a bound that dropped it would exceed the true minimum)."""
    x0, r = np.zeros(4), np.full((1, 4), 1e-170)
    value = InputSet(x0, 1e150, 2.0, None).support(r, np.zeros_like(r))[0]
    assert value <= -2e-20 * (1 - 1e-12) and value > -2e-20 * (1 + 1e-12)


def test_boxes_and_margins_are_within_rounding_of_the_exact_oracle_and_below_sampled_values():
    """On random small ReLU nets and balls (Linf, L2, L1, with and without a domain), the float64 boxes contain
    the exact oracle's up to its outward rounding (equal on the units interval arithmetic leaves unstable), every
    margin bound is at most the smallest margin sampled in the ball and within 1e-9 of the exact CROWN bound."""
    proved = 0
    for seed in range(6):
        model = _random_net(seed, widths=(5, 9, 8, 4))
        stages = translate(model, (5,))
        rng = np.random.default_rng(seed)
        x0 = rng.normal(size=5)
        p = (math.inf, 2.0, 1.0)[seed % 3]
        domain = (x0 - 0.2, x0 + 0.9) if seed % 2 else None
        eps = 0.05
        net = relu_graph(stages.mats, stages.biases)
        alphas = [rng.uniform(0, 1, w) for w in net.widths[:-1]]
        boxes = crown_boxes(net, InputSet(x0, eps, p, domain), alphas, _Failed, every_unit=True)
        exact_net = ReluNetwork(stages.mats, stages.biases)
        exact_set = ExactSet.build(x0, eps, p, domain)
        exact_boxes, lines = exact_crown_boxes(exact_net, exact_set, alphas, _Failed)
        for (lo, hi), (elo, ehi) in zip(boxes, exact_boxes):
            scale = 1e-9 * (1 + np.abs(ehi) + np.abs(elo))
            assert (lo <= elo).all() and (hi >= ehi).all() and (lo >= elo - scale).all() and (hi <= ehi + scale).all()
        target = int(np.argmax(model(torch.as_tensor(x0)[None]).detach().numpy()))
        others = [j for j in range(4) if j != target]
        rows = np.zeros((3, 4))
        rows[:, target], rows[np.arange(3), others] = 1.0, -1.0
        exact = exact_net.backward(exact_set, net.depth - 1, Exact.of(rows), lines).floor()
        try:
            ours = np.array(prove_margins(stages.mats, stages.biases, x0, target, eps, {"alphas": alphas}, np.asarray,
                                          _Failed, p, "crown", domain))
        except _Failed:
            assert (exact <= 1e-9).any()  # not provable in exact arithmetic either (up to rounding)
            continue
        proved += 1
        np.testing.assert_allclose(ours, exact, rtol=0, atol=1e-9 * (1 + np.abs(exact).max()))
        signs = rng.choice([-1.0, 1.0], (2000, 5))
        steps = signs * eps if math.isinf(p) else signs * rng.uniform(0, 1, (2000, 5))
        if not math.isinf(p):
            steps *= eps / np.linalg.norm(steps, ord=p, axis=1, keepdims=True)
        points = x0 + steps
        if domain is not None:
            points = np.clip(points, *domain)
        with torch.no_grad():
            sampled = (model(torch.as_tensor(points)).numpy() @ rows.T).min(axis=0)
        assert (ours <= sampled).all()
    assert proved >= 3


def test_the_interval_box_is_outward_rounded():
    """interval() of one layer holds every exact value: W x + b with x at the corners, in exact rationals."""
    rng = np.random.default_rng(3)
    w, b = rng.normal(size=(6, 5)) * 1e3, rng.normal(size=6)
    net = relu_graph([torch.as_tensor(w), torch.as_tensor(np.zeros((2, 6)))], [torch.as_tensor(b), torch.zeros(2)])
    lo_in, hi_in = rng.normal(size=5), None
    hi_in = lo_in + rng.uniform(0, 1, 5)
    lo, hi = interval(net, 0, [(lo_in, hi_in)])
    for i in range(6):
        low = sum((Fraction(w[i, j]) * Fraction(lo_in[j] if w[i, j] > 0 else hi_in[j]) for j in range(5)), Fraction(b[i]))
        high = sum((Fraction(w[i, j]) * Fraction(hi_in[j] if w[i, j] > 0 else lo_in[j]) for j in range(5)), Fraction(b[i]))
        assert Fraction(lo[i]) <= low and Fraction(hi[i]) >= high


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

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from graph_models import GRAPH_MODELS

    build, shape = GRAPH_MODELS["residual-mlp"]
    model = build(0).double()
    raw = translate(model, shape)
    assert raw.skips
    net = relu_graph(raw.mats, raw.biases, raw.skips)
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, net.num_inputs)
    input_set = InputSet(x0, 0.4, math.inf, None)
    boxes = crown_boxes(net, input_set, [np.ones(w) for w in net.widths[:-1]], _Failed, every_unit=True)
    top = net.depth - 1
    rows = rng.standard_normal((16, net.widths[-1]))
    exact_net = ReluNetwork(raw.mats, raw.biases, raw.skips)
    exact_set = ExactSet.build(x0, 0.4, math.inf, None)
    _, lines = exact_crown_boxes(exact_net, exact_set, [np.ones(w) for w in net.widths[:-1]], _Failed)
    crown = exact_net.backward(exact_set, top, Exact.of(rows), lines).floor()
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
    dual = dual_bound(net, input_set.support, top, rows, duals, boxes)
    assert np.allclose(dual, crown, rtol=1e-9, atol=1e-9)
    exact_dual = exact_net.dual_bound(exact_set, top, Exact.of(rows), {k: [Exact.of(v) for v in vs] for k, vs in duals.items()},
                                      boxes, lines).floor()
    assert (dual <= exact_dual + 1e-9 * (1 + np.abs(exact_dual))).all()  # the exact oracle on the same boxes
    points = torch.as_tensor(x0 + rng.uniform(-0.4, 0.4, (4000, x0.size)))
    with torch.no_grad():
        sampled = (model(points).numpy() @ rows.T).min(axis=0)
    assert (dual <= sampled).all()
    for _ in range(5):
        duals = {key: [rng.standard_normal((16, w)) if key == "w" else rng.uniform(0, 1, (16, w))
                       for w in net.widths[:-1]] for key in ("w", "y1", "y2")}
        assert (dual_bound(net, input_set.support, top, rows, duals, boxes) <= sampled).all()
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
