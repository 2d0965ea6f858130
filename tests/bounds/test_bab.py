"""ReLU-split branch and bound (certify.bounds.bab) through `property_bounds(..., "bab")`: agrees with the exact
answer (MILP, certify.bounds.milp) on tiny random nets and never proves a property with a counterexample; its
witness (format of certify/certificates/property_check.py) re-derives a positive bound for every leaf from the network, the property and
the witness alone, and its split tree is complete (not after removing a leaf); the optimisation of the slopes
and split multipliers improves the bound; and a real mnistfc pair that CROWN cannot prove is proven in time."""
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mnistfc_data as M  # noqa: E402
from property_grid import classification, grid_values, predicted, tiny_net  # noqa: E402

from certify.attacks.property import pgd_counterexample  # noqa: E402
from certify.bounds.activations import relax  # noqa: E402
from certify.bounds.alpha_crown import SearchChain, alpha_crown_lower_bound  # noqa: E402
from certify.bounds.bab import _optimise, _Search, certified_leaf_bounds, leaf_boxes  # noqa: E402
from certify.bounds.crown import backward_lower_bound  # noqa: E402
from certify.bounds.milp import exact_margin_lower_bounds  # noqa: E402
from certify.bounds.network import from_module  # noqa: E402
from certify.bounds.property import property_bounds, property_rows, property_set  # noqa: E402
from certify.errors import UnsupportedError  # noqa: E402


# ------------------------------------------------------------------ an independent re-derivation of a witness


def tree_complete(depth: np.ndarray, splits: np.ndarray) -> bool:
    """The witness check: the leaves' split paths form a complete binary split tree."""
    starts = np.concatenate([[0], np.cumsum(depth)])
    paths = [tuple(map(tuple, splits[starts[i]:starts[i + 1]])) for i in range(len(depth))]

    def complete(group: list[tuple], level: int) -> bool:
        if len(group) == 1 and len(group[0]) == level:
            return True
        if any(len(p) <= level for p in group):
            return False
        nodes = {p[level][:2] for p in group}
        if len(nodes) != 1:
            return False
        plus = [p for p in group if p[level][2] == 1]
        minus = [p for p in group if p[level][2] == -1]
        return bool(plus) and bool(minus) and len(plus) + len(minus) == len(group) and \
            complete(plus, level + 1) and complete(minus, level + 1)

    return len(paths) > 0 and complete(paths, 0)


def _scatter(values: np.ndarray, units: np.ndarray, width: int, rows: int) -> torch.Tensor:
    full = torch.zeros(rows, width, dtype=torch.float64)
    full[:, torch.as_tensor(units)] = torch.as_tensor(values, dtype=torch.float64).reshape(rows, -1)
    return full.clamp(0, 1)


def _refine(net, input_set, layer, lo, hi, slopes, unstable):
    """The bounds of +-e_i (i in unstable[layer]) of z_layer with the root slopes of those rows on the boxes
    lo / hi of the layers below: (lower, upper) [|U_layer|]."""
    width = net.weights[layer].shape[0]
    units = torch.as_tensor(unstable[layer], dtype=torch.long)
    picked = torch.cat([units, units + width]).numpy()
    rels = [relax(net.activations[j], lo[j][None, None], hi[j][None, None],
                  alpha=_scatter(np.asarray(slopes[j])[picked], unstable[j], lo[j].shape[0], 2 * units.numel())[None])
            for j in range(layer)]
    eye = torch.eye(width, dtype=torch.float64)[units]
    bound = backward_lower_bound(net, input_set, layer, torch.cat([eye, -eye])[None], rels,
                                 [(a[None, None], b[None, None]) for a, b in zip(lo[:layer], hi[:layer])])[0]
    return bound[:units.numel()], -bound[units.numel():]


