"""Independent re-check of property certificates (issue 12): the claims "property-holds" (N satisfies no
conjunction of a VNN-LIB counterexample formula anywhere in the input box) and "property-violated" (a stored
point of the box is mapped into the counterexample region by the model as run and by N). It imports no
bound code (certify.bounds, certify.attacks): the network is the checker's own translation
(`certify.certificates.semantics.translate`), every number is re-derived here, in float64 with outward
rounding.

The network (the graph IR of the translation; ReLU or LeakyReLU with slope a in [0, 1] for "property-holds",
any activation of the translation for "property-violated"):

    h_0 = x,  z_k = W_k h_k + b_k + sum_{j in skips[k]} S_kj h_j,  h_{k+1} = relu(z_k) (k < L-1),  y = z_{L-1}

(below, relu stands for sigma(z) = max(z, a z), convex: lower lines of slope in [a, 1] through 0, upper chord).

The lower bound. For ANY row vectors g_k (k = 0 .. top, g_top = c, the objective) the identity

    c . z_top = sum_k g_k . b_k + Q_0 . x + sum_{j=1..top} (Q_j . relu(z_{j-1}) - g_{j-1} . z_{j-1}),
    Q_j = sum_{k reads h_j} g_k A_kj      (A_kj = W_k when j = k, else S_kj)

holds exactly, so over a region where each z_{j-1} lies in a box [l, u] and x in the input box,
c . z_top >= sum_k g_k . b_k + min_x Q_0 . x + sum_{j, i} min_{z in [l_i, u_i]} (Q_ji relu(z) - g_{j-1,i} z).
Each one-dimensional minimum is attained at l, u or 0 (a piecewise-linear function), so it is computed
exactly, up to outward rounding (Q_j is enclosed in an interval: q sigma(z) is taken at its worst end). Which g is used decides only how good the bound is, never whether it is
valid: here g comes from a CROWN back-substitution (Zhang et al. 2018) with the witness's lower ReLU
slopes alpha and split multipliers beta (beta-CROWN, Wang et al. 2021: the coefficient of a split unit's
z gains -beta s), g_{j-1} = Q_j^+ alpha' + Q_j^- (sigma(u) - sigma(l))/(u - l) - beta s with lower slope
alpha' = a + (1 - a) alpha (alpha for relu), computed in plain float64. The bound is
never lower than the relaxation's value for the same g (the relaxation minimises the same terms over a
larger set), and a split is taken into account exactly by its clamped box.

Outward rounding (float64, round-to-nearest hardware): a correctly rounded product or sum is within half
an ulp of the exact value, so `nextafter` towards -inf / +inf gives a rigorous bound (subnormal results
included); a dot product or matrix product of n terms errs by at most gamma_n |a| . |b| + n eta (Higham,
Accuracy and Stability, section 3.1, with underflow; gamma_n = n u / (1 - n u), u = 2^-53, eta = 2^-1074),
enclosed as [fl(ab) - E, fl(ab) + E] with E = 2 gamma_{n+2} fl(|a||b|) + 4 (n + 2) eta, itself rounded up.
Exact dyadic arithmetic (relaxation_check.Exact) is not used: measured on the mnistfc 784-256x6 network, the
exact back-substitution of 16 of the 512 rows of the second layer's box takes 0.9 s (about 30 s for that
layer, minutes for the six root boxes), while this float64 re-check takes about 2 s for the root boxes and
0.5 s for 576 leaves.

The witness of "property-holds" (format "certify.relu-split-witness/2" or /1, produced by certify.bounds.property's
`PropertyBound.witness`, or by the issuer's plain-CROWN fallback for ReLU graphs), all arrays as certificate
array records:

* "unstable": per hidden layer j, the sorted unit indices U_j whose slopes are listed (others: slope 0);
* "root_alphas": per hidden layer k, a list over j < k of slopes [2 n_k, |U_j|]: the root box of z_k is the
  back-substitution bound of +-e_i (row i: lower, row n_k + i: upper) with those slopes on the root boxes
  below (computed here, layer by layer, from the input box; nothing else is read);
* "conjunctions": per conjunction i of the formula, its split tree: "depth" [leaves] (number of splits per
  leaf), "splits" [sum depth, 3] rows (layer, unit, sign: +1 z >= 0, -1 z <= 0) leaf after leaf in
  root-to-leaf order, "betas" [sum depth] (>= 0), "row" [leaves] (the row of C_i the leaf proves), "alphas"
  [leaves, sum_j |U_j|].

Checked: every slope in [0, 1], every beta >= 0 (a witness outside these ranges is refused as malformed,
although any value would give a valid bound here), every index in range, and that each conjunction's leaves
form a COMPLETE split tree (a set of leaves sharing a prefix is complete iff it is one leaf ending there, or
all continue with the same (layer, unit), both signs occur, and both sign groups are complete). A leaf's
boxes, layer by layer: the root box of layer k; with format "certify.relu-split-witness/2", where the leaf
has a split below layer k, intersected with the bound of +-e_i for each i in U_k with the slopes of those rows
in root_alphas[k] on the leaf's own boxes below (valid wherever the leaf's splits hold, as its boxes below
are); then clamped by its splits at layer k (+1: l := max(l, 0); -1: u := min(u, 0)). (Format 1: no
refinement, the root boxes clamped.) Leaves with the same splits below layer k share their boxes below k and
hence their refined box of layer k, computed once. A leaf with some l > u is empty (no input satisfies its
splits); every other leaf needs a lower bound > 0 of
(C_i y - d_i)_row over the input box. Then every point of the box lies in some leaf of every tree, where
one row of each conjunction is > 0: no point satisfies any conjunction. The re-derived value is the least
leaf bound.

"property-violated": the point (float64, exactly a value of the model's dtype) lies in the box; the model as
run (own dtype and device) and N (float64, with a rigorous forward error bound e) give outputs y; the value
is max_i min_r (d_i - C_i y - |C_i| t)_r, the smaller for the two outputs, with t = e for N (rigorous) and,
for the model, t = 2 |y_model - y_N| + 8 u max |y_model| (u its unit roundoff): a rounding tolerance, twice
the model's observed deviation from N, not a proof about other implementations of the model (a worst-case
forward error bound in float32 is ~0.4 on the mnistfc nets, larger than most violations); it must be > 0,
else the claim is refused by its issuer and invalid here.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from certify.certificates import semantics
from certify.certificates._common import Invalid
from certify.certificates.claims import FUNCTION_DESCRIPTION, Claim
from certify.certificates.document import PropertyCertificate, decode_array
from certify.certificates.relu_graph import (Box, GraphNet, box_support, down, graph_of, lower_bound, require_finite,
                                               signed_units, sum_up, up)

WITNESS_FORMAT = "certify.relu-split-witness/1"  # each leaf's boxes: the root boxes clamped by its splits
REFINED_WITNESS_FORMAT = "certify.relu-split-witness/2"  # each leaf's boxes refined (`leaf_boxes`)
CHUNK = 256  # rows bounded at once (memory: rows x widest layer)
MAX_PROPERTY_BYTES = 64 * 2**20  # a recorded VNN-LIB path is re-read only up to this size


def root_boxes(net: GraphNet, box: Box, unstable: list[np.ndarray], root_alphas: list[list[np.ndarray]]) -> list[Box]:
    """Boxes of z_0 .. z_{K-1}, K = len(root_alphas) (all hidden layers for a witness): layer by layer, +-e_i
    bounded with the slopes root_alphas[k][j] [2 n_k, |U_j|] on the boxes below."""
    boxes: list[Box] = []
    for k in range(len(root_alphas)):
        width = net.widths[k]
        lows, highs = [], []
        for start in range(0, width, CHUNK // 2):
            units = np.arange(start, min(width, start + CHUNK // 2))
            rows, alphas = unit_rows(net, unstable, root_alphas, k, units)
            bound = lower_bound(net, k, rows, np.zeros(rows.shape[0]), boxes, box_support(*box), alphas, [None] * k)
            lows.append(bound[: units.size])
            highs.append(-bound[units.size:])
        boxes.append((np.concatenate(lows)[None], np.concatenate(highs)[None]))
    return boxes


def unit_rows(net: GraphNet, unstable: list[np.ndarray], root_alphas: list[list[np.ndarray]], k: int,
              units: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The rows +e_i then -e_i of layer k for i in `units` [2 |units|, n_k] and their slopes in root_alphas[k] on
    each layer j < k [2 |units|, n_j] (0 off U_j)."""
    picked = np.concatenate([units, net.widths[k] + units])
    return signed_units(net.widths[k], units), [scatter(root_alphas[k][j][picked], unstable[j], net.widths[j])
                                                 for j in range(k)]


