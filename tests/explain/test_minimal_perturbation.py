"""Tests of the per-pair minimal-perturbation solver: closed forms on linear classifiers, domain handling,
bad input, the KKT evaluator, agreement with an exact MILP on a tiny ReLU net, and witnesses that flip the
model as the user runs it (float32, bfloat16) as well as its float64 copy."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from certify.bounds.milp import exact_minimal_radius
from certify.bounds.network import from_module
from certify.errors import InvalidInputError, UsageError
from certify.explain.minimal_perturbation import (
    STATUS_AT_BOUNDARY,
    STATUS_DTYPE_DISAGREES,
    STATUS_NO_WITNESS,
    STATUS_WITNESS,
    DomainBox,
    kkt_stationarity,
    lp_norm,
    minimal_perturbation,
)
from certify.models import zoo


def linear(weight: list[list[float]], bias: list[float]) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight)).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float64))
        layer.bias.copy_(torch.tensor(bias, dtype=torch.float64))
    return layer.eval()


def closed_form_radius(model: nn.Linear, x: torch.Tensor, c: int, p: float) -> float:
    w, b = model.weight.detach(), model.bias.detach()
    logits = w @ x + b
    q = {1.0: math.inf, 2.0: 2.0, math.inf: 1.0}[p]
    return min(float((logits[c] - logits[j]) / torch.linalg.vector_norm(w[c] - w[j], ord=q)) for j in range(len(b)) if j != c)


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
def test_linear_classifier_matches_closed_form(p: float) -> None:
    model = linear([[1.0, 2.0, -1.0], [-0.5, 0.3, 0.8], [0.2, -1.0, 0.1]], [0.5, 0.0, -0.2])
    x = torch.tensor([[1.0, 0.5, 0.2], [0.3, -0.4, 1.0]], dtype=torch.float64)
    target = model(x).argmax(1)
    result = minimal_perturbation(model, x, target, p=p, max_iter=300, restarts=1)
    for i in range(2):
        exact = closed_form_radius(model, x[i], int(target[i]), p)
        assert exact <= float(result.norm[i]) <= exact * 1.01
    assert bool(result.flipped.all())
    assert (result.status == STATUS_WITNESS).all()
    # the witness really flips the decision and its norm is the reported one (rounded up)
    flipped = model(x + result.delta).argmax(1) != target
    assert bool(flipped.all())
    assert torch.all(lp_norm(result.delta.reshape(2, -1), p) <= result.norm)


def test_sensitivity_is_minus_the_unit_perturbation_for_p2() -> None:
    model = linear([[1.0, 2.0], [-1.0, 0.5]], [0.3, 0.0])
    x = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    result = minimal_perturbation(model, x, model(x).argmax(1), p=2, max_iter=300, restarts=1)
    unit = result.delta / result.delta.norm()
    assert torch.allclose(result.sensitivity, -unit, atol=1e-3)
    w = (model.weight[0] - model.weight[1]).detach()
    assert float(result.multiplier[0]) == pytest.approx(1.0 / float(w.norm()), rel=1e-3)
    assert float(result.kkt_residual[0]) < 1e-3


def test_domain_is_respected_and_no_witness_gives_inf() -> None:
    model = linear([[1.0, 0.0], [0.0, 0.0]], [0.0, -0.5])  # f_0 - f_1 = x_0 + 0.5: flips only for x_0 < -0.5
    x = torch.tensor([[0.5, 0.5], [0.1, 0.9]], dtype=torch.float64)
    result = minimal_perturbation(model, x, torch.zeros(2, dtype=torch.long), p=2, domain=(0.0, 1.0), max_iter=100)
    assert torch.isinf(result.norm).all()
    assert (result.status == STATUS_NO_WITNESS).all()
    assert not bool(result.flipped.any())
    assert "no flipping perturbation" in result.reasons()[0]
    wide = minimal_perturbation(model, x, torch.zeros(2, dtype=torch.long), p=2, domain=(-1.0, 1.0), max_iter=200)
    points = x + wide.delta
    assert bool(((points >= -1.0) & (points <= 1.0)).all())
    assert float(wide.norm[0]) == pytest.approx(1.0, rel=1e-2)


def test_support_restricts_the_perturbation() -> None:
    model = linear([[1.0, 1.0], [0.0, 0.0]], [0.0, 0.0])
    x = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    support = torch.tensor([[False, True]])
    result = minimal_perturbation(model, x, torch.zeros(1, dtype=torch.long), p=2, support=support, max_iter=200)
    assert float(result.delta[0, 0]) == 0.0
    assert float(result.norm[0]) == pytest.approx(1.0, rel=1e-2)


def test_margin_not_positive_means_zero_radius() -> None:
    model = linear([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    x = torch.tensor([[1.0, 2.0], [1.0, 1.0]], dtype=torch.float64)  # class 0 is wrong, then tied
    result = minimal_perturbation(model, x, torch.zeros(2, dtype=torch.long), p=2, max_iter=20)
    assert (result.status == STATUS_AT_BOUNDARY).all()
    assert torch.equal(result.norm, torch.zeros(2, dtype=torch.float64))
    assert result.flipped.tolist() == [True, False]  # strictly misclassified vs tied
    assert "r* = 0" in result.reasons()[1]


def test_bad_input_is_refused() -> None:
    model = linear([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    x = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    target = torch.zeros(1, dtype=torch.long)
    with pytest.raises(UsageError, match="norm p=3 is not supported"):
        minimal_perturbation(model, x, target, p=3)
    with pytest.raises(UsageError, match="method"):
        minimal_perturbation(model, x, target, method="newton")
    with pytest.raises(InvalidInputError, match="excludes"):
        minimal_perturbation(model, x, target, domain=(0.0, 1.0))
    with pytest.raises(UsageError, match="lo > hi"):
        minimal_perturbation(model, x, target, domain=(3.0, 2.0))
    with pytest.raises(UsageError, match="max_iter"):
        minimal_perturbation(model, x, target, max_iter=0)


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
def test_kkt_evaluator_on_closed_form_optimum(p: float) -> None:
    w = torch.tensor([[0.5, -2.0, 1.0]], dtype=torch.float64)
    margin = 0.7
    q = {1.0: math.inf, 2.0: 2.0, math.inf: 1.0}[p]
    r = margin / float(torch.linalg.vector_norm(w, ord=q))
    direction = {2.0: w / w.norm(), math.inf: torch.sign(w), 1.0: torch.tensor([[0.0, -1.0, 0.0]], dtype=torch.float64)}[p]
    delta = -r * direction
    inf = torch.full((1, 3), math.inf, dtype=torch.float64)
    lam, residual = kkt_stationarity(torch.zeros(1, 3, dtype=torch.float64), delta, w, DomainBox(-inf, inf), torch.ones(1, 3, dtype=torch.float64), p)
    assert float(residual[0]) < 1e-9
    assert float(lam[0]) == pytest.approx(1.0 / float(torch.linalg.vector_norm(w, ord=q)), rel=1e-8)
    # a non-optimal direction has a clearly positive residual
    _, bad = kkt_stationarity(torch.zeros(1, 3, dtype=torch.float64), torch.tensor([[r, 0.0, 0.0]], dtype=torch.float64), w, DomainBox(-inf, inf), torch.ones(1, 3, dtype=torch.float64), p)
    assert float(bad[0]) > 0.1


def test_kkt_normal_cone_at_an_active_bound() -> None:
    # min ||delta||_2 s.t. x_0 + x_1 + delta_0 + delta_1 <= 0 with x_1 + delta_1 >= 0.9: x_1 is pinned at its
    # lower bound, all the change goes into coordinate 0; stationarity holds with a normal-cone multiplier.
    w = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    x = torch.tensor([[0.5, 1.0]], dtype=torch.float64)
    box = DomainBox(torch.tensor([[-5.0, 0.9]], dtype=torch.float64), torch.tensor([[5.0, 5.0]], dtype=torch.float64))
    delta = torch.tensor([[-1.4, -0.1]], dtype=torch.float64)  # the exact optimum: x + delta = (-0.9, 0.9)
    lam, residual = kkt_stationarity(x, delta, w, box, torch.ones(1, 2, dtype=torch.float64), 2.0)
    assert float(residual[0]) < 1e-9
    assert float(lam[0]) > 0


def test_default_matches_milp_on_a_tiny_relu_net() -> None:
    with torch.random.fork_rng():  # leave the global RNG as it was
        torch.manual_seed(1)
        net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()
    with torch.no_grad():
        for module in net:
            if isinstance(module, nn.Linear):
                module.weight.mul_(3.0)
    x = 0.3 + 0.4 * torch.rand(3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    target = net(x).argmax(1)
    result = minimal_perturbation(net, x, target, p=math.inf, domain=(0.0, 1.0), max_iter=300)
    exact = exact_minimal_radius(from_module(net, (4,)), x, target, math.inf, domain=(torch.zeros(4), torch.ones(4)))
    values = exact.value.numpy()
    assert np.all(np.isfinite(values))
    assert np.all(values <= result.norm.numpy() + 1e-7)  # no witness beats the exact radius
    assert np.all(result.norm.numpy() <= values * 1.02 + 1e-9)  # and the default gets within 2%


def test_gda_runs_and_reports_valid_witnesses() -> None:
    model = linear([[1.0, 2.0], [-1.0, 0.5]], [0.3, 0.0])
    x = torch.tensor([[1.0, 1.0], [0.5, 0.2]], dtype=torch.float64)
    target = model(x).argmax(1)
    result = minimal_perturbation(model, x, target, p=2, method="gda", max_iter=300, restarts=1)
    for i in range(2):
        if bool(result.flipped[i]):
            assert float(result.norm[i]) >= closed_form_radius(model, x[i], int(target[i]), 2.0) * (1 - 1e-12)
    assert result.gradient_evaluations.tolist() == [301, 301]


def _flips(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Whether x + delta leaves class `target`, evaluated as the user runs the model (the inputs' dtype)."""
    with torch.no_grad():
        logits = model(x + delta.to(x.dtype))
    others = logits.scatter(1, target.view(-1, 1), -math.inf).amax(1)
    return logits.gather(1, target.view(-1, 1)).squeeze(1) < others


