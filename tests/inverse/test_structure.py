"""The structural proof for an LPN (certify.inverse.structure.lpn_structure): certified for a projected LPN,
refused (with the reason) for a negative weight, a subclass, a lookalike, tampering and bad hyper-parameters."""
import torch
from torch import nn

from certify.inverse import lpn as lpn_module
from certify.inverse.lpn import LPN, softplus
from certify.inverse.structure import lpn_structure


def _lpn(alpha: float = 0.1) -> LPN:
    torch.manual_seed(0)
    model = LPN(6, hidden=8, layers=3, beta=10.0, alpha=alpha)
    with torch.no_grad():
        for _, weight in model.constrained():
            weight.uniform_(-0.2, 0.5)
    model.project_()
    return model


def test_projected_lpn_is_certified_with_its_facts():
    result = lpn_structure(_lpn(0.25))
    assert result.holds and result.kind == "certified" and result.reasons == []
    facts = result.facts
    assert facts["alpha"] == facts["strong_convexity"] == 0.25 and facts["beta"] == 10.0 and facts["layers"] == 3
    assert facts["min_constrained_weight"]["value"] == 0.0  # projection clamps at exactly 0
    assert facts["conformance_psi"] <= 1e-12 and facts["conformance_forward"] <= 1e-12
    assert lpn_structure(LPN(3)).holds  # the default initialisation exp(N(-10, 0.1)) is positive


def test_negative_weight_is_refused_and_named():
    model = _lpn()
    with torch.no_grad():
        model.convex[1].weight[2, 5] = -1e-30  # no tolerance
    result = lpn_structure(model)
    assert not result.holds and result.kind == "refused"
    assert any("convex.1.weight" in r and "[2, 5]" in r for r in result.reasons)
    assert result.facts["min_constrained_weight"]["name"] == "convex.1.weight"
    assert result.facts["min_constrained_weight"]["value"] == float(torch.tensor(-1e-30))
    model = _lpn()
    with torch.no_grad():
        model.out.weight[0, 0] = -0.5
    assert any("out.weight" in r for r in lpn_structure(model).reasons)


def test_subclass_overriding_forward_is_refused():
    class Tampered(LPN):
        def forward(self, y):
            return 2 * y

    result = lpn_structure(Tampered(4))
    assert not result.holds and any("subclass" in r and "forward" in r for r in result.reasons)

    class Plain(LPN):
        pass

    assert not lpn_structure(Plain(4)).holds  # exact type only


def test_lookalike_with_nn_softplus_is_not_an_lpn():
    class LookAlike(nn.Module):  # same attributes and layers, torch's thresholded nn.Softplus
        def __init__(self) -> None:
            super().__init__()
            self.dim, self.hidden, self.layers, self.beta, self.alpha = 4, 8, 2, 10.0, 0.0
            self.first = nn.Linear(4, 8)
            self.convex = nn.ModuleList([nn.Linear(8, 8, bias=False)])
            self.skips = nn.ModuleList([nn.Linear(4, 8)])
            self.out = nn.Linear(8, 1, bias=False)
            self.out_skip = nn.Linear(4, 1)
            self.act = nn.Softplus(beta=10.0)

        def constrained(self):
            return [("convex.0.weight", self.convex[0].weight), ("out.weight", self.out.weight)]

    result = lpn_structure(LookAlike())
    assert not result.holds and any("is not certify.inverse.lpn.LPN" in r for r in result.reasons)


def test_tampering_is_refused():
    model = _lpn()
    model.forward = lambda y: y
    assert any("replaced on the instance" in r for r in lpn_structure(model).reasons)
    model = _lpn()
    model.register_forward_hook(lambda mod, inputs, output: 2 * output)
    assert any("hooks" in r for r in lpn_structure(model).reasons)
    model = _lpn()
    model.convex[0] = nn.Sequential(nn.Linear(8, 8, bias=False))
    assert any("convex.0" in r and "nn.Linear" in r for r in lpn_structure(model).reasons)
    model = _lpn()
    model.extra = nn.Softplus()
    assert any("unexpected submodule extra" in r for r in lpn_structure(model).reasons)
    original = lpn_module.softplus
    try:
        lpn_module.softplus = lambda t, beta: torch.nn.functional.softplus(t, beta)  # thresholded
        assert any("softplus was replaced" in r for r in lpn_structure(_lpn()).reasons)
    finally:
        lpn_module.softplus = original
    assert lpn_module.softplus is softplus


def test_bad_hyper_parameters_and_non_finite_weights_are_refused():
    for attr, value in (("beta", 0.0), ("beta", float("inf")), ("alpha", -0.1), ("alpha", float("nan"))):
        model = _lpn()
        setattr(model, attr, value)
        result = lpn_structure(model)
        assert not result.holds and any(attr in r for r in result.reasons)
    model = _lpn()
    with torch.no_grad():
        model.skips[0].weight[0, 0] = float("nan")
    assert any("non-finite" in r and "skips.0.weight" in r for r in lpn_structure(model).reasons)
    assert not lpn_structure("not a model").holds


def test_conformance_detects_a_forward_that_is_not_grad_psi():
    """A psi changed at class level (so no instance or subclass check sees it) no longer matches the formula
    re-derived from the parameters: refused by the conformance check; restored, certified again."""
    model = _lpn()
    original = LPN.psi
    try:
        LPN.psi = lambda self, y: original(self, y) + 0.01 * (y.reshape(y.shape[0], -1) ** 3).sum(1)
        result = lpn_structure(model)
    finally:
        LPN.psi = original
    assert not result.holds and any("psi differs" in r or "forward differs" in r for r in result.reasons)
    assert lpn_structure(model).holds
