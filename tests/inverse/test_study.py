"""The PnP study: data loading, parameter rules, rows and the Markdown table (with a tiny stand-in LPN)."""
import math

import pytest
import torch

from certify.inverse import study
from certify.inverse.lpn import LPN
from certify.inverse.operators import GaussianBlur, Identity, Scaled
from certify.inverse.study import StudyConfig, digits_images, mnist_images, pnp_study, render_markdown, step_rule
from tests.mnistfc_data import data_dir

TINY = StudyConfig(max_iter=30, digits_images=3, mnist_images=2, train_images=4, multipliers=(0.5, 1.0))


def tiny_loader(name):
    n = 64 if "digits" in name else 784
    torch.manual_seed(0)
    return LPN(n, hidden=8, layers=2, alpha=0.1).double()


def test_mnist_images_are_the_vnnlib_centres():
    data_dir()  # fails (not skips) when shared/data is missing
    x = mnist_images(15)
    assert x.shape == (15, 1, 28, 28) and x.dtype == torch.float64
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float((x > 0.5).double().mean()) > 0.05  # digit strokes, not an empty box
    with pytest.raises(Exception):
        mnist_images(3, folder=data_dir() / "missing")


def test_step_rule_is_inside_the_proven_condition():
    for A in (Identity((1, 8, 8)), GaussianBlur((1, 8, 8), 1.0), Scaled(Identity((1, 8, 8)), 3.0)):
        for s, sd in ((0.1, 0.1), (0.2, 0.1), (0.1, 0.2)):
            eta = step_rule(A, s, sd)
            assert 0 < eta < 1.0 / A.sigma_max() ** 2
    assert step_rule(Identity((1, 8, 8)), 0.2, 0.1) == pytest.approx(0.99 * 0.25)


def test_wavelet_threshold_fitted_on_training_images_only(monkeypatch):
    seen = []
    real = study.fit_threshold

    def spy(run, clean, sigma, **kw):
        seen.append(clean)
        return real(run, clean, sigma, **kw)

    monkeypatch.setattr(study, "fit_threshold", spy)
    study._fitted_lambda.cache_clear()
    study._fitted_lambda("denoising", 0.1, TINY)
    test = digits_images(20)
    assert len(seen) == 1 and torch.equal(seen[0], digits_images(4, split="train"))
    flat = seen[0].flatten(1)
    assert not any(bool((flat == t.flatten()).all(dim=1).any()) for t in test)


def test_study_rows_and_table():
    data_dir()
    result = pnp_study(tasks=("denoising", "inpainting"), sigmas=(0.1,), config=TINY, lpn_loader=tiny_loader,
                       keep_reconstructions=True)
    rows = result.rows
    assert len(rows) == 2 * 2 * 1 * 2 * 2  # data sets x tasks x sigmas x priors x algorithms
    for r in rows:
        assert r["images"] == (3 if r["dataset"] == "digits" else 2)
        assert math.isfinite(r["psnr"]) and 0 <= r["iterations_mean"] <= TINY.max_iter
        assert r["certificate"] in ("certified", "estimated") and r["residual_max"] >= 0
        # tiny LPN with 0 < alpha < 1, step inside the condition; wavelet convex; LPN ADMM is never certified
        lpn_admm = r["prior"].startswith("LPN") and r["algorithm"] == "admm"
        assert r["failed"] == (["theorem statement checked"] if lpn_admm else []), r["failed"]
        assert r["certificate"] == ("estimated" if lpn_admm else "certified")
    den = [r for r in rows if r["task"] == "denoising"]
    assert all(18.0 < r["psnr_input"] < 22.0 for r in den)  # sigma = 0.1 noise: about 20 dB
    table = render_markdown(rows)
    assert table.count("\n") == len(rows) + 1 and "| PSNR |" in table and "LPN lpn-mnist-0.1" in table
    assert (("digits", "denoising", 0.1, "lpn", "pgd") in result.reconstructions)
    with pytest.raises(Exception):
        pnp_study(tasks=("superresolution",), config=TINY, lpn_loader=tiny_loader)
