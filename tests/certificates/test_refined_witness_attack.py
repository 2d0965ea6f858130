"""Attacks on the refined split-tree witness (format "certify.relu-split-witness/2", issue 12) from the side of a
forger of certificates, each a test that fails if the attack succeeds:

* the checker's refined leaf boxes (certify.certificates.property_check.leaf_boxes) of FORGED witnesses (any
  listed unit sets, any root slopes in [0, 1], random complete trees splitting any hidden unit, the last hidden
  layer included, repeated and contradictory splits) contain every sampled point of the box that satisfies the
  leaf's splits, and a leaf called empty has no such point: on ReLU chains, on graphs with skip terms (which
  branch and bound never produces but a forged format-2 witness may name) and on LeakyReLU graphs;
* exact ties: on a net where the property is violated at a single point (x = 0, where every split unit is
  exactly 0), no leaf of the exhaustive split tree is called empty and no slopes or multipliers prove it, in
  either format;
* exhaustive split trees (every hidden unit split, so that each leaf is one activation pattern and its boxes
  as tight as refinement makes them) with random and huge multipliers never prove a violated property, and the
  leaf holding the counterexample is never called empty;
* a real format-2 certificate (the pipeline's, with splits) switched to format 1 verifies only with a value
  below the grid minimum, an unknown format is refused, and its witness moved onto a violated box never
  verifies;
* the issuer (`verify_property` and its certificate) never answers "holds" just past the flip radius, where a
  grid point violates by a small margin."""
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from property_grid import classification, grid_values, pre_activations, predicted, tiny_net  # noqa: E402

from certify.attacks.property import verify_property  # noqa: E402
from certify.bounds.network import from_module  # noqa: E402
from certify.bounds.property import property_bounds  # noqa: E402
from certify.certificates._common import Invalid  # noqa: E402
from certify.certificates.checker import verify_certificate  # noqa: E402
from certify.certificates.document import encode_array, parse_certificate  # noqa: E402
from certify.certificates.issuers.property import property_certificate  # noqa: E402
from certify.certificates.property_check import (REFINED_WITNESS_FORMAT, WITNESS_FORMAT, Witness, leaf_boxes,  # noqa: E402
                                                 prove_holds, read_witness, root_boxes)
from certify.certificates.relu_graph import GraphNet  # noqa: E402
from certify.errors import CertificateFormatError  # noqa: E402
from certify.models.vnnlib import Property  # noqa: E402


def _graph(rng, widths, skips: bool, leaky: bool) -> GraphNet:
    """A random ReLU (or LeakyReLU) graph: affine layers of `widths`, with random skip terms S_kj when asked."""
    weights = [rng.normal(0, 1 / np.sqrt(a), (b, a)) for a, b in zip(widths[:-1], widths[1:])]
    biases = [rng.normal(0, 0.5, b) for b in widths[1:]]
    terms: dict[int, dict[int, np.ndarray]] = {}
    for k in range(1, len(weights)):
        for j in range(k):
            if skips and rng.random() < 0.5:
                terms.setdefault(k, {})[j] = rng.normal(0, 0.7 / np.sqrt(widths[j]), (widths[k + 1], widths[j]))
    acts = [("leaky_relu", float(rng.uniform(0, 0.5))) if leaky else ("relu",) for _ in weights[1:]]
    return GraphNet.build(weights, biases, terms, acts)


def _random_tree(rng, hidden, max_depth, focus, path=()):
    """Leaves (lists of (layer, unit, sign)) of a random complete tree: units near 0 preferred (focus), a path
    may split a unit twice (repeated or contradictory splits), any hidden layer, the last one included."""
    if len(path) >= max_depth or (path and rng.random() < 0.25):
        return [list(path)]
    draw = rng.random()
    if path and draw < 0.2:
        layer, unit = path[int(rng.integers(len(path)))][:2]
    elif focus and draw < 0.7:
        layer, unit = focus[int(rng.integers(len(focus)))]
    else:
        layer = int(rng.integers(len(hidden)))
        unit = int(rng.integers(hidden[layer]))
    return (_random_tree(rng, hidden, max_depth, focus, path + ((layer, unit, 1),))
            + _random_tree(rng, hidden, max_depth, focus, path + ((layer, unit, -1),)))


def _inside(zs: list[np.ndarray], leaf) -> np.ndarray:
    """Which sampled points satisfy every split of a leaf (s z >= 0)."""
    inside = np.ones(zs[0].shape[0], dtype=bool)
    for layer, unit, sign in leaf:
        inside &= sign * zs[layer][:, unit] >= 0
    return inside


