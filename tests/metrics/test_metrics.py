"""Metrics against hand-computed values and their invariances."""
import math

import numpy as np
import pytest
import torch

from certify.errors import InvalidInputError, UsageError
from certify.metrics import gini_index, normalized_l2_distance, ssim, topk_intersection, zero_fraction


def test_normalized_distance_values_and_scale_invariance():
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[6.0, 8.0], [0.0, 2.0], [0.0, 1.0]])
    d = normalized_l2_distance(a, b)
    assert torch.allclose(d, torch.tensor([0.0, math.sqrt(2.0), 1.0], dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 12, generator=g), torch.randn(5, 12, generator=g)
    assert torch.allclose(normalized_l2_distance(7.0 * x, 0.1 * y), normalized_l2_distance(x, y))
    assert torch.allclose(normalized_l2_distance(x, -x), torch.full((5,), 2.0, dtype=torch.float64))


def test_topk_hand_computed_and_identical():
    a = torch.tensor([[-5.0, -4.0, 1.0, 2.0, 0.5]])
    b = torch.tensor([[-5.0, 0.0, 3.0, 2.0, 0.1]])
    assert topk_intersection(a, b, 3).item() == pytest.approx(2 / 3)  # {0,1,3} vs {0,2,3}
    # signed ranking keeps the largest values: a -> {3, 2, 4}, b -> {2, 3, 4}
    assert topk_intersection(a, b, 3, signed=True).item() == 1.0
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 30, generator=g)
    assert torch.all(topk_intersection(x, x, 0.2) == 1.0)
    assert topk_intersection(x, 2.5 * x, 5).eq(1.0).all()
    with pytest.raises(UsageError):
        topk_intersection(x, x, 0)
    with pytest.raises(UsageError):
        topk_intersection(x, x, 1.5)


def test_topk_ties_go_to_the_lower_index():
    a = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    assert topk_intersection(a, b, 2).item() == 0.5  # a -> {0, 1}; b -> {1, 2}


def test_ssim_identical_is_one_and_matches_a_direct_computation():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 8, 8, generator=g)
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64))
    y = x + 0.3 * torch.randn(3, 8, 8, generator=g)
    ours = ssim(x, y, window=3)
    # direct loop over windows, eq. 13 of Wang et al. with sample statistics
    p, q = x.double().numpy(), y.double().numpy()
    for n in range(3):
        r = max(p[n].max(), q[n].max()) - min(p[n].min(), q[n].min())
        c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
        vals = []
        for i in range(6):
            for j in range(6):
                u, v = p[n, i : i + 3, j : j + 3].ravel(), q[n, i : i + 3, j : j + 3].ravel()
                mu, mv = u.mean(), v.mean()
                su, sv, cov = u.var(ddof=1), v.var(ddof=1), np.cov(u, v, ddof=1)[0, 1]
                vals.append((2 * mu * mv + c1) * (2 * cov + c2) / ((mu**2 + mv**2 + c1) * (su + sv + c2)))
        assert ours[n].item() == pytest.approx(np.mean(vals), rel=1e-10)


def test_ssim_of_a_constant_shift_of_a_flat_map():
    """Constant maps: variances and covariance vanish, so SSIM = (2 mu nu + C1)/(mu^2 + nu^2 + C1)."""
    a, b = torch.full((1, 16), 1.0), torch.full((1, 16), 3.0)
    c1 = (0.01 * 2.0) ** 2
    assert ssim(a, b).item() == pytest.approx((2 * 3 + c1) / (1 + 9 + c1))
    with pytest.raises(InvalidInputError):
        ssim(torch.ones(1, 15), torch.ones(1, 15))


def test_gini_and_zero_fraction():
    one_hot = torch.zeros(1, 10)
    one_hot[0, 3] = -2.0
    uniform = torch.ones(1, 10)
    assert gini_index(one_hot).item() == pytest.approx(0.9)
    assert gini_index(uniform).item() == pytest.approx(0.0)
    assert gini_index(torch.zeros(1, 10)).item() == 0.0
    ramp = torch.arange(1.0, 5.0).view(1, 4)  # (-3*1 - 1*2 + 1*3 + 3*4) / (4 * 10) = 10/40
    assert gini_index(ramp).item() == pytest.approx(0.25)
    assert gini_index(5 * ramp).item() == pytest.approx(0.25)
    assert zero_fraction(one_hot).item() == pytest.approx(0.9)