def test_witnesses_flip_the_float32_model_and_its_float64_copy_on_digits() -> None:
    # issue 10, item 3: the float64 witness used to leave the float32 decision unchanged on 41% of these inputs
    model, data = zoo.load("digits-relu-mlp")
    x = data.x_test[:32]
    assert x.dtype == torch.float32
    target = model(x).argmax(1)
    result = minimal_perturbation(model, x, target, p=2, domain=data.domain)
    assert (result.status == STATUS_WITNESS).all() and bool(result.flipped.all())
    assert int((~_flips(model, x, result.delta, target)).sum()) == 0  # as the user runs it (float32)
    model64 = copy.deepcopy(model).double()
    assert int((~_flips(model64, x.double(), result.delta, target)).sum()) == 0  # and in float64
    assert bool((result.model_margin < 0).all()) and bool((result.margin < 0).all())
    # the reported norm is the norm of the delta returned (its stored float64 values), rounded up
    norms = lp_norm(result.delta.flatten(1), 2.0)
    assert bool((norms <= result.norm).all()) and bool((result.norm <= norms * (1 + 1e-12)).all())
    points = x.double() + result.delta
    assert bool(((points >= 0) & (points <= 1)).all())


def test_witness_flips_a_bfloat16_model() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(3)
        net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = torch.rand(8, 6, generator=torch.Generator().manual_seed(4))
    for dtype in (torch.bfloat16, torch.float16):
        model, inputs = copy.deepcopy(net).to(dtype), x.to(dtype)
        target = model(inputs).argmax(1)
        result = minimal_perturbation(model, inputs, target, p=2, max_iter=100, restarts=1)
        found = result.status == STATUS_WITNESS
        assert bool(found.any())
        assert bool(_flips(model, inputs, result.delta, target)[found].all())
        assert bool(_flips(copy.deepcopy(model).double(), inputs.double(), result.delta, target)[found].all())
        assert bool((result.status[~found] != STATUS_WITNESS).all())