def scatter(values: np.ndarray, units: np.ndarray, width: int) -> np.ndarray:
    """Slopes [..., width]: `values` [..., |units|] at the listed units, 0 elsewhere."""
    out = np.zeros(values.shape[:-1] + (width,))
    out[..., units] = values
    return out


# ------------------------------------------------------------------ the witness

@dataclass
class Tree:
    splits: list[np.ndarray]  # per leaf [depth, 3] int (layer, unit, sign)
    betas: list[np.ndarray]  # per leaf [depth]
    rows: np.ndarray  # [leaves] int
    alphas: np.ndarray  # [leaves, sum |U_j|]


@dataclass
class Witness:
    unstable: list[np.ndarray]
    root_alphas: list[list[np.ndarray]]
    trees: list[Tree]
    refined: bool = False  # version 2: each leaf's boxes are refined (`leaf_boxes`)


def _ints(a: np.ndarray, where: str) -> np.ndarray:
    if not np.array_equal(a, np.round(a)) or (a.size and np.abs(a).max() > 2**52):
        raise Invalid(f"witness {where} must hold integers")
    return a.astype(np.int64)


def _slopes(a: np.ndarray, where: str) -> np.ndarray:
    if not ((a >= 0) & (a <= 1)).all():
        raise Invalid(f"witness {where}: a lower ReLU slope outside [0, 1]")
    return a


