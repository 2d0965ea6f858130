import math
import sys
from pathlib import Path

import pytest
import torch

from certify.bounds.activations import default_alpha, relax
from certify.bounds.crown import backward_lower_bound, layer_bounds, margin_lower_bounds
from certify.bounds.ibp import interval_bounds
from certify.bounds.activations import Activation
from certify.bounds.network import AffineNetwork, from_module
from certify.bounds.results import Kind
from certify.bounds.sets import InputSet, sample_ball
from certify.errors import TargetError, UsageError
from certify.models import zoo
from proofs_checks.nets import NetSpec

DOMAIN = (torch.zeros(6, dtype=torch.float64), torch.ones(6, dtype=torch.float64))


def _net(act: str, seed: int = 0):
    return from_module(NetSpec(6, (12, 12), 3, act, 2.0 if act == "softplus" else 1.0, 3.0, seed).build(), (6,))


def _sampled_min_margins(net, x, target, eps, p, count=5000):
    torch.manual_seed(1)
    d = torch.randn(count, *x.shape, dtype=torch.float64)
    if p == math.inf:
        d = d.sign() * torch.rand_like(d).pow(0.1) * eps
    else:
        d = d / torch.linalg.vector_norm(d, ord=p, dim=-1, keepdim=True) * eps
    out = net.forward((x + d).clamp(0, 1).reshape(-1, x.shape[1])).reshape(count, x.shape[0], -1)
    return (out.gather(2, target[None, :, None].expand(count, -1, 1)) - out).min(0).values