def _box_points(rng, box, n_grid=81, n_random=3000):
    xs, ys = (np.linspace(box[0][i], box[1][i], n_grid) for i in range(2))
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    return np.concatenate([grid, rng.uniform(box[0], box[1], (n_random, 2))])


@pytest.mark.parametrize("kind", ["chain", "skips", "leaky-skips"])
def test_forged_refined_leaf_boxes_contain_every_sampled_point_of_their_leaf(kind):
    checked = empties = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        widths = (2, 6, 6, 6, 3)
        net = _graph(rng, widths, kind != "chain", kind == "leaky-skips")
        hidden = list(widths[1:-1])
        centre, radius = rng.uniform(-1, 1, 2), rng.uniform(0.05, 1.5)
        box = (centre - radius, centre + radius)
        points = _box_points(rng, box)
        zs = pre_activations(net, points)
        everything = [np.arange(w) for w in hidden]
        plain = root_boxes(net, box, everything, [[np.zeros((2 * hidden[k], hidden[j])) for j in range(k)]
                                                  for k in range(len(hidden))])
        unstable = [np.flatnonzero((lo[0] < 0) & (hi[0] > 0)) if rng.random() < 0.6
                    else np.sort(rng.choice(w, size=int(rng.integers(0, w + 1)), replace=False))
                    for (lo, hi), w in zip(plain, hidden)]
        slopes = (lambda shape: rng.uniform(0, 1, shape), lambda shape: rng.integers(0, 2, shape).astype(float))[seed % 2]
        root_alphas = [[slopes((2 * hidden[k], unstable[j].size)) for j in range(k)] for k in range(len(hidden))]
        roots = root_boxes(net, box, unstable, root_alphas)
        for k, (lo, hi) in enumerate(roots):
            assert (zs[k] >= lo[0] - 1e-9).all() and (zs[k] <= hi[0] + 1e-9).all(), (seed, k)
        focus = [(j, int(u)) for j, (lo, hi) in enumerate(roots) for u in np.flatnonzero((lo[0] < 0.3) & (hi[0] > -0.3))]
        leaves = [np.array(leaf, dtype=np.int64).reshape(-1, 3)
                  for leaf in _random_tree(rng, hidden, int(rng.integers(2, 7)), focus)]
        boxes = leaf_boxes(net, box, Witness(unstable, root_alphas, [], refined=True), roots, leaves)
        for i, leaf in enumerate(leaves):
            empty = any(bool((lo[i] > hi[i]).any()) for lo, hi in boxes)
            empties += empty
            inside = _inside(zs, leaf)
            if not inside.any():
                continue
            assert not empty, (seed, leaf.tolist(), int(inside.sum()))  # a leaf with a point is never empty
            checked += 1
            for k, (lo, hi) in enumerate(boxes):
                z = zs[k][inside]
                slack = 1e-9 * (1 + np.abs(z))
                assert (z >= lo[i] - slack).all() and (z <= hi[i] + slack).all(), (seed, leaf.tolist(), k)
    assert checked >= 60 and empties >= 60  # the attack reached both kinds of leaves


def _abs_net() -> GraphNet:
    """x in [-1, 1]: z_0 = (x, -x), z_1 = relu(x) + relu(-x) = |x|, z_2 = relu(z_1), y = (relu(z_2), 0): every
    hidden unit is exactly 0 at x = 0, and y_0 - y_1 <= 0 (the counterexample region) only there."""
    weights = [np.array([[1.0], [-1.0]]), np.array([[1.0, 1.0]]), np.array([[1.0]]), np.array([[1.0], [0.0]])]
    biases = [np.zeros(2), np.zeros(1), np.zeros(1), np.zeros(2)]
    return GraphNet.build(weights, biases, {}, [("relu",)] * 3)


def _exhaustive(units: list[tuple[int, int]]) -> list[np.ndarray]:
    """Every sign pattern of the listed (layer, unit)s, in one fixed order: the complete tree of depth |units|."""
    signs = np.array(np.meshgrid(*[(1, -1)] * len(units), indexing="ij")).reshape(len(units), -1).T
    return [np.array([(layer, unit, s) for (layer, unit), s in zip(units, row)], dtype=np.int64) for row in signs]


def _witness_dict(unstable, root_alphas, trees, fmt) -> dict:
    return {"format": fmt, "unstable": unstable, "root_alphas": root_alphas, "conjunctions": trees}


def _tree_dict(leaves, betas, rows, alphas) -> dict:
    return {"depth": np.array([leaf.shape[0] for leaf in leaves]), "splits": np.concatenate(leaves),
            "betas": betas, "row": rows, "alphas": alphas}


