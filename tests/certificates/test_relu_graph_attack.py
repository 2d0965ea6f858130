"""Soundness attacks on the float64 re-checks (certify/certificates/relu_graph.py, relaxation_check.py,
property_check.py): each test builds an input on which a lower bound ABOVE the exact value (or an accepted false
claim) would be a bug, and compares with exact rationals (fractions.Fraction): the exact minimum of a one-input
piecewise-affine network (at its kinks), of an affine piece (at the box's corners), of a ball's support, or the
exact flipping radius. Attack surfaces: objective rows +-e_i of width one (the exact selection path), width-one
hidden layers with LP multipliers or split multipliers, slack that underflows, magnitudes from subnormal to 1e306,
near-cancelling rows, degenerate boxes, adversarial slopes and multipliers, flush-to-zero arithmetic, a radius
exactly at the decision boundary, non-finite witness entries, and edited certificates end to end."""
import copy
import itertools
import math
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_relaxation_check import _certificate, _check  # noqa: E402

from certify.certificates._common import Invalid  # noqa: E402
from certify.certificates.property_check import WITNESS_FORMAT, Tree, Witness, prove_holds, read_witness  # noqa: E402
from certify.certificates.relaxation_check import prove_margins  # noqa: E402
from certify.certificates.relaxation_claims import relaxation_radius_claim  # noqa: E402
from certify.certificates.relu_graph import GraphNet, box_support, lower_bound  # noqa: E402


# extreme magnitudes overflow float64 inside the checker by design (it then refuses: require_finite)
pytestmark = pytest.mark.filterwarnings("ignore:(overflow|invalid value) encountered:RuntimeWarning")


class _Refused(Exception):
    pass


def _exact(x) -> Fraction:
    return Fraction(float(x))


# ------------------------------------------------------------------ one-column objectives (rows +-1 of width 1)

def _chain(weights, biases):
    """A ReLU chain as the checker's GraphNet (float64)."""
    return GraphNet([np.asarray(w, dtype=np.float64) for w in weights], [np.asarray(b, dtype=np.float64) for b in biases],
                    {}, [("relu",)] * (len(weights) - 1))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_one_output_objective_is_bounded_below_its_exact_minimum(sign):
    """y = sign 2 relu(x) on x in [0.3, 1]: the row [[sign]] (one column, one entry +-1) gives sign y = 2 relu(x),
    minimum 0.6 at x = 0.3; its lower bound must not exceed 0.6 (the selection path must not double the row)."""
    net = _chain([[[1.0]], [[2.0 * sign]]], [[0.0], [0.0]])
    lower, upper = np.array([0.3]), np.array([1.0])
    bound = lower_bound(net, 1, np.array([[sign]]), np.zeros(1), [(np.array([[0.3]]), np.array([[1.0]]))],
                        box_support(lower, upper), [np.zeros((1, 1))], [None])
    exact_min = 2 * _exact(0.3)
    assert _exact(bound[0]) <= exact_min, f"lower bound {bound[0]!r} above the exact minimum {float(exact_min)}"


def test_property_holds_is_refused_on_a_violated_one_output_property():
    """N(x) = 2 relu(x) on the box [0.3, 1], counterexample formula y <= 1 (C = [[1]], d = [1]): x = 0.3 gives
    y = 0.6 <= 1, so the property is VIOLATED and no witness may prove it holds."""
    net = _chain([[[1.0]], [[2.0]]], [[0.0], [0.0]])
    box = (np.array([0.3]), np.array([1.0]))
    c, d = np.array([[1.0]]), np.array([1.0])
    assert 2 * 0.3 - 1.0 < 0  # the point x = 0.3 satisfies the counterexample formula
    witness = Witness([np.zeros(0, dtype=np.int64)], [[]],
                      [Tree([np.zeros((0, 3), dtype=np.int64)], [np.zeros(0)], np.array([0]), np.zeros((1, 0)))])
    with pytest.raises(Invalid, match="not > 0"):
        value = prove_holds(net, box, [(c, d)], witness)
        print("accepted with value", value)


