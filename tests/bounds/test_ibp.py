"""certify.bounds.ibp: interval bound propagation is exact on one affine map over a box (up to its outward
rounding), sound against exact rational arithmetic and against dense sampling on tiny ReLU and softplus
networks (including torch's thresholded softplus), and monotone in eps."""
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from torch import nn

from certify.bounds.ibp import affine_interval, interval_bounds
from certify.bounds.activations import Activation
from certify.bounds.network import AffineNetwork
from certify.bounds.sets import InputSet, sample_ball

F64 = torch.float64


def _net(act: Activation | None, sizes=(3, 6, 5, 3), seed=0, scale=1.0) -> AffineNetwork:
    g = torch.Generator().manual_seed(seed)
    weights = [scale * torch.randn(o, i, generator=g, dtype=F64) / i**0.5 for i, o in zip(sizes[:-1], sizes[1:])]
    biases = [0.3 * torch.randn(o, generator=g, dtype=F64) for o in sizes[1:]]
    acts = [act] * (len(weights) - 1) if act is not None else []
    return AffineNetwork(weights, biases, acts, (sizes[0],))


def _torch_model(net: AffineNetwork) -> nn.Sequential:
    """The same network as torch runs it (thresholded softplus), in float64."""
    layers: list[nn.Module] = []
    for k, (w, b) in enumerate(zip(net.weights, net.biases)):
        lin = nn.Linear(w.shape[1], w.shape[0]).double()
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        layers.append(lin)
        if k < len(net.activations):
            a = net.activations[k]
            layers.append(nn.ReLU() if a.name == "relu" else nn.Softplus(beta=a.beta, threshold=a.threshold))
    return nn.Sequential(*layers).eval()


def _inside(values: torch.Tensor, box) -> bool:
    lo, hi = box
    return bool(((values >= lo) & (values <= hi)).all())


# ------------------------------------------------------------------------------------ one affine map


def test_affine_interval_is_the_exact_range_over_a_box_up_to_rounding():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 6, generator=g, dtype=F64)
    b = torch.randn(4, generator=g, dtype=F64)
    lower = torch.randn(2, 6, generator=g, dtype=F64)
    upper = lower + torch.rand(2, 6, generator=g, dtype=F64)
    lo, hi = affine_interval(w, b, lower, upper)
    # the minimiser takes the lower end where W_ij > 0 and the upper end elsewhere (a vertex of the box)
    arg_min = torch.where(w[None] > 0, lower[:, None, :], upper[:, None, :])  # [N, m, n]
    arg_max = torch.where(w[None] > 0, upper[:, None, :], lower[:, None, :])
    exact_lo = (arg_min * w).sum(-1) + b
    exact_hi = (arg_max * w).sum(-1) + b
    scale = (lower.abs() + upper.abs()) @ w.abs().T + b.abs()
    assert (lo <= exact_lo).all() and (hi >= exact_hi).all()
    assert ((exact_lo - lo) <= 1e-14 * scale).all() and ((hi - exact_hi) <= 1e-14 * scale).all()


def test_affine_interval_is_sound_in_exact_rational_arithmetic():
    """Magnitudes from 1e-3 to 1e3 and a far-off centre, so that float64 rounding matters: the rounded
    box still contains the exact (rational) range."""
    g = torch.Generator().manual_seed(2)
    w = torch.randn(5, 7, generator=g, dtype=F64) * 10.0 ** (6 * torch.rand(5, 7, generator=g, dtype=F64) - 3)
    b = torch.randn(5, generator=g, dtype=F64) * 1e3
    lower = 1e4 + torch.randn(3, 7, generator=g, dtype=F64)
    upper = lower + 1e-3 * torch.rand(3, 7, generator=g, dtype=F64)
    lo, hi = affine_interval(w, b, lower, upper)
    for n in range(3):
        for j in range(5):
            terms_lo = terms_hi = Fraction(b[j].item())
            for i in range(7):
                wij, l, u = Fraction(w[j, i].item()), Fraction(lower[n, i].item()), Fraction(upper[n, i].item())
                terms_lo += min(wij * l, wij * u)
                terms_hi += max(wij * l, wij * u)
            assert Fraction(lo[n, j].item()) <= terms_lo and Fraction(hi[n, j].item()) >= terms_hi


