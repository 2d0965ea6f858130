"""Prox certificates (issue 14; certify.certificates.issuers.prox, the checker certify.certificates.prox_check),
attacked: what the issuer certifies verifies; every edit of a claim, of the model or of the witness that makes
a claim false is caught; a violating cycle cannot be forged for a true prox, not even by exploiting rounding."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from certify.certificates import prox_check
from certify.certificates.claims import RELATIVE_MARGIN, issue, render
from certify.certificates.document import encode_array, parse_certificate
from certify.certificates.issuers.prox import checked_prox_certificate, prox_certificate
from certify.errors import CertificateFormatError, InvalidInputError
from certify.inverse.lpn import LPN

F64 = torch.float64


def _lpn(dim=6, alpha=0.05, seed=0) -> LPN:
    torch.manual_seed(seed)
    model = LPN(dim, hidden=16, layers=3, beta=5.0, alpha=alpha)
    with torch.no_grad():  # weights large enough that psi is far from quadratic
        for _, w in model.constrained():
            w.copy_(torch.rand_like(w) * 0.3)
    return model.eval()


def _mlp(dim=6, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dim, 24), nn.Softplus(), nn.Linear(24, dim)).eval()


def _points(dim=6, count=12, seed=0) -> torch.Tensor:
    return torch.randn(count, dim, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _rows(cert, model):
    problems, rows = prox_check.check_prox(parse_certificate(cert.to_json()), model)
    return problems, {i: (status, detail) for i, status, detail in rows}


@pytest.fixture(scope="module")
def lpn_cert():
    model = _lpn()
    cert, problems = checked_prox_certificate(model, _points(), model_spec=None, seed=0)
    return model, cert, problems


@pytest.fixture(scope="module")
def mlp_cert():
    model = _mlp()
    cert, problems = checked_prox_certificate(model, _points(), model_spec=None, seed=0)
    return model, cert, problems


def test_an_lpn_is_certified_a_prox_and_everything_verifies(lpn_cert):
    model, cert, problems = lpn_cert
    assert cert.answer == "prox" and problems == []
    claims = {c.id: c for c in cert.claims}
    assert claims["structure"].kind == "certified" and claims["structure"].value <= model.alpha
    assert "violation" not in claims  # no violating cycle exists for a gradient of a convex function
    assert claims["asymmetry"].value < 1e-12 and claims["min-eigenvalue"].value >= model.alpha * (1 - 1e-6)
    assert claims["cycles"].value < 0
    problems, rows = _rows(cert, model)
    assert problems == [] and rows["structure"][0] == "valid"
    assert {rows[i][0] for i in ("asymmetry", "min-eigenvalue", "cycles")} == {"estimate"}


def test_a_plain_mlp_denoiser_is_refused_with_a_certified_violation(mlp_cert):
    model, cert, problems = mlp_cert
    assert cert.answer == "not-a-prox" and problems == []
    claims = {c.id: c for c in cert.claims}
    assert claims["structure"].kind == "refused" and "not certify.inverse.lpn.LPN" in claims["structure"].reason
    violation = claims["violation"]
    assert violation.kind == "certified" and violation.value > 0
    assert claims["asymmetry"].value > 1e-3  # the Jacobian is visibly not symmetric
    _, rows = _rows(cert, model)
    assert rows["violation"][0] == "valid"
    # the witness, evaluated independently here: a cycle on which f is not cyclically monotone
    cycle = torch.tensor(violation.params["cycle"]["values"], dtype=F64)
    with torch.no_grad():
        f = copy.deepcopy(model).double()(cycle)
    assert float((f * (torch.roll(cycle, -1, 0) - cycle)).sum()) >= violation.value > 0


def _edited(cert, claim_id, **changes):
    doc = json.loads(cert.to_json())
    for c in doc["claims"]:
        if c["id"] == claim_id:
            for key, value in changes.items():
                if key == "params":
                    c["params"] = value
                    c["statement"] = render(c["type"], value)
                else:
                    c[key] = value
    return parse_certificate(json.dumps(doc))


def test_tampering_the_structure_claim_or_the_model_is_caught(lpn_cert):
    model, cert, _ = lpn_cert
    # a larger strong-convexity modulus than the model's alpha
    problems, rows = prox_check.check_prox(_edited(cert, "structure", value=model.alpha * 2), model)
    assert rows_status(rows, "structure") == "invalid"
    # one constrained weight made negative: psi is no longer certified convex
    bad = copy.deepcopy(model)
    with torch.no_grad():
        bad.convex[1].weight[3, 5] = -1e-6
    assert rows_status(prox_check.check_prox(cert, bad)[1], "structure") == "invalid"
    # a forward replaced on the instance, a subclass, a hook: each changes what the model computes
    patched = copy.deepcopy(model)
    patched.forward = lambda y: 2 * LPN.forward(patched, y)
    assert "overrides forward" in detail(prox_check.check_prox(cert, patched)[1], "structure")

    class Scaled(LPN):
        def forward(self, y):
            return 2 * super().forward(y)

    sub = Scaled(6, hidden=16, layers=3, beta=5.0, alpha=model.alpha)
    sub.load_state_dict(model.state_dict())
    assert "not certify.inverse.lpn.LPN" in detail(prox_check.check_prox(cert, sub.eval())[1], "structure")
    hooked = copy.deepcopy(model)
    hooked.first.register_forward_hook(lambda m, i, o: o * 3)
    assert "hook" in detail(prox_check.check_prox(cert, hooked)[1], "structure")
    # beta edited on the instance: psi changes, the model's forward follows (and still is grad psi), but a
    # non-positive beta is not a softplus
    flat = copy.deepcopy(model)
    flat.beta = -1.0
    assert "beta" in detail(prox_check.check_prox(cert, flat)[1], "structure")


def rows_status(rows, claim_id):
    return next(status for i, status, _ in rows if i == claim_id)


def detail(rows, claim_id):
    return next(d for i, _, d in rows if i == claim_id)


def test_the_answer_must_follow_the_verified_claims(lpn_cert, mlp_cert):
    model, cert, _ = lpn_cert
    doc = json.loads(cert.to_json())
    doc["answer"] = "not-a-prox"
    problems, _ = prox_check.check_prox(parse_certificate(json.dumps(doc)), model)
    assert any("answer" in p for p in problems)
    mlp, mcert, _ = mlp_cert
    doc = json.loads(mcert.to_json())
    doc["answer"] = "undecided"
    assert any("answer" in p for p in prox_check.check_prox(parse_certificate(json.dumps(doc)), mlp)[0])


def test_tampering_the_violation_claim_is_caught(mlp_cert):
    model, cert, _ = mlp_cert
    violation = next(c for c in cert.claims if c.id == "violation")
    # a larger violation than the cycle has
    assert rows_status(prox_check.check_prox(_edited(cert, "violation", value=violation.value * 1.01), model)[1], "violation") == "invalid"
    # the cycle's points moved (its hash recomputed): a different cycle is a different statement; reversing the
    # cycle flips the sign of its sum (sum_i <f(y_i), y_(i-1) - y_i>) in general
    cycle = torch.tensor(violation.params["cycle"]["values"], dtype=F64)
    reversed_cycle = encode_array(torch.flip(cycle, [0]).numpy())
    edited = _edited(cert, "violation", params={"cycle": reversed_cycle})
    assert rows_status(prox_check.check_prox(edited, model)[1], "violation") == "invalid"
    # points that are not float32 numbers: the model as run would see other points
    nudged = encode_array((cycle + 1e-12).numpy())
    edited = _edited(cert, "violation", params={"cycle": nudged})
    assert "representable" in detail(prox_check.check_prox(edited, model)[1], "violation")


def test_no_violating_cycle_can_be_forged_for_an_lpn():
    """Attack: cycles built to make f = grad psi look non-monotone (the MLP's witness cycle, random cycles,
    near-degenerate 2-cycles whose exact sum is ~0 so that only rounding could make it positive, huge cycles)
    never verify as a violation for an LPN, neither with alpha > 0 nor alpha = 0."""
    for alpha in (0.05, 0.0):
        model = _lpn(alpha=alpha, seed=3)
        cert = prox_certificate(model, _points(seed=3))
        gen = torch.Generator().manual_seed(11)
        candidates = [torch.randn(m, 6, generator=gen, dtype=F64) * s for m in (2, 3, 7) for s in (1e-3, 1.0, 1e3)]
        base = torch.randn(1, 6, generator=gen, dtype=F64).to(torch.float32).to(F64)
        for k in (1, 4, 20):  # 2-cycles y, y + k ulp: exact sum -<f(y') - f(y), y' - y> ~ 0
            other = torch.nextafter(base.float(), torch.full_like(base.float(), math.inf))
            for _ in range(k - 1):
                other = torch.nextafter(other, torch.full_like(other, math.inf))
            candidates.append(torch.cat([base, other.double()]))
        for cycle in candidates:
            cycle = cycle.to(torch.float32).to(F64)
            record = encode_array(cycle.numpy())
            doc = json.loads(cert.to_json())
            claim = issue("violation", "prox-violation-cycle", {"cycle": record}, 5e-324, "attack")
            doc["claims"].append({**claim.__dict__})
            doc["answer"] = "not-a-prox"
            forged = parse_certificate(json.dumps(doc))
            _, rows = prox_check.check_prox(forged, model)
            assert rows_status(rows, "violation") == "invalid", (alpha, cycle.shape)


def test_a_violation_below_the_relative_margin_is_refused(mlp_cert):
    """The checker demands value >= RELATIVE_MARGIN sum ||f|| ||d||: a cycle whose violation is tiny against the
    size of f is not accepted, even though its computed sum exceeds the rounding of the sum."""
    model, cert, _ = mlp_cert
    violation = next(c for c in cert.claims if c.id == "violation")
    cycle = torch.tensor(violation.params["cycle"]["values"], dtype=F64)
    shifted = nn.Sequential(model, _Shift(1e9)).eval()  # f + c: the cycle sum is unchanged, ||f|| is huge
    edited = _edited(cert, "violation", value=violation.value * 0.5)
    status = rows_status(prox_check.check_prox(edited, shifted)[1], "violation")
    assert status == "invalid"
    assert RELATIVE_MARGIN * 1e9 * float((torch.roll(cycle, -1, 0) - cycle).norm(dim=1).sum()) > violation.value


class _Shift(nn.Module):
    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, y):
        return y + self.c


def test_tampering_the_estimates_is_caught(mlp_cert):
    model, cert, _ = mlp_cert
    asym = next(c for c in cert.claims if c.id == "asymmetry")
    eig = next(c for c in cert.claims if c.id == "min-eigenvalue")
    cycles = next(c for c in cert.claims if c.id == "cycles")
    for claim_id, value in (("asymmetry", asym.value * 1.1), ("min-eigenvalue", eig.value - 0.1 * abs(eig.value) - 1e-3),
                            ("cycles", cycles.value + 0.1)):
        assert rows_status(prox_check.check_prox(_edited(cert, claim_id, value=value), model)[1], claim_id) == "invalid"


def test_bad_input_is_refused_clearly():
    with pytest.raises(InvalidInputError):
        prox_certificate(_lpn(), _points(count=1))
    with pytest.raises(InvalidInputError):
        prox_certificate(_lpn(), torch.full((3, 6), math.nan, dtype=F64))
    doc = json.loads(prox_certificate(_lpn(), _points()).to_json())
    doc["denoiser"]["features"] = 7
    with pytest.raises(CertificateFormatError):
        parse_certificate(json.dumps({**doc, "answer": "maybe"}))
    problems, _ = prox_check.check_prox(parse_certificate(json.dumps(doc)), _lpn())
    assert problems and "features" in problems[0]


class _Steep(nn.Module):
    """f(y) = W^T sigmoid(beta (W y + b)): the gradient of a convex function (a prox), evaluated so
    ill-conditioned (beta = 1e15) that the rounding of W y can reorder two nearby points."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[1.0, 3.0]], dtype=F64))
        self.b = nn.Parameter(torch.tensor([-4.0], dtype=F64))

    def forward(self, y):
        return torch.sigmoid(1e15 * (y @ self.w.T + self.b)) @ self.w


