"""Certified top-k overlap of a Gaussian-smoothed [0, 1]-valued map, estimated by Monte Carlo (Levine, Singla &
Feizi, "Certifiably Robust Interpretation in Deep Learning", arXiv 2019, Sec. 3: Sparsified
SmoothGrad; the pairing is the one of their public code, anonICLR5/robust-interpretation,
`get_certified_top_k_intersect_for_one_sample`; the proof below is ours).

Setting. b: R^D -> [0, 1]^d is any measurable map (for Sparsified SmoothGrad, the indicator of the top-l0
entries of |grad f_c|), and its smoothing with an ABSOLUTE noise level sigma (the same at every point) is

    p_i(x) = E b_i(x + sigma Z),   Z ~ N(0, I_D),   i = 1..d.

The estimate p_hat_i = (1/n) sum_t b_i(x + sigma Z_t) uses n iid draws shared by all features.

Step 1 (smoothing bound: the Lipschitz lemma of Salman et al., "Provably Robust Deep Learning via
Adversarially Trained Smoothed Classifiers", NeurIPS 2019, as used by Levine et al.). For a [0, 1]-valued h and
H(x) = E h(x + sigma Z), the map x -> Phi^-1(H(x)) is (1/sigma)-Lipschitz in l2. Hence for ||delta||_2 <= eps

    Phi(Phi^-1(p_i(x)) - eps/sigma) <= p_i(x + delta) <= Phi(Phi^-1(p_i(x)) + eps/sigma),

with Phi^-1(0) = -inf and Phi^-1(1) = +inf (the bounds are then 0 or 1).

Step 2 (sampling error; Hoeffding and a union bound over the d features). With
err = sqrt(log(2d / (1 - eta)) / (2n)), P(|p_hat_i - p_i(x)| <= err for every i) >= eta over the draws.
On that event p_i(x) lies in [clip(p_hat_i - err), clip(p_hat_i + err)] (clip into [0, 1]), so by the
monotonicity of Phi and Phi^-1, for every x' with ||x' - x||_2 <= eps and every i,

    lower_i = Phi(Phi^-1(clip(p_hat_i - err)) - eps/sigma) <= p_i(x') <= Phi(Phi^-1(clip(p_hat_i + err)) + eps/sigma) = upper_i.

Step 3 (the pairing). Sort the features by p_hat, descending, ties to the lower index (a stable sort); r(1),
..., r(d) are the ranks and T_hat = {r(1), ..., r(k)} is the top-k set of the reported map p_hat
(`certify.metrics.similarity.topk_mask(p_hat, k)`). For m = 1..k pair rank m with rank 2k + 1 - m and call
the pair certified when

    Phi^-1(clip(p_hat_r(m) - err)) - Phi^-1(clip(p_hat_r(2k+1-m) + err)) > 2 eps / sigma,

i.e. lower_r(m) > upper_r(2k+1-m) (Levine et al.'s test Phi(Phi^-1(p_hat - err) - 2 eps/sigma) - err > p_hat';
a rank beyond d has no feature: its pair is certified). The left side falls as m grows (p_hat_r(m) falls, its
partner's rises), so the certified pairs are m = 1..c for a count c: `certified_topk` returns c.

Claim. On the event of Step 2 (probability >= eta over the n draws), for every x' with ||x' - x||_2 <= eps
(x' = x included) and EVERY top-k set T' of the true smoothed map p(x') (any tie rule: any k features none
of which has a smaller p(x') than a feature left out), |T_hat & T'| >= c.

Proof. Let A = {r(1), ..., r(c)} and B = {r(2k+1-c), ..., r(d)} (empty when 2k + 1 - c > d). For a in A and
b in B, rank(a) <= c and rank(b) >= 2k + 1 - c, so p_hat_a >= p_hat_r(c) and p_hat_b <= p_hat_r(2k+1-c); by the
monotonicity of the bounds in p_hat and the certified pair c: p_a(x') >= lower_a >= lower_r(c) >
upper_r(2k+1-c) >= upper_b >= p_b(x'). So every feature of A beats every feature of B strictly at x'.
T_hat = r(1..k) contains A and avoids B (c <= k < 2k + 1 - c). Either T' meets B: then it holds some b in B
and, as a top-k set, every feature with a larger value than b, so A is in T' and |T_hat & T'| >= |A| = c.
Or T' avoids B: then T' and T_hat are two k-subsets of the 2k - c features outside B, so
|T_hat & T'| >= 2k - (2k - c) = c. QED

What is certified, and what is not. The statement compares the REPORTED top-k set (of the estimate p_hat at
x) with the TRUE smoothed map's top-k at any point of the ball; this is the analogue of MoreauGrad's top-k
claim (`certify.bounds.stability.topk_kept`: the computed map at x against the exact map at x + delta). The
same count does NOT bound the overlap of the true maps' top-k sets at x and at x' when sampling error is
present: a true top-k set at x may hold a feature of B (when features of the middle ranks c+1..2k-c are
within sampling error of it) while the one at x' avoids B, and then only |T & T'| >= 2c - k follows (from
|T & T'| >= |T_hat & T| + |T_hat & T'| - k, both terms >= c by the claim). Levine et al. state the bound for
the true maps and apply it to estimates; we state the part that is proved.

Conditions for the claim: sigma is absolute (a noise level that depends on x, such as a fraction of x's
range, changes the smoothed map with x and Step 1 fails); b is a fixed function of the point (deterministic,
including its tie rule); the n draws are independent of everything else.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import norm
from torch import Tensor

from certify.errors import InvalidInputError, UsageError
from certify.validation import nonnegative_number, positive_int, positive_number
from certify.vocabulary import BUILDER_MARGIN, round_up


def hoeffding_error(samples: int, features: int, confidence: float) -> float:
    """err = sqrt(log(2 d / (1 - eta)) / (2 n)) (rounded up): with probability >= eta = `confidence` over n =
    `samples` iid draws, every one of the d = `features` sample means of [0, 1]-valued variables is within
    err of its expectation (Hoeffding's inequality and a union bound). UsageError for n < 1, d < 1 or eta
    outside (0, 1)."""
    positive_int(samples, "samples")
    positive_int(features, "features")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise UsageError(f"confidence must lie in (0, 1), got {confidence!r}")
    return round_up(math.sqrt(math.log(2 * features / (1 - confidence)) / (2 * samples)))


def _estimates(p_hat: Tensor) -> np.ndarray:
    if not isinstance(p_hat, Tensor) or p_hat.dim() != 2 or p_hat.shape[1] < 1:
        raise InvalidInputError(f"p_hat must be a tensor [N, d], got {getattr(p_hat, 'shape', type(p_hat).__name__)}")
    values = p_hat.detach().cpu().double().numpy()
    if not (np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()):
        raise InvalidInputError("p_hat must hold estimated probabilities in [0, 1]")
    return values


def _z_bounds(values: np.ndarray, err: float) -> tuple[np.ndarray, np.ndarray]:
    """Phi^-1 of the clipped Hoeffding interval of each p_i(x): (-inf allowed, +inf allowed)."""
    return norm.ppf(np.clip(values - err, 0.0, 1.0)), norm.ppf(np.clip(values + err, 0.0, 1.0))


def smoothed_bounds(p_hat: Tensor, eps: float, sigma: float, samples: int, confidence: float) -> tuple[Tensor, Tensor]:
    """(lower, upper), each [N, d] float64: with probability >= `confidence` over the draws, jointly for every
    feature i and every x' with ||x' - x||_2 <= eps, lower_i <= p_i(x') <= upper_i, where p is the true
    smoothed map estimated by `p_hat` [N, d] from `samples` draws at noise level `sigma` (module docstring,
    Steps 1-2). `eps` may be 0 (the confidence interval at x). UsageError for bad parameters,
    InvalidInputError for p_hat outside [0, 1]."""
    values = _estimates(p_hat)
    shift = _radius(eps, sigma)
    z_lo, z_hi = _z_bounds(values, hoeffding_error(samples, values.shape[1], confidence))
    lower, upper = norm.cdf(z_lo - shift), norm.cdf(z_hi + shift)
    return torch.from_numpy(lower), torch.from_numpy(upper)


def certified_topk(p_hat: Tensor, k: int, eps: float, sigma: float, samples: int, confidence: float) -> Tensor:
    """Certified top-k overlap counts c [N] (int64): with probability >= `confidence` over the `samples` draws
    behind `p_hat` [N, d], for every x' with ||x' - x||_2 <= eps, every top-k set of the true smoothed map at x'
    shares at least c features with the top-k set of p_hat (stable sort, ties to the lower index). c / k is
    the certified lower bound on the top-k intersection ratio. Module docstring: pairing and proof.
    UsageError for k outside 1..d or bad eps, sigma, samples, confidence; InvalidInputError for p_hat."""
    values = _estimates(p_hat)
    n, d = values.shape
    k = positive_int(k, "k")
    if k > d:
        raise UsageError(f"k must lie in 1..{d}, got {k}")
    shift = 2.0 * _radius(eps, sigma)
    z_lo, z_hi = _z_bounds(values, hoeffding_error(samples, d, confidence))
    order = torch.sort(torch.from_numpy(values), dim=1, descending=True, stable=True).indices.numpy()
    z_lo, z_hi = np.take_along_axis(z_lo, order, 1), np.take_along_axis(z_hi, order, 1)
    # partner of rank m (1-based) is rank 2k + 1 - m; ranks beyond d have no feature: -inf
    partner = np.full((n, 2 * k), -np.inf)
    partner[:, : min(2 * k, d)] = z_hi[:, : min(2 * k, d)]
    partner = partner[:, k : 2 * k][:, ::-1]
    absent = np.arange(2 * k, k, -1) > d  # rank 2k + 1 - m beyond d, for m = 1..k
    with np.errstate(invalid="ignore"):  # inf - inf (an uncertain pair) is NaN and compares False
        gap = z_lo[:, :k] - partner
        slack = BUILDER_MARGIN * (np.abs(z_lo[:, :k]) + np.abs(partner) + shift)
        certified = absent | (gap > shift + np.where(np.isfinite(slack), slack, 0.0))
    return torch.from_numpy(np.cumprod(certified, axis=1).sum(axis=1)).long()


def _radius(eps: float, sigma: float) -> float:
    """eps / sigma, with eps >= 0 finite and sigma > 0 finite."""
    return nonnegative_number(eps, "eps") / positive_number(sigma, "sigma")