def test_works_inside_inference_mode() -> None:
    model = linear([[1.0, 2.0], [-1.0, 0.5]], [0.3, 0.0])
    x = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    expected = minimal_perturbation(model, x, torch.zeros(1, dtype=torch.long), p=2, max_iter=100, restarts=1)
    with torch.inference_mode():
        inside = minimal_perturbation(model, x.clone(), torch.zeros(1, dtype=torch.long), p=2, max_iter=100, restarts=1)
    assert torch.equal(inside.delta, expected.delta) and torch.equal(inside.norm, expected.norm)


def test_a_decision_the_two_dtypes_disagree_on_gets_no_witness() -> None:
    # f_0 = x_0 + x_1, f_1 = 1: at x = (1, 1e-8) float32 rounds f_0 to 1 (a tie, m_0 = 0) while float64 has
    # m_0 = 1e-8 > 0; neither "r* = 0" nor a witness found in float64 alone would be true of both
    model = nn.Linear(2, 2).eval()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
        model.bias.copy_(torch.tensor([0.0, 1.0]))
    x = torch.tensor([[1.0, 1e-8]])
    result = minimal_perturbation(model, x, torch.zeros(1, dtype=torch.long), p=2, max_iter=20, restarts=1)
    assert int(result.status[0]) == STATUS_DTYPE_DISAGREES and math.isinf(float(result.norm[0]))
    assert not bool(result.flipped[0]) and float(result.delta.abs().sum()) == 0.0
    assert "disagree" in result.reasons()[0]
