"""XRT. SHAP-XRT (Teneggi, Bharti, Romano & Sulam, "SHAP-XRT: The Shapley Value Meets Conditional Independence
Testing", TMLR 2023; ANCHORS 5.3), as implemented in certify.explain.shap_xrt.

Test: T = mean of M draws of f(X~_{C u j}), T~_k (k = 1..K) the same for X~_C, p = (1 + #{k: T~_k >= T})/(K + 1);
gamma_{j,C} = v(C u j) - v(C) with v(S) = E f(X~_S).

(a) Validity (must-hold, a theorem the package relies on): under H0_{j,C}: f(X~_{C u j}) =d f(X~_C),
    P(p <= alpha) <= alpha. Checked as the empirical rejection rate over r seeded repetitions:
    rate <= alpha + 3 sqrt(alpha (1 - alpha)/r), alpha in {0.05, 0.1, 0.25}, on three models where the null holds
    exactly for the sampler's law: a sigmoid-linear model with theta_j = 0 and j independent of the other
    (correlated) features (Gaussian conditional sampler); the same model with the marginal "joint" sampler over
    independent reference rows; the Boolean game below with j in a block already switched on by a visible
    feature of C (many ties: the test is conservative there). Also: p in [1/(K+1), 1] always (must-hold).
(b) Expectation bound (paper Theorem 1; must-hold: proof 1[T~ >= T] <= 1 - T + T~ for T, T~ in [0, 1], and
    E T = v(C u j), E T~ = v(C)): E p <= 1 - (K/(K+1)) gamma_{j,C} for f in [0, 1]. On the Boolean game
    f = AND over blocks of OR_{i in block} 1[|x_i| >= t] with hidden features i.i.d. N(0, 1) (ANCHORS 5.3 oracle:
    q = 2(1 - Phi(t)); a block is 1 w.p. 1 if a visible feature has |x_i| >= t, else w.p. 1 - (1 - q)^{#hidden};
    v(S) is the product), f(X~_S) is Bernoulli(v(S)), so T ~ Bin(M, v(C u j))/M and T~ ~ Bin(M, v(C))/M are
    independent and E p = (1 + K P(T~ >= T))/(K + 1) is exact (binomial sums). Checked: the exact E p against
    the bound; the Monte Carlo mean of p (r seeded repetitions) against the exact E p (|difference| <= 4 SE:
    the implementation) and against the bound (<= bound + 3 SE).
    Lower bounds for gamma < 0: the elementary E p >= (1 + K |gamma|)/(K + 1) (must-hold: 1[T~ >= T] >=
    (T~ - T)^+) and the paper's E p >= (1 + K gamma^2)/(K + 1) (paper-claim; implied by the elementary one).
    Global form (result (4) of ANCHORS 5.3, "unverified", read as derived from (2) by averaging with the Shapley
    weights): sum_C w_C E p_{j,C} <= 1 - (K/(K+1)) phi_j (must-hold, exact) and its K -> infinity form
    phi_j <= 1 - sum_C w_C P(T~_C >= T_C) (paper-claim as read), with exact phi_j from the oracle.
(c) Tight case (must-hold): f(x) = 1[x_0 > 0] with x_0 = 1 and a reference whose rows all have x_0 = -1: T = 1 and
    T~ = 0 on every draw, so p = 1/(K+1) exactly on every seed and equals the bound 1 - (K/(K+1)) gamma at gamma = 1.
Also must-hold: p recomputed from the stored per-test seed equals p; the p-values do not depend on the batch.
"""
from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import torch
from scipy.stats import binom, norm

from certify.explain.shap_xrt import (
    GaussianSampler,
    MarginalSampler,
    expected_p_lower_bound,
    expected_p_upper_bound,
    recompute_pvalue,
    shapley_weight,
    xrt,
)
from proofs_checks.framework import CheckContext, Report, theorem

ALPHAS = (0.05, 0.1, 0.25)
BLOCKS = ((0, 1, 2), (3, 4, 5))
THRESHOLD = 1.5


