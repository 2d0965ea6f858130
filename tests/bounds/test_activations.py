"""Activations: enclosures against mpmath and torch (float64 and float32), the curvature constants against
their high-precision values, and every relaxation against dense sampling and exact enumeration.

Line checks are rigorous: a sampled point passes in float64 only when the line clears the function by far
more than float64 rounding (a relative band of 1e-8); any point inside the band is re-checked with mpmath
at 50 digits (the line in exact arithmetic, the function at high precision), so a test cannot be fooled
by rounding; relu and leaky_relu are checked with fractions at every vertex of the box."""
from __future__ import annotations

import math
from fractions import Fraction

import mpmath as mp
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from certify.bounds.activations import NAMES, SMOOTH, Activation, Relaxation, default_alpha, relax
from certify.errors import UsageError

mp.mp.dps = 50
C = mp.sqrt(2 / mp.pi)
K = mp.mpf("0.044715")

ACTIVATIONS = [
    Activation("relu"),
    Activation("leaky_relu"),
    Activation("leaky_relu", negative_slope=-0.3),
    Activation("leaky_relu", negative_slope=2.5),
    Activation("softplus", 1.0),
    Activation("softplus", 3.0, threshold=15.0),
    *(Activation(name) for name in SMOOTH),
]
IDS = [f"{a.name}-{a.beta if a.name == 'softplus' else a.negative_slope}" if a.name in ("softplus", "leaky_relu") else a.name for a in ACTIVATIONS]


def _sig(v):
    return 1 / (1 + mp.exp(-v))


def exact(act: Activation, x: float) -> mp.mpf:
    """sigma(x) at 50 digits."""
    x = mp.mpf(x)
    name = act.name
    if name == "relu":
        return max(x, mp.mpf(0))
    if name == "leaky_relu":
        return x if x >= 0 else mp.mpf(act.negative_slope) * x
    if name == "softplus":
        b = mp.mpf(act.beta)
        return mp.log1p(mp.exp(b * x)) / b
    if name == "sigmoid":
        return _sig(x)
    if name == "tanh":
        return mp.tanh(x)
    if name == "gelu":
        return x * mp.ncdf(x)
    if name == "gelu_tanh":
        return x * _sig(2 * C * (x + K * x**3))
    return x * _sig(x)


def exact_derivative(act: Activation, x: float) -> mp.mpf:
    """sigma'(x) at 50 digits (closed forms)."""
    x = mp.mpf(x)
    name = act.name
    if name == "softplus":
        return _sig(mp.mpf(act.beta) * x)
    if name == "sigmoid":
        return _sig(x) * _sig(-x)
    if name == "tanh":
        return 1 / mp.cosh(x) ** 2
    if name == "gelu":
        return mp.ncdf(x) + x * mp.npdf(x)
    if name == "gelu_tanh":
        v = 2 * C * (x + K * x**3)
        return _sig(v) + x * _sig(v) * _sig(-v) * 2 * C * (1 + 3 * K * x**2)
    return _sig(x) + x * _sig(x) * _sig(-x)


def torch_function(act: Activation):
    f = torch.nn.functional
    return {
        "relu": f.relu,
        "leaky_relu": lambda z: f.leaky_relu(z, act.negative_slope),
        "softplus": lambda z: f.softplus(z, act.beta, act.threshold),
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "gelu": f.gelu,
        "gelu_tanh": lambda z: f.gelu(z, approximate="tanh"),
        "silu": f.silu,
    }[act.name]


def _points() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    mags = torch.logspace(-30, 4, 200, dtype=torch.float64)
    return torch.cat([
        torch.linspace(-60, 60, 241, dtype=torch.float64),
        mags, -mags,
        torch.tensor([0.0, -0.0, 1e4, -1e4, 745.0, -745.0, 709.5, -709.5, 88.5, -88.5, 5e-324, -5e-324], dtype=torch.float64),
        torch.randn(150, generator=gen, dtype=torch.float64) * 3,
    ])


def test_names_and_refusals():
    assert set(NAMES) == {"relu", "leaky_relu", "softplus", *SMOOTH}
    for bad in (dict(name="elu"), dict(name="softplus", beta=0.0), dict(name="leaky_relu", negative_slope=math.nan)):
        with pytest.raises(UsageError):
            Activation(**bad)
    assert Activation("leaky_relu", negative_slope=0.2).to_json() == {"name": "leaky_relu", "negative_slope": 0.2}
    assert Activation("gelu_tanh").to_json() == {"name": "gelu_tanh"}
    assert Activation("softplus", 2.0, math.inf).to_json() == {"name": "softplus", "beta": 2.0, "threshold": "inf", "gap": 0.0}


