"""h-Shap: hierarchical Shapley explanations (Teneggi, Luster & Sulam, "Fast Hierarchical Games for Image
Explanations", IEEE TPAMI 2022, arXiv 2104.06164, section 3 (the algorithm) and section 4 (exactness)).

The input is split recursively into a tree: a node's `gamma` children are its quadrants (gamma = 4; gamma = m^2
gives an m x m grid, gamma = 2 halves along the longer side) for images [N, C, H, W] / [N, H, W], and `gamma`
contiguous segments for vectors [N, D]. Starting from the root (the whole input), every node plays the
local game of its children,

    v(S) = f(x on the union of the children in S, reference everywhere else),   S subset of the gamma children,

with f the target's softmax probability (`score="probability"`) or logit (`score="logit"`). Its 2^gamma
coalitions are evaluated in ONE batch, and the nodes of a level, of all examples, share batches (a
level-synchronous breadth-first search). The local Shapley values of the children are

    phi_j = sum_{S not containing j} w(|S|) (v(S + j) - v(S)),   w(s) = s! (gamma - s - 1)! / gamma!,

(phi_j sums to v(all) - v(empty) = f(x_node) - f(ref) by efficiency). A child is explored further iff
phi_j > tau (absolute threshold, `relative=False`), or, with `relative=True`, iff phi_j >= the tau-th
percentile of its siblings' phi and phi_j > 0. A node whose children would have a side shorter than
`min_size` is a leaf. Only 2^gamma - 2 calls per node are new: v(empty) = f(ref) is evaluated once per
example and v(all) of a node is a singleton value of its parent's game (f(x) at the root).

Scores (a decision the paper leaves open, see DECISIONS below): the root's score is f(x) - f(ref); a node's
score is divided among its children in proportion to the positive parts of their local Shapley values,
score_j = score_node * phi_j^+ / sum_i phi_i^+. A leaf's score is spread UNIFORMLY over its entries (every
channel and pixel of the region gets score / (C * area)), so `attributions.sum()` over an example equals
the sum of its leaf scores. A node with no positive child keeps its score (it becomes a leaf); children
below the threshold take their share with them (diagnostic `pruned`), so always

    sum(leaf scores) + pruned = f(x) - f(ref)       (up to rounding),

and with tau = 0 and a monotone game (no negative phi) nothing is pruned: leaf scores sum to f(x) - f(ref).

Exactness (the paper's claims; checked by proofs_checks/hshap.py, row HSHAP). Assumption (the paper's
multiple-instance assumption, "Assumption 1"): f(x_S) = 1 iff S contains a whole instance of an important
concept, each of the k instances inside one leaf (the OR game). Then with tau = 0
  (i)   the explored leaves are exactly the leaves with a non-zero Shapley value (the concept leaves);
  (ii)  the leaf scores sum to f(x) - f(ref) = 1;
  (iii) at most 2^gamma k log_gamma(n) model calls are made for n leaves (k branches of depth log_gamma n,
        2^gamma coalitions per node), against 2^n for the flat game.
The abstract states that "under certain distributional assumptions ... h-Shap retrieves the exact Shapley
coefficients"; measured (ANCHORS 5.2, and the HSHAP row): the leaf VALUES equal the Shapley value 1/k only
for k <= 2 concepts (or when the concepts split evenly down the tree); for k = 3 the product rule gives
1/2 and 1/4 where the Shapley value is 1/3. The support and the sum are exact for every k. (The precise
statement of the paper's theorem was not checked against its full text: only the abstract was found.)

DECISIONS: (1) the proportional split of a node's score by the positive parts of phi reproduces the
reference implementation's product rule (child score = parent score x phi_child) exactly whenever the
explored local games are normalised (f(x_node) - f(ref) = 1, e.g. the OR game), never divides by a
quantity that can vanish or change sign, and keeps the sum identity above for every model. (2) Thresholds
act on the local Shapley values phi, not on the propagated scores. (3) The default reference is zeros;
pass a tensor, a number, a `Dataset` or a data set name (its training mean image, the paper's choice).
(4) With `budget` (model calls per example), a level expands the highest-scoring nodes that fit; the others
become leaves (diagnostic `truncated`). Calls are counted as rows evaluated by the model.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor, nn

from certify.errors import InvalidInputError, UsageError
from certify.explain.base import Explainer, Explanation
from certify.validation import positive_int

MAX_GAMMA = 12  # 4096 coalitions per node


def shapley_matrix(gamma: int, dtype: torch.dtype = torch.float64, device: Any = None) -> Tensor:
    """W [2^gamma, gamma] with phi = v @ W for a game v over coalitions indexed by bit masks (bit j = player j):
    W[c, j] = w(|c| - 1) if j in c, else -w(|c|), with w(s) = s! (gamma - s - 1)! / gamma!."""
    c = torch.arange(2**gamma, device=device)
    bits = ((c[:, None] >> torch.arange(gamma, device=device)) & 1).bool()
    size = bits.sum(dim=1)
    w = torch.tensor(
        [math.factorial(s) * math.factorial(gamma - s - 1) / math.factorial(gamma) for s in range(gamma)],
        dtype=dtype,
        device=device,
    )
    plus = w[(size - 1).clamp(min=0)][:, None].expand(-1, gamma)
    minus = -w[size.clamp(max=gamma - 1)][:, None].expand(-1, gamma)
    return torch.where(bits, plus, minus)


class HShap(Explainer):
    """`HShap(model, gamma=4, threshold=0.0, relative=False, min_size=1, reference=None, budget=None,
    score="probability", batch_size=4096)`; `explain`/`attribute` take `reference` (overrides the
    constructor's). See the module docstring for the algorithm, the scores and the exactness claims.

    - inputs [N, D] (segments), [N, H, W] or [N, C, H, W] (regions over H x W, all channels together);
    - gamma: children per node; vectors: any integer in [2, 12]; images: 2 or a square m^2 <= 9;
    - threshold (tau): absolute (any finite number; explore phi > tau) or, with relative=True, a percentile
      in [0, 100] of the siblings' phi;
    - min_size: the smallest side (entries) of a region; nodes whose children would be smaller are leaves;
    - reference: None (zeros), a number, a tensor broadcastable to [N, ...] (one per example or one for all),
      a `Dataset` or a data set name (the training split's mean input);
    - budget: the most model calls (rows evaluated) per example, >= 2^gamma; None: unlimited;
    - score: "probability" (softmax of the target) or "logit";
    - batch_size: the most rows per forward pass (whole nodes per batch; memory only, not the result).

    Attributions have the inputs' shape and dtype: each leaf's score spread uniformly over its entries.
    Diagnostics (per example): `calls` (model rows evaluated), `leaves`, `depth` (of the deepest leaf; root 0),
    `f_x`, `f_ref`, `pruned` (score mass of children below the threshold), `truncated` (nodes turned into
    leaves by the budget). Errors: UsageError for invalid parameters, InvalidInputError for inputs or
    references of the wrong shape."""

    method_name = "h-shap"
    explain_options = ("reference",)

    def __init__(
        self,
        model: nn.Module,
        gamma: int = 4,
        threshold: float = 0.0,
        relative: bool = False,
        min_size: int = 1,
        reference: Any = None,
        budget: int | None = None,
        score: str = "probability",
        batch_size: int = 4096,
    ) -> None:
        super().__init__(model)
        gamma = positive_int(gamma, "gamma", least=2)
        if gamma > MAX_GAMMA:
            raise UsageError(f"gamma must be at most {MAX_GAMMA} (2^gamma coalitions per node), got {gamma}")
        if not isinstance(relative, bool):
            raise UsageError(f"relative must be true or false, got {relative!r}")
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(threshold):
            raise UsageError(f"threshold must be a finite number, got {threshold!r}")
        if relative and not 0.0 <= threshold <= 100.0:
            raise UsageError(f"a relative threshold is a percentile in [0, 100], got {threshold}")
        min_size = positive_int(min_size, "min_size")
        if budget is not None:
            budget = positive_int(budget, "budget", least=2**gamma)
        if score not in ("probability", "logit"):
            raise UsageError(f"score must be 'probability' or 'logit', got {score!r}")
        batch_size = positive_int(batch_size, "batch_size")
        self.gamma, self.threshold, self.relative, self.min_size = gamma, float(threshold), relative, min_size
        self.budget, self.score, self.batch_size = budget, score, batch_size
        if isinstance(reference, str) and reference in ("zeros", "mean:zeros"):
            reference = None  # what params() records for the default, given back
        if isinstance(reference, str):
            reference = reference.removeprefix("mean:")
        self.reference = reference
        self._reference_label = self._describe(reference)
        if isinstance(reference, str):
            self.reference = self._dataset_mean(reference)

    def params(self) -> dict[str, object]:
        return {
            "gamma": self.gamma,
            "threshold": self.threshold,
            "relative": self.relative,
            "min_size": self.min_size,
            "reference": self._reference_label,
            "budget": self.budget,
            "score": self.score,
            "batch_size": self.batch_size,
        }

    # ------------------------------------------------------------------ reference handling
    @staticmethod
    def _describe(reference: Any) -> str:
        if reference is None:
            return "zeros"
        if isinstance(reference, str):
            return f"mean:{reference}"
        if isinstance(reference, numbers.Real) and not isinstance(reference, bool):
            return f"constant:{float(reference):g}"
        name = getattr(reference, "name", None)
        if isinstance(name, str) and hasattr(reference, "x_train"):
            return f"mean:{name}"
        if isinstance(reference, Tensor):
            return f"tensor{tuple(reference.shape)}"
        return type(reference).__name__

    @staticmethod
    def _dataset_mean(name: str) -> Tensor:
        from certify.errors import UnsupportedError
        from certify.models.datasets import LOADERS, load_dataset

        if name not in LOADERS:
            raise UsageError(f"reference {name!r} is neither 'zeros' nor a data set name ({', '.join(sorted(LOADERS))})")
        try:
            return load_dataset(name).x_train.mean(dim=0)
        except UnsupportedError as exc:
            raise UsageError(str(exc)) from None

    def _reference(self, reference: Any, inputs: Tensor) -> Tensor:
        """The reference as a tensor [N, ...] on the inputs' device and dtype."""
        if reference is None:
            return torch.zeros_like(inputs)
        if isinstance(reference, str):
            reference = self._dataset_mean(reference)
        elif hasattr(reference, "x_train") and isinstance(getattr(reference, "x_train"), Tensor):
            reference = reference.x_train.mean(dim=0)
        if isinstance(reference, numbers.Real) and not isinstance(reference, bool):
            if not math.isfinite(reference):
                raise UsageError(f"a constant reference must be finite, got {reference}")
            return torch.full_like(inputs, float(reference))
        if not isinstance(reference, Tensor):
            raise UsageError(
                f"reference must be None, a number, a tensor, a Dataset or a data set name; got {type(reference).__name__}"
            )
        ref = reference.detach().to(device=inputs.device, dtype=inputs.dtype)
        if ref.dim() == inputs.dim() - 1:
            ref = ref.unsqueeze(0)
        if ref.dim() != inputs.dim() or ref.shape[1:] != inputs.shape[1:] or ref.shape[0] not in (1, inputs.shape[0]):
            raise InvalidInputError(
                f"reference of shape {tuple(reference.shape)} does not match inputs {tuple(inputs.shape)}: give one "
                f"example's shape {tuple(inputs.shape[1:])}, or one reference per example"
            )
        if not bool(torch.isfinite(ref).all()):
            raise InvalidInputError("reference has non-finite values")
        return ref.expand_as(inputs).contiguous()

    # ------------------------------------------------------------------ the tree
    def _layout(self, inputs: Tensor) -> tuple[int, ...]:
        """The spatial shape (the dimensions that are split)."""
        if inputs.dim() == 2:
            return (inputs.shape[1],)
        if inputs.dim() in (3, 4):
            m = math.isqrt(self.gamma)
            if self.gamma != 2 and (m * m != self.gamma or m > 3):
                raise UsageError(f"for images gamma must be 2 (halves) or a square m^2 <= 9 (m x m grid), got {self.gamma}")
            return tuple(inputs.shape[-2:])
        raise InvalidInputError(
            f"h-Shap explains vectors [N, D] and images [N, H, W] or [N, C, H, W]; got shape {tuple(inputs.shape)}"
        )

    def _children(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Child boxes of nodes with boxes [B, d] (lo inclusive, hi exclusive): (lo [B, gamma, d],
        hi [B, gamma, d], splittable [B])."""
        g, d = self.gamma, lo.shape[1]
        side = hi - lo

        def cuts(a: Tensor, b: Tensor, m: int) -> Tensor:  # [B] -> [B, m + 1] boundaries
            return a[:, None] + ((b - a)[:, None] * torch.arange(m + 1, device=a.device)) // m

        if d == 1:
            c = cuts(lo[:, 0], hi[:, 0], g)
            return c[:, :-1, None], c[:, 1:, None], side[:, 0] // g >= self.min_size
        if g == 2:
            rows = side[:, 0] >= side[:, 1]  # split the longer side (rows on ties)
            axis = torch.where(rows, 0, 1)
            a = lo.gather(1, axis[:, None])[:, 0]
            b = hi.gather(1, axis[:, None])[:, 0]
            mid = a + (b - a) // 2
            clo = lo[:, None, :].repeat(1, 2, 1)
            chi = hi[:, None, :].repeat(1, 2, 1)
            chi[torch.arange(lo.shape[0]), 0, axis] = mid
            clo[torch.arange(lo.shape[0]), 1, axis] = mid
            return clo, chi, (b - a) // 2 >= self.min_size
        m = math.isqrt(g)
        r, c = cuts(lo[:, 0], hi[:, 0], m), cuts(lo[:, 1], hi[:, 1], m)
        ia, ib = torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij")
        ia, ib = ia.flatten().to(lo.device), ib.flatten().to(lo.device)  # child j = (row band, column band)
        clo = torch.stack([r[:, ia], c[:, ib]], dim=-1)
        chi = torch.stack([r[:, ia + 1], c[:, ib + 1]], dim=-1)
        return clo, chi, side.min(dim=1).values // m >= self.min_size

    @staticmethod
    def _inside(lo: Tensor, hi: Tensor, spatial: tuple[int, ...]) -> Tensor:
        """Membership masks [..., *spatial] of boxes lo/hi [..., d]."""
        inside = None
        for axis, size in enumerate(spatial):
            coord = torch.arange(size, device=lo.device)
            view = (1,) * axis + (size,) + (1,) * (len(spatial) - axis - 1)
            a = lo[..., axis].reshape(*lo.shape[:-1], *([1] * len(spatial)))
            b = hi[..., axis].reshape(*hi.shape[:-1], *([1] * len(spatial)))
            cur = (coord.view(view) >= a) & (coord.view(view) < b)
            inside = cur if inside is None else inside & cur
        assert inside is not None
        return inside

    def _values(self, z: Tensor, target: Tensor) -> Tensor:
        """f(z) for rows z [R, ...] and per-row targets [R], in batches of `batch_size` rows."""
        out = []
        for start in range(0, z.shape[0], self.batch_size):
            logits = self.model(z[start : start + self.batch_size])
            t = target[start : start + self.batch_size]
            if self.score == "probability":
                logits = logits.softmax(dim=1)
            out.append(logits.gather(1, t[:, None])[:, 0])
        return torch.cat(out) if out else z.new_zeros(0)

    def _explain(self, inputs: Tensor, target: Tensor, reference: Any = None) -> Explanation:
        spatial = self._layout(inputs)
        with torch.no_grad():
            x = inputs.detach()
            ref = self._reference(self.reference if reference is None else reference, x)
            attributions, diagnostics = self._search(x, ref, target, spatial)
        params = self.params()
        if reference is not None:
            params["reference"] = self._describe(reference)
        return Explanation(attributions, target, self.method_name, params, diagnostics)

    def _search(self, x: Tensor, ref: Tensor, target: Tensor, spatial: tuple[int, ...]) -> tuple[Tensor, dict[str, Tensor]]:
        n, g, device = x.shape[0], self.gamma, x.device
        d = len(spatial)
        channels_shape = x.shape[1 : x.dim() - d]  # () for [N, D] and [N, H, W]; (C,) for [N, C, H, W]
        per_area = math.prod(channels_shape) if channels_shape else 1
        W = shapley_matrix(g, torch.float64, device)
        coalitions = torch.arange(1, 2**g - 1, device=device)  # the new ones: not empty, not full
        bits = ((coalitions[:, None] >> torch.arange(g, device=device)) & 1).bool()  # [K, g]
        bits_ext = torch.cat([bits, torch.zeros(bits.shape[0], 1, dtype=torch.bool, device=device)], dim=1)
        per_node = 2**g - 2

        base = self._values(torch.cat([x, ref]), torch.cat([target, target])).double()
        f_x, f_ref = base[:n], base[n:]
        calls = torch.full((n,), 2, dtype=torch.long, device=device)
        spatial_attr = torch.zeros((n, *spatial), dtype=torch.float64, device=device)
        leaves = torch.zeros(n, dtype=torch.long, device=device)
        depth = torch.zeros(n, dtype=torch.long, device=device)
        pruned = torch.zeros(n, dtype=torch.float64, device=device)
        truncated = torch.zeros(n, dtype=torch.long, device=device)

        # the frontier: one row per node
        ex = torch.arange(n, device=device)
        lo = torch.zeros((n, d), dtype=torch.long, device=device)
        hi = torch.tensor(spatial, dtype=torch.long, device=device).repeat(n, 1)
        score = f_x - f_ref
        value = f_x.clone()
        level = 0

        def paint(e: Tensor, a: Tensor, b: Tensor, s: Tensor, lvl: int) -> None:
            if e.numel() == 0:
                return
            masks = self._inside(a, b, spatial).to(torch.float64)  # [L, *spatial]
            area = masks.flatten(1).sum(dim=1)
            spatial_attr.index_add_(0, e, masks * (s / area).view(-1, *([1] * d)))
            leaves.index_add_(0, e, torch.ones_like(e))
            depth.scatter_reduce_(0, e, torch.full_like(e, lvl), reduce="amax")

        while ex.numel() > 0:
            clo, chi, splittable = self._children(lo, hi)
            expand = splittable.clone()
            if self.budget is not None:
                # per example, expand the highest-scoring splittable nodes that fit in the budget
                order = torch.argsort(torch.where(splittable, -score, math.inf), stable=True)
                order = order[torch.argsort(ex[order], stable=True)]
                e_sorted = ex[order]
                first = torch.searchsorted(e_sorted, e_sorted, right=False)
                rank = torch.arange(order.numel(), device=device) - first
                room = (self.budget - calls[e_sorted]) // per_node
                fits = torch.zeros_like(expand)
                fits[order] = rank < room
                cut = splittable & ~fits
                truncated.index_add_(0, ex[cut], torch.ones_like(ex[cut]))
                expand = splittable & fits
            paint(ex[~expand], lo[~expand], hi[~expand], score[~expand], level)
            ex, lo, hi, score, value = ex[expand], lo[expand], hi[expand], score[expand], value[expand]
            clo, chi = clo[expand], chi[expand]
            if ex.numel() == 0:
                break
            calls.index_add_(0, ex, torch.full_like(ex, per_node))

            # the local games of all nodes of this level, in whole-node batches
            b = ex.numel()
            v = torch.empty((b, 2**g), dtype=torch.float64, device=device)
            v[:, 0], v[:, -1] = f_ref[ex], value
            nodes_per_batch = max(1, self.batch_size // per_node)
            for s0 in range(0, b, nodes_per_batch):
                sl = slice(s0, min(b, s0 + nodes_per_batch))
                inside = self._inside(clo[sl], chi[sl], spatial)  # [B', g, *spatial]
                label = torch.where(inside.any(dim=1), inside.to(torch.int8).argmax(dim=1).long(), g)  # [B', *spatial]
                masks = bits_ext[:, label]  # [K, B', *spatial]
                masks = masks.transpose(0, 1).reshape(-1, *([1] * len(channels_shape)), *spatial)
                e_rows = ex[sl].repeat_interleave(bits.shape[0])
                z = ref[e_rows] + (x[e_rows] - ref[e_rows]) * masks.to(x.dtype)
                v[sl, 1:-1] = self._values(z, target[e_rows]).double().view(-1, bits.shape[0])
            phi = v @ W  # [B, g] local Shapley values
            positive = phi.clamp(min=0)
            total = positive.sum(dim=1)
            stalled = total <= 0  # no positive child: the node keeps its score, as a leaf
            paint(ex[stalled], lo[stalled], hi[stalled], score[stalled], level)
            share = torch.where(stalled[:, None], 0.0, positive / total.clamp(min=torch.finfo(total.dtype).tiny)[:, None])
            child_score = score[:, None] * share
            if self.relative:
                cutoff = torch.quantile(phi, self.threshold / 100.0, dim=1, keepdim=True)
                keep = (phi >= cutoff) & (phi > 0)
            else:
                keep = phi > self.threshold
            keep &= ~stalled[:, None]
            dropped = ~keep & ~stalled[:, None]
            pruned.index_add_(0, ex, (child_score * dropped).sum(dim=1))
            child_value = v[:, 2 ** torch.arange(g, device=device)]  # v({j}) = f(x on child j)
            rows, cols = keep.nonzero(as_tuple=True)
            ex, lo, hi = ex[rows], clo[rows, cols], chi[rows, cols]
            score, value = child_score[rows, cols], child_value[rows, cols]
            level += 1

        shape = (n, *([1] * len(channels_shape)), *spatial)
        attributions = (spatial_attr / per_area).view(shape).expand_as(x).to(x.dtype).contiguous()
        diagnostics = {
            "calls": calls,
            "leaves": leaves,
            "depth": depth,
            "f_x": f_x.to(x.dtype),
            "f_ref": f_ref.to(x.dtype),
            "pruned": pruned.to(x.dtype),
            "truncated": truncated,
        }
        return attributions, diagnostics
