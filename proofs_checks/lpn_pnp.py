"""LPN-PNP. Plug-and-play with a learned proximal network converges (Fang, Buchanan & Sulam, ICLR 2024,
arXiv 2310.14344, section 4, Theorems 4.1 and 4.2; the Sulam talk, Part I; ANCHORS 5.1).

Theorem 4.1 (PnP-PGD), as certify.inverse.pnp states and checks it. Let f = grad psi be an LPN (psi an
input-convex network with non-negative weights) with softplus activations and 0 < alpha < 1, A linear and
0 < eta < 1/sigma_max(A)^2 = 1/||A^T A||. Then the iterates x_{t+1} = T(x_t) = f(x_t - eta A^T (A x_t - y))
converge to some x* with T(x*) = x*, a critical point of 1/2 ||y - A x||^2 + R(x)/eta where f = prox_R.
Theorem 4.2 (PnP-ADMM): the same LPN assumptions and rho > ||A^T A||: the ADMM iterates
x <- (A^T A + rho I)^{-1}(A^T y + rho (z - u)), z <- f(x + u), u <- u + x - z converge to a fixed point.
The talk's slide states the PGD condition as 0 < eta < 1/sigma_max(A) (no square): the two coincide when
sigma_max(A) = 1 and differ otherwise (the slide's is weaker, i.e. unproven, when sigma_max(A) > 1).

Checked (an LPN with alpha = 0.1, hidden 32 x 3 layers, trained in seconds on the digits training images at
noise 0.1 with the l2 loss, evaluated in float64; digits test images; tasks denoising, deblurring (circular
Gaussian blur, width 1) and inpainting (half the pixels), noise 0.1, seeded):

* paper-claim: PGD at eta = 0.99/sigma_max(A)^2 (inside the proven condition) reaches the fixed-point residual
  ||x_T - T(x_T)|| < 1e-6 within MAX_ITER iterations, on every image and task; also where only the paper's
  condition holds and the talk's does not (A = 0.5 I, sigma_max = 1/2, eta = 3 in (2, 4));
* paper-claim: ADMM at rho = 1.01 sigma_max(A)^2 reaches the ADMM-map residual < 1e-6 within MAX_ITER;
* must-hold: the certificate's residual equals ||x_T - T(x_T)|| re-evaluated here independently (the
  implementation returns the iterate it certifies), and the certificate is "certified" exactly when all
  assumptions hold;
* evidence (adversarial step): eta AT the bound (1/sigma_max^2, excluded by the strict inequality) and above
  it (1.05x, 1.5x, 2x, 3x): the final residual after MAX_ITER iterations, and the fraction of images that
  reached 1e-6. At or above the bound the theorem says nothing; non-convergence there is not a failure.
* evidence (talk vs paper): A = 2 * blur (sigma_max = 2), eta = 0.4 satisfies the talk's eta < 1/2 but not the
  proven eta < 1/4: the final residual is reported.
"""
from __future__ import annotations

import math

import torch

from certify.inverse.lpn import LPN
from certify.inverse.operators import GaussianBlur, Identity, Inpainting, Scaled
from certify.inverse.pnp import admm, pgd, pgd_step_bound, talk_step_bound
from proofs_checks.framework import CheckContext, Report, theorem

F64 = torch.float64
TOL = 1e-6
STOP = 1e-7  # stopping tolerance: the claim is then checked with a margin on the re-evaluated residual
MAX_ITER = 500
SIGMA = 0.1
ABOVE = (1.0, 1.05, 1.5, 2.0, 3.0)


def _trained_lpn(seed: int) -> LPN:
    from certify.inverse.training import train_denoiser
    from certify.models.datasets import load_dataset

    data = load_dataset("digits")
    lpn = train_denoiser(LPN(64, hidden=32, layers=3, alpha=0.1), data.x_train, SIGMA, loss="l2", steps=300,
                         lr=3e-3, batch_size=128, seed=seed, progress=False)
    return lpn.double()


def _T(lpn: LPN, A, y: torch.Tensor, x: torch.Tensor, eta: float) -> torch.Tensor:
    """The PGD map, evaluated here independently of certify.inverse.pnp."""
    with torch.no_grad():
        return lpn(x - eta * A.adjoint(A.apply(x) - y))


@theorem("LPN-PNP", "PnP-PGD/ADMM with an LPN (alpha > 0) reach fixed-point residual < 1e-6; adversarial steps",
         "Fang, Buchanan & Sulam, ICLR 2024, Thm 4.1-4.2; Sulam talk Part I")
