"""Tests of the lower / upper / gap bounds on the minimal flipping radius."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from certify.radius_bounds import minimal_radius_bounds
from certify.errors import UsageError
from proofs_checks.ld_sound_radius import tiny_relu_net

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_models import GRAPH_MODELS  # noqa: E402


@pytest.mark.parametrize("p", [math.inf, 1.0])
def test_lower_exact_upper_are_ordered_on_a_tiny_relu_net(p: float) -> None:
    net = tiny_relu_net(0)
    x = 0.3 + 0.4 * torch.rand(3, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    bounds = minimal_radius_bounds(net, x, p=p, domain=(0.0, 1.0), lower_methods=("lipschitz", "ibp", "crown"), max_iter=200)
    assert torch.isfinite(bounds.exact).all()
    assert torch.all(bounds.lower <= bounds.exact + 1e-7)
    assert torch.all(bounds.exact <= bounds.upper + 1e-7)
    for method in ("lipschitz", "ibp", "crown"):
        assert torch.all(bounds.results[method].value <= bounds.exact + 1e-7)
    assert torch.allclose(bounds.gap, bounds.upper - bounds.lower)
    assert all(name in ("trivial (r* >= 0)", "lipschitz-margin", "ibp-bisection", "crown-bisection") for name in bounds.lower_method)
    assert bounds.results["exact"].kind.value == "solver-reported"


def test_p2_skips_the_milp_and_reports_certified_bounds() -> None:
    net = tiny_relu_net(1)
    x = 0.3 + 0.4 * torch.rand(2, 6, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    bounds = minimal_radius_bounds(net, x, p=2, domain=(0.0, 1.0), max_iter=150)
    assert torch.isnan(bounds.exact).all() and "exact" not in bounds.results
    assert torch.all(bounds.lower > 0) and torch.all(bounds.lower <= bounds.upper)


def test_no_witness_gives_infinite_upper_with_reason() -> None:
    model = nn.Linear(2, 2).double().eval()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64))
        model.bias.copy_(torch.tensor([0.5, 0.0], dtype=torch.float64))
    x = torch.tensor([[0.5, 0.5]], dtype=torch.float64)  # f_0 - f_1 = x_0 + 0.5 > 0 on [0, 1]^2
    bounds = minimal_radius_bounds(model, x, p=2, domain=(0.0, 1.0), max_iter=50)
    assert math.isinf(float(bounds.upper[0])) and "no flipping perturbation" in bounds.upper_reason[0]
    assert math.isinf(float(bounds.gap[0]))


def test_misclassified_input_has_zero_bounds_and_bad_methods_are_refused() -> None:
    net = tiny_relu_net(2)
    x = 0.3 + 0.4 * torch.rand(1, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    wrong = (int(net(x).argmax(1)) + 1) % 3
    bounds = minimal_radius_bounds(net, x, target=wrong, p=math.inf, domain=(0.0, 1.0), max_iter=20)
    assert float(bounds.lower[0]) == 0.0 and float(bounds.upper[0]) == 0.0 and float(bounds.exact[0]) == 0.0
    with pytest.raises(UsageError):
        minimal_radius_bounds(net, x, lower_methods=("sdp",))
    with pytest.raises(UsageError):
        minimal_radius_bounds(net, x, p=5)


def test_a_relu_graph_gets_every_lower_bound_and_the_milp() -> None:
    """A residual ReLU graph: Lipschitz, CROWN and LP lower bounds below the MILP optimum (the LP and the MILP
    encode the skips), below the witness."""
    build, shape = GRAPH_MODELS["residual-mlp"]
    model = build(0).double()
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    bounds = minimal_radius_bounds(model, x, p=math.inf, domain=(-1.0, 2.0), lower_methods=("lipschitz", "crown", "lp"),
                                   max_iter=150)
    assert torch.all(bounds.lower > 0) and torch.all(bounds.lower <= bounds.upper)
    assert torch.isfinite(bounds.exact).all()
    assert torch.all(bounds.lower <= bounds.exact + 1e-7) and torch.all(bounds.exact <= bounds.upper + 1e-7)
    assert torch.all(bounds.results["crown"].value <= bounds.results["lp"].value + 1e-4)  # bisection tolerance
    assert torch.all(bounds.results["lp"].value <= bounds.exact + 1e-7)