def _read(witness, net, conjunctions):
    return read_witness(witness, net, conjunctions, lambda a, where: np.asarray(a, dtype=np.float64))


@pytest.mark.parametrize("fmt", [WITNESS_FORMAT, REFINED_WITNESS_FORMAT])
def test_a_violation_at_a_single_tie_point_is_never_called_empty_nor_proven(fmt):
    net = _abs_net()
    box = (np.array([-1.0]), np.array([1.0]))
    conjunctions = [(np.array([[1.0, -1.0]]), np.zeros(1))]
    unstable = [np.array([0, 1]), np.array([0]), np.array([0])]
    leaves = _exhaustive([(0, 0), (0, 1), (1, 0), (2, 0)])
    rng = np.random.default_rng(0)
    root_alphas = [[], [np.ones((2, 2))], [np.ones((2, 2)), np.ones((2, 1))]]
    roots = root_boxes(net, box, unstable, root_alphas)
    boxes = leaf_boxes(net, box, Witness(unstable, root_alphas, [], refined=fmt == REFINED_WITNESS_FORMAT), roots, leaves)
    for i in range(len(leaves)):  # x = 0 satisfies every leaf's splits: none is empty
        assert not any(bool((lo[i] > hi[i]).any()) for lo, hi in boxes), leaves[i].tolist()
    for attempt in range(30):
        scale = (1e-3, 1.0, 1e3, 1e12)[attempt % 4]
        root_alphas = [[rng.integers(0, 2, a.shape).astype(float) if attempt % 3 else rng.uniform(0, 1, a.shape)
                        for a in layer] for layer in root_alphas]
        tree = _tree_dict(leaves, rng.exponential(scale, 4 * len(leaves)), np.zeros(len(leaves), dtype=np.int64),
                          rng.uniform(0, 1, (len(leaves), 4)))
        parsed = _read(_witness_dict(unstable, root_alphas, [tree], fmt), net, conjunctions)
        with pytest.raises(Invalid):
            prove_holds(net, box, conjunctions, parsed)


@pytest.mark.parametrize("kind", ["chain", "skips", "leaky-skips"])
def test_exhaustive_split_trees_never_prove_a_violated_property(kind):
    attacked = 0
    for seed in range(30):
        rng = np.random.default_rng(100 + seed)
        widths = (2, 4, 4, 3)
        net = _graph(rng, widths, kind != "chain", kind == "leaky-skips")
        hidden = list(widths[1:-1])
        centre = rng.uniform(-1, 1, 2)
        box = (centre - 0.8, centre + 0.8)
        points = _box_points(rng, box, 61, 500)
        zs = pre_activations(net, points)
        label = int(np.argmax(zs[-1][0]))  # the class at a corner of the box
        prop = classification(centre, 0.8, label)
        values = zs[-1] @ np.concatenate([c for c, _ in prop.disjuncts]).T  # rows y_label - y_j: <= 0 violates
        if not (values <= 0).any():
            continue
        bad = int(np.flatnonzero((values <= 0).any(1))[0])  # a point satisfying some conjunction
        attacked += 1
        everything = [np.arange(w) for w in hidden]
        root_alphas = [[rng.uniform(0, 1, (2 * hidden[k], hidden[j])) for j in range(k)] for k in range(len(hidden))]
        roots = root_boxes(net, box, everything, root_alphas)
        unstable = [np.flatnonzero((lo[0] < 0) & (hi[0] > 0)) for lo, hi in roots]
        root_alphas = [[a[:, unstable[j]] for j, a in enumerate(layer)] for layer in root_alphas]
        leaves = _exhaustive([(j, int(u)) for j, units in enumerate(unstable) for u in units])
        if leaves[0].size == 0:  # no unstable unit: one leaf, no split
            leaves = [np.zeros((0, 3), dtype=np.int64)]
        witness = Witness(unstable, root_alphas, [], refined=True)
        boxes = leaf_boxes(net, box, witness, root_boxes(net, box, unstable, root_alphas), leaves)
        for i, leaf in enumerate(leaves):
            if _inside(zs, leaf)[bad]:  # the counterexample's leaf (or leaves, at a tie) is never called empty
                assert not any(bool((lo[i] > hi[i]).any()) for lo, hi in boxes), (seed, leaf.tolist())
        total = sum(u.size for u in unstable)
        for attempt in range(4):
            scale = (0.1, 1.0, 10.0, 1e6)[attempt]
            trees = []
            for _ in prop.disjuncts:
                depth = sum(leaf.shape[0] for leaf in leaves)
                trees.append(_tree_dict(leaves, rng.exponential(scale, depth), np.zeros(len(leaves), dtype=np.int64),
                                        rng.uniform(0, 1, (len(leaves), total))))
            parsed = _read(_witness_dict(unstable, root_alphas, trees, REFINED_WITNESS_FORMAT), net, prop.disjuncts)
            with pytest.raises(Invalid):
                prove_holds(net, box, prop.disjuncts, parsed)
    assert attacked >= 10


