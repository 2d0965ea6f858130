"""What the checker and the relaxation re-check share (certify/certificates/_common.py): outward rounding by
CHECKER_SAFETY, the exact activations of N (softplus without torch's threshold) and their derivatives, and
the spectral norm (0 for an empty matrix)."""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from certify.certificates._common import act_derivative, down, exact_act, spectral_norm, up
from certify.vocabulary import CHECKER_SAFETY


@given(st.floats(-1e300, 1e300))
def test_up_and_down_round_outward_by_the_checker_margin(v):
    assert down(v) < v < up(v)
    assert up(v) - v <= abs(v) * CHECKER_SAFETY * 1.001 + 2e-300
    assert v - down(v) <= abs(v) * CHECKER_SAFETY * 1.001 + 2e-300


def test_up_and_down_move_zero_too():
    assert down(0.0) < 0.0 < up(0.0)


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
def test_exact_softplus_has_no_threshold(beta):
    z = torch.tensor([-800.0, -30.0, -1.0, 0.0, 1e-3, 5.0, 25.0, 800.0], dtype=torch.float64)
    values = exact_act(("softplus", beta, 20.0), z)
    assert torch.isfinite(values).all()
    for t, v in zip(z.tolist(), values.tolist()):
        # softplus(t) = max(t, 0) + log1p(exp(-beta |t|)) / beta, mathematically log(1 + exp(beta t)) / beta
        assert v == pytest.approx(max(t, 0.0) + math.log1p(math.exp(-beta * abs(t))) / beta, rel=1e-15, abs=1e-300)
    above = float(exact_act(("softplus", beta, 20.0), torch.tensor([30.0 / beta], dtype=torch.float64)))
    assert above > 30.0 / beta  # torch would return exactly 30/beta above its threshold
    assert torch.equal(act_derivative(("softplus", beta, 20.0), z), torch.sigmoid(beta * z))


def test_relu_and_its_derivative():
    z = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)
    assert exact_act(("relu",), z).tolist() == [0.0, 0.0, 2.0]
    assert act_derivative(("relu",), z).tolist() == [0.0, 0.0, 1.0]


def test_spectral_norm():
    m = torch.tensor([[3.0, 0.0], [0.0, -4.0]], dtype=torch.float64)
    assert spectral_norm(m) == pytest.approx(4.0)
    assert spectral_norm(torch.zeros(0, 3, dtype=torch.float64)) == 0.0
