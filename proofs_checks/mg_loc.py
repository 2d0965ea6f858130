"""MG-LOC. Local weak convexity suffices for MoreauGrad's Theorem 1(3) and Corollary 1 (DESIGN section 11;
Zhang & Farnia, MoreauGrad, Theorem 1(3) and Corollary 1, localised).

Lemma. Let f = f_c be L-Lipschitz in the l2 norm on R^n (L a certified GLOBAL bound), x an input, eps >= 0,
rho > 0 and R = B(x, eps + rho L) (closed l2 ball). Suppose f + lambda_R/2 ||.||^2 is convex on R (lambda_R
certified on R: certify.bounds.local, the minimum with the global constant) and rho lambda_R < 1. Then for
every x' with ||x' - x||_2 <= eps, with F_x'(z) = f(z) + ||z - x'||^2/(2 rho):

  (i)   every stationary point z of F_x' satisfies ||z - x'|| = rho ||grad f(z)|| <= rho L, so lies in R;
  (ii)  F_x' has exactly one stationary point, the prox point z*(x') (its global minimiser);
  (iii) for x', x'' in B(x, eps), with MG(x') = (x' - z*(x'))/rho,

            ||MG(x') - MG(x'')||_2 <= ||x' - x''||_2 / min(rho, 1/lambda_R - rho)       (Corollary 1 with lambda_R).

Proof. (i) grad F_x'(z) = grad f(z) + (z - x')/rho = 0 gives z - x' = -rho grad f(z), and ||grad f|| <= L;
then ||z - x|| <= ||z - x'|| + ||x' - x|| <= rho L + eps. (ii) On the convex set R, grad f + lambda_R I is
monotone, so <grad F(z1) - grad F(z2), z1 - z2> >= (1/rho - lambda_R) ||z1 - z2||^2 > 0 for z1 != z2 in R: two
stationary points, both in R by (i), coincide. F_x' is continuous and coercive (f grows at most linearly), so
a global minimiser exists; it is stationary, hence it is z*. (iii) z' = z*(x'), z'' = z*(x'') lie in R and
satisfy grad f(z') = (x' - z')/rho, grad f(z'') = (x'' - z'')/rho; monotonicity of grad f + lambda_R I on the
segment [z', z''] (inside R, convex) gives, with d = x' - x'' and e = z' - z'', <d, e> >= (1 - rho lambda_R)
||e||^2. Then ||d - e||^2 = ||d||^2 - 2 <d, e> + ||e||^2 <= ||d||^2 - (1 - 2 rho lambda_R) ||e||^2: if
rho lambda_R <= 1/2 this is <= ||d||^2; otherwise ||e|| <= ||d|| / (1 - rho lambda_R) (Cauchy-Schwarz) and
||d - e||^2 <= ||d||^2 (rho lambda_R)^2 / (1 - rho lambda_R)^2. As MG(x') - MG(x'') = (d - e)/rho, the bound
follows. Nothing outside R was used: the global lambda may be infinite or rho lambda_global >= 1.

  (iv)  (shrinking, certify.bounds.local.prox_region) R may be replaced by B(x, r_K) with r_0 = eps + rho L and
        r_(k+1) = min(r_k, eps + rho L(r_k)), L(r) a certified bound on ||grad f|| over B(x, r): by induction
        every stationary point lies in B(x, r_k), so its gradient norm is at most L(r_k) and by (i) it lies in
        B(x', rho L(r_k)) inside B(x, eps + rho L(r_k)). The lemma holds with lambda_R, beta_R of that ball.
  (v)   if moreover ||Hess f|| <= beta_R on R, ||MG(x') - MG(x'')|| <= beta_R ||x' - x''|| / (1 - rho lambda_R)
        (MG(x') = grad f(z') by stationarity, and ||e|| <= ||d|| / (1 - rho lambda_R) as in (iii)); the product
        states the smaller of (iii) and (v) (certify.bounds.stability.vanilla_stability).

Checked on random softplus MLPs with two or three hidden layers (where the global lambda is a product of
layer norms) and on the zoo model digits-softplus-mlp2. Per case: x random (zoo: a test input), eps, and rho
the largest on a geometric grid with rho lambda_R <= fraction, lambda_R = min(local, global) on
R = B(x, r_K) of certify.bounds.local.prox_region (as the certificates use it), L =
certify.bounds.lipschitz.lipschitz_product (p = 2), preferring cases where
rho lambda_global >= 1 (the global Corollary 1 does not apply; reported). The hypothesis -lambda_min(Hess f) <=
lambda_R is itself checked at the prox points and at sampled points of R. Attacks: x' found by projected
ascent on ||MG(x') - MG(x)|| (direction J(x')^T (MG(x') - MG(x)), J = H (I + rho H)^{-1} the Jacobian of MG,
H = Hess f(z*)), random and boundary points of the eps-ball; for (i)-(ii), stationary points searched by pure
Newton on grad F_x' (which also converges to saddles and maxima) and by gradient descent from starts up to
3 rho L away from x', each checked to lie in B(x, r_K) (iv). (iii) and (v) on every pair of the points, and
||J(x')||_2 (the supremum of the pair ratios) against the product's constant min(1/min(rho, 1/lambda_R - rho),
beta_R / (1 - rho lambda_R)). f is the exact float64 N (softplus without torch's threshold switch); prox points by
gradient descent with step 1/(1/rho + beta_R) and Newton polishing to residual ~1e-13; each solve's error
||r|| / (1/rho - lambda_R) (z* is the unique stationary point in R and F is strongly convex there) is added
to the bounds (valid because the computed z lies in R, which (i) checks), so a reported violation is a real one.
"""
from __future__ import annotations

