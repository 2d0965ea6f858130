"""RelEx (certify/explain/relex.py): the loss terms against their definitions, the mask in [0, 1] and seeded,
examples optimised independently, the objective decreasing on common noise, and on a linear softmax model the
mask selecting exactly the features that raise the explained class's margin."""
import math

import pytest
import torch
from torch import nn

from certify.errors import UsageError
from certify.explain.relex import RelEx, relex_loss


def test_relex_loss_matches_its_definition():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, 1.0]], dtype=torch.float64)
    back = torch.tensor([[0.3, 0.2, -0.4], [1.0, 1.0, 1.0]], dtype=torch.float64)
    target = torch.tensor([0, 2])
    s_fore = torch.softmax(logits, 1)[[0, 1], target]
    s_back = torch.softmax(back, 1)[[0, 1], target]
    expected = -torch.log(s_fore) - 0.7 * torch.log(1 - s_back)
    assert torch.allclose(relex_loss(logits, back, target, 0.7), expected, rtol=1e-12)
    # finite where 1 - s_c rounds to 0 in float64
    far = relex_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[800.0, 0.0]]), torch.tensor([0]), 1.0)
    assert torch.isfinite(far).all() and float(far) == pytest.approx(800.0 + math.log(2.0))


def test_mask_in_unit_box_seeded_and_examples_independent(zoo_case):
    _, model, x, y = zoo_case
    relex = RelEx(model, samples=8, iterations=6, seed=1)
    first = relex.explain(x, target=y)
    assert first.attributions.shape == x.shape and first.method == "relex"
    assert first.attributions.min() >= 0 and first.attributions.max() <= 1
    assert torch.equal(first.attributions, relex.attribute(x, target=y))
    assert torch.equal(RelEx(model).attribute(x, target=y, samples=8, iterations=6, seed=1), first.attributions)
    changed = x.clone()
    changed[1:] = changed[1:].flip(0)
    other = relex.attribute(changed, target=torch.cat([y[:1], y[1:].flip(0)]))
    assert torch.equal(other[0], first.attributions[0])  # example 0's optimisation ignores the others
    for name in ["loss", "foreground_probability", "background_probability", "noise_std"]:
        assert first.diagnostics[name].shape == (x.shape[0],)


def test_objective_decreases_on_common_noise(digits_mlp):
    model, data = digits_mlp
    x, relex = data.x_test[:5], RelEx(model, samples=16, iterations=40, seed=2)
    target = model(x).argmax(1)
    mask = relex.attribute(x, target=target)
    initial = torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) / 100  # the seeded start
    noise = torch.randn((5, 64, *x.shape[1:]), generator=torch.Generator().manual_seed(9))
    noisy = x.unsqueeze(1) + relex.sigma * (x.max(1).values - x.min(1).values).view(5, 1, 1) * noise
    with torch.no_grad():
        before, fore0, back0 = relex._objective(initial, noisy, target)
        after, fore, back = relex._objective(mask, noisy, target)
    assert (after < before).all()
    assert (fore > fore0).all() and (back < back0).all()


def test_linear_model_mask_selects_the_features_that_raise_the_margin():
    """Two classes, logits (w . x, 0): with sigma = 0 the foreground keeps class 0 when sum w_i x_i m_i is
    large and the background loses it when sum w_i x_i (1 - m_i) is small, so the optimum is m_i = 1 where
    w_i x_i > 0 and m_i = 0 where w_i x_i < 0."""
    w = torch.tensor([3.0, -2.0, 1.5, -1.0, 2.5, -3.0], dtype=torch.float64)
    model = nn.Linear(6, 2, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.stack([w, torch.zeros(6, dtype=torch.float64)]))
        model.bias.zero_()
    model.eval()
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0, -1.0, -1.0]], dtype=torch.float64)
    mask = RelEx(model, sigma=0.0, samples=1, iterations=200, lambda1=0.0).attribute(x, target=0)
    contribution = w * x[0]
    assert (mask[0][contribution > 0] > 0.99).all() and (mask[0][contribution < 0] < 0.01).all()


@pytest.mark.parametrize("kwargs", [
    {"sigma": -0.1}, {"samples": 0}, {"iterations": 0}, {"lr": 0.0}, {"momentum": 1.0}, {"momentum": -0.5},
    {"lambda1": -1.0}, {"lambda2": float("nan")}, {"seed": -2},
])
def test_bad_parameters_refused(digits_mlp, kwargs):
    with pytest.raises(UsageError):
        RelEx(digits_mlp[0], **kwargs)
