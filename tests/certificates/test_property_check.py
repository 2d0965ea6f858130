"""The property re-check (certify/certificates/property_check.py; its outward-rounded primitives:
tests/certificates/test_relu_graph.py): the Lagrangian lower bound is sound for ANY slopes, split multipliers and split
trees (every leaf's bound is below the objective at sampled points of the leaf's region, on ReLU chains, on
ReLU graphs with skips: a residual MLP, a MaxPool CNN, and on a LeakyReLU MLP) and never looser than the exact CROWN bound of
the exact oracle (tests/certificates/exact_relaxation.py) with the same slopes; a split tree is complete exactly when no leaf is missing; the witness's
ranges and indices are checked; and on properties that are VIOLATED (a grid point satisfies the formula) no
witness, honest or random, is ever accepted."""
import itertools
import math
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from graph_models import GRAPH_MODELS  # noqa: E402
from property_grid import classification, grid_values, pre_activations, predicted, tiny_net  # noqa: E402

from certify.certificates._common import Invalid  # noqa: E402
from certify.certificates.property_check import Tree, Witness, complete, prove_holds, read_witness, root_boxes  # noqa: E402
from certify.certificates.relu_graph import box_support, graph_of, lower_bound  # noqa: E402
from exact_relaxation import Exact, ExactSet, ReluNetwork, relu_lines  # noqa: E402
from certify.certificates.semantics import translate  # noqa: E402


def _net(model, shape):
    return graph_of(translate(model, shape))


def _exact(x) -> Fraction:
    return Fraction(float(x))


# ------------------------------------------------------------------ the bound is sound for any multipliers

def _graph_cases():
    chain = tiny_net(3, widths=(2, 6, 5, 3))
    residual, shape = GRAPH_MODELS["residual-mlp"]
    pool, pool_shape = GRAPH_MODELS["maxpool-cnn"]
    leaky, leaky_shape = GRAPH_MODELS["leaky-relu-mlp"]
    return [("chain", chain, (2,)), ("residual-mlp", residual(0), shape), ("maxpool-cnn", pool(0), pool_shape),
            ("leaky-relu-mlp", leaky(0), leaky_shape)]


def _random_box(net, rng, scale):
    centre = rng.standard_normal(net.num_inputs) * 0.5
    half = rng.uniform(0.2, 1.0, net.num_inputs) * scale
    return centre - half, centre + half


