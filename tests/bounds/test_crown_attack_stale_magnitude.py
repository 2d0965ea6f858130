"""Attack (helper H, issue 18) on a cache since removed: `network.absolute` kept |W| per tensor object and
`_version` across calls, but a write through `.data` (`w.data.copy_(v)`, `w.data = v`) or through a NumPy view
(`torch.from_numpy`, `Tensor.numpy()`) changes a tensor without bumping its version. An `AffineNetwork` built by
hand (not by `from_module`, which copies) keeps the caller's tensors, so such a write left a stale |W| that the
interval boxes used as their spread: the certified margin lay ABOVE the true minimum and the certified radius
above the flipping radius. Tensors made under torch.inference_mode() have no version counter at all, and the
cache raised on them. Bounds now take |W| afresh in every call (kept only within one call, in `facts`).

The exact numbers: f_0 - f_1 = 1/2 - relu(x) - relu(-x) on |x| <= 1 has minimum -1/2 (at x = +-1) and flips at
|x| = 1/2; after the write, the cached version certified a margin of 0.49999999999999867 and a radius of 3.9999."""
import numpy as np
import pytest
import torch

from certify.bounds.activations import Activation
from certify.bounds.crown import layer_bounds, margin_lower_bounds
from certify.bounds.network import AffineNetwork, from_module
from certify.bounds.radius import certified_radius
from certify.bounds.sets import InputSet
from certify.certificates.relaxation_check import prove_margins


def _t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _net() -> AffineNetwork:
    """A hand-built network whose first layer is all zeros until the test writes [[1], [-1]] into it."""
    return AffineNetwork([_t([0.0], [0.0]), _t([-1.0, -1.0], [0.0, 0.0])], [_t(0.0, 0.0), _t(0.5, 0.0)],
                         [Activation("relu")], (1,))


def _write(net: AffineNetwork, how: str) -> None:
    if how == "data":
        net.weights[0].data.copy_(_t([1.0], [-1.0]))
    elif how == "assign":  # the old idiom of weight loading: swaps the storage, keeps the version
        net.weights[0].data = _t([1.0], [-1.0])
    else:
        net.weights[0].numpy()[:] = np.array([[1.0], [-1.0]])


X, TARGET = torch.zeros(1, 1, dtype=torch.float64), torch.tensor([0])


@pytest.mark.parametrize("how", ["data", "assign", "numpy"])
def test_a_weight_written_without_a_version_bump_is_bounded_with_its_new_magnitude(how):
    net = _net()
    margin_lower_bounds(net, X, TARGET, 1.0, "inf")  # caches |W_0| = 0
    _write(net, how)
    bound = float(margin_lower_bounds(net, X, TARGET, 1.0, "inf").value[0, 1])
    assert bound <= -0.5  # the exact minimum, at x = +-1


@pytest.mark.parametrize("how", ["data", "assign", "numpy"])
def test_a_weight_written_without_a_version_bump_does_not_raise_the_certified_radius(how):
    net = _net()
    margin_lower_bounds(net, X, TARGET, 1.0, "inf")
    _write(net, how)
    radius = float(certified_radius(net, X, TARGET, "inf", max_radius=4.0).value[0])
    assert radius <= 0.5  # the margin is 1/2 - |x|


def test_the_exact_checker_refuses_the_stale_radius():
    """The certificate path is independent of the cache: after the write, the relaxation checker proves the
    honest radius 0.4 and refuses the raised one (3.0, below the 3.9999 certified with the stale |W|)."""
    net = _net()
    margin_lower_bounds(net, X, TARGET, 1.0, "inf")
    _write(net, "data")
    fresh = AffineNetwork([w.clone() for w in net.weights], [b.clone() for b in net.biases], net.activations, (1,))

    def prove(radius: float) -> None:
        _, rels = layer_bounds(fresh, InputSet.build(X, radius, "inf"), "crown")
        prove_margins(net.weights, net.biases, np.zeros(1), 0, radius, {"alphas": [rels[0].lower_slope[0].numpy()]},
                      np.asarray, AssertionError, "inf", "crown")

    prove(0.4)
    with pytest.raises(AssertionError):
        prove(3.0)


@pytest.mark.parametrize("build", ["by hand", "from_module"])
def test_a_network_made_under_inference_mode_is_bounded(build):
    """88d99c8 bounded it; now `absolute` reads `_version`, which inference tensors lack (RuntimeError)."""
    model = torch.nn.Sequential(torch.nn.Linear(1, 2), torch.nn.ReLU(), torch.nn.Linear(2, 2)).double().eval()
    with torch.no_grad():
        model[0].weight.copy_(_t([1.0], [-1.0]))
        model[0].bias.zero_()
        model[2].weight.copy_(_t([-1.0, -1.0], [0.0, 0.0]))
        model[2].bias.copy_(_t(0.5, 0.0))
    with torch.inference_mode():
        net = _net() if build == "by hand" else from_module(model, (1,))
    value = margin_lower_bounds(net, X, TARGET, 1.0, "inf").value
    assert float(value[0, 1]) <= (0.5 if build == "by hand" else -0.5)  # a point of the set; the exact minimum
