"""The importance-test certificate (issue 15, item 2; `certify test-importance`): SHAP-XRT p-values at one input as
probabilistic claims that the independent checker recomputes (`certify.certificates.xrt_check`).

Each test (features j, context C) becomes an `xrt-p-value` claim: value = (1 + #{k: T~_k >= T - tie}) / (K + 1)
from the test's statistics (near-ties within `tie` counted as ties, so value >= the test's p; tie is
`xrt_check.tie_allowance`: 128 epsilons of the model's dtype relative to the statistics' magnitude), each test
seeded by `xrt_check.test_seed` (the recorded seed and the test's content), the decision at alpha, and the statistic T
and the estimate gamma-hat as witness. The sampler must be a `MarginalSampler` (its draws are integer row indices:
reproducible anywhere); its reference rows are named (the first rows of a certify data set's split, which the
checker reloads) or travel with the certificate (inline, or a sidecar .npy next to it), with their sha256.
"""
from __future__ import annotations

import math
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from certify.certificates.claims import issue, refuse
from certify.certificates.document import ImportanceCertificate, array_sha256, encode_array, parse_certificate
from certify.certificates.issuers.common import model_provenance
from certify.certificates.xrt_check import MAX_SCORED_ROWS, check_importance, test_seed, tie_allowance
from certify.errors import InvalidInputError, UnsupportedError, UsageError
from certify.explain.shap_xrt import DEFAULT_K, DEFAULT_M, MarginalSampler, feature_masks, xrt
from certify.vocabulary import Kind

def _tie(model: nn.Module, statistic: float, null: Tensor) -> float:
    first = next(iter(model.parameters()), None)
    dtype = first.dtype if first is not None else torch.float32
    return tie_allowance(dtype, max(1.0, abs(statistic), float(null.abs().max())))


def _ceil_fraction(a: int, b: int) -> float:
    """The smallest float >= a / b (a float division may round below the fraction: a p-value must not)."""
    value = a / b
    return value if Fraction(value) >= Fraction(a, b) else math.nextafter(value, math.inf)


