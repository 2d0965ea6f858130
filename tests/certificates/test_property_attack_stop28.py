"""Attacks on property certificates (stop 28 review): the checker (certify/certificates/property_check.py), its
float64 primitives (certify/certificates/relu_graph.py, `up_nonneg` in particular) and the issuer's provisional
holds value (certify/certificates/issuers/property.py, `checked_property_certificate`). Each test PASSES when the
product is correct: a tampered or false claim is refused, an accepted value never exceeds the exact one
(fractions.Fraction on float64 data), and nothing an attacker puts in a certificate runs code.

Two attacks found bugs, fixed with them: the issuer crashed on an infinite margin, and `certify verify` ran the
Python code a certificate named as its model (now refused unless the user passes --model or --run-model-code)."""
import copy
import itertools
import json
import math
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from property_grid import classification, grid_values, predicted, tiny_net  # noqa: E402
from test_property_check import as_records, crown_witness  # noqa: E402

from certify.attacks.property import PropertyResult, verify_property  # noqa: E402
from certify.certificates import property_check  # noqa: E402
from certify.certificates._common import Invalid  # noqa: E402
from certify.certificates.checker import verify_certificate  # noqa: E402
from certify.certificates.claims import render  # noqa: E402
from certify.certificates.document import decode_array, encode_array, parse_certificate  # noqa: E402
from certify.certificates.issuers.property import checked_property_certificate  # noqa: E402
from certify.certificates.property_check import (REFINED_WITNESS_FORMAT, WITNESS_FORMAT, Tree, Witness,  # noqa: E402
                                                 counterexample_slack, property_arrays, prove_holds, read_witness)
from certify.certificates.relu_graph import (GraphNet, graph_of, require_finite, settle, sum_down,  # noqa: E402
                                             up_nonneg)
from certify.certificates.semantics import translate  # noqa: E402
from certify.errors import CertificateFormatError  # noqa: E402
from certify.models.vnnlib import Property  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:(overflow|invalid value) encountered:RuntimeWarning")

CENTRE = np.array([0.3, -0.2])


# ------------------------------------------------------------------ helpers

def _q(x) -> Fraction:
    return Fraction(float(x))


def _float_below(q: Fraction) -> float:
    """The largest float64 <= q (OverflowError when q is beyond the float range)."""
    value = float(q)
    while _q(value) > q:
        value = math.nextafter(value, -math.inf)
    return value


def _exact_outputs(net: GraphNet, x: np.ndarray) -> list[Fraction]:
    """z_top of the checker's GraphNet at the exact input x (chains, relu / leaky_relu), in rationals."""
    hs = [[_q(v) for v in x]]
    z: list[Fraction] = []
    for k in range(net.depth):
        z = [_q(net.biases[k][i]) for i in range(net.widths[k])]
        for j, a in net.inputs_of(k):
            for i in range(a.shape[0]):
                z[i] += sum(_q(a[i, t]) * hs[j][t] for t in range(a.shape[1]))
        if k < net.depth - 1:
            slope = Fraction(net.negative_slope(k))
            hs.append([v if v >= 0 else slope * v for v in z])
    return z


def _empty_witness(hidden: list[int], conjunctions: int = 1) -> Witness:
    """No unstable units, one leaf per conjunction (row 0): enough for a point box."""
    return Witness([np.zeros(0, dtype=np.int64) for _ in hidden],
                   [[np.zeros((2 * hidden[k], 0)) for _ in range(k)] for k in range(len(hidden))],
                   [Tree([np.zeros((0, 3), dtype=np.int64)], [np.zeros(0)], np.array([0]), np.zeros((1, 0)))
                    for _ in range(conjunctions)])


def _verify(doc: dict, model, base=None):
    """(valid, failures or detail)."""
    try:
        report = verify_certificate(parse_certificate(json.dumps(doc)), model, base)
    except CertificateFormatError as exc:
        return False, [str(exc)]
    return report.valid, (report.failures() if not report.valid else [c.detail for c in report.checks])


def _rederived(doc: dict, model) -> float:
    """The checker's own value of a holds document's claim (prove_holds on the checker's translation)."""
    claim = doc["claims"][0]
    net = graph_of(translate(model, tuple(doc["property"]["input_shape"])))
    box, conjunctions = property_arrays(claim["params"])
    witness = read_witness(claim["witness"], net, conjunctions, lambda rec, where: decode_array(rec, where, None))
    return prove_holds(net, box, conjunctions, witness)


