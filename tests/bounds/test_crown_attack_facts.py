"""Attacks (helper H, issue 18) on the faster CROWN: the `facts` its passes share, the selector rows that are row
gathers, the mirrored pass, the per-row slopes of `_best_of_slopes`, the row groups of the screened boxes and
the |W| kept per tensor. Each compares a certified bound with an exact value or with the network at points
of the set, where the existing tests (test_crown*.py) do not: the intermediate boxes' bounds (the selector-row
path, for every unit and for a subset, mirrored and two-sided, with the facts of `layer_bounds`) against
their exact rational value on several examples with different boxes, smooth and leaky activations and skips;
calls that differ only in eps, in x (written in place between calls) or in weights edited in place;
batches split into several row groups; certified radii against a dense grid of the ball; float32 inputs.
(Writes that bypass the version counter: test_crown_attack_stale_magnitude.py.)"""
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

import certify.bounds.crown as crown
from certify.bounds.activations import Activation
from certify.bounds.crown import layer_bounds, margin_lower_bounds
from certify.bounds.network import AffineNetwork
from certify.bounds.radius import certified_radius
from certify.bounds.sets import InputSet

from exact_crown import exact as _exact, exact_pass as _exact_pass, smaller as _smaller  # noqa: E402


def _below_exact(bound: float, value: Fraction, lam: np.ndarray, s: InputSet, i: int) -> bool:
    """Whether `bound` <= value + a lower bound of lam . x over the set of example i, in exact rational
    arithmetic: the minimum over the ball of radius eps around the centre (p = 1: lam . c - eps max |lam|;
    p = 2: lam . c - eps ||lam||_2, compared through squares) or, for p = inf or with a domain, over the
    set's outward-rounded box (`InputSet.box`, which contains the set: a stricter test than its exact box;
    the minimum over the intersection is at least either)."""
    centre, eps = _exact(s.center[i].numpy()), Fraction(float(s.eps[i]))
    gap = value + lam.dot(centre) - Fraction(bound)  # the bound is below when the support exceeds -gap
    lower, upper = (_exact(b[i].numpy()) for b in s.box())  # outward-rounded: contains the exact box
    box_min = _smaller(lam * lower, lam * upper).sum() - lam.dot(centre)
    if gap + box_min >= 0 and (s.p == math.inf or s.lo is not None):
        return True
    if s.p == 1:
        return gap >= eps * max(abs(v) for v in lam)
    return s.p == 2 and gap >= 0 and gap * gap >= eps * eps * sum(v * v for v in lam)


def _wide(shape, gen):
    """Entries spanning 16 orders of magnitude (cancellation in every product)."""
    return torch.randn(shape, generator=gen, dtype=torch.float64) * 10.0 ** torch.randint(-8, 9, shape, generator=gen)


ACTIVATIONS = [Activation("relu"), Activation("leaky_relu", negative_slope=0.3), Activation("softplus", beta=1.0),
               Activation("leaky_relu", negative_slope=3.0), Activation("sigmoid")]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("slopes", ["parallel", "adaptive"])