import math

import torch
from hypothesis import strategies as st
from torch import Tensor, nn

from certify.bounds.curvature import curvature_bound, weak_convexity
from certify.bounds.local import local_constants, prox_region
from certify.bounds.lipschitz import lipschitz_product
from certify.bounds.network import AffineNetwork, from_module
from certify.bounds.stability import vanilla_stability
from proofs_checks.framework import CheckContext, Report, run_property, theorem
from proofs_checks.nets import NetSpec, net_specs

F64 = torch.float64
RHO_GRID = torch.logspace(-4, 1, 61, dtype=F64).tolist()
ASCENT_STEPS = 8
NEWTON_STEPS = 4
CONVERGED = 1e-10  # a search's end point counts as a stationary point below this residual


def _exact(model: nn.Module):
    """f's logits with the exact activations of N, from the model's Linear layers (float64, any order of
    differentiation); softplus as log(1 + e^{beta t}) / beta without torch's threshold switch."""
    layers = [m for m in model if not isinstance(m, nn.Flatten)]

    def forward(x: Tensor) -> Tensor:
        h = x
        for layer in layers:
            if isinstance(layer, nn.Linear):
                h = h @ layer.weight.double().T + layer.bias.double()
            elif isinstance(layer, nn.Softplus):
                h = torch.logaddexp(torch.zeros_like(h), layer.beta * h) / layer.beta
            else:
                raise TypeError(f"MG-LOC models softplus MLPs, not {layer}")
        return h

    return forward


def _derivatives(f, row: Tensor, z: Tensor, hessian: bool) -> tuple[Tensor, Tensor | None]:
    """(grad [B, n], Hessian [B, n, n] or None) of row . f at the points z [B, n]; the Hessian's n rows by one
    batched backward pass (seeds e_1..e_n for every point)."""
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad((f(z) @ row).sum(), z, create_graph=hessian)
        if not hessian:
            return g.detach(), None
        n = z.shape[1]
        seeds = torch.eye(n, dtype=z.dtype)[:, None, :].expand(n, z.shape[0], n)
        (h,) = torch.autograd.grad(g, z, grad_outputs=seeds, is_grads_batched=True)  # [n, B, n]
    h = h.transpose(0, 1)
    return g.detach(), (h + h.transpose(1, 2)) / 2


