"""Branch and bound on ReLU splits for a linear objective over an input box (beta-CROWN, Wang et al. 2021):
prove min over the box of max_r (rows_r . z_L + consts_r) > 0 on a ReLU chain.

A subdomain is the input box restricted by sign constraints on root-unstable hidden units: z_j,u >= 0
("active", sign +1) or z_j,u <= 0 ("inactive", sign -1). Its pre-activation boxes are the ROOT boxes
(certify.bounds.alpha_crown.rigorous_root, certified on the whole box, hence on the subdomain) clamped by its
signs (l := max(l, 0) where active, u := min(u, 0) where inactive). Its objective bound is back-substitution
over the WHOLE input box of

    g = row . z_L + const - sum over its splits (j, u, s) of beta_(j,u) * s * z_j,u       (beta >= 0)

(each split term is <= 0 on the subdomain, so a lower bound of g is one of the objective there: a Lagrangian
relaxation of the split constraints), with per-subdomain, per-row lower slopes alpha in [0, 1] of the
unstable units. Any alpha and beta give a valid bound; they are optimised by Adam with projection.

Two stages, so that speed never touches soundness:
  * SEARCH, in float32 with no rounding control, batched over many subdomains at once (tensors
    [subdomains, rows, units]; no per-subdomain Python loop): Adam steps on (alpha, beta), children warm-started
    from their parent, subdomains taken depth first; branching on the free unit with the largest BaBSR-like
    intercept score |min(lambda, 0)| * (-l u / (u - l)) summed over the rows (lambda = the coefficient of the
    unit's activation in the back-substitution; Bunel et al. 2020). (Filtered smart branching, trying the best
    few units by bounding their children, needed 2-18x more subdomains on mnistfc 256x4 than this score; 20
    Adam steps per batch needed 6x fewer than 10 steps; step sizes 0.05 for alpha and 0.1 for beta were the
    best of those tried, 0.02 - 0.1 and 0.02 - 0.4.) The search also proposes candidate counterexamples:
    the input corner that minimises a subdomain's final linear bound.
  * CERTIFY: a subdomain whose search bound is positive is re-bounded in float64 with outward rounding by
    certify.bounds.crown.backward_lower_bound (relaxations from certify.bounds.activations.relax, the split
    multipliers as `layer_terms`), with its alpha and beta rounded to float32 (the witness stores exactly those
    values). Only then is it a proven leaf; otherwise it is split further.
The two children of a split cover their parent, so when every leaf is proven the objective is > 0 on the box;
the leaves (split paths, rows, alphas, betas) form the witness of /tmp/plan/WITNESS.md. Nothing depends on the
branching heuristic or the optimisation for soundness.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from certify.bounds.activations import relax
from certify.bounds.alpha_crown import RootBound, SearchChain, search_lines
from certify.bounds.crown import backward_lower_bound
from certify.bounds.network import AffineNetwork
from certify.bounds.requirements import require_chain, require_relu
from certify.bounds.sets import InputSet


@dataclass
class BabResult:
    """Outcome for the conjunctions given. proven: every leaf certified; lower: the least certified leaf bound
    when proven, else the least search bound of the last batch; domains: subdomains bounded; open: leaves left;
    depth: the deepest split path. leaves (when proven): per conjunction (its index among those given), the
    witness arrays of WITNESS.md ("depth", "splits" (layer, unit, sign), "betas", "row", "alphas"). candidates: input points
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


def _batch_set(input_set: InputSet, size: int) -> InputSet:
    return InputSet(input_set.center.expand(size, -1), input_set.eps.expand(size), input_set.p, input_set.lo, input_set.hi)