@pytest.mark.parametrize("act", ["relu", "softplus"])
@pytest.mark.parametrize("p", [1, 2, math.inf])
def test_margin_bounds_are_below_sampled_margins_and_crown_beats_ibp(act, p):
    net = _net(act)
    x = 0.3 + 0.4 * torch.rand(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    target = net.forward(x).argmax(1)
    sampled = _sampled_min_margins(net, x, target, 0.08, p)
    crown = margin_lower_bounds(net, x, target, 0.08, p, DOMAIN, "crown")
    ibp = margin_lower_bounds(net, x, target, 0.08, p, DOMAIN, "ibp")
    assert crown.kind is Kind.CERTIFIED and crown.value.dtype == torch.float64
    off = torch.isfinite(crown.value)
    assert off.sum() == 4 * 2 and torch.isinf(crown.value.gather(1, target[:, None])).all()
    assert (crown.value[off] <= sampled[off]).all() and (ibp.value[off] <= sampled[off]).all()
    assert crown.value[off].mean() > ibp.value[off].mean()


def test_witness_reruns_one_backward_pass_to_the_same_bound():
    net = _net("relu")
    x = torch.full((2, 6), 0.5, dtype=torch.float64)
    target = torch.tensor([0, 1])
    result = margin_lower_bounds(net, x, target, 0.05, math.inf)
    w = result.witness
    again = backward_lower_bound(net, InputSet.build(x, 0.05, "inf"), net.depth - 1, w["spec"], w["relaxations"], w["boxes"])
    finite = torch.isfinite(result.value)
    # the per-row slopes of the winning rule re-derive each margin (up to the rounding of differently shaped
    # products: the bound came from one pass over both rules' rows)
    assert torch.allclose(again[finite], result.value[finite], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["relu", "softplus"])
def test_relaxation_lines_enclose_the_activation(name):
    act = Activation(name, 1.5)
    lower = torch.tensor([-3.0, -1.0, 0.5, -2.0, 1e-9], dtype=torch.float64)
    upper = torch.tensor([2.0, -0.2, 4.0, 30.0, 2e-9], dtype=torch.float64)
    for alpha in (None, torch.full_like(lower, 0.0), torch.full_like(lower, 1.0)):
        rel = relax(act, lower, upper, alpha)
        z = lower + (upper - lower) * torch.linspace(0, 1, 1001, dtype=torch.float64)[:, None]
        value = act(z)
        assert (rel.lower_slope * z + rel.lower_intercept <= value).all()
        assert (rel.upper_slope * z + rel.upper_intercept >= value).all()


def test_intermediate_boxes_contain_sampled_pre_activations():
    net = _net("softplus", 3)
    x = torch.rand(2, 6, dtype=torch.float64)
    s = InputSet.build(x, 0.2, 2)
    boxes, _ = layer_bounds(net, s, "crown")
    d = torch.randn(3000, 2, 6, dtype=torch.float64)
    d = d / d.norm(dim=-1, keepdim=True) * 0.2
    zs = net.pre_activations((x + d).reshape(-1, 6))
    for (lo, hi), z in zip(boxes, zs):
        z = z.reshape(3000, 2, -1)
        assert (z >= lo).all() and (z <= hi).all()
    ibp_boxes = interval_bounds(net, s)
    assert all((lo >= ilo).all() for (lo, _), (ilo, _) in zip(boxes, ibp_boxes))


def test_cnn_from_the_zoo_is_bounded_soundly():
    model, data = zoo.load("digits-relu-cnn")
    net = from_module(model, data.input_shape)
    x = data.x_test[:2]
    target = data.y_test[:2]
    result = margin_lower_bounds(net, x, target, 0.01, "inf", (data.domain_lo, data.domain_hi))
    margins = net.forward(x.reshape(2, -1).double())
    exact = margins.gather(1, target[:, None]) - margins
    finite = torch.isfinite(result.value)
    assert (result.value[finite] <= exact[finite]).all()


def test_bad_arguments_raise_named_errors():
    net = _net("relu")
    x = torch.rand(2, 6)
    with pytest.raises(UsageError, match="method"):
        margin_lower_bounds(net, x, torch.tensor([0, 1]), 0.1, 2, method="alpha")
    with pytest.raises(UsageError, match="norm"):
        margin_lower_bounds(net, x, torch.tensor([0, 1]), 0.1, 3)
    with pytest.raises(TargetError):
        margin_lower_bounds(net, x, torch.tensor([0, 7]), 0.1, 2)


# ----------------------------------------------------------------------------------- graphs with skips

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from graph_networks import (  # noqa: E402
    GRAPH_MODELS, exact_piecewise_min, margin_rows, pgd_min, reference_logits, sampled_min, skip_network, translated)

HAND_BUILT = {
    "skip-relu": lambda: skip_network(Activation("relu")),
    "skip-softplus": lambda: skip_network(Activation("softplus", 2.0), seed=1, scale=1.5),
    "skip-only-relu": lambda: skip_network(Activation("relu"), seed=2, reads_only_skips=True),
}


def _graph_case(name: str):
    """(net, inputs [3, n]) for a hand-built skip network or a translated model of tests/graph_models.py."""
    if name in HAND_BUILT:
        net = HAND_BUILT[name]()
        return net, torch.randn(3, net.input_size, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    net, shape = translated(name)
    x = torch.randn(3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    return net, x.reshape(3, -1)


@pytest.mark.parametrize("name", [*HAND_BUILT, *GRAPH_MODELS])
def test_graph_margin_bounds_lie_below_sampled_and_attacked_margins(name):
    net, x = _graph_case(name)
    target = net.forward(x).argmax(1)
    rows = margin_rows(target, net.num_classes)
    off = rows.abs().sum(-1) > 0
    tighter = total = 0
    for eps, p in ((0.01, math.inf), (0.05, 2), (0.2, math.inf), (0.5, 2)):
        observed = torch.minimum(sampled_min(net, x, rows, eps, p, count=500), pgd_min(net, x, rows, eps, p, steps=10))
        crown = margin_lower_bounds(net, x, target, eps, p, method="crown").value
        ibp = margin_lower_bounds(net, x, target, eps, p, method="ibp").value
        assert (crown[off] <= observed[off]).all(), (eps, p, (crown - observed)[off].max())
        assert (ibp[off] <= observed[off]).all(), (eps, p, (ibp - observed)[off].max())
        tighter += int((crown[off] >= ibp[off]).sum())
        total += int(off.sum())
    assert tighter >= 0.9 * total


def test_graph_backward_pass_is_substituted_through_every_skip():
    """A change of one skip matrix changes CROWN's bound at eps = 0, which equals the exact margins there."""
    net = skip_network(Activation("relu"))
    x = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 1])
    exact = margin_rows(target, 3) @ reference_logits(net, x)[:, :, None]
    bound = margin_lower_bounds(net, x, target, 0.0, 2).value
    off = torch.isfinite(bound)
    assert torch.allclose(bound[off], exact[..., 0][off], atol=1e-12)
    assert (bound[off] <= exact[..., 0][off]).all()


@pytest.mark.parametrize("only_skips", [False, True])
def test_relu_graph_bounds_on_tiny_boxes_against_exact_pattern_enumeration(only_skips):
    net = skip_network(Activation("relu"), seed=3, sizes=(2, 4, 3, 3), reads_only_skips=only_skips)
    g = torch.Generator().manual_seed(7)
    for _ in range(2):
        x = torch.randn(1, 2, dtype=torch.float64, generator=g)
        target = net.forward(x).argmax(1)
        rows = margin_rows(target, 3)
        for eps in (1e-3, 0.05, 0.4):
            crown = margin_lower_bounds(net, x, target, eps, math.inf).value[0]
            ibp = margin_lower_bounds(net, x, target, eps, math.inf, method="ibp").value[0]
            lo, hi = InputSet.build(x, eps, math.inf).box()
            sampled = sampled_min(net, x, rows, eps, math.inf, count=400)[0]
            for j in range(3):
                if j == int(target):
                    continue
                exact = exact_piecewise_min(net, rows[0, j], lo[0], hi[0])
                assert exact <= sampled[j] + 1e-9  # the enumeration is exact: nothing sampled lies below it
                assert crown[j] <= exact + 1e-9 and ibp[j] <= exact + 1e-9
                if eps == 1e-3:  # a tiny box: the relaxation is nearly exact
                    assert exact - crown[j] < 1e-2


def test_graph_intermediate_boxes_contain_sampled_pre_activations_and_beat_ibp():
    net = skip_network(Activation("softplus", 2.0), seed=4)
    x = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    s = InputSet.build(x, 0.3, 2)
    boxes, _ = layer_bounds(net, s, "crown")
    ibp_boxes = interval_bounds(net, s)
    points = sample_ball(x, 0.3, 2, 2000, torch.Generator().manual_seed(2))
    zs = net.pre_activations(points)
    for (lo, hi), (ilo, ihi), z in zip(boxes, ibp_boxes, zs):
        z = z.reshape(2, 2000, -1)
        assert (z >= lo[:, None]).all() and (z <= hi[:, None]).all()
        assert (lo >= ilo).all() and (hi <= ihi).all()


def test_graph_layer_terms_shift_the_objective_soundly():
    """backward_lower_bound with split multipliers t_k . z_k on a graph stays below the sampled objective."""
    net = skip_network(Activation("relu"), seed=5)
    x = torch.randn(1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    s = InputSet.build(x, 0.2, math.inf)
    boxes, rels = layer_bounds(net, s)
    g = torch.Generator().manual_seed(6)
    coeffs = torch.randn(1, 2, 3, dtype=torch.float64, generator=g)
    terms = {0: torch.randn(1, 2, 6, dtype=torch.float64, generator=g), 1: torch.randn(1, 2, 5, dtype=torch.float64, generator=g)}
    bound = backward_lower_bound(net, s, 2, coeffs, rels, boxes, layer_terms=terms)
    points = sample_ball(x, 0.2, math.inf, 3000, g)
    zs = net.pre_activations(points)
    objective = zs[2] @ coeffs[0].T + zs[0] @ terms[0][0].T + zs[1] @ terms[1][0].T
    assert (bound[0] <= objective.min(0).values).all()


class _TinyPool(torch.nn.Module):
    """x [N, 2] -> relu(A x) viewed as [N, 1, 4] -> max-pool by 2 (one ReLU tournament layer) -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.head = torch.nn.Linear(2, 4), torch.nn.Linear(2, 3)

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = torch.nn.functional.max_pool1d(torch.relu(self.a(x)).view(-1, 1, 4), 2)
        return self.head(h.flatten(1))


class _TinyResidual(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = torch.nn.Linear(2, 3), torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = torch.relu(self.a(x))
        return self.head(torch.relu(self.b(h)) + h)  # the head reads h_2 and, through a skip, h_1


@pytest.mark.parametrize("build", [_TinyPool, _TinyResidual])
def test_translated_tiny_relu_graphs_against_exact_pattern_enumeration(build):
    """End to end from torch modules (max-pool as a ReLU tournament, a residual add): CROWN and IBP lie below
    the exact minimum over the box, which lies below every sampled margin."""
    torch.manual_seed(4)
    model = build().double().eval()
    net = from_module(model, (2,))
    assert not net.is_chain
    g = torch.Generator().manual_seed(9)
    for _ in range(2):
        x = torch.randn(1, 2, dtype=torch.float64, generator=g)
        target = net.forward(x).argmax(1)
        rows = margin_rows(target, 3)
        for eps in (1e-3, 0.3):
            crown = margin_lower_bounds(net, x, target, eps, math.inf).value[0]
            ibp = margin_lower_bounds(net, x, target, eps, math.inf, method="ibp").value[0]
            lo, hi = InputSet.build(x, eps, math.inf).box()
            sampled = (rows[0] @ model(sample_ball(x, eps, math.inf, 400, g)).T.detach()).amin(-1)
            for j in range(3):
                if j != int(target):
                    exact = exact_piecewise_min(net, rows[0, j], lo[0], hi[0])
                    assert crown[j] <= exact + 1e-9 and ibp[j] <= exact + 1e-9 and exact <= sampled[j] + 1e-9


# ------------------------------------------------- the screened boxes against the full [+I, -I] back-substitution

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from proofs_checks.nets import net_specs  # noqa: E402


def _full_row_boxes(net, input_set, slopes="adaptive"):
    """Reference: every layer's box from all 2 n_k rows +-e_u, intersected with the interval box (the path
    before the screening by interval stability), with the lower slopes of the rule `slopes`."""
    ibp = interval_bounds(net, input_set)[:-1]
    boxes, relaxations = [], []
    for k, act in enumerate(net.activations):
        width = net.weights[k].shape[0]
        eye = torch.eye(width, dtype=torch.float64).expand(input_set.center.shape[0], width, width)
        bound = backward_lower_bound(net, input_set, k, torch.cat([eye, -eye], 1), relaxations, boxes)
        box = (torch.maximum(ibp[k][0], bound[:, :width]), torch.minimum(ibp[k][1], -bound[:, width:]))
        boxes.append(box)
        relaxations.append(relax(act, *box, alpha=default_alpha(act, *box, rule=slopes)))
    return boxes, relaxations


@settings(max_examples=40, deadline=None)
@given(net_specs(act="relu", max_depth=3), st.floats(0.005, 0.3), st.sampled_from([1, 2, math.inf]),
       st.integers(0, 2**16))
def test_screened_boxes_and_margins_match_all_rows_and_hold_on_samples(spec, eps, p, seed):
    net = from_module(spec.build(), (spec.inputs,))
    x = torch.rand(3, spec.inputs, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    s = InputSet.build(x, eps, p)
    boxes, relaxations = layer_bounds(net, s, "crown", slopes="parallel", screen=True)
    ref_boxes, ref_relaxations = _full_row_boxes(net, s, "parallel")
    unscreened, _ = layer_bounds(net, s, "crown")
    adaptive_boxes, _ = _full_row_boxes(net, s)
    # the same bounds up to rounding (the parallel slopes bound both sides of a unit in one pass, with the
    # input set's support in midpoint-radius form)
    assert all(torch.allclose(a, b, rtol=1e-12, atol=1e-12) for box, ref in zip(unscreened, adaptive_boxes)
               for a, b in zip(box, ref))
    for (lo, hi), (rlo, rhi), (ilo, ihi) in zip(boxes, ref_boxes, interval_bounds(net, s)):
        assert torch.equal((lo < 0) & (hi > 0), (rlo < 0) & (rhi > 0))  # the same relaxation on every unit
        screened = (ilo >= 0) | (ihi <= 0)  # stable in the interval box: that box or (a padding row) a tighter one
        assert (lo[screened] >= ilo[screened]).all() and (hi[screened] <= ihi[screened]).all()
        slack = 1e-9 * (1 + rlo.abs() + rhi.abs())
        assert (lo <= rlo + slack)[screened].all() and (hi >= rhi - slack)[screened].all()
        assert torch.allclose(lo[~screened], rlo[~screened], rtol=1e-9, atol=1e-12)
        assert torch.allclose(hi[~screened], rhi[~screened], rtol=1e-9, atol=1e-12)
    target = net.forward(x).argmax(1)
    result = margin_lower_bounds(net, x, target, eps, p)
    spec_rows = result.witness["spec"]
    reference = backward_lower_bound(net, s, net.depth - 1, spec_rows, ref_relaxations, ref_boxes)
    adaptive = [relax(act, *box) for act, box in zip(net.activations, ref_boxes)]
    reference = torch.maximum(reference, backward_lower_bound(net, s, net.depth - 1, spec_rows, adaptive, ref_boxes))
    off = torch.isfinite(result.value)
    assert torch.allclose(result.value[off], reference[off], rtol=1e-9, atol=1e-12)
    points = sample_ball(x, eps, p, 400, torch.Generator().manual_seed(seed))
    logits = net.forward(points).reshape(3, 400, -1)
    margins = (logits.gather(2, target[:, None, None].expand(-1, 400, 1)) - logits).amin(1)
    assert (result.value[off] <= margins[off]).all()


def _exact_relaxation_bound(net, input_set, rows, relaxations):
    """The back-substitution bound of rows [m, n_L] . z_L with the given lines (one example), in exact rational
    arithmetic (`exact_crown.exact_pass`), plus the exact minimum of the input term over the set's box."""
    from exact_crown import exact, exact_pass, smaller

    value, lam = exact_pass(net, net.depth - 1, rows.numpy(), relaxations, 0)
    lower, upper = (exact(b[0].numpy()) for b in input_set.box())
    return value + smaller(lam * lower, lam * upper).sum(axis=1)


def _wide_range(shape, gen):
    return torch.randn(shape, generator=gen, dtype=torch.float64) * 10.0 ** torch.randint(-8, 9, shape, generator=gen)


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("graph", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_rounding_margins_keep_the_bound_below_its_exact_rational_value(seed, graph, compact, monkeypatch):
    """Weights spanning 16 orders of magnitude (cancellation in every product), on a chain and on a graph with
    skips (z_1 reads x, z_2 reads h_1 and x): the float64 bound must stay below the exact value of the same
    relaxation bound, which the rounding analysis promises (and within 1e-6 relative of it); so must both
    halves of the mirrored pass with the parallel slopes (rows and their negation from one chain), with the
    products restricted to live columns wherever any column is dead (`compact`) or never."""
    import certify.bounds.crown as crown

    if compact:
        monkeypatch.setattr(crown, "LIVE_MIN_ENTRIES", 0)
        monkeypatch.setattr(crown, "LIVE_GAIN", 0)
    gen = torch.Generator().manual_seed(seed)
    weights = [_wide_range((7, 4), gen), _wide_range((6, 7), gen), _wide_range((3, 6), gen)]
    biases = [_wide_range((m,), gen) for m in (7, 6, 3)]
    skips = {}
    if graph:
        skips = {1: {0: _wide_range((6, 4), gen)}, 2: {1: _wide_range((3, 7), gen), 0: _wide_range((3, 4), gen)}}
    net = AffineNetwork(weights, biases, [Activation("relu"), Activation("relu")], (4,), skips=skips)
    x = torch.rand(1, 4, dtype=torch.float64, generator=gen)
    s = InputSet.build(x, 0.1, "inf")
    boxes, relaxations = layer_bounds(net, s, "crown", screen=True)
    rows = torch.randn(1, 5, 3, dtype=torch.float64, generator=gen)
    ours = backward_lower_bound(net, s, net.depth - 1, rows, relaxations, boxes)[0]
    exact = _exact_relaxation_bound(net, s, rows[0], relaxations)
    assert all(float(o) <= e for o, e in zip(ours, exact))
    assert all(abs(float(o) - float(e)) <= 1e-6 * (1 + abs(float(e))) for o, e in zip(ours, exact))
    boxes, parallel = layer_bounds(net, s, "crown", slopes="parallel", screen=True)
    both = backward_lower_bound(net, s, net.depth - 1, rows, parallel, boxes, mirrored=True)[0]
    exact = list(_exact_relaxation_bound(net, s, rows[0], parallel)) + list(
        _exact_relaxation_bound(net, s, -rows[0], parallel))
    assert all(float(o) <= e for o, e in zip(both, exact))
    assert all(abs(float(o) - float(e)) <= 1e-6 * (1 + abs(float(e))) for o, e in zip(both, exact))
