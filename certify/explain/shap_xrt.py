"""SHAP-XRT: the Shapley explanation randomisation test (Teneggi, Bharti, Romano & Sulam, "SHAP-XRT: The
Shapley Value Meets Conditional Independence Testing", TMLR 2023, arXiv 2207.07038; ANCHORS 5.3).

Setting. f maps an input with d features to a score (a class probability, or any scalar in [0, 1] where a bound
needs it). For a set of features S and an input x, X~_S = (x_S, X_{S-bar} ~ P(X_{S-bar} | X_S = x_S)) holds the
features of S at x and draws the others from their conditional law; v(S) = E f(X~_S). For a feature, or a region
(a set of features), j and a context C (a set of features disjoint from j),

    gamma_{j,C} = v(C u j) - v(C),     phi_j = sum_{C subset of [n] \\ j} w_C gamma_{j,C},
    w_C = |C|! (n - |C| - 1)! / n!     (players = the n features or regions; the w_C sum to 1),

and the local null hypothesis is H0_{j,C}: f(X~_{C u j}) =d f(X~_C) (fixing x_j changes nothing in law).

The test (paper section 3, Algorithm 1; ANCHORS 5.3). T = (1/M) sum_m f(X~_{C u j}^{(m)}) from M draws;
T~_k (k = 1..K) the same statistic computed from M draws of X~_C each; the p-value

    p = (1 + #{k : T~_k >= T}) / (K + 1)      (ties count: conservative),

so p is a multiple of 1/(K + 1) in [1/(K + 1), 1].

Results (stated exactly; (1)-(3) are proved below in one line each, (4) follows from (2)):

(1) Validity. Under H0_{j,C}, T, T~_1, ..., T~_K are i.i.d. (exchangeable suffices), so for every alpha in [0, 1],
    P(p <= alpha) <= alpha: the rank of T among K + 1 exchangeable values, counted with ties against T, is
    super-uniform. This holds for each fixed x and any M >= 1.
(2) Expectation bound (paper Theorem 1, binary classification, f in [0, 1]): E p <= 1 - (K/(K+1)) gamma_{j,C}.
    Proof: T, T~ in [0, 1] give 1[T~ >= T] <= 1 - T + T~; E T = v(C u j) and E T~ = v(C), so
    E p = (1 + K P(T~ >= T))/(K + 1) <= (1 + K(1 - gamma))/(K + 1) = 1 - K gamma/(K + 1). Tight when T = 1 and
    T~ = 0 almost surely (then p = 1/(K + 1) on every draw; `expected_p_upper_bound`).
(3) Lower bound for gamma < 0 (paper: E p >= (1 + K gamma^2)/(K + 1)). The elementary bound
    P(T~ >= T) >= E (T~ - T)^+ >= -gamma, i.e. E p >= (1 + K |gamma|)/(K + 1), is stronger (|gamma| >= gamma^2 for
    |gamma| <= 1); `expected_p_lower_bound` returns it.
(4) Global null (the abstract: "the Shapley value itself provides an upper bound to the expected p-value of a
    global null hypothesis"; ANCHORS marks the exact form unverified: the paper's full text was not reachable,
    only its abstract). With the Shapley-weighted p-value p_j = sum_C w_C p_{j,C}, averaging (2) with the weights
    w_C gives E p_j <= 1 - (K/(K+1)) phi_j, and as K -> infinity phi_j <= 1 - sum_C w_C E p_{j,C}: the form this
    module implements and checks (`shapley_xrt`), derived from (2), not copied from the paper.

Conditional sampling is pluggable (`Sampler`): `MarginalSampler` draws the free features from a reference data
set (a whole reference row per draw, "joint", or each feature from its own row, "product": the product of the
marginals), which is the exact conditional when the free features are independent of the fixed ones;
`GaussianSampler` draws from the exact conditional of a multivariate normal N(mu, Sigma):

    X_F | X_S = x_S ~ N(mu_F + Sigma_FS Sigma_SS^+ (x_S - mu_S),  Sigma_FF - Sigma_FS Sigma_SS^+ Sigma_SF).

Validity (1) holds for the law the sampler draws from; it is a statement about the paper's null only when the
sampler is the true conditional.

Randomness and recomputation. Every test has its own seed (derived from one `seed` with numpy's SeedSequence,
or given one per test); its draws come from `numpy.random.default_rng(test_seed)`: first the M draws of
X~_{C u j} (one sampler call), then the K M draws of X~_C (one call). A test's p-value therefore depends only on
(model, x, j, C, target, score, K, M, sampler, test seed), not on the batch it ran in nor on `batch_size`, and
`recompute_pvalue` recomputes a stored p from those (the only caveat: model outputs that tie with T to the last
bit can compare differently on another device or BLAS; p is exact on the same machine).

Batching: the (K + 1) M model inputs of every test in the call are evaluated in chunks of `batch_size` rows
shared across tests (one model call per chunk), inside `torch.no_grad()`, on the inputs' device and dtype. The
draws of one test are held at once: (K + 1) M d values.
"""
from __future__ import annotations

import hashlib
import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from certify.errors import InvalidInputError, UsageError
from certify.explain.base import Explainer, Explanation
from certify.validation import check_eval_mode, check_target, nonnegative_number, positive_int

SCORES = ("probability", "logit", "output")
DEFAULT_K = 99  # p in {0.01, 0.02, ..., 1}
DEFAULT_M = 16
DEFAULT_BATCH = 8192


