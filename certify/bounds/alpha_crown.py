"""alpha-CROWN (Xu et al. 2021, "Fast and Complete") on ReLU chains: CROWN with the lower ReLU slopes alpha
optimised, and the root of branch and bound (certify.bounds.bab).

Any slope alpha in [0, 1] gives a valid lower line of ReLU on an unstable unit (max(z, 0) >= alpha z), so the
back-substitution bound of certify.bounds.crown is a certified lower bound for EVERY choice of alpha. As in the
paper, each bounded quantity has its own slopes: the objective rows, and for every hidden layer k the 2 n_k
rows +-I that bound z_k get one alpha per (row, unit) of each ReLU layer below; the intermediate boxes are
functions of their slopes, so the gradient of the objective reaches them too.

Two stages, so that speed never touches soundness:
  * SEARCH (`SearchChain`, `optimise_root`): float32 back-substitution without rounding control, the slopes
    optimised by Adam with projection onto [0, 1], starting from CROWN's ("adaptive": 1 where u >= -l).
    Its numbers are never reported. (Tried and not kept: first optimising each +-e_i row's slopes for its own
    bound, layer by layer, then the objective's. On mnistfc 256x4 prop_3_0.03 that leaves 62 units of the last
    hidden layer unstable instead of 79, but branch and bound proved pairs hardly faster, side by side: 256x4
    prop_5_0.03 in 5.6 against 7.0 s, 256x6 prop_5_0.03 in 25.0 against 26.5 s.)
  * CERTIFY (`rigorous_root`): with the slopes the search found (rounded to float32, then exact in float64),
    the boxes and the objective bounds are recomputed layer by layer by certify.bounds.crown
    (backward_lower_bound with `relax`, float64, outward rounding). The result is exactly what the witness of
    witness (certify/certificates/property_check.py) lets a checker re-derive: box k = the +-I bounds with the slopes A_k,
    nothing else (no interval intersection); slopes only on the units unstable in the rigorous boxes (U_j),
    any other unit is stable there and needs none.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from certify.bounds.activations import relax
from certify.bounds.crown import backward_lower_bound
from certify.bounds.network import AffineNetwork
from certify.bounds.requirements import require_chain, require_relu
from certify.bounds.sets import InputSet

Box = tuple[Tensor, Tensor]


@dataclass
class SearchChain:
    """A float32 (or other dtype) copy of a ReLU chain and of the input box for the SEARCH stage: weights[k]
    [out_k, in_k], biases[k] [out_k], centre / radius [n_0] of the box. Its bounds are not rigorous."""

    weights: list[Tensor]
    biases: list[Tensor]
    centre: Tensor
    radius: Tensor

    @classmethod
    def build(cls, net: AffineNetwork, input_set: InputSet, dtype: torch.dtype = torch.float32) -> "SearchChain":
        lo, hi = input_set.box()
        return cls(
            [w.to(dtype) for w in net.weights], [b.to(dtype) for b in net.biases],
            ((lo[0] + hi[0]) / 2).to(dtype), ((hi[0] - lo[0]) / 2).to(dtype),
        )

    @property
    def hidden(self) -> int:
        return len(self.weights) - 1


def search_lines(lower: Tensor, upper: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(lower slope, upper slope, upper intercept) of ReLU on [lower, upper] for the search (no rounding
    control): exact on stable units, alpha z below and the chord above on unstable ones."""
    active, inactive = lower >= 0, upper <= 0
    unstable = ~(active | inactive)
    width = (upper - lower).clamp(min=1e-12)
    up_slope = torch.where(unstable, upper / width, active.to(lower.dtype))
    up_icpt = torch.where(unstable, -lower * upper / width, torch.zeros_like(lower))
    low_slope = torch.where(unstable, alpha.clamp(0, 1), active.to(lower.dtype))
    return low_slope, up_slope, up_icpt


def search_backward(chain: SearchChain, layer: int, lam: Tensor, lines: list[tuple[Tensor, Tensor, Tensor]]) -> Tensor:
    """Search-stage lower bound [B, m] of lam . z_layer over the box, lam [B, m, n_layer], with lines[j] =
    search_lines of hidden layer j < layer, each [B or 1, m or 1, n_j]."""
    value = torch.zeros(lam.shape[:-1], dtype=lam.dtype, device=lam.device)
    for k in range(layer, -1, -1):
        value = value + lam @ chain.biases[k]
        lam = lam @ chain.weights[k]
        if k == 0:
            break
        low, up, icpt = lines[k - 1]
        neg = lam.clamp(max=0)
        value = value + (neg * icpt).sum(-1)
        lam = (lam - neg) * low + neg * up
    return value + lam @ chain.centre - lam.abs() @ chain.radius


