"""Attacks on the checker's refined leaf boxes (witness format "certify.relu-split-witness/2",
certify.certificates.property_check.leaf_boxes): on tiny nets and properties that a grid point VIOLATES, forged
witnesses (random complete split trees, splits of any hidden unit, repeated and contradictory splits along a
path, any slopes in [0, 1] and multipliers >= 0, any listed unit sets) must never verify; and a forged witness
never verifies where the format-1 rule (no refinement) refuses it unless the refined boxes really prove it, i.e.
its re-derived value stays below the grid minimum."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from property_grid import classification, grid_values, predicted, tiny_net  # noqa: E402

from certify.certificates import semantics  # noqa: E402
from certify.certificates._common import Invalid  # noqa: E402
from certify.certificates.property_check import REFINED_WITNESS_FORMAT, prove_holds, read_witness  # noqa: E402
from certify.certificates.relu_graph import graph_of  # noqa: E402

WIDTHS = (2, 6, 6, 6, 3)


def _tree(rng, hidden, max_depth, path=()):
    """A random complete split tree: leaves as lists of (layer, unit, sign); a path may split a unit twice."""
    if len(path) >= max_depth or (path and rng.random() < 0.3):
        return [list(path)]
    if path and rng.random() < 0.2:
        layer, unit = path[int(rng.integers(len(path)))][:2]  # a repeated split: same unit again
    else:
        layer = int(rng.integers(len(hidden)))
        unit = int(rng.integers(hidden[layer]))
    return _tree(rng, hidden, max_depth, path + ((layer, unit, 1),)) + _tree(rng, hidden, max_depth, path + ((layer, unit, -1),))


def _forged(rng, hidden, conjunctions, rows_per_conj, max_depth):
    unstable = [np.sort(rng.choice(w, size=int(rng.integers(0, w + 1)), replace=False)) for w in hidden]
    root_alphas = [[rng.uniform(0, 1, (2 * hidden[k], unstable[j].size)) for j in range(k)] for k in range(len(hidden))]
    trees = []
    total = sum(u.size for u in unstable)
    for _ in range(conjunctions):
        leaves = _tree(rng, hidden, max_depth)
        splits = np.array([s for leaf in leaves for s in leaf], dtype=np.int64).reshape(-1, 3)
        trees.append({"depth": np.array([len(leaf) for leaf in leaves]), "splits": splits,
                      "betas": rng.exponential(0.5, splits.shape[0]) * (rng.random(splits.shape[0]) < 0.7),
                      "row": rng.integers(0, rows_per_conj, len(leaves)),
                      "alphas": rng.uniform(0, 1, (len(leaves), total))})
    return {"format": REFINED_WITNESS_FORMAT, "unstable": unstable, "root_alphas": root_alphas, "conjunctions": trees}


@pytest.mark.parametrize("seed", range(40))
def test_no_forged_refined_witness_proves_a_violated_property(seed):
    rng = np.random.default_rng(seed)
    model = tiny_net(seed, WIDTHS).double()
    centre = rng.uniform(-1, 1, 2)
    label = predicted(model.float(), centre)
    model.double()
    prop = classification(centre, float(rng.uniform(0.3, 1.5)), (label + 1) % 3)  # a wrong label: violated
    grid = grid_values(model.float(), prop, 121)
    model.double()
    assert grid.min() < 0  # a counterexample: the centre itself (a grid point), where `label` wins
    net = graph_of(semantics.translate(model, (2,)))
    box = (prop.lower, prop.upper)
    for attempt in range(6):
        witness = _forged(rng, list(WIDTHS[1:-1]), len(prop.disjuncts), 1, 2 + attempt)
        parsed = read_witness(witness, net, prop.disjuncts, lambda a, where: np.asarray(a, dtype=np.float64))
        with pytest.raises(Invalid):
            prove_holds(net, box, prop.disjuncts, parsed)


@pytest.mark.parametrize("seed", range(30))
def test_a_forged_refined_witness_that_verifies_stays_below_the_grid_minimum(seed):
    rng = np.random.default_rng(1000 + seed)
    model = tiny_net(seed, WIDTHS)
    centre = rng.uniform(-1, 1, 2)
    prop = classification(centre, float(rng.uniform(0.05, 0.4)), predicted(model, centre))
    truth = grid_values(model, prop, 121).min()
    net = graph_of(semantics.translate(model.double(), (2,)))
    model.float()
    box = (prop.lower, prop.upper)
    for attempt in range(6):
        witness = _forged(rng, list(WIDTHS[1:-1]), len(prop.disjuncts), 1, 1 + attempt)
        parsed = read_witness(witness, net, prop.disjuncts, lambda a, where: np.asarray(a, dtype=np.float64))
        try:
            value = prove_holds(net, box, prop.disjuncts, parsed)
        except Invalid:
            continue
        assert 0 < value <= truth + 1e-12