# ----------------------------------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------------------------------


class Sampler(ABC):
    """Draws X~_S: the features where `fixed` is True held at x, the others from a (conditional) law.

    `sample(x, fixed, n, rng)`: x a flat input [d] (any floating dtype/device), fixed a bool tensor [d] on the
    same device, n >= 1 draws, rng a numpy Generator (the only source of randomness); returns [n, d] on x's
    device and dtype with `out[:, fixed] == x[fixed]` exactly. `spec()` is a JSON-able description recorded
    with the p-values (kind, parameters, a SHA-256 of the data the sampler holds)."""

    kind: str = "sampler"
    num_features: int | None = None

    @abstractmethod
    def sample(self, x: Tensor, fixed: Tensor, n: int, rng: np.random.Generator) -> Tensor:
        ...

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        ...

    def _check(self, x: Tensor, fixed: Tensor) -> None:
        if self.num_features is not None and x.numel() != self.num_features:
            raise InvalidInputError(f"{self.kind} sampler holds {self.num_features} features, the input has {x.numel()}")


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=np.float64)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


class MarginalSampler(Sampler):
    """Free features from a reference data set `reference` [R, ...] (R rows of d features; any shape after the
    first axis is flattened).

    mode "joint" (default): one reference row per draw supplies all free features (their joint law, independent
    of the fixed ones); mode "product": every free feature from its own uniformly drawn row (the product of the
    marginals), or, with `groups` (an integer label map [d] or shaped like one input, e.g. `grid_regions` tiles),
    every group from its own row (the product of the groups' joint laws: tiles drawn independently, each keeping
    its pixels together). Either is the exact conditional X~_S when the free features (groups) are independent of
    the fixed ones (and, for "product", of each other). Raises InvalidInputError for an empty or non-finite
    reference, UsageError for an unknown mode or bad groups."""

    kind = "marginal"

    def __init__(self, reference: Tensor | np.ndarray, mode: str = "joint", groups: Tensor | None = None) -> None:
        ref = torch.as_tensor(reference).detach()
        if ref.dim() < 2 or ref.shape[0] < 1:
            raise InvalidInputError(f"reference must be [R, ...] with R >= 1 rows, got shape {tuple(ref.shape)}")
        if not ref.is_floating_point():
            ref = ref.double()
        ref = ref.reshape(ref.shape[0], -1)
        if not bool(torch.isfinite(ref).all()):
            raise InvalidInputError("reference has non-finite values")
        if mode not in ("joint", "product"):
            raise UsageError(f"mode must be 'joint' or 'product', got {mode!r}")
        self.reference, self.mode = ref.cpu(), mode
        self.num_features = int(ref.shape[1])
        self.groups: Tensor | None = None
        if groups is not None:
            if mode != "product":
                raise UsageError("groups apply to mode 'product' only")
            g = torch.as_tensor(groups)
            if g.is_floating_point() or g.dtype == torch.bool or g.numel() != self.num_features or int(g.min()) < 0:
                raise UsageError(f"groups must be a non-negative integer label per feature ({self.num_features} features)")
            g = g.reshape(-1).long()
            _, g = torch.unique(g, return_inverse=True)  # labels 0..G-1
            self.groups = g
        self._cache: dict[tuple[Any, Any], Tensor] = {}
        self._hash = _digest(self.reference.double().numpy())

    def _ref(self, like: Tensor) -> Tensor:
        key = (like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = self.reference.to(device=like.device, dtype=like.dtype)
        return self._cache[key]

    def sample(self, x: Tensor, fixed: Tensor, n: int, rng: np.random.Generator) -> Tensor:
        self._check(x, fixed)
        ref = self._ref(x)
        rows = ref.shape[0]
        if self.mode == "joint":
            idx = torch.as_tensor(rng.integers(0, rows, size=n), device=x.device)
            draws = ref[idx]
        elif self.groups is None:
            idx = torch.as_tensor(rng.integers(0, rows, size=(n, ref.shape[1])), device=x.device)
            draws = torch.gather(ref, 0, idx)
        else:
            g = self.groups.to(x.device)
            idx = torch.as_tensor(rng.integers(0, rows, size=(n, int(g.max()) + 1)), device=x.device)
            draws = torch.gather(ref, 0, idx[:, g])
        return torch.where(fixed.unsqueeze(0), x.unsqueeze(0), draws)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "mode": self.mode, "rows": int(self.reference.shape[0]),
                "features": self.num_features, "reference_sha256": self._hash,
                "groups": None if self.groups is None else self.groups.tolist()}


