"""Local constants (certify.bounds.local, DESIGN section 11), attacked: every bound is compared with values
computed independently of the module, in float64, at dense / random / boundary / adversarial points.

* derivative_ranges: sigma' and sigma'' of softplus (beta 1 and 5), sigmoid and tanh on a dense grid of
  many intervals (random, tiny, huge, around and at the critical points), and the analytic extreme values.
* region_boxes: pre-activations of random, boundary and worst-case points of l2 / l-inf / l1 balls (the
  first layer's exact extremes x0 +- r W_i / ||W_i||, projected ascent on every unit for the others).
* local_curvature: exact autograd Hessians (of an independent forward with the exact softplus) at random
  points of the ball and at points found by projected ascent on lambda_max and on -lambda_min; the
  gradient enclosure; radius 0 is exact; monotone in the radius; batched = one by one; the zoo model.
* unstable_units: ReLU nets on tiny balls (0 unstable units, constant gradient) and on larger ones (every
  unit seen to change sign is counted).
* refusals: GELU / SiLU / ReLU for the curvature, skip connections for the boxes.

The references are float64 computations with their own rounding; where a check allows for it, the
allowance is a few units of that rounding (REF_ULPS), never a fraction of the bound.
"""
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from certify.bounds.activations import Activation
from certify.bounds.curvature import weak_convexity
from certify.bounds.local import derivative_ranges, local_curvature, region_boxes, unstable_units
from certify.bounds.network import from_module
from certify.errors import CertifyError, UnsupportedError, UsageError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from graph_networks import skip_network  # noqa: E402

F64 = torch.float64
U = 2.0**-53
REF_ULPS = 8 * U  # relative rounding allowance of a float64 reference value (a few elementary-function calls)
SIGMOID_S2 = math.log(2.0 + math.sqrt(3.0))  # sigmoid'' is extreme at -+ this
TANH_S2 = math.atanh(1.0 / math.sqrt(3.0))  # tanh'' is extreme at -+ this


# ------------------------------------------------------------------------------------------------- references


def ref_first(name: str, beta: float, z: torch.Tensor) -> torch.Tensor:
    """sigma'(z), written independently of certify (no cancellation)."""
    if name == "softplus":
        return torch.sigmoid(beta * z)
    if name == "sigmoid":
        t = torch.exp(-z.abs())
        return t / (1 + t) ** 2
    t = torch.exp(-2 * z.abs())  # tanh' = sech^2 = 4 t / (1 + t)^2, t = e^{-2|z|}
    return 4 * t / (1 + t) ** 2


def ref_second(name: str, beta: float, z: torch.Tensor) -> torch.Tensor:
    """sigma''(z), written independently of certify (odd parts via expm1, no cancellation)."""
    if name == "softplus":
        t = torch.exp(-beta * z.abs())
        return beta * t / (1 + t) ** 2
    a, sign = z.abs(), torch.sign(z)
    if name == "sigmoid":  # S'' = e^{-z} (e^{-z} - 1) / (1 + e^{-z})^3, odd
        t = torch.exp(-a)
        return sign * t * torch.expm1(-a) / (1 + t) ** 3
    t = torch.exp(-2 * a)  # tanh'' = -2 tanh sech^2 = -2 (1 - t)/(1 + t) * 4 t/(1 + t)^2, odd
    return sign * 8 * t * torch.expm1(-2 * a) / (1 + t) ** 3


ACTS = [("softplus", 1.0), ("softplus", 5.0), ("sigmoid", 1.0), ("tanh", 1.0)]


def _critical(name: str, beta: float) -> tuple[list[float], list[float]]:
    """Critical points of sigma' and of sigma'' (extremes of sigma'' and of sigma''' = 0)."""
    if name == "softplus":
        return [], [0.0]
    s = SIGMOID_S2 if name == "sigmoid" else TANH_S2
    return [0.0], [-s, 0.0, s]


def _extreme_values(name: str, beta: float) -> list[tuple[float, float, float]]:
    """(point, sigma' or sigma'' there, which) analytic extremes: which 1 = sigma', 2 = sigma''."""
    if name == "softplus":
        return [(0.0, beta / 4, 2)]
    if name == "sigmoid":
        m = math.sqrt(3.0) / 18.0
        return [(0.0, 0.25, 1), (-SIGMOID_S2, m, 2), (SIGMOID_S2, -m, 2)]
    m = 4.0 / (3.0 * math.sqrt(3.0))
    return [(0.0, 1.0, 1), (-TANH_S2, m, 2), (TANH_S2, -m, 2)]