def test_per_example_weights_agree_with_a_shared_weight():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(4, 5, generator=g, dtype=F64)
    b = torch.randn(4, generator=g, dtype=F64)
    lower = torch.randn(3, 5, generator=g, dtype=F64)
    upper = lower + torch.rand(3, 5, generator=g, dtype=F64)
    shared = affine_interval(w, b, lower, upper)
    batched = affine_interval(w.expand(3, 4, 5), b.expand(3, 4), lower, upper)
    for s, t in zip(shared, batched):
        assert torch.allclose(s, t, rtol=1e-13, atol=1e-13)


def test_a_degenerate_box_gives_the_point_value():
    g = torch.Generator().manual_seed(4)
    w, b = torch.randn(3, 4, generator=g, dtype=F64), torch.randn(3, generator=g, dtype=F64)
    x = torch.randn(2, 4, generator=g, dtype=F64)
    lo, hi = affine_interval(w, b, x, x)
    value = x @ w.T + b
    assert (lo <= value).all() and (value <= hi).all()
    assert ((hi - lo) <= 1e-14 * (x.abs() @ w.abs().T + b.abs())).all()


@pytest.mark.parametrize("with_domain", [False, True])
def test_interval_bounds_are_exact_on_a_single_affine_layer(with_domain):
    """Depth 1 (no activation), L_inf ball (a box): the bound is the exact range, attained at a vertex."""
    net = _net(None, sizes=(5, 4))
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, 5, generator=g, dtype=F64)
    eps = 0.2
    domain = (torch.zeros(5, dtype=F64), torch.ones(5, dtype=F64)) if with_domain else None
    (box,) = interval_bounds(net, InputSet.build(x, eps, "inf", domain))
    w, b = net.weights[0], net.biases[0]
    lo_in, hi_in = x - eps, x + eps
    if with_domain:
        lo_in, hi_in = lo_in.clamp(0, 1), hi_in.clamp(0, 1)
    vertex_lo = torch.where(w[None] > 0, lo_in[:, None, :], hi_in[:, None, :])
    vertex_hi = torch.where(w[None] > 0, hi_in[:, None, :], lo_in[:, None, :])
    exact_lo, exact_hi = (vertex_lo * w).sum(-1) + b, (vertex_hi * w).sum(-1) + b
    assert (box[0] <= exact_lo).all() and (box[1] >= exact_hi).all()
    assert torch.allclose(box[0], exact_lo, rtol=0, atol=1e-12) and torch.allclose(box[1], exact_hi, rtol=0, atol=1e-12)


def test_a_margin_spec_is_bounded_through_the_merged_map():
    """With spec C the last box bounds C z_L over the box exactly (one affine layer), which is tighter
    than subtracting the logit boxes."""
    net = _net(None, sizes=(6, 3), seed=6)
    x = torch.rand(2, 6, generator=torch.Generator().manual_seed(6), dtype=F64)
    eps = 0.1
    spec = torch.tensor([[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]], dtype=F64).expand(2, 2, 3)
    (margins,) = interval_bounds(net, InputSet.build(x, eps, "inf"), spec)
    (logits,) = interval_bounds(net, InputSet.build(x, eps, "inf"))
    cw = spec[0] @ net.weights[0]
    cb = spec[0] @ net.biases[0]
    exact_lo = x @ cw.T + cb - eps * cw.abs().sum(1)
    assert margins[0].shape == (2, 2)
    assert (margins[0] <= exact_lo).all() and torch.allclose(margins[0], exact_lo, atol=1e-12, rtol=0)
    naive = torch.stack([logits[0][:, 0] - logits[1][:, 1], logits[0][:, 0] - logits[1][:, 2]], dim=1)
    assert (margins[0] > naive + 1e-6).all()


