"""certify.metrics.sparsity: the Gini index and the fraction of zeros against closed forms."""
import pytest
import torch

from certify.metrics import gini_index, zero_fraction


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


@pytest.mark.parametrize("n", [1, 2, 5, 64, 1000])
def test_gini_of_a_one_hot_map_is_one_minus_one_over_n(n):
    one_hot = torch.zeros(1, n)
    one_hot[0, n // 2] = 3.7
    assert gini_index(one_hot).item() == pytest.approx(1 - 1 / n, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("n, k", [(10, 1), (10, 3), (8, 8), (64, 16)])
def test_gini_of_k_equal_entries_among_n_is_n_minus_k_over_n(n, k):
    """sorted |a| = (0,...,0, c,...,c): sum_{i>n-k} (2i - n - 1) c = k (n - k) c, divided by n k c."""
    a = torch.zeros(1, n)
    a[0, torch.randperm(n, generator=torch.Generator().manual_seed(n + k))[:k]] = -0.5
    assert gini_index(a).item() == pytest.approx((n - k) / n, rel=1e-12, abs=1e-15)


def test_gini_is_invariant_to_sign_permutation_scale_and_shape():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 2, 3, 3, generator=g)
    ref = gini_index(a)
    assert ref.shape == (4,) and ref.dtype == torch.float64
    perm = torch.randperm(18, generator=g)
    assert torch.allclose(gini_index(a.flatten(1)[:, perm]), ref, rtol=1e-12)
    assert torch.allclose(gini_index(-3.0 * a), ref, rtol=1e-12)
    signs = torch.where(torch.rand(4, 2, 3, 3, generator=g) < 0.5, -1.0, 1.0)
    assert torch.allclose(gini_index(a * signs), ref, rtol=1e-12)
    assert torch.allclose(gini_index(a.flatten(1)), ref, rtol=0, atol=0)
    assert ((ref >= 0) & (ref <= 1 - 1 / 18)).all()


def test_gini_is_computed_per_example():
    batch = torch.tensor([[0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    assert gini_index(batch).tolist() == pytest.approx([0.75, 0.0, 0.0, 0.25])


def test_gini_of_tiny_values_does_not_underflow_to_the_zero_convention():
    a = torch.tensor([[0.0, 0.0, 0.0, 1e-200]], dtype=torch.float64)
    assert gini_index(a).item() == pytest.approx(0.75)


def test_zero_fraction_counts_exact_zeros_only():
    a = torch.tensor([[0.0, -0.0, 1e-30, 5.0], [0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    out = zero_fraction(a)
    assert out.dtype == torch.float64 and out.tolist() == [0.5, 1.0, 0.0]
    assert zero_fraction(torch.zeros(2, 3, 4, 4)).tolist() == [1.0, 1.0]