def _set_param(claim: dict, key: str, values) -> None:
    claim["params"][key] = encode_array(np.asarray(values, dtype=np.float64))
    claim["statement"] = render(claim["type"], claim["params"])


def _arr(record: dict) -> np.ndarray:
    return np.asarray(record["values"], dtype=np.float64).reshape(record["shape"])


@pytest.fixture(scope="module")
def split_case():
    """(model, prop, result, holds certificate doc) with a split tree (BaB beyond the root) on a tiny net."""
    for seed, eps in [(5, 1.0)] + [(s, e) for s in range(12) for e in (1.0, 1.5, 2.0)]:
        model = tiny_net(seed)
        label = predicted(model, CENTRE)
        if True:
            prop = classification(CENTRE, eps, label)
            result = verify_property(model, prop, timeout=5.0, input_shape=(2,), methods=("crown", "bab"))
            if result.status != "holds" or result.witness is None:
                continue
            if not any(np.asarray(t["depth"]).sum() for t in result.witness["conjunctions"]):
                continue
            cert, problems = checked_property_certificate(model, prop, copy.deepcopy(result), (2,), "bab", 5.0)
            if cert.answer == "holds" and not problems:
                return model, prop, result, json.loads(cert.to_json())
    pytest.fail("no split-tree holds certificate on the tiny nets")


# ------------------------------------------------------------------ 1. the value

def test_a_value_one_ulp_above_the_checkers_own_is_refused(split_case):
    """The claimed value set to the checker's re-derived value verifies; one ulp above, 2^-20 relative above and
    x1000 do not (value edits need no hash: the value is not hashed, only compared)."""
    model, prop, _, doc = split_case
    exact = _rederived(doc, model)
    assert doc["claims"][0]["value"] <= exact
    for value, ok in ((exact, True), (math.nextafter(exact, math.inf), False), (exact * (1 + 2**-20), False),
                      (exact * 1000, False), (1e308, False)):
        d = copy.deepcopy(doc)
        d["claims"][0]["value"] = value
        valid, detail = _verify(d, model)
        assert valid == ok, (value, detail)
        if not ok:
            assert "above the re-derived" in "; ".join(detail)


def test_non_numbers_and_non_finite_values_are_refused(split_case):
    model, _, _, doc = split_case
    for value in (0.0, -0.0, -1.0, 5e-324 / 2, True, "1", None, 10**39):
        d = copy.deepcopy(doc)
        d["claims"][0]["value"] = value
        assert not _verify(d, model)[0], value
    for literal in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 60):
        d = copy.deepcopy(doc)
        d["claims"][0]["value"] = 123456.789
        text = json.dumps(d).replace("123456.789", literal)
        assert text.count(literal) >= 1
        try:
            report = verify_certificate(parse_certificate(text), model)
        except CertificateFormatError:
            continue
        assert not report.valid, literal


# ------------------------------------------------------------------ 2. the provisional holds value

@pytest.mark.parametrize("margin", [math.nan, 1e308, 5e-324, -1.0, 0.0, "above by 2^-20", "x1000"])
def test_a_forged_provisional_margin_never_certifies_above_the_checkers_value(split_case, margin):
    """checked_property_certificate with the bound code's margin replaced (NaN, huge, subnormal, <= 0, just above
    the truth, x1000): the answer is holds only with a value the checker re-derives (<= its own value) and a
    certificate that verifies; never a crash, never the forged number."""
    model, prop, result, _ = split_case
    forged = copy.deepcopy(result)
    forged.margin = {"above by 2^-20": result.margin * (1 + 2**-20), "x1000": result.margin * 1000}.get(margin, margin)
    cert, problems = checked_property_certificate(model, prop, forged, (2,), "bab", 5.0)
    if cert.answer == "holds":
        doc = json.loads(cert.to_json())
        assert problems == [] and doc["claims"][0]["value"] <= _rederived(doc, model)
        assert _verify(doc, model)[0]
    else:
        assert cert.claims[0].kind == "refused"


def test_an_infinite_provisional_margin_does_not_crash_the_issuer(split_case):
    """Found by this review (an issuer crash, not a false certificate): a bound code margin of +inf makes `issue`
    return a REFUSED claim (value None) for the provisional value, and `_holds_claim` compared None with 5e-324
    (TypeError out of checked_property_certificate); it now falls back to the re-derived value."""
    model, prop, result, _ = split_case
    forged = copy.deepcopy(result)
    forged.margin = math.inf
    cert, problems = checked_property_certificate(model, prop, forged, (2,), "bab", 5.0)
    assert cert.answer in ("holds", "unknown")
    if cert.answer == "holds":
        doc = json.loads(cert.to_json())
        assert problems == [] and doc["claims"][0]["value"] <= _rederived(doc, model)