def test_a_holds_certificate_moved_to_a_violated_one_output_formula_is_invalid_end_to_end():
    """A one-output ReLU net (outputs in [4.77, 5.20] on the box [-1, 1]^2, grid-sampled): the real pipeline
    certifies y <= d (d below the minimum) never happens; the document edited to the formula y <= 7.16 (d raised,
    hashes and statement re-rendered, value lowered to 1) is VIOLATED at every point, and must not verify; the
    honest certificate's value (min y - d >= value) is at most 0.5 (its value at the grid minimum)."""
    import json

    from certify.attacks.property import verify_property
    from certify.certificates.checker import verify_certificate
    from certify.certificates.claims import render
    from certify.certificates.document import encode_array, parse_certificate
    from certify.certificates.issuers.property import property_certificate
    from certify.models.vnnlib import Property

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1)).eval()
    with torch.no_grad():
        model[2].bias += 5.0
    lower, upper = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 101), np.linspace(-1, 1, 101)), -1).reshape(-1, 2)
    with torch.no_grad():
        outputs = model(torch.tensor(grid, dtype=torch.float32)).numpy().ravel()
    low = float(outputs.min())
    prop = Property(lower, upper, 1, [(np.array([[1.0]]), np.array([low - 0.5]))])
    result = verify_property(model, prop, timeout=5.0, input_shape=(2,), methods=("crown", "bab"))
    cert = property_certificate(model, prop, result, (2,), "bab", 5.0)
    assert cert.answer == "holds"
    doc = json.loads(cert.to_json())
    assert verify_certificate(parse_certificate(json.dumps(doc)), model).valid
    d_false = 1.5 * low
    assert (outputs <= d_false).all()  # every grid point satisfies the edited formula: violated
    claim = doc["claims"][0]
    claim["params"]["conjunctions"][0]["d"] = encode_array(np.array([d_false]))
    claim["statement"] = render("property-holds", claim["params"])
    claim["value"] = 1.0
    report = verify_certificate(parse_certificate(json.dumps(doc)), model)
    assert not report.valid, f"a violated property verified as holding: {report.checks}"
    # the honest certificate's value (a lower bound of min_x y - d) is at most its value at a grid point
    assert cert.claims[0].value <= low - (low - 0.5) + 1e-3, cert.claims[0].value


def test_property_holds_is_refused_when_a_split_multiplier_meets_a_width_one_hidden_layer():
    """N(x) = (relu(x) - 1, 0) on the box [-10, -9], formula y_0 + y_1 <= 0 (C = [[1, 1]], d = [0]): y_0 + y_1 = -1
    on the whole box, so the property is VIOLATED. The width-one hidden layer's root box (rows +-e_0 of width one)
    must contain z_0 = x in [-10, -9]; a split on that unit with beta = 1 (any beta >= 0 is a valid multiplier)
    must not turn the leaf's bound positive."""
    net = _chain([[[1.0]], [[1.0], [0.0]]], [[0.0], [-1.0, 0.0]])
    box = (np.array([-10.0]), np.array([-9.0]))
    c, d = np.array([[1.0, 1.0]]), np.array([0.0])
    record = {"format": WITNESS_FORMAT, "unstable": [[]], "root_alphas": [[]],
              "conjunctions": [{"depth": [1, 1], "splits": [[0, 0, 1], [0, 0, -1]], "betas": [0.0, 1.0], "row": [0, 0],
                                "alphas": np.zeros((2, 0))}]}
    witness = read_witness(record, net, [(c, d)], lambda rec, where: np.asarray(rec, dtype=np.float64))  # well formed
    with pytest.raises(Invalid, match="not > 0"):
        value = prove_holds(net, box, [(c, d)], witness)
        print("accepted with value", value, "although y_0 + y_1 = -1 everywhere")


def _width_one_model():
    """x -> z = x + 1 -> relu -> (z - 1.5, 0): margin f_0 - f_1 = relu(x + 1) - 1.5, > 0 iff x > 0.5."""
    model = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 2)).double().eval()
    with torch.no_grad():
        model[0].weight[:] = 1.0
        model[0].bias[:] = 1.0
        model[2].weight[:] = torch.tensor([[1.0], [0.0]])
        model[2].bias[:] = torch.tensor([-1.5, 0.0])
    return model


