"""Regression tests (helper G): float64 underflow in the CROWN pass and in the L2 lower support.

Higham's model fl(x y) = x y (1 + d) holds only in the normal range; below it a product is off by up to
2^-1075 ABSOLUTELY. A coefficient entry of Lambda W that underflows loses that much, and the loss multiplies
the variable it stands for, whose bound may be huge; torch.linalg.vector_norm does not scale, so the dual
norm of a row of tiny coefficients comes out 0. Both made certified margins exceed the true minimum."""
import math
from fractions import Fraction

import numpy as np
import torch

from certify.bounds.activations import Activation
from certify.bounds.crown import layer_bounds, margin_lower_bounds
from certify.bounds.network import AffineNetwork
from certify.bounds.radius import certified_radius
from certify.bounds.sets import InputSet
from certify.certificates.relaxation_check import prove_margins


def _underflow_net() -> AffineNetwork:
    """f_0 - f_1 = 1e-170 relu(1e-170 x + 1e131) - 9.5e-40: the coefficient of x is 1e-340 (0 in float64),
    and over |x| <= 1e300 the margin is 1e-340 x + 5e-41, negative below x = -5e299."""
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return AffineNetwork([t([1e-170]), t([1e-170], [0.0])], [t(1e131), t(-9.5e-40, 0.0)], [Activation("relu")], (1,))


def _exact_margin(net: AffineNetwork, x: float) -> Fraction:
    exact = lambda v: Fraction(float(v))  # noqa: E731
    h = max(exact(net.weights[0][0, 0]) * exact(x) + exact(net.biases[0][0]), Fraction(0))
    return exact(net.weights[1][0, 0]) * h + exact(net.biases[1][0]) - exact(net.biases[1][1])


def test_underflowing_coefficients_against_a_huge_input_box_keep_the_margin_bound_below_the_true_one():
    net = _underflow_net()
    result = margin_lower_bounds(net, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([0]), 1e300, "inf")
    worst = _exact_margin(net, -1e300)  # a point of the set: the margin is linear in x there
    assert worst < 0
    assert Fraction(float(result.value[0, 1])) <= worst


def test_certified_radius_with_underflowing_coefficients_is_reproved_by_the_exact_checker():
    net = _underflow_net()
    x = torch.zeros(1, 1, dtype=torch.float64)
    radius = float(certified_radius(net, x, torch.tensor([0]), "inf", max_radius=1e300, tol=1e294).value[0])
    assert radius < 5e299  # the decision flips at x = -5e299
    if radius > 0:
        _, rels = layer_bounds(net, InputSet.build(x, radius, "inf"), "crown")
        prove_margins(net.weights, net.biases, x.numpy().reshape(-1), 0, radius,
                      {"alphas": [rels[0].lower_slope[0].numpy()]}, np.asarray, AssertionError, "inf", "crown")


def test_l2_support_of_tiny_coefficients_does_not_drop_the_radius_term():
    n, scale, eps = 4, 1e-170, 1e150  # the squares of 1e-170 underflow to 0
    w1 = torch.zeros(2, n, dtype=torch.float64)
    w1[0] = scale
    b1 = torch.tensor([0.5 * eps * scale * math.sqrt(n), 0.0], dtype=torch.float64)
    net = AffineNetwork([torch.eye(n, dtype=torch.float64), w1], [torch.zeros(n, dtype=torch.float64), b1],
                        [Activation("leaky_relu", negative_slope=1.0)], (n,))  # an identity hidden layer
    result = margin_lower_bounds(net, torch.zeros(1, n, dtype=torch.float64), torch.tensor([0]), eps, 2)
    point = torch.full((1, n), -eps / math.sqrt(n) * (1 - 1e-12), dtype=torch.float64)  # inside the L2 ball
    assert float(torch.linalg.vector_norm(point)) <= eps
    logits = net.forward(point)[0]
    assert float(logits[0] - logits[1]) < 0
    assert float(result.value[0, 1]) <= float(logits[0] - logits[1])
