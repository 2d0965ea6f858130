"""Branch and bound on ReLU splits with optimised split multipliers and slopes (beta-CROWN, Wang et al.
2021, with the intermediate boxes of the parent), for linear objectives over an input box: prove
rows . z_L + consts > 0.

A subdomain is the input box restricted by sign constraints on some unstable hidden units: z_j,i >= 0
("active") or z_j,i <= 0 ("inactive"). Every bound of a subdomain is certified for the points of the box that
satisfy its constraints:
  * its pre-activation boxes are the parent's (valid on a superset), clamped by its own constraints
    (l := max(l, 0) where active, u := min(u, 0) where inactive);
  * a box with l > u on some unit proves the subdomain EMPTY (no point satisfies its constraints), so it
    needs no bound;
  * its objective bound is certify.bounds.crown.backward_lower_bound on relaxations built by `relax` from
    its boxes (a split unit's relaxation is then exact) with lower slopes alpha in [0, 1], minimised over the
    whole input box, in float64 with outward rounding - the same code path as CROWN - for the objective
    plus sum_i beta_i s_i z_i over the split units (s_i = -1 active, +1 inactive, beta_i >= 0): that term is
    <= 0 on the subdomain, so the bound of the sum is a lower bound of the objective there (Lagrangian
    relaxation of the split constraints; with all units split and the best beta it is the LP optimum).
    alpha and beta are optimised by projected Adam steps, each child starting from its parent's (warm start);
    every value is a valid bound whatever they are.
The union of the two children of a split is the parent, so when every leaf is proven (bound > 0 or empty)
the objective is > 0 on the whole box. Nothing here depends on the branching heuristic for soundness.

Branching: the unstable unit with the largest |lambda| * u (-l) / (u - l) summed over the rows (lambda = the
back-substitution coefficient of the unit's activation; a BaBSR-like score), evaluated in batches.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from certify.bounds.activations import default_alpha, relax
from certify.bounds.crown import backward_lower_bound
from certify.bounds.network import AffineNetwork
from certify.bounds.sets import InputSet

Box = tuple[Tensor, Tensor]


@dataclass
class BabResult:
    proven: bool
    lower: float  # proven: least leaf bound (> 0; inf when every leaf is empty); else the last batch's worst leaf
    domains: int  # subdomains bounded
    open: int  # leaves left unproven
    seconds: float
    depth: int


def _clamp(boxes: list[Box], active: list[Tensor], inactive: list[Tensor]) -> list[Box]:
    out = []
    for (lo, hi), a, z in zip(boxes, active, inactive):
        out.append((torch.where(a, lo.clamp(min=0), lo), torch.where(z, hi.clamp(max=0), hi)))
    return out


def _batch_set(input_set: InputSet, size: int) -> InputSet:
    return InputSet(input_set.center.expand(size, -1), input_set.eps.expand(size), input_set.p, input_set.lo, input_set.hi)


def _scores(net: AffineNetwork, rows: Tensor, rels, boxes: list[Box]) -> list[Tensor]:
    """Heuristic branching scores [B, n_j] per hidden layer (not part of any bound)."""
    lam = rows
    scores: list[Tensor] = [torch.zeros_like(b[0]) for b in boxes]
    for k in range(net.depth - 1, 0, -1):
        lam = lam @ net.weights[k]  # coefficient of a_{k} (activation of layer k-1's box)
        lo, hi = boxes[k - 1]
        unstable = (lo < 0) & (hi > 0)
        gain = torch.where(unstable, hi * (-lo) / (hi - lo).clamp(min=1e-12), torch.zeros_like(lo))
        scores[k - 1] = (lam.abs() * gain[:, None, :]).sum(1)
        rel = rels[k - 1]
        lam = lam.clamp(min=0) * rel.lower_slope[:, None, :] + lam.clamp(max=0) * rel.upper_slope[:, None, :]
    return scores


def _optimised_bound(
    net: AffineNetwork, bset: InputSet, rows: Tensor, consts: Tensor, boxes: list[Box],
    active: list[Tensor], inactive: list[Tensor], iterations: int, lr: float,
    alphas: list[Tensor], betas: list[Tensor],
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Certified lower bounds [B, R] of the objective on each (non-empty) subdomain: the best over projected
    Adam steps on (alpha, beta) from the given starting values (the parent's, warm start), re-evaluated
    without gradients with the best parameters per row; also returns those parameters."""
    per_row = [(lo[:, None, :], hi[:, None, :]) for lo, hi in boxes]
    signs = [(z.to(torch.float64) - a.to(torch.float64))[:, None, :] for a, z in zip(active, inactive)]
    split_layers = [j for j, sg in enumerate(signs) if bool(sg.any())]
    alphas = [a.detach().clone() for a in alphas]
    betas = [b.detach().clone() for b in betas]

    def run(alphas: list[Tensor], betas: list[Tensor]) -> Tensor:
        rels = [relax(net.activations[j], *per_row[j], alpha=alphas[j]) for j in range(len(boxes))]
        terms = {j: betas[j].clamp(min=0) * signs[j] for j in split_layers}
        return backward_lower_bound(net, bset, net.depth - 1, rows, rels, per_row, const=consts, layer_terms=terms or None)

    with torch.no_grad():
        best = run(alphas, betas)
    best_alphas = [a.clone() for a in alphas]
    best_betas = [b.clone() for b in betas]
    if iterations > 0 and not bool((best > 0).all()):
        params = [a.requires_grad_(True) for a in alphas] + [betas[j].requires_grad_(True) for j in split_layers]
        opt = torch.optim.Adam(params, lr=lr)
        for _ in range(iterations):
            value = run(alphas, betas)
            with torch.no_grad():
                better = value > best  # [B, R]: rows are independent given the boxes
                if bool(better.any()):
                    best = torch.where(better, value.detach(), best)
                    mask = better[:, :, None]
                    best_alphas = [torch.where(mask, a.detach(), ba) for a, ba in zip(alphas, best_alphas)]
                    best_betas = [torch.where(mask, b.detach(), bb) for b, bb in zip(betas, best_betas)]
                if bool((best.amax(-1) > 0).all()):
                    break
            loss = -value.clamp(max=0).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for a in alphas:
                    a.clamp_(0.0, 1.0)
                for j in split_layers:
                    betas[j].clamp_(min=0.0)
    with torch.no_grad():  # the certified values: one evaluation with the kept parameters
        return run(best_alphas, best_betas), best_alphas, best_betas


