"""Forward operators: adjointness, exact sigma_max (vs power iteration and a dense SVD), exact normal solves."""
import math

import pytest
import torch

from certify.errors import InvalidInputError, UsageError
from certify.inverse.operators import GaussianBlur, Identity, Inpainting, Scaled, make_operator

F64 = torch.float64


def operators(shape):
    return [
        Identity(shape),
        GaussianBlur(shape, sigma=0.8),
        GaussianBlur(shape, sigma=1.5, radius=1),
        Inpainting(shape, keep=0.4, seed=3),
        Scaled(GaussianBlur(shape, sigma=1.0), 2.5),
        Scaled(Inpainting(shape, keep=0.7, seed=1), -0.3),
    ]


def dense(op):
    """The matrix of op, column by column from basis images."""
    n = math.prod(op.shape)
    basis = torch.eye(n, dtype=F64).reshape(n, *op.shape)
    return op.apply(basis).reshape(n, n).T


@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 5, 7)])
def test_adjointness(shape):
    g = torch.Generator().manual_seed(0)
    for op in operators(shape):
        x = torch.randn(4, *shape, generator=g, dtype=F64)
        y = torch.randn(4, *shape, generator=g, dtype=F64)
        lhs = (op.apply(x) * y).sum()
        rhs = (x * op.adjoint(y)).sum()
        assert abs(float(lhs - rhs)) < 1e-12 * max(1.0, float(lhs.abs())), op.describe()


@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 5, 7)])
def test_sigma_max_exact_vs_svd_and_power_iteration(shape):
    g = torch.Generator().manual_seed(1)
    for op in operators(shape):
        svd = float(torch.linalg.svdvals(dense(op)).max())
        assert op.sigma_max() == pytest.approx(svd, rel=1e-12, abs=1e-14), op.describe()
        v = torch.randn(1, *shape, generator=g, dtype=F64)
        for _ in range(500):
            v = op.gram(v)
            v = v / v.norm()
        power = float(op.gram(v).norm()) ** 0.5
        assert power <= op.sigma_max() * (1 + 1e-12)
        assert power == pytest.approx(op.sigma_max(), rel=1e-6), op.describe()


@pytest.mark.parametrize("shape", [(1, 6, 6), (2, 4, 5)])
@pytest.mark.parametrize("rho", [0.05, 1.0, 7.0])
def test_solve_normal_matches_dense_solve(shape, rho):
    g = torch.Generator().manual_seed(2)
    n = math.prod(shape)
    for op in operators(shape):
        m = dense(op)
        rhs = torch.randn(3, *shape, generator=g, dtype=F64)
        expected = torch.linalg.solve(m.T @ m + rho * torch.eye(n, dtype=F64), rhs.reshape(3, n).T).T
        got = op.solve_normal(rhs, rho).reshape(3, n)
        assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12), op.describe()


def test_blur_kernel_properties():
    op = GaussianBlur((1, 8, 8), sigma=1.0)
    assert float(op.kernel.sum()) == pytest.approx(1.0, abs=1e-15)
    assert op.sigma_max() == pytest.approx(1.0, abs=1e-12)  # normalised non-negative kernel
    assert 0 < op.sigma_min() < 0.5  # ill-conditioned but invertible
    spectrum = torch.fft.fft2(op.kernel)
    assert float(spectrum.imag.abs().max()) < 1e-14  # even kernel: real DFT, A symmetric
    m = dense(op)
    assert torch.allclose(m, m.T, atol=1e-15)
    const = torch.full((2, 1, 8, 8), 0.3, dtype=F64)
    assert torch.allclose(op.apply(const), const, atol=1e-14)  # constants pass a normalised blur


def test_inpainting_mask_seeded():
    a, b, c = Inpainting((3, 8, 8), 0.25, seed=5), Inpainting((3, 8, 8), 0.25, seed=5), Inpainting((3, 8, 8), 0.25, seed=6)
    assert torch.equal(a.mask, b.mask) and not torch.equal(a.mask, c.mask)
    assert int(a.mask[0, 0].sum()) == 16  # round(0.25 * 64) kept pixels, same in every channel
    assert torch.equal(a.mask[0, 0], a.mask[0, 2])
    assert a.sigma_max() == 1.0


def test_dtype_and_shape_handling():
    op = GaussianBlur((1, 8, 8), 1.0)
    x32 = torch.rand(2, 1, 8, 8)
    assert op.apply(x32).dtype == torch.float32 and op.solve_normal(x32, 1.0).dtype == torch.float32
    assert torch.allclose(op.apply(x32).double(), op.apply(x32.double()), atol=1e-6)
    with pytest.raises(InvalidInputError):
        op.apply(torch.rand(2, 64))
    with pytest.raises(InvalidInputError):
        op.apply(torch.rand(2, 1, 8, 7))
    with pytest.raises(UsageError):
        op.solve_normal(x32, 0.0)
    with pytest.raises(UsageError):
        Inpainting((1, 8, 8), keep=0.0)
    with pytest.raises(UsageError):
        GaussianBlur((1, 8, 8), sigma=-1.0)
    with pytest.raises(UsageError):
        make_operator("superresolution", (1, 8, 8))
    assert isinstance(make_operator("deblurring", (1, 8, 8)), GaussianBlur)