def recheck(net, prop, witness) -> list[list[float]]:
    """The witness re-check from the network, the property and the witness only, one leaf at a time: per
    conjunction, the rigorous bound of every leaf (inf for an empty leaf) on its boxes (format 2: layer by
    layer, the root box intersected with the refinement on the leaf's boxes below when the leaf has a split
    below, then clamped by its splits); raises AssertionError for an incomplete tree."""
    input_set = property_set(prop)
    unstable = witness["unstable"]
    refined = witness["format"] == "certify.relu-split-witness/2"
    boxes = []
    for k, slopes in enumerate(witness["root_alphas"]):
        width = net.weights[k].shape[0]
        rels = [relax(net.activations[j], boxes[j][0][None, None], boxes[j][1][None, None],
                      alpha=_scatter(slopes[j], unstable[j], boxes[j][0].shape[0], 2 * width)[None]) for j in range(k)]
        eye = torch.eye(width, dtype=torch.float64)
        bound = backward_lower_bound(net, input_set, k, torch.cat([eye, -eye])[None], rels,
                                     [(lo[None, None], hi[None, None]) for lo, hi in boxes])[0]
        boxes.append((bound[:width], -bound[width:]))
    sizes = [len(u) for u in unstable]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    out = []
    for (c, d), tree in zip(prop.disjuncts, witness["conjunctions"]):
        assert tree_complete(tree["depth"], tree["splits"]), "incomplete split tree"
        starts = np.concatenate([[0], np.cumsum(tree["depth"])])
        values = []
        for leaf in range(len(tree["depth"])):
            splits = tree["splits"][starts[leaf]:starts[leaf + 1]]
            lo = [b[0].clone() for b in boxes]
            hi = [b[1].clone() for b in boxes]
            terms = {j: torch.zeros(1, 1, b[0].shape[0], dtype=torch.float64) for j, b in enumerate(boxes)}
            for k in range(len(boxes)):
                if refined and k > 0 and len(unstable[k]) and (splits[:, 0] < k).any():
                    new_lo, new_hi = _refine(net, input_set, k, lo, hi, witness["root_alphas"][k], unstable)
                    units = torch.as_tensor(unstable[k], dtype=torch.long)
                    lo[k][units] = torch.maximum(lo[k][units], new_lo)
                    hi[k][units] = torch.minimum(hi[k][units], new_hi)
                for (j, u, s) in splits:
                    if j == k and s > 0:
                        lo[j][u] = max(float(lo[j][u]), 0.0)
                    elif j == k:
                        hi[j][u] = min(float(hi[j][u]), 0.0)
            for (j, u, s), beta in zip(splits, tree["betas"][starts[leaf]:starts[leaf + 1]]):
                terms[j][0, 0, u] -= max(float(beta), 0.0) * s
            if any(bool((a > b).any()) for a, b in zip(lo, hi)):
                values.append(float("inf"))
                continue
            alphas = tree["alphas"][leaf]
            rels = [relax(net.activations[j], lo[j][None, None], hi[j][None, None],
                          alpha=_scatter(alphas[offsets[j]:offsets[j + 1]], unstable[j], lo[j].shape[0], 1)[None])
                    for j in range(len(boxes))]
            row = int(tree["row"][leaf])
            value = backward_lower_bound(net, input_set, net.depth - 1, torch.as_tensor(c[row:row + 1])[None], rels,
                                         [(a[None, None], b[None, None]) for a, b in zip(lo, hi)],
                                         const=-torch.as_tensor(d[row:row + 1])[None], layer_terms=terms)
            values.append(float(value))
        out.append(values)
    return out


# ------------------------------------------------------------------ exact answers on tiny nets


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.1, 0.3, 0.6]))
def test_bab_agrees_with_the_milp_and_never_proves_a_violated_property(seed, eps):
    model = tiny_net(seed, (2, 10, 10, 3))
    centre = np.random.default_rng(seed).uniform(-1, 1, 2)
    label = predicted(model, centre)
    prop = classification(centre, eps, label)
    net = from_module(model, (2,))
    exact = exact_margin_lower_bounds(net, torch.tensor(centre)[None], torch.tensor([label]), eps, "inf").value[0]
    exact = np.delete(exact.numpy(), label)  # per conjunction (one row each), in the property's order
    bab = property_bounds(net, prop, "bab", deadline=time.perf_counter() + 10.0, batch=32)
    assert bab.margin <= exact.min() + 1e-7
    if exact.min() <= 0:  # a counterexample exists
        assert not bab.holds
    if exact.min() > 1e-2:  # complete in practice on a net this small
        assert bab.holds, (exact, bab.per_conjunction)
    if bab.holds:
        assert all(v > 0 for values in recheck(net, prop, bab.witness) for v in values)