def _newton(f, row, xs: Tensor, z: Tensor, rho: float, steps: int) -> Tensor:
    """Pure Newton steps on grad F = grad f(z) + (z - x')/rho (converges to any nondegenerate stationary point)."""
    eye = torch.eye(z.shape[1], dtype=F64)
    for _ in range(steps):
        g, h = _derivatives(f, row, z, True)
        r = g + (z - xs) / rho
        step = torch.linalg.solve(h + eye / rho, r[..., None])[..., 0]
        z = torch.where(torch.isfinite(step).all(1, keepdim=True), z - step, z)
    return z


def _residual(f, row, xs: Tensor, z: Tensor, rho: float) -> tuple[Tensor, Tensor]:
    """(||grad F_x'(z)|| [B], an upper bound on its float64 evaluation error [B])."""
    g, _ = _derivatives(f, row, z, False)
    r = g + (z - xs) / rho
    scale = g.norm(dim=1) + (z - xs).norm(dim=1) / rho
    return r.norm(dim=1), 1e-13 * (1.0 + scale)


def _descend(f, row, xs: Tensor, z: Tensor, rho: float, step: float, iterations: int) -> Tensor:
    for _ in range(iterations):
        g, _ = _derivatives(f, row, z, False)
        z = z - step * (g + (z - xs) / rho)
    return z


def prox(f, row, xs: Tensor, rho: float, beta: float, lam: float) -> tuple[Tensor, Tensor]:
    """(z* [B, n], error bound on ||z - z*|| [B]) for F_x'(z) = f(z) + ||z - x'||^2/(2 rho) at each row x' of
    xs: gradient descent from x' with step 1/(1/rho + beta) until the residual is below 1e-6 (the rate is
    1 - (1/rho - lam)/(1/rho + beta) on R), then Newton."""
    z = xs.clone()
    step = 1.0 / (1.0 / rho + beta)
    for _ in range(200):
        z = _descend(f, row, xs, z, rho, step, 25)
        if float(_residual(f, row, xs, z, rho)[0].max()) < 1e-6:
            break
    z = _newton(f, row, xs, z, rho, NEWTON_STEPS)
    r, rounding = _residual(f, row, xs, z, rho)
    return z, (r + rounding) / (1.0 / rho - lam)


def _mg_jacobian_norm(h: Tensor, rho: float) -> Tensor:
    """||J||_2 of MG = grad of the envelope at x' given H = Hess f(z*): J = H (I + rho H)^{-1}, eigenvalues
    h / (1 + rho h)."""
    eig = torch.linalg.eigvalsh(h)
    return (eig / (1.0 + rho * eig)).abs().amax(1)


class Case:
    """One (network, x, eps, rho) with its certified constants on R, or None when no rho qualifies."""

    def __init__(self, model: nn.Module, net: AffineNetwork, row: Tensor, x: Tensor, eps: float, fraction: float,
                 label: str):
        self.model, self.net, self.row, self.x, self.eps, self.label = model, net, row, x, eps, label
        self.f = _exact(model)
        self.lipschitz = float(lipschitz_product(net, 2, row[None]).value)
        glob = weak_convexity(net, row)
        self.lam_global = math.inf if glob.refused else float(glob.value)
        curv = curvature_bound(net, row)
        self.beta_global = math.inf if curv.refused else float(curv.value)
        self.rho = None
        lip = torch.tensor([self.lipschitz], dtype=F64)
        for rho in reversed(RHO_GRID):  # the largest rho on the grid with rho lambda_R <= fraction: scan down
            radius = prox_region(net, x, row[None], eps, rho, lip)[0, -1:]
            local = local_constants(net, x, row[None], radius)
            lam = min(float(local.lam), self.lam_global)
            if rho * lam <= fraction:
                self.rho, self.lam, self.beta = rho, lam, min(float(local.beta), self.beta_global)
                self.lipschitz_local, self.radius = float(local.lipschitz), float(radius)
                break

    def describe(self) -> str:
        return (f"{self.label}, eps={self.eps:g}, rho={self.rho:.4g}, lambda_R={self.lam:.4g}, beta_R={self.beta:.4g}, "
                f"lambda_global={self.lam_global:.4g}, L={self.lipschitz:.4g}, r_K={self.radius:.4g}")


