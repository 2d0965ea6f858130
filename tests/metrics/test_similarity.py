"""certify.metrics.similarity: normalised L2 distance, top-k sets and SSIM against hand-computed values,
closed forms and their invariances."""
import math

import numpy as np
import pytest
import torch

from certify.errors import InvalidInputError, UsageError
from certify.metrics import normalized_l2_distance, ssim, topk_count, topk_intersection, topk_mask

# --------------------------------------------------------------------------------- normalised distance


def test_normalized_distance_values_and_scale_invariance():
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[6.0, 8.0], [0.0, 2.0], [0.0, 1.0]])
    d = normalized_l2_distance(a, b)
    assert torch.allclose(d, torch.tensor([0.0, math.sqrt(2.0), 1.0], dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 12, generator=g), torch.randn(5, 12, generator=g)
    assert torch.allclose(normalized_l2_distance(7.0 * x, 0.1 * y), normalized_l2_distance(x, y))
    assert torch.allclose(normalized_l2_distance(x, -x), torch.full((5,), 2.0, dtype=torch.float64))


def test_normalized_distance_closed_form_from_the_angle():
    """For unit vectors ||u - v|| = sqrt(2 - 2 cos(theta)): at 60 degrees it is exactly 1."""
    a = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.5, math.sqrt(3) / 2]], dtype=torch.float64) * 9.0
    assert normalized_l2_distance(a, b).item() == pytest.approx(1.0, rel=1e-12)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64), torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    cos = torch.nn.functional.cosine_similarity(x.flatten(1), y.flatten(1), dim=1)
    d = normalized_l2_distance(x, y)
    assert d.dtype == torch.float64 and d.shape == (4,)
    assert torch.allclose(d, torch.sqrt(2 - 2 * cos), rtol=1e-12, atol=1e-12)
    assert torch.equal(normalized_l2_distance(x, y), normalized_l2_distance(y, x))


def test_two_zero_maps_are_at_distance_zero():
    assert normalized_l2_distance(torch.zeros(2, 4), torch.zeros(2, 4)).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("shapes", [((2, 3), (2, 4)), ((2, 3), (3, 3)), ((3,), (3,))])
def test_mismatched_or_unbatched_maps_are_invalid_input(shapes):
    a, b = torch.ones(shapes[0]), torch.ones(shapes[1])
    with pytest.raises(InvalidInputError, match="batches of the same shape"):
        normalized_l2_distance(a, b)
    with pytest.raises(InvalidInputError):
        topk_intersection(a, b, 1)


# ---------------------------------------------------------------------------------------------- top-k


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


def test_topk_ties_between_signs_and_magnitudes():
    """|2| = |-2|: by magnitude the tie goes to the lower index; signed, -2 ranks last."""
    t = torch.tensor([[2.0, -2.0, 1.0, 2.0, -3.0]])
    assert topk_mask(t, 2).tolist() == [[True, False, False, False, True]]  # |-3|, then the first |2|
    assert topk_mask(t, 3).tolist() == [[True, True, False, False, True]]
    assert topk_mask(t, 2, signed=True).tolist() == [[True, False, False, True, False]]  # 2, 2 (indices 0, 3)
    assert topk_mask(t, 3, signed=True).tolist() == [[True, False, True, True, False]]
    u = torch.tensor([[0.0, 2.0, 2.0, -2.0, 0.0]])
    # magnitude: t -> {0, 4}, u -> {1, 2}: disjoint; k = 4: t -> {0, 1, 3, 4}, u -> {1, 2, 3, 0}
    assert topk_intersection(t, u, 2).item() == 0.0
    assert topk_intersection(t, u, 4).item() == 0.75


def test_topk_of_all_equal_maps_is_the_first_k_features():
    mask = topk_mask(torch.full((2, 6), 0.3), 4)
    assert mask.tolist() == [[True] * 4 + [False] * 2] * 2
    assert topk_intersection(torch.zeros(1, 6), torch.zeros(1, 6), 3).item() == 1.0


def test_topk_intersection_is_per_example_and_float64():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    b = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    out = topk_intersection(a, b, 2)
    assert out.dtype == torch.float64 and out.tolist() == [1.0, 0.0]
    assert topk_intersection(a, b, 3).tolist() == [1.0, pytest.approx(2 / 3)]  # {0,1,2} vs {1,2,3}


