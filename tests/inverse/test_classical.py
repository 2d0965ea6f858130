"""Wavelet soft-thresholding: orthogonality of the transform, the prox against brute-force optimality."""
import numpy as np
import pytest
import pywt
import torch

from certify.errors import InvalidInputError, UsageError
from certify.inverse.classical import WaveletSoftThreshold, default_level, fit_threshold

F64 = torch.float64


def detail_matrix(h, w, wavelet, level):
    """Dense rows of the detail part of the periodised transform (built from pywt on basis images) and the
    approximation part, independently of the prox code."""
    n = h * w
    basis = np.eye(n).reshape(n, h, w)
    rows_d, rows_a = [], []
    for k in range(n):
        coeffs = pywt.wavedec2(basis[k], wavelet, mode="periodization", level=level)
        rows_a.append(coeffs[0].ravel())
        rows_d.append(np.concatenate([d.ravel() for det in coeffs[1:] for d in det]))
    return np.array(rows_d).T, np.array(rows_a).T  # [details, n], [approx, n]


@pytest.mark.parametrize("wavelet,shape", [("haar", (8, 8)), ("db2", (8, 8)), ("haar", (28, 28))])
def test_transform_is_orthogonal(wavelet, shape):
    level = default_level(*shape, wavelet)
    d, a = detail_matrix(*shape, wavelet, level)
    w = np.vstack([a, d])
    assert np.allclose(w @ w.T, np.eye(w.shape[0]), atol=1e-12) and w.shape[0] == w.shape[1]
    x = torch.rand(3, 1, *shape, dtype=F64)
    assert torch.allclose(WaveletSoftThreshold(0.0, wavelet)(x), x, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Level value of 1 is too high")
@pytest.mark.parametrize("wavelet", ["haar", "db2"])
def test_prox_is_optimal_brute_force(wavelet):
    h = w = 4
    lam = 0.15
    prox = WaveletSoftThreshold(lam, wavelet, level=1)  # db2 on 4 x 4: periodised, still orthogonal
    d, a = detail_matrix(h, w, wavelet, 1)
    rng = np.random.default_rng(0)
    v = rng.normal(size=(h * w))
    p = prox(torch.from_numpy(v.reshape(1, 1, h, w))).numpy().ravel()

    def objective(x):
        x = x.reshape(h * w, -1)
        return 0.5 * np.sum((x - v[:, None]) ** 2, axis=0) + lam * np.abs(d @ x).sum(axis=0)

    # optimality (subgradient) conditions: v - p = D^T g with |g| <= lam, g = lam sign(Dp) where Dp != 0
    g = d @ (v - p)
    assert np.allclose(a @ (v - p), 0.0, atol=1e-12)  # approximation coefficients unpenalised
    c = d @ p
    assert np.all(np.abs(g) <= lam + 1e-12)
    nz = np.abs(c) > 1e-12
    assert np.allclose(g[nz], lam * np.sign(c[nz]), atol=1e-12)
    # and no perturbation, of any scale, lowers the objective
    deltas = rng.normal(size=(h * w, 3000)) * np.repeat(np.logspace(-6, 0, 3), 1000)
    assert np.all(objective(p[:, None] + deltas) >= objective(p) - 1e-13)
    assert objective(p) < objective(v)  # lam > 0 and v has details: the prox moved


def test_batched_equals_per_image_and_keeps_device_dtype():
    x = torch.rand(5, 2, 8, 8)
    prox = WaveletSoftThreshold(0.2)
    out = prox(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    for i in range(5):
        assert torch.allclose(prox(x[i:i + 1]), out[i:i + 1])
    assert float(prox.regulariser(out).min()) <= float(prox.regulariser(x).min())


def test_levels_and_refusals():
    assert default_level(8, 8) == 3 and default_level(28, 28) == 2
    with pytest.raises(UsageError):
        WaveletSoftThreshold(0.1, "bior2.2")
    with pytest.raises(UsageError):
        WaveletSoftThreshold(-0.1)
    with pytest.raises(UsageError):
        default_level(7, 7)
    with pytest.raises(InvalidInputError):
        WaveletSoftThreshold(0.1)(torch.rand(2, 64))


def test_fit_threshold_picks_the_best_grid_point():
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(6, 1, 8, 8, generator=g, dtype=F64)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g, dtype=F64)
    lam, scores = fit_threshold(lambda prox: prox(noisy), clean, 0.1, multipliers=(0.0, 0.5, 1.0, 5.0))
    assert [s[0] for s in scores] == pytest.approx([0.0, 0.05, 0.1, 0.5])
    assert lam == max(scores, key=lambda s: s[1])[0]
    assert scores[-1][1] < max(s[1] for s in scores)  # a huge threshold is not the best
    with pytest.raises(UsageError):
        fit_threshold(lambda prox: prox(noisy), clean, 0.0)
