"""Tests of the Lagrange-dual explainer on zoo models."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from certify.errors import InvalidInputError, ModelModeError, UsageError
from certify.explain import LagrangeDual
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