def test_a_violation_made_by_rounding_is_refused():
    """Attack of the issue-14 review: a 2-cycle a few ulp from the kink of a steep monotone map can have a computed
    sum > 0 far above the rounding of the sum itself. The step floor refuses it; a float64 cycle not representable
    in float32 is refused too; and for an LPN any violation is refused by its structure."""
    model = _Steep().eval()
    base = torch.tensor([[1.0, 1.0]], dtype=F64)
    near = torch.cat([base, torch.nextafter(base, torch.full_like(base, 2.0))])
    cert = prox_certificate(model, _points(dim=2))
    for cycle in (near.to(torch.float32).to(F64), torch.cat([base, base + 1e-9])):
        doc = json.loads(cert.to_json())
        claim = issue("violation", "prox-violation-cycle", {"cycle": encode_array(cycle.numpy())}, 1e-30, "attack")
        doc["claims"].append({**claim.__dict__})
        _, rows = prox_check.check_prox(parse_certificate(json.dumps(doc)), model)
        assert rows_status(rows, "violation") == "invalid"


def test_the_code_that_runs_must_be_the_lpn_as_written(lpn_cert, monkeypatch):
    """Attacks of the issue-14 review: each leaves the class name, the state dict and the model hash alone but
    changes what runs; each is refused by the structure check (the code is compared with a fresh compilation of
    certify/inverse/lpn.py, classes by identity)."""
    import certify.inverse.lpn as lpn_module

    model, cert, _ = lpn_cert
    evil = lambda self, y: -LPN.__dict__["forward"](self, y)  # noqa: E731

    sub = copy.deepcopy(model)
    sub.first.forward = lambda t: nn.functional.linear(t, sub.first.weight, sub.first.bias) - t.abs().sum()
    assert "overrides forward" in detail(prox_check.check_prox(cert, sub)[1], "structure")
    compiled = copy.deepcopy(model)
    compiled._compiled_call_impl = lambda *a, **k: 0
    assert "compiled call" in detail(prox_check.check_prox(cert, compiled)[1], "structure")

    Spoof = type("LPN", (LPN,), {"__module__": "certify.inverse.lpn", "psi": lambda self, y: -LPN.psi(self, y)})
    spoof = Spoof(6, hidden=16, layers=3, beta=5.0, alpha=model.alpha)
    spoof.load_state_dict(model.state_dict())
    assert "not certify.inverse.lpn.LPN itself" in detail(prox_check.check_prox(cert, spoof.eval())[1], "structure")

    with monkeypatch.context() as m:
        m.setattr(LPN, "forward", evil)
        assert "LPN.forward is not the code" in detail(prox_check.check_prox(cert, model)[1], "structure")
    with monkeypatch.context() as m:
        real = lpn_module.softplus

        def softplus(t, beta):
            return real(t, beta) - torch.relu(t - 6.0) ** 2

        softplus.__module__, softplus.__qualname__ = "certify.inverse.lpn", "softplus"
        m.setattr(lpn_module, "softplus", softplus)
        assert "softplus" in detail(prox_check.check_prox(cert, model)[1], "structure")
    with monkeypatch.context() as m:
        m.setattr(LPN, "extra", lambda self: 0, raising=False)
        assert "other methods" in detail(prox_check.check_prox(cert, model)[1], "structure")
    assert rows_status(prox_check.check_prox(cert, model)[1], "structure") == "valid"  # everything undone


