"""The denoiser zoo (certify.inverse.zoo): names, cache (hash, atomic write, corrupt file retrained), data layout,
and the trained entries' quality (the slow ones marked slow)."""
from __future__ import annotations

import time

import pytest
import torch

from certify.errors import UnsupportedError
from certify.inverse import zoo
from certify.inverse.laplace import map_estimate, posterior_mean, posterior_median
from certify.inverse.lpn import LPN
from certify.models.datasets import load_dataset

GRID = torch.linspace(-3, 3, 601, dtype=torch.float64).unsqueeze(1)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CERTIFY_CACHE", str(tmp_path))
    return tmp_path / "lpn"


def test_names_and_unknown() -> None:
    assert set(zoo.names()) == {"lpn-laplace-l2", "lpn-laplace-l1", "lpn-laplace-pm", "lpn-laplace-pm-long", "lpn-digits-0.1",
                                "lpn-digits-0.2", "lpn-mnist-0.1", "lpn-mnist-0.2", "mlp-digits-0.1"}
    with pytest.raises(UnsupportedError):
        zoo.load_lpn("lpn-cifar")
    with pytest.raises(UnsupportedError):
        zoo.recipe("zoo:nothing")
    assert zoo.recipe("zoo:lpn-digits-0.1") is zoo.RECIPES["lpn-digits-0.1"]
    for name in zoo.names():
        spec = zoo.recipe(name)
        assert (spec.arch == "lpn") == name.startswith("lpn-")
        if spec.arch == "lpn":
            assert spec.alpha > 0  # R's certified upper end and the PnP theorem need alpha > 0
    # the recipe hash changes with any field
    base = zoo.RECIPES["lpn-digits-0.1"]
    assert base.digest() != zoo.RECIPES["lpn-digits-0.2"].digest()


def test_cache_roundtrip_and_corrupt_file(cache, monkeypatch) -> None:
    tiny = zoo.DenoiserRecipe("laplace", 1.0, "l2", hidden=8, layers=2, steps=20, batch_size=64)
    monkeypatch.setitem(zoo.RECIPES, "lpn-tiny", tiny)
    first = zoo.load_lpn("lpn-tiny", progress=False)
    assert isinstance(first, LPN) and not first.training and next(first.parameters()).dtype == torch.float32
    files = list(cache.glob("lpn-tiny-*.pt"))
    assert len(files) == 1 and tiny.digest()[:16] in files[0].name
    assert not list(cache.glob("*.tmp*"))  # the atomic write leaves no partial file
    again = zoo.load_lpn("zoo:lpn-tiny", progress=False)
    for a, b in zip(first.parameters(), again.parameters()):
        assert torch.equal(a, b)
    files[0].write_bytes(b"not a torch file")
    retrained = zoo.load_lpn("lpn-tiny", progress=False)  # corrupt: retrained, same weights (deterministic)
    for a, b in zip(first.parameters(), retrained.parameters()):
        assert torch.equal(a, b)
    assert torch.load(files[0], weights_only=True)  # rewritten


def test_laplace_samples() -> None:
    x = zoo.laplace_samples(200_000, b=2.0, seed=0)
    assert x.shape == (200_000, 1) and torch.isfinite(x).all()
    assert float(x.abs().mean()) == pytest.approx(2.0, rel=0.02)  # E|x| = b
    assert abs(float(x.mean())) < 0.03
    assert torch.equal(x, zoo.laplace_samples(200_000, b=2.0, seed=0))


def test_mnist_layout_and_shift() -> None:
    digits = load_dataset("digits").x_train[:5]
    big = zoo.mnist_like(digits)
    assert big.shape == (5, 1, 28, 28) and float(big.min()) >= 0 and float(big.max()) <= 1
    border = big.clone()
    border[:, :, 4:24, 4:24] = 0
    assert float(border.abs().max()) == 0.0  # the digit sits in the central 20x20 box
    image = torch.zeros(3, 1, 10, 10)
    image[:, 0, 5, 5] = 1.0
    gen = torch.Generator().manual_seed(0)
    shifted = zoo.random_shift(image, gen, max_shift=2)
    assert shifted.shape == image.shape
    for k in range(3):
        (r, c) = (shifted[k, 0] == 1).nonzero()[0].tolist()
        assert abs(r - 5) <= 2 and abs(c - 5) <= 2 and float(shifted[k].sum()) == 1.0  # moved, not lost or wrapped
    many = zoo.random_shift(image[:1].expand(64, 1, 10, 10).contiguous(), gen, max_shift=2)
    positions = {tuple((many[k, 0] == 1).nonzero()[0].tolist()) for k in range(64)}
    assert len(positions) > 5  # the offsets vary