# ---------------------------------------------------------------------------------- deep networks

ACTIVATIONS = {
    "relu": Activation("relu"),
    "softplus": Activation("softplus", beta=2.0, threshold=20.0),
    "softplus-switching": Activation("softplus", beta=5.0, threshold=15.0),  # beta z > 15 happens below
}


def _samples(x: torch.Tensor, eps: float, p: str, count: int, seed: int) -> torch.Tensor:
    """Points of the ball around each row of x, [N, count(+vertices), n], grouped by example."""
    g = torch.Generator().manual_seed(seed)
    pts = sample_ball(x, eps, p, count, g).view(x.shape[0], count, -1)
    if p == "inf":  # every vertex of the cube (n = 3: 8 of them)
        n = x.shape[1]
        signs = torch.tensor([[1.0 if (v >> i) & 1 else -1.0 for i in range(n)] for v in range(2**n)], dtype=F64)
        pts = torch.cat([pts, x[:, None, :] + eps * signs[None]], dim=1)
    else:  # and the ball's extreme points along the axes
        eye = torch.eye(x.shape[1], dtype=F64)
        pts = torch.cat([pts, x[:, None, :] + eps * eye[None], x[:, None, :] - eps * eye[None]], dim=1)
    return pts


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("p", ["inf", "2", "1"])
def test_boxes_contain_every_sampled_pre_activation(act, p):
    net = _net(ACTIVATIONS[act], scale=3.0 if act == "softplus-switching" else 1.5, seed=7)
    x = torch.randn(3, 3, generator=torch.Generator().manual_seed(8), dtype=F64)
    eps = 0.4
    boxes = interval_bounds(net, InputSet.build(x, eps, p))
    pts = _samples(x, eps, p, 3000, seed=9)
    for n in range(x.shape[0]):
        zs = net.pre_activations(pts[n])
        for k, (z, (lo, hi)) in enumerate(zip(zs, boxes)):
            assert _inside(z, (lo[n], hi[n])), f"example {n}, layer {k}"


@pytest.mark.parametrize("act", ["softplus", "softplus-switching"])
def test_boxes_also_contain_torchs_thresholded_softplus_network(act):
    net = _net(ACTIVATIONS[act], scale=3.0, seed=10)
    model = _torch_model(net)
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(11), dtype=F64)
    eps = 0.5
    last = interval_bounds(net, InputSet.build(x, eps, "inf"))[-1]
    pts = _samples(x, eps, "inf", 3000, seed=12)
    with torch.no_grad():
        for n in range(2):
            assert _inside(model(pts[n]), (last[0][n], last[1][n]))
    # radius 0 at each sampled point: the box is then as tight as rounding allows, yet must still hold
    # torch's value, which is below the exact softplus by up to log1p(e^-threshold) / beta where it switches
    flat = pts.view(-1, 3)
    lo, hi = interval_bounds(net, InputSet.build(flat, 0.0, "inf"))[-1]
    with torch.no_grad():
        assert _inside(model(flat), (lo, hi))
    if act == "softplus-switching":  # the test exercises the switch: some unit has beta z > threshold
        z1 = net.pre_activations(flat)[0]
        assert (5.0 * z1 > 15.0).any()
        assert not torch.equal(model(flat), net.forward(flat))


def test_the_domain_box_tightens_the_bounds_and_stays_sound():
    net = _net(ACTIVATIONS["relu"], seed=13)
    x = torch.rand(2, 3, generator=torch.Generator().manual_seed(14), dtype=F64)
    domain = (torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64))
    free = interval_bounds(net, InputSet.build(x, 0.5, "inf"))
    clipped = interval_bounds(net, InputSet.build(x, 0.5, "inf", domain))
    for (flo, fhi), (clo, chi) in zip(free, clipped):
        assert (clo >= flo).all() and (chi <= fhi).all()
    pts = _samples(x, 0.5, "inf", 2000, seed=15).clamp(0, 1)
    for n in range(2):
        for z, (lo, hi) in zip(net.pre_activations(pts[n]), clipped):
            assert _inside(z, (lo[n], hi[n]))


