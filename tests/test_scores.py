"""certify.scores: class scores f_c(x) and their input gradients, batched in one backward pass, against
closed forms and per-example autograd in float64."""
import pytest
import torch
from torch import nn

from certify.scores import class_scores, score_gradients

F64 = torch.float64


def _tiny_net(seed=0, act=None) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), act or nn.Softplus(beta=2.0), nn.Linear(6, 3)).double().eval()


def test_class_scores_pick_each_examples_own_logit():
    net = _tiny_net()
    x = torch.randn(5, 4, dtype=F64)
    target = torch.tensor([0, 2, 1, 2, 0])
    logits = net(x)
    scores = class_scores(net, x, target)
    assert scores.shape == (5,)
    assert torch.equal(scores, torch.stack([logits[i, c] for i, c in enumerate(target.tolist())]))


def test_gradient_of_a_softplus_net_matches_its_closed_form():
    """f_c(x) = w2_c . softplus_beta(W1 x + b1) + b2_c, so grad f_c(x) = W1^T (w2_c * sigmoid(beta z))."""
    net = _tiny_net(seed=1)
    w1, b1, w2 = net[0].weight.detach(), net[0].bias.detach(), net[2].weight.detach()
    x = torch.randn(6, 4, dtype=F64)
    target = torch.tensor([0, 1, 2, 2, 1, 0])
    scores, grads = score_gradients(net, x, target)
    z = x @ w1.T + b1
    expected = (w2[target] * torch.sigmoid(2.0 * z)) @ w1
    assert torch.allclose(grads, expected, rtol=1e-12, atol=1e-14)
    assert torch.allclose(scores, net(x)[torch.arange(6), target], rtol=0, atol=0)


@pytest.mark.parametrize("act", [nn.ReLU(), nn.Softplus(beta=1.0), nn.Tanh()], ids=["relu", "softplus", "tanh"])
def test_batched_gradients_equal_per_example_autograd(act):
    net = _tiny_net(seed=2, act=act)
    x = torch.randn(7, 4, dtype=F64)
    target = torch.tensor([2, 0, 1, 1, 0, 2, 2])
    _, batched = score_gradients(net, x, target)
    for i in range(7):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net(xi)[0, target[i]], xi)
        assert torch.allclose(batched[i], g[0], rtol=1e-13, atol=1e-15)


def test_gradients_match_finite_differences_in_float64():
    net = _tiny_net(seed=3)
    x = torch.randn(2, 4, dtype=F64)
    target = torch.tensor([1, 2])
    _, grads = score_gradients(net, x, target)
    h = 1e-6
    for i in range(4):
        e = torch.zeros(4, dtype=F64)
        e[i] = h
        central = (class_scores(net, x + e, target) - class_scores(net, x - e, target)) / (2 * h)
        assert torch.allclose(grads[:, i], central.detach(), rtol=1e-7, atol=1e-9)


def test_images_keep_their_shape_dtype_and_device():
    torch.manual_seed(4)
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 5 * 5, 4)).eval()
    x = torch.rand(3, 1, 5, 5)
    scores, grads = score_gradients(cnn, x, torch.tensor([3, 0, 1]))
    assert scores.shape == (3,) and grads.shape == x.shape
    assert grads.dtype == x.dtype == torch.float32 and grads.device == x.device
    with torch.no_grad():  # works inside no_grad: it enables gradients itself
        _, again = score_gradients(cnn, x, torch.tensor([3, 0, 1]))
    assert torch.equal(again, grads)


def test_results_are_detached_and_the_input_is_untouched():
    net = _tiny_net(seed=5)
    x = torch.randn(3, 4, dtype=F64, requires_grad=True)
    before = x.detach().clone()
    scores, grads = score_gradients(net, x, torch.tensor([0, 1, 2]))
    assert not scores.requires_grad and not grads.requires_grad and scores.grad_fn is None
    assert x.grad is None and torch.equal(x.detach(), before)
    assert all(p.grad is None for p in net.parameters())  # parameter gradients are not accumulated


def test_an_examples_gradient_does_not_depend_on_the_rest_of_the_batch():
    net = _tiny_net(seed=6)
    x = torch.randn(4, 4, dtype=F64)
    target = torch.tensor([1, 1, 0, 2])
    _, full = score_gradients(net, x, target)
    _, alone = score_gradients(net, x[2:3], target[2:3])
    _, shuffled = score_gradients(net, x.flip(0), target.flip(0))
    assert torch.allclose(full[2], alone[0], rtol=1e-14, atol=0)
    assert torch.allclose(full, shuffled.flip(0), rtol=1e-14, atol=0)


def test_an_out_of_range_target_is_an_error():
    net = _tiny_net(seed=7)
    with pytest.raises((RuntimeError, IndexError)):
        score_gradients(net, torch.randn(2, 4, dtype=F64), torch.tensor([0, 3]))