def check(ctx: CheckContext, report: Report) -> None:
    from certify.models.datasets import load_dataset

    pgd_claim = report.tally(f"PGD residual < {TOL:g} within {MAX_ITER} iterations (eta inside the proven bound)",
                             role="paper-claim", kind="property")
    admm_claim = report.tally(f"ADMM residual < {TOL:g} within {MAX_ITER} iterations (rho > ||A^T A||)",
                              role="paper-claim", kind="property")
    reeval = report.tally("certificate residual == ||x_T - T(x_T)|| re-evaluated independently (tol 1e-12)")
    kinds = report.tally("certificate is 'certified' iff every assumption holds")
    iters = report.tally(f"PGD iterations to stopping residual {STOP:g} (inside the bound)", role="evidence", kind="measurement")
    at_bound = {c: report.tally(f"eta = {c:g} x proven bound: final residual after {MAX_ITER} iterations",
                                role="evidence", kind="adversarial") for c in ABOVE}
    talk_only = report.tally("talk-only step (sigma_max = 2, eta = 0.4 in [1/4, 1/2)): final residual",
                             role="evidence", kind="adversarial")

    torch.manual_seed(ctx.seed)
    lpn = _trained_lpn(ctx.seed)
    n = ctx.examples(4, 16)
    x = load_dataset("digits").x_test[:n].to(F64)
    shape = tuple(x.shape[1:])
    g = torch.Generator().manual_seed(ctx.seed)
    operators = [Identity(shape), GaussianBlur(shape, 1.0), Inpainting(shape, 0.5, seed=ctx.seed)]
    for A in operators:
        y = A.apply(x) + SIGMA * torch.randn(x.shape, generator=g, dtype=F64)
        eta = 0.99 * pgd_step_bound(A)
        res = pgd(lpn, A, y, eta=eta, max_iter=MAX_ITER, tol=STOP)
        cert = res.certificate
        independent = (res.x - _T(lpn, A, y, res.x, eta)).flatten(1).norm(dim=1)
        for i in range(n):
            case = f"{A.describe()}, image {i}, eta {eta:.4g}"
            pgd_claim.record(float(cert.residual[i]), TOL, case)
            reeval.record_close(float(cert.residual[i]), float(independent[i]), 1e-12, case)
            iters.observe(float(res.iterations[i]))
        kinds.record_true(cert.kind == ("certified" if cert.assumptions_hold else "estimated") and cert.assumptions_hold,
                          f"PGD {A.describe()}: {cert.failed}")
        rho = 1.01 * A.sigma_max() ** 2
        res_a = admm(lpn, A, y, rho=rho, max_iter=MAX_ITER, tol=STOP)
        for i in range(n):
            admm_claim.record(float(res_a.certificate.residual[i]), TOL, f"{A.describe()}, image {i}, rho {rho:.4g}")
        kinds.record_true(res_a.certificate.failed == ["theorem statement checked"] and res_a.certificate.kind == "estimated",
                          f"ADMM {A.describe()} (LPN: reported, not certified): {res_a.certificate.failed}")
        bound = pgd_step_bound(A)
        for c in ABOVE:
            adv = pgd(lpn, A, y, eta=c * bound, max_iter=MAX_ITER, tol=TOL)
            kinds.record_true(not adv.certificate.assumptions_hold and adv.certificate.kind == "estimated",
                              f"eta = {c:g} x bound must not be certified")
            r = adv.certificate.residual
            at_bound[c].observe(float(r.max()) if torch.isfinite(r).all() else math.inf)
            report.note(f"{A.describe()}: eta = {c:g} x bound = {c * bound:.4g}: {int((r < TOL).sum())}/{n} images "
                        f"reached residual < {TOL:g}; max residual {float(r.max()):.3g}")

    # the paper's condition without the talk's: sigma_max = 1/2, eta = 3 in (1/sigma_max, 1/sigma_max^2) = (2, 4)
    half = Scaled(Identity(shape), 0.5)
    y = half.apply(x) + SIGMA * torch.randn(x.shape, generator=g, dtype=F64)
    res = pgd(lpn, half, y, eta=3.0, max_iter=MAX_ITER, tol=STOP)
    assert talk_step_bound(half) == 2.0 and pgd_step_bound(half) == 4.0
    for i in range(n):
        pgd_claim.record(float(res.certificate.residual[i]), TOL, f"0.5*identity (paper-only step eta = 3), image {i}")
    kinds.record_true(res.certificate.assumptions_hold and res.certificate.talk_condition is False,
                      "paper-only step: certified, talk condition false")

    # the talk's condition without the paper's: sigma_max = 2, eta = 0.4 in [1/4, 1/2)
    double = Scaled(GaussianBlur(shape, 1.0), 2.0)
    y = double.apply(x) + SIGMA * torch.randn(x.shape, generator=g, dtype=F64)
    res = pgd(lpn, double, y, eta=0.4, max_iter=MAX_ITER, tol=TOL)
    r = res.certificate.residual
    talk_only.observe(float(r.max()) if torch.isfinite(r).all() else math.inf)
    kinds.record_true(res.certificate.talk_condition is True and not res.certificate.assumptions_hold,
                      "talk-only step: talk condition true, not certified")
    report.note(f"talk-only step (2*blur, eta = 0.4): {int((r < TOL).sum())}/{n} images reached residual < {TOL:g}; "
                f"max residual {float(r.max()):.3g}")
