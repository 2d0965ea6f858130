"""The refined subdomain boxes of branch and bound (certify.bounds.bab.refined_boxes, witness format 2):
they contain every grid point of the box that satisfies the splits (soundness), they are never looser than the
root boxes clamped (format 1) and tighter somewhere, a child's boxes computed from its parent's equal those
computed from scratch, the search's float32 boxes agree with the rigorous ones, and the independent checker's
boxes (certify.certificates.property_check.leaf_boxes) agree with the issuer's."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from property_grid import classification, predicted, tiny_net  # noqa: E402

from certify.bounds.alpha_crown import SearchChain, alpha_crown_lower_bound  # noqa: E402
from certify.bounds.bab import _clamped, _reduced, _Search, leaf_boxes  # noqa: E402
from certify.bounds.network import from_module  # noqa: E402
from certify.bounds.property import property_rows, property_set  # noqa: E402
from certify.certificates import semantics  # noqa: E402
from certify.certificates import property_check as P  # noqa: E402
from certify.certificates.relu_graph import graph_of  # noqa: E402

WIDTHS = (2, 10, 10, 10, 3)


def _setup(seed: int, radius: float = 0.7, count: int = 24, density: float = 0.25):
    model = tiny_net(seed, WIDTHS)
    centre = np.random.default_rng(seed).uniform(-1, 1, 2)
    prop = classification(centre, radius, predicted(model, centre))
    net = from_module(model, (2,))
    input_set = property_set(prop)
    rows, consts, _ = property_rows(prop)
    _, details = alpha_crown_lower_bound(net, input_set, rows, consts, iterations=10)
    root = details["root"]
    search = _Search(SearchChain.build(net, input_set), root, rows.float(), consts.float())
    gen = torch.Generator().manual_seed(seed)
    splits = (torch.randint(-1, 2, (count, search.size), generator=gen)
              * (torch.rand(count, search.size, generator=gen) < density)).to(torch.int8)
    return model, prop, net, input_set, root, search, splits


def _grid(prop, n=241):
    xs = np.linspace(prop.lower[0], prop.upper[0], n)
    ys = np.linspace(prop.lower[1], prop.upper[1], n)
    return torch.tensor(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2), dtype=torch.float64)


@pytest.mark.parametrize("seed", range(8))
def test_refined_boxes_contain_every_grid_point_that_satisfies_the_splits(seed):
    _, prop, net, input_set, root, search, splits = _setup(seed)
    lower, upper = leaf_boxes(net, input_set, root, splits)
    pts = _grid(prop)
    pre = torch.cat([z[:, u] for z, u in zip(net.pre_activations(pts), root.unstable)], dim=1)  # [G, T]
    checked = 0
    for i in range(splits.shape[0]):
        s = splits[i].to(torch.float64)
        inside = ((pre * s >= 0) | (s == 0)).all(1)
        if bool(inside.any()):
            checked += 1
            z = pre[inside]
            assert bool((z >= lower[i] - 1e-12).all() and (z <= upper[i] + 1e-12).all()), i
            assert not bool((lower[i] > upper[i]).any())  # a subdomain with a point is never called empty
    assert checked >= 3


@pytest.mark.parametrize("seed", range(6))
def test_refined_boxes_are_never_looser_than_the_clamped_root_boxes_and_tighter_somewhere(seed):
    _, _, net, input_set, root, _, splits = _setup(seed)
    lower, upper = leaf_boxes(net, input_set, root, splits)
    base_lo, base_hi = _clamped(splits, *_reduced([(lo[None], hi[None]) for lo, hi in root.boxes], root.unstable))
    assert bool((lower >= base_lo).all() and (upper <= base_hi).all())
    if seed < 3:
        assert bool(((lower > base_lo + 1e-9) | (upper < base_hi - 1e-9)).any())


@pytest.mark.parametrize("seed", range(6))
def test_a_child_from_its_parent_equals_the_child_from_scratch(seed):
    _, _, net, input_set, root, search, splits = _setup(seed, density=0.15)
    gen = torch.Generator().manual_seed(seed + 100)
    free = splits == 0
    t = torch.stack([torch.multinomial(f.float() + 1e-9, 1, generator=gen)[0] for f in free])  # one free unit each
    child = splits.clone()
    child[torch.arange(splits.shape[0]), t] = torch.where(torch.rand(splits.shape[0], generator=gen) < 0.5, 1, -1).to(torch.int8)
    parent = leaf_boxes(net, input_set, root, splits)
    layer = search.layer_of(t)[0]
    incremental = leaf_boxes(net, input_set, root, child, (parent[0], parent[1], layer))
    scratch = leaf_boxes(net, input_set, root, child)
    for a, b in zip(incremental, scratch):
        finite = torch.isfinite(b)
        assert torch.equal(torch.isfinite(a), finite)
        assert torch.allclose(a[finite], b[finite], rtol=1e-12, atol=1e-12)
    search_boxes = search.refine(child, (parent[0].float(), parent[1].float(), layer))
    kept = ~(scratch[0] > scratch[1]).any(1)  # an empty subdomain's boxes past its first l > u mean nothing
    assert bool(kept.sum() >= 10)
    for a, b in zip(search_boxes, scratch):
        assert torch.allclose(a.double()[kept], b[kept], rtol=1e-4, atol=1e-4)  # float32, no rounding control


def _checker_boxes(model, prop, root, splits, search):
    """The independent checker's boxes of the leaves given by split patterns (reduced coordinates)."""
    gnet = graph_of(semantics.translate(model, (2,)))
    unstable = [u.numpy() for u in root.unstable]
    root_alphas = [[a.numpy().astype(np.float32) for a in layer] for layer in root.root_alphas]
    witness = P.Witness(unstable, root_alphas, [], refined=True)
    box = (prop.lower, prop.upper)
    roots = P.root_boxes(gnet, box, unstable, root_alphas)
    layer, unit = search.layer_of(torch.arange(search.size))
    leaves = []
    for row in splits:
        t = torch.nonzero(row).reshape(-1)
        order = torch.randperm(t.numel())  # the checker must not depend on the order of a leaf's splits
        t = t[order]
        leaves.append(np.stack([layer[t].numpy(), unit[t].numpy(), row[t].numpy().astype(np.int64)], 1).astype(np.int64))
    boxes = P.leaf_boxes(gnet, box, witness, roots, leaves)
    return (np.concatenate([lo[:, u] for (lo, _), u in zip(boxes, unstable)], 1),
            np.concatenate([hi[:, u] for (_, hi), u in zip(boxes, unstable)], 1))