def _random_subdomains(seed, widths, radius, target, iterations, count, density):
    """A seeded tiny net, a classification property around a random centre (target None: the predicted class),
    its alpha-CROWN root and search state, and `count` random split patterns (each unit split with probability
    `density`) with the root's final slopes and zero multipliers."""
    model = tiny_net(seed, widths)
    centre = np.random.default_rng(seed).uniform(-1, 1, 2)
    prop = classification(centre, radius, predicted(model, centre) if target is None else target)
    net = from_module(model, (2,))
    input_set = property_set(prop)
    rows, consts, _ = property_rows(prop)
    _, details = alpha_crown_lower_bound(net, input_set, rows, consts, iterations=iterations)
    root = details["root"]
    search = _Search(SearchChain.build(net, input_set), root, rows.float(), consts.float())
    gen = torch.Generator().manual_seed(seed)
    splits = (torch.randint(-1, 2, (count, search.size), generator=gen)
              * (torch.rand(count, search.size, generator=gen) < density)).to(torch.int8)
    alpha = root.final[None].expand(count, -1, -1).clone()
    beta = torch.zeros(count, rows.shape[1], search.size)
    return prop, net, input_set, rows, consts, root, search, splits, alpha, beta


@pytest.mark.parametrize("seed", range(6))
def test_split_subdomain_bounds_never_exceed_the_grid_minimum_of_the_subdomain(seed):
    """The Lagrangian split term has the right sign and the clamped boxes are sound: a subdomain's certified
    bound, after optimisation, stays below the least objective on the grid points satisfying its splits."""
    count = 16
    prop, net, input_set, rows, consts, root, search, splits, alpha, beta = _random_subdomains(
        seed, (2, 10, 10, 3), 0.8, 0, iterations=10, count=count, density=0.4)
    lower, upper = leaf_boxes(net, input_set, root, splits)
    frame = search.frame(splits, lower, upper)
    _, alpha, beta = _optimise(search, splits, frame, alpha, beta, torch.zeros(count, dtype=torch.long), 40, 0.1, 0.1)
    bound = certified_leaf_bounds(net, input_set, root, rows, consts, splits, lower, upper, alpha, beta)
    xs = np.linspace(prop.lower[0], prop.upper[0], 161)
    ys = np.linspace(prop.lower[1], prop.upper[1], 161)
    pts = torch.tensor(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2), dtype=torch.float64)
    pre = net.pre_activations(pts)
    values = net.forward(pts) @ rows[0].T + consts[0]
    layer, unit = search.layer_of(torch.arange(search.size))
    for i in range(count):
        inside = torch.ones(pts.shape[0], dtype=torch.bool)
        for t in torch.nonzero(splits[i]).reshape(-1):
            z = pre[int(layer[t])][:, int(unit[t])]
            inside &= (z >= 0) if splits[i, t] > 0 else (z <= 0)
        if bool(inside.any()):
            assert (bound[i] <= values[inside].min(0).values + 1e-9).all(), i


def test_optimising_slopes_and_multipliers_improves_the_bound_on_average():
    gains = []
    for seed in range(4):
        count = 32
        _, net, input_set, rows, consts, root, search, splits, alpha, beta = _random_subdomains(
            seed, (2, 16, 16, 3), 0.6, None, iterations=0, count=count, density=0.3)
        lower, upper = leaf_boxes(net, input_set, root, splits)
        frame = search.frame(splits, lower, upper)
        before = certified_leaf_bounds(net, input_set, root, rows, consts, splits, lower, upper, alpha, beta)
        _, alpha, beta = _optimise(search, splits, frame, alpha, beta, torch.zeros(count, dtype=torch.long), 30, 0.1, 0.1)
        after = certified_leaf_bounds(net, input_set, root, rows, consts, splits, lower, upper, alpha, beta)
        finite = torch.isfinite(before) & torch.isfinite(after)
        gains.append(float((after - before)[finite].mean()))
        assert float((after - before)[finite].min()) > -1e-5  # the best iterate is kept per row
    assert np.mean(gains) > 1e-3, gains


