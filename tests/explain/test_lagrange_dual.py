"""Tests of the Lagrange-dual explainer and the per-feature / per-group minimal flips on zoo models."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from certify.errors import InvalidInputError, ModelModeError, UsageError
from certify.explain import LagrangeDual
from certify.explain.feature_sensitivity import AT_BOUNDARY, CANNOT_FLIP, FLIPS, feature_groups, feature_sensitivity
from certify.models import zoo


@pytest.fixture(scope="module")
def digits():
    return zoo.load("digits-relu-mlp")


def test_explain_returns_verified_witnesses_on_digits(digits) -> None:
    model, data = digits
    x = data.x_test[:4]
    explanation = LagrangeDual(model, p=2, domain=data.domain, max_iter=100, restarts=1).explain(x)
    d = explanation.diagnostics
    assert explanation.attributions.shape == x.shape and explanation.attributions.dtype == x.dtype
    assert bool(d["flipped"].all())
    points = x.double() + d["delta"]
    assert bool(((points >= 0) & (points <= 1)).all())
    with torch.no_grad():
        flipped = copy.deepcopy(model).double()(points).argmax(1) != explanation.target
    assert bool(flipped.all())
    assert torch.allclose(d["delta"].flatten(1).norm(dim=1), d["norm"], rtol=1e-9)
    # sensitivity = lam* grad m_cj(x + delta): lam* > 0 and the KKT residual is reported
    assert bool((d["multiplier"] > 0).all()) and bool(torch.isfinite(d["kkt_residual"]).all())
    assert explanation.method == "lagrange-dual" and explanation.params["p"] == 2


@pytest.mark.parametrize("p", [1, math.inf])
def test_other_norms_and_gda(digits, p) -> None:
    model, data = digits
    x = data.x_test[:2]
    default = LagrangeDual(model, p=p, domain=data.domain, max_iter=100, restarts=1).explain(x)
    gda = LagrangeDual(model, p=p, domain=data.domain, max_iter=100, restarts=1, method="gda").explain(x)
    assert bool(default.diagnostics["flipped"].all())
    for explanation in (default, gda):
        norms = explanation.diagnostics["delta"].flatten(1).norm(p=p, dim=1)
        ok = explanation.diagnostics["flipped"]
        assert torch.all(norms[ok] <= explanation.diagnostics["norm"][ok])


def test_misclassified_input_has_zero_radius(digits) -> None:
    model, data = digits
    x = data.x_test[:1]
    predicted = int(model(x).argmax(1))
    explanation = LagrangeDual(model, max_iter=20, restarts=1).explain(x, target=(predicted + 1) % 10)
    assert float(explanation.diagnostics["norm"][0]) == 0.0
    assert int(explanation.diagnostics["status"][0]) == 1
    assert float(explanation.attributions.abs().sum()) == 0.0


def test_bad_parameters_and_inputs(digits) -> None:
    model, data = digits
    with pytest.raises(UsageError):
        LagrangeDual(model, p=3)
    with pytest.raises(UsageError):
        LagrangeDual(model, method="adam")
    with pytest.raises(UsageError):
        LagrangeDual(model, max_iter=0)
    with pytest.raises(InvalidInputError, match="excludes"):
        LagrangeDual(model, domain=(0.5, 1.0), max_iter=5).explain(data.x_test[:1])
    trained = nn.Sequential(nn.Linear(64, 10), nn.Dropout(0.5)).train()
    with pytest.raises(ModelModeError):
        LagrangeDual(trained).explain(data.x_test[:1])


def test_feature_groups_shapes() -> None:
    assert feature_groups((5,)).shape == (5, 5)
    patches = feature_groups((1, 8, 8), group_size=2)
    assert patches.shape == (16, 1, 8, 8) and bool((patches.sum(0) == 1).all())
    with pytest.raises(UsageError):
        feature_groups((64,), group_size=2)


def test_feature_sensitivity_is_consistent_on_a_linear_model() -> None:
    # f_0 - f_1 = 2 x_0 + 0.5 x_1 - 1 on [0, 1]^3 at x = (0.8, 0.4, 0.5): margin 0.8
    model = nn.Linear(3, 2).double().eval()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[2.0, 0.5, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64))
        model.bias.copy_(torch.tensor([-1.0, 0.0], dtype=torch.float64))
    x = torch.tensor([[0.8, 0.4, 0.5]], dtype=torch.float64)
    result = feature_sensitivity(model, x, p=2, domain=(0.0, 1.0), max_iter=200)
    # feature 0 alone flips at x_0 < 0.4 (change 0.4); features 1 and 2 cannot flip within [0, 1]
    assert result.status[0].tolist() == [FLIPS, CANNOT_FLIP, CANNOT_FLIP]
    assert float(result.change[0, 0]) == pytest.approx(0.4, rel=1e-2)
    assert math.isinf(float(result.change[0, 1]))
    assert float(result.witness[0, 0, 1]) == 0.0 and float(result.witness[0, 0, 2]) == 0.0
    misclassified = feature_sensitivity(model, x, target=1, p=2, domain=(0.0, 1.0), max_iter=20)
    assert (misclassified.status == AT_BOUNDARY).all()


def test_feature_sensitivity_on_digits_patches_never_contradicts_itself() -> None:
    model, data = zoo.load("digits-relu-cnn")
    x = data.x_test[:1]
    result = feature_sensitivity(model, x, p=2, domain=data.domain, group_size=4, max_iter=60, restarts=1)
    assert result.status.shape == (1, 4)
    assert not bool((result.flips & result.cannot_flip).any())
    points = x.double().unsqueeze(1) + result.witness
    with torch.no_grad():
        predicted = copy.deepcopy(model).double()(points.reshape(-1, 1, 8, 8)).argmax(1).view(1, 4)
    assert bool((predicted[result.flips] != result.target.view(1, 1).expand(1, 4)[result.flips]).all())