@pytest.mark.parametrize("act", ["relu", "softplus"])
def test_boxes_grow_monotonically_with_eps(act):
    net = _net(ACTIVATIONS[act], seed=16)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(17), dtype=F64)
    previous = None
    for eps in (0.0, 0.01, 0.05, 0.2, 1.0):
        boxes = interval_bounds(net, InputSet.build(x, eps, "inf"))
        if previous is not None:
            for (plo, phi), (lo, hi) in zip(previous, boxes):
                assert (lo <= plo).all() and (hi >= phi).all()
        previous = boxes
    widths = [(hi - lo).max().item() for lo, hi in interval_bounds(net, InputSet.build(x, 1.0, "inf"))]
    assert all(w > 0.1 for w in widths)


def test_zero_radius_boxes_enclose_the_forward_pass_tightly():
    net = _net(ACTIVATIONS["softplus"], seed=18)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(19), dtype=F64)
    boxes = interval_bounds(net, InputSet.build(x, 0.0, "2"))
    for z, (lo, hi) in zip(net.pre_activations(x), boxes):
        assert (lo <= z).all() and (z <= hi).all()
        assert ((hi - lo) <= 1e-12 * (1 + z.abs())).all()
    assert torch.equal(net.forward(x), net.pre_activations(x)[-1])


def test_one_box_per_affine_layer_with_their_widths():
    net = _net(ACTIVATIONS["relu"], sizes=(3, 7, 2, 4, 5))
    boxes = interval_bounds(net, InputSet.build(torch.zeros(2, 3, dtype=F64), 0.1, "inf"))
    assert [tuple(lo.shape) for lo, _ in boxes] == [(2, 7), (2, 2), (2, 4), (2, 5)]
    assert all(lo.dtype == F64 and hi.dtype == F64 for lo, hi in boxes)


# ----------------------------------------------------------------------------------- graphs with skips

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from graph_networks import GRAPH_MODELS, skip_network, translated  # noqa: E402


@pytest.mark.parametrize("name", ["hand-built-skips", *GRAPH_MODELS])
def test_graph_boxes_contain_every_sampled_pre_activation(name):
    """Skip terms and non-monotone activations (GELU, SiLU dip inside a box): every z_k of sampled points
    of the ball lies in its box."""
    if name == "hand-built-skips":
        net = skip_network(Activation("relu"), reads_only_skips=True)
    else:
        net, _ = translated(name)
    x = torch.randn(2, net.input_size, dtype=F64, generator=torch.Generator().manual_seed(4))
    for eps, p in ((0.1, 2), (0.5, float("inf"))):
        boxes = interval_bounds(net, InputSet.build(x, eps, p))
        points = torch.cat([x, sample_ball(x, eps, p, 400, torch.Generator().manual_seed(5))])
        owner = torch.cat([torch.arange(2), torch.arange(2).repeat_interleave(400)])
        assert len(boxes) == net.depth
        for (lo, hi), z in zip(boxes, net.pre_activations(points)):
            assert _inside(z, (lo[owner], hi[owner]))


def test_a_layer_with_skips_is_one_exact_affine_map_of_the_stacked_boxes():
    """At eps = 0 every box is the point value up to rounding (a dropped or doubled skip would not be)."""
    net = skip_network(Activation("softplus", 2.0), seed=2)
    x = torch.randn(3, 4, dtype=F64, generator=torch.Generator().manual_seed(6))
    boxes = interval_bounds(net, InputSet.build(x, 0.0, 2))
    for (lo, hi), z in zip(boxes, net.pre_activations(x)):
        assert _inside(z, (lo, hi)) and float((hi - lo).max()) < 1e-12