# ------------------------------------------------------------------ real certificates


def _certificate(model, prop):
    result = verify_property(model, prop, timeout=5.0, input_shape=(2,), methods=("crown", "bab"))
    return property_certificate(model, prop, result, (2,), "bab", 5.0)


def _verify(doc: dict, model):
    try:
        report = verify_certificate(parse_certificate(json.dumps(doc)), model, None)
    except CertificateFormatError:
        return False, None
    return report.valid, report


def _split_certificate():
    """(model, property, certificate JSON) of a real format-2 holds certificate whose trees split (three hidden
    layers: branch and bound refines from certify.bounds.property.REFINE_FROM on)."""
    centre = np.array([0.3, -0.2])
    for seed in range(12):
        model = tiny_net(seed, (2, 8, 8, 8, 3))
        label = predicted(model, centre)
        for eps in (1.0, 1.5, 2.0, 3.0):
            prop = classification(centre, eps, label)
            cert = _certificate(model, prop)
            witness = cert.claims[0].witness if cert.answer == "holds" else None
            if witness and witness["format"] == REFINED_WITNESS_FORMAT and any(
                    t["splits"]["values"] for t in witness["conjunctions"]):
                return model, prop, json.loads(cert.to_json())
    pytest.fail("no property on the tiny nets needed branch and bound")


def test_a_real_refined_certificate_switched_in_format_or_moved_to_a_violated_box_never_verifies_falsely():
    model, prop, doc = _split_certificate()
    truth = grid_values(model, prop, 201).min()
    valid, report = _verify(doc, model)
    assert valid and report.checks[0].status == "valid"
    claim = doc["claims"][0]
    as_format_1 = json.loads(json.dumps(doc))
    as_format_1["claims"][0]["witness"]["format"] = WITNESS_FORMAT
    valid, report = _verify(as_format_1, model)
    if valid:  # format 1 (no refinement) may or may not suffice; when it does, its claim is still true
        assert 0 < claim["value"] <= truth
    unknown = json.loads(json.dumps(doc))
    unknown["claims"][0]["witness"]["format"] = "certify.relu-split-witness/3"
    assert not _verify(unknown, model)[0]
    # the same witness on a larger box of the same centre that a grid point violates
    centre = (prop.lower + prop.upper) / 2
    label = predicted(model, centre)
    for eps in (4.0, 6.0, 9.0):
        wide = classification(centre, eps, label)
        if grid_values(model, wide, 161).min() <= 0:
            break
    else:
        pytest.fail("no violated box around the centre")
    for fmt in (WITNESS_FORMAT, REFINED_WITNESS_FORMAT):
        moved = json.loads(json.dumps(doc))
        moved["claims"][0]["witness"]["format"] = fmt
        moved["claims"][0]["params"]["lower"] = encode_array(wide.lower)
        moved["claims"][0]["params"]["upper"] = encode_array(wide.upper)
        assert not _verify(moved, model)[0]


def test_the_issuer_never_answers_holds_just_past_the_flip_radius():
    attacked = 0
    for seed in range(20):
        model = tiny_net(seed, (2, 10, 10, 10, 3))
        centre = np.random.default_rng(seed).uniform(-1, 1, 2)
        label = predicted(model, centre)
        if grid_values(model, classification(centre, 4.0, label), 81).min() > 0:
            continue  # no flip within radius 4
        inside, outside = 0.0, 4.0  # the grid's flip radius, by bisection
        for _ in range(14):
            mid = (inside + outside) / 2
            if grid_values(model, classification(centre, mid, label), 81).min() > 0:
                inside = mid
            else:
                outside = mid
        prop = classification(centre, outside * 1.002, label)
        assert grid_values(model, prop, 81).min() <= 0  # violated, by a small margin
        bound = property_bounds(from_module(model, (2,)), prop, "bab", deadline=time.perf_counter() + 3.0)
        assert not bound.holds, (seed, bound.margin)  # branch and bound alone (no PGD first)
        torch.manual_seed(seed)
        assert _certificate(model, prop).answer != "holds", seed
        attacked += 1
    assert attacked >= 6
