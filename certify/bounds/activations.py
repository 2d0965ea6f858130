"""Elementwise activations of the networks the verification layer reasons about: their exact values,
rigorous float64 enclosures, derivatives, curvature facts, and sound linear relaxations on a box.

The activations (`NAMES`; torch's modules in brackets):

    relu        max(t, 0)                                   [ReLU]
    leaky_relu  t for t >= 0, s t below (s = negative_slope) [LeakyReLU]
    softplus    log(1 + e^{beta t}) / beta, EXACT             [Softplus; its threshold switch is `threshold_gap`]
    sigmoid     S(t) = 1 / (1 + e^{-t})                      [Sigmoid]
    tanh        tanh t                                       [Tanh]
    gelu        t Phi(t), Phi the standard normal cdf        [GELU(approximate="none")]
    gelu_tanh   t/2 (1 + tanh(c (t + k t^3))) = t S(2c (t + k t^3)),
                c = sqrt(2/pi), k = 0.044715                 [GELU(approximate="tanh")]
    silu        t S(t)                                       [SiLU]

Curvature structure (the relaxations rely on it). relu, softplus and leaky_relu with s <= 1 are convex
(leaky_relu with s > 1 is concave: min(t, s t)). sigmoid and tanh: sigma'' = sigma'(t) * (-2 sigma(t) + 1)
resp. -2 tanh(t) sigma'(t) has the sign of -t, so they are convex on (-inf, 0] and concave on [0, inf).
gelu, gelu_tanh and silu satisfy sigma(t) - sigma(-t) = t, so sigma'' is even, and sigma'' > 0 on
(-p, p), < 0 outside: gelu: sigma'' = phi(t) (2 - t^2), p = sqrt(2). silu: sigma'' = S'(t) (2 - t tanh(t/2)),
and t tanh(t/2) increases from 0 to inf on t > 0, so p is its one root of t tanh(t/2) = 2 (2.39935728...).
gelu_tanh, v = 2c (t + k t^3): sigma'' = S'(v) h(t), h = 2 v' + t v'' - t v'^2 tanh(v/2); for t > 0, h = 0 iff
tanh(v/2) = (1 + 6k t^2) / (c t (1 + 3k t^2)^2), whose left side increases from 0 to 1 and right side
decreases from inf to 0: one root p = 1.41850400879... The inflection points are stored as brackets
[p (1 - 1e-12), p (1 + 1e-12)] (the tests check the sign change of sigma'' across them with mpmath).

Relaxation on a box [l, u] (`relax`): lines a_l z + c_l <= sigma(z) <= a_u z + c_u.

* relu, softplus (convex, increasing; CROWN, Zhang et al. 2018, and the Wong-Kolter dual network with
  lower slopes alpha, Salman et al. 2019): upper line = the chord; lower line: relu a_l = alpha in [0, 1],
  c_l = 0 for an unstable unit; softplus: the tangent at t = l + alpha (u - l). Every upper chord is shifted
  up until it lies above the activation's rigorous enclosure at both endpoints (enough for a convex
  function); the tangent's intercept is lowered by the slope's rounding error times (u - l) and by the gap
  to torch's thresholded softplus.
* leaky_relu: for s <= 1 (convex) as relu with lower slope s + alpha (1 - s) through 0 (any slope in
  [s, 1] through the origin lies below max(t, s t)); for s > 1 (concave: min(t, s t)) mirrored: the chord
  below and the line through 0 with slope s + alpha (1 - s) in [1, s] above.
* sigmoid, tanh, gelu, gelu_tanh, silu (smooth, not convex): one generic scheme. Slopes: the tangent
  slope at t_alpha = l + alpha (u - l), clamped into the range of slopes of the supporting lines of the
  concave (upper) resp. convex (lower) envelope of sigma on [l, u], estimated from secants on a 16-point
  grid (so on a convex box the upper slope is the chord and the lower line the tangent at t_alpha, on a
  concave box the reverse, and across an inflection point both lines touch the envelope as CROWN's
  tangent-through-an-endpoint lines do). The slopes need no rigour: each intercept is then computed
  rigorously as the max (upper) / min (lower) over [l, u] of g(t) = sigma(t) - a t, by splitting [l, u] at
  the inflection brackets into pieces where sigma is convex, concave, or (inside a bracket of width ~1e-12)
  neither. On a piece [a, b] where g is convex its max is max(g(a), g(b)); where g is concave, for any
  t^ in [a, b] g(t) <= g(t^) + g'(t^) (t - t^) (tangent above a concave function), so with t^ found by
  bisection and Newton steps on the monotone sigma' (sigma'(t^) ~ a) the bound is
  g(t^) + max(g'(t^)^+ (b - t^), (-g'(t^))^+ (t^ - a)), tight to rounding; the min is symmetric; on a
  bracket piece, max(g(a), g(b)) + M (b - a)^2 / 8 with M = sup |sigma''| (linear interpolation error).
  sigma and sigma' are taken from rigorous enclosures (`enclosure`, `derivative_enclosure`) and every sum
  is widened by its rounding error, so the lines hold for the exact sigma in real arithmetic.
  A box with an infinite end (or a width that overflows) gets vacuous lines (slope 0, intercepts -inf / +inf).

`default_alpha` gives the tangent point (alpha = 1/2: the tangent at the midpoint minimises the area
between the line and a convex or concave function) or relu's CROWN / parallel rule; alpha-CROWN optimises
alpha in [0, 1] for every activation (for the smooth ones one alpha moves both lines' slopes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from certify.bounds.sets import UNIT_ROUNDOFF, rounding_margin
from certify.errors import UsageError

FLOAT32_UNIT = 2.0**-24  # reference resolution for the softplus threshold rule


def softplus_gap(beta: float, threshold: float) -> float:
    """sup_t (exact softplus - torch's thresholded softplus) = log1p(e^{-threshold}) / beta, rounded up."""
    if threshold == math.inf:
        return 0.0
    return math.log1p(math.exp(-threshold)) / beta * (1 + 1e-14) + 1e-300


def softplus_threshold_accepted(threshold: float) -> bool:
    """The switch to the identity is below float32 resolution of the value where it happens."""
    return threshold == math.inf or (math.isfinite(threshold) and threshold > 0 and math.log1p(math.exp(-threshold)) <= FLOAT32_UNIT * threshold)


NAMES = ("relu", "leaky_relu", "softplus", "sigmoid", "tanh", "gelu", "gelu_tanh", "silu")
SMOOTH = ("sigmoid", "tanh", "gelu", "gelu_tanh", "silu")  # the generic relaxation scheme (module doc)

GELU_TANH_C = math.sqrt(2.0 / math.pi)
GELU_TANH_K = 0.044715
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_UP = 1.0 + 1e-12  # outward rounding of constants evaluated in float64 (errors ~1e-16 relative)

# Inflection points p of the gelu-like activations (sigma'' > 0 on (-p, p); module doc), from mpmath at 50
# digits; the relaxation brackets each by a relative 1e-12.
_INFLECTION = {"gelu": math.sqrt(2.0), "gelu_tanh": 1.4185040087908283555, "silu": 2.3993572805154676678}

# sup sigma' (= sup |sigma'|: the negative dips are smaller), attained at the inflection point p:
# sigmoid S'(0) = 1/4; tanh 1 - tanh(0)^2 = 1; gelu Phi(sqrt 2) + sqrt 2 phi(sqrt 2) = 1.12890414518515478634;
# silu S(p) (1 + p (1 - S(p))) = 1.09983932012886691696; gelu_tanh at its p: 1.12899306865877176546
# (mpmath, 50 digits; the tests recompute them). Rounded up by _UP.
_LIPSCHITZ = {
    "sigmoid": 0.25, "tanh": 1.0, "gelu": 1.12890414518515478634 * _UP,
    "gelu_tanh": 1.12899306865877176546 * _UP, "silu": 1.09983932012886691696 * _UP,
}

# (argmin, min) of the activations that dip below 0: sigma'(m) = 0 (gelu: Phi(m) + m phi(m) = 0; silu:
# 1 + m (1 - S(m)) = 0), from mpmath at 50 digits (the tests recompute them).
_MINIMUM = {
    "gelu": (-0.75179152469356445746, -0.16997120747990366169),
    "gelu_tanh": (-0.75246142207101625849, -0.17004075057125405064),
    "silu": (-1.2784645427610737951, -0.27846454276107379511),
}

# sup |sigma''|: sigmoid: S'' = y (1 - y)(1 - 2y), y = S(t), is largest at y = (3 - sqrt 3)/6: sqrt(3)/18;
# tanh: 2y(1 - y^2), y = tanh t, at y = 1/sqrt 3: 4 / (3 sqrt 3); gelu: phi(t)|2 - t^2|, which peaks at
# t = 0 (2 phi(0) = sqrt(2/pi)) and at t = +-2 (2 phi(2) = 0.108); silu: sigma''(0) = 1/2 (on (0, p) both
# factors S'(t) and 2 - t tanh(t/2) decrease; beyond p, |sigma''| <= e^{-t} (t - 2) <= e^{-3}); gelu_tanh:
# sigma''(0) = c = sqrt(2/pi) (the lobes beyond p reach -0.1079; mpmath on a 1/50 grid over [-10, 10]).
_MAX_SECOND = {
    "sigmoid": math.sqrt(3.0) / 18.0 * _UP, "tanh": 4.0 / (3.0 * math.sqrt(3.0)) * _UP,
    "gelu": math.sqrt(2.0 / math.pi) * _UP, "gelu_tanh": math.sqrt(2.0 / math.pi) * _UP, "silu": 0.5 * _UP,
}

# Roundings of one evaluation, in units of the roundoff u, relative to the scale `evaluation_error` uses:
# torch's kernels (ATen CPU: Sleef exp/tanh/erf within 1 ulp in float64; the AVX float32 erf is
# Abramowitz-Stegun 7.1.26, |error| <= 1.5e-7 = 2.6 u) take at most ~6 roundings per value; 16 is generous.
_ROUNDINGS = 16.0


@dataclass(frozen=True)
class Activation:
    """An elementwise activation of N (`NAMES`, module doc): `beta` is softplus's sharpness, `threshold`
    records torch's switch of softplus to the identity (beta t > threshold), which N does not apply (its
    effect is bounded by `AffineNetwork.deviation`), `negative_slope` is leaky_relu's slope for t < 0.
    Raises UsageError for an unknown name, beta <= 0 or a non-finite slope."""

    name: str  # one of NAMES
    beta: float = 1.0  # softplus sharpness
    threshold: float = 20.0  # softplus switch recorded from torch
    negative_slope: float = 0.01  # leaky_relu slope for t < 0

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise UsageError(f"unknown activation {self.name!r}; the verification layer models {', '.join(NAMES)}")
        if self.name == "softplus" and not (self.beta > 0 and math.isfinite(self.beta)):
            raise UsageError(f"softplus needs a finite beta > 0, got {self.beta}")
        if self.name == "leaky_relu" and not math.isfinite(self.negative_slope):
            raise UsageError(f"leaky_relu needs a finite negative_slope, got {self.negative_slope}")

    # ---- values -------------------------------------------------------------------------------------

    def __call__(self, z: Tensor) -> Tensor:
        """sigma(z) elementwise in z's dtype, by formulas accurate to a few ulps relative to the value
        (no cancellation: gelu via erfc, gelu_tanh and silu via the sigmoid), any shape."""
        name = self.name
        if name == "relu":
            return torch.relu(z)
        if name == "leaky_relu":
            return torch.where(z >= 0, z, self.negative_slope * z)
        if name == "softplus":
            return torch.relu(z) + torch.log1p(torch.exp(-self.beta * z.abs())) / self.beta
        if name == "sigmoid":
            return torch.sigmoid(z)
        if name == "tanh":
            return torch.tanh(z)
        if name == "gelu":
            value = z * (0.5 * torch.special.erfc(-_INV_SQRT2 * z))
        elif name == "gelu_tanh":
            value = z * torch.sigmoid(_gelu_tanh_v(z))
        else:  # silu
            value = z * torch.sigmoid(z)
        return torch.where(z == -math.inf, 0.0, value)  # the limit, not -inf * 0

    def derivative(self, z: Tensor) -> Tensor:
        """sigma'(z) elementwise (relu: 0 at 0; leaky_relu: 1 at 0), any shape."""
        name = self.name
        if name == "relu":
            return (z > 0).to(z.dtype)
        if name == "leaky_relu":
            return torch.where(z >= 0, torch.ones_like(z), torch.full_like(z, self.negative_slope))
        if name == "softplus":
            return torch.sigmoid(self.beta * z)
        # the limits at +-inf, not inf * 0: the gelu-like ones (those with stored inflection points) tend to t
        at_inf = torch.where(z > 0, 1.0 if name in _INFLECTION else 0.0, 0.0)
        return torch.where(torch.isinf(z), at_inf, sum(_derivative_terms(name, z)))

    def second_derivative(self, z: Tensor) -> Tensor:
        """sigma''(z) elementwise for the smooth activations (softplus and `SMOOTH`; relu and leaky_relu: 0
        away from the kink, where it does not exist), any shape. Not rounded outward."""
        return torch.where(torch.isinf(z), 0.0, self._second_derivative(z))  # the limits, not inf * 0

    def _second_derivative(self, z: Tensor) -> Tensor:
        name = self.name
        if name in ("relu", "leaky_relu"):
            return torch.zeros_like(z)
        if name == "softplus":
            return self.beta * torch.sigmoid(self.beta * z) * torch.sigmoid(-self.beta * z)
        if name == "sigmoid":
            return torch.sigmoid(z) * torch.sigmoid(-z) * -torch.tanh(z / 2)
        if name == "tanh":
            return -2.0 * torch.tanh(z) * _sech2(z)
        if name == "gelu":
            z2 = _square(z)
            return torch.exp(-0.5 * z2) * _INV_SQRT_2PI * (2.0 - z2)
        if name == "silu":
            return torch.sigmoid(z) * torch.sigmoid(-z) * (2.0 - z * torch.tanh(z / 2))
        v = _gelu_tanh_v(z)
        zc = z.clamp(-1e30, 1e30)
        dv = 2 * GELU_TANH_C * (1 + 3 * GELU_TANH_K * zc * zc)
        ddv = 12 * GELU_TANH_C * GELU_TANH_K * zc
        return torch.sigmoid(v) * torch.sigmoid(-v) * (2 * dv + zc * ddv - zc * dv * dv * torch.tanh(v / 2))

    def evaluation_error(self, z: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
        """Bound [same shape as z] on |computed - exact sigma(z)| for both this module's float64 value
        (`__call__`) and torch's own kernel run in `dtype` (float64 or float32) at the same z, which must be
        representable in `dtype`; without softplus's threshold switch (`enclosure` adds it). relu is exact.

        Sources of the bound, with u = the dtype's unit roundoff plus float64's: each kernel takes at most
        ~6 roundings (ATen CPU: Sleef exp / tanh / erf within 1 ulp in float64; the AVX float32 erf is
        Abramowitz-Stegun 7.1.26, |error| <= 1.5e-7 = 2.6 u), counted as 16 u relative to |sigma(z)|, and
        for gelu and gelu_tanh relative to |sigma(z)| + |z|, because torch forms 1 + erf resp. 1 + tanh,
        which cancels for z < 0. The rounding of an inner argument y (and of the constants 1/sqrt 2, c, k)
        is amplified by the log-derivative of the outer function: softplus log1p(e^y): |y| times its
        non-linear part; gelu erfc(-w), w = z / sqrt 2: 2 w^2 + 2 = z^2 + 2 for z < 0 (asymptotic
        expansion of erfc), < 0.5 for z >= 0; gelu_tanh S(v): |v| S(-v), counted 4x for the rounded
        constants. An underflow floor 4 tiny (1 + |z|) covers torch returning 0 where e^{|z|} overflows."""
        name = self.name
        if name == "relu":
            return torch.zeros_like(z)
        u = torch.finfo(dtype).eps / 2 + UNIT_ROUNDOFF
        floor = 4.0 * torch.finfo(dtype).tiny * (1.0 + z.abs())
        value = self(z).abs()
        if name == "leaky_relu":
            return 2.0 * u * value + floor
        if name == "softplus":
            # about 4 roundings in each formula: 8 u of the dtype covers both (float64's own is below it)
            u = torch.finfo(dtype).eps / 2
            nonlinear = torch.log1p(torch.exp(-self.beta * z.abs())) / self.beta
            return 8.0 * u * value + 2.0 * u * self.beta * z.abs() * nonlinear + floor.clamp(min=1e-300)
        if name in ("sigmoid", "tanh", "silu"):
            return _ROUNDINGS * u * value + floor
        if name == "gelu":
            amplify = 2.0 * torch.where(z < 0, _square(z) + 2.0, 1.0)
        else:
            v = _gelu_tanh_v(z)
            amplify = 4.0 * v.abs().clamp(max=800.0) * torch.sigmoid(-v)  # S(v) is 0 or 1 beyond 800
        return _ROUNDINGS * u * (value + z.abs()) + amplify * u * value + floor

    def enclosure(self, z: Tensor, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
        """Rigorous float64 enclosure (lo, hi) [same shape as z] of sigma(z), covering the exact value
        and torch's kernel in `dtype` (`evaluation_error`), and for softplus also torch's thresholded
        version (it returns z where beta z > threshold, below the exact value by log1p(e^{-beta z}) / beta
        <= threshold_gap)."""
        value = self(z)
        if self.name == "relu":
            return value, value
        margin = self.evaluation_error(z, dtype)
        lo = torch.minimum(value, torch.where(self.switched(z, dtype), z, value)) if self.name == "softplus" else value
        infinite = torch.isinf(z)  # the limits sigma(+-inf), exactly
        return torch.where(infinite, value, lo - margin), torch.where(infinite, value, value + margin)

    def switched(self, z: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
        """Where torch's softplus (in `dtype`) may return z itself (beta z > threshold, the comparison
        widened by the rounding of beta z: a relative max(1e-12, 8 eps)); all False for the others."""
        if self.name != "softplus":
            return torch.zeros_like(z, dtype=torch.bool)
        widen = max(1e-12, 8 * torch.finfo(dtype).eps) * abs(self.threshold)
        return self.beta * z > self.threshold - widen

    def image(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        """Rigorous range (lo, hi) of sigma over [lower, upper] (elementwise, any shape), covering what
        `enclosure` covers. Nondecreasing activations: the enclosures at the ends. gelu, gelu_tanh, silu
        and leaky_relu with s < 0 decrease up to their minimum point m and increase after it: hi is the
        larger end, lo the end value when m is outside [l, u] and the minimum value otherwise (m and the
        minimum from mpmath at 50 digits, bracketed by a relative 1e-12: `_MINIMUM`)."""
        lo_l, hi_l = self.enclosure(lower)
        lo_u, hi_u = self.enclosure(upper)
        if self.nondecreasing:
            return lo_l, hi_u
        m, value = _MINIMUM.get(self.name, (0.0, 0.0))
        m_lo, m_hi = m * (1 + 1e-12), m * (1 - 1e-12)  # m <= 0
        inner = torch.full_like(lo_l, value * (1 + 1e-12))
        lo = torch.where(lower >= m_hi, lo_l, torch.where(upper <= m_lo, lo_u, inner))
        return lo, torch.maximum(hi_l, hi_u)

    def derivative_enclosure(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Rigorous float64 enclosure (lo, hi) [same shape as z] of the exact sigma'(z) for the smooth
        activations (`SMOOTH` and softplus): the float64 derivative widened by 16 u times the sum of its
        terms' magnitudes, each amplified by the sensitivity to the rounding of its inner argument (as in
        `evaluation_error`), plus an underflow floor. Raises UsageError for relu and leaky_relu."""
        if self.name in ("relu", "leaky_relu"):
            raise UsageError(f"{self.name} has no derivative at 0; its relaxation does not use one")
        if self.name == "softplus":
            y = self.beta * z
            terms, amplify = (torch.sigmoid(y),), (1.0 + y.abs() * torch.sigmoid(-y),)
        else:
            terms = _derivative_terms(self.name, z)
            amplify = _derivative_amplification(self.name, z)
        value = sum(terms)
        scale = sum(a * t.abs() for a, t in zip(amplify, terms))
        margin = _ROUNDINGS * UNIT_ROUNDOFF * scale + 4.0 * torch.finfo(torch.float64).tiny * (1.0 + z.abs())
        infinite, limit = torch.isinf(z), self.derivative(z)  # the limits sigma'(+-inf), exactly
        return torch.where(infinite, limit, value - margin), torch.where(infinite, limit, value + margin)

    # ---- facts --------------------------------------------------------------------------------------

    @property
    def lipschitz(self) -> float:
        """sup_t |sigma'(t)|, rounded up: 1 for relu and softplus (sup of sigmoid(beta t) < 1),
        max(1, |s|) for leaky_relu, and for the smooth ones the value at the inflection point (see
        `_LIPSCHITZ`: 1/4 sigmoid, 1 tanh, 1.1289 gelu, 1.1290 gelu_tanh, 1.0998 silu)."""
        if self.name in ("relu", "softplus"):
            return 1.0
        if self.name == "leaky_relu":
            return max(1.0, abs(self.negative_slope))
        return _LIPSCHITZ[self.name]

    @property
    def max_second_derivative(self) -> float:
        """sup_t |sigma''(t)|, rounded up: beta/4 for softplus, `_MAX_SECOND` for the smooth ones
        (sigmoid sqrt(3)/18, tanh 4/(3 sqrt 3), gelu and gelu_tanh sqrt(2/pi), silu 1/2); relu and
        leaky_relu have no bounded second derivative (inf)."""
        if self.name == "softplus":
            return self.beta / 4.0
        return _MAX_SECOND.get(self.name, math.inf)

    @property
    def threshold_gap(self) -> float:
        """sup of (exact softplus - torch's thresholded softplus) = log1p(e^{-threshold}) / beta; 0 for the
        others (torch computes the function N uses)."""
        return softplus_gap(self.beta, self.threshold) if self.name == "softplus" else 0.0

    @property
    def nondecreasing(self) -> bool:
        """Whether sigma is nondecreasing, so its range over [l, u] is [sigma(l), sigma(u)] (false for
        gelu, gelu_tanh, silu, which dip below 0, and leaky_relu with a negative slope)."""
        if self.name == "leaky_relu":
            return self.negative_slope >= 0
        return self.name in ("relu", "softplus", "sigmoid", "tanh")

    def to_json(self) -> dict[str, Any]:
        """The activation as a JSON object: its name, plus softplus's beta, threshold and gap, or leaky_relu's slope."""
        if self.name == "softplus":
            return {
                "name": "softplus",
                "beta": self.beta,
                "threshold": self.threshold if math.isfinite(self.threshold) else "inf",
                "gap": self.threshold_gap,
            }
        if self.name == "leaky_relu":
            return {"name": "leaky_relu", "negative_slope": self.negative_slope}
        return {"name": self.name}


def _gelu_tanh_v(z: Tensor) -> Tensor:
    """v = 2c (z + k z^3), so gelu_tanh(z) = z S(v); z is clipped to +-1e30 first (v stays finite, and
    S(v) is already 0 or 1 there)."""
    z = z.clamp(-1e30, 1e30)
    return (2 * GELU_TANH_C) * (z + GELU_TANH_K * z * z * z)


def _square(z: Tensor) -> Tensor:
    """z^2 clipped at 1e4: exp(-z^2/2) and the gelu terms it multiplies underflow long before, and the
    clip keeps products like inf * 0 out of the error bounds."""
    return (z * z).clamp(max=1e4)


def _sech2(z: Tensor) -> Tensor:
    """1 - tanh(z)^2 without cancellation: 4 S(2z) S(-2z)."""
    return 4.0 * torch.sigmoid(2 * z) * torch.sigmoid(-2 * z)


def _derivative_terms(name: str, z: Tensor) -> tuple[Tensor, ...]:
    """sigma'(z) of a smooth activation as a sum of terms (their magnitudes size the rounding error)."""
    if name == "sigmoid":
        return (torch.sigmoid(z) * torch.sigmoid(-z),)
    if name == "tanh":
        return (_sech2(z),)
    if name == "gelu":
        return (0.5 * torch.special.erfc(-_INV_SQRT2 * z), z * torch.exp(-0.5 * _square(z)) * _INV_SQRT_2PI)
    if name == "silu":
        s = torch.sigmoid(z)
        return (s, z * s * torch.sigmoid(-z))
    v = _gelu_tanh_v(z)  # gelu_tanh: S(v) + z S'(v) v'
    zc = z.clamp(-1e30, 1e30)
    return (torch.sigmoid(v), z * torch.sigmoid(v) * torch.sigmoid(-v) * (2 * GELU_TANH_C) * (1 + 3 * GELU_TANH_K * zc * zc))


def _derivative_amplification(name: str, z: Tensor) -> tuple[Any, ...]:
    """Per term of `_derivative_terms`, the factor by which the rounding of inner arguments and constants
    amplifies its relative error (gelu: erfc(-w) as in `evaluation_error`, exp(-z^2/2) by z^2 + 1;
    gelu_tanh: S(v) by 4 |v| S(-v), S'(v) by 4 |v|)."""
    if name == "gelu":
        return (1.0 + 2.0 * torch.where(z < 0, _square(z) + 2.0, 1.0), 2.0 + _square(z))
    if name == "gelu_tanh":
        v = _gelu_tanh_v(z).abs().clamp(max=800.0)
        return (1.0 + 4.0 * v * torch.sigmoid(-v), 2.0 + 4.0 * v)
    return (1.0, 1.0)  # zip with the terms stops at their count


@dataclass
class Relaxation:
    """Lines a_l z + c_l <= sigma(z) <= a_u z + c_u valid on a box [l, u], each [N, n] (or [N, m, n] with
    one relaxation per objective row)."""

    lower_slope: Tensor
    lower_intercept: Tensor
    upper_slope: Tensor
    upper_intercept: Tensor

    def gap(self, lower: Tensor, upper: Tensor) -> Tensor:
        """max over [l, u] of (upper line - lower line), >= 0 (a linear function: attained at an endpoint)."""
        d_slope = self.upper_slope - self.lower_slope
        d_icpt = self.upper_intercept - self.lower_intercept
        return torch.maximum(d_slope * lower + d_icpt, d_slope * upper + d_icpt).clamp(min=0)


SLOPE_RULES = ("adaptive", "parallel")


def default_alpha(activation: Activation, lower: Tensor, upper: Tensor, rule: str = "adaptive") -> Tensor:
    """Relaxation parameter alpha [same shape as lower] (module doc). relu and leaky_relu: "adaptive"
    (CROWN) takes slope 1 if u >= -l else the negative side's slope; "parallel" (Wong-Kolter's dual
    network) takes u / (u - l), parallel to the chord. softplus and the smooth activations: 1/2 (the
    tangent at the midpoint) under either rule."""
    if activation.name not in ("relu", "leaky_relu"):
        return torch.full_like(lower, 0.5)
    if rule == "parallel":
        return (upper / (upper - lower).clamp(min=1e-300)).clamp(0, 1)
    return (upper >= -lower).to(lower.dtype)


def relax(activation: Activation, lower: Tensor, upper: Tensor, alpha: Tensor | None = None) -> Relaxation:
    """Rigorous linear relaxation of `activation` on [lower, upper] (elementwise, [N, n] or [N, m, n];
    alpha the same shape, clamped to [0, 1]; None: `default_alpha`). Module doc for the lines per activation."""
    alpha = default_alpha(activation, lower, upper) if alpha is None else alpha.clamp(0, 1)
    if activation.name == "leaky_relu":
        return _relax_leaky(activation, lower, upper, alpha)
    if activation.name in SMOOTH:
        return _relax_smooth(activation, lower, upper, alpha)
    return _relax_convex(activation, lower, upper, alpha)


def _relax_convex(activation: Activation, lower: Tensor, upper: Tensor, alpha: Tensor) -> Relaxation:
    """relu and softplus: the chord above, relu's alpha line or softplus's tangent below."""
    width = upper - lower
    value_lo_l, value_hi_l = activation.enclosure(lower)
    value_lo_u, value_hi_u = activation.enclosure(upper)
    # upper chord, then shifted to lie above the enclosure at both endpoints
    flat = width <= 1e-12 * (1 + upper.abs())
    chord = (value_hi_u - value_lo_l) / width.masked_fill(flat, 1.0)
    if activation.name == "relu":  # exact slopes on stable units; relu'(u) = 1 on a flat unstable box
        on, off = lower >= 0, upper <= 0
        slope_u = chord.masked_fill_(flat, 1.0).masked_fill_(off, 0.0).masked_fill_(on, 1.0)
    else:
        slope_u = torch.where(flat, activation.derivative(upper), chord)
    icpt_u = torch.maximum(value_hi_l - slope_u * lower, value_hi_u - slope_u * upper)
    icpt_u = icpt_u + rounding_margin(icpt_u.abs() + slope_u.abs() * torch.maximum(lower.abs(), upper.abs()), 2)
    if activation.name == "relu":
        slope_l = _relu_lower_slope(on, off, alpha)
        icpt_l = torch.zeros_like(slope_l)
    else:
        point = lower + alpha * width
        slope_l = activation.derivative(point)
        value_lo_t, _ = activation.enclosure(point)
        icpt_l = value_lo_t - slope_l * point
        slope_error = 4 * UNIT_ROUNDOFF * slope_l * width
        icpt_l = icpt_l - slope_error - rounding_margin(value_lo_t.abs() + (slope_l * point).abs(), 2)
        # the tangent touches the exact softplus; torch's thresholded one lies below it by at most this
        icpt_l = icpt_l - torch.where(activation.switched(upper), activation.threshold_gap, 0.0)
    return Relaxation(slope_l, icpt_l, slope_u, icpt_u)


def _relu_lower_slope(on: Tensor, off: Tensor, alpha: Tensor) -> Tensor:
    """relu's lower slope on [l, u]: alpha (in [0, 1]) on an unstable unit, the exact 1 (on: l >= 0, first) or
    0 (off: u <= 0) on a stable one; the lower intercept is 0 either way."""
    if not alpha.shape == on.shape == off.shape:  # e.g. per-row alphas on a per-unit box: all to one shape
        alpha, on, off = torch.broadcast_tensors(alpha, on, off)
    return alpha.masked_fill(off, 0.0).masked_fill_(on, 1.0)


def relax_with_alpha(activation: Activation, relaxation: Relaxation, lower: Tensor, upper: Tensor,
                     alpha: Tensor) -> Relaxation:
    """`relax(activation, lower, upper, alpha)`, given `relaxation`, the relaxation `relax` built on the same
    box [lower, upper] with another alpha of the same shape: the same numbers, at less cost for relu, whose
    upper chord and lower intercept 0 do not depend on alpha (they are reused, the same tensors); other
    activations are relaxed anew."""
    if activation.name != "relu":
        return relax(activation, lower, upper, alpha)
    slope = _relu_lower_slope(lower >= 0, upper <= 0, alpha.clamp(0, 1))
    return Relaxation(slope, relaxation.lower_intercept, relaxation.upper_slope, relaxation.upper_intercept)


def _relax_leaky(activation: Activation, lower: Tensor, upper: Tensor, alpha: Tensor) -> Relaxation:
    """max(t, s t) (s <= 1, convex) or min(t, s t) (s > 1, concave): the chord on one side, a line through
    the origin with slope between s and 1 on the other; exact lines on stable units."""
    s = activation.negative_slope
    lo_l, hi_l = activation.enclosure(lower)
    lo_u, hi_u = activation.enclosure(upper)
    width = (upper - lower).clamp(min=1e-300)
    chord = ((hi_u - lo_l) if s <= 1 else (lo_u - hi_l)) / width
    chord = chord.clamp(min(s, 1.0), max(s, 1.0))
    pinned = (s + alpha * (1 - s)).clamp(min(s, 1.0), max(s, 1.0))  # in [s, 1]: through 0, on the right side
    reach = torch.maximum(lower.abs(), upper.abs())
    if s <= 1:
        chord_icpt = torch.maximum(hi_l - chord * lower, hi_u - chord * upper)
        chord_icpt = chord_icpt + rounding_margin(chord_icpt.abs() + chord.abs() * reach, 2)
    else:
        chord_icpt = torch.minimum(lo_l - chord * lower, lo_u - chord * upper)
        chord_icpt = chord_icpt - rounding_margin(chord_icpt.abs() + chord.abs() * reach, 2)
    zero = torch.zeros_like(chord)
    # stable units: sigma is the line z (l >= 0) or s z (u <= 0), exactly
    stable = torch.where(lower >= 0, torch.ones_like(chord), torch.full_like(chord, s))
    is_stable = (lower >= 0) | (upper <= 0)
    chord = torch.where(is_stable, stable, chord)
    chord_icpt = torch.where(is_stable, zero, chord_icpt)
    pinned = torch.where(is_stable, stable, pinned)
    if s <= 1:
        return Relaxation(pinned, zero, chord, chord_icpt)
    return Relaxation(chord, chord_icpt, pinned, zero)


# ---- the generic relaxation of the smooth activations ----------------------------------------------

_SLOPE_GRID = 16  # secant samples that estimate the envelopes' slope ranges (tightness only)
_BISECTIONS = 16  # bisection steps for the tangent point of a piece (tightness only) ...
_NEWTON_STEPS = 3  # ... then Newton steps inside the bracket
_CONVEX, _CONCAVE, _MIXED = 1, -1, 0


def _pieces(name: str) -> list[tuple[float, float, int]]:
    """(start, end, kind) of the intervals of the real line on which sigma is convex / concave, with the
    inflection brackets as MIXED pieces (module doc)."""
    if name in ("sigmoid", "tanh"):
        return [(-math.inf, 0.0, _CONVEX), (0.0, math.inf, _CONCAVE)]
    p = _INFLECTION[name]
    lo, hi = p * (1 - 1e-12), p * (1 + 1e-12)
    return [(-math.inf, -hi, _CONCAVE), (-hi, -lo, _MIXED), (-lo, lo, _CONVEX), (lo, hi, _MIXED), (hi, math.inf, _CONCAVE)]


def _smooth_slopes(activation: Activation, lower: Tensor, upper: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor]:
    """(lower slope, upper slope): sigma'(l + alpha (u - l)) clamped into the estimated slope ranges of the
    convex resp. concave envelope on [l, u] (module doc). Not rigorous and need not be."""
    width = upper - lower
    frac = torch.linspace(0, 1, _SLOPE_GRID + 1, dtype=lower.dtype, device=lower.device).reshape(-1, *([1] * lower.dim()))
    grid = lower + frac * width
    values = activation(grid)
    span = torch.where(width > 0, width, torch.ones_like(width)) * frac
    from_l = (values[1:] - values[0]) / span[1:]  # secants from (l, sigma(l))
    to_u = (values[-1] - values[:-1]) / (span[-1] - span[:-1])  # secants to (u, sigma(u))
    d_l, d_u = activation.derivative(lower), activation.derivative(upper)
    d_alpha = activation.derivative(lower + alpha * width)
    upper_lo = torch.minimum(d_u, to_u.amin(0))  # concave envelope: slopes from its right end ...
    upper_hi = torch.maximum(d_l, from_l.amax(0))  # ... to its left end
    lower_lo = torch.minimum(d_l, from_l.amin(0))  # convex envelope: from its left end ...
    lower_hi = torch.maximum(d_u, to_u.amax(0))  # ... to its right end
    slope_u = torch.minimum(torch.maximum(d_alpha, upper_lo), upper_hi)
    slope_l = torch.minimum(torch.maximum(d_alpha, lower_lo), lower_hi)
    flat = width <= 0
    return torch.where(flat, d_l, slope_l), torch.where(flat, d_l, slope_u)


def _tangent_point(activation: Activation, a: Tensor, b: Tensor, slope: Tensor, kind: Tensor) -> Tensor:
    """t in [a, b] with sigma'(t) ~ slope, where sigma' is increasing (kind = CONVEX) or decreasing
    (CONCAVE): bisection, then Newton steps kept inside the final bracket (an endpoint when the slope is
    out of sigma''s range there). Any t is sound; a closer one makes the tangent bound tighter."""
    lo, hi = a, b
    for _ in range(_BISECTIONS):
        mid = lo + (hi - lo) / 2
        go_right = kind * (activation.derivative(mid) - slope) < 0
        lo, hi = torch.where(go_right, mid, lo), torch.where(go_right, hi, mid)
    t = lo + (hi - lo) / 2
    for _ in range(_NEWTON_STEPS):
        curvature = activation.second_derivative(t)
        step = (activation.derivative(t) - slope) / torch.where(curvature == 0, torch.ones_like(curvature), curvature)
        t = torch.where((curvature == 0) | ~torch.isfinite(step), t, t - step)
        t = torch.minimum(torch.maximum(t, lo), hi)
    return t


def _relax_smooth(activation: Activation, lower: Tensor, upper: Tensor, alpha: Tensor) -> Relaxation:
    """The generic rigorous scheme of the module doc for `SMOOTH` activations."""
    lower, upper, alpha = torch.broadcast_tensors(lower, upper, alpha)  # e.g. one box for many rows' alphas
    finite = torch.isfinite(upper - lower)  # also False for a NaN end or a width that overflows
    lower, upper = torch.where(finite, lower, 0.0), torch.where(finite, upper, 0.0)
    slope_l, slope_u = _smooth_slopes(activation, lower, upper, alpha)
    pieces = _pieces(activation.name)
    shape = (len(pieces),) + (1,) * lower.dim()
    starts = torch.tensor([p[0] for p in pieces], dtype=lower.dtype, device=lower.device).reshape(shape)
    ends = torch.tensor([p[1] for p in pieces], dtype=lower.dtype, device=lower.device).reshape(shape)
    kind = torch.tensor([p[2] for p in pieces], dtype=lower.dtype, device=lower.device).reshape(shape)
    a = torch.minimum(torch.maximum(starts, lower), upper)  # piece clamped into [l, u] (a point if empty)
    b = torch.minimum(torch.maximum(ends, lower), upper)
    # g_u(t) = sigma(t) - a_u t bounded above, g_l(t) = sigma(t) - a_l t bounded below, at both ends
    lo_a, hi_a = activation.enclosure(a)
    lo_b, hi_b = activation.enclosure(b)
    gu_a, gu_b = _minus_line(hi_a, slope_u, a, +1), _minus_line(hi_b, slope_u, b, +1)
    gl_a, gl_b = _minus_line(lo_a, slope_l, a, -1), _minus_line(lo_b, slope_l, b, -1)
    w = b - a
    curvature = activation.max_second_derivative * w * w / 8 * (1 + 8 * UNIT_ROUNDOFF)  # MIXED pieces only
    ends_max = torch.maximum(gu_a, gu_b) + torch.where(kind == _MIXED, curvature, 0.0)
    ends_min = torch.minimum(gl_a, gl_b) - torch.where(kind == _MIXED, curvature, 0.0)
    ends_max = ends_max + rounding_margin(ends_max.abs(), 1)
    ends_min = ends_min - rounding_margin(ends_min.abs(), 1)
    # tangent bounds: the max of g_u on a concave piece, the min of g_l on a convex piece
    target = torch.where(kind == _CONCAVE, slope_u, slope_l)
    curved = [i for i, p in enumerate(pieces) if p[2] != _MIXED]  # MIXED pieces use the ends only
    t = a.clone()
    t[curved] = _tangent_point(activation, a[curved], b[curved], target[curved], kind[curved])
    lo_t, hi_t = activation.enclosure(t)
    d_lo, d_hi = activation.derivative_enclosure(t)
    right, left = b - t, t - a  # >= 0; rounding covered by the margin below
    gu_t = _minus_line(hi_t, slope_u, t, +1)
    rise = torch.maximum((d_hi - slope_u).clamp(min=0) * right, (slope_u - d_lo).clamp(min=0) * left)
    tangent_max = gu_t + rise + rounding_margin(gu_t.abs() + rise, 4)
    gl_t = _minus_line(lo_t, slope_l, t, -1)
    fall = torch.maximum((slope_l - d_lo).clamp(min=0) * right, (d_hi - slope_l).clamp(min=0) * left)
    tangent_min = gl_t - fall - rounding_margin(gl_t.abs() + fall, 4)
    icpt_u = torch.where(kind == _CONCAVE, tangent_max, ends_max).amax(0)
    icpt_l = torch.where(kind == _CONVEX, tangent_min, ends_min).amin(0)
    zero = torch.zeros_like(icpt_u)
    return Relaxation(
        torch.where(finite, slope_l, zero), torch.where(finite, icpt_l, -math.inf),
        torch.where(finite, slope_u, zero), torch.where(finite, icpt_u, math.inf),
    )


def _minus_line(value: Tensor, slope: Tensor, t: Tensor, direction: int) -> Tensor:
    """value - slope * t rounded up (direction +1) or down (-1) by its float64 error."""
    out = value - slope * t
    return out + direction * rounding_margin(value.abs() + (slope * t).abs(), 2)