def _point_model(rng, widths, scale, dtype=torch.float64, leaky=None):
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(rng.standard_normal((b, a)) * 2.0 ** rng.integers(-scale, scale + 1, (b, a))))
            lin.bias.copy_(torch.from_numpy(rng.standard_normal(b) * 2.0 ** rng.integers(-scale, scale + 1, b)))
        layers += [lin, nn.LeakyReLU(leaky) if leaky is not None else nn.ReLU()]
    return nn.Sequential(*layers[:-1]).to(dtype).eval()


def test_rounding_level_margins_on_point_boxes_are_never_overstated():
    """Point boxes (l = u = x, every unit stable: the bound is tight up to rounding), weights from 2^-100 to 2^100,
    relu and leaky relu, d put 2^-8 .. 2^-55 relative below the exact C N(x) (so the exact margin is from ~1 ulp
    to ~2^-8 |C y|): prove_holds never returns more than the exact margin (rationals), and some are proven."""
    rng = np.random.default_rng(28)
    accepted = 0
    for trial in range(250):
        widths = [int(rng.integers(1, 4))] + [int(rng.integers(1, 5)) for _ in range(int(rng.integers(1, 4)))] + [2]
        scale = int(rng.choice([0, 5, 30, 100]))
        leaky = float(rng.choice([0.01, 0.1, 0.5])) if rng.random() < 0.3 else None
        net = graph_of(translate(_point_model(rng, widths, scale, leaky=leaky), (widths[0],)))
        x = rng.standard_normal(widths[0]) * 2.0 ** rng.integers(-scale, scale + 1, widths[0])
        c = np.array([[1.0, -1.0]]) if trial % 2 else rng.standard_normal((1, 2))
        z = _exact_outputs(net, x)
        cy = _q(c[0, 0]) * z[0] + _q(c[0, 1]) * z[1]
        try:
            d = _float_below(cy - abs(cy) * Fraction(1, 2 ** int(rng.integers(8, 56))))
        except OverflowError:
            continue
        try:
            value = prove_holds(net, (x, x.copy()), [(c, np.array([d]))], _empty_witness(net.widths[:-1]))
        except Invalid:
            continue
        accepted += 1
        assert _q(value) <= cy - _q(d), f"trial {trial}: value {value!r} above the exact margin {float(cy - _q(d))!r}"
    assert accepted >= 50


def test_a_zero_or_rounding_level_margin_through_the_provisional_path_is_never_holds_with_a_false_value():
    """End to end through checked_property_certificate with a FORGED bound-code result (status holds, margin 2x the
    exact margin, the trivial witness) on float64 point-box properties whose exact margin is 0 (a tie: the property
    is violated) or 2^-20 .. 2^-50 relative: never holds at a margin of 0; holds only with a value <= the exact margin."""
    rng = np.random.default_rng(2828)
    zero = small = 0
    for trial in range(60):
        widths = [2, int(rng.integers(1, 4)), 2]
        model = _point_model(rng, widths, 3)
        # short dyadic weights and inputs so that C N(x) is a float: d = C N(x) exactly is a tie (margin 0)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.round(p * 16) / 16)
        x = np.round(rng.standard_normal(2) * 16) / 16
        net = graph_of(translate(model, (2,)))
        z = _exact_outputs(net, x)
        cy = z[0] - z[1]
        if cy == 0:
            continue
        for kind in ("zero", "ulps"):
            d = float(cy) if kind == "zero" else _float_below(cy - abs(cy) * Fraction(1, 2 ** int(rng.integers(20, 50))))
            exact = cy - _q(d)
            prop = Property(x.copy(), x.copy(), 2, [(np.array([[1.0, -1.0]]), np.array([d]))])
            hidden = net.widths[:-1]
            witness = {"format": WITNESS_FORMAT, "unstable": [np.zeros(0) for _ in hidden],
                       "root_alphas": [[np.zeros((2 * hidden[k], 0)) for _ in range(k)] for k in range(len(hidden))],
                       "conjunctions": [{"depth": np.zeros(1), "splits": np.zeros((0, 3)), "betas": np.zeros(0),
                                         "row": np.zeros(1), "alphas": np.zeros((1, 0))}]}
            result = PropertyResult("holds", 0.1, "crown", float(2 * exact) if exact > 0 else 1e-3, witness=witness)
            cert, _ = checked_property_certificate(model, prop, result, (2,), "crown", 1.0)
            if kind == "zero":
                zero += 1
                assert cert.answer != "holds", f"trial {trial}: a tie (margin exactly 0) certified as holds"
            elif cert.answer == "holds":
                small += 1
                assert _q(cert.claims[0].value) <= exact, (trial, cert.claims[0].value, float(exact))
    assert zero >= 30 and small >= 5, (zero, small)