@pytest.mark.parametrize("name,model,shape", _graph_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_leaf_bounds_hold_at_sampled_points_of_the_leaf_for_random_slopes_betas_and_splits(name, model, shape):
    net = _net(model, shape)
    if name in ("residual-mlp", "maxpool-cnn"):
        assert net.skips, "the graph models must exercise skip terms"
    if name == "leaky-relu-mlp":
        assert net.negative_slope(0) == pytest.approx(0.1)
    rng = np.random.default_rng(1)
    top = net.depth - 1
    checked = 0
    for trial in range(6):
        box = _random_box(net, rng, 0.3 if trial % 2 else 1.0)
        hidden = net.widths[:-1]
        unstable = [np.arange(w) for w in hidden]
        roots = [[rng.uniform(0, 1, (2 * hidden[k], hidden[j])) for j in range(k)] for k in range(top)]
        boxes = root_boxes(net, box, unstable, roots)
        points = rng.uniform(box[0], box[1], (4000, net.num_inputs))
        zs = pre_activations(net, points)
        for k, (lo, hi) in enumerate(boxes):  # root boxes enclose the sampled pre-activations
            assert (zs[k] >= lo[0] - 1e-12).all() and (zs[k] <= hi[0] + 1e-12).all()
        rows = rng.standard_normal((8, net.widths[-1]))
        splits = []
        for r in range(8):  # each row its own random leaf: 0-3 splits on random units
            chosen = [(int(rng.integers(top)), int(rng.integers(1 << 30)), int(rng.choice((-1, 1)))) for _ in range(r % 4)]
            splits.append([(j, u % hidden[j], s) for j, u, s in chosen])
        leaf_boxes = [(np.repeat(lo, 8, 0).copy(), np.repeat(hi, 8, 0).copy()) for lo, hi in boxes]
        betas = [np.zeros((8, w)) for w in hidden]
        for r, leaf in enumerate(splits):
            for j, u, s in leaf:
                b = rng.uniform(0, 3)
                if s > 0:
                    leaf_boxes[j][0][r, u] = max(leaf_boxes[j][0][r, u], 0.0)
                else:
                    leaf_boxes[j][1][r, u] = min(leaf_boxes[j][1][r, u], 0.0)
                betas[j][r, u] -= b * s
        alphas = [rng.uniform(0, 1, (8, w)) for w in hidden]
        const = rng.standard_normal(8)
        empty = np.zeros(8, dtype=bool)
        for lo, hi in leaf_boxes:
            empty |= (lo > hi).any(1)
        keep = np.flatnonzero(~empty)
        bound = lower_bound(net, top, rows[keep], const[keep], [(lo[keep], hi[keep]) for lo, hi in leaf_boxes],
                            box_support(*box), [a[keep] for a in alphas], [b[keep] for b in betas])
        values = zs[top] @ rows[keep].T + const[keep]
        for col, r in enumerate(keep):
            inside = np.ones(points.shape[0], dtype=bool)
            for j, u, s in splits[r]:
                inside &= s * zs[j][:, u] >= 0
            if inside.any():
                checked += 1
                assert bound[col] <= values[inside, col].min() + 1e-9 * (1 + abs(values[inside, col]).max())
    assert checked >= 20


def test_never_looser_than_exact_crown_with_the_same_slopes():
    for seed in range(4):
        model = tiny_net(seed, widths=(3, 7, 6, 4))
        net = _net(model, (3,))
        raw = translate(model, (3,))
        rng = np.random.default_rng(seed)
        box = _random_box(net, rng, 0.8)
        hidden = net.widths[:-1]
        unstable = [np.arange(w) for w in hidden]
        alpha = [rng.uniform(0, 1, w) for w in hidden]
        roots = [[np.repeat(alpha[j][None], 2 * hidden[k], 0) for j in range(k)] for k in range(len(hidden))]
        boxes = root_boxes(net, box, unstable, roots)
        rows = rng.standard_normal((5, net.widths[-1]))
        ours = lower_bound(net, net.depth - 1, rows, np.zeros(5), boxes, box_support(*box), [a[None] for a in alpha],
                           [None] * len(hidden))
        exact_net = ReluNetwork(raw.mats, raw.biases)
        half = (box[1] - box[0]) / 2
        input_set = ExactSet.build((box[0] + box[1]) / 2, float(half.max()) * 2, math.inf, box)
        lines = [relu_lines(lo[0], hi[0], a) for (lo, hi), a in zip(boxes, alpha)]
        crown = exact_net.backward(input_set, net.depth - 1, Exact.of(rows), lines)
        for value, (ints, exp) in zip(ours, ((i, crown.exp) for i in crown.ints)):
            assert Fraction(float(value)) >= Fraction(int(ints)) * Fraction(2) ** exp - Fraction(1, 10**9)


# ------------------------------------------------------------------ split trees

def _leaves(*paths):
    return [np.array(p, dtype=np.int64).reshape(-1, 3) for p in paths]


def test_complete_split_trees():
    assert complete(_leaves([]))
    full = _leaves([(0, 1, 1), (1, 2, 1)], [(0, 1, 1), (1, 2, -1)], [(0, 1, -1)])
    assert complete(full)
    for i in range(len(full)):  # a leaf removed: some region is covered by no leaf
        assert not complete(full[:i] + full[i + 1:])
    assert not complete(_leaves([(0, 1, 1)], [(0, 2, -1)]))  # the two children split different units
    assert not complete(_leaves([(0, 1, 1)], [(0, 1, 1)]))  # both children active
    assert not complete(_leaves([], [(0, 1, 1)], [(0, 1, -1)]))  # a leaf ending where others continue


# ------------------------------------------------------------------ honest witnesses and their ranges

def crown_witness(net, box, conjunctions, split_units=()):
    """A witness (certify/certificates/property_check.py format 1) built here: CROWN's adaptive slopes everywhere, every unit listed, and per
    conjunction the complete tree splitting `split_units` in order (betas 0, row 0)."""
    hidden = net.widths[:-1]
    unstable = [np.arange(w) for w in hidden]
    roots: list = []
    boxes: list = []
    for k in range(len(hidden)):
        roots.append([np.repeat((boxes[j][1] >= -boxes[j][0]).astype(float), 2 * hidden[k], 0) for j in range(k)])
        boxes = root_boxes(net, box, unstable, roots)
    default = np.concatenate([(hi >= -lo).astype(float)[0] for lo, hi in boxes])
    trees = []
    for _ in conjunctions:
        signs = list(itertools.product((1, -1), repeat=len(split_units)))
        trees.append(Tree([np.array([[j, u, s] for (j, u), s in zip(split_units, sg)], dtype=np.int64).reshape(-1, 3) for sg in signs],
                          [np.zeros(len(split_units)) for _ in signs], np.zeros(len(signs), dtype=np.int64),
                          np.repeat(default[None], len(signs), 0)))
    return Witness(unstable, roots, trees)


def as_records(w: Witness) -> dict:
    """The witness as the certificate stores it (arrays decoded by identity here)."""
    trees = []
    for t in w.trees:
        depth = np.array([len(s) for s in t.splits])
        trees.append({"depth": depth, "splits": np.concatenate(t.splits).reshape(-1, 3) if t.splits else np.zeros((0, 3)),
                      "betas": np.concatenate(t.betas) if t.betas else np.zeros(0), "row": t.rows, "alphas": t.alphas})
    return {"format": "certify.relu-split-witness/1", "unstable": list(w.unstable), "root_alphas": w.root_alphas,
            "conjunctions": trees}


def _read(records, net, conjunctions):
    return read_witness(records, net, conjunctions, lambda a, where: np.asarray(a, dtype=np.float64))


def test_honest_witnesses_prove_held_properties_below_the_grid_minimum():
    proven = 0
    for seed in range(6):
        model = tiny_net(seed)
        net = _net(model, (2,))
        centre = np.array([0.3, -0.2])
        prop = classification(centre, 0.3, predicted(model, centre))
        truth = grid_values(model, prop).min()  # one row per conjunction
        box = (prop.lower, prop.upper)
        for units in ((), ((0, 0), (0, 1))):
            records = as_records(crown_witness(net, box, prop.disjuncts, units))
            try:
                value = prove_holds(net, box, prop.disjuncts, _read(records, net, prop.disjuncts))
            except Invalid:
                continue
            proven += 1
            assert 0 < value <= truth
    assert proven >= 6


def test_witness_ranges_and_indices_are_checked():
    model = tiny_net(0)
    net = _net(model, (2,))
    prop = classification(np.array([0.3, -0.2]), 0.3, predicted(model, np.array([0.3, -0.2])))
    box = (prop.lower, prop.upper)
    base = as_records(crown_witness(net, box, prop.disjuncts, ((0, 0), (1, 2))))
    _read(base, net, prop.disjuncts)

    def edited(change):
        import copy

        w = copy.deepcopy(base)
        change(w)
        return w

    faults = {
        "slope above 1": lambda w: w["conjunctions"][0]["alphas"].__setitem__((0, 0), 1.5),
        "negative slope": lambda w: w["root_alphas"][1][0].__setitem__((0, 0), -0.1),
        "negative beta": lambda w: w["conjunctions"][1]["betas"].__setitem__(0, -1e-3),
        "leaf removed": lambda w: w["conjunctions"][0].update(
            depth=w["conjunctions"][0]["depth"][1:], row=w["conjunctions"][0]["row"][1:],
            alphas=w["conjunctions"][0]["alphas"][1:], splits=w["conjunctions"][0]["splits"][2:],
            betas=w["conjunctions"][0]["betas"][2:]),
        "split sign flipped": lambda w: w["conjunctions"][0]["splits"].__setitem__((3, 2), 1),
        "split unit out of range": lambda w: w["conjunctions"][0]["splits"].__setitem__((0, 1), 99),
        "row out of range": lambda w: w["conjunctions"][0]["row"].__setitem__(0, 1),
        "unsorted unstable": lambda w: w["unstable"].__setitem__(0, w["unstable"][0][::-1].copy()),
        "a tree missing": lambda w: w["conjunctions"].pop(),
        "format": lambda w: w.__setitem__("format", "other/1"),
    }
    for name, change in faults.items():
        with pytest.raises(Invalid):
            _read(edited(change), net, prop.disjuncts)
            pytest.fail(f"{name} was accepted")


# ------------------------------------------------------------------ adversarial: violated properties

def test_no_witness_proves_a_violated_property():
    """Properties with a grid point inside the counterexample region: honest witnesses (with and without
    splits) and random ones (slopes, betas, rows, trees) are all refused."""
    rng = np.random.default_rng(7)
    violated = 0
    for seed in range(12):
        model = tiny_net(seed)
        net = _net(model, (2,))
        centre = rng.uniform(-1, 1, 2)
        label = predicted(model, centre)
        for eps in (0.5, 1.0, 2.0):
            prop = classification(centre, eps, label)
            values = grid_values(model, prop, n=101)  # [G, conjunctions] (one row each)
            if not (values <= 0).any():  # no grid point satisfies a conjunction: not known to be violated
                continue
            violated += 1
            box = (prop.lower, prop.upper)
            hidden = net.widths[:-1]
            candidates = [as_records(crown_witness(net, box, prop.disjuncts, units))
                          for units in ((), ((0, 0),), ((0, 0), (0, 1), (1, 0)))]
            for _ in range(4):
                w = as_records(crown_witness(net, box, prop.disjuncts, ((0, int(rng.integers(hidden[0]))),)))
                for t in w["conjunctions"]:
                    t["alphas"] = rng.uniform(0, 1, t["alphas"].shape)
                    t["betas"] = rng.uniform(0, 5, t["betas"].shape)
                w["root_alphas"] = [[rng.uniform(0, 1, a.shape) for a in layer] for layer in w["root_alphas"]]
                candidates.append(w)
            for w in candidates:
                with pytest.raises(Invalid):
                    prove_holds(net, box, prop.disjuncts, _read(w, net, prop.disjuncts))
    assert violated >= 5


def test_a_property_claim_inside_an_explanation_certificate_is_invalid_not_a_crash():
    from certify.attacks.property import verify_property
    from certify.certificates.checker import verify_certificate
    from certify.certificates.document import Certificate, encode_array, parse_certificate
    from certify.certificates.issuers.property import property_certificate
    from certify.models.hashing import model_hash

    model = tiny_net(0)
    centre = np.array([0.3, -0.2])
    prop = classification(centre, 0.3, predicted(model, centre))
    result = verify_property(model, prop, timeout=3, input_shape=(2,), methods=("crown",))
    claim = property_certificate(model, prop, result, (2,), "crown", 3.0).claims[0]
    assert claim.kind == "certified"
    provenance = {"package": "test", "torch": "", "numpy": "", "created": "", "device": "cpu",
                  "explainer": {"method": "lagrange-dual", "params": {}}, "model": {"sha256": model_hash(model)}}
    function = {"description": "test", "semantics": {},
                "conformance": {"tolerance": 0.0, "max_deviation": 0.0, "points": 1, "passed": True}}
    x = torch.tensor(centre[None])
    cert = Certificate(provenance, function, encode_array(x.numpy()), encode_array(np.zeros((1, 2))),
                       predicted(model, centre), "given", [claim])
    (check,) = verify_certificate(parse_certificate(cert.to_json()), model).checks
    assert check.status == "invalid" and "belongs in a property certificate" in check.detail
