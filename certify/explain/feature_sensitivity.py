"""Per-feature and per-group sensitivity: the minimal change of one feature (or one group of features) alone,
within the input domain, that flips the decision (DESIGN section 4.3, last item).

For a group S (a set of coordinates), input x of class c and domain box [lo, hi]:

    t*_S = min ||delta||_p  s.t.  m_c(x + delta) <= 0,  delta_i = 0 for i not in S,  lo <= x + delta <= hi.

Two certified outcomes per (example, group):

* **flips**: a witness delta (found by `certify.attacks.minimal_perturbation` restricted to S, batched over
  all groups) verified by a float64 forward pass; t*_S <= ||delta||_p (rounded up).
* **cannot flip alone**: the group's whole domain box B_S = {x' : x'_i = x_i off S, lo_S <= x'_S <= hi_S}
  is split into sub-boxes (`splits` per coordinate, at most `max_boxes` per group) and CROWN (or IBP)
  proves every pair margin f_c - f_j > 0 on every sub-box; the sub-boxes cover B_S, so no point of B_S
  changes the decision (t*_S = inf). Needs a network the verification layer supports and a bounded
  domain on S.

Anything else is *undecided* (no witness within the budget, and the bounds do not prove the contrary).
Examples whose margin m_c(x) <= 0 already have r* = 0 and are reported as such for every group.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from certify.attacks.minimal_perturbation import minimal_perturbation, resolve_domain
from certify.bounds.crown import margin_bounds_on_set
from certify.bounds.network import AffineNetwork, from_module
from certify.bounds.sets import InputSet
from certify.errors import CertifyError, UnsupportedError, UsageError
from certify.validation import TargetLike, check_eval_mode, evaluate_logits, resolve_target, validate_inputs

FLIPS = 0
CANNOT_FLIP = 1
UNDECIDED = 2
AT_BOUNDARY = 3
STATUS_MESSAGES = {
    FLIPS: "changing this group alone flips the decision (verified witness)",
    CANNOT_FLIP: "certified: no value of this group alone within the domain flips the decision",
    UNDECIDED: "undecided: no witness found and the bounds do not prove that it cannot flip",
    AT_BOUNDARY: "the margin m_c(x) <= 0 already: r* = 0",
}


def feature_groups(input_shape: tuple[int, ...], group_size: int | None = None) -> Tensor:
    """Boolean masks [G, *input_shape]: one per feature (group_size None or 1), or, for images [C, H, W],
    one per group_size x group_size spatial patch across all channels (DESIGN section 3)."""
    shape = tuple(input_shape)
    numel = math.prod(shape)
    if group_size is None or group_size == 1:
        return torch.eye(numel, dtype=torch.bool).reshape(numel, *shape)
    if not isinstance(group_size, int) or group_size < 1:
        raise UsageError(f"group_size must be a positive int, got {group_size!r}")
    if len(shape) != 3:
        raise UsageError(f"patch groups need image inputs [C, H, W], got shape {shape}")
    _, height, width = shape
    masks = []
    for top in range(0, height, group_size):
        for left in range(0, width, group_size):
            mask = torch.zeros(shape, dtype=torch.bool)
            mask[:, top : top + group_size, left : left + group_size] = True
            masks.append(mask)
    return torch.stack(masks)


@dataclass
class FeatureSensitivity:
    """Per example and group ([N, G]): change (||delta||_p of the verified witness, inf where none),
    witness [N, G, *shape] float64 (0 where none), flips, cannot_flip (certified), status (FLIPS,
    CANNOT_FLIP, UNDECIDED, AT_BOUNDARY); groups [G, *shape]; certificate says how cannot_flip was proved
    (or why it could not be)."""

    groups: Tensor
    change: Tensor
    witness: Tensor
    flips: Tensor
    cannot_flip: Tensor
    status: Tensor
    target: Tensor
    certificate: str

    def reasons(self) -> list[list[str]]:
        return [[STATUS_MESSAGES[int(s)] for s in row] for row in self.status]


def _sub_boxes(lo: Tensor, hi: Tensor, x: Tensor, members: Tensor, splits: int, max_boxes: int) -> tuple[Tensor, Tensor]:
    """Sub-boxes covering {x' : x'_i = x_i off the group, lo_i <= x'_i <= hi_i on it} for one group with
    coordinates `members`: [K, D] lower and upper corners, `splits` pieces per coordinate (fewer when
    splits^|S| > max_boxes)."""
    size = members.numel()
    per_coordinate = max(1, min(splits, int(math.floor(max_boxes ** (1.0 / size) + 1e-9))))
    fractions = torch.linspace(0.0, 1.0, per_coordinate + 1, dtype=torch.float64, device=x.device)
    lows, highs = [], []
    for cell in itertools.product(range(per_coordinate), repeat=size):
        index = torch.as_tensor(cell, device=x.device)
        width = hi[members] - lo[members]
        box_lo, box_hi = x.clone(), x.clone()
        box_lo[members] = lo[members] + fractions[index] * width
        box_hi[members] = torch.where(index == per_coordinate - 1, hi[members], lo[members] + fractions[index + 1] * width)
        lows.append(box_lo)
        highs.append(box_hi)
    return torch.stack(lows), torch.stack(highs)


def certify_cannot_flip(
    net: AffineNetwork,
    x_flat: Tensor,
    target: Tensor,
    masks: Tensor,
    lo: Tensor,
    hi: Tensor,
    method: str = "crown",
    splits: int = 2,
    max_boxes: int = 16,
    candidates: Tensor | None = None,
    chunk: int = 512,
) -> Tensor:
    """[N, G] bool: True where every pair margin is certified > 0 on the group's domain box (see the module
    docstring); False where a bound is not positive, the box is unbounded, or (example, group) is not
    among the `candidates` ([N, G] bool, all by default)."""
    n, groups = x_flat.shape[0], masks.shape[0]
    flat_masks = masks.reshape(groups, -1)
    wanted = torch.ones(n, groups, dtype=torch.bool) if candidates is None else candidates.cpu()
    rows_lo, rows_hi, owner = [], [], []
    for i, g in torch.nonzero(wanted).tolist():
        members = torch.nonzero(flat_masks[g]).reshape(-1)
        if not bool(torch.isfinite(lo[i, members]).all() and torch.isfinite(hi[i, members]).all()):
            continue
        box_lo, box_hi = _sub_boxes(lo[i], hi[i], x_flat[i], members, splits, max_boxes)
        rows_lo.append(box_lo)
        rows_hi.append(box_hi)
        owner.append(torch.full((box_lo.shape[0],), i * groups + g, dtype=torch.long))
    proved = torch.zeros(n * groups, dtype=torch.bool, device=x_flat.device)
    if not owner:
        return proved.view(n, groups)
    box_lo, box_hi = torch.cat(rows_lo), torch.cat(rows_hi)
    owner_index = torch.cat(owner).to(x_flat.device)
    certified = torch.empty(box_lo.shape[0], dtype=torch.bool, device=x_flat.device)
    for start in range(0, box_lo.shape[0], chunk):
        part = slice(start, start + chunk)
        centre = 0.5 * (box_lo[part] + box_hi[part])
        radius = (0.5 * (box_hi[part] - box_lo[part])).amax(dim=1)
        region = InputSet(centre, radius, math.inf, box_lo[part], box_hi[part])
        bounds, _ = margin_bounds_on_set(net, region, target[owner_index[part] // groups], method)
        certified[part] = (bounds > 0).all(dim=1)
    # a group is proved when all of its sub-boxes are (scatter_reduce with "amin" over the owners)
    counts = torch.zeros(n * groups, dtype=torch.long, device=x_flat.device).scatter_add(0, owner_index, torch.ones_like(owner_index))
    good = torch.zeros(n * groups, dtype=torch.long, device=x_flat.device).scatter_add(0, owner_index, certified.long())
    proved = (counts > 0) & (good == counts)
    return proved.view(n, groups)


def feature_sensitivity(
    model: nn.Module,
    inputs: Tensor,
    target: TargetLike = None,
    p: float | int | str = 2,
    domain: tuple[object, object] | None = None,
    groups: Tensor | None = None,
    group_size: int | None = None,
    method: str = "fmn",
    max_iter: int = 200,
    restarts: int = 2,
    bound_method: str = "crown",
    splits: int = 2,
    max_boxes: int = 16,
) -> FeatureSensitivity:
    """Minimal flips per feature or group (masks `groups` [G, *shape], or built by `feature_groups` from
    `group_size`), batched over examples and groups, with the certified "cannot flip alone" of the
    module docstring."""
    inputs = validate_inputs(inputs)
    check_eval_mode(model)
    with torch.no_grad():
        logits = evaluate_logits(model, inputs)
    target = resolve_target(target, logits)
    n, shape = inputs.shape[0], tuple(inputs.shape[1:])
    masks = feature_groups(shape, group_size) if groups is None else torch.as_tensor(groups, dtype=torch.bool)
    if masks.shape[1:] != shape or masks.shape[0] == 0 or not bool(masks.reshape(masks.shape[0], -1).any(1).all()):
        raise UsageError(f"groups must be non-empty boolean masks of shape [G, {', '.join(map(str, shape))}]")
    masks = masks.to(inputs.device)
    g = masks.shape[0]
    box = resolve_domain(domain, inputs)
    rows = inputs.repeat_interleave(g, dim=0)
    row_domain = (
        box.lo.repeat_interleave(g, dim=0).reshape(rows.shape),
        box.hi.repeat_interleave(g, dim=0).reshape(rows.shape),
    )
    support = masks.repeat(n, *([1] * len(shape)))
    solved = minimal_perturbation(
        model, rows, target.repeat_interleave(g), p=p, domain=row_domain, method=method, max_iter=max_iter,
        restarts=restarts, support=support,
    )
    flips = solved.flipped.view(n, g) & (solved.status.view(n, g) == 0)
    at_boundary = solved.input_margin.view(n, g)[:, 0] <= 0
    try:
        net = from_module(model, shape).to(inputs.device)
        x_flat = inputs.detach().to(torch.float64).reshape(n, -1)
        whole = certify_cannot_flip(net, x_flat, target, masks, box.lo, box.hi, bound_method, 1, 1, ~flips)
        split = certify_cannot_flip(
            net, x_flat, target, masks, box.lo, box.hi, bound_method, splits, max_boxes, ~flips & ~whole
        )
        cannot = whole | split
        certificate = (
            f"{bound_method} margin bounds > 0 on the group's domain box, or on each of up to {max_boxes} "
            f"sub-boxes ({splits} per coordinate) covering it"
        )
    except UnsupportedError as exc:
        cannot = torch.zeros(n, g, dtype=torch.bool, device=inputs.device)
        certificate = f"no 'cannot flip' certificate: {exc}"
    if bool((cannot & flips).any()):
        raise CertifyError("a group certified 'cannot flip' has a verified flipping witness: bound or solver bug")
    status = torch.full((n, g), UNDECIDED, dtype=torch.long, device=inputs.device)
    status = torch.where(flips, torch.full_like(status, FLIPS), status)
    status = torch.where(cannot, torch.full_like(status, CANNOT_FLIP), status)
    status = torch.where(at_boundary.view(n, 1), torch.full_like(status, AT_BOUNDARY), status)
    change = torch.where(flips, solved.norm.view(n, g), torch.full((n, g), math.inf, dtype=torch.float64, device=inputs.device))
    change = torch.where(at_boundary.view(n, 1), torch.zeros_like(change), change)
    witness = torch.where(flips.reshape(n, g, *([1] * len(shape))), solved.delta.reshape(n, g, *shape), torch.zeros_like(solved.delta.reshape(n, g, *shape)))
    return FeatureSensitivity(masks, change, witness, flips, cannot & ~at_boundary.view(n, 1), status, target, certificate)