# ------------------------------------------------------------------ 3. counterexamples

def test_an_accepted_violation_slack_never_exceeds_the_exact_slack_of_n():
    """counterexample_slack on float32 and float64 models at points where d - C N(x) (exact, rationals) is
    +-2^-2 .. 2^-59 relative or 0: a positive value is returned only when the exact slack is positive, and never
    above it (the value of a violated claim is min(model, N) <= N's rigorous slack)."""
    rng = np.random.default_rng(7)
    accepted = 0
    for trial in range(150):
        widths = [int(rng.integers(1, 4))] + [int(rng.integers(1, 6)) for _ in range(int(rng.integers(1, 3)))] + [2]
        dtype = torch.float32 if trial % 2 else torch.float64
        model = _point_model(rng, widths, int(rng.choice([0, 3, 20])), dtype=dtype)
        net = graph_of(translate(model, (widths[0],)))
        x = torch.from_numpy(rng.standard_normal(widths[0])).to(dtype).double().numpy()
        z = _exact_outputs(net, x)
        cy = z[0] - z[1]
        try:
            d = float(cy + int(rng.choice([-1, 0, 1])) * abs(cy) * Fraction(1, 2 ** int(rng.integers(2, 60))))
        except OverflowError:
            continue
        try:
            slack = min(counterexample_slack(model, net, x, (widths[0],), [(np.array([[1.0, -1.0]]), np.array([d]))]))
        except Invalid:
            continue
        if slack > 0:
            accepted += 1
            assert _q(slack) <= _q(d) - cy, f"trial {trial}: slack {slack!r} above the exact {float(_q(d) - cy)!r}"
    assert accepted >= 10


def test_counterexample_edits_are_refused():
    """A violated certificate: the point moved one ulp outside the box, off the float32 grid, to a point of the box
    that satisfies no conjunction (where the property's class wins), and the value raised by one ulp above the
    checker's own: all refused."""
    for seed, eps in itertools.product((4, 5, 0, 1), (0.5, 1.0, 2.0)):
        model = tiny_net(seed)
        prop = classification(CENTRE, eps, predicted(model, CENTRE))
        xs = np.stack(np.meshgrid(np.linspace(prop.lower[0], prop.upper[0], 41), np.linspace(prop.lower[1], prop.upper[1], 41)),
                      -1).reshape(-1, 2).astype(np.float32).astype(np.float64)
        xs = xs[((xs >= prop.lower) & (xs <= prop.upper)).all(1)]
        with torch.no_grad():
            y = model(torch.tensor(xs, dtype=torch.float32)).double().numpy()
        margins = np.min(np.stack([(y @ c.T - d).max(1) for c, d in prop.disjuncts]), axis=0)
        if margins.max() > 1e-3 and margins.min() < -1e-3:  # safe points and counterexamples both in the box
            break
    else:
        pytest.fail("no mixed property on the tiny nets")
    safe = xs[np.argmax(margins)]
    result = verify_property(model, prop, timeout=3.0, input_shape=(2,), methods=("crown", "bab"))
    cert, problems = checked_property_certificate(model, prop, result, (2,), "bab", 3.0)
    assert cert.answer == "violated" and not problems
    doc = json.loads(cert.to_json())
    point = _arr(doc["claims"][0]["params"]["counterexample"])
    assert _verify(doc, model)[0]
    outside = point.copy()
    outside[0] = np.nextafter(prop.upper[0], np.inf)
    edits = {"one ulp outside": outside, "not float32": point + 1e-9, "a point that does not violate": safe}
    for name, moved in edits.items():
        d = copy.deepcopy(doc)
        _set_param(d["claims"][0], "counterexample", moved)
        assert not _verify(d, model)[0], name
    d = copy.deepcopy(doc)
    d["claims"][0]["value"] = math.nextafter(min(counterexample_slack(model, graph_of(translate(model, (2,))), point, (2,),
                                                                      prop.disjuncts)), math.inf)
    assert not _verify(d, model)[0]


# ------------------------------------------------------------------ 4. witness edits

