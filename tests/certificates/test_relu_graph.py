"""The checker's outward-rounded float64 primitives (certify/certificates/relu_graph.py), against exact rationals:
matmul_enclosure, sum_down, settle, box_support, and the exact selection path for rows +-e_i. (The bound itself:
tests/certificates/test_property_check.py and tests/certificates/test_relaxation_check.py.)"""
import itertools
from fractions import Fraction

import numpy as np

from certify.certificates.relu_graph import (_selection_enclosure, box_support, matmul_enclosure, settle, sum_down,
                                             up_nonneg)


def _exact(value):
    return Fraction(float(value))


def test_matmul_enclosure_sum_down_and_settle_enclose_the_exact_values():
    rng = np.random.default_rng(0)
    for trial in range(20):
        scale = 10.0 ** rng.integers(-300, 300, size=(3, 7)) if trial % 2 else 1.0
        a = rng.standard_normal((3, 7)) * scale
        b = rng.standard_normal((7, 2)) * (1e-20 if trial % 3 == 0 else 1.0)
        c, r = matmul_enclosure(a, b)
        assert (r >= 0).all()
        for i, j in itertools.product(range(3), range(2)):
            exact = sum(_exact(a[i, k]) * _exact(b[k, j]) for k in range(7))
            assert abs(exact - _exact(c[i, j])) <= _exact(r[i, j])
        low = sum_down(a)
        for i in range(3):
            assert _exact(low[i]) <= sum(_exact(v) for v in a[i])
        # settle: the exact products a * b[:, 0] (floats within u |a b| + eta / 2 of them) summed per row
        values = a * b[:, 0]
        settled = settle(values, np.abs(values) * 2.0**-53 + 2.0**-1074)
        for i in range(3):
            assert _exact(settled[i]) <= sum(_exact(a[i, k]) * _exact(b[k, 0]) for k in range(7))
    tiny = np.full((1, 4), 5e-324)
    c, r = matmul_enclosure(tiny, np.full((4, 1), 0.5))  # products underflow to 0 or 5e-324
    assert c[0, 0] - r[0, 0] <= 0 < c[0, 0] + r[0, 0] and _exact(r[0, 0]) >= abs(_exact(c[0, 0]) - 4 * _exact(5e-324) / 2)


def test_up_nonneg_is_never_below_the_next_float():
    """up_nonneg (two multiply-adds) against nextafter over zeros, subnormals, every binade's edges and the top."""
    rng = np.random.default_rng(7)
    edges = np.ldexp(1.0, np.arange(-1074, 1024))
    special = [0.0, 5e-324, 1e-323, 2.0**-1022, np.nextafter(2.0**-1022, 0), np.finfo(float).max, np.inf]
    values = np.concatenate([special, edges, np.nextafter(edges, np.inf), np.nextafter(edges, 0),
                             np.ldexp(rng.uniform(1, 2, 4000), rng.integers(-1074, 1023, 4000))])
    bumped = up_nonneg(values)
    assert (bumped >= np.nextafter(values, np.inf)).all()
    assert (bumped[np.isfinite(values) & (values < 1e300)] <= np.nextafter(np.nextafter(values, np.inf), np.inf)[
        np.isfinite(values) & (values < 1e300)] * (1 + 2.0**-50) + 2e-323).all()  # and no looser than a few ulps


def test_the_box_support_lies_below_the_exact_minimum_over_every_enclosed_row():
    """box_support(l, u)(c, r): below sum_i min(q_i l_i, q_i u_i) for q = c - r, c + r and random q in between
    (exact rationals), within 1e-12 relative of the value at the worst q."""
    rng = np.random.default_rng(4)
    for trial in range(10):
        lower = rng.standard_normal(6) * 10.0 ** rng.integers(-3, 3)
        upper = lower + rng.uniform(0, 2, 6)
        c = rng.standard_normal((2, 6)) * 10.0 ** rng.integers(-200, 200)
        r = np.abs(c) * rng.uniform(0, 0.1, (2, 6))
        bound = box_support(lower, upper)(c, r)
        for i in range(2):
            for q in (c[i] - r[i], c[i] + r[i], c[i] + r[i] * rng.uniform(-1, 1, 6)):
                exact = sum(min(_exact(qk) * _exact(lk), _exact(qk) * _exact(uk)) for qk, lk, uk in zip(q, lower, upper))
                assert _exact(bound[i]) <= exact




def test_signed_unit_rows_take_the_exact_selection_and_other_rows_the_enclosure():
    rng = np.random.default_rng(5)
    b, bias = rng.standard_normal((6, 9)), rng.standard_normal(6)
    rows = np.zeros((4, 6))
    rows[[0, 1, 2], [3, 0, 3]] = [1.0, -1.0, -1.0]  # row 3 stays zero
    enclose = _selection_enclosure(rows)
    assert enclose is not matmul_enclosure
    for right in (b, bias):
        c, r = enclose(rows, right)
        assert np.array_equal(c, rows @ right) and not r.any()
    column = np.array([[1.0], [-1.0], [0.0]])  # one column: each row's max and min are the same entry
    c, r = _selection_enclosure(column)(column, np.array([[3.0, -2.0]]))
    assert np.array_equal(c, column @ np.array([[3.0, -2.0]])) and not r.any()
    for other in (rows * 2.0, rows + np.eye(4, 6)[::-1] * (rows == 0), rng.standard_normal((4, 6))):
        assert _selection_enclosure(other) is matmul_enclosure