def branch_and_bound(
    net: AffineNetwork,
    input_set: InputSet,
    rows: Tensor,
    consts: Tensor | None,
    boxes: list[Box],
    deadline: float,
    batch: int = 64,
    max_domains: int = 200_000,
    iterations: int = 10,
    lr: float = 0.1,
) -> BabResult:
    """Prove min over the box of max_r (rows_r . z_L + consts_r) > 0 (a conjunction is excluded when one of
    its rows is positive: pass the rows of ONE conjunction), starting from root `boxes` (certified on the
    whole box, e.g. CROWN's). input_set holds one example; rows [1, R, m]; consts [1, R] or None."""
    start = time.perf_counter()
    n_hidden = len(net.activations)
    rows = rows.to(torch.float64)
    consts = torch.zeros(rows.shape[:2], dtype=torch.float64) if consts is None else consts.to(torch.float64)
    widths = [b[0].shape[-1] for b in boxes]
    # open domains, stacked: boxes [D, n_j], split masks [D, n_j]
    open_boxes = [(lo.reshape(1, -1).clone(), hi.reshape(1, -1).clone()) for lo, hi in boxes]
    open_active = [torch.zeros(1, w, dtype=torch.bool) for w in widths]
    open_inactive = [torch.zeros(1, w, dtype=torch.bool) for w in widths]
    n_rows = rows.shape[1]
    open_alpha = [default_alpha(net.activations[j], *open_boxes[j])[:, None, :].expand(1, n_rows, -1).clone() for j in range(n_hidden)]
    open_beta = [torch.zeros(1, n_rows, w, dtype=torch.float64) for w in widths]
    bounded = 0
    worst = -float("inf")
    proved = float("inf")  # least bound among the leaves proven by their bound (empty leaves need none)
    depth = 0
    while open_boxes[0][0].shape[0] > 0:
        if time.perf_counter() > deadline or bounded > max_domains:
            return BabResult(False, worst, bounded, int(open_boxes[0][0].shape[0]), time.perf_counter() - start, depth)
        size = min(batch, open_boxes[0][0].shape[0])
        take = [(lo[:size], hi[:size]) for lo, hi in open_boxes]
        act = [a[:size] for a in open_active]
        ina = [z[:size] for z in open_inactive]
        rest_boxes = [(lo[size:], hi[size:]) for lo, hi in open_boxes]
        rest_act = [a[size:] for a in open_active]
        rest_ina = [z[size:] for z in open_inactive]
        t_alpha, rest_alpha = [a[:size] for a in open_alpha], [a[size:] for a in open_alpha]
        t_beta, rest_beta = [b[:size] for b in open_beta], [b[size:] for b in open_beta]
        empty = torch.zeros(size, dtype=torch.bool)
        for lo, hi in take:
            empty |= (lo > hi).any(-1)
        value = torch.full((size, rows.shape[1]), float("inf"), dtype=torch.float64)
        keep = torch.nonzero(~empty).reshape(-1)
        if keep.numel():
            value[keep], kept_alpha, kept_beta = _optimised_bound(
                net, _batch_set(input_set, keep.numel()), rows.expand(keep.numel(), -1, -1), consts.expand(keep.numel(), -1),
                [(lo[keep], hi[keep]) for lo, hi in take], [a[keep] for a in act], [z[keep] for z in ina], iterations, lr,
                [a[keep] for a in t_alpha], [b[keep] for b in t_beta],
            )
            for j in range(n_hidden):
                t_alpha[j][keep] = kept_alpha[j]
                t_beta[j][keep] = kept_beta[j]
        bounded += size
        with torch.no_grad():
            by_bound = ~empty & (value.amax(-1) > 0)
            if bool(by_bound.any()):
                proved = min(proved, float(value[by_bound].amax(-1).min()))
            done = empty | by_bound
            todo = ~done
            new_boxes, new_act, new_ina = [], [], []
            if bool(todo.any()):
                idx = torch.nonzero(todo).reshape(-1)
                sub_boxes = [(lo[idx], hi[idx]) for lo, hi in take]
                sub_act = [a[idx] for a in act]
                sub_ina = [z[idx] for z in ina]
                sub_rels = [relax(net.activations[j], *sub_boxes[j]) for j in range(n_hidden)]
                scores = _scores(net, rows.expand(idx.numel(), -1, -1), sub_rels, sub_boxes)
                flat = torch.cat(scores, dim=1)
                unstable = torch.cat([(lo < 0) & (hi > 0) for lo, hi in sub_boxes], dim=1)
                flat = torch.where(unstable, flat, torch.full_like(flat, -1.0))
                if bool((flat.amax(1) < 0).any()):
                    # a domain with no unstable unit left is a linear program the relaxation already solves
                    # exactly up to rounding: it cannot be split further, so the property is not proven here
                    bad = value[idx][flat.amax(1) < 0].amax(-1).min()
                    return BabResult(False, float(bad), bounded, int(idx.numel()), time.perf_counter() - start, depth)
                choice = flat.argmax(1)
                offsets = torch.tensor([0] + widths).cumsum(0)
                layer = torch.bucketize(choice, offsets[1:], right=True)
                unit = choice - offsets[layer]
                rows_idx = torch.arange(idx.numel())
                children_boxes = [(torch.cat([lo, lo]), torch.cat([hi, hi])) for lo, hi in sub_boxes]
                children_act = [torch.cat([a, a]) for a in sub_act]
                children_ina = [torch.cat([z, z]) for z in sub_ina]
                children_alpha = [torch.cat([a[idx], a[idx]]) for a in t_alpha]  # warm start from the parent
                children_beta = [torch.cat([b[idx], b[idx]]) for b in t_beta]
                n = idx.numel()
                for j in range(n_hidden):
                    sel = layer == j
                    if bool(sel.any()):
                        r, u = rows_idx[sel], unit[sel]
                        children_act[j][r, u] = True  # first half: active
                        children_ina[j][r + n, u] = True  # second half: inactive
                children_boxes = _clamp(children_boxes, children_act, children_ina)
                new_boxes, new_act, new_ina = children_boxes, children_act, children_ina
                new_alpha, new_beta = children_alpha, children_beta
                depth = max(depth, int(sum(a.sum(1).max() for a in children_act) + sum(z.sum(1).max() for z in children_ina)))
                worst = float(value[idx].amax(-1).min())
            if new_boxes:
                open_boxes = [(torch.cat([nl, rl]), torch.cat([nh, rh])) for (nl, nh), (rl, rh) in zip(new_boxes, rest_boxes)]
                open_active = [torch.cat([na, ra]) for na, ra in zip(new_act, rest_act)]
                open_inactive = [torch.cat([ni, ri]) for ni, ri in zip(new_ina, rest_ina)]
                open_alpha = [torch.cat([na, ra]) for na, ra in zip(new_alpha, rest_alpha)]
                open_beta = [torch.cat([nb, rb]) for nb, rb in zip(new_beta, rest_beta)]
            else:
                open_boxes, open_active, open_inactive = rest_boxes, rest_act, rest_ina
                open_alpha, open_beta = rest_alpha, rest_beta
    # every leaf proven: the objective is >= `proved` > 0 on the non-empty leaves, and they cover the box
    return BabResult(True, proved if proved < float("inf") else float("inf"), bounded, 0, time.perf_counter() - start, depth)