class LinearSigmoid(torch.nn.Module):
    """f(x) = sigmoid(theta^T x), a scalar in (0, 1) per row."""

    def __init__(self, theta) -> None:
        super().__init__()
        self.register_buffer("theta", torch.as_tensor(theta, dtype=torch.float64))

    def forward(self, x):
        return torch.sigmoid(x.reshape(x.shape[0], -1).to(self.theta) @ self.theta)


class BooleanGame(torch.nn.Module):
    """f(x) = prod over blocks of max_{i in block} 1[|x_i| >= t] (ANCHORS 5.3), in {0, 1}."""

    def __init__(self, blocks=BLOCKS, t: float = THRESHOLD) -> None:
        super().__init__()
        self.blocks, self.t = blocks, t

    def forward(self, x):
        on = (x.reshape(x.shape[0], -1).abs() >= self.t).to(torch.float64)
        out = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
        for block in self.blocks:
            out = out * on[:, list(block)].amax(dim=1)
        return out


class Indicator(torch.nn.Module):
    """f(x) = 1[x_0 > 0]."""

    def forward(self, x):
        return (x.reshape(x.shape[0], -1)[:, 0] > 0).to(torch.float64)


def game_value(x: np.ndarray, fixed: set[int], blocks=BLOCKS, t: float = THRESHOLD) -> float:
    """v(S) = E f(X~_S) of the Boolean game, hidden features i.i.d. N(0, 1) (exact)."""
    q = 2 * (1 - norm.cdf(t))
    value = 1.0
    for block in blocks:
        if any(i in fixed and abs(x[i]) >= t for i in block):
            continue
        hidden = sum(1 for i in block if i not in fixed)
        value *= 1 - (1 - q) ** hidden
    return value


def prob_null_ge(a: float, b: float, m: int) -> float:
    """P(T~ >= T) with M T ~ Bin(M, a), M T~ ~ Bin(M, b) independent."""
    s = np.arange(m + 1)
    pmf_t = binom.pmf(s, m, a)
    sf_null = binom.sf(s - 1, m, b)  # P(Bin(M, b) >= s)
    return float(np.sum(pmf_t * sf_null))


def exact_expected_p(a: float, b: float, m: int, k: int) -> float:
    return (1 + k * prob_null_ge(a, b, m)) / (k + 1)


def _validity(ctx: CheckContext, report: Report, rng: np.random.Generator) -> None:
    reps = ctx.examples(1000, 4000)
    k, m = 99, 8
    rate_t = report.tally(f"null rejection rate <= alpha + 3 sqrt(alpha(1-alpha)/r), alpha in {ALPHAS}", kind="property")
    range_t = report.tally("p in [1/(K+1), 1] and a multiple of 1/(K+1)", kind="property")
    rates = report.tally("null rejection rate at alpha = 0.05", role="evidence", kind="measurement")

    d = 5
    cov = np.eye(d)
    cov[2:, 2:] = 0.6 + 0.4 * np.eye(3)  # features 2..4 correlated; 0 (= j) and 1 independent of them
    theta = [0.0, 1.0, 1.5, -1.0, 0.5]
    linear = LinearSigmoid(theta).eval()
    gaussian = GaussianSampler(np.zeros(d), cov)
    xs = torch.as_tensor(rng.multivariate_normal(np.zeros(d), cov, size=reps))
    reference = torch.as_tensor(rng.standard_normal((500, d)))
    joint = MarginalSampler(reference, "joint")
    game = BooleanGame().eval()
    xg = torch.as_tensor(rng.standard_normal((reps, 6)) * 0.5)
    xg[:, 3] = 4.0  # block 2 switched on by feature 3 (in C); block 1 decided by the hidden draws
    cases = [
        ("sigmoid, theta_j = 0, Gaussian conditional, C = {2, 3}", linear, xs, 0, [2, 3], gaussian),
        ("sigmoid, theta_j = 0, marginal joint sampler, C = {}", linear, xs, 0, None, joint),
        ("Boolean game, j = 4 in a block on via x_3 in C = {0, 3}", game, xg, 4, [0, 3], GaussianSampler(np.zeros(6), np.eye(6))),
    ]
    for label, model, x, j, c, sampler in cases:
        res = xrt(model, x, j, c, sampler=sampler, k=k, m=m, score="output", seed=int(rng.integers(2**31)))
        grid = res.p * (k + 1)
        ok = bool(((res.p >= 1 / (k + 1) - 1e-15) & (res.p <= 1 + 1e-15)).all()) and bool(torch.allclose(grid, grid.round(), atol=1e-9))
        range_t.record_true(ok, label)
        for alpha in ALPHAS:
            rate = float((res.p <= alpha + 1e-12).double().mean())
            rate_t.record(rate, alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps), f"{label}, alpha {alpha}, r {reps}")
            if alpha == 0.05:
                rates.observe(rate)
                report.note(f"(a) {label}: rejection rate {rate:.4f} at alpha 0.05 over r = {reps} (K = {k}, M = {m})")