def read_witness(witness: dict, net: GraphNet, conjunctions: list[tuple[np.ndarray, np.ndarray]],
                 decode: Callable[[Any, str], np.ndarray]) -> Witness:
    """The witness's arrays, every index and range checked (module doc); Invalid names the first fault."""
    if witness.get("format") not in (WITNESS_FORMAT, REFINED_WITNESS_FORMAT):
        raise Invalid(f"witness format {witness.get('format')!r} is neither {WITNESS_FORMAT!r} nor {REFINED_WITNESS_FORMAT!r}")
    hidden = net.widths[:-1]
    records = witness["unstable"]
    if not isinstance(records, list) or len(records) != len(hidden):
        raise Invalid(f"witness unstable: {len(hidden)} hidden layers expected")
    unstable = []
    for j, rec in enumerate(records):
        units = _ints(decode(rec, f"unstable[{j}]").reshape(-1), f"unstable[{j}]")
        if units.size and (units.min() < 0 or units.max() >= hidden[j] or (np.diff(units) <= 0).any()):
            raise Invalid(f"witness unstable[{j}]: units must be sorted, distinct and in [0, {hidden[j]})")
        unstable.append(units)
    roots = witness["root_alphas"]
    if not isinstance(roots, list) or len(roots) != len(hidden):
        raise Invalid(f"witness root_alphas: {len(hidden)} layers expected")
    root_alphas: list[list[np.ndarray]] = []
    for k, per_layer in enumerate(roots):
        if not isinstance(per_layer, list) or len(per_layer) != k:
            raise Invalid(f"witness root_alphas[{k}]: one array per layer below ({k}) expected")
        layer = []
        for j, rec in enumerate(per_layer):
            a = _slopes(decode(rec, f"root_alphas[{k}][{j}]"), f"root_alphas[{k}][{j}]")
            if a.shape != (2 * hidden[k], unstable[j].size):
                raise Invalid(f"witness root_alphas[{k}][{j}] has shape {list(a.shape)}, expected [{2 * hidden[k]}, {unstable[j].size}]")
            layer.append(a)
        root_alphas.append(layer)
    entries = witness["conjunctions"]
    if not isinstance(entries, list) or len(entries) != len(conjunctions):
        raise Invalid(f"witness conjunctions: one split tree per conjunction ({len(conjunctions)}) expected")
    total_unstable = sum(u.size for u in unstable)
    trees = []
    for i, (entry, (c, _)) in enumerate(zip(entries, conjunctions)):
        if not isinstance(entry, dict) or set(entry) != {"depth", "splits", "betas", "row", "alphas"}:
            raise Invalid(f"witness conjunctions[{i}] must have exactly depth, splits, betas, row, alphas")
        where = f"conjunctions[{i}]"
        depth = _ints(decode(entry["depth"], f"{where}.depth").reshape(-1), f"{where}.depth")
        splits = _ints(decode(entry["splits"], f"{where}.splits"), f"{where}.splits").reshape(-1, 3)
        betas = decode(entry["betas"], f"{where}.betas").reshape(-1)
        rows = _ints(decode(entry["row"], f"{where}.row").reshape(-1), f"{where}.row")
        alphas = _slopes(decode(entry["alphas"], f"{where}.alphas"), f"{where}.alphas")
        leaves = depth.size
        if leaves == 0 or (depth < 0).any() or splits.shape[0] != int(depth.sum()) or betas.shape[0] != splits.shape[0]:
            raise Invalid(f"witness {where}: depth, splits and betas do not fit together")
        if rows.shape != (leaves,) or alphas.shape != (leaves, total_unstable):
            raise Invalid(f"witness {where}: row [{leaves}] and alphas [{leaves}, {total_unstable}] expected")
        if (betas < 0).any():
            raise Invalid(f"witness {where}: a split multiplier beta < 0")
        if rows.min() < 0 or rows.max() >= c.shape[0]:
            raise Invalid(f"witness {where}: a leaf's row is not a row of C (it has {c.shape[0]})")
        layers, units, signs = splits[:, 0], splits[:, 1], splits[:, 2]
        if splits.size and (layers.min() < 0 or layers.max() >= len(hidden) or units.min() < 0
                            or (units >= np.asarray(hidden)[np.clip(layers, 0, len(hidden) - 1)]).any()
                            or not np.isin(signs, (-1, 1)).all()):
            raise Invalid(f"witness {where}: a split names no hidden unit or has a sign other than +1 / -1")
        ends = np.cumsum(depth)
        per_leaf = np.split(splits, ends[:-1])
        tree = Tree(per_leaf, np.split(betas, ends[:-1]), rows, alphas)
        if not complete(tree.splits):
            raise Invalid(f"witness {where}: the leaves do not form a complete split tree (a region of the box "
                          "is covered by no leaf)")
        trees.append(tree)
    return Witness(unstable, root_alphas, trees, witness["format"] == REFINED_WITNESS_FORMAT)