class GaussianSampler(Sampler):
    """The exact conditional of X ~ N(mean, cov) given the fixed features (module docstring); mean [d], cov
    [d, d] symmetric positive semi-definite (a singular Sigma_SS is handled with its pseudo-inverse, which is the
    exact conditional when x_S is in the support). Computed in float64 on the CPU; draws are
    mu_F|S + (z * sqrt(lambda)) V^T with cov_F|S = V diag(lambda) V^T and z standard normal from the rng.
    Raises InvalidInputError for shapes, non-finite values, an asymmetric or indefinite cov."""

    kind = "gaussian"

    def __init__(self, mean: Tensor | np.ndarray, cov: Tensor | np.ndarray) -> None:
        mu = np.asarray(torch.as_tensor(mean).detach().cpu().double().numpy()).reshape(-1)
        sigma = np.asarray(torch.as_tensor(cov).detach().cpu().double().numpy())
        d = mu.shape[0]
        if sigma.shape != (d, d):
            raise InvalidInputError(f"cov must be [{d}, {d}] for a mean of {d} features, got {sigma.shape}")
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise InvalidInputError("mean and cov must be finite")
        scale = max(1.0, float(np.abs(sigma).max()))
        if not np.allclose(sigma, sigma.T, atol=1e-10 * scale, rtol=0):
            raise InvalidInputError("cov must be symmetric")
        sigma = (sigma + sigma.T) / 2
        if float(np.linalg.eigvalsh(sigma).min()) < -1e-9 * scale:
            raise InvalidInputError("cov must be positive semi-definite")
        self.mean, self.cov, self.num_features = mu, sigma, d
        self._hash = _digest(mu, sigma)
        self._factors: dict[bytes, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def _factor(self, fixed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(free indices, regression matrix B = Sigma_FS Sigma_SS^+, eigenvalues, eigenvectors of cov_F|S)."""
        key = np.packbits(fixed).tobytes()
        if key not in self._factors:
            s, f = np.flatnonzero(fixed), np.flatnonzero(~fixed)
            if s.size:
                reg = self.cov[np.ix_(f, s)] @ np.linalg.pinv(self.cov[np.ix_(s, s)], hermitian=True)
                cond = self.cov[np.ix_(f, f)] - reg @ self.cov[np.ix_(s, f)]
            else:
                reg, cond = np.zeros((f.size, 0)), self.cov[np.ix_(f, f)]
            w, v = np.linalg.eigh((cond + cond.T) / 2)
            self._factors[key] = (f, reg, np.clip(w, 0.0, None), v)
        return self._factors[key]

    def conditional(self, x: Tensor | np.ndarray, fixed: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(free feature indices [k], conditional mean [k], conditional covariance [k, k]) of X_F | X_S = x_S,
        float64 numpy, for a flat x [d] and a bool mask `fixed` [d]."""
        xs = np.asarray(torch.as_tensor(x).detach().cpu().double().numpy()).reshape(-1)
        fx = np.asarray(torch.as_tensor(fixed).detach().cpu().numpy()).reshape(-1).astype(bool)
        f, reg, w, v = self._factor(fx)
        s = np.flatnonzero(fx)
        mean = self.mean[f] + reg @ (xs[s] - self.mean[s])
        return f, mean, (v * w) @ v.T

    def sample(self, x: Tensor, fixed: Tensor, n: int, rng: np.random.Generator) -> Tensor:
        self._check(x, fixed)
        fx = fixed.detach().cpu().numpy().astype(bool)
        f, reg, w, v = self._factor(fx)
        xs = x.detach().cpu().double().numpy()
        s = np.flatnonzero(fx)
        mean = self.mean[f] + reg @ (xs[s] - self.mean[s])
        z = rng.standard_normal((n, f.size))
        out = np.repeat(xs[None, :], n, axis=0)  # float64: x's values exactly, the draws rounded once to x.dtype below
        out[:, f] = mean[None, :] + (z * np.sqrt(w)[None, :]) @ v.T
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "features": self.num_features, "params_sha256": self._hash}


def make_sampler(spec: dict[str, Any], reference: Tensor | None = None, mean: Tensor | None = None,
                 cov: Tensor | None = None) -> Sampler:
    """Rebuild a sampler from its `spec()` and its data (the reference set, or mean and cov); UsageError when the
    data's SHA-256 does not match the spec (a checker must draw from the same law)."""
    kind = spec.get("kind")
    if kind == MarginalSampler.kind:
        if reference is None:
            raise UsageError("a marginal sampler needs its reference data set")
        sampler: Sampler = MarginalSampler(reference, spec.get("mode", "joint"), spec.get("groups"))
        key = "reference_sha256"
    elif kind == GaussianSampler.kind:
        if mean is None or cov is None:
            raise UsageError("a Gaussian sampler needs its mean and covariance")
        sampler, key = GaussianSampler(mean, cov), "params_sha256"
    else:
        raise UsageError(f"unknown sampler kind {kind!r}")
    if spec.get(key) is not None and sampler.spec()[key] != spec[key]:
        raise UsageError(f"the sampler data does not match the recorded {key}")
    return sampler


# ----------------------------------------------------------------------------------------------------------
# Feature sets, seeds, scores
# ----------------------------------------------------------------------------------------------------------


def _one_mask(spec: Any, d: int, shape: tuple[int, ...], name: str, device: torch.device) -> Tensor:
    """One feature set as a flat bool mask [d]: None/empty, an int, a sequence of ints (flat indices), or a bool
    mask shaped like one input or flat [d]."""
    mask = torch.zeros(d, dtype=torch.bool, device=device)
    if spec is None:
        return mask
    if isinstance(spec, (Tensor, np.ndarray)):
        t = torch.as_tensor(spec, device=device)
        if t.dtype == torch.bool:
            if tuple(t.shape) not in (shape, (d,)):
                raise UsageError(f"{name}: a bool mask must have the input shape {shape} or [{d}], got {tuple(t.shape)}")
            return t.reshape(-1).clone()
        if t.is_floating_point() or t.dim() > 1:
            raise UsageError(f"{name}: give a bool mask or integer feature indices, got a {t.dtype} tensor of shape {tuple(t.shape)}")
        spec = t.reshape(-1).tolist()
    if isinstance(spec, numbers.Integral) and not isinstance(spec, bool):
        spec = [int(spec)]
    if isinstance(spec, (set, frozenset, range)):
        spec = sorted(spec)
    if not isinstance(spec, (list, tuple)) or any(isinstance(i, bool) or not isinstance(i, numbers.Integral) for i in spec):
        raise UsageError(f"{name}: a feature set is an int, a sequence of ints or a bool mask, got {spec!r:.80}")
    idx = [int(i) for i in spec]
    bad = [i for i in idx if not 0 <= i < d]
    if bad:
        raise UsageError(f"{name}: feature indices {bad[:5]} outside [0, {d})")
    if idx:
        mask[torch.as_tensor(idx, device=device)] = True
    return mask


def _is_single_set(spec: Any, b: int, d: int, shape: tuple[int, ...]) -> bool:
    if spec is None or isinstance(spec, (numbers.Integral, set, frozenset, range)):
        return True
    if isinstance(spec, (Tensor, np.ndarray)):
        t = torch.as_tensor(spec)
        if t.dtype == torch.bool:
            return tuple(t.shape) in (shape, (d,)) and tuple(t.shape) not in ((b, *shape), (b, d))
        return t.dim() <= 1
    if isinstance(spec, (list, tuple)):
        return all(isinstance(i, numbers.Integral) for i in spec)
    return True


def feature_masks(spec: Any, b: int, d: int, shape: tuple[int, ...], name: str, device: torch.device) -> Tensor:
    """Feature sets for b tests as a bool tensor [b, d]: one set (broadcast), a list of b sets, or a bool tensor
    [b, *shape] / [b, d]. UsageError for anything else."""
    if _is_single_set(spec, b, d, shape):
        return _one_mask(spec, d, shape, name, device).unsqueeze(0).expand(b, d).clone()
    if isinstance(spec, (Tensor, np.ndarray)):
        t = torch.as_tensor(spec, device=device)
        return t.reshape(b, d).clone()
    if len(spec) != b:
        raise UsageError(f"{name}: {len(spec)} feature sets for {b} tests")
    return torch.stack([_one_mask(s, d, shape, name, device) for s in spec])


def derive_seeds(seed: int | Sequence[int], b: int) -> list[int]:
    """Per-test seeds: b seeds derived from one int with numpy's SeedSequence (uint32 words), or the given
    sequence of b non-negative ints."""
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        if seed < 0:
            raise UsageError(f"seed must be a non-negative int, got {seed}")
        return [int(s) for s in np.random.SeedSequence(int(seed)).generate_state(b, dtype=np.uint32)]
    seeds = list(seed)
    if len(seeds) != b or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0 for s in seeds):
        raise UsageError(f"seed must be a non-negative int or {b} non-negative ints, got {seed!r:.80}")
    return [int(s) for s in seeds]