@pytest.mark.parametrize("act", ACTIVATIONS + [Activation("softplus", 10.0)], ids=IDS + ["softplus-10.0"])
def test_enclosure_contains_the_exact_value_and_torch_in_float64_and_float32(act):
    z = _points()
    lo, hi = act.enclosure(z)
    assert (lo <= hi).all()
    for i in range(z.numel()):
        e = exact(act, float(z[i]))
        assert mp.mpf(float(lo[i])) <= e <= mp.mpf(float(hi[i])), float(z[i])
    torch64 = torch_function(act)(z)
    assert ((lo <= torch64) & (torch64 <= hi)).all()
    z32 = z.float()
    lo32, hi32 = act.enclosure(z32.double(), torch.float32)
    torch32 = torch_function(act)(z32).double()
    assert ((lo32 <= torch32) & (torch32 <= hi32)).all()
    if act.name == "relu":
        assert torch.equal(lo, torch.relu(z)) and torch.equal(hi, torch.relu(z))
    # and it is tight: a few ulps of the value, or of |z| where torch's 1 + erf / 1 + tanh cancels
    scale = lo.abs() + (z.abs() if act.name in ("gelu", "gelu_tanh") else 0.0)
    finite = z.abs() < 700
    assert ((hi - lo)[finite] <= 1e-12 * scale[finite] + act.threshold_gap + 1e-290).all()


@pytest.mark.parametrize("act", [a for a in ACTIVATIONS if a.name in SMOOTH or a.name == "softplus"], ids=lambda a: a.name)
def test_derivative_enclosure_contains_the_exact_derivative(act):
    z = _points()
    lo, hi = act.derivative_enclosure(z)
    for i in range(z.numel()):
        e = exact_derivative(act, float(z[i]))
        assert mp.mpf(float(lo[i])) <= e <= mp.mpf(float(hi[i])), float(z[i])
    assert ((hi - lo)[z.abs() < 50] <= 1e-11).all()


def _max_abs(f, guess: float) -> mp.mpf:
    """|f| at its local extremum nearest to guess (Newton on f' at 50 digits)."""
    x = mp.findroot(lambda t: mp.diff(f, t), mp.mpf(guess))
    return abs(f(x))


@pytest.mark.parametrize("name", SMOOTH)
def test_lipschitz_and_second_derivative_bounds_are_the_sups_rounded_up(name):
    act = Activation(name)
    grid = torch.linspace(-30, 30, 600001, dtype=torch.float64)
    d1, d2 = act.derivative(grid).abs(), act.second_derivative(grid).abs()
    # float64 samples carry an ulp or two of rounding; the exact comparison is the mpmath one below
    assert float(d1.max()) <= act.lipschitz * (1 + 1e-14) and float(d2.max()) <= act.max_second_derivative * (1 + 1e-14)
    true_lip = _max_abs(lambda t: exact_derivative(act, t), float(grid[d1.argmax()]))
    true_m = _max_abs(lambda t: mp.diff(lambda s: exact(act, s), t, 2), float(grid[d2.argmax()]))
    assert true_lip <= act.lipschitz <= true_lip * (1 + 1e-6)
    assert true_m <= act.max_second_derivative <= true_m * (1 + 1e-6)
    # the sampled sups are the true ones (no larger extremum elsewhere on the grid)
    assert float(d1.max()) >= float(true_lip) * (1 - 1e-6) and float(d2.max()) >= float(true_m) * (1 - 1e-6)


def test_piecewise_and_softplus_constants():
    assert Activation("relu").lipschitz == 1.0 and Activation("relu").max_second_derivative == math.inf
    assert Activation("leaky_relu", negative_slope=2.5).lipschitz == 2.5
    assert Activation("leaky_relu", negative_slope=-0.3).lipschitz == 1.0
    sp = Activation("softplus", 3.0)
    grid = torch.linspace(-30, 30, 100001, dtype=torch.float64)
    assert float(sp.derivative(grid).max()) <= sp.lipschitz and float(sp.second_derivative(grid).max()) <= sp.max_second_derivative


