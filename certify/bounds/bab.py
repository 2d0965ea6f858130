"""Branch and bound on ReLU splits for a linear objective over an input box (beta-CROWN, Wang et al. 2021):
prove min over the box of max_r (rows_r . z_L + consts_r) > 0 on a ReLU chain.

A subdomain is the input box restricted by sign constraints on root-unstable hidden units: z_j,u >= 0
("active", sign +1) or z_j,u <= 0 ("inactive", sign -1). Its pre-activation boxes are REFINED, layer by layer
(`refined_boxes`; the rule of witness format 2, which a checker re-derives): box k is the ROOT box
(certify.bounds.alpha_crown.rigorous_root, certified on the whole box, hence on the subdomain), and where the
subdomain has a split below layer k, intersected with the back-substitution bound of +-e_i for every i in
U_k (the root-unstable units of layer k) with the root's own slopes of those rows on the subdomain's boxes
of the layers below (valid on the subdomain: its relaxations below are); then clamped by its signs at layer k
(l := max(l, 0) where active, u := min(u, 0) where inactive). A box with l > u means that no input satisfies
the splits: the subdomain is empty and needs no bound. Refining pays on deep nets: on mnistfc 256x4 it proves
pairs that the root boxes alone (clamped) do not prove in 60 s, with 10-20x fewer subdomains; on two hidden
layers it does not, and refine=False keeps the root boxes clamped by the splits (witness format 1;
certify.bounds.property.REFINE_FROM chooses). The root's slopes of the refinement rows beat CROWN's adaptive
slopes taken on each subdomain's own boxes (measured side by side, one thread: mnistfc 256x4 prop_5_0.03 in 6.7
against 12.7 s, prop_13_0.03 1.2 against 6.4 s, 256x6 prop_5_0.03 26.5 against 48.9 s). Its
objective bound is back-substitution over the WHOLE input box of

    g = row . z_L + const - sum over its splits (j, u, s) of beta_(j,u) * s * z_j,u       (beta >= 0)

(each split term is <= 0 on the subdomain, so a lower bound of g is one of the objective there: a Lagrangian
relaxation of the split constraints), with per-subdomain, per-row lower slopes alpha in [0, 1] of the
unstable units. Any alpha and beta give a valid bound; they are optimised by Adam with projection.

Two stages, so that speed never touches soundness:
  * SEARCH, in float32 with no rounding control, batched over many subdomains at once (tensors
    [subdomains, rows, units]; no per-subdomain Python loop): the refined boxes (a child recomputes only the
    layers above its new split, from its parent's boxes; subdomains with the same splits below a layer share
    that layer's refinement), Adam steps on (alpha, beta), children warm-started from their parent, subdomains
    taken depth first; branching on the free unit (unsplit and unstable in its refined box) with the largest BaBSR-like
    intercept score |min(lambda, 0)| * (-l u / (u - l)) summed over the rows (lambda = the coefficient of the
    unit's activation in the back-substitution; Bunel et al. 2020), times LAYER_WEIGHT = 10 for each hidden
    layer above the unit's (a split refines the boxes of every layer above it, which the score does not see: on
    the seven mnistfc 256x4 pairs at eps 0.03 that were unknown, weight 10 proved two in 2 and 5 s, weight 1
    one in 17 s, within 60 s). (Filtered smart branching, trying the best
    few units by bounding their children, needed 2-18x more subdomains on mnistfc 256x4 than this score; 20
    Adam steps per batch needed 6x fewer than 10 steps; step sizes 0.05 for alpha and 0.1 for beta were the
    best of those tried, 0.02 - 0.1 and 0.02 - 0.4.) The search also proposes candidate counterexamples:
    the input corner that minimises a subdomain's final linear bound.
  * CERTIFY: a subdomain whose search bound is positive gets its refined boxes and its bound again, in float64
    with outward rounding, by certify.bounds.crown.backward_lower_bound (`leaf_boxes`, `certified_leaf_bounds`:
    relaxations from certify.bounds.activations.relax, the split multipliers as `layer_terms`), with its alpha
    and beta rounded to float32 (the witness stores exactly those values). Only then is it a proven leaf;
    otherwise it is split further.
The two children of a split cover their parent, so when every leaf is proven the objective is > 0 on the box;
the leaves (split paths, rows, alphas, betas) form the witness (certify/certificates/property_check.py). Nothing depends on the
branching heuristic or the optimisation for soundness.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from certify.bounds.activations import relax
from certify.bounds.alpha_crown import Box, RootBound, SearchChain, search_backward, search_lines
from certify.bounds.crown import backward_lower_bound
from certify.bounds.network import AffineNetwork
from certify.bounds.requirements import require_chain, require_relu
from certify.bounds.sets import InputSet


@dataclass
class BabResult:
    """Outcome for the conjunctions given. proven: every leaf certified; lower: the least certified leaf bound
    when proven, else the least search bound of the last batch; domains: subdomains bounded; open: leaves left;
    depth: the deepest split path. leaves (when proven): per conjunction (its index among those given), the
    witness arrays (certify/certificates/property_check.py: "depth", "splits" (layer, unit, sign), "betas", "row", "alphas"). candidates: input points
    [P, n_0] float64 where the search saw its objective <= 0 (NOT verified here: certify.attacks.property
    re-evaluates them)."""

    proven: bool
    lower: float
    domains: int
    open: int
    seconds: float
    depth: int
    leaves: dict[int, dict] | None = None
    candidates: Tensor | None = None
    notes: list[str] = field(default_factory=list)
    refined: bool = True  # the leaves' boxes: refined (witness format 2) or the root's clamped (format 1)


LAYER_WEIGHT = 10.0  # branching: a unit's BaBSR score times LAYER_WEIGHT per hidden layer above its own


class OutOfTime(Exception):
    """A refinement (`leaf_boxes`, the search's) reached its deadline between two chunks of subdomains."""


def _check(deadline: float) -> None:
    if time.perf_counter() > deadline:
        raise OutOfTime


def _batch_set(input_set: InputSet, size: int) -> InputSet:
    return InputSet(input_set.center.expand(size, -1), input_set.eps.expand(size), input_set.p, input_set.lo, input_set.hi)


class _Search:
    """Search-stage bounds of subdomains in reduced coordinates: t indexes the root-unstable units U_0, U_1, ...
    (concatenated); splits [B, T] int8 (+1 active, -1 inactive, 0 free), alpha / beta [B, R, T]. A batch's
    `frame` holds each subdomain's own boxes (module docstring: refined), from which its bounds are taken."""

    def __init__(self, chain: SearchChain, root: RootBound, rows: Tensor, consts: Tensor, refine: bool = True):
        self.chain, self.rows, self.consts = chain, rows, consts  # rows [C, R, m], consts [C, R] in the chain's dtype
        dtype = chain.centre.dtype
        self.unstable = root.unstable
        self.offsets = [0]
        for u in root.unstable:
            self.offsets.append(self.offsets[-1] + u.numel())
        self.base = [(lo >= 0).to(dtype) for lo, _ in root.boxes]  # stable units: slope 1 (active) or 0; 0 on U
        self.root_boxes = [(lo.to(dtype), hi.to(dtype)) for lo, hi in root.boxes]
        hidden = len(root.unstable)  # branching weight of a unit of layer j (module docstring): LAYER_WEIGHT^(L-2-j)
        weight = float(LAYER_WEIGHT) if refine else 1.0  # the root's boxes: plain BaBSR
        self.depth_weight = torch.cat([torch.full((u.numel(),), weight ** (hidden - 1 - j), dtype=dtype,
                                                  device=u.device) for j, u in enumerate(root.unstable)])
        self.refinement = [_refinement_rows(root, k, dtype) for k in range(hidden)]

    @property
    def size(self) -> int:
        return self.offsets[-1]

    def layer_of(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(hidden layer, unit index) of reduced indices t."""
        offsets = torch.tensor(self.offsets, device=t.device)
        layer = torch.bucketize(t, offsets[1:], right=True)
        units = torch.cat(self.unstable) if self.size else torch.zeros(0, dtype=torch.long, device=t.device)
        return layer, units[t]

    def refine(self, splits: Tensor, known: tuple[Tensor, Tensor, Tensor], deadline: float = float("inf")) -> Box:
        """Search-stage (not rigorous) `refined_boxes` [B, T] of subdomains from their parents' (known); OutOfTime
        past `deadline` (perf_counter time)."""
        chain = self.chain

        def bound_rows(k: int, below: list[Box]) -> Tensor:
            rows, alphas = self.refinement[k]
            rows = rows[None]
            parts = []
            for part in _chunks(below[0][0].shape[0], rows.shape[1], [w.shape[1] for w in chain.weights[:k + 1]], 2**23):
                _check(deadline)
                lines = [search_lines(lo[part, None, :], hi[part, None, :], alphas[j][None])
                         for j, (lo, hi) in enumerate(below)]
                parts.append(search_backward(chain, k, rows, lines))
            return torch.cat(parts)

        with torch.no_grad():
            return refined_boxes(self.root_boxes, self.unstable, splits, known, bound_rows)

    def frame(self, splits: Tensor, lower: Tensor, upper: Tensor) -> dict:
        """Per subdomain, from its boxes lower / upper [B, T] of the units U (`refine`) clamped by its splits
        [B, T]: "state" [B, T] int8 (its split sign, else +1 / -1 where its box makes the unit stable, else 0:
        free), the upper chord "up_slope" / "up_icpt" [B, T] in the search dtype, and "empty" [B] (some l > u)."""
        lower, upper = _clamped(splits, lower, upper)
        state = torch.where(splits != 0, splits, (lower >= 0).to(torch.int8) - (upper <= 0).to(torch.int8))
        dtype = self.chain.centre.dtype
        _, up_slope, up_icpt = search_lines(lower.to(dtype), upper.to(dtype), torch.zeros_like(lower, dtype=dtype))
        return {"state": state, "up_slope": up_slope, "up_icpt": up_icpt, "empty": (lower > upper).any(1)}

    def bound(self, splits: Tensor, frame: dict, alpha: Tensor, beta: Tensor, conj: Tensor, record: bool = False):
        """Search bounds [B, R] of g (module docstring) for subdomains of the conjunctions conj [B] on their
        frame (`frame`); with record, also the coefficients [B, R, |U_j|] of each layer's unstable activations
        and the final input coefficients [B, R, n_0]."""
        chain = self.chain
        s = splits.to(alpha.dtype)[:, None, :]
        state = frame["state"].to(alpha.dtype)[:, None, :]
        free, act = (state == 0).to(alpha.dtype), (state > 0).to(alpha.dtype)
        up_slope, up_icpt = frame["up_slope"][:, None, :], frame["up_icpt"][:, None, :]
        lam = self.rows[conj]
        value = self.consts[conj] + lam @ chain.biases[-1]
        lam = lam @ chain.weights[-1]
        coefficients = []
        for j in range(chain.hidden - 1, -1, -1):
            sl = slice(self.offsets[j], self.offsets[j + 1])
            units = self.unstable[j]
            lam_u = lam[..., units]
            if record:
                coefficients.insert(0, lam_u)
            neg = lam_u.clamp(max=0)
            f = free[..., sl]
            value = value + (neg * (f * up_icpt[..., sl])).sum(-1)
            new = (lam_u - neg) * (f * alpha[..., sl] + act[..., sl]) + neg * (f * up_slope[..., sl] + act[..., sl])
            new = new - beta[..., sl] * s[..., sl]
            lam = (lam * self.base[j]).index_add(-1, units, new)
            value = value + lam @ chain.biases[j]
            lam = lam @ chain.weights[j]
        value = value + lam @ chain.centre - lam.abs() @ chain.radius
        return (value, coefficients, lam) if record else value


def _optimise(search: _Search, splits: Tensor, frame: dict, alpha: Tensor, beta: Tensor, conj: Tensor, iterations: int,
              lr: float, lr_beta: float, betas: tuple[float, float] = (0.9, 0.999), deadline: float = float("inf")):
    """Adam (Kingma & Ba 2015) on (alpha, beta) for a batch, with step sizes lr (alpha) and lr_beta (beta) and
    projection onto alpha in [0, 1], beta >= 0;
    per (subdomain, row) the best iterate is kept, and a subdomain leaves the batch once a row is positive
    (the working tensors are compacted, the steps spent on the others); no step starts after `deadline`
    (perf_counter time). Returns (best search bounds [B, R],
    alpha, beta)."""
    best_alpha, best_beta = alpha.detach().clone(), beta.detach().clone()
    with torch.no_grad():
        best = search.bound(splits, frame, best_alpha, best_beta, conj)
    idx = torch.nonzero(best.amax(1) <= 0).reshape(-1)
    if iterations <= 0 or idx.numel() == 0:
        return best, best_alpha, best_beta
    # compact working state of the subdomains still open: point, best point, best value, Adam moments
    work = {"a": best_alpha[idx], "b": best_beta[idx], "best_a": best_alpha[idx], "best_b": best_beta[idx],
            "best": best[idx], "splits": splits[idx], "conj": conj[idx]}
    work.update({f"frame.{key}": v[idx] for key, v in frame.items()})
    work.update(ma=torch.zeros_like(work["a"]), va=torch.zeros_like(work["a"]),
                mb=torch.zeros_like(work["b"]), vb=torch.zeros_like(work["b"]))
    b1, b2 = betas

    def retire(keep: Tensor) -> None:
        nonlocal idx
        gone = idx[~keep]
        best[gone], best_alpha[gone], best_beta[gone] = work["best"][~keep], work["best_a"][~keep], work["best_b"][~keep]
        for key in work:
            work[key] = work[key][keep]
        idx = idx[keep]

    for step in range(1, iterations + 1):
        if time.perf_counter() > deadline:
            break
        a = work["a"].requires_grad_(True)
        b = work["b"].requires_grad_(True)
        value = search.bound(work["splits"], _frame_of(work), a, b, work["conj"])
        grad_a, grad_b = torch.autograd.grad(-value.clamp(max=0).sum(), [a, b])
        with torch.no_grad():
            a, b = a.detach(), b.detach()
            if step > 1:  # the first value is the starting point's, already in `best`
                better = value > work["best"]
                work["best"] = torch.where(better, value, work["best"])
                work["best_a"] = torch.where(better[:, :, None], a, work["best_a"])
                work["best_b"] = torch.where(better[:, :, None], b, work["best_b"])
            for point, grad, m, v, rate, upper in ((a, grad_a, "ma", "va", lr, 1.0), (b, grad_b, "mb", "vb", lr_beta, None)):
                work[m] = b1 * work[m] + (1 - b1) * grad
                work[v] = b2 * work[v] + (1 - b2) * grad * grad
                step_size = rate / (1 - b1 ** step)
                denom = (work[v] / (1 - b2 ** step)).sqrt() + 1e-8
                work["a" if upper else "b"] = (point - step_size * work[m] / denom).clamp(min=0.0, max=upper)
            keep = work["best"].amax(1) <= 0
            if not bool(keep.all()):
                retire(keep)
        if idx.numel() == 0:
            break
    if idx.numel():  # the last step's point
        with torch.no_grad():
            value = search.bound(work["splits"], _frame_of(work), work["a"], work["b"], work["conj"])
            better = value > work["best"]
            work["best"] = torch.where(better, value, work["best"])
            work["best_a"] = torch.where(better[:, :, None], work["a"], work["best_a"])
            work["best_b"] = torch.where(better[:, :, None], work["b"], work["best_b"])
            retire(torch.zeros(idx.numel(), dtype=torch.bool, device=idx.device))
    return best, best_alpha, best_beta


def _frame_of(work: dict) -> dict:
    """The frame (`_Search.frame`) of the subdomains in _optimise's working state."""
    return {key[len("frame."):]: value for key, value in work.items() if key.startswith("frame.")}


def _clamped(splits: Tensor, lower: Tensor, upper: Tensor) -> Box:
    """Boxes [B, T] of the units U clamped by splits [B, T] (+1: l := max(l, 0); -1: u := min(u, 0))."""
    return (torch.where(splits > 0, lower.clamp(min=0), lower), torch.where(splits < 0, upper.clamp(max=0), upper))


def _reduced(boxes: list[Box], unstable: list[Tensor]) -> Box:
    """The entries of U (concatenated over the layers) of per-subdomain boxes [P, n_k]: [P, T] each."""
    return (torch.cat([lo[:, u] for (lo, _), u in zip(boxes, unstable)], dim=1),
            torch.cat([hi[:, u] for (_, hi), u in zip(boxes, unstable)], dim=1))


def _full(root_boxes: list[Box], unstable: list[Tensor], lower: Tensor, upper: Tensor) -> list[Box]:
    """Boxes [P, n_k] per hidden layer: root_boxes', with the entries of U from lower / upper [P, T]."""
    boxes, offset = [], 0
    for (lo, hi), units in zip(root_boxes, unstable):
        sl = slice(offset, offset + units.numel())
        offset += units.numel()
        lo, hi = lo[None].expand(lower.shape[0], -1).clone(), hi[None].expand(lower.shape[0], -1).clone()
        lo[:, units], hi[:, units] = lower[:, sl], upper[:, sl]
        boxes.append((lo, hi))
    return boxes


def refined_boxes(root_boxes: list[Box], unstable: list[Tensor], splits: Tensor, known: tuple[Tensor, Tensor, Tensor] | None,
                  bound_rows: Callable[[int, list[Box]], Tensor]) -> Box:
    """The boxes [P, T] of the units U on P subdomains (splits [P, T]), refined as the module docstring says:
    layer by layer, where the subdomain has a split below layer k, the root box intersected with
    bound_rows(k, boxes below [p, n_j]) [p, 2 |U_k|] (the bounds of +e_i, then of -e_i, i in U_k), then clamped
    by its splits; root_boxes [n_k] per layer, in the dtype wanted. known = (lower, upper [P, T], layer [P]): the
    boxes of each subdomain's parent and the layer of its last split; the boxes of layers up to that one depend
    only on splits the parent has too, so they are the parent's (clamped by the new split), not recomputed."""
    count = splits.shape[0]
    root_lower, root_upper = _reduced([(lo[None], hi[None]) for lo, hi in root_boxes], unstable)
    if known is None:
        lower, upper = root_lower.expand(count, -1), root_upper.expand(count, -1)
        since = torch.full((count,), -1, dtype=torch.long, device=splits.device)
        offsets = torch.tensor([0] + [u.numel() for u in unstable], device=splits.device).cumsum(0)
        below = torch.zeros(count, len(unstable), dtype=torch.bool, device=splits.device)
        for k in range(1, len(unstable)):
            below[:, k] = (splits[:, :int(offsets[k])] != 0).any(1)
    else:
        lower, upper, since = known
        below = None
    lower, upper = (t.clone() for t in _clamped(splits, lower, upper))
    offset = 0
    for k, units in enumerate(unstable):
        sl = slice(offset, offset + units.numel())
        offset += units.numel()
        todo = torch.nonzero((since < k) & (below[:, k] if below is not None else True)).reshape(-1)
        if k == 0 or units.numel() == 0 or todo.numel() == 0:
            continue
        # subdomains with the same splits below layer k have the same boxes below it: bounded once
        _, group = torch.unique(splits[todo, :sl.start], dim=0, return_inverse=True)
        first = torch.full((int(group.max()) + 1,), todo.numel(), dtype=torch.long, device=todo.device)
        first = first.scatter_reduce(0, group, torch.arange(todo.numel(), device=todo.device), "amin")
        reps = todo[first]
        bound = bound_rows(k, _full(root_boxes, unstable, lower[reps], upper[reps])[:k])[group]
        n_u = units.numel()
        lo_k = torch.maximum(root_lower[:, sl], bound[:, :n_u])
        hi_k = torch.minimum(root_upper[:, sl], -bound[:, n_u:])
        lower[todo, sl], upper[todo, sl] = _clamped(splits[todo][:, sl], lo_k, hi_k)
    return lower, upper


def _refinement_rows(root: RootBound, k: int, dtype: torch.dtype) -> tuple[Tensor, list[Tensor]]:
    """The refinement rows of hidden layer k, +e_i then -e_i for i in U_k [2 |U_k|, n_k], and the root's slopes
    of those rows on each layer j < k [2 |U_k|, n_j] (root.root_alphas), in `dtype`."""
    units, width = root.unstable[k], root.boxes[k][0].shape[0]
    eye = torch.eye(width, dtype=dtype, device=units.device)[units]
    picked = torch.cat([units, units + width])
    return torch.cat([eye, -eye]), [root.full_slopes_of(root.root_alphas[k][j][picked], j).to(dtype) for j in range(k)]


def _chunks(count: int, rows: int, widths: list[int], budget: int = 2**22) -> list[slice]:
    """Slices of `count` subdomains whose [p, rows, widest] coefficient tensors hold about `budget` entries."""
    step = max(1, budget // (rows * max(widths)))
    return [slice(first, first + step) for first in range(0, count, step)]


def leaf_boxes(net: AffineNetwork, input_set: InputSet, root: RootBound, splits: Tensor,
               known: tuple[Tensor, Tensor, Tensor] | None = None, deadline: float = float("inf")) -> Box:
    """CERTIFY: the rigorous float64 boxes [P, T] of the units U on P subdomains (splits [P, T]; `refined_boxes`),
    each refinement row bounded with the root's slopes of that row (root.root_alphas) by
    certify.bounds.crown.backward_lower_bound; OutOfTime past `deadline` (perf_counter time)."""

    def bound_rows(k: int, below: list[Box]) -> Tensor:
        rows, alphas = _refinement_rows(root, k, torch.float64)
        rows, alphas = rows[None], [a[None] for a in alphas]
        parts = []
        for part in _chunks(below[0][0].shape[0], rows.shape[1], [w.shape[1] for w in net.weights[:k + 1]]):
            _check(deadline)
            boxes = [(lo[part], hi[part]) for lo, hi in below]
            size = boxes[0][0].shape[0]
            rels = [_relax_rows(net, j, lo, hi, alphas[j]) for j, (lo, hi) in enumerate(boxes)]
            with torch.no_grad():
                parts.append(backward_lower_bound(net, _batch_set(input_set, size), k, rows.expand(size, -1, -1), rels,
                                                  [(lo[:, None, :], hi[:, None, :]) for lo, hi in boxes]))
        return torch.cat(parts)

    return refined_boxes(root.boxes, root.unstable, splits, known, bound_rows)


def _relax_rows(net: AffineNetwork, layer: int, lo: Tensor, hi: Tensor, alpha: Tensor):
    """The relaxation of hidden layer `layer` on boxes lo / hi [P, n] with slopes alpha [P or 1, rows, n]."""
    return relax(net.activations[layer], lo[:, None, :], hi[:, None, :], alpha=alpha)


def certified_leaf_bounds(
    net: AffineNetwork, input_set: InputSet, root: RootBound, rows: Tensor, consts: Tensor,
    splits: Tensor, lower: Tensor, upper: Tensor, alpha: Tensor, beta: Tensor,
) -> Tensor:
    """CERTIFY: rigorous float64 lower bounds [P, R] of g on P subdomains (module docstring): boxes lower / upper
    [P, T] of the units U (from `leaf_boxes`, of the subdomain or of an ancestor) clamped by splits [P, T]
    (an empty subdomain's bounds are +inf), slopes alpha [P, R, T] and multipliers beta [P, R, T] (taken as
    float32 values, clamped to [0, 1] and >= 0), by certify.bounds.crown.backward_lower_bound.
    rows [P or 1, R, m], consts [P or 1, R]."""
    count = splits.shape[0]
    alpha = alpha.to(torch.float32).to(torch.float64)
    beta = beta.to(torch.float32).to(torch.float64).clamp(min=0)
    lower, upper = _clamped(splits, lower, upper)
    keep = torch.nonzero(~(lower > upper).any(1)).reshape(-1)
    out = torch.full((count, alpha.shape[1]), float("inf"), dtype=torch.float64, device=splits.device)
    if keep.numel() == 0:
        return out
    rels, rboxes, terms, offset = [], [], {}, 0
    for j, (lo, hi) in enumerate(_full(root.boxes, root.unstable, lower[keep], upper[keep])):
        units = root.unstable[j]
        sl = slice(offset, offset + units.numel())
        offset += units.numel()
        s = splits[keep][:, sl].to(torch.float64)
        rels.append(_relax_rows(net, j, lo, hi, root.full_slopes_of(alpha[keep][..., sl], j)))
        rboxes.append((lo[:, None, :], hi[:, None, :]))
        terms[j] = root.full_slopes_of(-beta[keep][..., sl] * s[:, None, :], j)
    rows = rows.to(torch.float64).expand(count, -1, -1)[keep]
    consts = consts.to(torch.float64).expand(count, -1)[keep]
    with torch.no_grad():
        out[keep] = backward_lower_bound(net, _batch_set(input_set, keep.numel()), net.depth - 1, rows, rels, rboxes,
                                         const=consts, layer_terms=terms)
    return out


def _take(pool: list[dict], size: int) -> dict:
    """Pop about `size` subdomains from the end of the pool (depth first)."""
    parts, have = [], 0
    while pool and have < size:
        part = pool.pop()
        need = size - have
        if part["splits"].shape[0] > need:
            pool.append({k: v[:-need] for k, v in part.items()})
            part = {k: v[-need:] for k, v in part.items()}
        parts.append(part)
        have += part["splits"].shape[0]
    width = max(p["path"].shape[1] for p in parts)
    for p in parts:  # paths are padded with 0 (no split) to a common width
        p["path"] = torch.nn.functional.pad(p["path"], (0, width - p["path"].shape[1]))
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _branch(coefficients: list[Tensor], search: _Search, frame: dict) -> tuple[Tensor, Tensor]:
    """BaBSR-like branching (module docstring) from the recorded coefficients of search.bound: the free unit
    (unsplit and unstable in its refined box) with the largest intercept score per subdomain, (reduced index
    [B], whether it has a free unit [B])."""
    with torch.no_grad():
        weight = (-torch.cat(coefficients, dim=-1).clamp(max=0)).sum(1)
        scores = weight * frame["up_icpt"] * search.depth_weight
        free = frame["state"] == 0
        scores = torch.where(free, scores + 1e-6, torch.full_like(scores, -1.0))  # free units always beat split ones
        return scores.argmax(1), free.any(1)


def branch_and_bound(
    net: AffineNetwork,
    input_set: InputSet,
    root: RootBound,
    rows: Tensor,
    consts: Tensor,
    alpha: Tensor,
    deadline: float,
    batch: int = 512,
    iterations: int = 20,
    lr: float = 0.05,
    lr_beta: float = 0.1,
    dtype: torch.dtype = torch.float32,
    refine: bool = True,
) -> BabResult:
    """Prove, for each of C conjunctions c, min over the box of max_r (rows[c, r] . z_L + consts[c, r]) > 0
    (module docstring), all in one search (their subdomains share the batches): rows [C, R, m], consts [C, R],
    padded rows marked by consts = -inf (never prove anything); alpha [C, R, T] the starting slopes (the root's
    final ones). Every subdomain gets its own refined boxes (`leaf_boxes`; witness format 2), or with refine=False
    the root boxes clamped by its splits (witness format 1, LAYER_WEIGHT not applied). Stops at `deadline` (perf_counter
    time; checked between Adam steps and between chunks of the refinements, so a search overshoots it by about
    one chunk's work), at a candidate counterexample, or when a subdomain has no free unit left;
    UnsupportedError for a network that is not a ReLU chain."""
    require_relu(net, "branch and bound")
    require_chain(net, "branch and bound")
    start = time.perf_counter()
    valid = torch.isfinite(consts)  # [C, R]
    consts = torch.where(valid, consts, torch.full_like(consts, -1e30))
    chain = SearchChain.build(net, input_set, dtype)
    search = _Search(chain, root, rows.to(dtype), consts.to(dtype), refine)
    n_conj, n_rows, size = rows.shape[0], rows.shape[1], search.size
    dev = rows.device  # the search runs where the network and the property are (CPU or GPU)
    lower, upper = _reduced([(lo[None], hi[None]) for lo, hi in search.root_boxes], root.unstable)
    root_units = _reduced([(lo[None], hi[None]) for lo, hi in root.boxes], root.unstable)  # float64, refine=False
    pool = [{
        "splits": torch.zeros(n_conj, size, dtype=torch.int8, device=dev),
        "lower": lower.expand(n_conj, -1).clone(), "upper": upper.expand(n_conj, -1).clone(),
        "alpha": alpha.to(dtype).clone(),
        "beta": torch.zeros(n_conj, n_rows, size, dtype=dtype, device=dev),
        "conj": torch.arange(n_conj, device=dev),
        "path": torch.zeros(n_conj, 0, dtype=torch.int32, device=dev),  # split codes +-(t + 1), root to leaf, then 0s
        "depth": torch.zeros(n_conj, dtype=torch.long, device=dev),
    }]
    leaves: list[tuple[Tensor, ...]] = []  # (conj, path, row, alpha [T], beta [T]) per proven batch
    bounded, depth, proved, worst = 0, 0, float("inf"), -float("inf")
    notes: list[str] = []

    def result(proven: bool, lower: float, cands: Tensor | None = None, taken: int = 0) -> BabResult:
        left = taken + sum(p["splits"].shape[0] for p in pool)  # taken: the batch in hand when the search stops
        trees = {c: _witness(search, [tuple(t[m] for t in leaf[1:]) for leaf in leaves for m in [leaf[0] == c]])
                 for c in range(n_conj)} if proven else None
        return BabResult(proven, lower, bounded, left, time.perf_counter() - start, depth, trees, cands, notes, refine)

    while pool:
        if time.perf_counter() > deadline:
            return result(False, worst)
        dom = _take(pool, batch)
        splits, conj, lower, upper = dom["splits"], dom["conj"], dom["lower"], dom["upper"]
        fresh = torch.nonzero(dom["depth"] >= 1).reshape(-1)
        if refine and fresh.numel():
            last = dom["path"][fresh, dom["depth"][fresh] - 1].abs().long() - 1
            known = (lower[fresh], upper[fresh], search.layer_of(last)[0])
            try:
                lower[fresh], upper[fresh] = search.refine(splits[fresh], known, deadline)
            except OutOfTime:
                return result(False, worst, taken=splits.shape[0])
        frame = search.frame(splits, lower, upper)
        value, a, b = _optimise(search, splits, frame, dom["alpha"], dom["beta"], conj, iterations, lr, lr_beta,
                                deadline=deadline)
        if time.perf_counter() > deadline:
            return result(False, worst, taken=splits.shape[0])
        value = value.masked_fill(frame["empty"][:, None], float("inf"))  # to be confirmed empty in float64
        bounded += splits.shape[0]
        done = torch.zeros(splits.shape[0], dtype=torch.bool, device=dev)
        hopeful = torch.nonzero(value.amax(1) > 0).reshape(-1)
        if hopeful.numel():
            h = hopeful
            try:
                boxes = (leaf_boxes(net, input_set, root, splits[h], deadline=deadline) if refine
                         else tuple(t.expand(h.numel(), -1) for t in root_units))
            except OutOfTime:
                return result(False, worst, taken=splits.shape[0])
            exact = certified_leaf_bounds(net, input_set, root, rows[conj[h]], consts[conj[h]], splits[h], *boxes,
                                          a[h], b[h])
            best, row = exact.max(1)
            ok = best > 0
            done[h[ok]] = True
            if bool(ok.any()):
                proved = min(proved, float(best[ok].min()))
                idx = h[ok]
                leaves.append((conj[idx], dom["path"][idx], row[ok], a[idx, row[ok]], b[idx, row[ok]]))
            if not bool(ok.all()):
                notes.append(f"{int((~ok).sum())} subdomain(s) positive in the search but not in float64: split further")
        todo = torch.nonzero(~done).reshape(-1)
        if todo.numel() == 0:
            continue
        worst = float(value[todo].amax(1).min())
        splits, a, b, conj, lower, upper = splits[todo], a[todo], b[todo], conj[todo], lower[todo], upper[todo]
        frame = {key: v[todo] for key, v in frame.items()}
        path, levels = dom["path"][todo], dom["depth"][todo]
        with torch.no_grad():
            _, coefficients, lam_x = search.bound(splits, frame, a, b, conj, record=True)
            corner = chain.centre - lam_x.sign() * chain.radius  # [B, R, n0]: minimiser of each row's linear bound
            y = net.forward(corner.reshape(-1, corner.shape[-1]).to(torch.float64)).to(dtype).reshape(corner.shape[0], n_rows, -1)
            viol = torch.einsum("brm,bsm->brs", y, search.rows[conj]) + search.consts[conj][:, None, :]
            viol = torch.where(valid[conj][:, None, :], viol, torch.full_like(viol, -float("inf")))
            hit = (viol.amax(-1) <= 0) & valid[conj]  # every row of the conjunction <= 0 at a real row's corner
            if bool(hit.any()):
                return result(False, worst, corner[hit].to(torch.float64))
        chosen, has_free = _branch(coefficients, search, frame)
        if not bool(has_free.all()):
            notes.append("a subdomain with every unstable unit split is not proven: its relaxation is already exact")
            return result(False, worst)
        n = splits.shape[0]
        kids = torch.cat([splits, splits])
        arange = torch.arange(n, device=dev)
        kids[arange, chosen] = 1
        kids[arange + n, chosen] = -1
        code = chosen.to(torch.int32) + 1
        levels = torch.cat([levels, levels])
        kid_path = torch.nn.functional.pad(torch.cat([path, path]), (0, max(0, int(levels.max()) + 1 - path.shape[1])))
        kid_path[torch.arange(2 * n, device=dev), levels] = torch.cat([code, -code])
        pool.append({"splits": kids, "lower": torch.cat([lower, lower]), "upper": torch.cat([upper, upper]),
                     "alpha": torch.cat([a, a]), "beta": torch.cat([b, b]), "conj": torch.cat([conj, conj]),
                     "path": kid_path, "depth": levels + 1})
        depth = max(depth, int(levels.max()) + 1)
    return result(True, proved)


def _witness(search: _Search, leaves: list) -> dict:
    """The leaves (path, row, alpha, beta) in the witness's arrays for one conjunction."""
    import numpy as np

    width = max(p.shape[1] for p, *_ in leaves)
    paths = torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p, *_ in leaves]).cpu()
    rows = torch.cat([r for _, r, _, _ in leaves]).cpu()
    alphas = torch.cat([a for _, _, a, _ in leaves]).to("cpu", torch.float32)
    betas_full = torch.cat([b for _, _, _, b in leaves]).to("cpu", torch.float32).clamp(min=0)  # [leaves, T]
    depth = (paths != 0).sum(1)
    steps = paths[paths != 0]  # row-major: leaf after leaf, root-to-leaf
    leaf_of = torch.arange(paths.shape[0])[:, None].expand_as(paths)[paths != 0]
    t = steps.abs().long() - 1
    layer, unit = (v.cpu() for v in search.layer_of(t))
    sign = steps.sign().long()
    return {
        "depth": depth.numpy().astype(np.int64),
        "splits": torch.stack([layer, unit, sign], 1).numpy().astype(np.int64),
        "betas": betas_full[leaf_of, t].numpy(),
        "row": rows.numpy().astype(np.int64),
        "alphas": alphas.numpy(),
    }