@pytest.mark.parametrize("p", [math.inf, 2, 1])
def test_box_rows_are_below_their_exact_rational_value_for_all_and_some_units(seed, slopes, p):
    """The boxes' passes (rows +-e_u as gathers, mirrored through parallel lines, two-sided through adaptive
    ones) with the facts that `layer_bounds` kept: each bound at or below its exact rational value, for three
    examples with boxes of very different sizes (eps 1e-9, 0.05, 0.4; one clipped by a domain)."""
    gen = torch.Generator().manual_seed(seed)
    act = ACTIVATIONS[seed]
    weights = [_wide((5, 3), gen), _wide((4, 5), gen), _wide((3, 4), gen)]
    biases = [_wide((m,), gen) for m in (5, 4, 3)]
    skips = {2: {0: _wide((3, 3), gen), 1: _wide((3, 5), gen)}} if seed % 2 else {}
    net = AffineNetwork(weights, biases, [act, act], (3,), skips=skips)
    x = torch.rand(3, 3, dtype=torch.float64, generator=gen) * 0.8 + 0.1
    domain = (torch.full((3,), 0.1, dtype=torch.float64), torch.full((3,), 0.9, dtype=torch.float64))
    s = InputSet.build(x, torch.tensor([1e-9, 0.05, 0.4], dtype=torch.float64), p, domain)
    facts: dict = {}
    boxes, relaxations = layer_bounds(net, s, "crown", slopes=slopes, facts=facts)
    checked = 0
    for some in (False, True):
        width = net.weights[1].shape[0]
        units = torch.stack([torch.randperm(width, generator=gen)[:2] for _ in range(3)]) if some else None
        lower, upper = crown._crown_box(net, s, 1, relaxations[:1], boxes[:1], units, facts)
        index = torch.arange(width).expand(3, width) if units is None else units
        for i in range(3):
            eye = np.eye(width)[index[i].numpy()]
            value, lam = _exact_pass(net, 1, np.concatenate([eye, -eye]), relaxations, i)
            m = eye.shape[0]
            for u in range(m):
                assert _below_exact(float(lower[i, u]), value[u], lam[u], s, i)
                assert _below_exact(-float(upper[i, u]), value[m + u], lam[m + u], s, i)
                checked += 1
    assert checked == 3 * (4 + 2)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("slopes", ["parallel", "adaptive"])
@pytest.mark.parametrize("p", [math.inf, 2, 1])
def test_margins_with_per_row_winning_slopes_are_below_their_exact_rational_value(seed, slopes, p):
    """margin_bounds_on_set keeps, per margin, the better of the parallel and adaptive slopes from one pass
    of 2K rows with per-row lines and the shared facts: each margin at or below the exact rational value of
    the back-substitution with its winning lines (the witness's `relaxations`, per row where the rules
    differ), on several examples with mixed targets, wide-range weights, a chain and a skip graph."""
    gen = torch.Generator().manual_seed(10 + seed)
    act = [Activation("relu"), Activation("leaky_relu", negative_slope=0.25)][seed % 2]
    weights = [_wide((6, 3), gen), _wide((6, 6), gen), _wide((4, 6), gen)]
    biases = [_wide((m,), gen) for m in (6, 6, 4)]
    skips = {2: {0: _wide((4, 3), gen)}} if seed >= 2 else {}
    net = AffineNetwork(weights, biases, [act, act], (3,), skips=skips)
    x = torch.rand(3, 3, dtype=torch.float64, generator=gen)
    s = InputSet.build(x, torch.tensor([0.02, 0.2, 1.0], dtype=torch.float64), p)
    target = torch.tensor([0, 3, 1])
    value, witness = crown.margin_bounds_on_set(net, s, target, slopes=slopes)
    per_row = [r for r in witness["relaxations"] if r.lower_slope.dim() == 3]
    for i in range(3):
        for r in range(4):
            if r == int(target[i]):
                continue
            rows = witness["spec"][i, r : r + 1].numpy()
            constant, lam = _exact_pass(net, 2, rows, witness["relaxations"], i, r)
            assert _below_exact(float(value[i, r]), constant[0], lam[0], s, i)
    assert per_row or slopes == "adaptive"  # the parallel boxes leave units unstable: per-row winners


