"""CROWN's fast paths (certify.bounds.crown): the mirrored pass with parallel slopes bounds both sides of a unit
from one coefficient chain, the midpoint-radius support of a box, products over live columns, examples grouped
by unstable count, and margins that keep per row the better of the parallel and adaptive slopes (never looser
than the dual network's, as tight as CROWN's where its slopes win)."""
import math
from fractions import Fraction

import pytest
import torch
from convex_adversarial import DualNetwork

import certify.bounds.crown as crown
from certify.bounds.activations import default_alpha, relax
from certify.bounds.crown import backward_lower_bound, layer_bounds, margin_bounds_on_set, margin_spec
from certify.bounds.network import from_module
from certify.bounds.sets import InputSet, sample_ball
from certify.errors import UsageError
from proofs_checks.nets import NetSpec


def _case(seed, p, eps=0.08, widths=(16, 12)):
    model = NetSpec(6, widths, 4, "relu", 1.0, 3.0, seed).build()
    net = from_module(model, (6,))
    x = torch.rand(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    domain = (torch.zeros(6, dtype=torch.float64), torch.ones(6, dtype=torch.float64))
    return model, net, x, InputSet.build(x, eps, p, domain)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("p", [math.inf, 2])
def test_mirrored_pass_bounds_both_sides_as_the_two_sided_pass_does(seed, p):
    _, net, x, s = _case(seed, p)
    boxes, relaxations = layer_bounds(net, s, "crown", slopes="parallel")
    top = net.depth - 1
    rows = torch.randn(5, 3, net.num_classes, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    mirrored = backward_lower_bound(net, s, top, rows, relaxations, boxes, mirrored=True)
    two_sided = backward_lower_bound(net, s, top, torch.cat([rows, -rows], 1), relaxations, boxes)
    assert mirrored.shape == (5, 6)
    assert torch.allclose(mirrored, two_sided, rtol=1e-12, atol=1e-12)
    points = sample_ball(x, s.eps[0].item(), p, 300, torch.Generator().manual_seed(seed)).clamp(0, 1)
    values = torch.einsum("nmk,nsk->nsm", rows, net.forward(points).reshape(5, 300, -1))
    assert (mirrored[:, :3] <= values.amin(1)).all() and (-mirrored[:, 3:] >= values.amax(1)).all()
    adaptive = [relax(a, *b, alpha=default_alpha(a, *b)) for a, b in zip(net.activations, boxes)]
    assert any(not torch.equal(r.lower_slope, r.upper_slope) for r in adaptive)
    with pytest.raises(UsageError, match="equal lower and upper slopes"):
        backward_lower_bound(net, s, top, rows, adaptive, boxes, mirrored=True)


def _exact_box_min(lam, lower, upper):
    """min over the box of lam . x for one row, exactly (Fractions of the float64 values)."""
    return sum(min(Fraction(a) * Fraction(lo), Fraction(a) * Fraction(hi)) for a, lo, hi in zip(lam, lower, upper))


@pytest.mark.parametrize("scale", [1.0, 1e-170, 1e150])
def test_box_support_pair_lies_below_the_exact_minimum_of_both_signs(scale):
    gen = torch.Generator().manual_seed(3)
    centre = torch.randn(2, 7, dtype=torch.float64, generator=gen) * scale
    s = InputSet(centre, torch.tensor([0.3, 1e-3], dtype=torch.float64) * scale, math.inf)
    lam = torch.randn(2, 4, 7, dtype=torch.float64, generator=gen) * torch.logspace(-8, 8, 7, dtype=torch.float64)
    pair = crown._support(s, lam.clone(), mirrored=True)
    assert torch.equal(pair[:, :4], crown._support(s, lam.clone(), mirrored=False))
    lower, upper = s.box()
    for n in range(2):
        for m in range(4):
            plus = _exact_box_min(lam[n, m].tolist(), lower[n].tolist(), upper[n].tolist())
            minus = _exact_box_min((-lam[n, m]).tolist(), lower[n].tolist(), upper[n].tolist())
            assert Fraction(pair[n, m].item()) <= plus and Fraction(pair[n, 4 + m].item()) <= minus
    reference = s.lower_support(torch.cat([lam, -lam], 1))
    assert torch.allclose(pair, reference, rtol=1e-9, atol=0)


def test_live_columns_skip_dead_units_without_changing_the_bound(monkeypatch):
    _, net, x, s = _case(4, math.inf, eps=0.05, widths=(64, 64))
    target = net.forward(x).argmax(1)
    lam = torch.zeros(5, 200, 64, dtype=torch.float64)
    lam[:, :, 10:30] = 1.0
    part, cols = crown._live_columns(lam)
    assert cols.shape == (5, 20) and set(cols[0].tolist()) == set(range(10, 30)) and part.shape == (5, 200, 20)
    assert crown._live_columns(torch.ones(5, 200, 64, dtype=torch.float64)) is None
    with_live = margin_bounds_on_set(net, s, target)[0]
    monkeypatch.setattr(crown, "LIVE_GAIN", math.inf)  # never compact
    without = margin_bounds_on_set(net, s, target)[0]
    finite = torch.isfinite(with_live)
    assert torch.allclose(with_live[finite], without[finite], rtol=1e-12, atol=1e-12)


def test_row_groups_cover_each_example_with_unstable_units_once():
    counts = torch.tensor([0, 3, 200, 7, 0, 64, 65, 1, 130, 2])
    groups = crown._row_groups(counts, size=crown.GROUP_WORK)  # costly rows: one group per power of two
    members = torch.cat(groups).tolist()
    assert sorted(members) == [i for i, c in enumerate(counts.tolist()) if c > 0]
    for group in groups:
        sizes = counts[group]
        assert 2 * sizes.min() >= sizes.max()  # padding to the largest count at most doubles the rows
    assert len(crown._row_groups(counts, size=1)) == 1  # tiny rows: everything merged into one pass


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_margins_keep_the_better_rule_and_are_never_looser_than_the_dual_network(seed):
    model, net, x, _ = _case(seed, math.inf)
    s = InputSet.build(x, 0.08, "inf")
    target = net.forward(x).argmax(1)
    value, witness = margin_bounds_on_set(net, s, target)
    spec, boxes = witness["spec"], witness["boxes"]
    top = net.depth - 1
    parallel = backward_lower_bound(net, s, top, spec, witness["layer_relaxations"], boxes)
    adaptive = [relax(a, *b, alpha=default_alpha(a, *b)) for a, b in zip(net.activations, boxes)]
    adapted = backward_lower_bound(net, s, top, spec, adaptive, boxes)
    off = torch.isfinite(value)
    assert (value[off] >= torch.maximum(parallel, adapted)[off] - 1e-12).all()
    assert (adapted[off] > parallel[off] + 1e-9).any() and (parallel[off] > adapted[off] + 1e-9).any()
    with torch.no_grad():
        theirs = DualNetwork(model, x, 0.08)(margin_spec(target, 4))
    assert (value[off] >= theirs[off] - 1e-9 * (1 + theirs[off].abs())).all()


def test_adaptive_boxes_are_an_option_and_sound():
    model, net, x, s = _case(5, math.inf)
    target = net.forward(x).argmax(1)
    parallel, _ = margin_bounds_on_set(net, s, target)
    adaptive, witness = margin_bounds_on_set(net, s, target, slopes="adaptive")
    off = torch.isfinite(parallel)
    assert not torch.equal(parallel[off], adaptive[off])
    assert all(not torch.equal(r.lower_slope, r.upper_slope) for r in witness["layer_relaxations"])
    points = sample_ball(x, 0.08, math.inf, 400, torch.Generator().manual_seed(5)).clamp(0, 1)
    logits = net.forward(points).reshape(5, 400, -1)
    margins = (logits.gather(2, target[:, None, None].expand(-1, 400, 1)) - logits).amin(1)
    assert (adaptive[off] <= margins[off]).all() and (parallel[off] <= margins[off]).all()
    with pytest.raises(UsageError, match="slope rule"):
        margin_bounds_on_set(net, s, target, slopes="steepest")