def complete(leaves: list[np.ndarray]) -> bool:
    """Whether leaves (each [depth, 3] splits in root-to-leaf order) form a complete split tree (module doc)."""
    stack = [(list(range(len(leaves))), 0)]
    while stack:
        members, level = stack.pop()
        if len(members) == 1 and leaves[members[0]].shape[0] == level:
            continue
        if any(leaves[m].shape[0] == level for m in members):
            return False
        heads = {(int(leaves[m][level, 0]), int(leaves[m][level, 1])) for m in members}
        if len(heads) != 1:
            return False
        plus = [m for m in members if leaves[m][level, 2] == 1]
        minus = [m for m in members if leaves[m][level, 2] == -1]
        if not plus or not minus:
            return False
        stack += [(plus, level + 1), (minus, level + 1)]
    return True


def leaf_boxes(net: GraphNet, box: Box, witness: Witness, roots: list[Box], leaves: list[np.ndarray]) -> list[Box]:
    """The boxes [leaves, n_k] of every hidden layer for leaves (each [depth, 3] splits), module doc: the root
    boxes clamped by the splits (version 1) or, version 2, refined layer by layer. Leaves with the same splits
    below layer k share their boxes below k, hence their refined box of layer k: it is computed once per group."""
    count = len(leaves)
    lows = [np.repeat(lo, count, 0) for lo, _ in roots]
    highs = [np.repeat(hi, count, 0) for _, hi in roots]
    splits = np.concatenate(leaves) if count else np.zeros((0, 3), dtype=np.int64)
    owner = np.repeat(np.arange(count), [leaf.shape[0] for leaf in leaves])
    empty = np.zeros(count, dtype=bool)
    for k, units in enumerate(witness.unstable):
        if witness.refined and k > 0 and units.size:
            keys = [np.unique(leaf[leaf[:, 0] < k], axis=0).tobytes() for leaf in leaves]
            _, first, group = np.unique(np.array(keys, dtype=object), return_index=True, return_inverse=True)
            group = group.reshape(-1)
            split_below = np.array([bool(np.any(leaves[f][:, 0] < k)) for f in first])
            todo = np.flatnonzero(split_below & ~empty[first])  # groups without a split below k keep the root box
            rows, alphas = unit_rows(net, witness.unstable, witness.root_alphas, k, units)
            group_lo = np.full((first.size, units.size), -np.inf)
            group_hi = np.full((first.size, units.size), np.inf)
            step = max(1, CHUNK * 4 // rows.shape[0])
            for start in range(0, todo.size, step):
                part = todo[start:start + step]
                reps = first[part]
                below = [(np.repeat(lows[j][reps], rows.shape[0], 0), np.repeat(highs[j][reps], rows.shape[0], 0))
                         for j in range(k)]
                bound = lower_bound(net, k, np.tile(rows, (reps.size, 1)), np.zeros(reps.size * rows.shape[0]), below,
                                    box_support(*box), [np.tile(a, (reps.size, 1)) for a in alphas],
                                    [None] * k).reshape(reps.size, -1)
                group_lo[part], group_hi[part] = bound[:, :units.size], -bound[:, units.size:]
            lows[k][:, units] = np.maximum(lows[k][:, units], group_lo[group])
            highs[k][:, units] = np.minimum(highs[k][:, units], group_hi[group])
        at = splits[:, 0] == k
        plus, minus = at & (splits[:, 2] > 0), at & (splits[:, 2] < 0)
        np.maximum.at(lows[k], (owner[plus], splits[plus, 1]), 0.0)
        np.minimum.at(highs[k], (owner[minus], splits[minus, 1]), 0.0)
        empty |= (lows[k] > highs[k]).any(axis=1)
    return list(zip(lows, highs))


def prove_holds(net: GraphNet, box: Box, conjunctions: list[tuple[np.ndarray, np.ndarray]], witness: Witness) -> float:
    """The least leaf bound (> 0) over every conjunction's tree; Invalid names the first leaf not proven."""
    net.require_relu()
    if box[0].shape != (net.num_inputs,) or conjunctions[0][0].shape[1] != net.widths[-1]:
        raise Invalid(f"the property has {box[0].size} inputs and {conjunctions[0][0].shape[1]} outputs, N "
                      f"{net.num_inputs} and {net.widths[-1]}")
    roots = root_boxes(net, box, witness.unstable, witness.root_alphas)
    offsets = np.concatenate([[0], np.cumsum([u.size for u in witness.unstable])])
    top = net.depth - 1
    least = math.inf
    for i, ((c, d), tree) in enumerate(zip(conjunctions, witness.trees)):
        every = leaf_boxes(net, box, witness, roots, tree.splits)
        leaves = len(tree.splits)
        for start in range(0, leaves, CHUNK):
            idx = np.arange(start, min(leaves, start + CHUNK))
            boxes = [(lo[idx], hi[idx]) for lo, hi in every]
            betas = [np.zeros((idx.size, w)) for w in net.widths[:-1]]
            for row, leaf in enumerate(idx):
                for (layer, unit, sign), beta in zip(tree.splits[leaf], tree.betas[leaf]):
                    betas[layer][row, unit] -= beta * sign
            empty = np.zeros(idx.size, dtype=bool)
            for lo, hi in boxes:
                empty |= (lo > hi).any(axis=1)
            keep = np.flatnonzero(~empty)
            if keep.size == 0:
                continue
            alphas = [scatter(tree.alphas[idx][:, offsets[j]:offsets[j + 1]], witness.unstable[j], net.widths[j])[keep]
                      for j in range(top)]
            rows = c[tree.rows[idx][keep]]
            const = -d[tree.rows[idx][keep]]
            bound = lower_bound(net, top, rows, const, [(lo[keep], hi[keep]) for lo, hi in boxes], box_support(*box), alphas,
                                [b[keep] for b in betas])
            worst = int(np.argmin(bound))
            if not bound[worst] > 0:
                raise Invalid(f"conjunction {i}, leaf {int(idx[keep][worst])}: the re-derived lower bound "
                              f"{bound[worst]:.6g} of row {int(tree.rows[idx][keep][worst])} is not > 0")
            least = min(least, float(bound[worst]))
    if not math.isfinite(least):
        raise Invalid("every leaf is empty: the split trees exclude the whole box, which is impossible for a non-empty box")
    return least


def counterexample_slack(model: nn.Module, net: GraphNet, point: np.ndarray, input_shape: tuple[int, ...],
                         conjunctions: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """(slack of the model as run, rigorous slack of N) at a point: max_i min_r (d_i - C_i y - |C_i| t)_r with
    t the rounding tolerance of each output (module doc)."""
    dtype, device = _dtype_device(model)
    as_run = torch.as_tensor(point, dtype=torch.float64).to(dtype)
    if not np.array_equal(as_run.double().numpy(), point):
        raise Invalid(f"the counterexample is not a value of the model's dtype {dtype} (it would be rounded)")
    with torch.no_grad():
        y_model = model(as_run.reshape(1, *input_shape).to(device)).detach().to("cpu", torch.float64).numpy().reshape(-1)
    if not np.isfinite(y_model).all():
        raise Invalid("the model's output at the counterexample is not finite")
    y, e = net.forward(point.reshape(1, -1))
    # the model's tolerance: twice its observed deviation from N plus 8 units of roundoff of its largest output
    e_model = 2 * np.abs(y_model - y[0]) + 8 * (torch.finfo(dtype).eps / 2) * np.abs(y_model).max()
    slacks = []
    for out, tol in ((y_model, e_model[0]), (y[0], e[0])):
        best = -math.inf
        for c, d in conjunctions:
            high, low = up(out + tol), down(out - tol)
            reach = sum_up(np.concatenate([up(np.maximum(c, 0) * high), up(np.minimum(c, 0) * low)], axis=-1))
            best = max(best, float(np.min(down(d - reach))))
        slacks.append(best)
    require_finite(np.asarray(slacks))
    return slacks[0], slacks[1]


def _dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.get_default_dtype(), torch.device("cpu")


# ------------------------------------------------------------------ the rules and the document check

class PropertyContext:
    """What the property rules share (the attributes `checker._check_claim` reads, and the network)."""

    def __init__(self, cert: PropertyCertificate, model: nn.Module, base_dir: Path | None) -> None:
        self.cert = cert
        self.model = model.eval()
        self.base_dir = base_dir
        self.claims = {c.id: c for c in cert.claims}
        self.values: dict[str, float] = {}
        self.kinds: dict[str, str] = {}
        self.n_features = int(cert.property["inputs"])
        self.num_classes = int(cert.property["outputs"])
        self.input_shape = tuple(int(s) for s in cert.property["input_shape"])
        self.target = None
        self.net: GraphNet | None = None
        self.no_function: str | None = None

    def require_net(self) -> GraphNet:
        if self.no_function is not None:
            raise Invalid(self.no_function)
        return self.net  # type: ignore[return-value]

    def decoder(self, claim: Claim) -> Callable[[Any, str], np.ndarray]:
        return lambda record, where: decode_array(record, f"claim {claim.id} witness {where}", self.base_dir)


def property_arrays(params: dict) -> tuple[Box, list[tuple[np.ndarray, np.ndarray]]]:
    """The box and the conjunctions (C_i, d_i) of a property claim's params (validated by claims.py)."""
    arr = lambda rec: np.asarray(rec["values"], dtype=np.float64).reshape(rec["shape"])  # noqa: E731
    return (arr(params["lower"]), arr(params["upper"])), [(arr(c["C"]), arr(c["d"])) for c in params["conjunctions"]]


def _property_context(ctx: Any) -> PropertyContext:
    if not isinstance(ctx, PropertyContext):
        raise Invalid("a property claim belongs in a property certificate, not in an explanation certificate")
    return ctx


def check_property_holds(ctx: PropertyContext, claim: Claim) -> float:
    net = _property_context(ctx).require_net().require_relu()
    box, conjunctions = property_arrays(claim.params)
    witness = read_witness(claim.witness, net, conjunctions, ctx.decoder(claim))
    return prove_holds(net, box, conjunctions, witness)


def check_property_violated(ctx: PropertyContext, claim: Claim) -> float:
    net = _property_context(ctx).require_net()
    (lower, upper), conjunctions = property_arrays(claim.params)
    point = np.asarray(claim.params["counterexample"]["values"], dtype=np.float64).reshape(-1)
    if not bool(((point >= lower) & (point <= upper)).all()):
        raise Invalid("the counterexample lies outside the input box")
    model_slack, n_slack = counterexample_slack(ctx.model, net, point, ctx.input_shape, conjunctions)
    value = min(model_slack, n_slack)
    if not value > 0:
        raise Invalid(f"the point is not a counterexample with a margin beyond rounding: slack {model_slack:.6g} for the "
                      f"model as run, {n_slack:.6g} for N (both must be > 0)")
    return value


PROPERTY_RULES: dict[str, Callable[[Any, Claim], float]] = {
    "property-holds": check_property_holds,
    "property-violated": check_property_violated,
}


def _property_file(cert: PropertyCertificate, claim: Claim) -> tuple[str, str | None]:
    """(what ties the claim's box and formula to the VNN-LIB file, a problem or None)."""
    from certify.models.vnnlib import parse_vnnlib

    path, recorded = cert.property.get("path"), cert.property.get("sha256")
    if not path or not Path(path).is_file() or Path(path).stat().st_size > MAX_PROPERTY_BYTES:
        return (f"the VNN-LIB file {path!r} is not here (or not a file of at most {MAX_PROPERTY_BYTES} bytes): the "
                "claims are about the box and formula stored in them"), None
    data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != recorded:
        return "", f"the VNN-LIB file {path} does not hash to the recorded sha256 (it changed since the certificate)"
    prop = parse_vnnlib(path, data.decode())
    (lower, upper), conjunctions = property_arrays(claim.params)
    same = (np.array_equal(prop.lower, lower) and np.array_equal(prop.upper, upper) and len(prop.disjuncts) == len(conjunctions)
            and all(np.array_equal(c, c2) and np.array_equal(d, d2) for (c, d), (c2, d2) in zip(prop.disjuncts, conjunctions)))
    if not same:
        return "", f"the box or formula of claim {claim.id} differs from the one parsed from {path}"
    return f"the box and formula of claim {claim.id} are those parsed from {path} (sha256 matches)", None


def property_context(cert: PropertyCertificate, model: nn.Module, base_dir: Path | None, report: Any) -> PropertyContext | None:
    """The context the checker checks a property certificate's claim in (the model hash was checked by the
    caller), after its document checks, recorded in the checker's VerifyReport: the checker's own translation
    and conformance check at the box centre, the document's consistency (one property claim, the answer it
    supports, the property file when present). None when the claim cannot be checked at all."""
    ctx = PropertyContext(cert, model, base_dir)
    claim = cert.claims[0]
    if int(np.prod(ctx.input_shape)) != ctx.n_features:
        report.problems.append(f"property.input_shape {list(ctx.input_shape)} does not hold {ctx.n_features} inputs")
        return None
    centre = None
    if isinstance(claim.params, dict) and isinstance(claim.params.get("lower"), dict):
        try:
            (lower, upper), _ = property_arrays(claim.params)
            centre = torch.as_tensor((lower + upper) / 2).reshape(1, *ctx.input_shape)
        except (KeyError, TypeError, ValueError) as exc:
            report.problems.append(f"claim {claim.id}: the box is unreadable ({exc})")
            return None
    try:
        raw = semantics.translate(ctx.model, ctx.input_shape)
    except Exception as exc:  # noqa: BLE001 - any refusal of the translation refuses the claims
        ctx.no_function = f"the checker cannot translate the model exactly: {exc}"
    else:
        dtype, device = _dtype_device(ctx.model)
        try:
            dev, tol, passed = semantics.check_conformance(ctx.model, raw, centre.to(dtype).to(device)) if centre is not None else (math.nan, math.nan, False)
        except Exception:  # noqa: BLE001
            dev, tol, passed = math.nan, math.nan, False
        if not passed:
            ctx.no_function = f"the checker's conformance check failed: N differs from the model by {dev:.3g} > tolerance {tol:.3g}"
        else:
            report.function = f"N (the checker's own translation) conforms to the model: max deviation {dev:.3g} <= tolerance {tol:.3g}"
            try:
                ctx.net = graph_of(raw)
            except Invalid as exc:
                ctx.no_function = str(exc)
        if ctx.net is not None:
            with torch.no_grad():
                outputs = int(ctx.model(centre.to(dtype).to(device)).reshape(-1).numel())
            if outputs != ctx.num_classes:
                report.problems.append(f"property.outputs = {ctx.num_classes}, but the model has {outputs} outputs")
    if ctx.no_function is not None:
        report.function = f"no function: {ctx.no_function} (only refusals can verify)"
    expected = {"holds": ("property-holds", "certified"), "violated": ("property-violated", "certified")}.get(cert.answer)
    if expected is not None and (claim.type, claim.kind) != expected:
        report.problems.append(f"answer {cert.answer!r} needs a certified {expected[0]!r} claim, not a {claim.kind} {claim.type!r} one")
    if cert.answer == "unknown" and claim.kind != "refused":
        report.problems.append("answer 'unknown' with a claim that is not refused")
    if claim.type not in PROPERTY_RULES:
        report.problems.append(f"claim {claim.id}: a property certificate carries a property claim, not {claim.type!r}")
        return None
    if "refused" not in cert.function and cert.function.get("description") != FUNCTION_DESCRIPTION:
        report.problems.append("function.description is not the fixed text of what the claims are about")
    if ("refused" in cert.function or not cert.function.get("conformance", {}).get("passed", False)) and claim.kind != "refused":
        report.problems.append("the certificate's function is refused or failed its conformance check, yet its claim is not refused")
    if centre is not None:
        report.binding, problem = _property_file(cert, claim)
        if problem:
            report.problems.append(problem)
    return ctx
