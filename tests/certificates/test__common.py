"""What the checker modules share (certify/certificates/_common.py): outward rounding by CHECKER_SAFETY and
the spectral norm (0 for an empty matrix)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from certify.certificates._common import down, spectral_norm, up
from certify.vocabulary import CHECKER_SAFETY


@given(st.floats(-1e300, 1e300))
def test_up_and_down_round_outward_by_the_checker_margin(v):
    assert down(v) < v < up(v)
    assert up(v) - v <= abs(v) * CHECKER_SAFETY * 1.001 + 2e-300
    assert v - down(v) <= abs(v) * CHECKER_SAFETY * 1.001 + 2e-300


def test_up_and_down_move_zero_too():
    assert down(0.0) < 0.0 < up(0.0)


def test_spectral_norm():
    m = torch.tensor([[3.0, 0.0], [0.0, -4.0]], dtype=torch.float64)
    assert spectral_norm(m) == pytest.approx(4.0)
    assert spectral_norm(torch.zeros(0, 3, dtype=torch.float64)) == 0.0