def importance_certificate(
    model: nn.Module,
    x: Tensor,
    features: Sequence[Any],
    context: Sequence[Any],
    *,
    sampler: MarginalSampler,
    reference: tuple[str, str] | None = None,
    names: Sequence[str] | None = None,
    k: int = DEFAULT_K,
    m: int = DEFAULT_M,
    alpha: float = 0.05,
    target: int | None = None,
    score: str = "probability",
    seed: int = 0,
    model_spec: str | None = None,
    data: str = "",
    out: Path | None = None,
) -> ImportanceCertificate:
    """SHAP-XRT tests of `features[i]` in the context `context[i]` (feature sets as `certify.explain.shap_xrt.xrt`
    takes them) at one input x [...] (no batch axis), one claim per test named `names[i]` (default "test-i").
    `reference`: (data set name, split) when the sampler's rows are the first rows of that certify data set's split
    (the certificate then names them; the checker reloads them), else None (the rows are stored). `out`: the certificate's path, where a large reference is written as a
    sidecar. Raises UsageError for bad parameters (a sampler other than MarginalSampler, mismatched lists),
    InvalidInputError for a bad input. Source: Teneggi et al., TMLR 2023, Alg. 1."""
    if not isinstance(sampler, MarginalSampler):
        raise UnsupportedError(f"an importance-test certificate needs a MarginalSampler (its draws are reproducible "
                               f"row indices), got {type(sampler).__name__}")
    if not isinstance(x, Tensor) or x.dim() < 1:
        raise InvalidInputError("x must be one input tensor [...] (no batch axis)")
    b = len(features)
    if b == 0 or len(context) != b or (names is not None and len(names) != b):
        raise UsageError(f"give one context (and name) per feature set: {b} feature sets, {len(context)} contexts")
    if not 0 < alpha < 1 or 1 - alpha == 1:
        raise UsageError(f"alpha must lie in (0, 1) with 1 - alpha < 1 in floating point, got {alpha}")
    if (k + 1) * m > MAX_SCORED_ROWS:
        raise UsageError(f"(K + 1) M = {(k + 1) * m} inputs per test: the checker re-scores at most {MAX_SCORED_ROWS}")
    names = list(names) if names is not None else [f"test-{i}" for i in range(b)]
    if len(set(names)) != b:
        raise UsageError("test names must be distinct")
    start = time.perf_counter()
    shape = tuple(int(s) for s in x.shape)
    with torch.no_grad():
        output = model(x.detach().clone().unsqueeze(0))  # a copy: a model may change its input in place
    if target is None:
        target = int(output.argmax(dim=1)[0]) if output.dim() == 2 and output.shape[1] > 1 else 0
    masks = [(feature_masks(f, 1, x.numel(), shape, "features", x.device)[0],
              feature_masks(c, 1, x.numel(), shape, "context", x.device)[0]) for f, c in zip(features, context)]
    seeds = [test_seed(seed, {"features": torch.nonzero(j).flatten().tolist(), "context": torch.nonzero(c).flatten().tolist(),
                              "target": int(target), "score": score, "K": k, "M": m}) for j, c in masks]
    result = xrt(model, x.unsqueeze(0).expand(b, *shape), [j for j, _ in masks], [c for _, c in masks], sampler=sampler,
                 k=k, m=m, target=[int(target)] * b, score=score, seed=seeds)
    claims = []
    for i in range(b):
        t = float(result.statistic[i])
        tie = _tie(model, t, result.null_statistics[i])
        value = _ceil_fraction(1 + int((result.null_statistics[i] >= t - tie).sum()), k + 1)
        params = {
            "features": torch.nonzero(result.feature_mask[i]).flatten().tolist(),
            "context": torch.nonzero(result.context_mask[i]).flatten().tolist(),
            "target": int(result.target[i]), "score": score, "K": k, "M": m, "seed": int(result.seeds[i]),
            "tie": tie, "alpha": float(alpha), "confidence": 1 - float(alpha),
            "decision": "reject" if value <= alpha else "retain",
        }
        claims.append(issue(names[i], "xrt-p-value", params, value, "shap-xrt",
                            witness={"statistic": t, "gamma": float(result.gamma[i])}, kind=Kind.PROBABILISTIC.value,
                            exact=True))
    spec = sampler.spec()
    sidecar = None if out is None else Path(out).with_name(Path(out).stem + "-reference.npy")
    rows = sampler.reference.to(torch.float64).numpy()
    return ImportanceCertificate(
        provenance={**model_provenance(model, model_spec), "data": data, "seed": int(seed)},
        input={"shape": list(shape), "x": encode_array(x.detach().to("cpu", torch.float64).numpy()),
               "classes": int(output.shape[1]) if output.dim() == 2 else 1},
        sampler={"kind": "marginal", "mode": spec["mode"], "groups": spec["groups"],
                 "reference": {"dataset": reference[0] if reference else None, "split": reference[1] if reference else None,
                               "rows": int(rows.shape[0]), "sha256": array_sha256(rows),
                               "data": None if reference else encode_array(rows, sidecar)}},
        seconds=time.perf_counter() - start, claims=claims,
    )


def checked_importance_certificate(model: nn.Module, x: Tensor, features: Sequence[Any], context: Sequence[Any],
                                   **kwargs: Any) -> tuple[ImportanceCertificate, list[str]]:
    """`importance_certificate`, then re-checked by the independent checker (its JSON parsed back, a sidecar read
    from `out`'s folder): a claim the checker does not accept is refused with the checker's reason (e.g. a model
    whose scores depend on the batch it is evaluated in). (certificate, problems found)."""
    cert = importance_certificate(model, x, features, context, **kwargs)
    out = kwargs.get("out")
    problems, rows = check_importance(parse_certificate(cert.to_json()), model, None if out is None else Path(out).parent)
    rejected = {claim_id: detail for claim_id, status, detail in rows if status == "invalid"}
    if rejected:
        cert.claims = [refuse(c.id, c.type, {**c.params, "decision": "retain"}, c.method,
                              f"the independent checker does not accept it: {rejected[c.id]}")
                       if c.id in rejected else c for c in cert.claims]
    return cert, problems + [f"claim {i}: {d}" for i, d in rejected.items()]