def test_laplace_l2_trains_fast_and_reaches_the_posterior_mean(cache) -> None:
    """Acceptance: training an LPN for the tests takes under a minute on 2 CPU cores."""
    start = time.perf_counter()
    lpn = zoo.load_lpn("lpn-laplace-l2", progress=False)
    seconds = time.perf_counter() - start
    assert seconds < 60, seconds
    with torch.no_grad():
        error = (lpn.double()(GRID) - posterior_mean(GRID)).abs().max()
    assert float(error) <= 0.15
    assert all(float(w.detach().min()) >= 0 for _, w in lpn.constrained())


@pytest.mark.slow
def test_laplace_l1(cache) -> None:
    start = time.perf_counter()
    lpn = zoo.load_lpn("lpn-laplace-l1", progress=False)
    assert time.perf_counter() - start < 60
    with torch.no_grad():
        error = (lpn.double()(GRID) - posterior_median(GRID)).abs().max()
    assert float(error) <= 0.15


@pytest.mark.slow
def test_laplace_pm_thresholds(cache) -> None:
    """Proximal matching moves f towards the MAP soft threshold: within 0.2 of it on [-3, 3] (the paper's 0.15 is
    tallied as a claim in proofs_checks/lpn_pm.py; measured 0.158 at y = 1, where even the exact minimiser of the
    proximal matching risk at the final gamma = 0.1 is about 0.11 away), and in the MAP's dead zone |y| <= 0.8 far
    closer to 0 than the posterior mean and median."""
    start = time.perf_counter()
    lpn = zoo.load_lpn("lpn-laplace-pm", progress=False)
    assert time.perf_counter() - start < 60
    with torch.no_grad():
        f = lpn.double()(GRID)
    assert float((f - map_estimate(GRID)).abs().max()) <= 0.2
    dead = GRID.abs().squeeze(1) <= 0.8
    assert float(f[dead].abs().mean()) < 0.5 * float(posterior_median(GRID)[dead].abs().mean())


@pytest.mark.slow
def test_laplace_pm_long_reaches_the_soft_threshold(cache) -> None:
    """The slow proximal-matching recipe (batch 4096, gamma down to 0.07): within the paper's 0.15 of the soft
    threshold on [-3, 3] (measured 0.132), in a few minutes."""
    start = time.perf_counter()
    lpn = zoo.load_lpn("lpn-laplace-pm-long", progress=False)
    assert time.perf_counter() - start < 600
    with torch.no_grad():
        assert float((lpn.double()(GRID) - map_estimate(GRID)).abs().max()) <= 0.15


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1.0 / ((a - b) ** 2).flatten(1).mean(1))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lpn-digits-0.1", "lpn-digits-0.2", "lpn-mnist-0.1", "lpn-mnist-0.2", "mlp-digits-0.1"])
def test_image_denoisers_denoise(cache, name) -> None:
    start = time.perf_counter()
    model = zoo.load_lpn(name, progress=False)
    assert time.perf_counter() - start < 60
    spec = zoo.recipe(name)
    clean = load_dataset("digits").x_test[:100]
    if spec.data == "mnist":
        clean = zoo.mnist_like(clean)
    noisy = clean + spec.sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        denoised = model(noisy)
    assert denoised.shape == clean.shape
    assert float(_psnr(denoised, clean).mean()) > float(_psnr(noisy, clean).mean()) + 1.5


@pytest.mark.slow
def test_mlp_is_not_a_gradient_field(cache) -> None:
    """The plain MLP's Jacobian is far from symmetric (so it is no prox); an LPN's is symmetric."""
    mlp = zoo.load_lpn("mlp-digits-0.1", progress=False).double()
    x = load_dataset("digits").x_test[:1].double()
    jac = torch.autograd.functional.jacobian(lambda v: mlp(v.reshape(1, 1, 8, 8)).flatten(), x.flatten())
    asym = float((jac - jac.T).norm() / jac.norm())
    assert asym > 0.1
    lpn = zoo.load_lpn("lpn-digits-0.1", progress=False).double()
    jac = torch.autograd.functional.jacobian(lambda v: lpn(v.reshape(1, 1, 8, 8)).flatten(), x.flatten())
    assert float((jac - jac.T).norm() / jac.norm()) < 1e-10