def _intervals(name: str, beta: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Many intervals: random centre and width (1e-12 .. 1e2), around each critical point (asymmetric),
    ending exactly at one, degenerate ones, tiny ones next to a critical point, and huge ones."""
    crit = sorted(set(_critical(name, beta)[0] + _critical(name, beta)[1]))
    unit = beta if name == "softplus" else 1.0
    lows, highs = [], []
    n = 300
    c = torch.randn(n, generator=gen, dtype=F64) * 6 / unit
    w = 10 ** (torch.rand(n, generator=gen, dtype=F64) * 14 - 12)
    lows.append(c - w * torch.rand(n, generator=gen, dtype=F64))
    highs.append(lows[-1] + w)
    for p in crit:
        p = p / unit
        a = 10 ** (torch.rand(60, generator=gen, dtype=F64) * 11 - 10)
        b = 10 ** (torch.rand(60, generator=gen, dtype=F64) * 11 - 10)
        lows += [p - a, torch.full((10,), p, dtype=F64), p + a[:10]]
        highs += [p + b, p + b[:10], p + a[:10] + b[:10] * 1e-3]
        lows.append(torch.full((10,), p, dtype=F64) - b[:10])
        highs.append(torch.full((10,), p, dtype=F64))
    d = torch.randn(40, generator=gen, dtype=F64) * 4
    lows.append(d)
    highs.append(d.clone())
    huge_lo = torch.tensor([-1e3, -1e300, -50.0, 1e5, -1e6, -40.0, 30.0, -745.0, 700.0], dtype=F64) / unit
    huge_hi = torch.tensor([1e3, 1e300, 1e10, 1e6, -1e5, 40.0, 800.0, -700.0, 710.0], dtype=F64) / unit
    lows.append(huge_lo)
    highs.append(huge_hi)
    return torch.cat(lows), torch.cat(highs)


def _grid(lo: torch.Tensor, hi: torch.Tensor, points: int, extra: list[float]) -> torch.Tensor:
    """[I, points + len(extra)] points of each [lo, hi]: a uniform grid, a log-spaced one near each end, and
    the `extra` points clamped into the interval."""
    t = torch.linspace(0, 1, points, dtype=F64)
    half = points // 4
    s = torch.logspace(-16, 0, half, dtype=F64)
    width = hi - lo
    grid = [lo[:, None] + t * width[:, None], lo[:, None] + s * width[:, None], hi[:, None] - s * width[:, None]]
    grid += [torch.clamp(torch.full_like(lo, e), lo, hi)[:, None] for e in extra]
    out = torch.cat(grid, dim=1)
    return torch.minimum(torch.maximum(out, lo[:, None]), hi[:, None])


# ------------------------------------------------------------------------------------------- derivative_ranges


@pytest.mark.parametrize("name,beta", ACTS)
def test_derivative_ranges_enclose_a_dense_grid(name, beta):
    gen = torch.Generator().manual_seed(ACTS.index((name, beta)))
    act = Activation(name, beta=beta)
    lo, hi = _intervals(name, beta, gen)
    unit = beta if name == "softplus" else 1.0
    crit = [c / unit for c in sorted(set(_critical(name, beta)[0] + _critical(name, beta)[1]))]
    d, s = derivative_ranges(act, lo, hi)
    assert d.lo.shape == lo.shape and s.hi.shape == lo.shape
    assert torch.isfinite(d.mid).all() and torch.isfinite(s.mid).all()
    z = _grid(lo, hi, 513, crit)
    for rng, ref in ((d, ref_first(name, beta, z)), (s, ref_second(name, beta, z))):
        allowance = REF_ULPS * ref.abs()
        below = ref + allowance < rng.lo[:, None]
        above = ref - allowance > rng.hi[:, None]
        bad = (below | above).nonzero()
        if bad.numel():
            i, j = bad[0].tolist()
            pytest.fail(f"{name} beta={beta}: {len(bad)} grid values outside; first: interval [{lo[i]!r}, {hi[i]!r}], "
                        f"z={z[i, j]!r}, value {ref[i, j]!r}, range [{rng.lo[i]!r}, {rng.hi[i]!r}]")


@pytest.mark.parametrize("name,beta", ACTS)
def test_derivative_ranges_contain_the_analytic_extremes(name, beta):
    """On every interval containing an extreme point of sigma' or sigma'', the range reaches the analytic
    extreme value (rounded to float64, allowance of 2 ulps); over a wide interval it is the global range."""
    act = Activation(name, beta=beta)
    unit = beta if name == "softplus" else 1.0
    for point, value, which in _extreme_values(name, beta):
        p = point / unit
        eps = torch.tensor([0.0, 1e-14, 1e-9, 1e-3, 0.5, 3.0, 40.0], dtype=F64)
        for lo, hi in ((p - eps, p + eps), (p - eps, p + 2 * eps), (p - 3 * eps, p + eps)):
            rng = derivative_ranges(act, lo, hi)[which - 1]
            if value > 0:
                assert (rng.hi >= value * (1 - 2 * U)).all(), (name, which, rng.hi - value)
            else:
                assert (rng.lo <= value * (1 - 2 * U)).all(), (name, which, rng.lo - value)
    wide = derivative_ranges(act, torch.tensor([-60.0 / unit], dtype=F64), torch.tensor([60.0 / unit], dtype=F64))
    top_first = {"softplus": 1.0, "sigmoid": 0.25, "tanh": 1.0}[name]
    top_second = {"softplus": beta / 4, "sigmoid": math.sqrt(3) / 18, "tanh": 4 / (3 * math.sqrt(3))}[name]
    assert float(wide[0].hi) == pytest.approx(top_first, rel=1e-12) and float(wide[0].lo) <= 1e-12
    assert float(wide[1].hi) == pytest.approx(top_second, rel=1e-12)
    assert float(wide[1].lo) == pytest.approx(0.0 if name == "softplus" else -top_second, abs=1e-12)


@pytest.mark.parametrize("name,beta", ACTS)
def test_derivative_ranges_of_a_point_are_tight(name, beta):
    act = Activation(name, beta=beta)
    z = torch.linspace(-8, 8, 161, dtype=F64) / (beta if name == "softplus" else 1.0)
    d, s = derivative_ranges(act, z, z)
    assert (d.rad <= 1e-13).all() and (s.rad <= 1e-13).all()
    assert torch.allclose(d.mid, ref_first(name, beta, z), rtol=1e-12, atol=1e-15)
    assert torch.allclose(s.mid, ref_second(name, beta, z), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name,beta", ACTS)
def test_derivative_ranges_with_infinite_ends_are_finite_and_sound(name, beta):
    """region_boxes can return infinite ends (a finite radius whose spread overflows, e.g. 1e308 * ||W_i||);
    the ranges of sigma' and sigma'' over a half-line or the real line are finite and known."""
    act = Activation(name, beta=beta)
    lo = torch.tensor([-math.inf, -math.inf, 0.0, 3.0], dtype=F64)
    hi = torch.tensor([math.inf, 0.0, math.inf, math.inf], dtype=F64)
    d, s = derivative_ranges(act, lo, hi)
    for rng in (d, s):
        assert not torch.isnan(rng.lo).any() and not torch.isnan(rng.hi).any(), (name, rng)
    top_first = {"softplus": 1.0, "sigmoid": 0.25, "tanh": 1.0}[name]
    top_second = {"softplus": beta / 4, "sigmoid": math.sqrt(3) / 18, "tanh": 4 / (3 * math.sqrt(3))}[name]
    assert float(d.hi[0]) >= top_first * (1 - 2 * U) and float(d.lo[0]) <= 0.0
    assert float(s.hi[0]) >= top_second * (1 - 2 * U)
    assert float(s.lo[0]) <= (0.0 if name == "softplus" else -top_second * (1 - 2 * U))


# ---------------------------------------------------------------------------------------------- random chains

MODULES = {"softplus": lambda b: nn.Softplus(beta=b), "sigmoid": lambda b: nn.Sigmoid(), "tanh": lambda b: nn.Tanh(),
           "relu": lambda b: nn.ReLU(), "gelu": lambda b: nn.GELU(), "silu": lambda b: nn.SiLU()}


def chain(acts: tuple[str, ...], widths: tuple[int, ...], inputs: int, classes: int, seed: int, scale: float = 1.5,
          beta: float = 1.0) -> nn.Sequential:
    """Linear -> act -> ... -> Linear in float64, weights N(0, scale^2 / fan_in), biases N(0, scale^2 / 4)."""
    g = torch.Generator().manual_seed(seed)
    layers, width = [], inputs
    for act, h in zip(acts, widths):
        layers += [nn.Linear(width, h), MODULES[act](beta)]
        width = h
    layers.append(nn.Linear(width, classes))
    model = nn.Sequential(*layers).double()
    with torch.no_grad():
        for p in model.parameters():
            fan = p.shape[1] if p.dim() == 2 else 4
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * scale / fan**0.5)
    return model.eval()


