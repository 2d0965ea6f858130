"""LipSDP-Neuron / -Layer: certified l2 constants re-derived from the solver's multipliers."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from certify.bounds import lipsdp as lipsdp_module
from certify.bounds.lipschitz import lipschitz_estimate, lipschitz_product
from certify.bounds.lipsdp import certified_rho, lipsdp
from certify.bounds.network import from_module
from certify.errors import UsageError
from proofs_checks.nets import NetSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from graph_networks import translated  # noqa: E402

MARGIN = torch.tensor([[1.0, -1.0, 0.0]], dtype=torch.float64)


def _net(act="relu", hidden=(8, 8), seed=0):
    return from_module(NetSpec(4, hidden, 3, act, 1.0, 1.5, seed).build(), (4,))


@pytest.mark.parametrize("act", ["relu", "softplus"])
def test_ordering_estimate_neuron_layer_product(act):
    net = _net(act)
    neuron, layer = lipsdp(net, "neuron"), lipsdp(net, "layer")
    assert neuron.kind.value == "certified" and layer.kind.value == "certified"
    x = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    estimate = lipschitz_estimate(net, x, 2, radius=2.0, samples=32, steps=5).value
    product = lipschitz_product(net, 2).value
    assert estimate <= neuron.value <= layer.value * (1 + 1e-3)
    assert layer.value <= product * (1 + 1e-3)
    assert len(neuron.witness["multipliers"]) == 1


def test_single_unit_is_exact():
    """f(x) = w2 relu(w1 . x): the Lipschitz constant is |w2| ||w1||, and LipSDP finds it."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.ReLU(), torch.nn.Linear(1, 1)).double().eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0, 2.0]]))
        model[2].weight.fill_(-1.5)
    net = from_module(model, (3,))
    assert lipsdp(net, "neuron").value == pytest.approx(4.5, rel=1e-4)
    assert lipsdp(net, "neuron").value >= 4.5


def test_certified_rho_is_tight_for_its_multipliers_and_rejects_bad_ones():
    net = _net("softplus")
    result = lipsdp(net, "neuron")
    structure = lipsdp_module._Structure(net)
    lam = result.witness["multipliers"][0].numpy()
    rho, _ = certified_rho(structure, lam, None)
    # the LMI G(T) - blkdiag(rho I, 0) <= 0 fails for a hand-tightened rho
    gram, _ = lipsdp_module._output_gram(structure.W_last, None)
    g12, g22 = structure.hidden_blocks(lam, gram)
    full = np.block([[-0.99 * rho * np.eye(structure.n0), g12], [g12.T, g22]])
    assert np.linalg.eigvalsh(full)[-1] > 0
    full = np.block([[-1.0001 * rho * np.eye(structure.n0), g12], [g12.T, g22]])
    assert np.linalg.eigvalsh(full)[-1] < 0
    # zero multipliers certify nothing
    bad, info = certified_rho(structure, np.zeros_like(lam), None)
    assert bad is None and "negative definite" in info["reason"]


def test_margin_rows():
    net = _net("relu", seed=4)
    rows = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]], dtype=torch.float64)
    per_row = lipsdp(net, "neuron", rows)
    vector = lipsdp(net, "neuron")
    assert per_row.value.shape == (2,)
    assert (per_row.value <= torch.linalg.vector_norm(rows, dim=1) * vector.value * (1 + 1e-3)).all()
    assert (per_row.value <= lipschitz_product(net, 2, rows).value * (1 + 1e-3)).all()


def test_refusals_and_errors():
    net = _net()
    with pytest.raises(UsageError, match="Network"):
        lipsdp(net, "network")
    starved = lipsdp(net, "neuron", max_iters=3)
    assert starved.refused and "not optimal" in starved.reason


def test_linear_model():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).double().eval()
    net = from_module(model, (4,))
    assert lipsdp(net, "layer").value == pytest.approx(float(torch.linalg.matrix_norm(net.weights[0], ord=2)), rel=1e-12)


@pytest.mark.parametrize("name", ["sigmoid-mlp", "tanh-mlp", "leaky-relu-mlp"])
def test_other_activations_slope_restricted_in_0_1_are_bounded(name):
    """sigmoid, tanh and leaky ReLU (slope 0.1) are nondecreasing with slopes <= 1: LipSDP applies; its
    bound lies above every sampled gradient norm (the product bound exploits sigmoid's 1/4, LipSDP does not)."""
    net, _ = translated(name)
    neuron = lipsdp(net, "neuron")
    assert neuron.kind.value == "certified", neuron.reason
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert lipschitz_estimate(net, x, 2, radius=2.0, samples=32, steps=5).value <= neuron.value
    if name != "sigmoid-mlp":
        assert neuron.value <= lipschitz_product(net, 2).value * (1 + 1e-3)
