"""Elementwise activations of the networks the verification layer reasons about: their exact values,
rigorous float64 enclosures, derivatives, curvature facts, and sound linear relaxations on a box.

Relaxation of a convex activation on [l, u] (ReLU and softplus are both convex and increasing; CROWN,
Zhang et al. 2018, and the Wong-Kolter dual network with lower slopes alpha, Salman et al. 2019):

    lower line  sigma(z) >= a_l z + c_l   (ReLU: a_l = alpha in [0, 1], c_l = 0 for an unstable unit;
                                            softplus: the tangent at t = l + alpha (u - l)),
    upper line  sigma(z) <= a_u z + c_u   (the chord through (l, sigma(l)) and (u, sigma(u))).

Rigour in float64: every upper chord is shifted up until it lies above the activation's rigorous
enclosure at both endpoints (enough for a convex function), the tangent's intercept is lowered by the
slope's rounding error times (u - l) and by the gap to torch's thresholded softplus.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from certify.bounds.sets import UNIT_ROUNDOFF, rounding_margin

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


@dataclass(frozen=True)
class Activation:
    """An elementwise activation of N: "relu", or the EXACT softplus of sharpness beta,
    log(1 + e^{beta t}) / beta; `threshold` records torch's switch to the identity (beta t > threshold),
    which N does not apply (its effect is bounded by `AffineNetwork.deviation`)."""

    name: str  # one of NAMES
    beta: float = 1.0  # softplus sharpness
    threshold: float = 20.0  # softplus switch recorded from torch
    negative_slope: float = 0.01  # leaky_relu slope for t < 0

    def __call__(self, z: Tensor) -> Tensor:
        if self.name == "relu":
            return torch.relu(z)
        return torch.relu(z) + torch.log1p(torch.exp(-self.beta * z.abs())) / self.beta

    def derivative(self, z: Tensor) -> Tensor:
        return (z > 0).to(z.dtype) if self.name == "relu" else torch.sigmoid(self.beta * z)

    def enclosure(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Rigorous float64 enclosure [lo, hi] of sigma(z) (elementwise), covering both the exact
        softplus max(z, 0) + log1p(e^{-beta|z|}) / beta and torch's thresholded version (which returns z
        where beta z > threshold, below the exact value by log1p(e^{-beta z}) / beta <= threshold_gap)."""
        if self.name == "relu":
            value = torch.relu(z)
            return value, value
        value = torch.relu(z) + torch.log1p(torch.exp(-self.beta * z.abs())) / self.beta
        margin = 8.0 * 2.0**-53 * value.abs() + 1e-300
        # beta * z is rounded: widen the switch region by a relative 1e-12 so no switched point is missed
        switched = self.beta * z > self.threshold - 1e-12 * abs(self.threshold)
        lo = torch.minimum(value, torch.where(switched, z, value))
        return lo - margin, value + margin

    @property
    def threshold_gap(self) -> float:
        """sup of (exact softplus - torch's thresholded softplus) = log1p(e^{-threshold}) / beta; 0 for ReLU."""
        return softplus_gap(self.beta, self.threshold) if self.name == "softplus" else 0.0

    @property
    def max_second_derivative(self) -> float:
        """sup sigma''(t): beta/4 for softplus; a ReLU has no bounded second derivative (inf)."""
        return self.beta / 4.0 if self.name == "softplus" else float("inf")

    def to_json(self) -> dict[str, Any]:
        if self.name == "relu":
            return {"name": "relu"}
        return {
            "name": "softplus",
            "beta": self.beta,
            "threshold": self.threshold if math.isfinite(self.threshold) else "inf",
            "gap": self.threshold_gap,
        }


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
    """Lower-line parameter alpha. ReLU: "adaptive" (CROWN) takes slope 1 if u >= -l else 0; "parallel"
    (Wong-Kolter's dual network) takes u / (u - l), parallel to the chord. Softplus: tangent at the midpoint."""
    if activation.name == "softplus":
        return torch.full_like(lower, 0.5)
    if rule == "parallel":
        return (upper / (upper - lower).clamp(min=1e-300)).clamp(0, 1)
    return (upper >= -lower).to(lower.dtype)


def relax(activation: Activation, lower: Tensor, upper: Tensor, alpha: Tensor | None = None) -> Relaxation:
    """Rigorous linear relaxation of a convex increasing activation on [lower, upper] (see module doc)."""
    alpha = default_alpha(activation, lower, upper) if alpha is None else alpha.clamp(0, 1)
    width = upper - lower
    value_lo_l, value_hi_l = activation.enclosure(lower)
    value_lo_u, value_hi_u = activation.enclosure(upper)
    # upper chord, then shifted to lie above the enclosure at both endpoints
    flat = width <= 1e-12 * (1 + upper.abs())
    chord = (value_hi_u - value_lo_l) / torch.where(flat, torch.ones_like(width), width)
    slope_u = torch.where(flat, activation.derivative(upper), chord)
    if activation.name == "relu":
        slope_u = torch.where(lower >= 0, torch.ones_like(slope_u), torch.where(upper <= 0, torch.zeros_like(slope_u), slope_u))
    icpt_u = torch.maximum(value_hi_l - slope_u * lower, value_hi_u - slope_u * upper)
    icpt_u = icpt_u + rounding_margin(icpt_u.abs() + slope_u.abs() * torch.maximum(lower.abs(), upper.abs()), 2)
    if activation.name == "relu":
        slope_l = torch.where(lower >= 0, torch.ones_like(alpha), torch.where(upper <= 0, torch.zeros_like(alpha), alpha))
        icpt_l = torch.zeros_like(slope_l)
    else:
        point = lower + alpha * width
        slope_l = activation.derivative(point)
        value_lo_t, _ = activation.enclosure(point)
        icpt_l = value_lo_t - slope_l * point
        slope_error = 4 * UNIT_ROUNDOFF * slope_l * width
        icpt_l = icpt_l - slope_error - rounding_margin(value_lo_t.abs() + (slope_l * point).abs(), 2)
        # the tangent touches the exact softplus; torch's thresholded one lies below it by at most this
        icpt_l = icpt_l - torch.where(activation.beta * upper > 20.0, activation.threshold_gap, 0.0)
    return Relaxation(slope_l, icpt_l, slope_u, icpt_u)
