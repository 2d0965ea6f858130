"""Our linear bound with Wong-Kolter's fixed slopes equals convex-adversarial 0.4.4's dual network bound."""
import pytest
import torch
from convex_adversarial import DualNetwork

from certify.bounds.crown import backward_lower_bound, layer_bounds, margin_spec
from certify.bounds.network import from_module
from certify.bounds.sets import InputSet
from proofs_checks.nets import NetSpec


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("p, norm_type", [("inf", "l1"), (2, "l2")])
def test_parallel_slope_bound_equals_dual_network(seed, p, norm_type):
    model = NetSpec(6, (12, 10), 3, "relu", 1.0, 3.0, seed).build()
    net = from_module(model, (6,))
    x = torch.rand(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    target = net.forward(x).argmax(1)
    s = InputSet.build(x, 0.07, p)
    boxes, relaxations = layer_bounds(net, s, "crown", slopes="parallel", intersect_ibp=False)
    spec = margin_spec(target, 3)
    ours = backward_lower_bound(net, s, net.depth - 1, spec, relaxations, boxes)
    theirs = DualNetwork(model, x, 0.07, norm_type=norm_type)(spec)
    unstable = sum(((lo < 0) & (hi > 0)).sum() for lo, hi in boxes)
    assert unstable > 0  # the slopes matter in this case
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=0)
    assert (ours <= theirs).all()  # our rounding margins only lower it