def _violated_and_held():
    model = tiny_net(3)
    label = predicted(model, CENTRE)
    held = classification(CENTRE, 0.3, label)
    violated = classification(CENTRE, 0.3, (label + 1) % 3)
    assert (grid_values(model, violated) <= 0).any() and (grid_values(model, held) > 0).all()
    return model, held, violated


def _edits(base: dict, hidden: list[int]) -> dict:
    """name -> edited witness records (in memory: arrays, no hashes, so non-finite values reach read_witness)."""
    def edit(fn):
        w = copy.deepcopy(base)
        fn(w)
        return w

    t0 = lambda w: w["conjunctions"][0]  # noqa: E731
    out = {}
    for name, value in (("nan", math.nan), ("inf", math.inf), ("huge", 1e308), ("subnormal", 5e-324), ("-0", -0.0)):
        out[f"betas {name}"] = edit(lambda w, v=value: t0(w)["betas"].__setitem__(slice(None), v))
        out[f"alphas {name}"] = edit(lambda w, v=value: t0(w)["alphas"].__setitem__((0, 0), v))
        out[f"root alpha {name}"] = edit(lambda w, v=value: w["root_alphas"][1][0].__setitem__((0, 0), v))
    for name, row in (("layer -1", (-1, 0)), ("layer past the last hidden", (len(hidden), 0)),
                      ("unit = width", (0, hidden[0])), ("unit -1", (0, -1)), ("unit 2^53", (0, 2**53)),
                      ("unit 0.5", (0, 0.5))):
        out[f"split {name}"] = edit(lambda w, r=row: t0(w)["splits"].__setitem__((slice(None), slice(0, 2)), r))
    for name, sign in (("0", 0.0), ("-0", -0.0), ("2", 2.0), ("1 + ulp", 1.0 + 2**-52), ("nan", math.nan)):
        out[f"sign {name}"] = edit(lambda w, s=sign: t0(w)["splits"].__setitem__((0, 2), s))

    def duplicate_leaf(w):
        t = t0(w)
        first = int(t["depth"][0])
        t["depth"] = np.concatenate([t["depth"][:1], t["depth"]])
        t["splits"] = np.concatenate([t["splits"][:first], t["splits"]])
        t["betas"] = np.concatenate([t["betas"][:first], t["betas"]])
        t["row"] = np.concatenate([t["row"][:1], t["row"]])
        t["alphas"] = np.concatenate([t["alphas"][:1], t["alphas"]])

    def overlap(w):  # the minus leaf re-labelled plus: both leaves on z >= 0, z <= 0 covered by none
        t0(w)["splits"][:, 2] = 1.0

    def swap_sign_order(w):  # minus before plus: still complete (order of leaves is free)
        t = t0(w)
        t["splits"] = t["splits"][::-1].copy()
        t["betas"] = t["betas"][::-1].copy()

    def depth_negative(w):
        t0(w)["depth"][0] = -1

    def depth_fraction(w):
        t0(w)["depth"][:] = [0.5, 0.5]

    def unstable_duplicated(w):
        w["unstable"][0] = np.array([0, 0] + list(w["unstable"][0][1:]), dtype=float)[: w["unstable"][0].size]

    out.update({"duplicate leaf": edit(duplicate_leaf), "overlapping leaves": edit(overlap),
                "leaves reordered": edit(swap_sign_order), "depth -1": edit(depth_negative),
                "depth 0.5": edit(depth_fraction), "unstable duplicated": edit(unstable_duplicated),
                "format 2": edit(lambda w: w.__setitem__("format", REFINED_WITNESS_FORMAT)),
                "format 3": edit(lambda w: w.__setitem__("format", "certify.relu-split-witness/3")),
                "row 1": edit(lambda w: t0(w)["row"].__setitem__(0, 1)),
                "row -1": edit(lambda w: t0(w)["row"].__setitem__(0, -1))})
    return out


def _float_records(w: dict) -> dict:
    """Every array as float64 (as decode_array returns them)."""
    conv = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    return {"format": w["format"], "unstable": [conv(u) for u in w["unstable"]],
            "root_alphas": [[conv(a) for a in layer] for layer in w["root_alphas"]],
            "conjunctions": [{k: conv(v) for k, v in t.items()} for t in w["conjunctions"]]}


