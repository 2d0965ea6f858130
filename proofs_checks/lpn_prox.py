"""LPN-PROX. The gradient of a convex function is a proximal operator; an LPN's denoiser is one, and plain
denoisers are caught (the Sulam talk, Part I; Gribonval & Nikolova, JMIV 2020, Corollary 1; Fang, Buchanan &
Sulam, ICLR 2024, Proposition 1; Rockafellar, Convex Analysis, Theorem 24.8; ANCHORS 5.1).

Statement. Let psi be an LPN (certify.inverse.lpn.LPN) with every constrained weight >= 0, softplus of
sharpness beta > 0 and alpha >= 0, and f = grad psi. Then, in exact arithmetic:

  (a) psi is alpha-strongly convex: for all y, d and h, psi(y + h d) - 2 psi(y) + psi(y - h d) >= alpha h^2 ||d||^2;
  (b) J_f(y) = Hess psi(y) is symmetric with lambda_min(J_f(y)) >= alpha;
  (c) f is alpha-strongly monotone: <f(y1) - f(y2), y1 - y2> >= alpha ||y1 - y2||^2;
  (d) f is cyclically monotone, with margin: for every cycle y_1..y_m (indices mod m),
      S = sum_i <f(y_i), y_{i+1} - y_i> <= -(alpha/2) sum_i ||y_{i+1} - y_i||^2
      (sum the strong-convexity inequalities psi(y_{i+1}) >= psi(y_i) + <f(y_i), d_i> + alpha/2 ||d_i||^2);
  (e) f is a prox (Gribonval & Nikolova): f(y) minimises x -> 1/2 (y - x)^2 + R(x) with
      R(x) = y* x - x^2/2 - psi(y*), f(y*) = x. Checked in 1-D (alpha > 0, so f is onto): for y on a grid of
      [-3, 3], the minimiser of 1/2 (y - x)^2 + R(x) over a uniform x grid (step h, 2001 points on
      [f(-3.5), f(3.5)], y* by bisection) is within h of f(y). (The objective minus its minimum is the
      Bregman divergence of psi between y and y*(x), unimodal in x, so the grid minimiser is one of the grid
      points around f(y).)
  (f) the prox checker's structural rules (certify.certificates.prox_check.lpn_parameters) accept each of these LPNs.

Checked in float64 on random small LPNs (Hypothesis: dim 1..12, hidden 2..24, 1..4 layers, beta in
{1, 10, 100}, alpha in {0, 0.01, 0.1, 1}; constrained weights drawn uniform in [-0.5, 1] and projected, so
many are exactly 0): (a) on random lines with h in {0.01, 0.1, 1}, allowing the rounding of the four psi values
(1e-10 (1 + sum |psi|)); (b) with certify.inverse.evidence.jacobian_evidence (full float64 autograd
Jacobians): relative asymmetry <= 1e-12 and alpha - lambda_min <= 1e-9 ||J||_2; (c) on random pairs and (d) on
random and adversarial cycles of cyclic_monotonicity (loops in the Jacobian's most asymmetric plane, 2-cycles
along its least eigenvector, gradient ascent on the normalised sum), each up to the float64 error bound of
certify.inverse.evidence.cycle_error_bound.

Counterpart (evidence and must-hold): random plain MLP denoisers y -> y + W2 s(W1 y + b1) + b2 (n in 2..12,
s in ReLU, softplus, tanh) are not gradient fields; the detection rate of cyclic_monotonicity (a cycle with
S > 10 x its error bound) is reported, and every witness is re-checked: the exact rational sum of its float64
values exceeds the bound (must-hold) and the computed sum differs from it by at most the bound's dot-product
term (must-hold).
"""
from __future__ import annotations

import math

import torch
from hypothesis import strategies as st
from torch import nn

from certify.inverse.evidence import (F64, U64, cycle_error_bound, cyclic_monotonicity, exact_cycle_sum,
                                      jacobian_evidence)
from certify.inverse.lpn import LPN
from certify.certificates._common import Invalid
from certify.certificates.prox_check import lpn_parameters
from proofs_checks.framework import CheckContext, Report, run_property, theorem

SYM_TOL = 1e-12
PSD_RTOL = 1e-9
GRID = 2001
BISECTION = 80