def _search_box(chain: SearchChain, k: int, boxes: list[Box], slopes: list[Tensor]) -> Box:
    """Search-stage box of hidden layer k from the boxes below and the slopes[j] [2 n_k, n_j] of its +-I rows."""
    width = chain.weights[k].shape[0]
    eye = torch.eye(width, dtype=chain.centre.dtype, device=chain.centre.device)
    lines = [tuple(t[None] for t in search_lines(boxes[j][0], boxes[j][1], slopes[j])) for j in range(k)]
    bound = search_backward(chain, k, torch.cat([eye, -eye])[None], lines)[0]
    return bound[:width], -bound[width:]


def adaptive_slopes(lower: Tensor, upper: Tensor, count: int) -> Tensor:
    """CROWN's lower slopes (1 where u >= -l, else 0), one copy per bounded row: [count, n]."""
    return (upper >= -lower).to(lower.dtype)[None].expand(count, -1).clone()


def optimise_root(
    chain: SearchChain, rows: Tensor, iterations: int, lr: float = 0.1, decay: float = 0.98,
    deadline: float | None = None,
) -> tuple[list[list[Tensor]], list[Tensor], int]:
    """SEARCH: slopes (inter[k][j] [2 n_k, n_j], final[j] [R, n_j]) maximising the objective bounds
    rows [R, m] . z_L (the sum of their negative parts, then of all), from CROWN's; the best iterate is kept.
    Only the rows of units unstable in CROWN's boxes are optimised (a stable unit's box only needs to stay
    stable: its rows keep CROWN's slopes and, in the search, CROWN's box). Returns (inter, final, iterations)."""
    with torch.no_grad():
        inter: list[list[Tensor]] = []
        boxes: list[Box] = []
        for k in range(chain.hidden):  # CROWN boxes: adaptive slopes from the boxes below
            inter.append([adaptive_slopes(*boxes[j], 2 * chain.weights[k].shape[0]) for j in range(k)])
            boxes.append(_search_box(chain, k, boxes, inter[k]))
        final = [adaptive_slopes(*boxes[j], rows.shape[0]) for j in range(chain.hidden)]
    if iterations <= 0:
        return inter, final, 0
    free = [torch.nonzero((lo < 0) & (hi > 0)).reshape(-1) for lo, hi in boxes]
    picks = [torch.cat([f, f + lo.shape[0]]) for f, (lo, _) in zip(free, boxes)]
    eyes = [torch.eye(lo.shape[0], dtype=rows.dtype, device=rows.device)[f] for f, (lo, _) in zip(free, boxes)]
    tuned = [[inter[k][j][picks[k]].clone() for j in range(k)] for k in range(chain.hidden)]

    def objective() -> Tensor:
        current: list[Box] = [boxes[0]]  # layer 0's box is exact for the linear first layer
        for k in range(1, chain.hidden):
            lines = [tuple(t[None] for t in search_lines(*current[j], tuned[k][j])) for j in range(k)]
            bound = search_backward(chain, k, torch.cat([eyes[k], -eyes[k]])[None], lines)[0]
            width = free[k].numel()
            current.append((boxes[k][0].index_copy(0, free[k], bound[:width]),
                            boxes[k][1].index_copy(0, free[k], -bound[width:])))
        lines = [tuple(t[None] for t in search_lines(*current[j], final[j])) for j in range(chain.hidden)]
        return search_backward(chain, chain.hidden, rows[None], lines)[0]

    params = [a for group in tuned for a in group] + final
    best_score = -float("inf")
    best = ([[a.clone() for a in g] for g in tuned], [a.clone() for a in final])
    for a in params:
        a.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, decay)
    done = 0
    for it in range(iterations):
        if deadline is not None and time.perf_counter() > deadline:
            break
        value = objective()
        done = it + 1
        score = float(value.detach().clamp(max=0).sum()) + 1e-3 * float(value.detach().sum())
        if score > best_score:
            best_score = score
            best = ([[a.detach().clone() for a in g] for g in tuned], [a.detach().clone() for a in final])
        if bool((value > 0).all()):
            break
        loss = -(value.clamp(max=0).sum() + 1e-3 * value.sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for a in params:
                a.clamp_(0.0, 1.0)
    for k in range(chain.hidden):
        for j in range(k):
            inter[k][j][picks[k]] = best[0][k][j]
    return inter, best[1], done


@dataclass
class RootBound:
    """The CERTIFY stage at the root: float64 boxes [n_j] of every hidden layer, the units unstable in them
    (U_j, int64), the slopes that produced them restricted to U (root_alphas[k][j] float32 [2 n_k, |U_j|]),
    and the objective bounds [R] with the final slopes (final float32 [R, sum_j |U_j|], U_0 first)."""

    boxes: list[Box]
    unstable: list[Tensor]
    root_alphas: list[list[Tensor]]
    value: Tensor
    final: Tensor

    def full_slopes(self, reduced: Tensor, layer: int) -> Tensor:
        """Slopes [..., n_layer] float64 from reduced ones [..., sum |U_j|]: 0 off U_layer (stable units)."""
        offsets = [0]
        for u in self.unstable:
            offsets.append(offsets[-1] + u.numel())
        return self.full_slopes_of(reduced[..., offsets[layer]:offsets[layer + 1]], layer)

    def full_slopes_of(self, values: Tensor, layer: int) -> Tensor:
        """Slopes [..., n_layer] float64 from those of U_layer only, values [..., |U_layer|]: 0 elsewhere."""
        width = self.boxes[layer][0].shape[0]
        full = torch.zeros(values.shape[:-1] + (width,), dtype=torch.float64, device=values.device)
        full[..., self.unstable[layer]] = values.to(torch.float64)
        return full


def _rowwise_relu(net: AffineNetwork, layer: int, box: Box, alpha: Tensor):
    """The relaxation of hidden layer `layer` on its box with one slope per row, alpha [rows, n]."""
    return relax(net.activations[layer], box[0][None, None, :], box[1][None, None, :], alpha=alpha[None])


def rigorous_root(net: AffineNetwork, input_set: InputSet, rows: Tensor, consts: Tensor,
                  inter: list[list[Tensor]], final: list[Tensor]) -> RootBound:
    """CERTIFY (module docstring): the boxes and the objective bounds rows [1, R, m] . z_L + consts [1, R] for the
    search slopes inter[k][j] [2 n_k, n_j] and final[j] [R, n_j] (cast to float32 first: those are the stored
    values), each bound by certify.bounds.crown.backward_lower_bound in float64."""
    boxes: list[Box] = []
    unstable: list[Tensor] = []
    root_alphas: list[list[Tensor]] = []
    with torch.no_grad():
        for k in range(len(net.activations)):
            width = net.weights[k].shape[0]
            stored = [inter[k][j][:, unstable[j]].to(torch.float32) for j in range(k)]
            rels, rboxes = [], []
            for j in range(k):
                full = torch.zeros(2 * width, boxes[j][0].shape[0], dtype=torch.float64, device=boxes[j][0].device)
                full[:, unstable[j]] = stored[j].to(torch.float64)
                rels.append(_rowwise_relu(net, j, boxes[j], full))
                rboxes.append((boxes[j][0][None, None, :], boxes[j][1][None, None, :]))
            eye = torch.eye(width, dtype=torch.float64, device=rows.device)
            bound = backward_lower_bound(net, input_set, k, torch.cat([eye, -eye])[None], rels, rboxes)[0]
            lo, hi = bound[:width], -bound[width:]
            boxes.append((lo, hi))
            unstable.append(torch.nonzero((lo < 0) & (hi > 0)).reshape(-1))
            root_alphas.append(stored)
        reduced = torch.cat([final[j][:, unstable[j]] for j in range(len(boxes))], dim=1).to(torch.float32)
        root = RootBound(boxes, unstable, root_alphas, torch.empty(0, device=rows.device), reduced)
        rels = [_rowwise_relu(net, j, boxes[j], root.full_slopes(reduced, j)) for j in range(len(boxes))]
        rboxes = [(lo[None, None, :], hi[None, None, :]) for lo, hi in boxes]
        root.value = backward_lower_bound(net, input_set, net.depth - 1, rows.to(torch.float64), rels, rboxes,
                                          const=consts.to(torch.float64))[0]
    return root


def _score(value: Tensor) -> tuple[float, float]:
    """How good a vector of objective bounds is: the sum of its negative parts first, then its sum."""
    return float(value.clamp(max=0).sum()), float(value.sum())


def alpha_crown_lower_bound(
    net: AffineNetwork,
    input_set: InputSet,
    rows: Tensor,
    consts: Tensor | None = None,
    iterations: int = 50,
    lr: float = 0.1,
    decay: float = 0.98,
    deadline: float | None = None,
) -> tuple[Tensor, dict]:
    """Certified lower bounds [1, R] of rows [1, R, m] . z_L + consts [1, R] over the input set (ONE example)
    by alpha-CROWN (module docstring). details: "iterations" run, "crown" (the certified bound with CROWN's
    slopes), "seconds", and "root" (the RootBound returned: the optimised slopes' unless CROWN's score better
    by `_score`, so the result is never worse than CROWN's in that order; boxes, unstable units, slopes).
    UnsupportedError for a non-ReLU network or one with skip connections (certify.bounds.requirements)."""
    require_relu(net, "alpha-CROWN")
    require_chain(net, "alpha-CROWN")
    start = time.perf_counter()
    consts = torch.zeros(rows.shape[:2], dtype=torch.float64, device=rows.device) if consts is None else consts
    chain = SearchChain.build(net, input_set)
    inter0, final0, _ = optimise_root(chain, rows[0].to(torch.float32), 0)
    crown = rigorous_root(net, input_set, rows, consts, inter0, final0)
    root, done = crown, 0
    if iterations > 0 and not bool((crown.value > 0).all()):
        inter, final, done = optimise_root(chain, rows[0].to(torch.float32), iterations, lr, decay, deadline)
        optimised = rigorous_root(net, input_set, rows, consts, inter, final)
        if _score(optimised.value) >= _score(crown.value):
            root = optimised
    return root.value[None], {"iterations": done, "crown": crown.value[None], "seconds": time.perf_counter() - start,
                         "root": root, "crown_root": crown}