# ------------------------------------------------------------------ the witness


def test_the_witness_rederives_every_leaf_and_a_missing_leaf_breaks_the_tree():
    for seed in range(40):
        model = tiny_net(seed, (2, 12, 12, 3))
        centre = np.random.default_rng(seed).uniform(-1, 1, 2)
        prop = classification(centre, 0.6, predicted(model, centre))
        if grid_values(model, prop).min() < 0.02:
            continue
        net = from_module(model, (2,))
        bab = property_bounds(net, prop, "bab", deadline=time.perf_counter() + 10.0, batch=16, root_iterations=0)
        if not bab.holds or max(len(t["depth"]) for t in bab.witness["conjunctions"]) < 3:
            continue
        values = recheck(net, prop, bab.witness)
        assert all(v > 0 for leaves in values for v in leaves)
        tree = max(bab.witness["conjunctions"], key=lambda t: len(t["depth"]))
        starts = np.concatenate([[0], np.cumsum(tree["depth"])])
        for leaf in range(len(tree["depth"])):
            keep = [i for i in range(len(tree["depth"])) if i != leaf]
            splits = np.concatenate([tree["splits"][starts[i]:starts[i + 1]] for i in keep])
            assert not tree_complete(tree["depth"][keep], splits)
        return
    pytest.fail("no tiny net needed a split tree with 3 or more leaves")


def test_a_non_relu_network_is_refused_by_branch_and_bound():
    model = nn.Sequential(nn.Linear(2, 8), nn.Softplus(), nn.Linear(8, 3)).eval()
    prop = classification([0.0, 0.0], 0.3, predicted(model, np.zeros(2)))
    net = from_module(model, (2,))
    with pytest.raises(UnsupportedError, match="softplus"):
        property_bounds(net, prop, "bab")
    assert property_bounds(net, prop, "crown").witness is None  # CROWN still bounds it, without a witness


# ------------------------------------------------------------------ the real benchmark


def test_mnistfc_branch_and_bound_proves_a_pair_crown_cannot_within_the_time_limit():
    model = M.model("mnist-net_256x2.onnx")
    net = from_module(model, model.certify_input_shape)
    prop = M.prop("prop_9_0.03.vnnlib")
    assert not property_bounds(net, prop, "crown").holds
    start = time.perf_counter()
    bound = property_bounds(net, prop, "bab", deadline=start + 60.0)
    assert bound.holds and time.perf_counter() - start < 60.0
    assert any(len(t["depth"]) > 1 for t in bound.witness["conjunctions"])  # needed splitting
    assert all(v > 0 for leaves in recheck(net, prop, bound.witness) for v in leaves)
    point, _ = pgd_counterexample(model, prop, (784, 1), seconds=1.0)
    assert point is None


@pytest.mark.slow
def test_mnistfc_256x4_pair_with_every_root_bound_negative_is_proven_within_60_seconds():
    """256x4 prop_13_0.03: CROWN's bound is -5.5 and alpha-CROWN leaves all nine conjunctions negative; branch
    and bound proves it (about 13 s on one core of the session machine)."""
    model = M.model("mnist-net_256x4.onnx")
    net = from_module(model, model.certify_input_shape)
    prop = M.prop("prop_13_0.03.vnnlib")
    start = time.perf_counter()
    bound = property_bounds(net, prop, "bab", deadline=start + 60.0)
    assert bound.holds and time.perf_counter() - start < 60.0
    assert (bound.details["root"]["root"].value < 0).all()
    assert all(v > 0 for leaves in recheck(net, prop, bound.witness) for v in leaves)
