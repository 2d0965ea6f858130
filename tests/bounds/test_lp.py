import math
import sys
from pathlib import Path

import cvxpy as cp
import pytest
import torch

from certify.bounds.activations import Activation
from certify.bounds.crown import margin_lower_bounds, margin_spec
from certify.bounds.lp import LPDuals, LPVerifier, lp_margin_lower_bounds, safe_lower_bound
from certify.bounds.network import from_module
from certify.bounds.results import Kind
from certify.bounds.sets import InputSet
from certify.errors import UnsupportedError
from proofs_checks.nets import NetSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from graph_networks import exact_piecewise_min, margin_rows, skip_network  # noqa: E402

DOMAIN = (torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64))


def _case(seed=0, act="relu"):
    net = from_module(NetSpec(5, (10, 8), 3, act, 1.0, 3.0, seed).build(), (5,))
    x = 0.3 + 0.4 * torch.rand(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return net, x, net.forward(x).argmax(1)


@pytest.mark.parametrize("p", [1, 2, math.inf])
def test_lp_tightened_is_at_least_crown_and_below_sampled_margins(p):
    net, x, target = _case()
    eps = 0.15
    lp = lp_margin_lower_bounds(net, x, target, eps, p, DOMAIN)
    crown = margin_lower_bounds(net, x, target, eps, p, DOMAIN).value
    assert lp.kind is Kind.CERTIFIED
    off = torch.isfinite(crown)
    assert (lp.value[off] >= crown[off] - 1e-7 * (1 + crown[off].abs())).all()
    d = torch.randn(4000, 2, 5, dtype=torch.float64)
    d = d / torch.linalg.vector_norm(d, ord=p, dim=-1, keepdim=True) * eps * torch.rand(4000, 2, 1, dtype=torch.float64)
    out = net.forward((x + d).clamp(0, 1).reshape(-1, 5)).reshape(4000, 2, 3)
    sampled = (out.gather(2, target[None, :, None].expand(4000, 2, 1)) - out).min(0).values
    assert (lp.value[off] <= sampled[off]).all()


def test_safe_bound_reproduces_the_solver_value_and_survives_perturbed_duals():
    net, x, target = _case(1)
    s = InputSet.build(x[:1], 0.1, "inf", DOMAIN)
    verifier = LPVerifier(net, s.p)
    _, witnesses = verifier.margin_bounds(s, target[:1])
    w = witnesses[0]
    j = next(iter(w["duals"]))
    c = margin_spec(target[:1], 3)[0, j]
    solved = verifier.problem(net.depth - 1).solve(s, w["boxes"], w["relaxations"], c)
    assert solved.status == cp.OPTIMAL and abs(solved.value - solved.solver_value) < 1e-6
    # any multipliers give a valid bound, never above the LP optimum
    g = torch.Generator().manual_seed(0)
    noisy = LPDuals(*[[t + 0.1 * torch.randn(t.shape, generator=g, dtype=torch.float64) for t in ts]
                      for ts in (solved.duals.w, solved.duals.y1, solved.duals.y2)])
    perturbed = safe_lower_bound(net, s, net.depth - 1, c, w["boxes"], w["relaxations"], noisy)
    assert perturbed <= solved.solver_value + 1e-9
    # a hand-tightened box claim changes the re-derived value: the boxes are part of the certificate
    (lo, hi) = w["boxes"][0]
    shrunk = [(lo + 0.25 * (hi - lo), hi - 0.25 * (hi - lo))] + w["boxes"][1:]
    assert safe_lower_bound(net, s, net.depth - 1, c, shrunk, w["relaxations"], solved.duals) != solved.value


def test_solver_failure_is_a_refusal(monkeypatch):
    net, x, target = _case()

    def broken(self, *args, **kwargs):
        raise cp.error.SolverError("simulated failure")

    monkeypatch.setattr(cp.Problem, "solve", broken)
    result = lp_margin_lower_bounds(net, x, target, 0.1, "inf", DOMAIN)
    assert result.refused and result.value is None and "not optimal" in result.reason


def test_softplus_networks_are_refused_by_the_lp():
    net, x, target = _case(act="softplus")
    with pytest.raises(UnsupportedError, match="ReLU"):
        lp_margin_lower_bounds(net, x, target, 0.1, "inf")


@pytest.mark.parametrize("only_skips", [False, True])
def test_relu_graph_lp_between_crown_and_the_exact_minimum_with_a_tight_safe_bound(only_skips):
    """On a ReLU graph the primal reads every skip and the safe bound sums the skips' multipliers into each
    h_j's (and the input's) coefficient: it reproduces the solver's optimum, lies above CROWN (tightened
    boxes) and below the exact minimum from the enumeration of activation patterns."""
    net = skip_network(Activation("relu"), seed=3, sizes=(2, 4, 3, 3), reads_only_skips=only_skips)
    g = torch.Generator().manual_seed(11)
    for eps in (0.2, 0.6):
        x = torch.randn(1, 2, dtype=torch.float64, generator=g)
        target = net.forward(x).argmax(1)
        s = InputSet.build(x, eps, math.inf)
        verifier = LPVerifier(net, s.p)
        values, (w,) = verifier.margin_bounds(s, target)
        crown = margin_lower_bounds(net, x, target, eps, math.inf).value[0]
        lo, hi = s.box()
        for j, duals in w["duals"].items():
            c = margin_spec(target, 3)[0, j]
            solved = verifier.problem(net.depth - 1).solve(s, w["boxes"], w["relaxations"], c)
            assert solved.status == cp.OPTIMAL and abs(solved.value - solved.solver_value) < 1e-6
            exact = exact_piecewise_min(net, margin_rows(target, 3)[0, j], lo[0], hi[0])
            assert crown[j] - 1e-9 <= values[0, j] <= exact + 1e-9