def _ball(x: Tensor, eps: float, count: int, gen: torch.Generator) -> Tensor:
    """count points of B(x, eps): half on the sphere, half uniform."""
    u = torch.randn(count, x.shape[1], generator=gen, dtype=F64)
    u = u / u.norm(dim=1, keepdim=True)
    scale = torch.rand(count, 1, generator=gen, dtype=F64) ** (1.0 / x.shape[1])
    scale[: count // 2] = 1.0
    return x + eps * scale * u


def _attack(case: Case, gen: torch.Generator, restarts: int, randoms: int, tallies: dict, ratios: list[float]) -> None:
    f, row, x, eps, rho, lam = case.f, case.row, case.x, case.eps, case.rho, case.lam
    constant = vanilla_stability(1.0, rho, lam, case.beta)  # the Lipschitz constant of MG the product states
    where = case.describe()
    z_x, err_x = prox(f, row, x, rho, case.beta, lam)
    mg_x = (x - z_x) / rho
    pool_x, pool_z, pool_err = [x], [z_x], [err_x]
    # (iii) ascent on ||MG(x') - MG(x)|| over the eps-ball
    xp = _ball(x, eps, restarts, gen)
    step = eps / 2
    for _ in range(ASCENT_STEPS):
        z, err = prox(f, row, xp, rho, case.beta, lam)
        pool_x.append(xp), pool_z.append(z), pool_err.append(err)
        mg = (xp - z) / rho
        _, h = _derivatives(f, row, z, True)
        eye = torch.eye(x.shape[1], dtype=F64)
        jac = h @ torch.linalg.inv(eye + rho * h)  # J = H (I + rho H)^{-1}, symmetric
        direction = torch.einsum("bij,bj->bi", jac, mg - mg_x)
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-300)
        xp = xp + step * direction
        offset = xp - x
        xp = x + offset * (eps / offset.norm(dim=1, keepdim=True).clamp_min(1e-300)).clamp(max=1.0)
        step *= 0.8
    extra = _ball(x, eps, randoms, gen)
    z, err = prox(f, row, extra, rho, case.beta, lam)
    pool_x.append(extra), pool_z.append(z), pool_err.append(err)
    xs, zs, errs = torch.cat(pool_x), torch.cat(pool_z), torch.cat(pool_err)
    assert float((xs - x).norm(dim=1).max()) <= eps * (1 + 1e-12)
    # (i) the prox points, and the local Lipschitz bound of R at them
    dist = (zs - xs).norm(dim=1)
    for d, e, r in zip(dist.tolist(), errs.tolist(), (zs - x).norm(dim=1).tolist()):
        tallies["within"].record(d, rho * case.lipschitz + e, where)
        tallies["within_local"].record(d, rho * case.lipschitz_local + e, where)
        tallies["region"].record(r, case.radius + e, where)
    # (i)-(ii) stationary points from far starts: pure Newton (any stationary point) and gradient descent
    starts_of = torch.arange(xs.shape[0])[torch.randperm(xs.shape[0], generator=gen)[: max(2, restarts // 2)]]
    for i in starts_of.tolist():
        u = torch.randn(8, x.shape[1], generator=gen, dtype=F64)
        u = u / u.norm(dim=1, keepdim=True)
        far = torch.tensor([0.3, 0.7, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0], dtype=F64)[:, None] * rho * case.lipschitz
        starts = xs[i] + far * u
        anchor = xs[i].expand_as(starts)
        found = [_newton(f, row, anchor, starts, rho, 30)]
        step = 1.0 / (1.0 / rho + min(case.beta_global, 1e6))
        found.append(_newton(f, row, anchor, _descend(f, row, anchor, starts, rho, step, 300), rho, NEWTON_STEPS))
        for z in found:
            r, rounding = _residual(f, row, anchor, z, rho)
            ok = torch.isfinite(z).all(1) & (r <= CONVERGED)
            for k in ok.nonzero()[:, 0].tolist():
                # z - x' = -rho (grad f(z) - r): ||z - x'|| <= rho (L + ||r||)
                reach = rho * (case.lipschitz + float(r[k] + rounding[k]))
                tallies["stationary"].record(float((z[k] - xs[i]).norm()), reach, where)
                tallies["region"].record(float((z[k] - x[0]).norm()), case.radius + rho * float(r[k] + rounding[k]), where)
                # a stationary point of F_x' in R: within (r + rounding)/(1/rho - lam) of z*, plus z*'s own error
                tol = float(r[k] + rounding[k]) / (1.0 / rho - lam) + float(errs[i])
                tallies["unique"].record_close(float((z[k] - zs[i]).norm()), 0.0, max(tol, 1e-300), where)
            tallies["searches"].observe(float(ok.double().mean()))
    # (iii) every pair, with both solves' errors added
    mg = (xs - zs) / rho
    dx = torch.cdist(xs, xs)
    dmg = torch.cdist(mg, mg)
    slack = (errs[:, None] + errs[None, :]) / rho
    iu = torch.triu_indices(xs.shape[0], xs.shape[0], 1)
    observed, bound = dmg[iu[0], iu[1]], constant * dx[iu[0], iu[1]] + slack[iu[0], iu[1]]
    for o, b in zip(observed.tolist(), bound.tolist()):
        tallies["pairs"].record(o, b, where)
    ratios.append(float((observed / bound).max()))
    # the Jacobian of MG at every point (the pairs' supremum), exact given H(z*)
    _, h = _derivatives(f, row, zs, True)
    for v in _mg_jacobian_norm(h, rho).tolist():
        tallies["jacobian"].record(v, constant, where, rtol=1e-9)
    # the hypothesis itself: -lambda_min(Hess f) <= lambda_R on R (at the prox points and sampled points of R)
    _, h_r = _derivatives(f, row, _ball(x, case.radius, randoms, gen), True)
    eig = torch.linalg.eigvalsh(torch.cat([h, h_r]))
    curvature = -eig[:, 0]
    for v in curvature.tolist():
        tallies["curvature"].record(v, lam, where, rtol=1e-9, atol=1e-12)
    for v in eig.abs().amax(1).tolist():
        tallies["beta"].record(v, case.beta, where, rtol=1e-9, atol=1e-12)
    tallies["tightness"].observe(float(curvature.max()) / lam if lam > 0 else 0.0)
    tallies["global"].observe(rho * case.lam_global)
    tallies["local"].observe(case.lam / case.lam_global if math.isfinite(case.lam_global) else 0.0)


def _random_case(spec: NetSpec, eps: float, fraction: float, seed: int) -> Case:
    model = spec.build()
    net = from_module(model, (spec.inputs,))
    gen = torch.Generator().manual_seed(seed)
    row = torch.zeros(spec.classes, dtype=F64)
    row[seed % spec.classes] = 1.0
    x = torch.randn(1, spec.inputs, generator=gen, dtype=F64)
    return Case(model, net, row, x, eps, fraction, str(spec))


def _zoo_case() -> Case:
    from certify.models import zoo

    model, data = zoo.load("digits-softplus-mlp2")
    net = from_module(model, tuple(data.input_shape))
    x = data.x_test[2:3].reshape(1, -1).double()
    with torch.no_grad():
        target = int(model(data.x_test[2:3]).argmax())
    row = nn.functional.one_hot(torch.tensor(target), net.num_classes).double()
    return Case(model, net, row, x, 0.01, 0.9, f"zoo digits-softplus-mlp2, test input 2, class {target}")


@theorem("MG-LOC", "Corollary 1 with the local weak-convexity constant on B(x, eps + rho L)",
         "DESIGN section 11 (Zhang & Farnia Thm 1(3), Cor 1, localised)")
def check(ctx: CheckContext, report: Report) -> None:
    tallies = {
        "within": report.tally("(i) ||z - x'|| <= rho L at the prox point of every attacked x'", kind="adversarial"),
        "within_local": report.tally("(i) ||z - x'|| <= rho L_R (certified local gradient bound on R)", kind="adversarial"),
        "stationary": report.tally("(i) every stationary point found from far starts lies within rho L of x'",
                                   kind="adversarial"),
        "unique": report.tally("(ii) every stationary point found is the prox point z*", kind="adversarial"),
        "region": report.tally("(iv) every prox and stationary point found lies in the shrunk ball B(x, r_K)",
                               kind="adversarial"),
        "pairs": report.tally("(iii, v) ||MG(x') - MG(x'')|| <= ||x' - x''|| min(1/min(rho, 1/lambda_R - rho), "
                              "beta_R/(1 - rho lambda_R)) + solve errors", kind="adversarial"),
        "jacobian": report.tally("(iii, v) ||J_MG(x')||_2 <= min(1/min(rho, 1/lambda_R - rho), beta_R/(1 - rho lambda_R))",
                                 kind="adversarial"),
        "curvature": report.tally("hypothesis: -lambda_min(Hess f(z)) <= lambda_R at prox points and sampled z in R"),
        "beta": report.tally("hypothesis: ||Hess f(z)|| <= beta_R at prox points and sampled z in R"),
        "tightness": report.tally("max observed -lambda_min(Hess f) on R / lambda_R (the pair ratios' ceiling)",
                                  role="evidence", kind="measurement"),
        "searches": report.tally("fraction of far-start searches that reached a stationary point", role="evidence",
                                 kind="measurement"),
        "global": report.tally("rho * lambda_global (>= 1: the global Corollary 1 does not apply)", role="evidence",
                               kind="measurement"),
        "local": report.tally("lambda_R / lambda_global", role="evidence", kind="measurement"),
    }
    ratios: list[float] = []
    skipped: list[str] = []
    gen = torch.Generator().manual_seed(ctx.seed)
    restarts, randoms = ctx.examples(4, 8), ctx.examples(8, 24)

    def run(case: Case) -> None:
        if case.rho is None:
            skipped.append(case.label)
            return
        _attack(case, gen, restarts, randoms, tallies, ratios)

    strategy = st.tuples(
        net_specs(act="softplus", max_inputs=6, max_width=16, max_depth=3, classes=(2, 3)).filter(
            lambda s: len(s.hidden) >= 2),
        st.sampled_from([0.02, 0.1, 0.3]),
        st.sampled_from([0.5, 0.9]),
        st.integers(0, 2**31 - 1),
    )
    run_property(strategy, lambda args: run(_random_case(*args)), ctx.examples(5, 40))
    run(_zoo_case())
    beyond = sum(v >= 1.0 for v in tallies["global"].values)
    report.note(
        f"{len(ratios)} cases ({len(skipped)} without a rho on the grid); in {beyond} of them rho * lambda_global >= 1, "
        f"so only the local lemma makes the claim. Worst pair ratio observed/bound {max(ratios, default=0):.4f}; the "
        "bound needs Hess f(z*) = -lambda_R somewhere in R, which the certified lambda_R (an interval bound over all "
        "of R) overestimates.")