def model_scores(model: nn.Module, inputs: Tensor, target: Tensor | None, score: str) -> Tensor:
    """The scalar f of each row [n]: 'probability' softmax(logits)[target], 'logit' logits[target], 'output' the
    model's own output ([n], [n, 1], or [n, C] read at target). InvalidInputError for other output shapes."""
    try:
        out = model(inputs)
        if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != inputs.shape[0] or out.dim() > 2:
            raise InvalidInputError(f"the model must return [batch] or [batch, classes]; got {getattr(out, 'shape', type(out))}")
        if not out.is_floating_point():
            raise InvalidInputError(f"the model returns {out.dtype} outputs; a score needs floating-point outputs")
        if score == "output":
            if out.dim() == 1:
                return out
            if out.shape[1] == 1:
                return out[:, 0]
        if out.dim() != 2:
            raise InvalidInputError(f"score {score!r} needs logits [batch, classes], got shape {tuple(out.shape)}")
        if score == "probability":
            out = torch.softmax(out, dim=1)
        return out.gather(1, target.view(-1, 1)).squeeze(1)
    except (RuntimeError, TypeError, ValueError, IndexError, AssertionError, ArithmeticError) as exc:  # torch: RuntimeError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InvalidInputError(f"the model cannot score inputs of shape {tuple(inputs.shape)} "
                                f"({type(exc).__name__}: {first})") from exc


def _two_sum_tree(x: Tensor) -> tuple[Tensor, Tensor]:
    """(s [R], e [R, n - 1]) for x [R, n], n >= 1: s the pairwise float sum of each row and e the rounding error of
    every addition by Knuth's TwoSum (exact in round-to-nearest barring overflow), so that the exact sum of a row
    is s + sum(e) (Ogita, Rump & Oishi, "Accurate sum and dot product", SISC 2005, Algorithm 3.1)."""
    errors = []
    while x.shape[-1] > 1:
        half = x.shape[-1] // 2
        a, b = x[:, :half], x[:, half:2 * half]
        s = a + b
        b_virtual = s - a
        errors.append((a - (s - b_virtual)) + (b - b_virtual))
        x = torch.cat([s, x[:, 2 * half:]], dim=1)
    return x[:, 0], torch.cat(errors, dim=1) if errors else x[:, :0]