def test_lp_margins_on_a_width_one_hidden_layer_stay_below_the_true_margin():
    """At x0 = 0.5, radius 0.5 (Linf): x = 0 gives margin 1 - 1.5 = -0.5; with zero multipliers the dual bound is
    c . b_top + min over the relu box, which must use a box containing z = 1 (the true range is [1, 2])."""
    model = _width_one_model()
    weights = [model[0].weight.detach(), model[2].weight.detach()]
    biases = [model[0].bias.detach(), model[2].bias.detach()]
    zero = [np.zeros((1, 1))]
    witness = {"alphas": [np.array([0.5])], "tightening": [],
               "final": {"classes": [1], "w": zero, "y1": zero, "y2": zero}}
    with pytest.raises(_Refused, match="not proven > 0"):
        bounds = prove_margins(weights, biases, np.array([0.5]), 0, 0.5, witness, np.asarray, _Refused, "inf", "lp")
        print("margin lower bounds", bounds, "true minimum -0.5")


def test_a_raised_lp_radius_claim_on_a_width_one_hidden_layer_is_refused_end_to_end():
    """The flipping radius at x0 = 0.9 is exactly 0.4 (x = 0.5 ties the classes); the issuer's honest LP claim
    raised to 0.9 must be invalid, and the honest claim itself valid."""
    model = _width_one_model()
    x = torch.tensor([[0.9]], dtype=torch.float64)
    claim = relaxation_radius_claim(model, x, 0, math.inf, None, "lp")
    assert claim.kind == "certified" and claim.params["relaxation"] == "lp" and 0 < claim.value <= 0.4
    cert = _certificate(model, x, 0, claim)
    witness = copy.deepcopy(claim.witness)
    witness["radius"] = 0.9
    status, detail = _check(model, cert, value=0.9, witness=witness)
    assert status == "invalid", f"a false radius 0.9 > 0.4 was accepted: {detail}"
    status, detail = _check(model, cert)
    assert status == "valid", detail


# ------------------------------------------------------------------ _unit_minimum when its slack underflows

def test_the_unit_minimum_stays_below_the_exact_minimum_when_its_rounding_slack_underflows():
    """_unit_minimum(c, r = 0, g, l, u) for one relu unit: c, g subnormal (|c| ~ 8e-310, g = c (1 - 3e-9)), box
    [-1.19e297, 9.74e306]. The candidates' products c u, g u are normal (~8e-3) and cancel to v(u) ~ -2.6e-11, so
    each carries a rounding error ~ u |c u| ~ 1e-18; the slack reach * 4u (|c| + |g|) underflows (4u |c| < eta / 2)
    and the radius is 0 (an exact row, as the +-e_i selection gives), so nothing covers it. The exact minimum
    (rationals, at l, u or 0) is -2.5598016332963128e-11; the bound must not exceed it."""
    from certify.certificates.relu_graph import _unit_minimum
    c, g = float.fromhex("-0x0.09985a829418bp-1022"), float.fromhex("-0x0.09985a82122ebp-1022")
    lower, upper = float.fromhex("-0x1.d1396ac12eec6p+986"), float.fromhex("0x1.bbb0b704cd5fap+1019")
    bound = _unit_minimum(np.array([[c]]), np.zeros((1, 1)), np.array([[g]]), np.array([[lower]]), np.array([[upper]]), 0.0)
    exact = min(_exact(c) * _exact(upper) - _exact(g) * _exact(upper), -_exact(g) * _exact(lower), Fraction(0))
    assert _exact(bound[0]) <= exact, f"bound {bound[0]!r} above the exact minimum {float(exact)!r}"


# ------------------------------------------------------------------ exact values of one-input networks

def _exact_layers(net, x):
    """Every z_k (lists of Fractions) of the GraphNet at the exact input x (one input coordinate)."""
    hs, zs = [[x]], []
    for k in range(net.depth):
        z = [_exact(b) for b in net.biases[k]]
        for j, a in net.inputs_of(k):
            for i in range(a.shape[0]):
                z[i] += sum(_exact(a[i, t]) * hs[j][t] for t in range(a.shape[1]))
        zs.append(z)
        if k < net.depth - 1:
            slope = Fraction(net.negative_slope(k))
            hs.append([v if v >= 0 else slope * v for v in z])
    return zs


def _kinks(net, lo, hi):
    """Exact points of [lo, hi] between which every z_k is affine (each layer's zero crossings added in turn)."""
    points = [lo, hi]
    for k in range(net.depth - 1):
        points = sorted(set(points))
        values = [_exact_layers(net, p)[k] for p in points]
        crossings = [a + va[i] / (va[i] - vb[i]) * (b - a)
                     for a, b, va, vb in zip(points, points[1:], values, values[1:])
                     for i in range(len(va)) if (va[i] < 0 < vb[i]) or (vb[i] < 0 < va[i])]
        points = sorted(set(points + crossings))
    return points


