"""certify.reports.heatmaps: folding examples into 2-D images and the heatmap grid (symmetric colour scale
per map, one row per example, a PNG that decodes)."""
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from certify.reports import heatmaps
from certify.reports.heatmaps import as_image, heatmap_grid


def test_as_image_folds_square_vectors_and_keeps_others_as_a_row():
    v = torch.arange(64.0)
    img = as_image(v)
    assert img.shape == (8, 8) and img.dtype == np.float64
    assert img[1, 0] == 8.0  # row-major fold
    assert as_image(torch.arange(10.0)).shape == (1, 10)
    m = torch.randn(3, 5)
    assert np.array_equal(as_image(m), m.double().numpy())


def test_as_image_averages_channels():
    x = torch.stack([torch.zeros(4, 4), torch.ones(4, 4), 2 * torch.ones(4, 4)])
    img = as_image(x)
    assert img.shape == (4, 4) and np.allclose(img, 1.0)


def test_as_image_detaches_a_tensor_that_requires_grad():
    x = torch.randn(16, requires_grad=True)
    assert np.allclose(as_image(x), x.detach().double().numpy().reshape(4, 4))


@pytest.fixture
def captured(monkeypatch):
    """The figure heatmap_grid draws, kept from plt.close."""
    figures = []
    real_close = plt.close
    monkeypatch.setattr(heatmaps.plt, "close", lambda fig=None: figures.append(fig))
    yield figures
    for fig in figures:
        real_close(fig)


def test_grid_has_one_row_per_example_and_one_symmetric_scale_per_method(tmp_path, captured):
    torch.manual_seed(0)
    inputs = torch.rand(3, 16)
    attributions = {"a": torch.randn(3, 16) + 0.5, "b": -torch.rand(3, 16), "zero": torch.zeros(3, 16)}
    path = heatmap_grid(inputs, attributions, ["t0", "t1", "t2"], tmp_path / "sub" / "maps.png")
    assert path == tmp_path / "sub" / "maps.png" and path.is_file()
    (fig,) = captured
    grid = [ax for ax in fig.axes if ax.get_images()]
    bars = [ax for ax in fig.axes if not ax.get_images()]
    axes = np.array(grid).reshape(3, 4)
    assert [ax.get_title() for ax in axes[0]] == ["input", "a", "b", "zero"]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["t0", "t1", "t2"]
    assert len(bars) == 3, "one colour bar per method"
    for j, attr in enumerate(attributions.values(), start=1):
        vmax = max(float(attr.abs().max()), 1e-12)  # shared by the method's examples
        for i in range(3):
            background, drawn = axes[i, j].get_images()
            assert background.get_cmap().name == "Greys" and np.array_equal(background.get_array(), as_image(inputs[i]))
            rgba = np.asarray(drawn.get_array())
            assert rgba.shape == (4, 4, 4)
            expected = heatmaps.overlay(as_image(attr[i]), vmax)
            assert np.allclose(rgba, expected)
    lo, hi = bars[0].get_xlim()
    assert lo == pytest.approx(-float(attributions["a"].abs().max())) and hi == pytest.approx(-lo)
    assert all(not ax.get_xticks().size and not ax.get_yticks().size for ax in axes.flat)


def test_overlay_is_centred_at_zero_and_transparent_there():
    a = np.array([[-2.0, 0.0, 2.0, 1.0]])
    rgba = heatmaps.overlay(a, 2.0)
    assert np.allclose(rgba[0, :, 3], [1.0, 0.0, 1.0, 0.5])  # opacity |a| / vmax
    assert rgba[0, 0, 2] > rgba[0, 0, 0] and rgba[0, 2, 0] > rgba[0, 2, 2]  # blue negative, red positive
    assert np.allclose(rgba[0, 1, :3], 1.0, atol=0.01)  # white at 0 (bwr)


def test_grid_png_decodes_and_is_not_blank(tmp_path):
    path = heatmap_grid(torch.rand(2, 64), {"m": torch.randn(2, 64)}, ["x", "y"], tmp_path / "g.png")
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    # figsize (1.7 * 2 columns, 1.6 * 2 rows + 0.6 for the colour bars) at 110 dpi: 374 x 418 pixels
    assert abs(pixels.shape[1] - 374) <= 2 and abs(pixels.shape[0] - 418) <= 2
    assert float(pixels[..., :3].std()) > 0.05, "the image is blank"