def test_witness_edits_never_prove_a_violated_property_and_stay_true_on_a_held_one():
    """Each edit of a one-split witness (non-finite / huge / subnormal / -0 numbers, splits of units that do not
    exist, bad signs, a duplicated leaf, overlapping leaves, bad depths, duplicated unstable units, formats, rows):
    on a VIOLATED property it is refused (read_witness or prove_holds raise Invalid: any value would be false); on
    a HELD property, whatever is accepted is below the grid minimum of the property's rows."""
    model, held, violated = _violated_and_held()
    net = graph_of(translate(model, (2,)))
    hidden = net.widths[:-1]
    ident = lambda a, where: np.asarray(a, dtype=np.float64)  # noqa: E731
    values = grid_values(model, held, n=161)
    starts = np.cumsum([0] + [c.shape[0] for c, _ in held.disjuncts])
    truth = min(values[:, a:b].max(axis=1).min() for a, b in zip(starts[:-1], starts[1:]))
    accepted_held = 0
    for prop, is_held in ((violated, False), (held, True)):
        box = (prop.lower, prop.upper)
        base = _float_records(as_records(crown_witness(net, box, prop.disjuncts, ((0, 0),))))
        for name, w in _edits(base, hidden).items():
            try:
                value = prove_holds(net, box, prop.disjuncts, read_witness(w, net, prop.disjuncts, ident))
            except Invalid:
                continue
            assert is_held, f"{name}: a violated property proven (value {value!r})"
            accepted_held += 1
            assert value <= truth, f"{name}: value {value!r} above the grid minimum {truth!r}"
    assert accepted_held >= 5


def test_exhaustive_small_trees_and_formats_never_prove_a_violated_property():
    """Every complete tree of depth <= 2 over the first two units of each hidden layer (repeats and contradictory
    paths included), both witness formats, betas 0 / 1 / 1e6, slopes 0 / 1: a property violated at a grid point is
    never proven."""
    model, _, violated = _violated_and_held()
    net = graph_of(translate(model, (2,)))
    hidden = net.widths[:-1]
    box = (violated.lower, violated.upper)
    units = [(j, u) for j in range(len(hidden)) for u in range(2)]
    trees = [[[]]]
    for a in units:
        trees.append([[(a, 1)], [(a, -1)]])
        for b in units:
            trees.append([[(a, 1), (b, 1)], [(a, 1), (b, -1)], [(a, -1)]])
            trees.append([[(a, 1)], [(a, -1), (b, 1)], [(a, -1), (b, -1)]])
    ident = lambda a, where: np.asarray(a, dtype=np.float64)  # noqa: E731
    tried = 0
    for leaves, fmt, beta, slope in itertools.product(trees, (WITNESS_FORMAT, REFINED_WITNESS_FORMAT), (0.0, 1.0, 1e6), (0.0, 1.0)):
        unstable = [np.arange(w, dtype=float) for w in hidden]
        total = sum(hidden)
        conj = []
        for _ in violated.disjuncts:
            splits = np.array([(j, u, s) for leaf in leaves for (j, u), s in leaf], dtype=float).reshape(-1, 3)
            conj.append({"depth": np.array([len(leaf) for leaf in leaves], dtype=float), "splits": splits,
                         "betas": np.full(splits.shape[0], beta), "row": np.zeros(len(leaves)),
                         "alphas": np.full((len(leaves), total), slope)})
        w = {"format": fmt, "unstable": unstable,
             "root_alphas": [[np.full((2 * hidden[k], hidden[j]), slope) for j in range(k)] for k in range(len(hidden))],
             "conjunctions": conj}
        with pytest.raises(Invalid):
            prove_holds(net, box, violated.disjuncts, read_witness(w, net, violated.disjuncts, ident))
        tried += 1
    assert tried > 300


# ------------------------------------------------------------------ 5. params edits, hashes recomputed