def _grid(center: torch.Tensor, radius: float, p, domain=None, m: int = 41) -> torch.Tensor:
    """Points of the 2-d ball of `radius` around center [1, 2]: a grid of the box clipped to the ball, its
    boundary (vertices for p = 1 and inf), intersected with the domain box."""
    t = torch.linspace(-1, 1, m, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    if p == math.inf:
        offsets = grid
    else:
        angle = torch.linspace(0, 2 * math.pi, 8 * m, dtype=torch.float64)
        ring = torch.stack([angle.cos(), angle.sin()], -1)
        ring = ring / torch.linalg.vector_norm(ring, ord=p, dim=-1, keepdim=True)
        offsets = torch.cat([grid[torch.linalg.vector_norm(grid, ord=p, dim=-1) <= 1], ring])
    points = center + radius * offsets
    return points if domain is None else torch.maximum(torch.minimum(points, domain[1]), domain[0])


def _random_net(seed: int, act: Activation, widths=(6, 5, 3), skips: bool = False) -> AffineNetwork:
    gen = torch.Generator().manual_seed(seed)
    sizes = (2, *widths)
    weights = [torch.randn(b, a, dtype=torch.float64, generator=gen) * 1.5 for a, b in zip(sizes, sizes[1:])]
    biases = [torch.randn(b, dtype=torch.float64, generator=gen) * 0.5 for b in sizes[1:]]
    graph = {2: {0: torch.randn(sizes[3], 2, dtype=torch.float64, generator=gen)}} if skips else {}
    return AffineNetwork(weights, biases, [act] * (len(widths) - 1), (2,), skips=graph)


def _grid_margins(net, center, radius, target, p, domain=None, m: int = 41):
    """min over the grid of f_target - f_j [num_classes] (+inf at j = target, as the bounds have it)."""
    logits = net.forward(_grid(center, radius, p, domain, m))
    margins = (logits[:, target : target + 1] - logits).amin(0)
    return margins.index_fill(0, torch.tensor([target]), math.inf)


@pytest.mark.parametrize("p", [math.inf, 2, 1])
def test_calls_differing_in_eps_or_in_x_written_in_place_share_nothing_stale(p):
    """Two calls with the same network and inputs but different eps, and a call after x was overwritten in place,
    give exactly what a fresh network (new tensors, nothing kept) gives for those arguments, and stay below
    the network's margins on a grid of the set."""
    net = _random_net(3, Activation("relu"), skips=True)
    fresh = lambda: AffineNetwork([w.clone() for w in net.weights], [b.clone() for b in net.biases],  # noqa: E731
                                  net.activations, (2,), skips={k: {j: s.clone() for j, s in r.items()}
                                                                for k, r in net.skips.items()})
    x = torch.tensor([[0.3, -0.2], [0.1, 0.4]], dtype=torch.float64)
    target = torch.tensor([0, 2])
    for eps in (0.5, 0.01, 0.5):
        value = margin_lower_bounds(net, x, target, eps, p).value
        assert torch.equal(value, margin_lower_bounds(fresh(), x.clone(), target, eps, p).value)
        for i in range(2):
            grid = _grid_margins(net, x[i : i + 1], eps, int(target[i]), p)
            assert (value[i] <= grid).all()
    before = margin_lower_bounds(net, x, target, 0.2, p).value
    x.mul_(-2.0)  # the same tensor object, new values
    after = margin_lower_bounds(net, x, target, 0.2, p).value
    assert torch.equal(after, margin_lower_bounds(fresh(), x.clone(), target, 0.2, p).value)
    assert not torch.equal(before, after)


@pytest.mark.parametrize("edit", ["add_", "copy_", "index", "mul_"])
def test_weights_edited_in_place_with_a_version_bump_are_bounded_anew(edit):
    """In-place edits that bump the version counter (torch.no_grad() add_, copy_, item assignment, mul_ of a
    bias) after a first call: the next call gives exactly what a fresh network with the new weights gives."""
    net = _random_net(5, Activation("leaky_relu", negative_slope=0.1))
    x = torch.tensor([[0.2, 0.1]], dtype=torch.float64)
    target = torch.tensor([1])
    margin_lower_bounds(net, x, target, 0.3, math.inf)
    with torch.no_grad():
        if edit == "add_":
            net.weights[1].add_(torch.ones_like(net.weights[1]))
        elif edit == "copy_":
            net.weights[0].copy_(-3.0 * net.weights[0])
        elif edit == "index":
            net.weights[2][0, :] = 10.0
        else:
            net.biases[0].mul_(-4.0)
    value = margin_lower_bounds(net, x, target, 0.3, math.inf).value
    fresh = AffineNetwork([w.clone() for w in net.weights], [b.clone() for b in net.biases], net.activations, (2,))
    assert torch.equal(value, margin_lower_bounds(fresh, x, target, 0.3, math.inf).value)
    assert (value[0] <= _grid_margins(net, x, 0.3, 1, math.inf)).all()


@pytest.mark.parametrize("act", [Activation("relu"), Activation("leaky_relu", negative_slope=0.2)])
@pytest.mark.parametrize("slopes", ["parallel", "adaptive"])
def test_batches_split_into_several_row_groups_stay_below_the_margins(act, slopes, monkeypatch):
    """A batch whose examples leave very different numbers of units unstable (eps from 0 to 1) is bounded in
    several row groups (GROUP_WORK lowered so that each level of unstable counts is its own group, each with
    its own sub-batch and no shared facts): every margin stays below the network's on a grid of its box, with
    mixed targets."""
    monkeypatch.setattr(crown, "GROUP_WORK", 1)
    groups: list[int] = []
    row_groups = crown._row_groups
    monkeypatch.setattr(crown, "_row_groups", lambda counts, size: groups.append(len(row_groups(counts, size)))
                        or row_groups(counts, size))
    gen = torch.Generator().manual_seed(1)
    sizes = (2, 32, 32, 32, 3)
    weights = [torch.randn(b, a, dtype=torch.float64, generator=gen) * 1.5 / math.sqrt(a)
               for a, b in zip(sizes, sizes[1:])]
    biases = [torch.randn(b, dtype=torch.float64, generator=gen) * 0.3 for b in sizes[1:]]
    net = AffineNetwork(weights, biases, [act] * 3, (2,))
    x = torch.rand(16, 2, dtype=torch.float64, generator=gen) * 2 - 1
    eps = 10.0 ** (torch.rand(16, dtype=torch.float64, generator=gen) * 4 - 4)
    eps[::5] = 0.0
    target = torch.randint(0, 3, (16,), generator=gen)
    value = margin_lower_bounds(net, x, target, eps, math.inf, slopes=slopes).value
    assert max(groups) > 1
    for i in range(16):
        assert (value[i] <= _grid_margins(net, x[i : i + 1], float(eps[i]), int(target[i]), math.inf, m=15)).all()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("p", [math.inf, 2, 1])
def test_certified_radii_hold_on_a_dense_grid_of_their_ball(seed, p):
    """Radii of a batch with mixed targets (one example misclassified: radius 0), on chains and a skip graph
    of ReLU, leaky ReLU and softplus units, with a domain box: the target wins strictly at every grid point of
    the certified ball."""
    act = [Activation("relu"), Activation("leaky_relu", negative_slope=2.0), Activation("softplus", beta=3.0)][seed]
    net = _random_net(seed, act, skips=seed == 0)
    domain = (torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    x = torch.rand(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    target = net.forward(x).argmax(1)
    target[3] = (target[3] + 1) % 3
    radius = certified_radius(net, x, target, p, domain=domain, tol=1e-5, max_radius=2.0).value
    assert radius[3] == 0 and (radius[:3] > 0).any()
    for i in range(3):
        if radius[i] > 0:
            margins = _grid_margins(net, x[i : i + 1], float(radius[i]), int(target[i]), p, domain, m=61)
            assert (margins > 0).all()


@pytest.mark.parametrize("p", [math.inf, 2])
def test_float32_inputs_are_bounded_as_their_float64_values(p):
    net = _random_net(2, Activation("sigmoid"))
    x = torch.tensor([[0.3, 0.7], [0.9, 0.1]], dtype=torch.float32)
    target = torch.tensor([0, 1])
    for slopes in ("parallel", "adaptive"):
        assert torch.equal(margin_lower_bounds(net, x, target, 0.25, p, slopes=slopes).value,
                           margin_lower_bounds(net, x.double(), target, 0.25, p, slopes=slopes).value)