def _exact_minimum(net, rows, lo, hi, top=None):
    """min over x in [lo, hi] (exact) of rows . z_top, per row: at the kinks (the function is piecewise affine)."""
    top = net.depth - 1 if top is None else top
    layers = [_exact_layers(net, p) for p in _kinks(net, lo, hi)]
    return [min(sum(_exact(r[i]) * z[top][i] for i in range(len(r))) for z in layers) for r in rows], layers


def _random_one_input_net(rng, scale_exponent, hidden_widths, outputs, skip=False, leaky=False):
    def draw(shape):
        return rng.standard_normal(shape) * 10.0 ** rng.integers(-scale_exponent, scale_exponent + 1, size=shape)
    widths = list(hidden_widths) + [outputs]
    weights, biases, prev = [], [], 1
    for w in widths:
        weights.append(draw((w, prev)))
        biases.append(draw(w))
        prev = w
    skips = {len(widths) - 1: {0: draw((outputs, 1))}} if skip and len(widths) > 2 else {}
    acts = [("leaky_relu", float(rng.choice([0.0, 0.25, 1.0]))) if leaky and rng.random() < 0.5 else ("relu",)
            for _ in hidden_widths]
    return GraphNet(weights, biases, skips, acts), draw


# ------------------------------------------------------------------ no radius above the exact one is proven

def test_no_radius_above_the_exact_flipping_radius_is_proven_on_one_input_nets():
    """Random one-input ReLU nets (1-3 hidden units per layer, some of width one): the exact flipping radius r* is
    located by bisection on the exact minimum of the margins (rationals); radius claims just above it are
    refused for honest-looking and adversarial witnesses (slopes 0/1/random, per-margin tables, multipliers
    zero, huge, negative), in CROWN and LP, in every norm (one input: the same set); 1e-6 below r*, some pass
    (the test reaches the boundary)."""
    rng = np.random.default_rng(7)
    refused = near = 0
    for trial in range(40):
        hidden = [int(rng.integers(1, 4)) for _ in range(int(rng.integers(1, 3)))]
        net, draw = _random_one_input_net(rng, int(rng.choice([0, 2])), hidden, int(rng.integers(2, 4)))
        x0 = draw(1)
        outputs = _exact_layers(net, _exact(x0[0]))[-1]
        target = max(range(len(outputs)), key=outputs.__getitem__)
        rows = np.eye(len(outputs))[target] - np.eye(len(outputs))
        rows = np.delete(rows, target, axis=0)

        def false_at(radius):
            mins, _ = _exact_minimum(net, rows, _exact(x0[0]) - _exact(radius), _exact(x0[0]) + _exact(radius))
            return min(mins) <= 0

        low, high = 0.0, 1e3
        if false_at(low) or not false_at(high):
            continue
        for _ in range(60):
            mid = (low + high) / 2
            if mid in (low, high):
                break
            low, high = (low, mid) if false_at(mid) else (mid, high)
        weights, biases = [torch.tensor(w) for w in net.weights], [torch.tensor(b) for b in net.biases]
        others = [j for j in range(len(outputs)) if j != target]
        for attempt, (scheme, slopes, kind) in enumerate([("crown", "uniform", 0), ("lp", "uniform", 0), ("lp", "0/1", 1),
                                                           ("lp", "tables", 2), ("crown", "tables", 3), ("lp", "0/1", 3)]):
            widths = net.widths
            shapes = [(len(outputs), w) for w in widths[:-1]] if slopes == "tables" else [(w,) for w in widths[:-1]]
            alphas = [rng.choice([0.0, 1.0], s) if slopes == "0/1" else rng.uniform(0, 1, s) for s in shapes]

            def multipliers(shape):
                return [np.zeros(shape), draw(shape), np.abs(draw(shape)) * 1e200, -np.abs(draw(shape))][kind]

            final = {"classes": others, **{key: [multipliers((len(others), w)) for w in widths[:-1]]
                                           for key in ("w", "y1", "y2")}}
            tightening = [{"layer": k, "units": list(range(widths[k])),
                           **{side: {key: [multipliers((widths[k], widths[j])) for j in range(k)] for key in ("w", "y1", "y2")}
                              for side in ("lower", "upper")}} for k in range(1, len(widths) - 1)]
            witness = {"alphas": alphas, "tightening": tightening, "final": final}
            p = ["inf", 2, 1][attempt % 3]
            with pytest.raises(_Refused):
                bounds = prove_margins(weights, biases, x0, target, high, witness, np.asarray, _Refused, p, scheme)
                print(f"trial {trial}: radius {high!r} > r* proven with bounds {bounds} ({scheme}, hidden {hidden})")
            refused += 1
            try:
                prove_margins(weights, biases, x0, target, low * (1 - 1e-6), witness, np.asarray, _Refused, p, scheme)
                near += 1
            except _Refused:
                pass
    assert refused >= 100 and near >= 10, (refused, near)