def _expectation(ctx: CheckContext, report: Report, rng: np.random.Generator) -> None:
    reps = ctx.examples(400, 2000)
    cases = ctx.examples(16, 40)
    m = 4
    exact_t = report.tally("exact E p <= 1 - (K/(K+1)) gamma (Boolean game, binomial closed form)", kind="closed-form")
    mc_t = report.tally("Monte Carlo mean p <= 1 - (K/(K+1)) gamma + 3 SE", kind="property")
    impl_t = report.tally("|Monte Carlo mean p - exact E p| <= 4 SE (implementation against the closed form)", kind="property")
    low_t = report.tally("gamma < 0: exact E p >= (1 + K|gamma|)/(K+1) (elementary)", kind="closed-form")
    low_paper = report.tally("gamma < 0: exact E p >= (1 + K gamma^2)/(K+1) (paper)", role="paper-claim", kind="closed-form")
    margin = report.tally("exact E p - bound (<= 0; 0 = tight)", role="evidence", kind="measurement")
    game = BooleanGame().eval()
    sampler = GaussianSampler(np.zeros(6), np.eye(6))
    n = 6
    batch_x, batch_j, batch_c, meta = [], [], [], []
    for case in range(cases):
        x = rng.standard_normal(n) * 0.7
        signals = rng.random(n) < 0.35
        x[signals] = 4.0 + rng.standard_normal(int(signals.sum())) * 0.3
        j = int(rng.integers(n))
        others = [i for i in range(n) if i != j]
        c = sorted(int(i) for i in others if rng.random() < 0.5)
        k = (9, 49)[case % 2]
        a, b = game_value(x, set(c) | {j}), game_value(x, set(c))
        meta.append((x, j, c, k, a, b))
    for x, j, c, k, a, b in meta:
        gamma = a - b
        ep = exact_expected_p(a, b, m, k)
        bound = expected_p_upper_bound(gamma, k)
        label = f"x={np.round(x, 2).tolist()}, j={j}, C={c}, K={k}, M={m}, gamma={gamma:.4f}"
        exact_t.record(ep, bound, label, atol=1e-12)
        margin.observe(ep - bound)
        if gamma < 0:
            low_t.record(expected_p_lower_bound(gamma, k), ep, label, atol=1e-12)
            low_paper.record((1 + k * gamma**2) / (k + 1), ep, label, atol=1e-12)
        res = xrt(game, torch.as_tensor(x).unsqueeze(0).expand(reps, n), j, c, sampler=sampler, k=k, m=m,
                  score="output", seed=int(rng.integers(2**31)))
        mean, se = float(res.p.mean()), float(res.p.std(unbiased=True)) / math.sqrt(reps)
        mc_t.record(mean, bound + 3 * se, label, atol=1e-12)
        impl_t.record(abs(mean - ep), 4 * se, label, atol=1e-12)
    report.note(f"(b) {cases} Boolean-game cases (t = {THRESHOLD}, blocks {BLOCKS}), K in (9, 49), M = {m}, r = {reps}")

    # (4) global form, exact: all 2^(n-1) contexts of one feature
    glob = report.tally("sum_C w_C E p_{j,C} <= 1 - (K/(K+1)) phi_j (exact; (2) averaged)", kind="closed-form")
    limit = report.tally("phi_j <= 1 - sum_C w_C P(T~_C >= T_C) (K -> infinity form of (4), as read)",
                         role="paper-claim", kind="closed-form")
    k = 49
    for x, j, _, _, _, _ in meta:
        others = [i for i in range(n) if i != j]
        phi = weighted_ep = weighted_prob = 0.0
        for size in range(n):
            for ctxs in combinations(others, size):
                w = shapley_weight(size, n)
                a, b = game_value(x, set(ctxs) | {j}), game_value(x, set(ctxs))
                phi += w * (a - b)
                weighted_ep += w * exact_expected_p(a, b, m, k)
                weighted_prob += w * prob_null_ge(a, b, m)
        label = f"x={np.round(x, 2).tolist()}, j={j}, phi={phi:.4f}"
        glob.record(weighted_ep, 1 - k / (k + 1) * phi, label, atol=1e-12)
        limit.record(phi, 1 - weighted_prob, label, atol=1e-12)