def test_topk_mask_and_count_are_the_one_definition():
    t = torch.tensor([[0.1, -0.9, 0.5, 0.5], [1.0, 2.0, 3.0, 4.0]])
    mask = topk_mask(t, 2)
    assert mask.tolist() == [[False, True, True, False], [False, False, True, True]]
    assert topk_mask(t, 0.5).tolist() == mask.tolist()  # a fraction: ceil(0.5 * 4) = 2
    assert topk_mask(torch.tensor([[-3.0, 1.0, 2.0]]), 1, signed=True).tolist() == [[False, False, True]]
    assert topk_count(0.1, 25) == 3 and topk_count(4, 4) == 4
    for bad in (0, 5, 1.0, 0.0, -0.5, True, "2"):
        with pytest.raises(UsageError, match="k must be"):
            topk_count(bad, 4)


@pytest.mark.parametrize("k, n, count", [(0.01, 10, 1), (0.5, 3, 2), (0.999, 10, 10), (0.25, 8, 2), (1, 1, 1)])
def test_topk_count_rounds_a_fraction_up(k, n, count):
    assert topk_count(k, n) == count


def test_topk_mask_flattens_images_and_keeps_exactly_k():
    g = torch.Generator().manual_seed(4)
    t = torch.randn(3, 2, 4, 4, generator=g)
    mask = topk_mask(t, 0.1)  # ceil(3.2) = 4 of 32 features
    assert mask.shape == (3, 32) and mask.sum(1).tolist() == [4, 4, 4]
    kept, dropped = t.flatten(1).abs()[mask].view(3, 4), t.flatten(1).abs().masked_fill(mask, -1.0)
    assert (kept.min(1).values >= dropped.max(1).values).all()


# ----------------------------------------------------------------------------------------------- SSIM


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


@pytest.mark.parametrize("shape", [(2, 5, 7), (2, 3, 6, 6), (2, 36)])
@pytest.mark.parametrize("window", [2, 3, 5])
def test_ssim_of_identical_maps_is_one_for_every_layout_and_window(shape, window):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(shape, generator=g)
    assert torch.allclose(ssim(x, x, window=window), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.allclose(ssim(x, x, window=window, data_range=1e-3), torch.ones(2, dtype=torch.float64), atol=1e-12)


def test_ssim_of_a_negated_map_with_zero_window_means():
    """Each 2x2 window of a checkerboard has mean 0 and the same variance, so for q = -p the luminance term
    is C1 / C1 = 1 and the structure term (-2 s^2 + C2) / (2 s^2 + C2), a closed form."""
    p = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, 1.0]]).view(1, 3, 3)
    s2 = 4.0 / 3.0  # sample variance (n/(n-1)) of {1, -1, 1, -1}
    c2 = (0.03 * 2.0) ** 2  # data range of [p, -p] is 2
    expected = (-2 * s2 + c2) / (2 * s2 + c2)
    assert ssim(p, -p, window=2).item() == pytest.approx(expected, rel=1e-12)
    assert expected < -0.99


def test_ssim_is_symmetric_bounded_and_averages_channels():
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(3, 3, 6, 6, generator=g), torch.randn(3, 3, 6, 6, generator=g)
    s = ssim(x, y)
    assert s.shape == (3,) and s.dtype == torch.float64
    assert torch.allclose(s, ssim(y, x), rtol=0, atol=1e-14)
    assert (s <= 1).all() and (s >= -1).all()
    assert torch.allclose(s, ssim(x.mean(1), y.mean(1)), atol=1e-12)  # channels averaged first


def test_ssim_rejects_bad_windows_and_shapes():
    x = torch.randn(1, 4, 6)
    for window in (1, 5):
        with pytest.raises(UsageError, match=r"window must lie in 2..4"):
            ssim(x, x, window=window)
    with pytest.raises(InvalidInputError, match="same shape"):
        ssim(x, torch.randn(1, 6, 4))
    with pytest.raises(InvalidInputError, match="image-shaped"):
        ssim(torch.randn(1, 2, 3, 4, 5), torch.randn(1, 2, 3, 4, 5))