# ------------------------------------------------------------------ tight bounds at extreme magnitudes

def _float_below(q: Fraction) -> float:
    """The largest float64 <= q (-inf or the largest float below an overflowing q)."""
    if abs(q) > _exact(np.finfo(np.float64).max):
        return -math.inf if q < 0 else float(np.finfo(np.float64).max)
    value = float(q)
    while _exact(value) > q:
        value = math.nextafter(value, -math.inf)
    return value


def _float_above(q: Fraction) -> float:
    return -_float_below(-q)


def test_bounds_of_affine_pieces_at_extreme_magnitudes_stay_below_the_exact_minimum():
    """One hidden layer made stable on the box (each unit's bias puts it wholly >= 0 or <= 0, exactly), so the
    network is affine there and the bound is tight up to rounding: weights and boxes from 1e-150 to 1e150,
    near-cancelling rows (equal up to 1e-16), degenerate boxes (l = u), relu and leaky_relu. The exact minimum
    (at a corner of the box, rationals) is never exceeded, and most bounds are within 1e-12 relative of it."""
    rng = np.random.default_rng(11)
    tight = checked = 0
    for trial in range(150):
        e = int(rng.choice([0, 3, 50, 150]))

        def draw(shape):
            return rng.standard_normal(shape) * 10.0 ** rng.integers(-e, e + 1, size=shape)
        n0, n1, n2 = (int(v) for v in rng.integers(1, 4, size=3))
        base = draw((1, n0))
        w1 = base * (1 + draw((n1, n0)) * 10.0 ** -float(rng.integers(0, 17))) if trial % 2 else draw((n1, n0))
        w2 = draw((n2, n1))
        centre, half = draw(n0), np.abs(draw(n0)) * (rng.random(n0) < 0.8)
        lo, hi = centre - half, centre + half
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            continue
        corners = list(itertools.product(*[(_exact(a), _exact(b)) for a, b in zip(lo, hi)]))
        pre = [[sum(_exact(w1[i, j]) * x[j] for j in range(n0)) for x in corners] for i in range(n1)]
        gaps = [_exact(abs(draw(1)[0])) * (rng.random() < 0.7) for _ in range(n1)]
        b1 = np.array([_float_above(-min(p) + g) if rng.random() < 0.5 else _float_below(-max(p) - g)
                       for p, g in zip(pre, gaps)])
        b2 = draw(n2) * (rng.random() < 0.5)
        if not np.isfinite(b1).all():
            continue
        slope = float(rng.choice([0.0, 0.5, 1.0, rng.random()]))
        net = GraphNet([w1, w2], [b1, b2], {}, [("leaky_relu", slope)] if slope else [("relu",)])
        z1 = [[p[m] + _exact(b) for m in range(len(corners))] for p, b in zip(pre, b1)]
        box = (np.array([[_float_below(min(z)) for z in z1]]), np.array([[_float_above(max(z)) for z in z1]]))
        rows = draw((3, n2)) if trial % 3 else rng.choice([-2.0, 0.0, 1.0, 3.0], (3, n2))
        if not (np.isfinite(box[0]).all() and np.isfinite(box[1]).all()):
            continue
        try:
            bound = lower_bound(net, 1, rows, np.zeros(3), [box], box_support(lo, hi), [rng.uniform(0, 1, (3, n1))], [None])
        except Invalid:  # a bound overflowed float64: refused, never wrong
            continue
        for r in range(3):
            values = []
            for m in range(len(corners)):
                h = [z[m] if z[m] >= 0 else Fraction(slope) * z[m] for z in z1]
                values.append(sum(_exact(rows[r, k]) * (sum(_exact(w2[k, i]) * h[i] for i in range(n1)) + _exact(b2[k]))
                                  for k in range(n2)))
            exact = min(values)
            assert _exact(bound[r]) <= exact, (trial, r, bound[r], float(exact))
            checked += 1
            tight += (exact - _exact(bound[r])) <= Fraction(1, 10**12) * max(abs(v) for v in values)
    assert checked >= 300 and tight >= checked // 2, (checked, tight)


