"""Accuracy under FGSM and PGD: clean accuracy at eps = 0, PGD at least as strong as FGSM, every point in
the ball and the domain (checked in float64), FGSM's closed form on a linear model, batching, bad input."""
import math

import pytest
import torch
from torch import nn

from certify.attacks.accuracy import accuracy_under_attack, fgsm, pgd
from certify.errors import InvalidInputError, ModelModeError, UnsupportedError, UsageError
from certify.models import zoo

NORMS = ["inf", 2]


@pytest.fixture(scope="module")
def relu_mlp():
    model, data = zoo.load("digits-relu-mlp")
    return model, data.x_test[:96].clone(), data.y_test[:96].clone(), (data.domain_lo, data.domain_hi)


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
@pytest.mark.parametrize("norm", NORMS)
def test_accuracy_at_zero_radius_is_the_clean_accuracy(relu_mlp, attack, norm):
    model, x, y, domain = relu_mlp
    with torch.no_grad():
        clean = model(x).argmax(dim=1) == y
    correct = accuracy_under_attack(model, x, y, 0.0, attack, norm, domain=domain)
    assert torch.equal(correct, clean)
    assert 0.5 < clean.double().mean() < 1.0  # a meaningful check: some, not all, examples are right


@pytest.mark.parametrize("norm, eps", [("inf", 0.1), (2, 0.6)])
def test_pgd_is_at_least_as_strong_as_fgsm(relu_mlp, norm, eps):
    model, x, y, domain = relu_mlp
    under_fgsm = accuracy_under_attack(model, x, y, eps, "fgsm", norm, domain=domain)
    under_pgd = accuracy_under_attack(model, x, y, eps, "pgd", norm, steps=20, domain=domain, seed=3)
    with torch.no_grad():
        clean = (model(x).argmax(dim=1) == y).double().mean()
    assert under_pgd.double().mean() <= under_fgsm.double().mean() < clean


@pytest.mark.parametrize("name", ["digits-relu-mlp", "digits-softplus-cnn"])
@pytest.mark.parametrize("norm, eps", [("inf", 0.1), ("inf", 0.3), (2, 0.5), (2, 2.0)])
def test_points_stay_in_the_ball_and_the_domain(name, norm, eps):
    model, data = zoo.load(name)
    x, y = data.x_test[:32], data.y_test[:32]
    lo, hi = data.domain_lo, data.domain_hi
    order = math.inf if norm == "inf" else 2.0
    for points in (
        fgsm(model, x, y, eps, norm, domain=(lo, hi)),
        pgd(model, x, y, eps, norm, steps=5, domain=(lo, hi), seed=1),
        pgd(model, x, y, eps, norm, steps=5, random_start=False, domain=(lo, hi)),
    ):
        assert points.dtype == x.dtype and points.shape == x.shape
        distance = torch.linalg.vector_norm((points.double() - x.double()).flatten(1), ord=order, dim=1)
        assert torch.all(distance <= eps)
        assert torch.all(points >= lo) and torch.all(points <= hi)
        assert distance.max() > 0.25 * eps  # the attack moved (PGD may stop early: it keeps the first misclassified iterate)


def test_fgsm_on_a_linear_model_has_its_closed_form():
    """Two classes, logits (0, w.x): the cross-entropy of class 1 has gradient -(1 - p) w, so FGSM moves
    x by -eps sign(w) (l-inf) and by -eps w / ||w||_2 (l2), up to the rounding margin of float64."""
    torch.manual_seed(0)
    w = torch.randn(1, 6, dtype=torch.float64)
    model = nn.Linear(6, 2, bias=False).double().eval()
    with torch.no_grad():
        model.weight.copy_(torch.cat([torch.zeros_like(w), w]))
    x = torch.randn(4, 6, dtype=torch.float64)
    labels = torch.ones(4, dtype=torch.long)
    eps = 0.3
    torch.testing.assert_close(fgsm(model, x, labels, eps, "inf"), x - eps * w.sign(), rtol=0, atol=1e-14)
    torch.testing.assert_close(fgsm(model, x, labels, eps, 2), x - eps * w / w.norm(), rtol=0, atol=1e-14)


def test_pgd_keeps_the_first_misclassified_iterate(relu_mlp):
    model, x, y, domain = relu_mlp
    points = pgd(model, x, y, 0.3, "inf", steps=10, domain=domain)
    with torch.no_grad():
        assert (model(points).argmax(dim=1) != y).double().mean() > 0.9


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_batches_do_not_change_a_deterministic_attack(relu_mlp, attack):
    model, x, y, domain = relu_mlp
    whole = accuracy_under_attack(model, x, y, 0.08, attack, random_start=False, domain=domain)
    chunked = accuracy_under_attack(model, x, y, 0.08, attack, random_start=False, domain=domain, batch_size=7)
    assert torch.equal(whole, chunked)


def test_attacks_run_inside_inference_mode(relu_mlp):
    model, x, y, domain = relu_mlp
    outside = accuracy_under_attack(model, x, y, 0.1, "fgsm", domain=domain)
    with torch.inference_mode():
        inside = accuracy_under_attack(model, x, y, 0.1, "fgsm", domain=domain)
    assert torch.equal(inside, outside) and not bool(outside.all())


def test_bad_input_is_refused(relu_mlp):
    model, x, y, domain = relu_mlp
    with pytest.raises(UsageError, match="eps"):
        accuracy_under_attack(model, x, y, -0.1, domain=domain)
    with pytest.raises(UsageError, match="attack"):
        accuracy_under_attack(model, x, y, 0.1, attack="cw", domain=domain)
    with pytest.raises(UnsupportedError, match="l1"):
        accuracy_under_attack(model, x, y, 0.1, norm=1, domain=domain)
    with pytest.raises(InvalidInputError, match="domain"):
        accuracy_under_attack(model, x + 2.0, y, 0.1, domain=domain)
    model.train()
    try:
        with pytest.raises(ModelModeError):
            fgsm(model, x, y, 0.1)
    finally:
        model.eval()