def _activation(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Softplus):  # exact: no threshold switch
        return torch.logaddexp(torch.zeros_like(h), layer.beta * h) / layer.beta
    if isinstance(layer, nn.Sigmoid):
        return torch.sigmoid(h)
    if isinstance(layer, nn.Tanh):
        return torch.tanh(h)
    if isinstance(layer, nn.ReLU):
        return torch.relu(h)
    raise AssertionError(f"no exact forward for {layer}")


def _layers(model: nn.Sequential) -> list[nn.Module]:
    return [m for m in model if not isinstance(m, nn.Flatten)]


def exact_forward(model: nn.Sequential):
    """Logits of the model with the EXACT activations (softplus without torch's threshold switch, as N),
    from its Linear layers in float64; differentiable to any order."""
    layers = _layers(model)

    def forward(x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in layers:
            h = h @ layer.weight.double().T + layer.bias.double() if isinstance(layer, nn.Linear) else _activation(layer, h)
        return h

    return forward


def pre_activations(model: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """Hidden pre-activations z_0 .. z_{L-2} by the exact forward (independent of AffineNetwork)."""
    layers = _layers(model)
    out, h = [], x
    for layer in layers[:-1]:
        if isinstance(layer, nn.Linear):
            h = h @ layer.weight.double().T + layer.bias.double()
            out.append(h)
        else:
            h = _activation(layer, h)
    return out


def gradients(f, row: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """grad of row . f at the points x [B, n]."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad((f(x) @ row).sum(), x)
    return g


def sample_ball(center: torch.Tensor, radius: torch.Tensor, count: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """[N, count, n]: the centre, boundary points and uniform points of each ball ||x - center_i||_p <= r_i."""
    n_ex, n = center.shape
    r = radius.reshape(n_ex, 1, 1)
    if p == 2:
        u = torch.randn(n_ex, count, n, generator=gen, dtype=F64)
        u = u / u.norm(dim=-1, keepdim=True)
        scale = torch.rand(n_ex, count, 1, generator=gen, dtype=F64) ** (1.0 / n)
        scale[:, : count // 3] = 1.0
    elif p == math.inf:
        u = torch.rand(n_ex, count, n, generator=gen, dtype=F64) * 2 - 1
        u[:, : count // 3] = torch.sign(u[:, : count // 3])  # vertices
        scale = torch.ones(n_ex, count, 1, dtype=F64)
    else:  # l1: random points of the cross-polytope, a third on its vertices
        e = -torch.log(torch.rand(n_ex, count, n, generator=gen, dtype=F64))
        u = e / e.sum(-1, keepdim=True) * torch.sign(torch.randn(n_ex, count, n, generator=gen, dtype=F64))
        idx = torch.randint(n, (n_ex, count // 3), generator=gen)
        signs = torch.sign(torch.randn(n_ex, count // 3, 1, generator=gen, dtype=F64))
        u[:, : count // 3] = nn.functional.one_hot(idx, n).to(F64) * signs
        scale = torch.ones(n_ex, count, 1, dtype=F64)
    pts = center[:, None] + r * scale * u
    pts[:, 0] = center
    return pts


def project(points: torch.Tensor, center: torch.Tensor, radius: torch.Tensor, p: float) -> torch.Tensor:
    """Onto the l2 / l-inf ball (points [N, K, n])."""
    d = points - center[:, None]
    r = radius.reshape(-1, 1, 1)
    if p == 2:
        return center[:, None] + d * (r / d.norm(dim=-1, keepdim=True).clamp_min(1e-300)).clamp(max=1.0)
    return center[:, None] + torch.maximum(torch.minimum(d, r), -r)


def hessians(f, row: torch.Tensor, x: torch.Tensor, graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(gradient [B, n], symmetric Hessian [B, n, n]) of row . f at the points x [B, n], by double backward."""
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad((f(x) @ row).sum(), x, create_graph=True)
        rows = [torch.autograd.grad(g[:, i].sum(), x, create_graph=graph, retain_graph=True)[0] for i in range(x.shape[1])]
    h = torch.stack(rows, dim=1)
    return g, (h + h.transpose(1, 2)) / 2


def ascend_eigenvalues(f, row, starts, center, radius, steps=10, lr=None, p=2.0):
    """Projected Adam ascent on lambda_max and on -lambda_min of the exact Hessian inside the ball
    (starts [N, K, n]); returns the visited points [2 * steps * N * K, n] (all iterates)."""
    n_ex, k, n = starts.shape
    lr = lr if lr is not None else 0.25 * float(radius.max())
    visited = []
    for sign in (1.0, -1.0):
        x = starts.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            _, h = hessians(f, row, x.reshape(-1, n), graph=True)
            eig = torch.linalg.eigvalsh(h)
            objective = -(eig[:, -1] if sign > 0 else -eig[:, 0]).sum()
            opt.zero_grad()
            objective.backward()
            opt.step()
            with torch.no_grad():
                x.copy_(project(x, center, radius, p))
            visited.append(x.detach().reshape(-1, n).clone())
    return torch.cat(visited)


def ascend_gradient(f, row, starts, center, radius, steps=10, p=2.0):
    """Projected Adam ascent on +- each gradient coordinate (starts [N, 2n, n]: row 2i maximises
    coordinate i, 2i + 1 minimises it); returns [N, 2n, n] final points."""
    n_ex, k, n = starts.shape
    assert k == 2 * n
    sign = torch.tensor([1.0, -1.0], dtype=F64).repeat(n)
    coord = torch.arange(n).repeat_interleave(2)
    x = starts.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.25 * float(radius.max()))
    for _ in range(steps):
        with torch.enable_grad():
            (g,) = torch.autograd.grad((f(x.reshape(-1, n)) @ row).sum(), x, create_graph=True)
        objective = -(sign * g[:, torch.arange(k), coord]).sum()
        opt.zero_grad()
        objective.backward()
        opt.step()
        with torch.no_grad():
            x.copy_(project(x, center, radius, p))
    return x.detach()


# ----------------------------------------------------------------------------------------------- region_boxes


def _check_boxes(model, net, center, radius, p, gen, pgd_steps=8):
    boxes = region_boxes(net, center, radius, p)
    assert len(boxes) == net.depth - 1
    n_ex, n = center.shape
    points = sample_ball(center, radius, 200, p, gen)
    # first layer: the exact extremes x0 +- r v_i with <W_i, v_i> = ||W_i||_q, ||v_i||_p = 1
    w0 = net.weights[0]
    if p == 2:
        v = w0 / w0.norm(dim=1, keepdim=True)
    elif p == math.inf:
        v = torch.sign(w0)
    else:
        v = nn.functional.one_hot(w0.abs().argmax(1), n).to(F64) * torch.sign(w0)
    extremes = torch.cat([center[:, None] + radius.reshape(-1, 1, 1) * v, center[:, None] - radius.reshape(-1, 1, 1) * v], 1)
    z_ext = pre_activations(model, extremes.reshape(-1, n))[0].reshape(n_ex, -1, w0.shape[0])
    units = torch.arange(w0.shape[0])
    top, bottom = z_ext[:, units, units], z_ext[:, w0.shape[0] + units, units]
    assert (top <= boxes[0].hi).all() and (bottom >= boxes[0].lo).all()
    # ... and they are the extremes: the first box is exact up to rounding
    assert torch.allclose(boxes[0].hi, top, rtol=1e-12, atol=1e-12)
    assert torch.allclose(boxes[0].lo, bottom, rtol=1e-12, atol=1e-12)
    # projected ascent / descent on every unit of every layer
    pgd = []  # (no projection onto the l1 ball here: its points are the sampled ones)
    for k, box in enumerate(boxes[1:] if p != 1 else [], start=1):
        m = box.mid.shape[1]
        noise = torch.randn(n_ex, 2 * m, n, generator=gen, dtype=F64)
        x = points[:, :1].expand(n_ex, 2 * m, n) + 0.1 * radius.reshape(-1, 1, 1) * noise
        x = project(x, center, radius, p).requires_grad_(True)
        sign = torch.tensor([1.0, -1.0], dtype=F64).repeat(m)
        opt = torch.optim.Adam([x], lr=0.3 * float(radius.max()))
        for _ in range(pgd_steps):
            z = pre_activations(model, x.reshape(-1, n))[k].reshape(n_ex, 2 * m, m)
            objective = -(sign * z[:, torch.arange(2 * m), torch.arange(m).repeat_interleave(2)]).sum()
            opt.zero_grad()
            objective.backward()
            opt.step()
            with torch.no_grad():
                x.copy_(project(x, center, radius, p))
        pgd.append(x.detach())
    allpts = torch.cat([points, extremes] + pgd, dim=1)
    zs = pre_activations(model, allpts.reshape(-1, n))
    for k, (z, box) in enumerate(zip(zs, boxes)):
        z = z.reshape(n_ex, -1, box.mid.shape[1])
        assert (z >= box.lo[:, None]).all() and (z <= box.hi[:, None]).all(), \
            f"layer {k}: {(box.lo[:, None] - z).max()}, {(z - box.hi[:, None]).max()}"
    return boxes


@pytest.mark.parametrize("p", [2, math.inf, 1])
@pytest.mark.parametrize("acts", [("softplus", "tanh", "sigmoid"), ("tanh", "tanh"), ("relu", "relu", "relu"), ("sigmoid",)])
def test_region_boxes_contain_the_preactivations(p, acts):
    gen = torch.Generator().manual_seed(len(acts) * 7 + int(p if p != math.inf else 0))
    for seed in range(2):
        widths = tuple(int(w) for w in torch.randint(3, 12, (len(acts),), generator=gen))
        model = chain(acts, widths, 5, 3, seed, scale=2.0)
        net = from_module(model, (5,))
        center = torch.randn(3, 5, generator=gen, dtype=F64)
        radius = torch.tensor([0.01, 0.3, 2.0], dtype=F64)
        _check_boxes(model, net, center, radius, p, gen)


def test_region_boxes_radius_zero_and_nesting():
    model = chain(("softplus", "tanh", "sigmoid"), (8, 7, 6), 4, 3, 3)
    net = from_module(model, (4,))
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    zero = region_boxes(net, x, torch.zeros(2, dtype=F64))
    for z, box in zip(pre_activations(model, x), zero):
        assert (box.lo <= z).all() and (z <= box.hi).all() and (box.rad <= 1e-13 * (1 + z.abs())).all()
    previous = zero
    for r in (1e-9, 1e-4, 0.1, 1.0, 10.0, 1e6):
        boxes = region_boxes(net, x, torch.full((2,), r, dtype=F64))
        for small, big in zip(previous, boxes):
            assert (big.lo <= small.lo).all() and (small.hi <= big.hi).all()
        previous = boxes


# --------------------------------------------------------------------------------------------- local_curvature


def _bounds_hold(model, net, row, center, radius, p, gen, samples=60, steps=8, grad_attack=True):
    """Sampled and adversarial points of the balls: exact eigenvalues in [lower, upper], gradient in the
    enclosure, ||grad|| <= lipschitz. Returns (observed min eig, observed max eig, bound) per example."""
    f = exact_forward(model)
    n_ex, n = center.shape
    boxes = region_boxes(net, center, radius, p)
    lc = local_curvature(net, row, boxes)
    assert lc.lower.shape == (n_ex,) and lc.gradient.mid.shape == (n_ex, n)
    pts = sample_ball(center, radius, samples, p, gen)
    starts = pts[:, 1:5]
    adv = ascend_eigenvalues(f, row, starts, center, radius, steps=steps, p=p).reshape(2 * steps, n_ex, -1, n)
    allpts = torch.cat([pts, adv.transpose(0, 1).reshape(n_ex, -1, n)], dim=1)
    if grad_attack:
        noise = torch.randn(n_ex, 2 * n, n, generator=gen, dtype=F64)
        gstarts = project(pts[:, :1].expand(n_ex, 2 * n, n) + 0.3 * radius.reshape(-1, 1, 1) * noise, center, radius, p)
        allpts = torch.cat([allpts, ascend_gradient(f, row, gstarts, center, radius, steps, p)], dim=1)
    g, h = hessians(f, row, allpts.reshape(-1, n))
    eig = torch.linalg.eigvalsh(h).reshape(n_ex, -1, n)
    g = g.reshape(n_ex, -1, n)
    scale = 1.0 + eig.abs().amax((1, 2))
    lo_eig, hi_eig = eig[..., 0].amin(1), eig[..., -1].amax(1)
    allowance = 1e-12 * scale  # float64 rounding of the autograd Hessian (n^2 terms of size <= scale)
    assert (lc.lower <= lo_eig + allowance).all(), f"lower {lc.lower} > observed {lo_eig}"
    assert (hi_eig <= lc.upper + allowance).all(), f"upper {lc.upper} < observed {hi_eig}"
    gscale = REF_ULPS * 64 * (1 + g.abs().amax(1, keepdim=True))
    assert (g >= lc.gradient.lo[:, None] - gscale).all() and (g <= lc.gradient.hi[:, None] + gscale).all()
    assert (g.norm(dim=-1).amax(1) <= lc.lipschitz * (1 + 1e-12)).all()
    assert (lc.lam >= (-lo_eig).clamp_min(0) - allowance).all() and (lc.beta >= eig.abs().amax((1, 2)) - allowance).all()
    return lo_eig, hi_eig, lc


NET_CASES = [
    (("softplus",), (12,), 1.0), (("softplus", "softplus"), (10, 8), 1.0),
    (("softplus", "softplus", "softplus"), (8, 8, 6), 5.0),
    (("sigmoid", "sigmoid"), (12, 10), 1.0), (("tanh",), (16,), 1.0), (("tanh", "tanh", "tanh"), (6, 8, 5), 1.0),
    (("softplus", "tanh", "sigmoid"), (9, 7, 5), 2.0),
]


@pytest.mark.parametrize("acts,widths,beta", NET_CASES)
def test_local_curvature_encloses_exact_hessians(acts, widths, beta):
    gen = torch.Generator().manual_seed(sum(widths) + len(acts))
    for seed in range(2):
        inputs = 3 + seed
        model = chain(acts, widths, inputs, 3, 100 + seed, scale=1.5 + seed, beta=beta)
        net = from_module(model, (inputs,))
        row = torch.randn(3, generator=gen, dtype=F64)
        center = torch.randn(3, inputs, generator=gen, dtype=F64)
        for p in (2, math.inf):
            for radius in (torch.tensor([1e-4, 1e-3, 0.02], dtype=F64), torch.tensor([0.1, 0.25, 1.0], dtype=F64)):
                _bounds_hold(model, net, row, center, radius, p, gen, steps=6)


def test_local_curvature_rows_per_example_and_batching():
    """row [N, C] (one per example) and N balls at once give what one example at a time gives."""
    gen = torch.Generator().manual_seed(5)
    model = chain(("softplus", "tanh"), (8, 6), 4, 3, 11)
    net = from_module(model, (4,))
    center = torch.randn(4, 4, generator=gen, dtype=F64)
    radius = torch.tensor([0.0, 0.05, 0.5, 3.0], dtype=F64)
    rows = torch.randn(4, 3, generator=gen, dtype=F64)
    batch = local_curvature(net, rows, region_boxes(net, center, radius))
    for i in range(4):
        one = local_curvature(net, rows[i], region_boxes(net, center[i : i + 1], radius[i : i + 1]))
        assert torch.allclose(batch.lower[i], one.lower[0], rtol=1e-12)
        assert torch.allclose(batch.upper[i], one.upper[0], rtol=1e-12)
        assert torch.allclose(batch.gradient.mid[i], one.gradient.mid[0], rtol=1e-12, atol=1e-15)
    _bounds_hold(model, net, rows[0], center[:1], radius[2:3], 2, gen)


@pytest.mark.parametrize("acts,widths,beta", NET_CASES)
def test_radius_zero_gives_the_exact_eigenvalues(acts, widths, beta):
    gen = torch.Generator().manual_seed(17 + sum(widths))
    model = chain(acts, widths, 5, 4, 7, scale=2.0, beta=beta)
    net = from_module(model, (5,))
    row = torch.randn(4, generator=gen, dtype=F64)
    x = torch.randn(6, 5, generator=gen, dtype=F64) * 2
    lc = local_curvature(net, row, region_boxes(net, x, torch.zeros(6, dtype=F64)))
    g, h = hessians(exact_forward(model), row, x)
    eig = torch.linalg.eigvalsh(h)
    scale = eig.abs().amax(1) + 1e-300
    assert (lc.lower <= eig[:, 0] + 1e-12 * scale).all() and (eig[:, -1] <= lc.upper + 1e-12 * scale).all()
    assert ((lc.lower - eig[:, 0]).abs() <= 1e-8 * scale).all(), (lc.lower, eig[:, 0])
    assert ((lc.upper - eig[:, -1]).abs() <= 1e-8 * scale).all(), (lc.upper, eig[:, -1])
    assert torch.allclose(lc.gradient.mid, g, rtol=1e-10, atol=1e-13) and (lc.gradient.rad <= 1e-9 * (1 + g.abs())).all()


RADII = [0.0, 1e-8, 1e-5, 1e-3, 0.01, 0.03, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0, 1e3]


def _radius_sweep(acts, widths, beta):
    """(p, r, LocalCurvature) over RADII for 5 centres, l2 and l-inf."""
    gen = torch.Generator().manual_seed(3 + sum(widths))
    model = chain(acts, widths, 4, 3, 5, scale=1.8, beta=beta)
    net = from_module(model, (4,))
    row = torch.randn(3, generator=gen, dtype=F64)
    x = torch.randn(5, 4, generator=gen, dtype=F64)
    for p in (2, math.inf):
        yield [(p, r, local_curvature(net, row, region_boxes(net, x, torch.full((5,), r, dtype=F64), p))) for r in RADII]


def _slack(t):
    return 1e-12 * (1 + t.abs())  # rounding-level noise: monotonicity is no soundness property


@pytest.mark.parametrize("acts,widths,beta", NET_CASES)
def test_gradient_enclosure_is_monotone_in_the_radius(acts, widths, beta):
    """A larger ball never gives a smaller gradient enclosure or local Lipschitz constant."""
    for sweep in _radius_sweep(acts, widths, beta):
        for (_, _, small), (p, r, big) in zip(sweep, sweep[1:]):
            assert (big.lipschitz >= small.lipschitz - _slack(small.lipschitz)).all(), (p, r)
            assert (big.gradient.lo <= small.gradient.lo + _slack(small.gradient.lo)).all(), (p, r)
            assert (big.gradient.hi >= small.gradient.hi - _slack(small.gradient.hi)).all(), (p, r)


def test_lambda_is_monotone_in_the_radius_for_one_hidden_layer():
    """A larger ball never gives a smaller lambda with one hidden layer (the congruence bound of the exact first
    Jacobian is monotone in the interval of w_0). The centre-radius Weyl bound alone was not: on this net (16
    sigmoids) it gave lam = 3.2635 on the l-inf ball of radius 1 but 3.0940 on the one of radius 2."""
    model = chain(("sigmoid",), (16,), 4, 3, 13, scale=1.8)
    net = from_module(model, (4,))
    gen = torch.Generator().manual_seed(13)
    row = torch.randn(3, generator=gen, dtype=F64)
    x = torch.randn(8, 4, generator=gen, dtype=F64)[7:8]
    small, big = (local_curvature(net, row, region_boxes(net, x, torch.tensor([r], dtype=F64), math.inf))
                  for r in (1.0, 2.0))
    assert float(big.lam) >= float(small.lam), (float(small.lam), float(big.lam))
    assert float(small.lam) < 3.0  # tighter than the centre-radius bound's 3.2635


def test_local_curvature_with_an_overflowing_radius_is_not_nan():
    """A finite radius so large that the first box overflows to +-inf must give a vacuous (or refused)
    bound, never NaN and never a LinAlgError from eigvalsh."""
    for act in ("softplus", "tanh", "sigmoid"):
        model = chain((act, act), (8, 8), 4, 3, 0, scale=2.0)
        net = from_module(model, (4,))
        boxes = region_boxes(net, torch.zeros(1, 4, dtype=F64), torch.tensor([1e308], dtype=F64))
        try:
            lc = local_curvature(net, torch.tensor([1.0, -1.0, 0.0], dtype=F64), boxes)
        except CertifyError:
            continue
        assert not torch.isnan(lc.lower).any() and not torch.isnan(lc.upper).any(), (act, lc.lower, lc.upper)


def test_linear_model_has_zero_hessian_or_is_refused():
    """A network without hidden layer: f is affine, its Hessian 0; no IndexError."""
    model = nn.Sequential(nn.Linear(3, 2)).double().eval()
    net = from_module(model, (3,))
    x = torch.zeros(1, 3, dtype=F64)
    try:
        boxes = region_boxes(net, x, torch.tensor([0.1], dtype=F64))
        lc = local_curvature(net, torch.tensor([1.0, 0.0], dtype=F64), boxes)
    except CertifyError:
        return
    assert float(lc.lower) <= 0.0 <= float(lc.upper) and float(lc.beta) <= 1e-12


def test_zoo_digits_softplus_mlp2():
    """The trained 64-64-64-10 softplus MLP: exact Hessians at sampled and adversarial points of l2 balls
    around test inputs, radius 0 exact, and the local lambda against the global one."""
    from certify.models import zoo

    model, data = zoo.load("digits-softplus-mlp2")
    net = from_module(model, tuple(data.input_shape))
    model = model.double()
    gen = torch.Generator().manual_seed(0)
    x = data.x_test[:2].reshape(2, -1).double()
    row = nn.functional.one_hot(torch.tensor(int(model(x[:1]).argmax())), 10).double()
    global_lam = float(weak_convexity(net, row).value)
    zero = local_curvature(net, row, region_boxes(net, x, torch.zeros(2, dtype=F64)))
    _, h = hessians(exact_forward(model), row, x)
    eig = torch.linalg.eigvalsh(h)
    assert ((zero.lower - eig[:, 0]).abs() <= 1e-8 * eig.abs().amax(1)).all()
    assert ((zero.upper - eig[:, -1]).abs() <= 1e-8 * eig.abs().amax(1)).all()
    for r in (0.05, 0.5):
        _, _, lc = _bounds_hold(model, net, row, x, torch.full((2,), r, dtype=F64), 2, gen, samples=24, steps=4,
                                grad_attack=False)
        if r == 0.05:  # on small balls the local lambda beats the global one (at r = 0.5 it is about equal, ~40)
            assert (lc.lam < global_lam).all(), (r, lc.lam, global_lam)


# ----------------------------------------------------------------------------------------------------- ReLU


def test_relu_tiny_ball_no_unstable_unit_and_constant_gradient():
    gen = torch.Generator().manual_seed(2)
    for depth in (1, 2, 3):
        model = chain(("relu",) * depth, (16, 12, 10)[:depth], 6, 3, depth)
        net = from_module(model, (6,))
        center = torch.randn(4, 6, generator=gen, dtype=F64)
        radius = torch.full((4,), 1e-7, dtype=F64)
        for p in (2, math.inf):
            boxes = region_boxes(net, center, radius, p)
            assert (unstable_units(boxes) == 0).all()
            pts = sample_ball(center, radius, 50, p, gen).reshape(-1, 6)
            row = torch.randn(3, generator=gen, dtype=F64)
            g = gradients(exact_forward(model), row, pts).reshape(4, 50, 6)
            assert torch.allclose(g, g[:, :1].expand_as(g), rtol=1e-13, atol=1e-14)


def test_relu_unstable_units_cover_every_sign_change():
    """On larger balls every unit seen with both signs at sampled points lies in an unstable box, and
    where no unit is unstable the gradient is constant over the samples."""
    gen = torch.Generator().manual_seed(3)
    model = chain(("relu", "relu", "relu"), (12, 10, 8), 5, 3, 9)
    net = from_module(model, (5,))
    center = torch.randn(6, 5, generator=gen, dtype=F64)
    radius = torch.tensor([1e-3, 1e-2, 0.05, 0.1, 0.3, 1.0], dtype=F64)
    for p in (2, math.inf):
        boxes = region_boxes(net, center, radius, p)
        count = unstable_units(boxes)
        pts = sample_ball(center, radius, 300, p, gen)
        zs = pre_activations(model, pts.reshape(-1, 5))
        seen = 0
        for z, box in zip(zs, boxes):
            z = z.reshape(6, 300, -1)
            flips = (z > 0).any(1) & (z < 0).any(1)
            assert not (flips & ~((box.lo < 0) & (box.hi > 0))).any()
            seen = seen + flips.sum(-1)
        assert (count >= seen).all()
        g = gradients(exact_forward(model), torch.tensor([1.0, -1.0, 0.0], dtype=F64), pts.reshape(-1, 5)).reshape(6, 300, 5)
        stable = count == 0
        assert torch.allclose(g[stable], g[stable][:, :1].expand_as(g[stable]), rtol=1e-13, atol=1e-14)
        assert stable.any() and (~stable).any()


# -------------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("act", ["relu", "gelu", "silu"])
def test_curvature_refuses_other_activations(act):
    model = chain((act, act), (5, 4), 3, 2, 0)
    net = from_module(model, (3,))
    boxes = region_boxes(net, torch.zeros(1, 3, dtype=F64), torch.tensor([0.1], dtype=F64))
    with pytest.raises(UnsupportedError):
        local_curvature(net, torch.tensor([1.0, -1.0], dtype=F64), boxes)
    with pytest.raises(UnsupportedError):
        derivative_ranges(net.activations[0], boxes[0].lo, boxes[0].hi)
    mixed = from_module(chain(("softplus", act), (5, 4), 3, 2, 0), (3,))
    with pytest.raises(UnsupportedError):
        boxes = region_boxes(mixed, torch.zeros(1, 3, dtype=F64), torch.tensor([0.1], dtype=F64))
        local_curvature(mixed, torch.tensor([1.0, -1.0], dtype=F64), boxes)


def test_region_boxes_refuses_skips_and_bad_shapes():
    net = skip_network(Activation("softplus"))
    with pytest.raises(UnsupportedError):
        region_boxes(net, torch.zeros(1, net.input_size, dtype=F64), torch.tensor([0.1], dtype=F64))
    chain_net = from_module(chain(("softplus",), (4,), 3, 2, 0), (3,))
    with pytest.raises(UsageError):
        region_boxes(chain_net, torch.zeros(1, 4, dtype=F64), torch.tensor([0.1], dtype=F64))


@pytest.mark.parametrize("acts", [("softplus", "softplus"), ("tanh", "sigmoid", "softplus"), ("sigmoid", "tanh", "tanh"),
                                  ("softplus", "tanh", "softplus")])
def test_one_input_chains_against_a_dense_grid(acts):
    """One input, narrow layers: the interval bounds are nearly tight, and a grid of 4001 points gives f'
    and f'' on the whole ball (an interval), so a missing term of the theorem's P shows as a violation."""
    gen = torch.Generator().manual_seed(len(acts))
    for seed in range(12):
        widths = (1, 1, 1) if seed % 2 == 0 else (2, 1, 2)
        model = chain(acts, widths[: len(acts)], 1, 1, 40 + seed, scale=2.5, beta=2.0)
        net = from_module(model, (1,))
        row = torch.ones(1, dtype=F64)
        center = torch.randn(6, 1, generator=gen, dtype=F64)
        radius = torch.tensor([1e-3, 0.01, 0.05, 0.2, 0.5, 1.5], dtype=F64)
        lc = local_curvature(net, row, region_boxes(net, center, radius))
        grid = center + radius[:, None] * torch.linspace(-1, 1, 4001, dtype=F64)
        g, h = hessians(exact_forward(model), row, grid.reshape(-1, 1))
        g, h = g.reshape(6, -1), h.reshape(6, -1)
        allowance = 1e-12 * (1 + h.abs().amax(1))
        assert (lc.lower <= h.amin(1) + allowance).all(), (acts, seed, lc.lower, h.amin(1))
        assert (h.amax(1) <= lc.upper + allowance).all(), (acts, seed, lc.upper, h.amax(1))
        gallow = 1e-12 * (1 + g.abs().amax(1))
        assert (lc.gradient.lo[:, 0] <= g.amin(1) + gallow).all() and (g.amax(1) <= lc.gradient.hi[:, 0] + gallow).all()


@pytest.mark.parametrize("acts", [("softplus", "softplus"), ("tanh", "sigmoid"), ("sigmoid", "softplus", "tanh")])
def test_two_input_chains_against_a_dense_grid(acts):
    """Two inputs, narrow layers, l-inf balls covered by a 161 x 161 grid: the extreme Hessian eigenvalues and
    gradient coordinates over the ball (up to the grid's resolution) inside the bounds."""
    gen = torch.Generator().manual_seed(10 + len(acts))
    t = torch.linspace(-1, 1, 161, dtype=F64)
    square = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    for seed in range(4):
        widths = ((2, 2, 2), (3, 1, 3), (1, 2, 1), (4, 3, 2))[seed][: len(acts)]
        model = chain(acts, widths, 2, 2, 60 + seed, scale=2.5, beta=2.0)
        net = from_module(model, (2,))
        row = torch.randn(2, generator=gen, dtype=F64)
        center = torch.randn(3, 2, generator=gen, dtype=F64)
        radius = torch.tensor([0.003, 0.05, 0.4], dtype=F64)
        lc = local_curvature(net, row, region_boxes(net, center, radius, math.inf))
        pts = center[:, None] + radius[:, None, None] * square
        g, h = hessians(exact_forward(model), row, pts.reshape(-1, 2))
        eig = torch.linalg.eigvalsh(h).reshape(3, -1, 2)
        g = g.reshape(3, -1, 2)
        allowance = 1e-12 * (1 + eig.abs().amax((1, 2)))
        assert (lc.lower <= eig[..., 0].amin(1) + allowance).all(), (acts, seed, lc.lower, eig[..., 0].amin(1))
        assert (eig[..., 1].amax(1) <= lc.upper + allowance).all(), (acts, seed, lc.upper, eig[..., 1].amax(1))
        gallow = 1e-12 * (1 + g.abs().amax(1))
        assert (lc.gradient.lo <= g.amin(1) + gallow).all() and (g.amax(1) <= lc.gradient.hi + gallow).all()


def test_local_curvature_random_architectures():
    """Seeded random chains: 2-4 layers, widths 1-16, a random activation per layer (softplus of beta 1-5,
    sigmoid, tanh), random rows, l2 and l-inf balls of random radii."""
    gen = torch.Generator().manual_seed(2024)
    names = ("softplus", "sigmoid", "tanh")
    for case in range(24):
        depth = int(torch.randint(1, 4, (1,), generator=gen))
        acts = tuple(names[int(i)] for i in torch.randint(0, 3, (depth,), generator=gen))
        widths = tuple(int(w) for w in torch.randint(1, 17, (depth,), generator=gen))
        inputs = int(torch.randint(1, 7, (1,), generator=gen))
        beta = float(torch.empty(1).uniform_(1.0, 5.0, generator=gen))
        scale = float(torch.empty(1).uniform_(0.5, 3.0, generator=gen))
        model = chain(acts, widths, inputs, 3, 500 + case, scale=scale, beta=beta)
        net = from_module(model, (inputs,))
        row = torch.randn(3, generator=gen, dtype=F64)
        center = torch.randn(2, inputs, generator=gen, dtype=F64) * 2
        radius = 10 ** torch.empty(2, dtype=F64).uniform_(-4, 0.3, generator=gen)
        p = (2, math.inf)[case % 2]
        _bounds_hold(model, net, row, center, radius, p, gen, samples=40, steps=4, grad_attack=inputs <= 4)


# --------------------------------------------------------------------------------------------- input splitting


@pytest.mark.parametrize("n", [1, 2, 3])
def test_cover_cells_cover_the_ball(n):
    """Every point of the unit ball (random, on the sphere, and the points nearest to each dropped cell) lies in
    some covering ball of `cover_cells`; cells that miss the ball are the only ones dropped."""
    from certify.bounds.local import cover_cells
    from certify.vocabulary import SPLIT_CELLS

    grid, relative = cover_cells(n)
    k = round(SPLIT_CELLS ** (1 / n))
    assert grid.shape[1] == n and grid.shape[0] <= k**n
    gen = torch.Generator().manual_seed(n)
    direction = torch.randn(20000, n, generator=gen, dtype=F64)
    on_sphere = direction / direction.norm(dim=1, keepdim=True)
    inside = on_sphere * torch.rand(20000, 1, generator=gen, dtype=F64) ** (1 / n)
    for pts in (on_sphere, inside):
        nearest = (pts[:, None, :] - grid[None]).norm(dim=2).amin(1)
        assert (nearest <= relative).all(), float(nearest.max())


def test_split_constants_are_sound_and_tighter_on_two_inputs():
    """Two inputs: with splitting, the bounds of `local_constants` still enclose the exact Hessian eigenvalues and
    gradients on a dense grid of the l2 ball, and they are tighter than the whole-ball interval bounds."""
    from certify.bounds.local import local_constants

    t = torch.linspace(-1, 1, 201, dtype=F64)
    square = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    disc = square[square.norm(dim=1) <= 1]
    gen = torch.Generator().manual_seed(7)
    for seed, acts in enumerate([("softplus", "softplus"), ("tanh", "sigmoid"), ("softplus", "tanh", "softplus")]):
        model = chain(acts, (16, 12, 8)[: len(acts)], 2, 2, 80 + seed, scale=2.0, beta=2.0)
        net = from_module(model, (2,))
        row = torch.randn(1, 2, generator=gen, dtype=F64).expand(3, -1)
        center = torch.randn(3, 2, generator=gen, dtype=F64)
        radius = torch.tensor([0.05, 0.3, 1.0], dtype=F64)
        split = local_constants(net, center, row, radius)
        whole = local_curvature(net, row, region_boxes(net, center, radius, 2))
        pts = center[:, None] + radius[:, None, None] * disc
        g, h = hessians(exact_forward(model), row[0], pts.reshape(-1, 2))
        eig = torch.linalg.eigvalsh(h).reshape(3, -1, 2)
        g = g.reshape(3, -1, 2)
        allowance = 1e-12 * (1 + eig.abs().amax((1, 2)))
        assert (split.lower <= eig[..., 0].amin(1) + allowance).all()
        assert (eig[..., 1].amax(1) <= split.upper + allowance).all()
        assert (g.norm(dim=-1).amax(1) <= split.lipschitz * (1 + 1e-12)).all()
        assert (split.lower >= whole.lower).all() and (split.upper <= whole.upper).all()  # never looser
        assert (split.upper - split.lower < whole.upper - whole.lower).any()