def test_the_structural_rules_refuse_every_departure_from_an_lpn():
    """prox_check.lpn_parameters, the rules both the issuer and the checker apply: a projected LPN (and the default
    initialisation) passes; a negative weight however small, a lookalike with torch's thresholded nn.Softplus, a
    replaced or extra submodule, bad beta / alpha, a non-finite weight and a non-model are refused, named."""
    from certify.certificates._common import Invalid

    def refused(model, needle):
        with pytest.raises(Invalid, match=needle):
            prox_check.lpn_parameters(model)

    assert prox_check.lpn_parameters(_lpn())["alpha"] == 0.05 and prox_check.lpn_parameters(LPN(3))["layers"] == 4
    model = _lpn()
    with torch.no_grad():
        model.convex[1].weight[2, 5] = -1e-30  # no tolerance
    refused(model, "convex.1.weight has a negative entry")

    class LookAlike(nn.Module):  # the same attributes and layers, torch's thresholded nn.Softplus
        def __init__(self) -> None:
            super().__init__()
            self.dim, self.hidden, self.layers, self.beta, self.alpha = 4, 8, 2, 10.0, 0.0
            self.first, self.out, self.out_skip = nn.Linear(4, 8), nn.Linear(8, 1, bias=False), nn.Linear(4, 1)
            self.convex = nn.ModuleList([nn.Linear(8, 8, bias=False)])
            self.skips = nn.ModuleList([nn.Linear(4, 8)])
            self.act = nn.Softplus(beta=10.0)

    refused(LookAlike(), "not certify.inverse.lpn.LPN itself")
    model = _lpn()
    model.convex[0] = nn.Sequential(nn.Linear(16, 16, bias=False))
    refused(model, "convex.0 is a Sequential")
    model = _lpn()
    model.extra = nn.Linear(2, 2)
    refused(model, "submodules")
    for attr, value in (("beta", 0.0), ("beta", float("inf")), ("alpha", -0.1), ("alpha", float("nan"))):
        model = _lpn()
        setattr(model, attr, value)
        refused(model, attr)
    model = _lpn()
    with torch.no_grad():
        model.skips[0].weight[0, 0] = float("nan")
    refused(model, "skips.0.weight has a non-finite entry")
    refused(nn.Linear(2, 2), "not certify.inverse.lpn.LPN")