@pytest.mark.parametrize("name", SMOOTH)
def test_curvature_signs_and_stored_inflection_points_and_minimum(name):
    """sigma'' has the sign the relaxation's pieces assume, its zeros lie in the stored brackets, and the
    stored minimum of the dipping activations is bracketed and not above the true minimum."""
    from certify.bounds.activations import _INFLECTION, _MINIMUM, _pieces

    act = Activation(name)
    grid = torch.linspace(-40, 40, 200001, dtype=torch.float64)
    d2 = act.second_derivative(grid)
    for start, end, kind in _pieces(name):
        inside = (grid > start) & (grid < end) & (d2.abs() > 1e-250)
        if kind != 0:
            assert (torch.sign(d2[inside]) == kind).all()
    second = lambda t: mp.diff(lambda s: exact(act, s), t, 2)  # noqa: E731
    if name in _INFLECTION:
        p = _INFLECTION[name]
        for sign in (1, -1):
            assert second(sign * p * (1 - 1e-12)) > 0 > second(sign * p * (1 + 1e-12))
        m, value = _MINIMUM[name]
        assert exact_derivative(act, m * (1 + 1e-12)) < 0 < exact_derivative(act, m * (1 - 1e-12))
        assert value * (1 + 1e-12) <= exact(act, m)
        assert float(act(grid).min()) >= value * (1 + 1e-12)
    else:
        assert second(-1e-3) > 0 > second(1e-3)


MPMATH_POINTS = 120  # per line and call: the points closest to the line (by float slack) and a sample


