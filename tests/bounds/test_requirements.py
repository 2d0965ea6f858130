"""Methods written for chains or for ReLU refuse other networks with a reason that names the skip (its
layer and source) or the layer and its activation (certify/bounds/requirements.py and its callers)."""
import math
import sys
from pathlib import Path

import pytest
import torch

from certify.bounds.activations import Activation
from certify.bounds.crc import curvature_radius
from certify.bounds.curvature import RELU_REFUSAL, curvature_bound, weak_convexity
from certify.bounds.lipsdp import lipsdp
from certify.bounds.lp import lp_margin_lower_bounds
from certify.bounds.milp import exact_margin_lower_bounds
from certify.bounds.network import AffineNetwork, from_module
from certify.bounds.radius import certified_radius
from certify.bounds.requirements import activation_refusal, chain_refusal, require_chain, require_relu
from certify.errors import UnsupportedError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from graph_models import GRAPH_MODELS  # noqa: E402
from graph_networks import skip_network  # noqa: E402

X = torch.full((1, 4), 0.5, dtype=torch.float64)
TARGET = torch.tensor([0])
SKIP = r"is implemented for chains of layers; this network has a skip connection into layer 1 \(z_1 reads the input h_0\) \(and 2 more skip terms\)"


def _chain(act: str) -> AffineNetwork:
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(3, 5, generator=g, dtype=torch.float64)]
    return AffineNetwork(weights, [torch.zeros(5, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)], [Activation(act)], (4,))


def test_reasons_name_the_first_skip_and_the_activation():
    net = skip_network(Activation("relu"))
    assert chain_refusal(_chain("relu"), "X") is None
    assert chain_refusal(net, "X").startswith("X is implemented for chains")
    one = AffineNetwork(net.weights, net.biases, net.activations, (4,), skips={2: {1: net.skips[2][1]}})
    assert "into layer 2 (z_2 reads h_1, the output of layer 0)" in chain_refusal(one, "X")
    assert activation_refusal(_chain("gelu"), "Y", ("relu",)) == "Y handles ReLU activations only; hidden layer 0 of this network has GELU"
    assert activation_refusal(net, "Y", ("relu",)) is None
    with pytest.raises(UnsupportedError, match=SKIP):
        require_chain(net, "Z")
    with pytest.raises(UnsupportedError, match="hidden layer 0 of this network has sigmoid"):
        require_relu(_chain("sigmoid"), "Z")


@pytest.mark.parametrize("method", ["lp", "lp-radius"])
def test_the_lp_refuses_other_activations_naming_the_layer(method):
    net = skip_network(Activation("leaky_relu"))
    domain = (torch.zeros(4), torch.ones(4))
    with pytest.raises(UnsupportedError, match="the LP relaxation handles ReLU activations only; hidden layer 0 of this "
                                               "network has leaky ReLU"):
        if method == "lp":
            lp_margin_lower_bounds(net, X, TARGET, 0.1, math.inf, domain)
        else:
            certified_radius(net, X, TARGET, math.inf, method="lp", domain=domain)


@pytest.mark.parametrize("act, named", [(Activation("silu"), "has silu"),
                                        (Activation("leaky_relu", negative_slope=2.0), "has leaky_relu with slope 2.0")])
def test_the_milp_refuses_what_is_not_relu_or_leaky_relu_in_0_1(act, named):
    with pytest.raises(UnsupportedError, match=r"the MILP handles ReLU and leaky ReLU \(slope in \[0, 1\]\) activations only; "
                                               "hidden layer 0 of this network " + named):
        exact_margin_lower_bounds(skip_network(act), X, TARGET, 0.1, math.inf)


def test_lipsdp_and_curvature_bounds_refuse_graphs_and_other_activations():
    softplus_graph = skip_network(Activation("softplus"))
    row = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
    for result in (lipsdp(softplus_graph, c=row[None]), weak_convexity(softplus_graph, row), curvature_bound(softplus_graph, row),
                   curvature_radius(softplus_graph, X, 0)):
        assert result.refused and "skip connection into layer 1" in result.reason, result.reason
    sigmoid = _chain("sigmoid")
    assert "hidden layer 0 of this network has sigmoid" in weak_convexity(sigmoid, row).reason
    assert "hidden layer 0 of this network has gelu (sup |sigma'| = 1.1289, decreasing somewhere)" in lipsdp(_chain("gelu"), c=row[None]).reason
    assert "hidden layer 0 of this network has tanh" in curvature_radius(_chain("tanh"), X, 0).reason
    for act in ("relu", "leaky_relu"):  # piecewise linear: no curvature bound at all, chain or graph
        assert weak_convexity(skip_network(Activation(act)), row).reason == RELU_REFUSAL
        assert weak_convexity(_chain(act), row).reason == RELU_REFUSAL


def test_curvature_bounds_name_the_kinked_layer_of_a_mixed_network():
    """A network with ReLU and smooth layers is not piecewise linear: the refusal names the ReLU layer."""
    build, shape = GRAPH_MODELS["branches"]  # cat(relu(A x), tanh(B x)) -> Linear
    net = from_module(build(0), shape)
    row = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
    for result in (weak_convexity(net, row), curvature_bound(net, row)):
        assert result.refused and result.reason != RELU_REFUSAL
        assert result.reason.startswith("hidden layer 0 of this network has relu, whose kinks"), result.reason