def _tight(ctx: CheckContext, report: Report, rng: np.random.Generator) -> None:
    tight = report.tally("T = 1, T~ = 0: p = 1/(K+1) exactly, = the bound at gamma = 1", kind="closed-form")
    model = Indicator().eval()
    d = 4
    reference = torch.as_tensor(rng.standard_normal((64, d)))
    reference[:, 0] = -1.0
    sampler = MarginalSampler(reference, "product")
    x = torch.as_tensor(rng.standard_normal((ctx.examples(20, 100), d)))
    x[:, 0] = 1.0
    for k in (1, 9, 99):
        res = xrt(model, x, 0, [1], sampler=sampler, k=k, m=3, score="output", seed=int(rng.integers(2**31)))
        worst = float((res.p - 1 / (k + 1)).abs().max())
        tight.record_close(worst, 0.0, 1e-15, f"K={k}: max |p - 1/(K+1)| over {len(res)} seeds")
        tight.record_close(float(expected_p_upper_bound(res.gamma, k).max()), 1 / (k + 1), 1e-12, f"K={k}: bound at gamma-hat = 1")


def _recompute(ctx: CheckContext, report: Report, rng: np.random.Generator) -> None:
    same = report.tally("p recomputed from the stored seed == p; p independent of the batch", kind="property")
    d = 5
    model = LinearSigmoid([1.0, -2.0, 0.5, 0.0, 1.0]).eval()
    cov = 0.5 * np.eye(d) + 0.5
    sampler = GaussianSampler(np.zeros(d), cov)
    x = torch.as_tensor(rng.multivariate_normal(np.zeros(d), cov, size=8))
    js = [int(i) for i in rng.integers(0, d, size=8)]
    cs = [[int(i) for i in range(d) if i != j and rng.random() < 0.5] for j in js]
    jsets = [[j] for j in js]  # one set per test (a flat list of ints would be ONE feature set)
    res = xrt(model, x, jsets, cs, sampler=sampler, k=19, m=5, score="output", seed=7, batch_size=37)
    res_big = xrt(model, x, jsets, cs, sampler=sampler, k=19, m=5, score="output", seed=7, batch_size=100000)
    same.record_true(bool(torch.equal(res.p, res_big.p)), "batch_size 37 vs 100000")
    for i in range(len(res)):
        p = recompute_pvalue(model, x[i], js[i], cs[i], k=19, m=5, sampler=sampler, seed=res.seeds[i], score="output")
        same.record_true(p == float(res.p[i]), f"test {i}: recomputed {p} vs stored {float(res.p[i])}")


@theorem("XRT", "SHAP-XRT: validity under the null; E p <= 1 - K/(K+1) gamma; tight case",
         "Teneggi, Bharti, Romano & Sulam, TMLR 2023 (Theorem 1); ANCHORS 5.3")
def check(ctx: CheckContext, report: Report) -> None:
    rng = np.random.default_rng(ctx.seed + 1515)
    _validity(ctx, report, rng)
    _expectation(ctx, report, rng)
    _tight(ctx, report, rng)
    _recompute(ctx, report, rng)