def exact_means(values: Tensor) -> Tensor:
    """Means over the last axis with the sums rounded once (the value math.fsum gives: correctly rounded), so
    that the order of two statistics is never inverted by summation error (a float mean of [1e17, -7, -1e17] is
    0, not -7/3). values [..., M] float64 on the CPU; returns [...] float64 (a zero sum is +0, as fsum's).

    Batched: the exact sum of a row is s + sum(e) with the TwoSum error terms e (`_two_sum_tree`); where the
    error terms themselves add up without rounding (their own TwoSum errors all zero, the usual case), that
    sum is exact and fl(s + sum(e)) is the correctly rounded sum. The other rows (and any overflow) go through
    math.fsum, which raises OverflowError on an intermediate overflow."""
    m = values.shape[-1]
    rows = values.reshape(-1, m)
    s, e = _two_sum_tree(rows)
    # a zero column keeps e non-empty (M = 1) and makes a zero total +0
    e_sum, e_err = _two_sum_tree(torch.cat([e, torch.zeros(rows.shape[0], 1, dtype=rows.dtype)], dim=1))
    total = s + e_sum
    inexact = torch.nonzero(~(torch.isfinite(total) & (e_err == 0).all(dim=1))).flatten()
    if inexact.numel():
        total[inexact] = torch.tensor([math.fsum(r) for r in rows[inexact].tolist()], dtype=torch.float64)
    return (total / m).reshape(values.shape[:-1])


def expected_p_upper_bound(gamma: Tensor | float, k: int) -> Tensor | float:
    """Result (2): E p <= 1 - (K/(K+1)) gamma_{j,C} for f in [0, 1]."""
    return 1 - k / (k + 1) * gamma


def expected_p_lower_bound(gamma: Tensor | float, k: int) -> Tensor | float:
    """Result (3), elementary form: E p >= (1 + K max(-gamma, 0))/(K + 1) for f in [0, 1]."""
    neg = torch.clamp(-gamma, min=0) if isinstance(gamma, Tensor) else max(-gamma, 0.0)
    return (1 + k * neg) / (k + 1)


def shapley_weight(size: int, n: int) -> float:
    """w_C = |C|! (n - |C| - 1)! / n! for a context of `size` players among n."""
    return math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)


# ----------------------------------------------------------------------------------------------------------
# The test
# ----------------------------------------------------------------------------------------------------------


@dataclass
class XRTResult:
    """B SHAP-XRT tests. Tensors on the CPU: `p` [B] (float64), `statistic` T [B], `null_statistics` T~ [B, K],
    `gamma` [B] (the estimate T - mean_k T~_k of gamma_{j,C}: unbiased, since E T = v(C u j) and E T~ = v(C)),
    `gamma_se` [B] (its standard error from the per-draw variances), `target` [B], `feature_mask` and
    `context_mask` [B, d] bool. `bounded` is True when every score lay in [0, 1] (the expectation bound applies).
    `seeds` are the per-test seeds `recompute_pvalue` needs."""

    p: Tensor
    statistic: Tensor
    null_statistics: Tensor
    gamma: Tensor
    gamma_se: Tensor
    target: Tensor
    feature_mask: Tensor
    context_mask: Tensor
    seeds: list[int]
    k: int
    m: int
    score: str
    sampler: dict[str, Any]
    bounded: bool
    model_calls: int
    model_inputs: int
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.p.shape[0])

    def rejected(self, alpha: float) -> Tensor:
        """Bool [B]: p <= alpha (a level-alpha test by result (1))."""
        return self.p <= alpha

    def expected_p_bound(self) -> Tensor:
        """1 - (K/(K+1)) gamma-hat per test (result (2) evaluated at the estimate of gamma)."""
        return expected_p_upper_bound(self.gamma, self.k)

    def records(self) -> list[dict[str, Any]]:
        """One JSON-able record per test: what `recompute_pvalue` needs besides the model, x and the sampler's data."""
        return [
            {
                "p": float(self.p[i]), "count": int(round(float(self.p[i]) * (self.k + 1))) - 1,
                "statistic": float(self.statistic[i]), "gamma": float(self.gamma[i]),
                "features": torch.nonzero(self.feature_mask[i]).flatten().tolist(),
                "context": torch.nonzero(self.context_mask[i]).flatten().tolist(),
                "target": int(self.target[i]), "seed": self.seeds[i], "K": self.k, "M": self.m,
                "score": self.score, "sampler": self.sampler,
            }
            for i in range(len(self))
        ]


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise UsageError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_eval_mode(model)