def test_the_ball_support_at_extreme_magnitudes_lies_below_the_exact_minimum():
    """InputSet.support for L2 and L1 balls: coefficients from subnormal to 1e300, radii from 5e-324 to 1e300,
    centres up to 1e300; below q . x0 - eps ||q||_dual exactly (squared, in rationals) at q = c - r, c + r."""
    from certify.certificates.relaxation_check import InputSet
    rng = np.random.default_rng(12)
    checked = 0
    for trial in range(400):
        e = int(rng.choice([0, 5, 100, 300]))

        def draw(shape):
            return rng.standard_normal(shape) * 10.0 ** rng.integers(-e, e + 1, size=shape)
        dim = int(rng.integers(1, 6))
        x0 = draw(dim) * (rng.random() < 0.8)
        eps = [abs(draw(1)[0]), 0.0, 5e-324 * int(rng.integers(1, 9))][trial % 3]
        p = [2.0, 1.0][trial % 2]
        c = [draw((2, dim)), draw((2, dim)) * 1e-308, np.round(rng.standard_normal((2, dim)) * 4) * 5e-324][trial % 3]
        r = np.abs(c) * rng.uniform(0, 0.5, c.shape) * (rng.random() < 0.5)
        bound = InputSet(x0, eps, p, None).support(c, r)
        if not np.isfinite(bound).all():  # lower_bound refuses a non-finite piece (require_finite)
            continue
        for i in range(2):
            for q in (c[i] - r[i], c[i] + r[i]):
                slack = sum(_exact(a) * _exact(b) for a, b in zip(q, x0)) - _exact(bound[i])
                if p == 1.0:
                    assert slack >= _exact(eps) * max(abs(_exact(a)) for a in q), (trial, bound[i])
                else:
                    assert slack >= 0 and slack**2 >= _exact(eps)**2 * sum(_exact(a)**2 for a in q), (trial, bound[i])
                checked += 1
    assert checked >= 1200


# ------------------------------------------------------------------ boxes and LP dual bounds with any multipliers

def test_boxes_and_dual_bounds_enclose_the_exact_values_for_adversarial_multipliers():
    """One-input ReLU graphs (some with a skip into the last layer), hidden widths 2-3, weights from 1e-30 to
    1e30, L2 / L1 / Linf balls (one input: the same interval), with and without a clipping domain: the re-derived
    boxes (interval + CROWN, every unit or the unstable ones) contain every exact z_k at the kinks, and the CROWN
    and LP dual bounds of random rows, with multipliers zero, random, huge or negative, lie below the exact
    minimum."""
    from certify.certificates import relaxation_check as rc
    rng = np.random.default_rng(13)
    checked = 0
    for trial in range(120):
        depth = int(rng.integers(2, 4))
        net, draw = _random_one_input_net(rng, int(rng.choice([0, 2, 30])), [int(rng.integers(2, 4)) for _ in range(depth - 1)],
                                          int(rng.integers(2, 4)), skip=trial % 2 == 1)
        x0, eps = draw(1), abs(draw(1)[0]) * (trial % 7 != 0)
        domain = (x0 - np.abs(draw(1)), x0 + np.abs(draw(1))) if trial % 3 == 0 else None
        p = [math.inf, 2.0, 1.0][trial % 3]
        low, high = _exact(x0[0]) - _exact(eps), _exact(x0[0]) + _exact(eps)
        if domain is not None:
            low, high = max(low, _exact(domain[0][0])), min(high, _exact(domain[1][0]))
        widths = net.widths
        alphas = [rng.choice([0.0, 1.0, rng.random()], size=w) for w in widths[:-1]]
        rows = draw((3, widths[-1]))

        def multipliers(shape):
            return [np.zeros(shape), draw(shape), np.abs(draw(shape)) * 1e100, -np.abs(draw(shape))][int(rng.integers(4))]
        try:
            input_set = rc.InputSet(x0, eps, p, domain)
            boxes = rc.crown_boxes(net, input_set, alphas, _Refused, every_unit=trial % 2 == 0)
            crown = rc._back_substitute(net, depth - 1, rows, boxes, input_set.support, [a[None] for a in alphas])
            duals = {key: [multipliers((3, w)) for w in widths[:-1]] for key in ("w", "y1", "y2")}
            dual = rc.dual_bound(net, input_set.support, depth - 1, rows, duals, boxes)
        except Invalid:
            continue
        exact, layers = _exact_minimum(net, rows, low, high)
        for z in layers:
            for k, (lo, hi) in enumerate(boxes):
                assert all(_exact(lo[i]) <= z[k][i] <= _exact(hi[i]) for i in range(widths[k])), (trial, k)
        for r in range(3):
            assert _exact(crown[r]) <= exact[r] and _exact(dual[r]) <= exact[r], (trial, r, crown[r], dual[r], float(exact[r]))
            checked += 1
    assert checked >= 250, checked


