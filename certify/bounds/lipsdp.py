"""LipSDP-Neuron and LipSDP-Layer (Fazlyab, Robey, Hassani, Morari, Pappas, NeurIPS 2019), l2 only.

Network z_1 = W_1 x + b_1, a_k = sigma(z_k), ..., f = W_L a_{L-1} + b_L, with every activation slope-
restricted in [0, 1] (ReLU, softplus of any sharpness, sigmoid, tanh, leaky ReLU with slope in [0, 1]: the
nondecreasing activations with sup |sigma'| <= 1; a graph with skip terms or GELU / SiLU is refused).
Stack xi = (x, a_1, ..., a_{L-1}) of size n0 + N (N hidden units); let A xi = (W_1 x, W_2 a_1, ...,
W_{L-1} a_{L-2}) be the pre-activations (biases cancel in differences) and B xi = (a_1, ..., a_{L-1}). For two inputs, slope restriction gives per unit
Delta a_i (Delta z_i - Delta a_i) >= 0, so for T = diag(lambda), lambda >= 0 (Neuron; Layer: one lambda
per layer):

    Delta xi^T G(T) Delta xi >= ||P Delta a_{L-1}||^2 ... with
    G(T) = A^T T B + B^T T A - 2 B^T T B + E^T W_L^T C^T C W_L E         (E selects a_{L-1})

and if G(T) - blkdiag(rho I_n0, 0) <= 0 (negative semidefinite) then ||C (f(x) - f(y))||_2^2 <=
rho ||x - y||_2^2, so L = sqrt(rho). Here C = I for the logit vector (c None) and C = c_k for each row.
(LipSDP-Network, with coupled multipliers, is deliberately not offered: its multipliers are reported
invalid in general.)

Rigour (ANCHORS 4.6, derived): the SDP is solved by SCS, but only the multipliers T are kept (clipped at
0). With G split into the input block and the rest, G11 = 0 and G12 = [W_1^T T_1, 0, ...]. If G22 < 0,
the Schur complement gives the best rho for this T:

    rho(T) = lambda_max(G12 (-G22)^{-1} G21),

which we bound rigorously in float64: mu = -lambda_max(G22) minus its rounding margin must be > 0; with
X = solve(-G22, G21) and residual R = (-G22) X - G21 (computed), (-G22)^{-1} G21 = X - (-G22)^{-1} R, so

    rho(T) <= lambda_max(sym(G12 X)) + ||G12||_F ||R||_F / mu  (+ rounding margins).

Rounding margins are 2 gamma_n times the Frobenius norm of the magnitudes involved (`rounding_margin`),
a generous bound on the error of forming the matrices and of the backward-stable symmetric eigensolver.
If G22 cannot be certified negative definite, or the solver does not report an optimum, the result is
a refusal.
"""
from __future__ import annotations

import math
import time

import cvxpy as cp
import numpy as np
import torch
from torch import Tensor

from certify.bounds.lipschitz import output_rows
from certify.bounds.network import AffineNetwork
from certify.bounds.requirements import chain_refusal
from certify.bounds.results import BoundResult, Kind
from certify.bounds.sets import UNIT_ROUNDOFF
from certify.errors import UsageError
from certify.quiet import solver_output

VARIANTS = ("neuron", "layer")
COARSE_EPS = 1e-4


def _gamma_margin(magnitude: float, terms: int) -> float:
    n = terms + 2
    return 2.0 * n * UNIT_ROUNDOFF / (1.0 - n * UNIT_ROUNDOFF) * magnitude + 1e-300


def balancing_scales(weights: list[np.ndarray]) -> list[float]:
    """Powers of two c_k with prod c_k = 1 that bring every ||c_k W_k||_2 near their geometric mean.

    Scaling W_k -> c_k W_k with a_k -> a_k / t_k, t_k = c_1 ... c_k, maps the network's trajectories onto
    trajectories satisfying the same slope restrictions with the scaled weights and the same output (the
    product of the c_k is 1), so a certificate for the scaled weights holds for the network; powers of two
    make the scaled weights exact in floating point. It keeps SCS well conditioned (an unbalanced
    2-32-32-2 net stalled at 20000 iterations without it)."""
    norms = [float(np.linalg.norm(w, 2)) for w in weights]
    if min(norms) <= 0:
        return [1.0] * len(weights)
    mean = float(np.exp(np.mean(np.log(norms))))
    exponents = [int(round(np.log2(mean / n))) for n in norms[:-1]]
    return [2.0**e for e in exponents] + [2.0 ** (-sum(exponents))]


