"""alpha-CROWN (Xu et al. 2021, "Fast and Complete"): CROWN with the lower ReLU slopes alpha optimised.

Any slope alpha in [0, 1] gives a valid lower line of ReLU on an unstable unit (max(z, 0) >= alpha z), so
the back-substitution bound of certify.bounds.crown is a certified lower bound for EVERY choice of alpha;
alpha-CROWN maximises it by projected gradient ascent (Adam, then clamping to [0, 1]). As in the paper, each
bounded quantity gets its own slopes: the final rows (objective) and, for every hidden layer k, the 2 n_k
rows +-I that bound z_k get one alpha per (row, unit) of each ReLU layer below. Intermediate boxes are
recomputed from their own slopes at every step (and intersected with the interval boxes), so the gradient of
the final objective reaches them too.

Soundness does not depend on the optimisation: the returned bound is recomputed afterwards, without
gradients, by `evaluate` - the same code path as CROWN (certify.bounds.crown.relax and
backward_lower_bound, float64, outward rounding), given the slopes; for each row the best of the slope
snapshots kept during the ascent is taken (each snapshot's bound is valid, so is their maximum). The slopes
start at CROWN's ("adaptive": 1 where u >= -l), so the result is never looser than the CROWN bound with the
same boxes (the CROWN value itself is included as the first snapshot).
"""
from __future__ import annotations

import time

import torch
from torch import Tensor

from certify.bounds.activations import default_alpha, relax
from certify.bounds.crown import backward_lower_bound, layer_bounds
from certify.bounds.ibp import interval_bounds
from certify.bounds.network import AffineNetwork
from certify.bounds.sets import InputSet
from certify.errors import UnsupportedError

Box = tuple[Tensor, Tensor]


def _rowwise(box: Box) -> Box:
    """A box [N, n] viewed per objective row, [N, 1, n] (broadcasts against slopes [N, m, n])."""
    return box[0][:, None, :], box[1][:, None, :]


def evaluate(
    net: AffineNetwork,
    input_set: InputSet,
    rows: Tensor,
    consts: Tensor | None,
    alphas: dict,
    ibp: list[Box],
) -> tuple[Tensor, list[Box]]:
    """Certified lower bounds [N, R] of rows . z_L + consts for the given slopes (any values: clamped to
    [0, 1] by `relax`), and the intermediate boxes. alphas[k] is a list, for each ReLU layer j < k, of slopes
    [N, m_k, n_j], where k = index of the bounded layer (net.depth - 1 for the objective, m = R rows; else
    m = 2 n_k rows +-I)."""
    n_examples = input_set.center.shape[0]
    boxes: list[Box] = []
    for k, act in enumerate(net.activations):
        width = net.weights[k].shape[0]
        eye = torch.eye(width, dtype=torch.float64, device=input_set.center.device)
        coeffs = torch.cat([eye, -eye]).expand(n_examples, 2 * width, width)
        rels = [relax(net.activations[j], *_rowwise(boxes[j]), alpha=alphas[k][j]) for j in range(k)]
        bound = backward_lower_bound(net, input_set, k, coeffs, rels, [_rowwise(b) for b in boxes])
        lower, upper = bound[:, :width], -bound[:, width:]
        boxes.append((torch.maximum(lower, ibp[k][0]), torch.minimum(upper, ibp[k][1])))
    last = net.depth - 1
    rels = [relax(net.activations[j], *_rowwise(boxes[j]), alpha=alphas[last][j]) for j in range(last)]
    value = backward_lower_bound(net, input_set, last, rows, rels, [_rowwise(b) for b in boxes], const=consts)
    return value, boxes


def _initial_alphas(net: AffineNetwork, input_set: InputSet, rows: Tensor) -> dict:
    """CROWN's slopes (from the CROWN boxes), one copy per bounded quantity and row."""
    boxes, _ = layer_bounds(net, input_set, "crown")
    n_examples = input_set.center.shape[0]
    alphas: dict = {}
    for k in range(net.depth):
        m = rows.shape[1] if k == net.depth - 1 else 2 * net.weights[k].shape[0]
        alphas[k] = [
            default_alpha(net.activations[j], *boxes[j])[:, None, :].expand(n_examples, m, -1).clone() for j in range(k)
        ]
    return alphas


def alpha_crown_lower_bound(
    net: AffineNetwork,
    input_set: InputSet,
    rows: Tensor,
    consts: Tensor | None = None,
    iterations: int = 50,
    lr: float = 0.1,
    decay: float = 0.98,
    deadline: float | None = None,
    snapshots: int = 4,
) -> tuple[Tensor, dict]:
    """Certified lower bounds [N, R] of rows . z_L + consts over the input set, by alpha-CROWN (module
    docstring); details: iterations run, the CROWN bound, seconds, the slopes of the last snapshot, and the
    intermediate boxes (intersection over the kept snapshots: certified, usable as BaB root boxes)."""
    if any(a.name != "relu" for a in net.activations):
        raise UnsupportedError("alpha-CROWN here optimises ReLU slopes; the network has a non-ReLU activation")
    start = time.perf_counter()
    rows = rows.to(torch.float64)
    consts = None if consts is None else consts.to(torch.float64)
    ibp = [(lo.detach(), hi.detach()) for lo, hi in interval_bounds(net, input_set)[:-1]]
    with torch.no_grad():
        alphas = _initial_alphas(net, input_set, rows)
        crown, _ = evaluate(net, input_set, rows, consts, alphas, ibp)
    params = [a.requires_grad_(True) for k in sorted(alphas) for a in alphas[k]]
    best = crown.clone()
    kept: list[tuple[Tensor, dict]] = [(crown.clone(), {k: [a.detach().clone() for a in v] for k, v in alphas.items()})]
    done = 0
    if params and not bool((crown > 0).all()):
        opt = torch.optim.Adam(params, lr=lr)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, decay)
        for it in range(iterations):
            if deadline is not None and time.perf_counter() > deadline:
                break
            value, _ = evaluate(net, input_set, rows, consts, alphas, ibp)
            done = it + 1
            with torch.no_grad():
                improved = value > best
                if bool(improved.any()):
                    best = torch.maximum(best, value.detach())
                    kept.append((value.detach().clone(), {k: [a.detach().clone() for a in v] for k, v in alphas.items()}))
                    kept = sorted(kept, key=lambda item: float(item[0].clamp(max=0).sum()))[-snapshots:]
                if bool((value > 0).all()):
                    break
            loss = -(value.clamp(max=0).sum() + 1e-2 * value.sum())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                for a in params:
                    a.clamp_(0.0, 1.0)
    # the certified result: re-evaluated without gradients from each kept snapshot, best per row
    final = None
    boxes: list[Box] | None = None
    with torch.no_grad():
        for _, snap in kept:
            value, snap_boxes = evaluate(net, input_set, rows, consts, snap, ibp)
            final = value if final is None else torch.maximum(final, value)
            # every snapshot's boxes are certified, so is their intersection
            boxes = snap_boxes if boxes is None else [
                (torch.maximum(a[0], b[0]), torch.minimum(a[1], b[1])) for a, b in zip(boxes, snap_boxes)
            ]
    details = {
        "iterations": done,
        "crown": crown.detach(),
        "seconds": time.perf_counter() - start,
        "snapshots": len(kept),
        "alphas": kept[-1][1],
        "boxes": boxes,
    }
    return final, details