def test_leaf_bounds_with_splits_betas_and_leaky_slopes_stay_below_the_exact_minimum_of_the_leaf():
    """The property re-check's bound (relu_graph.lower_bound on root_boxes clamped by splits, betas >= 0 of any
    size, slopes 0/1/random, relu and leaky_relu, weights from 1e-150 to 1e150): below the exact minimum over the
    points of the box whose units have the split signs (rationals, at the kinks)."""
    from certify.certificates.property_check import root_boxes
    rng = np.random.default_rng(14)
    checked = 0
    for trial in range(200):
        depth = int(rng.integers(2, 4))
        hidden = [int(rng.integers(1, 4)) for _ in range(depth - 1)]
        net, draw = _random_one_input_net(rng, int(rng.choice([0, 3, 30, 150])), hidden, int(rng.integers(1, 4)),
                                          skip=trial % 2 == 1, leaky=True)
        centre, half = draw(1), np.abs(draw(1)) * (trial % 5 != 0)
        box = (centre - half, centre + half)
        top, widths = depth - 1, net.widths
        slopes = [[rng.choice([0.0, 1.0, rng.random()], size=(2 * widths[k], widths[j])) for j in range(k)] for k in range(top)]
        rows = draw((3, widths[-1]))
        try:
            roots = root_boxes(net, box, [np.arange(w) for w in widths[:-1]], slopes)
        except Invalid:
            continue
        leaf = [(np.repeat(lo, 3, 0), np.repeat(hi, 3, 0)) for lo, hi in roots]
        betas = [np.zeros((3, w)) for w in widths[:-1]]
        splits = []
        for r in range(3):
            chosen = [(int(rng.integers(top)), int(rng.integers(3)), int(rng.choice((-1, 1)))) for _ in range(r)]
            chosen = [(j, u % widths[j], s) for j, u, s in chosen]
            for j, u, s in chosen:
                if s > 0:
                    leaf[j][0][r, u] = max(leaf[j][0][r, u], 0.0)
                else:
                    leaf[j][1][r, u] = min(leaf[j][1][r, u], 0.0)
                betas[j][r, u] -= abs(draw(1)[0]) * s
            splits.append(chosen)
        keep = [r for r in range(3) if not any((lo[r] > hi[r]).any() for lo, hi in leaf)]
        if not keep or not all(np.isfinite(lo).all() and np.isfinite(hi).all() for lo, hi in roots):
            continue
        try:
            bound = lower_bound(net, top, rows[keep], np.zeros(len(keep)), [(lo[keep], hi[keep]) for lo, hi in leaf],
                                box_support(*box), [rng.uniform(0, 1, (len(keep), w)) for w in widths[:-1]],
                                [b[keep] for b in betas])
        except Invalid:
            continue
        _, layers = _exact_minimum(net, rows, _exact(box[0][0]), _exact(box[1][0]))
        for col, r in enumerate(keep):
            inside = [z for z in layers if all(s * z[j][u] >= 0 for j, u, s in splits[r])]
            if inside:
                exact = min(sum(_exact(rows[r, i]) * z[top][i] for i in range(widths[-1])) for z in inside)
                assert _exact(bound[col]) <= exact, (trial, r, bound[col], float(exact))
                checked += 1
    assert checked >= 250, checked


# ------------------------------------------------------------------ refusals: flush-to-zero, a tie, non-finite witnesses