@pytest.mark.parametrize("seed", range(6))
def test_the_checker_rederives_the_issuers_refined_boxes(seed):
    model, prop, net, input_set, root, search, splits = _setup(seed)
    torch.manual_seed(seed)
    lower, upper = leaf_boxes(net, input_set, root, splits)
    c_lower, c_upper = _checker_boxes(model.double(), prop, root, splits, search)
    model.float()
    empty = (lower > upper).any(1).numpy()
    assert np.array_equal(empty, (c_lower > c_upper).any(1))  # no box here is within rounding of empty
    assert (~empty).sum() >= 10
    for a, b in ((lower.numpy()[~empty], c_lower[~empty]), (upper.numpy()[~empty], c_upper[~empty])):
        finite = np.isfinite(a)
        assert np.array_equal(finite, np.isfinite(b))
        assert np.allclose(a[finite], b[finite], rtol=1e-9, atol=1e-9)
    # and the checker's are sound on the grid too (its own arithmetic)
    pts = _grid(prop, 161)
    pre = torch.cat([z[:, u] for z, u in zip(net.pre_activations(pts), root.unstable)], dim=1).numpy()
    for i in range(splits.shape[0]):
        s = splits[i].numpy()
        inside = ((pre * s >= 0) | (s == 0)).all(1)
        if inside.any():
            assert (pre[inside] >= c_lower[i] - 1e-12).all() and (pre[inside] <= c_upper[i] + 1e-12).all()