def _random_lpn(dim: int, hidden: int, layers: int, beta: float, alpha: float, seed: int) -> LPN:
    torch.manual_seed(seed)
    model = LPN(dim, hidden=hidden, layers=layers, beta=beta, alpha=alpha)
    with torch.no_grad():
        for _, weight in model.constrained():
            weight.uniform_(-0.5, 1.0)
    model.project_()
    return model.double()


def _random_mlp(n: int, hidden: int, act: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    activation = {"relu": nn.ReLU(), "softplus": nn.Softplus(), "tanh": nn.Tanh()}[act]
    body = nn.Sequential(nn.Linear(n, hidden), activation, nn.Linear(hidden, n)).double()

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body

        def forward(self, y: torch.Tensor) -> torch.Tensor:
            return y + self.body(y)

    return Residual()


def _grid_check(model: LPN) -> tuple[float, float]:
    """(max over the y grid of |grid argmin - f(y)|, the x grid step) for a 1-D LPN with alpha > 0."""
    def f(y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(y[:, None])[:, 0]

    def psi(y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.psi(y[:, None])

    lo_y, hi_y = -3.5, 3.5
    ends = f(torch.tensor([lo_y, hi_y], dtype=F64))
    xs = torch.linspace(float(ends[0]), float(ends[1]), GRID, dtype=F64)
    step = float(xs[1] - xs[0])
    a = torch.full_like(xs, lo_y)
    b = torch.full_like(xs, hi_y)
    for _ in range(BISECTION):  # f increasing (alpha > 0): y*(x) = f^{-1}(x)
        mid = (a + b) / 2
        low = f(mid) < xs
        a, b = torch.where(low, mid, a), torch.where(low, b, mid)
    ystar = (a + b) / 2
    R = ystar * xs - xs * xs / 2 - psi(ystar)
    ys = torch.linspace(-3.0, 3.0, 61, dtype=F64)
    objective = 0.5 * (ys[:, None] - xs[None, :]) ** 2 + R[None, :]
    xhat = xs[torch.argmin(objective, dim=1)]
    return float((xhat - f(ys)).abs().max()), step


def _structure_holds(model) -> bool:
    try:
        lpn_parameters(model)
    except Invalid:
        return False
    return True


@theorem("LPN-PROX", "an LPN's f = grad psi is a prox (convex psi, symmetric PSD Jacobian, cyclically monotone); "
         "plain MLP denoisers are caught", "Gribonval & Nikolova 2020 Cor. 1; Fang et al. 2024 Prop. 1; talk Part I")
def check(ctx: CheckContext, report: Report) -> None:
    convex = report.tally("(a) psi(y+hd) - 2psi(y) + psi(y-hd) >= alpha h^2 ||d||^2 (rounding allowed)")
    sym = report.tally(f"(b) ||J - J^T||_F / ||J||_F <= {SYM_TOL:g}")
    psd = report.tally(f"(b) alpha - lambda_min((J + J^T)/2) <= {PSD_RTOL:g} ||J||_2")
    mono = report.tally("(c) -<f(y1) - f(y2), y1 - y2> + alpha ||y1 - y2||^2 <= float64 error bound")
    cyclic = report.tally("(d) S + (alpha/2) sum ||d_i||^2 <= float64 error bound (random + adversarial cycles)",
                          kind="adversarial")
    grid = report.tally("(e) 1-D: |grid argmin of 1/2(y-x)^2 + R(x) - f(y)| <= grid step", kind="closed-form")
    structure = report.tally("(f) the prox checker's structural rules accept the projected LPN", kind="symbolic")
    grid_error = report.tally("(e) grid argmin error / grid step", role="evidence", kind="measurement")
    detected = report.tally("plain MLP denoisers refuted by a violating cycle (1 = caught)", role="evidence",
                            kind="measurement")
    witness = report.tally("MLP witness: exact rational cycle sum of the float64 values > error bound")
    dot_part = report.tally("MLP witness: |computed S - exact S| <= dot-product term of the bound")
    lpn_margin = report.tally("LPN: best S / sum ||d_i||^2 + alpha/2 (<= 0 up to rounding)", role="evidence",
                              kind="measurement")
    search = 4 if ctx.quick else 20
    misses: list[str] = []

    def case(args) -> None:
        dim, hidden, layers, beta, alpha, act, seed = args
        model = _random_lpn(dim, hidden, layers, beta, alpha, seed)
        tag = f"LPN(dim={dim}, hidden={hidden}, layers={layers}, beta={beta:g}, alpha={alpha:g}, seed={seed})"
        structure.record_true(_structure_holds(model), tag)
        g = torch.Generator().manual_seed(seed)
        y = torch.randn(6, dim, generator=g, dtype=F64)
        with torch.no_grad():
            for h in (0.01, 0.1, 1.0):
                d = torch.randn(6, dim, generator=g, dtype=F64)
                p0, pp, pm = model.psi(y), model.psi(y + h * d), model.psi(y - h * d)
                second = pp - 2 * p0 + pm
                tol = 1e-10 * (1 + pp.abs() + 2 * p0.abs() + pm.abs())
                lower = alpha * h * h * (d * d).sum(1)
                k = int(torch.argmax((lower - second) / tol))
                convex.record(float(lower[k] - second[k]), float(tol[k]), f"{tag} h={h:g}")
        jac = jacobian_evidence(model, y, confirm=False)
        sym.record(jac.symmetry.value, SYM_TOL, tag)
        psd.record(alpha - jac.psd.value, PSD_RTOL * jac.psd.details["norm2"], tag)
        y1, y2 = y[:3], y[3:] * 2
        pair = torch.stack([y1, y2], 1)  # [3, 2, n]
        with torch.no_grad():
            fv = model(pair.reshape(-1, dim)).reshape(3, 2, dim)
        S = (fv * (torch.roll(pair, -1, 1) - pair)).sum((1, 2))
        bound = cycle_error_bound(fv, pair)
        diff2 = ((y1 - y2) ** 2).sum(1)
        for i in range(3):
            mono.record(float(S[i] + alpha * diff2[i]), float(bound[i]), tag)
        ev = cyclic_monotonicity(model, torch.randn(8, dim, generator=g, dtype=F64), cycles=8, length=(3, 5),
                                 seed=seed, search_steps=search, anchors=2)
        D = ev.details["denominator"]
        cyclic.record(ev.details["sum"] + alpha / 2 * D, ev.details["sum_bound"], f"{tag} {ev.details['origin']}")
        lpn_margin.observe(ev.value + alpha / 2)
        if dim == 1 or seed % 3 == 0:
            one = _random_lpn(1, hidden, layers, beta, max(alpha, 0.05), seed)
            error, step = _grid_check(one)
            grid.record(error, step + 1e-9, f"1-D {tag}")
            grid_error.observe(error / step)

        n = max(2, dim)
        mlp = _random_mlp(n, hidden, act, seed)
        pts = torch.randn(8, n, generator=g, dtype=F64)
        found = cyclic_monotonicity(mlp, pts, cycles=8, length=(2, 3, 5), seed=seed, search_steps=search, anchors=2)
        detected.observe(float(found.verdict == "violation"))
        if found.verdict != "violation":
            misses.append(f"MLP(n={n}, hidden={hidden}, {act}, seed={seed}): best S/D {found.value:.3g}")
            return
        cycle = found.witness.reshape(found.witness.shape[0], n)
        with torch.no_grad():
            fv = mlp(cycle)
        exact = exact_cycle_sum(fv, cycle)
        computed = float((fv * (torch.roll(cycle, -1, 0) - cycle)).sum())
        mtag = f"MLP(n={n}, {act}, seed={seed}) {found.details['origin']}"
        witness.record_true(float(exact) > found.details["sum_bound"], f"{mtag}: exact {float(exact):.6g} "
                                                                        f"vs bound {found.details['sum_bound']:.3g}")
        N = cycle.numel() + 2
        d = torch.roll(cycle, -1, 0) - cycle
        dot_bound = N * U64 / (1 - N * U64) * float((fv.abs() * d.abs()).sum())
        dot_part.record(abs(computed - float(exact)), dot_bound, mtag)

    strategy = st.tuples(st.integers(1, 12), st.integers(2, 24), st.integers(1, 4), st.sampled_from([1.0, 10.0, 100.0]),
                         st.sampled_from([0.0, 0.01, 0.1, 1.0]), st.sampled_from(["relu", "softplus", "tanh"]),
                         st.integers(0, 2**31 - 1))
    run_property(strategy, case, ctx.examples(6, 60))
    if detected.values:
        rate = sum(detected.values) / len(detected.values)
        report.note(f"plain MLP denoisers caught by a rigorous cycle: {rate:.0%} of {len(detected.values)}")
    for miss in misses[:5]:
        report.note(f"not caught: {miss}")
    if not math.isfinite(sum(grid_error.values) if grid_error.values else 0.0):
        report.note("grid check produced a non-finite error")
