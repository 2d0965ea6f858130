"""The shortcuts that cut CROWN's fixed per-call cost (issue 18) compute the same numbers as the work they
replace: the adaptive relaxation derived from the parallel one, |W| kept per tensor, interval boxes of the
hidden layers only, one group when the whole batch fits, and the facts that the passes of one call share."""
import math

import pytest
import torch

import certify.bounds.crown as crown
from certify.bounds.activations import Activation, default_alpha, relax, relax_with_alpha
from certify.bounds.crown import backward_lower_bound, layer_bounds, margin_bounds_on_set, margin_spec
from certify.bounds.ibp import interval_bounds
from certify.bounds.network import from_module
from certify.bounds.sets import InputSet
from proofs_checks.nets import NetSpec

FIELDS = ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept")


def _boxes(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes [6, 40] with unstable, stable, flat and degenerate units (l = u, l = 0, u = 0)."""
    gen = torch.Generator().manual_seed(seed)
    lower = torch.randn(6, 40, dtype=torch.float64, generator=gen)
    upper = lower + torch.rand(6, 40, dtype=torch.float64, generator=gen) * 2
    lower[0, :4] = -1e-15
    upper[0, :8] = lower[0, :8] + 1e-14  # flat boxes, the first four across 0
    lower[1, :5], upper[1, 5:10] = 0.0, 0.0
    upper[2, :5] = lower[2, :5]
    return lower, upper


@pytest.mark.parametrize("act", [Activation("relu"), Activation("leaky_relu", negative_slope=0.2),
                                 Activation("softplus", beta=2.0), Activation("sigmoid")])
@pytest.mark.parametrize("seed", [0, 1])
def test_relax_with_alpha_is_relax_with_that_alpha(act, seed):
    lower, upper = _boxes(seed)
    parallel = relax(act, lower, upper, alpha=default_alpha(act, lower, upper, rule="parallel"))
    for alpha in (default_alpha(act, lower, upper, rule="adaptive"),
                  torch.rand(lower.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))):
        again, fresh = relax_with_alpha(act, parallel, lower, upper, alpha), relax(act, lower, upper, alpha=alpha)
        assert all(torch.equal(getattr(again, f), getattr(fresh, f)) for f in FIELDS)
    if act.name == "relu":  # the upper chord and the lower intercept are reused, not recomputed
        assert again.upper_slope is parallel.upper_slope and again.upper_intercept is parallel.upper_intercept
        assert again.lower_intercept is parallel.lower_intercept


@pytest.mark.parametrize("seed", [0, 1])
def test_relu_slopes_are_exact_on_stable_and_flat_boxes_and_the_chord_elsewhere(seed):
    lower, upper = _boxes(seed)
    alpha = torch.rand(lower.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    rel = relax(Activation("relu"), lower, upper, alpha=alpha)
    on, off = lower >= 0, upper <= 0
    flat = (upper - lower) <= 1e-12 * (1 + upper.abs())
    assert flat[0, :8].all() and not (on | off)[0, :4].any()  # the cases are all there
    chord = (upper.clamp(min=0) - lower.clamp(min=0)) / (upper - lower).masked_fill(flat, 1.0)
    one, zero = torch.ones_like(lower), torch.zeros_like(lower)
    assert torch.equal(rel.upper_slope, torch.where(on, one, torch.where(off, zero, torch.where(flat, one, chord))))
    assert torch.equal(rel.lower_slope, torch.where(on, one, torch.where(off, zero, alpha)))
    assert torch.equal(rel.lower_intercept, zero)


def _case(seed: int, p, eps: float, widths=(16, 12, 10)):
    net = from_module(NetSpec(6, widths, 4, "relu", 1.0, 3.0, seed).build(), (6,))
    x = torch.rand(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return net, x, InputSet.build(x, eps, p)


def test_interval_bounds_of_the_first_layers_are_those_of_all_layers():
    net, _, s = _case(0, math.inf, 0.1)
    full = interval_bounds(net, s)
    for layers in range(1, net.depth + 1):
        part = interval_bounds(net, s, layers=layers)
        assert len(part) == layers
        assert all(torch.equal(a, b) for box, ref in zip(part, full) for a, b in zip(box, ref))


@pytest.mark.parametrize("seed", range(20))
def test_row_groups_partition_the_examples_with_unstable_units(seed):
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(0 if seed % 2 else 1, 300, (int(torch.randint(1, 40, (1,), generator=gen)),), generator=gen)
    size = int(torch.randint(1, 2000, (1,), generator=gen))
    groups = crown._row_groups(counts, size)
    members = torch.cat(groups).sort().values if groups else torch.zeros(0, dtype=torch.long)
    assert torch.equal(members, torch.nonzero(counts > 0).reshape(-1))
    top = 1 << (int(counts.max()) - 1).bit_length()
    if bool((counts > 0).all()) and counts.numel() * top * size < crown.GROUP_WORK:
        assert len(groups) == 1  # what the grouping by level finds too: no group reaches GROUP_WORK


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("p", [math.inf, 2])
@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_margins_with_shared_facts_are_those_of_separate_passes(seed, p, eps):
    """margin_bounds_on_set shares the input box, the reaches, the charges and the widened intercepts between
    its passes; separate passes that share nothing give bit-identical boxes and margins."""
    net, x, s = _case(seed, p, eps)
    target = net.forward(x).argmax(1)
    value, witness = margin_bounds_on_set(net, s, target)
    boxes, relaxations = layer_bounds(net, s, "crown", slopes="parallel", screen=True)
    assert all(torch.equal(a, b) for box, ref in zip(witness["boxes"], boxes) for a, b in zip(box, ref))
    spec = margin_spec(target, net.num_classes)
    adaptive = [relax(a, *b, alpha=default_alpha(a, *b)) for a, b in zip(net.activations, boxes)]
    rows = spec.shape[1]
    both = [crown.Relaxation(*(crown._stacked(getattr(r, f), getattr(q, f), rows) for f in FIELDS))
            for r, q in zip(relaxations, adaptive)]
    separate = backward_lower_bound(net, s, net.depth - 1, torch.cat([spec, spec], 1), both, boxes)
    expected = torch.maximum(separate[:, :rows], separate[:, rows:])
    off = spec.abs().sum(-1) > 0
    assert torch.equal(value[off], expected[off])


def test_a_network_is_a_snapshot_of_the_model():
    """from_module copies the model's tensors: a float64 model's weights changed through `.data` (which bumps no
    version counter) after a network was built and bounded leave that network as it was; a network built
    afterwards sees the new weights."""
    import torch
    from torch import nn

    from certify.bounds.crown import margin_lower_bounds
    from certify.bounds.network import from_module

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).double().eval()
    x = torch.zeros(1, 3, dtype=torch.float64)
    net = from_module(model, (3,))
    before = margin_lower_bounds(net, x, torch.tensor([0]), 0.1, "inf").value.clone()
    model[0].weight.data.mul_(-3.0)
    again = margin_lower_bounds(net, x, torch.tensor([0]), 0.1, "inf").value
    assert torch.equal(before, again)
    fresh = from_module(model, (3,))
    assert torch.equal(fresh.weights[0], model[0].weight.detach()) and not torch.equal(fresh.weights[0], net.weights[0])


def test_margins_that_overflow_float64_are_minus_infinity_never_nan():
    """Weights near 1e160 make the float64 products overflow (inf - inf): a margin bound that proves nothing is
    -inf (valid), never NaN (which a caller could not compare, yet would show as a certified number)."""
    import math

    import torch

    from certify.bounds.activations import Activation
    from certify.bounds.crown import margin_lower_bounds
    from certify.bounds.network import AffineNetwork

    w1 = torch.tensor([[1e160, -1e160], [-1e160, 1e160]], dtype=torch.float64)
    w2 = torch.tensor([[1e160, 1e160], [-1e160, -1e160]], dtype=torch.float64)
    net = AffineNetwork([w1, w2], [torch.zeros(2, dtype=torch.float64)] * 2, [Activation("relu")], (2,))
    value = margin_lower_bounds(net, torch.tensor([[1.0, 0.5]], dtype=torch.float64), torch.tensor([0]), 1.0, "inf").value
    assert not torch.isnan(value).any() and value[0, 1] == -math.inf and value[0, 0] == math.inf


@pytest.mark.parametrize("mirrored", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_pass_never_writes_to_its_inputs(mirrored, seed):
    """backward_lower_bound forms the relaxed coefficients in place, in tensors of its own: the caller's
    coefficients, split terms, lines and boxes are bit-identical after the pass, and a second pass on them gives
    the same bounds."""
    net, x, s = _case(seed, math.inf, 0.3)
    boxes, relaxations = layer_bounds(net, s, "crown", slopes="parallel")
    gen = torch.Generator().manual_seed(seed)
    top = net.depth - 1
    coeffs = torch.randn(5, 7, net.weights[top].shape[0], dtype=torch.float64, generator=gen)
    terms = {1: torch.randn(5, 7, net.weights[1].shape[0], dtype=torch.float64, generator=gen)}
    inputs = [coeffs, *terms.values(), *(getattr(r, f) for r in relaxations for f in FIELDS),
              *(t for box in boxes for t in box)]
    before = [t.clone() for t in inputs]
    first = backward_lower_bound(net, s, top, coeffs, relaxations, boxes, layer_terms=terms, mirrored=mirrored)
    assert all(torch.equal(t, kept) for t, kept in zip(inputs, before))
    again = backward_lower_bound(net, s, top, coeffs, relaxations, boxes, layer_terms=terms, mirrored=mirrored)
    assert torch.equal(first, again) and first.shape == (5, 14 if mirrored else 7)


def test_the_charge_of_per_row_slopes_covers_every_row():
    """_relaxation_charge takes slopes given per row at their largest size over the rows: per unit, never below
    the charge of any row's own slopes (signs, zeros and NaN included)."""
    gen = torch.Generator().manual_seed(3)
    lower = torch.randn(4, 6, 9, dtype=torch.float64, generator=gen)
    lower[0, :, 0], lower[1, 2, 3] = 0.0, math.nan
    upper = torch.randn(4, 9, dtype=torch.float64, generator=gen)
    icpt = torch.randn(4, 9, dtype=torch.float64, generator=gen)
    below = torch.rand(4, 9, dtype=torch.float64, generator=gen)
    rel = crown.Relaxation(lower, icpt, upper, icpt)
    charge = crown._relaxation_charge(rel, icpt, icpt, below)
    assert charge.shape == (4, 9)
    per_row = 2 * icpt.abs().unsqueeze(1) + torch.maximum(lower.abs(), upper.abs().unsqueeze(1)) * below.unsqueeze(1)
    assert torch.isnan(charge[1, 3]) and int(torch.isnan(charge).sum()) == 1  # NaN in one row: NaN for the unit
    kept = ~torch.isnan(charge)
    assert bool((charge.unsqueeze(1) >= per_row).all(1)[kept].all())
    assert torch.equal(charge[kept], per_row.amax(1)[kept])  # the largest row's charge, no more