def test_params_edits_with_hashes_recomputed_are_refused_or_true(split_case):
    """The box grown by one ulp on every side, moved to the VIOLATED side, the label's row negated, d raised by the
    claim's value, a conjunction dropped with its tree (and the property file path removed), the conjunctions'
    order swapped (trees not), inputs / outputs / input_shape of the property block edited: each edit is refused or
    its accepted value is below the grid minimum of the EDITED property."""
    model, prop, _, doc = split_case
    claim0 = doc["claims"][0]
    edits = {}

    def edit(name, fn):
        d = copy.deepcopy(doc)
        fn(d, d["claims"][0])
        edits[name] = d

    lower, upper = _arr(claim0["params"]["lower"]), _arr(claim0["params"]["upper"])
    edit("box + 1 ulp", lambda d, c: (_set_param(c, "lower", np.nextafter(lower, -np.inf)),
                                      _set_param(c, "upper", np.nextafter(upper, np.inf)),
                                      d["property"].update(path=None)))
    edit("box x 3", lambda d, c: (_set_param(c, "lower", lower - 2 * (upper - lower)),
                                  _set_param(c, "upper", upper + 2 * (upper - lower)), d["property"].update(path=None)))

    def negate(d, c):
        conj = c["params"]["conjunctions"][0]
        conj["C"] = encode_array(-_arr(conj["C"]))
        c["statement"] = render(c["type"], c["params"])
        d["property"]["path"] = None

    def raise_d(d, c):
        for conj in c["params"]["conjunctions"]:
            conj["d"] = encode_array(_arr(conj["d"]) + 2 * c["value"])
        c["statement"] = render(c["type"], c["params"])
        d["property"]["path"] = None

    def drop(d, c):
        c["params"]["conjunctions"] = c["params"]["conjunctions"][1:]
        c["witness"]["conjunctions"] = c["witness"]["conjunctions"][1:]
        c["statement"] = render(c["type"], c["params"])
        d["property"]["path"] = None

    def swap(d, c):
        c["params"]["conjunctions"] = c["params"]["conjunctions"][::-1]
        c["statement"] = render(c["type"], c["params"])
        d["property"]["path"] = None

    edit("row negated", negate)
    edit("d raised", raise_d)
    edit("conjunction dropped", drop)
    edit("conjunctions swapped", swap)
    edit("inputs 3", lambda d, c: d["property"].update(inputs=3))
    edit("outputs 4", lambda d, c: d["property"].update(outputs=4))
    edit("input_shape [1, 2]", lambda d, c: d["property"].update(input_shape=[1, 2]))
    edit("input_shape [2, 1]", lambda d, c: d["property"].update(input_shape=[2, 1]))
    for name, d in edits.items():
        valid, detail = _verify(d, model)
        if not valid:
            continue
        claim = d["claims"][0]
        lo, hi = _arr(claim["params"]["lower"]), _arr(claim["params"]["upper"])
        conj = [(_arr(c["C"]), _arr(c["d"])) for c in claim["params"]["conjunctions"]]
        values = grid_values(model, Property(lo, hi, 3, conj), n=161)
        starts = np.cumsum([0] + [c.shape[0] for c, _ in conj])
        truth = min(values[:, a:b].max(axis=1).min() for a, b in zip(starts[:-1], starts[1:]))
        assert claim["value"] <= truth + 1e-12, f"{name}: accepted {claim['value']!r} above the grid minimum {truth!r}"


def test_a_model_hash_recomputed_for_another_model_does_not_carry_the_claim(split_case):
    """The certificate re-hashed for ANOTHER tiny net (the attacker recomputes provenance.model.sha256): the claim
    is re-derived on that model; it is refused (or, if accepted, true for that model on the grid)."""
    from certify.models.hashing import model_hash

    model, prop, _, doc = split_case
    for seed in range(20, 26):
        other = tiny_net(seed)
        d = copy.deepcopy(doc)
        d["provenance"]["model"]["sha256"] = model_hash(other)
        valid, _ = _verify(d, other)
        if valid:
            values = grid_values(other, prop, n=161)
            truth = values.min()  # one row per conjunction
            assert d["claims"][0]["value"] <= truth


# ------------------------------------------------------------------ 6. up_nonneg and its callers

def test_up_nonneg_is_never_below_the_next_float_at_the_extremes():
    """up_nonneg(a) >= nextafter(a, +inf) for 0, -0.0, every power of two from 2^-1074 to 2^1023 and its neighbours
    (the 2^-970 boundary where a 2^-52 stops being exact included), the largest finite (-> inf) and +inf; NaN
    stays NaN."""
    special = [0.0, -0.0, 5e-324, 2**-1022, 2**-970, float(np.finfo(np.float64).max), math.inf]
    powers = [2.0**e for e in range(-1074, 1024)]
    values = np.array(special + powers + [math.nextafter(p, math.inf) for p in powers]
                      + [math.nextafter(p, 0.0) for p in powers] + [p * 1.5 for p in powers[:-1]])
    out = up_nonneg(values)
    assert (out >= np.nextafter(values, np.inf)).all()
    assert np.isnan(up_nonneg(np.array([math.nan])))[0]
    rng = np.random.default_rng(0)
    random = np.abs(rng.standard_normal(100000)) * 2.0 ** rng.integers(-1074, 1024, 100000)
    assert (up_nonneg(random) >= np.nextafter(random, np.inf)).all()


