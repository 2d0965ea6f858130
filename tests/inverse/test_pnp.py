"""PnP-PGD and PnP-ADMM: closed forms, agreement on a convex problem, batching, and the certificate."""

import pytest
import torch

from certify.errors import InvalidInputError, UsageError
from certify.inverse.classical import WaveletSoftThreshold
from certify.inverse.lpn import LPN
from certify.inverse.operators import GaussianBlur, Identity, Inpainting, Scaled
from certify.inverse.pnp import admm, admm_penalty_bound, pgd, pgd_residual, pgd_step_bound, talk_step_bound

F64 = torch.float64
SHAPE = (1, 8, 8)


class SoftThreshold:
    """prox of lam ||x||_1 (pixel basis): a convex prox with a closed form."""

    convex_regulariser = True

    def __init__(self, lam):
        self.lam = lam

    def __call__(self, v):
        return torch.sign(v) * (v.abs() - self.lam).clamp_min(0.0)


class ZeroProx:
    """prox of R = 0 (the identity map)."""

    convex_regulariser = True

    def __call__(self, v):
        return v


def data(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *SHAPE, generator=g, dtype=F64)
    return x, torch.randn(n, *SHAPE, generator=g, dtype=F64)


def small_lpn(alpha=0.2, seed=0):
    torch.manual_seed(seed)
    lpn = LPN(64, hidden=16, layers=2, alpha=alpha).double()
    with torch.no_grad():  # make psi far from quadratic so the prox is non-trivial
        for _, w in lpn.constrained():
            w.copy_(torch.rand_like(w) * 0.3)
    return lpn


@pytest.mark.parametrize("eta", [0.3, 1.0])
def test_pgd_soft_threshold_identity_closed_form(eta):
    x, v = data()
    y = x + 0.2 * v
    lam = 0.05
    res = pgd(SoftThreshold(lam), Identity(SHAPE), y, eta=eta, max_iter=2000, tol=1e-13)
    expected = SoftThreshold(lam / eta)(y)  # minimiser of 1/2||y - x||^2 + (lam/eta)||x||_1
    assert torch.allclose(res.x, expected, atol=1e-11)
    assert bool(res.converged.all())
    assert res.certificate.kind == "certified"  # convex prox, eta < 2/||A^T A||


def test_admm_soft_threshold_identity_closed_form():
    x, v = data()
    y = x + 0.2 * v
    lam, rho = 0.04, 2.0
    res = admm(SoftThreshold(lam), Identity(SHAPE), y, rho=rho, max_iter=5000, tol=1e-13)
    assert torch.allclose(res.x, SoftThreshold(rho * lam)(y), atol=1e-10)  # 1/2||y-x||^2 + rho lam ||x||_1


def test_admm_and_pgd_agree_on_a_convex_deblurring_problem():
    x, v = data(3)
    A = GaussianBlur(SHAPE, 0.5)  # sigma_min(A) = 0.33: a strictly convex objective, unique minimiser
    y = A.apply(x) + 0.05 * v
    eta, lam = 0.8, 0.01
    prox = WaveletSoftThreshold(lam)
    a = pgd(prox, A, y, eta=eta, max_iter=20000, tol=1e-12)
    b = admm(prox, A, y, rho=1.0 / eta, max_iter=20000, tol=1e-12)  # same objective 1/2||y-Ax||^2 + lam/eta ||Wx||_1
    assert bool(a.converged.all()) and bool(b.converged.all())
    assert float((a.x - b.x).abs().max()) < 1e-9
    assert float((a.x - A.adjoint(y)).abs().max()) > 1e-2  # the prior did something


def test_certificate_residual_is_reevaluated():
    x, v = data()
    A = Inpainting(SHAPE, 0.5, seed=0)
    y = A.apply(x) + 0.1 * v
    lpn = small_lpn()
    res = pgd(lpn, A, y, eta=0.9, max_iter=50, tol=0.0)  # stopped by max_iter, not converged
    again = pgd_residual(lpn, A, y, res.x, 0.9)
    assert torch.allclose(res.certificate.residual, again, rtol=1e-12, atol=1e-15)
    assert res.iterations.tolist() == [50] * 4 and not bool(res.converged.any())
    assert res.history.shape == (50, 4)


def test_lpn_pgd_converges_and_is_certified():
    x, v = data()
    A = GaussianBlur(SHAPE, 1.0)
    y = A.apply(x) + 0.1 * v
    lpn = small_lpn(alpha=0.3)
    res = pgd(lpn, A, y, eta=0.9 * pgd_step_bound(A), max_iter=2000, tol=1e-9)
    cert = res.certificate
    assert bool(res.converged.all()) and float(cert.residual.max()) < 1e-8
    assert cert.kind == "certified" and cert.assumptions_hold and "converge" in cert.statement()
    assert cert.as_dict()["assumptions_hold"] is True


