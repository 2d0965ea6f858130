"""Hand-built graph networks (AffineNetwork with skip terms) and independent references for the bound
tests: a forward pass written from the graph equations, sampled and PGD minima of linear functions of the
logits over an l_p ball, and the exact minimum over a box of a linear function of a small ReLU (or leaky
ReLU) graph's logits, by enumerating its activation patterns (one LP per pattern, scipy.optimize.linprog). Imported
through sys.path, not collected.

    h_0 = x,  z_k = W_k h_k + b_k + sum_{j in skips[k]} S_kj h_j,  h_{k+1} = sigma_k(z_k),  logits = z_{L-1}.
"""
import itertools
import math
import sys
from pathlib import Path

import torch
from scipy.optimize import linprog

from certify.bounds.activations import Activation
from certify.bounds.network import AffineNetwork, from_module
from certify.bounds.sets import project_ball, sample_ball

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_models import GRAPH_MODELS  # noqa: E402

F64 = torch.float64


def skip_network(act: Activation, seed: int = 0, sizes: tuple[int, ...] = (4, 6, 5, 3), reads_only_skips: bool = False,
                 scale: float = 1.0) -> AffineNetwork:
    """Three layers: z_0 = W_0 x + b_0; z_1 = W_1 h_1 + b_1 + S_10 x; z_2 = W_2 h_2 + b_2 + S_21 h_1 + S_20 x.
    `reads_only_skips`: W_1 = 0 (layer 1 reads only the input through its skip)."""
    g = torch.Generator().manual_seed(seed)
    n, a, b, k = sizes

    def mat(rows: int, cols: int) -> torch.Tensor:
        return scale * torch.randn(rows, cols, generator=g, dtype=F64) / cols**0.5

    weights = [mat(a, n), mat(b, a), mat(k, b)]
    if reads_only_skips:
        weights[1] = torch.zeros(b, a, dtype=F64)
    biases = [0.3 * torch.randn(m, generator=g, dtype=F64) for m in (a, b, k)]
    skips = {1: {0: mat(b, n)}, 2: {1: mat(k, a), 0: mat(k, n)}}
    return AffineNetwork(weights, biases, [act, act], (n,), skips=skips)


def reference_logits(net: AffineNetwork, x: torch.Tensor) -> torch.Tensor:
    """The logits from the graph equations (module docstring), written independently of the package."""
    hs = [x]
    for k, (w, b) in enumerate(zip(net.weights, net.biases)):
        z = hs[k] @ w.T + b
        for j, s in net.skips.get(k, {}).items():
            z = z + hs[j] @ s.T
        if k == net.depth - 1:
            return z
        hs.append(net.activations[k](z))
    raise AssertionError("unreachable")


def translated(name: str, seed: int = 0) -> tuple[AffineNetwork, tuple[int, ...]]:
    """A model of tests/graph_models.py, translated (the issuer side's `from_module`)."""
    build, shape = GRAPH_MODELS[name]
    return from_module(build(seed), shape), shape


def sampled_min(net: AffineNetwork, x: torch.Tensor, rows: torch.Tensor, eps: float, p: float, count: int = 2000,
                seed: int = 0) -> torch.Tensor:
    """min over x and `count` uniform samples of the l_p ball of rows . logits: [N, m] (rows [N, m, K])."""
    points = torch.cat([x, sample_ball(x, eps, p, count, torch.Generator().manual_seed(seed))])
    values = net.forward(points) if net.depth else points
    out = torch.cat([values[: x.shape[0]][:, None], values[x.shape[0]:].reshape(x.shape[0], count, -1)], 1)
    return torch.einsum("nmk,nsk->nsm", rows, out).amin(1)


def pgd_min(net: AffineNetwork, x: torch.Tensor, rows: torch.Tensor, eps: float, p: float, steps: int = 30,
            starts: int = 4, seed: int = 1) -> torch.Tensor:
    """min of rows . logits found by projected sign/normalised gradient descent in the l_p ball: [N, m]."""
    n, m, _ = rows.shape
    centre = x.repeat_interleave(m * starts, 0)
    weights = rows.repeat_interleave(starts, 1).reshape(n * m * starts, -1)
    point = sample_ball(x, eps, p, m * starts, torch.Generator().manual_seed(seed))
    best = torch.full((n * m * starts,), math.inf, dtype=F64)
    for _ in range(steps + 1):
        point = point.detach().requires_grad_(True)
        value = (net.forward(point) * weights).sum(-1)
        best = torch.minimum(best, value.detach())
        (grad,) = torch.autograd.grad(value.sum(), point)
        with torch.no_grad():
            step = grad.sign() if p == math.inf else grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-300)
            point = project_ball(point - 0.25 * eps * step, centre, eps, p)
    return best.reshape(n, m, starts).amin(-1)


def exact_piecewise_min(net: AffineNetwork, row: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> float:
    """min over the box [lower, upper] ([n]) of row . logits for a ReLU or leaky ReLU graph, by enumerating
    every activation pattern of its hidden units (inactive: h = s z, s the negative slope, 0 for ReLU): on a pattern every value is affine in x, the pattern's region
    is a polytope of the box, and one LP per pattern gives its minimum (infeasible patterns skipped). A
    first-layer unit whose exact range over the box avoids 0 is enumerated in its one state only."""
    widths = [w.shape[0] for w in net.weights[:-1]]
    best = math.inf
    n = lower.numel()
    # the first layer is affine in x: a unit whose range over the box avoids 0 (with slack) has one state
    mid, rad = (lower + upper) / 2, (upper - lower) / 2
    z0_mid, z0_rad = net.weights[0] @ mid + net.biases[0], net.weights[0].abs() @ rad
    fixed = [(1.0,) if lo > 1e-9 else (0.0,) if hi < -1e-9 else (0.0, 1.0)
             for lo, hi in zip((z0_mid - z0_rad).tolist(), (z0_mid + z0_rad).tolist())]
    for pattern in itertools.product(*fixed, *[(0.0, 1.0)] * sum(widths[1:])):
        on = torch.tensor(pattern, dtype=F64).split(widths)
        forms = [(torch.eye(n, dtype=F64), torch.zeros(n, dtype=F64))]  # h_k = A x + c
        a_ub, b_ub = [], []
        for k, (w, b) in enumerate(zip(net.weights, net.biases)):
            a, c = w @ forms[k][0], w @ forms[k][1] + b
            for j, s in net.skips.get(k, {}).items():
                a, c = a + s @ forms[j][0], c + s @ forms[j][1]
            if k == net.depth - 1:
                objective = (row @ a, float(row @ c))
                break
            sign = 1.0 - 2.0 * on[k]  # active: -z <= 0, inactive: z <= 0
            a_ub.append(sign[:, None] * a)
            b_ub.append(-sign * c)
            act = net.activations[k]
            scale = on[k] + (1.0 - on[k]) * (act.negative_slope if act.name == "leaky_relu" else 0.0)
            forms.append((scale[:, None] * a, scale * c))
        result = linprog(objective[0].numpy(), A_ub=torch.cat(a_ub).numpy(), b_ub=torch.cat(b_ub).numpy(),
                         bounds=list(zip(lower.tolist(), upper.tolist())), method="highs")
        if result.status == 0:
            best = min(best, float(result.fun) + objective[1])
    return best


def margin_rows(target: torch.Tensor, classes: int) -> torch.Tensor:
    """[N, K, K] rows e_c - e_j (row c is zero)."""
    eye = torch.eye(classes, dtype=F64)
    return eye[target][:, None, :] - eye[None, :, :]