def test_non_finite_entries_reaching_the_sums_are_refused_not_dropped():
    """A NaN or infinite term (e.g. from an edited in-memory witness) must not vanish in the sums: sum_down and
    settle return NaN / -inf, which require_finite refuses."""
    for bad in (math.nan, math.inf, -math.inf):
        values = np.array([[1.0, bad, 2.0]])
        with pytest.raises(Invalid):
            require_finite(sum_down(values))
        with pytest.raises(Invalid):
            require_finite(settle(np.array([[1.0, 2.0]]), np.array([[0.0, bad if bad != -math.inf else math.nan]])))


# ------------------------------------------------------------------ 7. the CLI path: the model named by the certificate

def test_verifying_a_certificate_does_not_run_code_the_certificate_names(split_case, tmp_path, monkeypatch):
    """Found by this review (security): `certify verify F` (checker.verify_file) loaded the model from
    provenance.model.spec of the CERTIFICATE when --model was not given, and a spec "PATH.py:callable" imported
    and ran that file. A forger ships `model.py` with the certificate; `model.py` returns the honest model (hash
    matches) and, being code in the checker's process, replaces the checker's re-derivation: a value raised
    1000x then "verified". Code a certificate names is now refused unless the user passes --model or
    --run-model-code."""
    from certify.certificates.checker import verify_file

    model, _, _, doc = split_case
    monkeypatch.setattr(property_check, "prove_holds", property_check.prove_holds)  # restored after the test
    marker = tmp_path / "ran.txt"
    evil = tmp_path / "model.py"
    evil.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from property_grid import tiny_net, predicted\n"
        "import certify.certificates.property_check as pc\n"
        f"open({str(marker)!r}, 'w').write('executed')\n"
        "pc.prove_holds = lambda *a, **k: 1e9\n"
        f"def make():\n    return tiny_net({_seed_of(model)})\n")
    d = copy.deepcopy(doc)
    d["provenance"]["model"]["spec"] = f"{evil}:make"
    d["claims"][0]["value"] *= 1000
    path = tmp_path / "cert.json"
    path.write_text(json.dumps(d))
    try:
        report = verify_file(path)
        valid = report.valid
    except CertificateFormatError:
        valid = False
    problems = (["verify ran code named by the certificate"] if marker.exists() else []) + (
        ["a value raised 1000x verifies"] if valid else [])
    assert not problems, problems


def _seed_of(model) -> int:
    from certify.models.hashing import model_hash

    for seed in range(12):
        if model_hash(tiny_net(seed)) == model_hash(model):
            return seed
    raise AssertionError("the split case is not a tiny_net seed")


# ------------------------------------------------------------------ 8. a real network (mnistfc 256x2)

def test_a_real_network_certificate_refuses_one_ulp_and_a_grown_box():
    """mnist-net_256x2 with prop_0's box shrunk to eps 0.002 around its centre (CROWN proves it quickly): the
    certificate verifies; the value at the checker's own number verifies, one ulp above does not; the box grown to
    the full prop_0 box (hashes recomputed, path removed) is refused or keeps a value <= the re-derived one."""
    from certify.models.onnx import load_onnx
    from certify.models.vnnlib import parse_vnnlib

    import mnistfc_data

    data = mnistfc_data.data_dir()
    model = load_onnx(data / "mnist-net_256x2.onnx")
    path = data / "prop_0_0.03.vnnlib"
    full = parse_vnnlib(str(path), path.read_text())
    centre = (full.lower + full.upper) / 2
    small = Property(np.maximum(centre - 0.002, full.lower), np.minimum(centre + 0.002, full.upper), full.num_outputs,
                     full.disjuncts)
    from certify.models.spec import property_input_shape

    shape = property_input_shape(model, full.num_inputs)
    result = verify_property(model, small, timeout=20.0, input_shape=shape, methods=("crown",))
    assert result.status == "holds"
    cert, problems = checked_property_certificate(model, small, result, shape, "crown", 20.0)
    assert cert.answer == "holds" and not problems
    doc = json.loads(cert.to_json())
    exact = _rederived(doc, model)
    for value, ok in ((exact, True), (math.nextafter(exact, math.inf), False)):
        d = copy.deepcopy(doc)
        d["claims"][0]["value"] = value
        assert _verify(d, model)[0] == ok
    d = copy.deepcopy(doc)
    _set_param(d["claims"][0], "lower", full.lower)
    _set_param(d["claims"][0], "upper", full.upper)
    d["property"]["path"] = None
    valid, _ = _verify(d, model)
    if valid:
        assert d["claims"][0]["value"] <= _rederived(d, model)