def xrt(
    model: nn.Module,
    x: Tensor,
    features: Any,
    context: Any = None,
    *,
    sampler: Sampler,
    k: int = DEFAULT_K,
    m: int = DEFAULT_M,
    target: int | Sequence[int] | Tensor | None = None,
    score: str = "probability",
    seed: int | Sequence[int] = 0,
    batch_size: int = DEFAULT_BATCH,
) -> XRTResult:
    """B SHAP-XRT tests at once: test i tests `features[i]` (j) in the context `context[i]` (C) at the input x[i].

    x [B, ...]: the inputs (repeat an input to test several (j, C) pairs on it). `features`, `context`: one
    feature set for all tests or one per test (module `feature_masks`: an int, a sequence of flat indices, a
    bool mask shaped like one input or flat, or a bool tensor [B, ...]; a flat list of ints is ONE set, for one
    feature per test pass [[j_1], ..., [j_B]]); j must be non-empty and disjoint from
    C; C defaults to the empty set. `sampler`: a `Sampler` over the flat features. k (K >= 1) null statistics,
    m (M >= 1) draws per statistic. `target`: the class scored (None: each input's predicted class; ignored by
    score 'output' on a single-output model). `score`: 'probability' (softmax, in [0, 1]), 'logit', or 'output'
    (the model's own scalar, e.g. a probability or a Boolean). `seed`: one int (per-test seeds derived) or B ints.
    `batch_size`: rows per model call.

    Returns an `XRTResult`. Raises UsageError for bad parameters or feature sets, InvalidInputError for bad
    inputs or model outputs, ModelModeError for a model in training mode. Source: Teneggi et al., TMLR 2023,
    Algorithm 1 (module docstring)."""
    _check_model(model)
    if not isinstance(sampler, Sampler):
        raise UsageError(f"sampler must be a Sampler (MarginalSampler, GaussianSampler), got {type(sampler).__name__}")
    k, m = positive_int(k, "k"), positive_int(m, "m")
    batch_size = positive_int(batch_size, "batch_size")
    if score not in SCORES:
        raise UsageError(f"score must be one of {SCORES}, got {score!r}")
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2 or x.shape[0] == 0:
        raise InvalidInputError(f"x must be a floating tensor [B, ...] with B >= 1, got {getattr(x, 'shape', type(x))}")
    if not bool(torch.isfinite(x).all()):
        raise InvalidInputError("x has non-finite values")
    b, shape = x.shape[0], tuple(x.shape[1:])
    d = int(np.prod(shape))
    device = x.device
    jmask = feature_masks(features, b, d, shape, "features", device)
    cmask = feature_masks(context, b, d, shape, "context", device)
    empty = ~jmask.any(dim=1)
    if bool(empty.any()):
        raise UsageError(f"features: empty feature set for tests {torch.nonzero(empty).flatten().tolist()[:5]}")
    overlap = (jmask & cmask).any(dim=1)
    if bool(overlap.any()):
        raise UsageError(f"features and context overlap in tests {torch.nonzero(overlap).flatten().tolist()[:5]}")
    if sampler.num_features is not None and sampler.num_features != d:
        raise InvalidInputError(f"the sampler holds {sampler.num_features} features, the inputs have {d}")
    seeds = derive_seeds(seed, b)
    flat = x.detach().reshape(b, d)

    with torch.no_grad():
        try:
            first = model(x[:1].detach().clone())  # copies: a model may change its input in place
        except (RuntimeError, TypeError, ValueError, IndexError, AssertionError, ArithmeticError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise InvalidInputError(f"the model cannot evaluate inputs of shape {tuple(x.shape)} "
                                    f"({type(exc).__name__}: {first_line})") from exc
        if not isinstance(first, Tensor) or first.dim() not in (1, 2):
            raise InvalidInputError(f"the model must return [batch] or [batch, classes]; got {getattr(first, 'shape', type(first))}")
        single = first.dim() == 1 or (first.dim() == 2 and first.shape[1] == 1)
        if score == "output" and single:
            tgt = torch.zeros(b, dtype=torch.long, device=device)
        elif first.dim() != 2:
            raise InvalidInputError(f"score {score!r} needs logits [batch, classes], got shape {tuple(first.shape)}")
        elif target is None:
            tgt = model(x.detach().clone()).argmax(dim=1)
        else:
            tgt = check_target(target, b, first.shape[1], device)
        per_test = (k + 1) * m
        scores = torch.empty(b, per_test, dtype=torch.float64)
        pending: list[tuple[int, Tensor]] = []
        pending_rows = 0
        calls = 0

        def flush() -> None:
            nonlocal pending, pending_rows, calls
            if not pending:
                return
            rows = torch.cat([draws for _, draws in pending])
            rows_target = torch.cat([tgt[i].expand(draws.shape[0]) for i, draws in pending])
            values = []
            for start in range(0, rows.shape[0], batch_size):
                chunk = rows[start : start + batch_size]
                values.append(model_scores(model, chunk.reshape(chunk.shape[0], *shape), rows_target[start : start + batch_size], score))
                calls += 1
            flat_values = torch.cat(values).detach().double().cpu()
            if not bool(torch.isfinite(flat_values).all()):
                raise InvalidInputError("the model returned non-finite scores on sampled inputs")
            offset = 0
            for i, draws in pending:
                scores[i] = flat_values[offset : offset + draws.shape[0]]
                offset += draws.shape[0]
            pending, pending_rows = [], 0

        for i in range(b):
            rng = np.random.default_rng(seeds[i])
            with_j = sampler.sample(flat[i], jmask[i] | cmask[i], m, rng)
            without_j = sampler.sample(flat[i], cmask[i], k * m, rng)
            pending.append((i, torch.cat([with_j, without_j])))
            pending_rows += per_test
            if pending_rows >= batch_size:
                flush()
        flush()

    grouped = scores.view(b, k + 1, m)
    stats = exact_means(grouped)
    t, t_null = stats[:, 0], stats[:, 1:]
    count = (t_null >= t.unsqueeze(1)).sum(dim=1)
    p = (1 + count).double() / (k + 1)
    null_draws = grouped[:, 1:].reshape(b, -1)
    gamma = t - null_draws.mean(dim=1)
    var1 = grouped[:, 0].var(dim=1, unbiased=True) if m > 1 else torch.zeros(b, dtype=torch.float64)
    var0 = null_draws.var(dim=1, unbiased=True) if k * m > 1 else torch.zeros(b, dtype=torch.float64)
    gamma_se = torch.sqrt(var1 / m + var0 / (k * m))
    bounded = bool(((scores >= 0) & (scores <= 1)).all())
    return XRTResult(
        p=p, statistic=t, null_statistics=t_null, gamma=gamma, gamma_se=gamma_se, target=tgt.cpu(),
        feature_mask=jmask.cpu(), context_mask=cmask.cpu(), seeds=seeds, k=k, m=m, score=score,
        sampler=sampler.spec(), bounded=bounded, model_calls=calls, model_inputs=b * per_test,
    )


def recompute_pvalue(
    model: nn.Module,
    x: Tensor,
    features: Any,
    context: Any,
    *,
    k: int,
    m: int,
    sampler: Sampler,
    seed: int,
    target: int | None = None,
    score: str = "probability",
) -> float:
    """The p-value of one stored test recomputed from its per-test `seed` (a record of `XRTResult.records()`
    holds features, context, target, seed, K, M, score and the sampler spec; rebuild the sampler with
    `make_sampler`). x: the one input [...] (no batch axis). A checker compares the result with the stored p
    (equal on the same machine; see the module docstring for cross-device ties)."""
    if not isinstance(x, Tensor):
        raise InvalidInputError(f"x must be a tensor, got {type(x).__name__}")
    result = xrt(model, x.unsqueeze(0), [features], [context], sampler=sampler, k=k, m=m,
                 target=None if target is None else [target], score=score, seed=[seed])
    return float(result.p[0])


def recheck_records(model: nn.Module, x: Tensor, records: Sequence[dict[str, Any]], sampler: Sampler) -> list[bool]:
    """For each record (of `XRTResult.records()`, all on the one input x [...]), whether its p-value is
    recomputed exactly from its seed; UsageError when the sampler's spec differs from the recorded one."""
    out = []
    for rec in records:
        if rec["sampler"] != sampler.spec():
            raise UsageError("the sampler does not match the recorded sampler spec")
        p = recompute_pvalue(model, x, rec["features"], rec["context"], k=rec["K"], m=rec["M"], sampler=sampler,
                             seed=rec["seed"], target=rec["target"], score=rec["score"])
        out.append(p == rec["p"])
    return out


@dataclass
class ShapleyXRT:
    """Every context C of one player j among n players (`shapley_xrt`): `contexts` (tuples of player indices),
    `weights` w_C [2^(n-1)], the tests `result` (one per context, same order), `phi` = sum_C w_C gamma-hat_C (an
    unbiased estimate of phi_j), `weighted_p` = sum_C w_C p_C and its bound 1 - (K/(K+1)) phi (result (4) at the
    estimate)."""

    player: int
    contexts: list[tuple[int, ...]]
    weights: Tensor
    result: XRTResult
    phi: float
    weighted_p: float


def shapley_xrt(
    model: nn.Module,
    x: Tensor,
    players: Sequence[Any],
    player: int,
    *,
    sampler: Sampler,
    k: int = DEFAULT_K,
    m: int = DEFAULT_M,
    target: int | None = None,
    score: str = "probability",
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH,
) -> ShapleyXRT:
    """The SHAP-XRT tests of player `player` in all 2^(n-1) contexts made of the other players (n = len(players)
    feature sets, disjoint, e.g. image tiles), for one input x [...]: one batched `xrt` call. Meant for small n
    (UsageError for n > 12 or overlapping players)."""
    n = len(players)
    if not 1 <= n <= 12:
        raise UsageError(f"shapley_xrt enumerates 2^(n-1) contexts: 1 <= n <= 12 players, got {n}")
    if not isinstance(player, numbers.Integral) or not 0 <= player < n:
        raise UsageError(f"player must be an index in [0, {n}), got {player!r}")
    if not isinstance(x, Tensor) or x.dim() < 1:
        raise InvalidInputError("x must be one input tensor [...]")
    shape, d = tuple(x.shape), x.numel()
    masks = [_one_mask(pl, d, shape, f"players[{i}]", x.device) for i, pl in enumerate(players)]
    total = torch.stack(masks).sum(dim=0)
    if bool((total > 1).any()):
        raise UsageError("players overlap")
    others = [i for i in range(n) if i != player]
    contexts = [c for size in range(n) for c in combinations(others, size)]
    cmasks = torch.stack([
        torch.stack([masks[i] for i in c]).any(dim=0) if c else torch.zeros(d, dtype=torch.bool, device=x.device)
        for c in contexts
    ])
    weights = torch.tensor([shapley_weight(len(c), n) for c in contexts], dtype=torch.float64)
    b = len(contexts)
    result = xrt(model, x.unsqueeze(0).expand(b, *shape), masks[player], cmasks, sampler=sampler, k=k, m=m,
                 target=target, score=score, seed=seed, batch_size=batch_size)
    return ShapleyXRT(player, contexts, weights, result, float((weights * result.gamma).sum()),
                      float((weights * result.p).sum()))


# ----------------------------------------------------------------------------------------------------------
# Explainer
# ----------------------------------------------------------------------------------------------------------


def grid_regions(shape: Sequence[int], tile: int) -> Tensor:
    """A region label map for inputs of `shape` (C, H, W) or (H, W): square tiles of side `tile` (all channels of a
    pixel in the same region), labels row-major from 0. UsageError when tile does not divide H and W."""
    shape = tuple(shape)
    h, w = shape[-2], shape[-1]
    tile = positive_int(tile, "tile")
    if h % tile or w % tile:
        raise UsageError(f"tile {tile} must divide the image size {h}x{w}")
    rows = torch.arange(h) // tile
    cols = torch.arange(w) // tile
    labels = rows[:, None] * (w // tile) + cols[None, :]
    return labels.expand(*shape[:-2], h, w).clone()


def region_labels(spec: str, shape: Sequence[int]) -> Tensor:
    """A region label map [d] (flat, labels 0..R-1) for inputs of `shape` from a spec: "quadrants" (the four
    quadrants of an image (C, H, W) or (H, W) with even H and W), "tile:S" (square tiles of side S, `grid_regions`)
    or "features" (every feature its own region). UsageError for anything else."""
    shape = tuple(int(s) for s in shape)
    d = int(np.prod(shape))
    if spec == "features":
        return torch.arange(d)
    if spec == "quadrants" or spec.startswith("tile:"):
        if len(shape) < 2:
            raise UsageError(f"regions {spec!r} need image inputs (C, H, W) or (H, W), got shape {shape}")
        if spec == "quadrants":
            if shape[-2] % 2 or shape[-1] % 2 or shape[-2] != shape[-1]:
                raise UsageError(f"quadrants need a square image with an even side, got {shape[-2]}x{shape[-1]}")
            return grid_regions(shape, shape[-1] // 2).reshape(-1)
        try:
            side = int(spec[5:])
        except ValueError:
            raise UsageError(f"tile:S needs an integer side S, got {spec!r}") from None
        return grid_regions(shape, side).reshape(-1)
    raise UsageError(f"regions must be 'quadrants', 'tile:S' or 'features', got {spec!r}")


class SHAPXRT(Explainer):
    """`SHAPXRT(model, sampler, regions=None, context="others", k=99, m=16, alpha=0.05, seed=0, batch_size=8192)`.

    For every example and region r (a label map `regions` shaped like one input, labels 0..R-1; None: every
    feature is a region), the SHAP-XRT test of j = r with C = the other regions held at x ("others") or C = the
    empty set ("empty"), scoring the class probability of the target. Attributions: gamma-hat_{r,C} (the estimated
    marginal contribution, larger = more important) on the features of r. Diagnostics [N, R]: "p_values",
    "gamma", "rejected" (p <= alpha), "seeds" (per-test seeds for `recompute_pvalue`). Source: Teneggi et al.,
    TMLR 2023 (module docstring)."""

    method_name = "shap-xrt"

    def __init__(self, model: nn.Module, sampler: Sampler, regions: Tensor | None = None, context: str = "others",
                 k: int = DEFAULT_K, m: int = DEFAULT_M, alpha: float = 0.05, seed: int = 0,
                 batch_size: int = DEFAULT_BATCH) -> None:
        super().__init__(model)
        if not isinstance(sampler, Sampler):
            raise UsageError(f"sampler must be a Sampler, got {type(sampler).__name__}")
        if context not in ("others", "empty"):
            raise UsageError(f"context must be 'others' or 'empty', got {context!r}")
        self.k, self.m = positive_int(k, "k"), positive_int(m, "m")
        alpha = nonnegative_number(alpha, "alpha")
        if alpha > 1:
            raise UsageError(f"alpha must be in [0, 1], got {alpha}")
        if regions is not None:
            regions = torch.as_tensor(regions)
            if regions.is_floating_point() or regions.dtype == torch.bool or int(regions.min()) < 0:
                raise UsageError("regions must be a non-negative integer label map")
        self.sampler, self.regions, self.context = sampler, regions, context
        self.alpha, self.seed, self.batch_size = alpha, int(seed), positive_int(batch_size, "batch_size")

    def params(self) -> dict[str, object]:
        return {"k": self.k, "m": self.m, "context": self.context, "alpha": self.alpha, "seed": self.seed,
                "sampler": self.sampler.spec(), "regions": None if self.regions is None else int(self.regions.max()) + 1}

    def _explain(self, inputs: Tensor, target: Tensor) -> Explanation:
        n, shape = inputs.shape[0], tuple(inputs.shape[1:])
        d = int(np.prod(shape))
        if self.regions is None:
            labels = torch.arange(d, device=inputs.device)
        else:
            if tuple(self.regions.shape) not in (shape, (d,)):
                raise InvalidInputError(f"regions has shape {tuple(self.regions.shape)}, inputs have {shape}")
            labels = self.regions.reshape(-1).to(inputs.device)
        r = int(labels.max()) + 1
        region_masks = labels.unsqueeze(0) == torch.arange(r, device=inputs.device).unsqueeze(1)  # [R, d]
        if not bool(region_masks.any(dim=1).all()):
            raise UsageError("regions must use every label 0..R-1")
        jm = region_masks.unsqueeze(0).expand(n, r, d).reshape(n * r, d)
        cm = (~jm) if self.context == "others" else torch.zeros_like(jm)
        x = inputs.detach().unsqueeze(1).expand(n, r, *shape).reshape(n * r, *shape)
        res = xrt(self.model, x, jm, cm, sampler=self.sampler, k=self.k, m=self.m,
                  target=target.repeat_interleave(r), score="probability", seed=self.seed, batch_size=self.batch_size)
        gamma = res.gamma.view(n, r).to(inputs)
        attributions = (gamma @ region_masks.to(inputs)).view(n, *shape)
        p = res.p.view(n, r)
        diagnostics = {"p_values": p, "gamma": res.gamma.view(n, r), "rejected": p <= self.alpha,
                       "seeds": torch.tensor(res.seeds, dtype=torch.long).view(n, r)}
        return Explanation(attributions, target, self.method_name, self.params(), diagnostics)