def test_batched_equals_individual_runs():
    x, v = data(3)
    A = GaussianBlur(SHAPE, 1.0)
    y = A.apply(x) + torch.tensor([0.0, 0.1, 0.3], dtype=F64).view(3, 1, 1, 1) * v
    lpn = small_lpn()
    batch = pgd(lpn, A, y, eta=0.9, max_iter=3000, tol=1e-10)
    for i in range(3):
        one = pgd(lpn, A, y[i:i + 1], eta=0.9, max_iter=3000, tol=1e-10)
        assert int(one.iterations[0]) == int(batch.iterations[i])
        assert torch.allclose(one.x[0], batch.x[i], atol=1e-12)
    b = admm(lpn, A, y, rho=1.2, max_iter=3000, tol=1e-10)
    for i in range(3):
        one = admm(lpn, A, y[i:i + 1], rho=1.2, max_iter=3000, tol=1e-10)
        assert int(one.iterations[0]) == int(b.iterations[i])
        assert torch.allclose(one.x[0], b.x[i], atol=1e-12)


def test_assumptions_checked_individually():
    x, v = data(2)
    A = Identity(SHAPE)
    y = x + 0.1 * v
    bound = pgd_step_bound(A)
    at_bound = pgd(small_lpn(), A, y, eta=bound, max_iter=5)
    assert at_bound.certificate.failed == ["0 < eta < 1/sigma_max(A)^2"]  # strict inequality
    assert at_bound.certificate.kind == "estimated" and "not certified" in at_bound.certificate.statement()
    no_alpha = pgd(small_lpn(alpha=0.0), A, y, eta=0.5, max_iter=5)
    assert no_alpha.certificate.failed == ["alpha > 0 (psi strongly convex)"]
    big_alpha = pgd(small_lpn(alpha=1.5), A, y, eta=0.5, max_iter=5)
    assert big_alpha.certificate.failed == ["alpha < 1 (the paper's theorems: 0 < alpha < 1)"]
    broken = small_lpn()
    with torch.no_grad():
        broken.convex[0].weight[0, 0] = -1.0
    assert pgd(broken, A, y, eta=0.5, max_iter=5).certificate.failed == ["psi convex (constrained weights >= 0)"]
    plain = pgd(lambda t: 0.5 * t, A, y, eta=0.5, max_iter=5)
    assert plain.certificate.failed[0] == "prox is a learned proximal network"
    small = admm(small_lpn(), A, y, rho=admm_penalty_bound(A), max_iter=5)
    assert small.certificate.failed == ["rho > sigma_max(A)^2", "theorem statement checked"]
    # LPN ADMM is never certified here (module docstring): its one failed assumption is the unchecked theorem
    assert admm(small_lpn(), A, y, rho=1.01, max_iter=5).certificate.failed == ["theorem statement checked"]


def test_talk_condition_differs_from_the_proven_one():
    A = Scaled(Identity(SHAPE), 2.0)  # sigma_max = 2: talk eta < 1/2, proof eta < 1/4
    assert talk_step_bound(A) == 0.5 and pgd_step_bound(A) == 0.25
    x, v = data(2)
    y = A.apply(x) + 0.1 * v
    res = pgd(small_lpn(), A, y, eta=0.4, max_iter=5)
    assert res.certificate.talk_condition is True and not res.certificate.assumptions_hold
    shrink = Scaled(Identity(SHAPE), 0.5)  # sigma_max = 1/2: proof eta < 4, talk eta < 2
    res = pgd(small_lpn(), shrink, shrink.apply(x), eta=3.0, max_iter=5)
    assert res.certificate.talk_condition is False and res.certificate.assumptions_hold


def test_divergence_above_the_convex_bound_stops_unconverged():
    x, v = data(2)
    A = Scaled(Identity(SHAPE), 2.0)  # ||A^T A|| = 4, convex PGD converges for eta < 1/2
    y = A.apply(x)
    res = pgd(ZeroProx(), A, y, eta=0.6, max_iter=200, tol=1e-10)  # x <- x - 0.6*4 (x - x0): factor -1.4
    assert not bool(res.converged.any()) and float(res.residuals.min()) > 1e3
    assert res.certificate.kind == "estimated"
    ok = pgd(ZeroProx(), A, y, eta=0.2, max_iter=500, tol=1e-12)
    assert bool(ok.converged.all()) and torch.allclose(ok.x, x, atol=1e-11)


def test_float64_copy_of_a_float32_lpn():
    lpn = LPN(64, hidden=8, layers=2, alpha=0.1)
    x, v = data(2)
    res = pgd(lpn, Identity(SHAPE), (x + 0.1 * v).float(), eta=0.5, max_iter=20, dtype=F64)
    assert res.x.dtype == F64 and next(lpn.parameters()).dtype == torch.float32


def test_errors():
    x, _ = data(1)
    with pytest.raises(UsageError):
        pgd(ZeroProx(), Identity(SHAPE), x, eta=0.0)
    with pytest.raises(UsageError):
        admm(ZeroProx(), Identity(SHAPE), x, rho=-1.0)
    with pytest.raises(UsageError):
        pgd(ZeroProx(), Identity(SHAPE), x, eta=0.5, max_iter=0)
    with pytest.raises(InvalidInputError):
        pgd(ZeroProx(), Identity((1, 4, 4)), x, eta=0.5)
    with pytest.raises(InvalidInputError):
        pgd(ZeroProx(), Identity(SHAPE), x, eta=0.5, x0=x[:, :, :4])