def test_flush_to_zero_arithmetic_is_refused_and_restored():
    """Under torch.set_flush_denormal(True) (subnormals flushed: the error bounds do not hold) lower_bound and
    prove_margins refuse; the setting is restored to gradual underflow afterwards."""
    model = _width_one_model()
    weights = [model[0].weight.detach(), model[2].weight.detach()]
    biases = [model[0].bias.detach(), model[2].bias.detach()]
    witness = {"alphas": [np.array([0.5])]}
    if not torch.set_flush_denormal(True):
        pytest.fail("this CPU cannot flush subnormals (set_flush_denormal returned False): the guard is untested here")
    try:
        with pytest.raises(Invalid, match="flushes subnormal"):
            net = _chain([[[1.0]], [[1.0]]], [[0.0], [0.0]])
            lower_bound(net, 1, np.array([[1.0, ]]), np.zeros(1), [(np.array([[0.5]]), np.array([[1.0]]))],
                        box_support(np.array([0.5]), np.array([1.0])), [np.zeros((1, 1))], [None])
        with pytest.raises(_Refused, match="flushes subnormal"):
            prove_margins(weights, biases, np.array([0.9]), 0, 0.1, witness, np.asarray, _Refused, "inf", "crown")
    finally:
        torch.set_flush_denormal(False)
    assert np.array([2.0**-1022])[0] * 0.5 > 0
    assert prove_margins(weights, biases, np.array([0.9]), 0, 0.1, witness, np.asarray, _Refused, "inf", "crown")[0] > 0


@pytest.mark.parametrize("p", ["inf", 2, 1])
def test_a_radius_reaching_the_decision_boundary_exactly_is_refused(p):
    """Width-one model at x0 = 0.9: 0.9 - 0.4 = 0.5 exactly in float64 and the margin relu(x + 1) - 1.5 is 0 at
    x = 0.5, so the radius 0.4 is false (the margin is not > 0 on the closed ball) and must be refused; the
    network is affine on the ball, so the bound is tight and 0.4 (1 - 1e-12) is proven."""
    model = _width_one_model()
    weights = [model[0].weight.detach(), model[2].weight.detach()]
    biases = [model[0].bias.detach(), model[2].bias.detach()]
    assert _exact(0.9) - _exact(0.4) == Fraction(1, 2)
    witness = {"alphas": [np.array([0.5])]}
    with pytest.raises(_Refused, match="not proven > 0"):
        prove_margins(weights, biases, np.array([0.9]), 0, 0.4, witness, np.asarray, _Refused, p, "crown")
    assert prove_margins(weights, biases, np.array([0.9]), 0, 0.4 * (1 - 1e-12), witness, np.asarray, _Refused, p,
                         "crown")[0] > 0


def test_non_finite_or_out_of_range_witness_entries_are_never_accepted():
    """An honest CROWN claim with one alpha replaced by NaN, +-inf, -1e-300 or 1 + 2^-52, or its value or witness
    radius replaced by NaN / inf / a larger false radius: never "valid" beyond what is true (a NaN witness radius
    is ignored: the claim is re-derived at its own value)."""
    from certify.certificates.document import decode_array, encode_array
    from certify.errors import CertificateFormatError
    model = _width_one_model()
    x = torch.tensor([[0.95]], dtype=torch.float64)
    claim = relaxation_radius_claim(model, x, 0, math.inf, None, "crown")
    assert claim.kind == "certified" and claim.params["relaxation"] == "crown" and 0 < claim.value <= 0.45
    cert = _certificate(model, x, 0, claim)
    for bad in (math.nan, math.inf, -math.inf, -1e-300, 1 + 2.0**-52):
        witness = copy.deepcopy(claim.witness)
        alphas = decode_array(witness["alphas"][0], "alpha").copy()
        alphas.flat[0] = bad
        try:
            witness["alphas"][0] = encode_array(alphas)
            status, detail = _check(model, cert, witness=witness)
        except CertificateFormatError:  # the document layer refuses a non-finite array
            continue
        assert status == "invalid", (bad, detail)
    for bad in (math.nan, math.inf, -math.inf, 0.46):
        assert _check(model, cert, value=bad)[0] == "invalid", bad
        witness = dict(copy.deepcopy(claim.witness), radius=bad)
        status, detail = _check(model, cert, witness=witness)
        assert status == "invalid" or (math.isnan(bad) or bad == -math.inf), (bad, detail)