class _Search:
    """Search-stage bounds of subdomains in reduced coordinates: t indexes the root-unstable units U_0, U_1, ...
    (concatenated); splits [B, T] int8 (+1 active, -1 inactive, 0 free), alpha / beta [B, R, T]."""

    def __init__(self, chain: SearchChain, root: RootBound, rows: Tensor, consts: Tensor):
        self.chain, self.rows, self.consts = chain, rows, consts  # rows [C, R, m], consts [C, R] in the chain's dtype
        dtype = chain.centre.dtype
        self.unstable = root.unstable
        self.offsets = [0]
        for u in root.unstable:
            self.offsets.append(self.offsets[-1] + u.numel())
        self.base, self.up_slope, self.up_icpt = [], [], []
        for (lo, hi), u in zip(root.boxes, root.unstable):
            lo, hi = lo.to(dtype), hi.to(dtype)
            self.base.append((lo >= 0).to(dtype))  # stable units: slope 1 (active) or 0; 0 on U
            _, slope, icpt = search_lines(lo[u], hi[u], torch.zeros_like(lo[u]))  # the chord of each unstable unit
            self.up_slope.append(slope)
            self.up_icpt.append(icpt)

    @property
    def size(self) -> int:
        return self.offsets[-1]

    def layer_of(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(hidden layer, unit index) of reduced indices t."""
        offsets = torch.tensor(self.offsets, device=t.device)
        layer = torch.bucketize(t, offsets[1:], right=True)
        units = torch.cat(self.unstable) if self.size else torch.zeros(0, dtype=torch.long, device=t.device)
        return layer, units[t]

    def bound(self, splits: Tensor, alpha: Tensor, beta: Tensor, conj: Tensor, record: bool = False):
        """Search bounds [B, R] of g (module docstring) for subdomains of the conjunctions conj [B]; with
        record, also the coefficients [B, R, |U_j|] of each layer's unstable activations and the final input
        coefficients [B, R, n_0]."""
        chain = self.chain
        s = splits.to(alpha.dtype)[:, None, :]
        free, act = (s == 0).to(alpha.dtype), (s > 0).to(alpha.dtype)
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
            value = value + (neg * (f * self.up_icpt[j])).sum(-1)
            new = (lam_u - neg) * (f * alpha[..., sl] + act[..., sl]) + neg * (f * self.up_slope[j] + act[..., sl])
            new = new - beta[..., sl] * s[..., sl]
            lam = (lam * self.base[j]).index_add(-1, units, new)
            value = value + lam @ chain.biases[j]
            lam = lam @ chain.weights[j]
        value = value + lam @ chain.centre - lam.abs() @ chain.radius
        return (value, coefficients, lam) if record else value


def _optimise(search: _Search, splits: Tensor, alpha: Tensor, beta: Tensor, conj: Tensor, iterations: int, lr: float,
              lr_beta: float, betas: tuple[float, float] = (0.9, 0.999)):
    """Adam (Kingma & Ba 2015) on (alpha, beta) for a batch, with step sizes lr (alpha) and lr_beta (beta) and
    projection onto alpha in [0, 1], beta >= 0;
    per (subdomain, row) the best iterate is kept, and a subdomain leaves the batch once a row is positive
    (the working tensors are compacted, the steps spent on the others). Returns (best search bounds [B, R],
    alpha, beta)."""
    best_alpha, best_beta = alpha.detach().clone(), beta.detach().clone()
    with torch.no_grad():
        best = search.bound(splits, best_alpha, best_beta, conj)
    idx = torch.nonzero(best.amax(1) <= 0).reshape(-1)
    if iterations <= 0 or idx.numel() == 0:
        return best, best_alpha, best_beta
    # compact working state of the subdomains still open: point, best point, best value, Adam moments
    work = {"a": best_alpha[idx], "b": best_beta[idx], "best_a": best_alpha[idx], "best_b": best_beta[idx],
            "best": best[idx], "splits": splits[idx], "conj": conj[idx]}
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
        a = work["a"].requires_grad_(True)
        b = work["b"].requires_grad_(True)
        value = search.bound(work["splits"], a, b, work["conj"])
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
            value = search.bound(work["splits"], work["a"], work["b"], work["conj"])
            better = value > work["best"]
            work["best"] = torch.where(better, value, work["best"])
            work["best_a"] = torch.where(better[:, :, None], work["a"], work["best_a"])
            work["best_b"] = torch.where(better[:, :, None], work["b"], work["best_b"])
            retire(torch.zeros(idx.numel(), dtype=torch.bool, device=idx.device))
    return best, best_alpha, best_beta


def certified_leaf_bounds(
    net: AffineNetwork, input_set: InputSet, root: RootBound, rows: Tensor, consts: Tensor,
    splits: Tensor, alpha: Tensor, beta: Tensor,
) -> Tensor:
    """CERTIFY: rigorous float64 lower bounds [P, R] of g on P subdomains (module docstring): root boxes clamped
    by splits [P, T], slopes alpha [P, R, T] and multipliers beta [P, R, T] (taken as float32 values, clamped to
    [0, 1] and >= 0), by certify.bounds.crown.backward_lower_bound. rows [P or 1, R, m], consts [P or 1, R]."""
    count = splits.shape[0]
    alpha = alpha.to(torch.float32).to(torch.float64)
    beta = beta.to(torch.float32).to(torch.float64).clamp(min=0)
    rels, boxes, terms = [], [], {}
    offset = 0
    for j, ((lo, hi), units) in enumerate(zip(root.boxes, root.unstable)):
        sl = slice(offset, offset + units.numel())
        offset += units.numel()
        s = splits[:, sl].to(torch.float64)
        lo = lo[None].expand(count, -1).clone()
        hi = hi[None].expand(count, -1).clone()
        lo[:, units] = torch.where(s > 0, lo[:, units].clamp(min=0), lo[:, units])
        hi[:, units] = torch.where(s < 0, hi[:, units].clamp(max=0), hi[:, units])
        full = torch.zeros(count, alpha.shape[1], lo.shape[1], dtype=torch.float64, device=lo.device)
        full[..., units] = alpha[..., sl]
        rels.append(relax(net.activations[j], lo[:, None, :], hi[:, None, :], alpha=full))
        boxes.append((lo[:, None, :], hi[:, None, :]))
        term = torch.zeros_like(full)
        term[..., units] = -beta[..., sl] * s[:, None, :]
        terms[j] = term
    with torch.no_grad():
        return backward_lower_bound(net, _batch_set(input_set, count), net.depth - 1,
                                    rows.to(torch.float64).expand(count, -1, -1),
                                    rels, boxes, const=consts.to(torch.float64).expand(count, -1), layer_terms=terms)


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


def _branch(coefficients: list[Tensor], search: _Search, splits: Tensor) -> tuple[Tensor, Tensor]:
    """BaBSR-like branching (module docstring) from the recorded coefficients of search.bound: the free unit
    with the largest intercept score per subdomain, (reduced index [B], whether it has a free unit [B])."""
    with torch.no_grad():
        scores = torch.cat([(-c.clamp(max=0)).sum(1) * icpt for c, icpt in zip(coefficients, search.up_icpt)], dim=1)
        free = splits == 0
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
) -> BabResult:
    """Prove, for each of C conjunctions c, min over the box of max_r (rows[c, r] . z_L + consts[c, r]) > 0
    (module docstring), all in one search (their subdomains share the batches): rows [C, R, m], consts [C, R],
    padded rows marked by consts = -inf (never prove anything); alpha [C, R, T] the starting slopes (the root's
    final ones). Stops at `deadline` (perf_counter time), at a candidate counterexample, or when a subdomain has
    no free unit left; UnsupportedError for a network that is not a ReLU chain."""
    require_relu(net, "branch and bound")
    require_chain(net, "branch and bound")
    start = time.perf_counter()
    valid = torch.isfinite(consts)  # [C, R]
    consts = torch.where(valid, consts, torch.full_like(consts, -1e30))
    chain = SearchChain.build(net, input_set, dtype)
    search = _Search(chain, root, rows.to(dtype), consts.to(dtype))
    n_conj, n_rows, size = rows.shape[0], rows.shape[1], search.size
    dev = rows.device  # the search runs where the network and the property are (CPU or GPU)
    pool = [{
        "splits": torch.zeros(n_conj, size, dtype=torch.int8, device=dev),
        "alpha": alpha.to(dtype).clone(),
        "beta": torch.zeros(n_conj, n_rows, size, dtype=dtype, device=dev),
        "conj": torch.arange(n_conj, device=dev),
        "path": torch.zeros(n_conj, 0, dtype=torch.int32, device=dev),  # split codes +-(t + 1), root to leaf, then 0s
        "depth": torch.zeros(n_conj, dtype=torch.long, device=dev),
    }]
    leaves: list[tuple[Tensor, ...]] = []  # (conj, path, row, alpha [T], beta [T]) per proven batch
    bounded, depth, proved, worst = 0, 0, float("inf"), -float("inf")
    notes: list[str] = []

    def result(proven: bool, lower: float, cands: Tensor | None = None) -> BabResult:
        left = sum(p["splits"].shape[0] for p in pool)
        trees = {c: _witness(search, [tuple(t[m] for t in leaf[1:]) for leaf in leaves for m in [leaf[0] == c]])
                 for c in range(n_conj)} if proven else None
        return BabResult(proven, lower, bounded, left, time.perf_counter() - start, depth, trees, cands, notes)

    while pool:
        if time.perf_counter() > deadline:
            return result(False, worst)
        dom = _take(pool, batch)
        splits, conj = dom["splits"], dom["conj"]
        value, a, b = _optimise(search, splits, dom["alpha"], dom["beta"], conj, iterations, lr, lr_beta)
        bounded += splits.shape[0]
        done = torch.zeros(splits.shape[0], dtype=torch.bool, device=dev)
        hopeful = torch.nonzero(value.amax(1) > 0).reshape(-1)
        if hopeful.numel():
            h = hopeful
            exact = certified_leaf_bounds(net, input_set, root, rows[conj[h]], consts[conj[h]], splits[h], a[h], b[h])
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
        splits, a, b, conj = splits[todo], a[todo], b[todo], conj[todo]
        path, levels = dom["path"][todo], dom["depth"][todo]
        with torch.no_grad():
            _, coefficients, lam_x = search.bound(splits, a, b, conj, record=True)
            corner = chain.centre - lam_x.sign() * chain.radius  # [B, R, n0]: minimiser of each row's linear bound
            y = net.forward(corner.reshape(-1, corner.shape[-1]).to(torch.float64)).to(dtype).reshape(corner.shape[0], n_rows, -1)
            viol = torch.einsum("brm,bsm->brs", y, search.rows[conj]) + search.consts[conj][:, None, :]
            viol = torch.where(valid[conj][:, None, :], viol, torch.full_like(viol, -float("inf")))
            hit = (viol.amax(-1) <= 0) & valid[conj]  # every row of the conjunction <= 0 at a real row's corner
            if bool(hit.any()):
                return result(False, worst, corner[hit].to(torch.float64))
        chosen, has_free = _branch(coefficients, search, splits)
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
        pool.append({"splits": kids, "alpha": torch.cat([a, a]), "beta": torch.cat([b, b]), "conj": torch.cat([conj, conj]),
                     "path": kid_path, "depth": levels + 1})
        depth = max(depth, int(levels.max()) + 1)
    return result(True, proved)


def _witness(search: _Search, leaves: list) -> dict:
    """The leaves (path, row, alpha, beta) in WITNESS.md's arrays for one conjunction."""
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
