"""Curvature-based certified l2 radius (Singla & Feizi Theorem 1, evaluated rigorously)."""
import torch

from certify.explain.minimal_perturbation import minimal_perturbation
from certify.bounds.crc import curvature_radius, forward_with_error
from certify.bounds.network import from_module
from certify.models import zoo
from proofs_checks.nets import NetSpec


def _net(seed, act="softplus"):
    model = NetSpec(6, (32,), 3, act, 1.0, 3.0, seed).build()
    return model, from_module(model, (6,))


def test_radius_is_below_every_verified_flip_and_reasonably_tight():
    for seed in range(2):
        model, net = _net(seed)
        x = torch.rand(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        target = net.forward(x).argmax(1)
        radius = curvature_radius(net, x, target)
        attack = minimal_perturbation(model, x, target, p=2, max_iter=300, restarts=2)
        assert attack.flipped.all()
        assert (radius.value <= attack.norm).all()
        assert (radius.value >= 0.3 * attack.norm).all()  # measured 0.47-0.99 on these nets
        assert radius.kind.value == "certified"


def test_batched_equals_per_example_and_misclassified_is_zero():
    _, net = _net(3)
    x = torch.rand(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    target = net.forward(x).argmax(1)
    batched = curvature_radius(net, x, target).value
    single = torch.cat([curvature_radius(net, x[i : i + 1], target[i : i + 1]).value for i in range(3)])
    assert torch.allclose(batched, single, rtol=1e-9)
    wrong = (target + 1) % 3
    assert (curvature_radius(net, x, wrong).value == 0).all()


def test_forward_with_error_covers_the_model():
    model, net = _net(4)
    x = 5 * torch.randn(50, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    logits, err = forward_with_error(net, x)
    assert ((logits - model(x)).abs() <= err).all()


def test_relu_refused_and_zoo_radius():
    _, relu_net = _net(0, "relu")
    assert curvature_radius(relu_net, torch.zeros(1, 6), 0).refused
    model, data = zoo.load("digits-softplus-mlp")
    net = from_module(model, data.input_shape)
    x, y = data.x_test[:2], data.y_test[:2]
    radius = curvature_radius(net, x, y, grid=8, iterations=150)
    attack = minimal_perturbation(model, x, y, p=2, max_iter=200, restarts=1)
    assert (radius.value > 0).all() and (radius.value <= attack.norm).all()
