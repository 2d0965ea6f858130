"""Common corruptions of the digits: seeded, in the domain, identity at severity 0, monotone in severity,
and the blur and pixelation against independent computations."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from certify.errors import InvalidInputError, UsageError
from certify.metrics import CORRUPTIONS, SEVERITIES, corrupt
from certify.metrics.corruptions import PARAMETERS
from certify.models.datasets import digits_images


@pytest.fixture(scope="module")
def digits():
    return digits_images().x_test[:64]


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_seeded_in_the_domain_and_identity_at_severity_zero(digits, name):
    assert torch.equal(corrupt(digits, name, 0), digits)
    for severity in SEVERITIES:
        once, again = corrupt(digits, name, severity, seed=4), corrupt(digits, name, severity, seed=4)
        assert torch.equal(once, again) and once.shape == digits.shape and once.dtype == digits.dtype
        assert torch.all((once >= 0) & (once <= 1))
        assert not torch.equal(once, digits)
    if name == "gaussian-noise":
        assert not torch.equal(corrupt(digits, name, 3, seed=4), corrupt(digits, name, 3, seed=5))


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_distance_grows_with_severity(digits, name):
    distances = torch.stack([(corrupt(digits, name, s) - digits).flatten(1).norm(dim=1) for s in range(6)])
    mean = distances.mean(dim=1)
    assert torch.all(mean[1:] > mean[:-1]), mean
    if name != "gaussian-blur":  # same draw scaled up, a shrinking factor, nested blocks: per image too
        assert torch.all(distances[1:] >= distances[:-1])


@pytest.mark.parametrize("severity", SEVERITIES)
def test_blur_equals_scipy_gaussian_filter(digits, severity):
    sigma = PARAMETERS["gaussian-blur"][severity - 1]
    x = digits.double()
    expected = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="mirror", truncate=4.0)
    np.testing.assert_allclose(corrupt(x, "gaussian-blur", severity, domain=None).numpy(), expected, rtol=1e-12, atol=1e-14)


def test_pixelation_averages_blocks():
    """Severity 3: 2 x 4 block means, each repeated over its block; on a 5 x 7 image the blocks cut at the
    edge average the pixels they cover."""
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    blocks = x.view(3, 1, 4, 2, 2, 4).mean(dim=(3, 5))
    expected = blocks.repeat_interleave(2, dim=2).repeat_interleave(4, dim=3)
    torch.testing.assert_close(corrupt(x, "pixelate", 3), expected, rtol=1e-14, atol=1e-15)
    odd = torch.rand(1, 5, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert corrupt(odd, "pixelate", 3)[0, 4, 6] == odd[0, 4, 4:].mean()


def test_contrast_and_noise_closed_forms(digits):
    mean = digits.flatten(1).mean(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(corrupt(digits, "contrast", 1), (digits - mean) * 0.4 + mean)
    noise = torch.randn(digits.shape, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(corrupt(digits, "gaussian-noise", 5, seed=2, domain=None), digits + 0.38 * noise)


def test_bad_input_is_refused(digits):
    with pytest.raises(UsageError, match="corruption"):
        corrupt(digits, "fog", 1)
    with pytest.raises(UsageError, match="severity"):
        corrupt(digits, "contrast", 6)
    with pytest.raises(InvalidInputError, match="view"):
        corrupt(digits.flatten(1), "contrast", 1)
