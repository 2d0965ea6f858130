import math

import pytest
import torch

from certify.bounds.activations import relax
from certify.bounds.crown import backward_lower_bound, layer_bounds, margin_lower_bounds
from certify.bounds.ibp import interval_bounds
from certify.bounds.activations import Activation
from certify.bounds.network import from_module
from certify.bounds.results import Kind
from certify.bounds.sets import InputSet
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
    assert torch.equal(again[finite], result.value[finite])


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
