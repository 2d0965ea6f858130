"""PSNR (own) and SSIM (reused from certify.metrics)."""
import math

import pytest
import torch

from certify.errors import InvalidInputError, UsageError
from certify.inverse.quality import mse, psnr, ssim


def test_psnr_values():
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64) * 0.8
    assert torch.isinf(psnr(x, x)).all() and (psnr(x, x) > 0).all()
    shifted = x + 0.1
    assert torch.allclose(psnr(shifted, x), torch.full((3,), 20.0, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(psnr(shifted, x, data_range=2.0) - psnr(shifted, x), torch.full((3,), 20 * math.log10(2), dtype=torch.float64))
    mixed = torch.stack([x[0], x[1] + 0.01, x[2] + 0.1])
    out = psnr(mixed, x)
    assert math.isinf(out[0]) and out[1] == pytest.approx(40.0) and out[2] == pytest.approx(20.0)
    assert mse(shifted.float(), x.float()).dtype == torch.float64


def test_ssim_reused():
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
    noisy = x + 0.2 * torch.randn_like(x)
    assert (ssim(noisy, x) < 0.95).all()


def test_errors():
    with pytest.raises(InvalidInputError):
        psnr(torch.zeros(2, 4), torch.zeros(2, 5))
    with pytest.raises(UsageError):
        psnr(torch.zeros(2, 4), torch.zeros(2, 4), data_range=0.0)
