"""The independent checker of importance-test certificates (issue 15; `certify verify` of a
"certify-importance-certificate"): every SHAP-XRT p-value is recomputed from the model, the certificate's input,
the sampler's reference rows and the claim's seed, by this module's own implementation of the sampling protocol
(it imports no solver code: certify.explain's SHAP-XRT is not used).

The sampling protocol (the issuer's `certify.explain.shap_xrt.MarginalSampler` follows it; written here again
from this description):

* a test's seed is `test_seed(provenance.seed, the test)`: SeedSequence of the recorded seed and the test's own
  sha256 (features, context, target, score, K, M), whatever its position; its draws come from
  `numpy.random.default_rng(seed)`: first the M draws of X~_(C u j), then the K M
  draws of X~_C, each block drawn by ONE call below;
* n draws with the features of a bool mask `fixed` held at x: `idx = rng.integers(0, R, size=S)` with S = n (mode
  "joint": draw i is reference row idx[i]), S = (n, d) (mode "product" without groups: feature f of draw i is
  reference[idx[i, f], f]) or S = (n, G) (mode "product" with groups relabelled 0..G-1 in sorted order: feature f
  of draw i is reference[idx[i, g_f], f]); then the fixed features are set to x;
* f is the model's score of the target on each input ALONE (a batch of one, on a copy of the input), in the
  model's dtype ("probability": softmax over the outputs; "logit" and "output": the
  output of the target class, or a single-output model's value), converted to float64; T is the mean of the first
  M scores, T~_k the mean of the k-th next block of M, each sum rounded once (math.fsum), so rounding never
  inverts the order of two statistics.

The claim (`xrt-p-value`, relation <=) states p <= value with p = (1 + #{k: T~_k >= T}) / (K + 1). The checker
recounts with the claim's tie allowance halved, c = #{k: T~_k >= T - tie/2}, and accepts iff value >= (1 + c) /
(K + 1) as exact rationals: the means are monotone in the exact ones and near-ties only raise c, so an accepted
value is at least p (an issuer whose arithmetic differs from the checker's by less than tie/4 passes; a value
lowered by even one count, or rounded below the fraction, fails; exact ties always count). The decision must be
"reject" iff value <= alpha; the witness's T and gamma-hat (T minus the mean over the null draws) must match the
recomputation within the tie allowance plus TIE_ULPS epsilons of the model's dtype (relative). A claim needing more than MAX_DRAW_VALUES drawn values
is not re-checked (invalid), nor is a model in training mode.

The reference rows are the first R rows of a certify data set's split, which the checker reloads (so the
sampler's description cannot lie), or, when no data set is named, the certificate's own rows (inline or a sidecar
.npy); either way they must match the recorded sha256.
"""
from __future__ import annotations

import hashlib
import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from certify.certificates._common import Invalid
from certify.certificates.claims import XRT_TYPES, Claim, ClaimError, validate_claim
from certify.errors import CertificateFormatError
from certify.vocabulary import Kind

CHUNK = 4096  # rows per model call
MAX_DRAW_VALUES = 5 * 10**7  # (K + 1) M d values drawn for one claim (400 MB in float64): larger is not re-checked
MAX_SCORED_ROWS = 200_000  # (K + 1) M inputs scored one at a time for one claim: larger is not re-checked
METHOD = "shap-xrt"
TIE_ULPS = 128  # the issuer's tie allowance, in units of the model dtype's epsilon, relative to the statistics'
# magnitude: far above the difference between a batched and a one-input evaluation of the same model


def tie_allowance(dtype: torch.dtype, scale: float) -> float:
    """TIE_ULPS epsilons of `dtype` times `scale` (the largest |statistic|, at least 1): the issuer's tie, and the
    checker's slack on the witness's statistic and gamma-hat."""
    return TIE_ULPS * float(torch.finfo(dtype).eps) * scale


def test_seed(seed: int, q: dict[str, Any]) -> int:
    """A test's seed: numpy SeedSequence of provenance.seed and the sha256 of the test itself (features, context,
    target, score, K, M), one uint32 word: a function of what is tested, not of its position among the claims
    (a refused padding claim or a reordering cannot buy a test another seed; a duplicate test gets the same)."""
    content = json.dumps([q["features"], q["context"], q["target"], q["score"], q["K"], q["M"]], separators=(",", ":"))
    words = np.frombuffer(hashlib.sha256(content.encode()).digest(), dtype=np.uint32).tolist()
    return int(np.random.SeedSequence([int(seed), *words]).generate_state(1, dtype=np.uint32)[0])


