"""Sobol indices through SALib (certify/explain/sobol.py): the Ishigami function's closed-form first-order and
total indices, on the box (Sobol' sequence) and from a data sample; one row per target class; seeded and
deterministic; a zoo tabular model; bad parameters and inputs refused."""
import math
import sys

import pytest
import torch
from torch import nn

from certify.errors import InvalidInputError, UnsupportedError, UsageError
from certify.explain.sobol import SobolIndices
from certify.models import zoo

A, B = 7.0, 0.1  # the usual Ishigami parameters


class Ishigami(nn.Module):
    """f(x) = sin x1 + a sin^2 x2 + b x3^4 sin x1 on [-pi, pi]^3 (Ishigami & Homma 1990), as logits [f, -f]."""

    def forward(self, x):
        f = torch.sin(x[:, 0]) + A * torch.sin(x[:, 1]) ** 2 + B * x[:, 2] ** 4 * torch.sin(x[:, 0])
        return torch.stack([f, -f], dim=1)


def ishigami_indices():
    """Closed forms (Sobol' & Levitan 1999; Saltelli et al. 2008, eq. 4.33): first-order and total indices."""
    v1 = 0.5 * (1 + B * math.pi**4 / 5) ** 2
    v2 = A**2 / 8
    v13 = B**2 * math.pi**8 * (1 / 18 - 1 / 50)  # = 8 b^2 pi^8 / 225
    total = v1 + v2 + v13
    first = torch.tensor([v1, v2, 0.0], dtype=torch.float64) / total
    total_order = torch.tensor([v1 + v13, v2, v13], dtype=torch.float64) / total
    return first, total_order


BOX = (torch.full((3,), -math.pi), torch.full((3,), math.pi))


def test_ishigami_indices_on_the_box():
    first, total = ishigami_indices()
    x = torch.zeros(2, 3, dtype=torch.float64)
    e = SobolIndices(Ishigami().eval(), domain=BOX, samples=4096).explain(x, target=[0, 1])
    assert e.attributions.shape == (2, 3) and e.method == "sobol"
    # f and -f have the same indices; the scrambled Sobol' design with 4096 base rows errs by < 0.007 here
    assert torch.equal(e.attributions[0], e.attributions[1])
    assert (e.attributions[0] - total).abs().max() < 0.01
    assert (e.diagnostics["first_order"][0] - first).abs().max() < 0.01
    assert bool((e.attributions[0] - total).abs().le(e.diagnostics["total_conf"][0]).all())
    variance = A**2 / 8 + B * math.pi**4 / 5 + B**2 * math.pi**8 / 18 + 0.5
    assert abs(float(e.diagnostics["score_variance"][0]) / variance - 1) < 0.02


def test_ishigami_indices_from_a_data_sample():
    """Rows of A and B drawn from uniform data: plain Monte Carlo, within two bootstrap 95% half-widths."""
    first, total = ishigami_indices()
    data = (torch.rand(20000, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1) * math.pi
    e = SobolIndices(Ishigami().eval(), sample=data, samples=4096).explain(torch.zeros(1, 3, dtype=torch.float64), 0)
    assert bool(((e.attributions[0] - total).abs() <= 2 * e.diagnostics["total_conf"][0]).all())
    assert bool(((e.diagnostics["first_order"][0] - first).abs() <= 2 * e.diagnostics["first_order_conf"][0]).all())


def test_zoo_model_rows_follow_the_target_class_and_are_deterministic():
    model, data = zoo.load("breast-cancer-relu-mlp")
    x = data.x_test[:4]
    explainer = SobolIndices(model, sample=data.x_train, samples=256, resamples=20)
    e = explainer.explain(x, target=[0, 1, 0, 1])
    assert e.attributions.shape == x.shape and e.diagnostics["first_order"].shape == x.shape
    assert torch.equal(e.attributions[0], e.attributions[2]) and torch.equal(e.attributions[1], e.attributions[3])
    assert torch.equal(explainer.attribute(x, target=[0, 1, 0, 1]), e.attributions)
    # the input's values do not matter, only its target: a global explanation
    assert torch.equal(explainer.attribute(data.x_test[10:11], target=1)[0], e.attributions[1])
    predicted = explainer.explain(x)
    assert torch.equal(predicted.target, model(x).argmax(dim=1))
    assert bool((e.attributions >= 0).all())  # Jansen's total-index estimator is a mean of squares
    other_seed = SobolIndices(model, sample=data.x_train, samples=256, resamples=20, seed=1).attribute(x, target=0)
    assert not torch.equal(other_seed[0], e.attributions[0])
    box = (data.x_train.min(dim=0).values, data.x_train.max(dim=0).values)
    probability = SobolIndices(model, domain=box, samples=256, resamples=20, score="probability").attribute(x[:1], 0)
    assert probability.shape == (1, 30) and not torch.equal(probability[0], e.attributions[0])


def test_sobol_refusals():
    model, data = zoo.load("breast-cancer-relu-mlp")
    with pytest.raises(UsageError, match="exactly one"):
        SobolIndices(model)
    with pytest.raises(UsageError, match="exactly one"):
        SobolIndices(model, domain=data.domain, sample=data.x_train)
    with pytest.raises(UsageError, match="finite box"):
        SobolIndices(model, domain=data.domain)  # the standardised breast-cancer features are unbounded above
    with pytest.raises(UsageError, match="power of two"):
        SobolIndices(model, domain=BOX, samples=1000)
    with pytest.raises(UsageError, match="lo < hi"):
        SobolIndices(model, domain=(BOX[1], BOX[0]))
    with pytest.raises(UsageError, match="score"):
        SobolIndices(model, domain=BOX, score="margin")
    with pytest.raises(UsageError, match="confidence"):
        SobolIndices(model, domain=BOX, confidence=1.0)
    with pytest.raises(InvalidInputError, match="features"):
        SobolIndices(model, sample=data.x_train[:, :5]).attribute(data.x_test[:1])
    cnn, digits = zoo.load("digits-relu-cnn")
    with pytest.raises(UnsupportedError, match=r"\[N, D\]"):
        SobolIndices(cnn, sample=digits.x_train.flatten(1)).attribute(digits.x_test[:1])
    constant = nn.Linear(3, 2)
    nn.init.zeros_(constant.weight)
    with pytest.raises(InvalidInputError, match="constant"):
        SobolIndices(constant.eval(), domain=BOX, samples=64).attribute(torch.zeros(1, 3))


def test_missing_salib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "SALib.analyze.sobol", None)  # `import SALib.analyze.sobol` now raises ImportError
    with pytest.raises(UnsupportedError, match=r"SALib, which is not installed; .*pip install 'certify\[baselines\]'"):
        SobolIndices(Ishigami().eval(), domain=BOX, samples=64).attribute(torch.zeros(1, 3))