def _assert_lines_hold(act: Activation, rel: Relaxation, z: torch.Tensor) -> None:
    """lower line <= sigma <= upper line at every point of z [P, ...] (module doc: float pass with a band,
    mpmath inside the band)."""
    z = z.expand(torch.broadcast_shapes(z.shape, *(t.shape for t in (rel.lower_slope, rel.lower_intercept, rel.upper_slope, rel.upper_intercept))))
    value = act(z)
    below = rel.lower_slope * z + rel.lower_intercept
    above = rel.upper_slope * z + rel.upper_intercept
    for line, sign, slope, icpt in ((below, -1, rel.lower_slope, rel.lower_intercept), (above, 1, rel.upper_slope, rel.upper_intercept)):
        slack = sign * (line - value)
        band = 1e-8 * (1 + (slope * z).abs() + icpt.abs() + value.abs())
        assert (slack > -band).all(), f"{act.name}: a line crosses the function by more than rounding"
        unsure = (slack <= band).nonzero()
        if unsure.shape[0] > MPMATH_POINTS:  # keep the test fast: the closest points and a seeded sample
            ratio = (slack / band)[tuple(unsure.T)]
            order = torch.argsort(ratio)
            rest = order[MPMATH_POINTS // 2:][torch.randperm(order.numel() - MPMATH_POINTS // 2, generator=torch.Generator().manual_seed(0))]
            unsure = unsure[torch.cat([order[: MPMATH_POINTS // 2], rest[: MPMATH_POINTS // 2]])]
        for idx in unsure.tolist():
            idx = tuple(idx)
            col = idx[1:]
            x = float(z[idx])
            line_exact = mp.mpf(float(slope.expand_as(z)[idx])) * mp.mpf(x) + mp.mpf(float(icpt.expand_as(z)[idx]))
            assert sign * (line_exact - exact(act, x)) >= 0, (act.name, x, col)


def _dense(lower: torch.Tensor, upper: torch.Tensor, count: int = 2001) -> torch.Tensor:
    frac = torch.linspace(0, 1, count, dtype=torch.float64).reshape(-1, *([1] * lower.dim()))
    inner = torch.minimum(torch.maximum(lower + frac * (upper - lower), lower), upper)
    return torch.cat([inner, lower[None], upper[None]])


@settings(max_examples=15, deadline=None)
@given(
    centre=st.floats(-50, 50),
    log_width=st.floats(-9, 2),
    alpha=st.one_of(st.none(), st.floats(0, 1)),
)
def test_relaxations_enclose_the_activation_on_dense_samples(centre, log_width, alpha):
    width = 10.0**log_width
    lower = torch.tensor([centre - width / 2, -width / 2, -0.7 - width / 2], dtype=torch.float64)
    upper = torch.tensor([centre + width / 2, width / 2, -0.7 + width / 2], dtype=torch.float64)
    a = None if alpha is None else torch.full_like(lower, alpha)
    for act in ACTIVATIONS:
        rel = relax(act, lower, upper, a)
        _assert_lines_hold(act, rel, _dense(lower, upper))


@pytest.mark.parametrize("act", ACTIVATIONS, ids=IDS)
def test_relaxations_hold_on_a_batch_of_boxes_with_rowwise_alphas(act):
    gen = torch.Generator().manual_seed(1)
    centre = (torch.rand(3, 40, generator=gen, dtype=torch.float64) * 2 - 1) * 50
    width = 10 ** (torch.rand(3, 40, generator=gen, dtype=torch.float64) * 11 - 9)
    lower, upper = centre - width / 2, centre + width / 2
    lower[:, :10], upper[:, :10] = -width[:, :10] * 0.3, width[:, :10] * 0.7  # across 0 (and the inflection)
    lower[:, 10:13] = upper[:, 10:13]  # points
    alpha = torch.rand(3, 40, generator=gen, dtype=torch.float64)
    rel = relax(act, lower, upper, alpha)
    assert all(t.shape == lower.shape for t in (rel.lower_slope, rel.lower_intercept, rel.upper_slope, rel.upper_intercept))
    _assert_lines_hold(act, rel, _dense(lower, upper, 801))


def _floats_near(x: float, count: int, direction: float) -> list[float]:
    out, t = [], torch.tensor(x, dtype=torch.float64)
    target = torch.tensor(direction, dtype=torch.float64)
    for _ in range(count):
        out.append(float(t))
        t = torch.nextafter(t, target)
    return out


@pytest.mark.parametrize("act", [a for a in ACTIVATIONS if a.name in SMOOTH or a.name == "softplus"], ids=lambda a: a.name)
def test_lines_hold_at_every_float_near_the_ends_of_tiny_boxes(act):
    """Exact enumeration: boxes of width 1e-12 .. 1e-6; every float within 100 ulps of each end (all
    the floats of the box when it has fewer), checked in mpmath."""
    centres = [-30.0, -2.3993572805154676, -1.4142135623730951, -0.7, 0.0, 1e-3, 0.5, 1.41850400879, 3.0, 40.0]
    for k, centre in enumerate(centres):
        width = 10.0 ** (-12 + 6 * k / (len(centres) - 1))
        lower = torch.tensor([centre - width / 2], dtype=torch.float64)
        upper = torch.tensor([centre + width / 2], dtype=torch.float64)
        points = [p for p in _floats_near(float(lower), 100, math.inf) + _floats_near(float(upper), 100, -math.inf) if float(lower) <= p <= float(upper)]
        for alpha in (None, torch.full((1,), float(k % 2), dtype=torch.float64)):
            rel = relax(act, lower, upper, alpha)
            for x in points:
                s = mp.mpf(x)
                value = exact(act, x)
                assert mp.mpf(float(rel.lower_slope)) * s + mp.mpf(float(rel.lower_intercept)) <= value, (act.name, centre, x)
                assert mp.mpf(float(rel.upper_slope)) * s + mp.mpf(float(rel.upper_intercept)) >= value, (act.name, centre, x)


@pytest.mark.parametrize("act", [a for a in ACTIVATIONS if a.name in ("relu", "leaky_relu")], ids=lambda a: f"{a.name}-{a.negative_slope}")
def test_piecewise_linear_lines_are_exact_at_every_vertex(act):
    """relu / leaky_relu are linear between the vertices l, 0, u: the lines hold on the box iff they hold
    there, checked in exact rational arithmetic."""
    gen = torch.Generator().manual_seed(2)
    centre = (torch.rand(400, generator=gen, dtype=torch.float64) * 2 - 1) * 5
    width = 10 ** (torch.rand(400, generator=gen, dtype=torch.float64) * 14 - 12)
    lower, upper = centre - width, centre + width
    lower[:50], upper[:50] = -width[:50], width[:50]
    s = Fraction(act.negative_slope) if act.name == "leaky_relu" else Fraction(0)

    def f(x: Fraction) -> Fraction:
        return x if x >= 0 else s * x

    for alpha in (None, torch.rand(400, generator=gen, dtype=torch.float64), torch.zeros(400, dtype=torch.float64)):
        rel = relax(act, lower, upper, alpha)
        for i in range(400):
            l, u = Fraction(float(lower[i])), Fraction(float(upper[i]))
            for x in [l, u] + ([Fraction(0)] if l < 0 < u else []):
                assert Fraction(float(rel.lower_slope[i])) * x + Fraction(float(rel.lower_intercept[i])) <= f(x)
                assert Fraction(float(rel.upper_slope[i])) * x + Fraction(float(rel.upper_intercept[i])) >= f(x)


def test_leaky_alpha_rules_follow_relu():
    lower = torch.tensor([-3.0, -1.0, 0.5, -2.0], dtype=torch.float64)
    upper = torch.tensor([1.0, 2.0, 4.0, -0.5], dtype=torch.float64)
    for rule in ("adaptive", "parallel"):
        assert torch.equal(default_alpha(Activation("leaky_relu"), lower, upper, rule), default_alpha(Activation("relu"), lower, upper, rule))
    rel = relax(Activation("leaky_relu", negative_slope=0.1), lower, upper)
    assert torch.equal(rel.lower_slope, torch.tensor([0.1, 1.0, 1.0, 0.1], dtype=torch.float64))
    assert (rel.lower_intercept == 0).all()


@pytest.mark.parametrize("name", SMOOTH)
def test_smooth_relaxations_are_tight(name):
    """The intercepts are the tightest for their slopes (dense sampling finds the extremes within its own
    resolution M h^2 / 8), and on a box where sigma is convex (concave) the upper (lower) line is the chord."""
    act = Activation(name)
    gen = torch.Generator().manual_seed(3)
    centre = (torch.rand(300, generator=gen, dtype=torch.float64) * 2 - 1) * 8
    width = 10 ** (torch.rand(300, generator=gen, dtype=torch.float64) * 4 - 3)
    lower, upper = centre - width / 2, centre + width / 2
    rel = relax(act, lower, upper)
    z = _dense(lower, upper, 4001)
    v = act(z)
    tight_u = (v - rel.upper_slope * z).amax(0)
    tight_l = (v - rel.lower_slope * z).amin(0)
    resolution = act.max_second_derivative * (width / 4000) ** 2 / 8 + 1e-13 * (1 + v.abs().amax(0) + (rel.upper_slope * z).abs().amax(0))
    assert (rel.upper_intercept - tight_u <= resolution).all()
    assert (tight_l - rel.lower_intercept <= resolution).all()
    if name in ("sigmoid", "tanh"):
        convex = upper < 0
        chord = (act(upper) - act(lower)) / width
        assert torch.allclose(rel.upper_slope[convex], chord[convex], rtol=1e-6, atol=1e-9)
        assert torch.allclose(rel.lower_slope[lower > 0], chord[lower > 0], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("act", ACTIVATIONS, ids=IDS)
def test_image_contains_the_range_and_is_tight(act):
    gen = torch.Generator().manual_seed(4)
    centre = (torch.rand(200, generator=gen, dtype=torch.float64) * 2 - 1) * 6
    width = 10 ** (torch.rand(200, generator=gen, dtype=torch.float64) * 5 - 3)
    lower, upper = centre - width / 2, centre + width / 2
    lo, hi = act.image(lower, upper)
    v = act(_dense(lower, upper))
    assert (lo <= v.amin(0)).all() and (v.amax(0) <= hi).all()
    resolution = act.lipschitz * width / 2000 + 1e-12 * (1 + v.abs().amax(0))  # of the 2001 samples
    assert (v.amin(0) - lo <= resolution + act.threshold_gap).all() and (hi - v.amax(0) <= resolution).all()


def test_infinite_and_huge_boxes_get_sound_smooth_lines():
    lower = torch.tensor([-math.inf, 0.0, -1e308], dtype=torch.float64)
    upper = torch.tensor([1.0, math.inf, 1e308], dtype=torch.float64)
    for name in SMOOTH:
        rel = relax(Activation(name), lower, upper)
        assert (rel.lower_intercept == -math.inf).all() and (rel.upper_intercept == math.inf).all()
        assert (rel.lower_slope == 0).all() and (rel.upper_slope == 0).all()
    lower, upper = torch.tensor([-1e6, -1e150], dtype=torch.float64), torch.tensor([1e6, 1e150], dtype=torch.float64)
    for name in SMOOTH:
        rel = relax(Activation(name), lower, upper)
        assert not any(torch.isnan(t).any() for t in (rel.lower_slope, rel.lower_intercept, rel.upper_slope, rel.upper_intercept))
        _assert_lines_hold(Activation(name), rel, _dense(lower, upper, 2001))


@pytest.mark.parametrize("act", ACTIVATIONS, ids=IDS)
def test_rowwise_alphas_broadcast_and_carry_gradients(act):
    """alpha-CROWN relaxes one box [1, 1, n] with one alpha per objective row [1, R, n] and differentiates
    the lines in alpha: the lines broadcast to [1, R, n], hold, and have finite gradients."""
    lower = torch.tensor([[[-2.0, -0.5, 0.3, -4.0]]], dtype=torch.float64)
    upper = torch.tensor([[[1.0, 2.5, 0.9, -1.0]]], dtype=torch.float64)
    alpha = torch.rand(1, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5)).requires_grad_(True)
    rel = relax(act, lower, upper, alpha)
    z = _dense(lower, upper, 101)
    at = (rel.lower_slope * z + rel.lower_intercept).sum() - (rel.upper_slope * z + rel.upper_intercept).sum()
    at.backward()
    assert torch.isfinite(alpha.grad).all()
    assert torch.broadcast_shapes(*(t.shape for t in (rel.lower_slope, rel.lower_intercept, rel.upper_slope, rel.upper_intercept))) == (1, 3, 4)
    _assert_lines_hold(act, Relaxation(*(t.detach() for t in (rel.lower_slope, rel.lower_intercept, rel.upper_slope, rel.upper_intercept))), z)


@pytest.mark.parametrize("act", ACTIVATIONS, ids=IDS)
def test_huge_and_infinite_inputs_give_the_limits_not_nan(act):
    z = torch.tensor([-math.inf, -1e300, -1e40, 1e40, 1e300, math.inf], dtype=torch.float64)
    outputs = [act(z), act.derivative(z), act.second_derivative(z), *act.enclosure(z), *act.enclosure(z, torch.float32),
               *act.image(z[:3], z[3:])]
    if act.name not in ("relu", "leaky_relu"):
        outputs += list(act.derivative_enclosure(z))
    assert not any(torch.isnan(t).any() for t in outputs)
    lo, hi = act.enclosure(z[[0, -1]])
    at_minus_inf = {"leaky_relu": -math.copysign(math.inf, act.negative_slope), "tanh": -1.0}.get(act.name, 0.0)
    at_inf = 1.0 if act.name in ("sigmoid", "tanh") else math.inf
    assert torch.equal(lo, hi) and lo.tolist() == [at_minus_inf, at_inf]


def test_smooth_alpha_moves_the_tangent_and_mixed_boxes_get_crown_lines():
    """On a convex box alpha picks the lower tangent point (the upper line is the chord); across sigmoid's
    inflection point the default lines are CROWN's tangents through an endpoint (sigmoid on [-5, 5]: the
    upper line through (-5, S(-5)) touching S at d, S'(d) = (S(d) - S(-5)) / (d + 5))."""
    act = Activation("sigmoid")
    lower, upper = torch.tensor([-3.0], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64)
    assert torch.equal(default_alpha(act, lower, upper), torch.tensor([0.5], dtype=torch.float64))
    for alpha, point in ((0.0, lower), (1.0, upper), (0.25, lower + 0.5)):
        rel = relax(act, lower, upper, torch.tensor([alpha], dtype=torch.float64))
        assert torch.allclose(rel.lower_slope, act.derivative(point), rtol=1e-12)
        assert torch.allclose(rel.upper_slope, (act(upper) - act(lower)) / 2, rtol=1e-9)
    d = mp.findroot(lambda t: _sig(t) * _sig(-t) - (_sig(t) - _sig(-5)) / (t + 5), 1.5)
    crown = float(_sig(d) * _sig(-d))
    rel = relax(act, torch.tensor([-5.0], dtype=torch.float64), torch.tensor([5.0], dtype=torch.float64))
    assert abs(float(rel.upper_slope) - crown) < 1e-3 * crown and abs(float(rel.lower_slope) - crown) < 1e-3 * crown
    assert float(rel.upper_intercept) - (crown * 5 + float(_sig(-5))) < 1e-3  # the line through (-5, S(-5))