class _Structure:
    """The constant matrices of the SDP for one network (numpy float64)."""

    def __init__(self, net: AffineNetwork) -> None:
        self.scales = balancing_scales([w.detach().cpu().numpy() for w in net.weights])
        weights = [s * w.detach().cpu().numpy() for s, w in zip(self.scales, net.weights)]
        self.n0 = weights[0].shape[1]
        self.widths = [w.shape[0] for w in weights[:-1]]
        self.hidden = sum(self.widths)
        size = self.n0 + self.hidden
        # A maps xi to the stacked pre-activations (rows: hidden units; columns: xi)
        self.A = np.zeros((self.hidden, size))
        row, col = 0, 0
        for k, w in enumerate(weights[:-1]):
            width_in = w.shape[1]
            self.A[row : row + w.shape[0], col : col + width_in] = w
            row, col = row + w.shape[0], col + width_in
        self.last_start = self.hidden - self.widths[-1]
        self.W_last = weights[-1]
        self.layer_of_unit = np.repeat(np.arange(len(self.widths)), self.widths)

    def expand(self, theta: np.ndarray, variant: str) -> np.ndarray:
        return theta[self.layer_of_unit] if variant == "layer" else theta

    def hidden_blocks(self, lam: np.ndarray, output_gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(G12 [n0, N], G22 [N, N]) for multipliers lam [N] >= 0 and output Gram C^T C mapped by W_L."""
        y = self.A.T * lam[None, :]  # A^T T, [n0 + N, N]
        g12 = y[: self.n0]
        g22 = y[self.n0 :] + y[self.n0 :].T - 2.0 * np.diag(lam)
        s = self.last_start
        g22[s:, s:] += output_gram
        return g12, g22


def _output_gram(weight_last: np.ndarray, row: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(W_L^T C^T C W_L, its entrywise magnitude bound) for C = I (row None) or C = row."""
    if row is None:
        return weight_last.T @ weight_last, np.abs(weight_last).T @ np.abs(weight_last)
    v = weight_last.T @ row
    v_abs = np.abs(weight_last).T @ np.abs(row)
    return np.outer(v, v), np.outer(v_abs, v_abs)


def certified_rho(structure: _Structure, lam: np.ndarray, row: np.ndarray | None) -> tuple[float | None, dict]:
    """Rigorous upper bound on rho(T) for T = diag(lam), lam >= 0 (module docstring), or None with a reason."""
    gram, gram_abs = _output_gram(structure.W_last, row)
    g12, g22 = structure.hidden_blocks(lam, gram)
    g12_abs, g22_abs = structure.hidden_blocks(lam, gram_abs)
    g22_abs = np.abs(g22_abs) + 4.0 * np.diag(lam)
    n = g22.shape[0]
    terms = max(structure.W_last.shape[0], 1)
    g22_err = _gamma_margin(np.linalg.norm(g22_abs), terms)
    eig_err = _gamma_margin(np.linalg.norm(g22), n * n)
    top = float(np.linalg.eigvalsh(g22)[-1])
    mu = -(top + g22_err + eig_err)
    if not mu > 0:
        return None, {"reason": f"G22 is not certified negative definite (largest eigenvalue {top:.3g} + margin)"}
    x = np.linalg.solve(-g22, g12.T)
    residual = -g22 @ x - g12.T
    residual_err = _gamma_margin(np.linalg.norm(np.abs(g22)) * np.linalg.norm(x) + np.linalg.norm(g12), n)
    residual_norm = np.linalg.norm(residual) + residual_err + g22_err * np.linalg.norm(x)
    s = g12 @ x
    s = 0.5 * (s + s.T)
    s_err = _gamma_margin(np.linalg.norm(np.abs(g12_abs)) * np.linalg.norm(x), n) + _gamma_margin(np.linalg.norm(s), s.size)
    rho = float(np.linalg.eigvalsh(s)[-1]) + s_err + np.linalg.norm(g12_abs) * residual_norm / mu
    return rho, {"mu": mu, "residual": float(np.linalg.norm(residual))}


def _compile(structure: _Structure, variant: str, gram: cp.Parameter) -> tuple[cp.Problem, cp.Variable, cp.Variable]:
    """min rho s.t. G(T) - blkdiag(rho I, 0) <= 0, with the output Gram of the last hidden layer a Parameter."""
    n0, hidden = structure.n0, structure.hidden
    count = len(structure.widths) if variant == "layer" else hidden
    theta = cp.Variable(count, nonneg=True)
    rho = cp.Variable()
    lam = theta[structure.layer_of_unit] if variant == "layer" else theta
    y = structure.A.T @ cp.diag(lam)  # [n0 + N, N]
    s = structure.last_start
    selector = np.zeros((hidden, structure.widths[-1]))
    selector[s:, :] = np.eye(structure.widths[-1])
    last = selector @ gram @ selector.T
    lower = y[n0:] + y[n0:].T - 2 * cp.diag(lam) + last
    matrix = cp.bmat([[-rho * np.eye(n0), y[:n0]], [y[:n0].T, lower]])
    problem = cp.Problem(cp.Minimize(rho), [0.5 * (matrix + matrix.T) << 0])
    return problem, theta, rho


def _tolerances(eps: float) -> list[float]:
    """1e-4, 1e-5, ... down to eps (eps itself last)."""
    steps = [COARSE_EPS]
    while steps[-1] / 10 > eps * (1 + 1e-9):
        steps.append(steps[-1] / 10)
    return steps + [eps] if eps < COARSE_EPS * (1 - 1e-9) else [max(eps, COARSE_EPS)]


def lipsdp(
    net: AffineNetwork,
    variant: str = "neuron",
    c: Tensor | None = None,
    eps: float = 1e-5,
    max_iters: int = 10_000,
) -> BoundResult:
    """Certified l2 Lipschitz bound by LipSDP-Neuron or -Layer (solved by SCS, re-derived rigorously).

    Value convention as `certify.bounds.lipschitz.lipschitz_product` (0-dim for the logit vector, [K] for
    the rows of c). One SDP per row (a compiled CVXPY problem reused through a Parameter), solved to
    SCS tolerance 1e-4 and then refined tenfold per solve down to `eps`, each from the previous point; the best certified value over the
    solves that SCS reports optimal is kept (a refinement that stalls keeps the coarse multipliers). A
    refusal if no solve of a row is optimal or no multipliers certify a bound."""
    if variant not in VARIANTS:
        raise UsageError(f"LipSDP variant must be one of {VARIANTS} (LipSDP-Network is not offered), got {variant!r}")
    method = f"lipsdp-{variant}-l2"
    rows = output_rows(net, c)
    reason = chain_refusal(net, "LipSDP")
    for k, act in enumerate(net.activations):
        if reason is None and not (act.nondecreasing and act.lipschitz <= 1.0):
            reason = (f"LipSDP needs activations slope-restricted in [0, 1] (nondecreasing, sup |sigma'| <= 1); hidden "
                      f"layer {k} of this network has {act.name} (sup |sigma'| = {act.lipschitz:.6g}"
                      f"{'' if act.nondecreasing else ', decreasing somewhere'})")
    if reason is not None:
        return BoundResult.refuse(method, reason)
    device = net.weights[0].device
    if net.depth == 1:
        from certify.bounds.lipschitz import lipschitz_product

        exact = lipschitz_product(net, 2, rows)
        return BoundResult(exact.value, Kind.CERTIFIED, method, exact.assumptions, details={"linear": True})
    structure = _Structure(net)
    width = structure.widths[-1]
    gram = cp.Parameter((width, width), PSD=True)
    problem, theta, rho_var = _compile(structure, variant, gram)
    targets = [None] if rows is None else list(rows.cpu().numpy())
    values, solver_values, times, multipliers = [], [], [], []
    for row in targets:
        full_gram, _ = _output_gram(structure.W_last, row)
        gram.value = 0.5 * (full_gram + full_gram.T)
        start = time.perf_counter()
        best: tuple[float, np.ndarray, float] | None = None
        reason = "no solve"
        for tolerance in _tolerances(eps):  # coarse, then refined (warm-started)
            try:
                with solver_output():
                    problem.solve(solver=cp.SCS, eps_abs=tolerance, eps_rel=tolerance, max_iters=max_iters, warm_start=True)
            except cp.SolverError as err:
                reason = f"SCS failed: {err}"
                break
            if problem.status != cp.OPTIMAL:
                reason = f"SCS returned status {problem.status!r} at eps {tolerance:g}, not optimal"
                break
            lam = np.maximum(structure.expand(np.asarray(theta.value), variant), 0.0)
            rho, info = certified_rho(structure, lam, row)
            reason = info.get("reason", reason)
            if rho is not None and (best is None or rho < best[0]):
                best = (rho, lam, float(rho_var.value))
        times.append(time.perf_counter() - start)
        if best is None:
            return BoundResult.refuse(method, reason)
        values.append(math.sqrt(max(best[0], 0.0)) * (1.0 + 4.0 * UNIT_ROUNDOFF))
        multipliers.append(torch.from_numpy(best[1]))
        solver_values.append(math.sqrt(max(best[2], 0.0)))
    value = torch.tensor(values, dtype=torch.float64, device=device)
    return BoundResult(
        value=value[0] if rows is None else value,
        kind=Kind.CERTIFIED,
        method=method,
        assumptions=[
            "Lipschitz in the l2 norm of the input, over all of R^n",
            "activations slope-restricted in [0, 1] (nondecreasing, sup |sigma'| <= 1)",
            "rho re-derived in float64 from the SCS multipliers with stated rounding margins",
        ],
        witness={"variant": variant, "multipliers": multipliers, "weight_scales": structure.scales},
        details={"p": 2.0, "solver_value": solver_values, "solve_seconds": times, "solver": "SCS", "eps": eps},
    )