def _model_dtype(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    first = next(iter(model.parameters()), None)
    return (first.dtype, first.device) if first is not None else (torch.float32, torch.device("cpu"))


def reference_rows(cert: Any, base_dir: Path | None, d: int) -> np.ndarray:
    """The sampler's reference rows [R, d] (float64): the first R rows of the named certify data set's split
    (reloaded here), or the certificate's own rows when no data set is named (inline or a sidecar); either must
    match the recorded sha256 (and the stored rows, when both are given). Invalid otherwise."""
    from certify.certificates.document import array_sha256, decode_array

    ref = cert.sampler["reference"]
    rows = None
    if ref["data"] is not None:
        try:
            rows = decode_array(ref["data"], "sampler.reference.data", base_dir)
        except CertificateFormatError as exc:
            raise Invalid(str(exc)) from None
    if ref["dataset"] is not None:
        from certify.errors import UnsupportedError
        from certify.models.datasets import load_dataset

        if ref["split"] is None:
            raise Invalid("a reference named by data set must name its split")
        try:
            data = load_dataset(ref["dataset"])
        except UnsupportedError as exc:
            raise Invalid(f"the reference's data set cannot be loaded: {exc}") from None
        source = data.x_train if ref["split"] == "train" else data.x_test
        source = source.reshape(source.shape[0], -1).to(torch.float64).numpy()
        if source.shape[0] < ref["rows"] or source.shape[1] != d:
            raise Invalid(f"{ref['dataset']}'s {ref['split']} split has shape {list(source.shape)}: not {ref['rows']} rows of {d} features")
        if rows is not None and not np.array_equal(source[: ref["rows"]], rows):
            raise Invalid(f"the stored reference rows are not the first {ref['rows']} rows of {ref['dataset']}'s {ref['split']} split")
        rows = source[: ref["rows"]]
    elif ref["split"] is not None:
        raise Invalid("a reference with no data set has no split")
    if rows is None:
        raise Invalid("the reference names no data set and stores no rows")
    if rows.ndim != 2 or rows.shape[1] != d or rows.shape[0] != ref["rows"]:
        raise Invalid(f"the reference data has shape {list(rows.shape)}, not [{ref['rows']}, {d}]")
    if array_sha256(rows) != ref["sha256"]:
        raise Invalid("the reference rows do not match the recorded sha256"
                      + (f" (the rows of {ref['dataset']}'s {ref['split']} split differ from those the tests drew from)"
                         if ref["dataset"] is not None else ""))
    return rows


def _groups(cert: Any, d: int) -> np.ndarray | None:
    sampler = cert.sampler
    groups = sampler["groups"]
    if groups is None:
        return None
    if sampler["mode"] != "product":
        raise Invalid("groups apply to mode 'product' only")
    if len(groups) != d:
        raise Invalid(f"groups has {len(groups)} labels for {d} features")
    if max(groups, default=0) >= 2**62:
        raise Invalid("groups labels must be below 2^62")
    return np.unique(np.asarray(groups, dtype=np.int64), return_inverse=True)[1].reshape(-1)


def draw(rows: np.ndarray, mode: str, labels: np.ndarray | None, x: np.ndarray, fixed: np.ndarray, n: int,
         rng: np.random.Generator) -> np.ndarray:
    """n draws [n, d] (float64) of the protocol in the module docstring."""
    r, d = rows.shape
    if mode == "joint":
        out = rows[rng.integers(0, r, size=n)]
    elif labels is None:
        out = rows[rng.integers(0, r, size=(n, d)), np.arange(d)[None, :]]
    else:
        idx = rng.integers(0, r, size=(n, int(labels.max()) + 1))
        out = rows[idx[:, labels], np.arange(d)[None, :]]
    return np.where(fixed[None, :], x[None, :], out)


def _one_at_a_time(model: nn.Module, chunk: torch.Tensor) -> torch.Tensor:
    """The model on each row alone: a batch of one per call, on a copy (a model may change its input in place).
    This is the definition of f, so no score depends on the other rows of a batch (its position, the batch's
    statistics, or the rounding of a batched kernel: torch.func.vmap's batched matmuls round differently); it
    costs one model call per row, which only the checker pays."""
    return torch.stack([model(row.unsqueeze(0).clone()).squeeze(0) for row in chunk])


def scores(model: nn.Module, points: np.ndarray, shape: tuple[int, ...], target: int, score: str) -> np.ndarray:
    """f at each row of `points` [n, d], float64 [n] (module docstring), each row evaluated alone; Invalid for
    outputs of another form."""
    dtype, device = _model_dtype(model)
    out = []
    with torch.no_grad():
        for start in range(0, points.shape[0], CHUNK):
            chunk = torch.tensor(points[start : start + CHUNK], dtype=dtype, device=device)
            y = _one_at_a_time(model, chunk.reshape(chunk.shape[0], *shape))
            if not isinstance(y, torch.Tensor) or y.dim() not in (1, 2) or y.shape[0] != chunk.shape[0]:
                raise Invalid(f"the model returns {getattr(y, 'shape', type(y))}, not [batch] or [batch, classes]")
            if not y.is_floating_point():
                raise Invalid(f"the model returns {y.dtype} outputs, not floating-point scores")
            if y.dim() == 2 and (score != "output" or y.shape[1] > 1):
                values = (torch.softmax(y, dim=1) if score == "probability" else y)[:, target]
            elif score == "output":
                values = y.reshape(-1)
            else:
                raise Invalid(f"score {score!r} needs outputs [batch, classes]")
            out.append(values.detach().to("cpu", torch.float64).numpy())
    values = np.concatenate(out)
    if not np.isfinite(values).all():
        raise Invalid("the model returns non-finite scores on the sampled inputs")
    return values


def block_means(values: np.ndarray) -> np.ndarray:
    """Row means of [R, M] with each sum correctly rounded (math.fsum), hence monotone: a statistic that is exactly
    >= another stays >= after rounding."""
    m = values.shape[1]
    return np.array([math.fsum(row) / m for row in values.tolist()])


def check_pvalue(model: nn.Module, claim: Claim, x: np.ndarray, shape: tuple[int, ...], rows: np.ndarray,
                 mode: str, labels: np.ndarray | None) -> str:
    """Recompute one xrt-p-value claim (module docstring); the detail text, or Invalid."""
    q = claim.params
    d = x.size
    j = np.zeros(d, dtype=bool)
    j[q["features"]] = True
    c = np.zeros(d, dtype=bool)
    c[q["context"]] = True
    k, m = q["K"], q["M"]
    if (k + 1) * m * d > MAX_DRAW_VALUES or (k + 1) * m > MAX_SCORED_ROWS:
        raise Invalid(f"(K + 1) M = {(k + 1) * m} inputs of {d} features exceed the checker's limits ({MAX_SCORED_ROWS} "
                      f"inputs, {MAX_DRAW_VALUES} values): not re-checkable here")
    rng = np.random.default_rng(q["seed"])
    with_j = draw(rows, mode, labels, x, j | c, m, rng)
    without_j = draw(rows, mode, labels, x, c, k * m, rng)
    values = scores(model, np.concatenate([with_j, without_j]), shape, q["target"], q["score"]).reshape(k + 1, m)
    means = block_means(values)
    t, t_null = float(means[0]), means[1:]
    count = int((t_null >= t - q["tie"] / 2).sum())
    needed = Fraction(1 + count, k + 1)
    if not Fraction(claim.value) >= needed:  # exact: a value rounded below the fraction is below p
        raise Invalid(f"value {claim.value!r} is below the recomputed p-value {needed} (as exact rationals; {count} of "
                      f"K = {k} null statistics >= T - tie/2 = {t - q['tie'] / 2!r})")
    rejects = claim.value <= q["alpha"]
    if (q["decision"] == "reject") != rejects:
        raise Invalid(f"decision {q['decision']!r} where value {claim.value!r} {'<=' if rejects else '>'} alpha = {q['alpha']!r}")
    gamma = t - float(values[1:].mean())
    allowance = q["tie"] + tie_allowance(_model_dtype(model)[0], max(1.0, abs(t), float(np.abs(t_null).max())))
    for key, recomputed in (("statistic", t), ("gamma", gamma)):
        stated = claim.witness.get(key)
        if not (isinstance(stated, (int, float)) and not isinstance(stated, bool) and math.isfinite(stated)
                and abs(stated - recomputed) <= allowance):
            raise Invalid(f"witness.{key} = {stated!r} differs from the recomputed {recomputed!r} by more than {allowance:.3g}")
    return (f"p recomputed from seed {q['seed']}: {float(needed):.6g} ({count} of K = {k} null statistics >= T - tie/2), "
            f"value {claim.value:.6g} >= it; T = {t:.6g}, gamma-hat = {gamma:.3g}; {q['decision']} at alpha = {q['alpha']:g}")


def _seed_problems(cert: Any) -> list[str]:
    """Every test's seed must be `test_seed(provenance.seed, its params)`, so that one recorded number fixes every
    draw, and two claims may not test the same thing."""
    seed = cert.provenance.get("seed")
    if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
        return ["provenance.seed must be a non-negative integer: the tests' seeds are derived from it"]
    problems, seen = [], set()
    for c in cert.claims:
        q = c.params if isinstance(c.params, dict) else {}
        try:
            key = json.dumps([q["features"], q["context"], q["target"], q["score"], q["K"], q["M"]])
            expected = test_seed(seed, q)
        except (KeyError, TypeError, ValueError):
            continue  # a malformed claim: its own validation says why
        if key in seen:
            problems.append(f"claim {c.id!r} repeats another claim's test")
        seen.add(key)
        if q.get("seed") != expected:
            problems.append(f"claim {c.id!r}: seed {q.get('seed')!r} is not the one derived from provenance.seed = {seed} "
                            f"and the test ({expected})")
    return problems


def check_importance(cert: Any, model: nn.Module, base_dir: Path | None) -> tuple[list[str], list[tuple[str, str, str]]]:
    """(document problems, [(claim id, status, detail)]) for an ImportanceCertificate and its model (already
    matched by hash). Statuses: "valid (probabilistic)" (recomputed from its seed), "invalid", "refused"."""
    from certify.certificates.document import decode_array

    shape = tuple(int(s) for s in cert.input["shape"])
    d = math.prod(shape)
    try:
        x = decode_array(cert.input["x"], "input.x", base_dir).reshape(-1)
    except CertificateFormatError as exc:
        return [str(exc)], []
    if x.size != d:
        return [f"input.x has {x.size} values for the shape {list(shape)}"], []
    training = [name or type(model).__name__ for name, module in model.named_modules() if module.training]
    if training:  # dropout or batch statistics would make the scores random or batch-dependent
        return [f"the model is in training mode ({', '.join(training[:3])}): call model.eval() first"], []
    dtype, device = _model_dtype(model)
    try:
        with torch.no_grad():
            out = model(torch.tensor(x, dtype=dtype, device=device).reshape(1, *shape))  # a copy: x stays x
    except Exception as exc:  # noqa: BLE001 - whatever the model's code raises
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return [f"the model cannot be evaluated at the certificate's input ({type(exc).__name__}: {first})"], []
    if not isinstance(out, torch.Tensor) or out.dim() not in (1, 2):
        return [f"the model returns {getattr(out, 'shape', type(out).__name__)}, not [batch] or [batch, classes]"], []
    classes = int(out.shape[1]) if out.dim() == 2 else 1
    if classes != cert.input["classes"]:
        return [f"the model has {classes} outputs, the certificate says {cert.input['classes']}"], []
    problems = _seed_problems(cert)
    try:
        rows = reference_rows(cert, base_dir, d)
        labels = _groups(cert, d)
    except Invalid as exc:
        return problems + [f"sampler: {exc}"], []
    mode = cert.sampler["mode"]
    out_rows: list[tuple[str, str, str]] = []
    for claim in cert.claims:
        try:
            validate_claim(claim, d, classes)
            if claim.type not in XRT_TYPES:
                raise Invalid(f"a {claim.type!r} claim is not an importance test")
            if claim.method != METHOD or claim.assumptions:
                raise Invalid(f"an xrt-p-value claim has method {METHOD!r} and rests on no other claim")
            if claim.kind == Kind.REFUSED.value:
                out_rows.append((claim.id, "refused", claim.reason or ""))
                continue
            out_rows.append((claim.id, "valid (probabilistic)", check_pvalue(model, claim, x, shape, rows, mode, labels)))
        except (Invalid, ClaimError) as exc:
            out_rows.append((claim.id, "invalid", str(exc)))
        except Exception as exc:  # noqa: BLE001 - the model fails on the draws (any exception its code raises)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            out_rows.append((claim.id, "invalid", f"the model cannot be evaluated for this claim ({type(exc).__name__}: {first})"))
    return problems, out_rows
