"""SKIT. Testing by betting is anytime-valid (Teneggi & Sulam, NeurIPS 2024, arXiv 2405.19146, section 3;
Podkopaev et al., ICML 2023; ANCHORS 5.4), implemented in certify.explain.skit.

Setting: wealth K_0 = 1, K_t = K_{t-1}(1 + kappa_t v_t), v_t = tanh(g_t/s_t) in [-1, 1], kappa_t in [0, 1/2]
chosen by online Newton step from v_1..v_{t-1}; g_t is the HSIC witness on a new pair minus its swapped pairs
(SKIT) or the MMD witness on u_t minus u~_t (c-SKIT, u~ with Z_j redrawn from the exact conditional
P(Z_j | Z_{-j})). Under the null the payoff has conditional mean 0 given the past (exchangeable observed /
null samples, antisymmetric g), so K is a non-negative martingale and Ville's inequality gives

    P_H0( exists t <= tau_max : K_t >= 1/alpha ) <= alpha.

Claims checked on the synthetic model Z1 ~ N(1,1), Z2 ~ N(-1,1), Z3 = Z1 + N(0,1),
Y = sigmoid(b1 Z1 + b2 Z2 Z3 + b3 Z3) + N(0, 0.01^2), alpha = 0.05:

1. (must-hold, statistical) Type-I error: over r = 100 seeded runs of each null (SKIT for Z2 with
   b = (1, 0, 1); c-SKIT for Z2 with b = (1, 0, 1); c-SKIT for Z1 given Z2, Z3 with b = (0, 1, 1), which is
   marginally dependent), the rejection rate is at most alpha + 3 sqrt(alpha(1 - alpha)/r) (= 0.115 at
   r = 100): Ville bounds the true rate by alpha; the 3-sigma term is the Monte Carlo tolerance of the
   estimate (a true rate of alpha exceeds it with probability about 0.2%).
2. (must-hold, exact) At every step of every run: K_t > 0, 0 <= kappa_t <= 1/2, K_t/K_{t-1} >= 1/2, the
   recorded bets are the ONS bets of the recorded payoffs (predictable), |v_t| <= 1, and the anytime
   p-value min(1, 1/max_{s<=tau} K_s) is <= alpha exactly when the test rejected.
3. (must-hold, exact up to 1e-9 relative) Payoff antisymmetry (the fairness of the game): with the past
   fixed, swapping the current observed and null samples flips g_t and v_t (two-sample c-/x-SKIT: u_t <->
   u~_t; SKIT: the z of the current pair, i.e. observed <-> swapped pairs). (Swapping whole streams also
   flips the witness and leaves g unchanged.)
4. (paper-claim) Power: the rejection rate within tau_max steps is >= 0.95 on the alternatives (SKIT for
   Z1 and Z3 with b = (1, 0, 1); SKIT for Y = 0.5 Z + N(0, 1) with Z ~ N(0, 1); c-SKIT for Z1 and Z3);
   ANCHORS 5.4 measured 1.00 for the linear alternative. Median rejection times are reported (evidence).

Quick mode: tau_max = 200 steps (c-SKIT 400); full mode: tau_max = 1000 steps (the paper's synthetic
setting); 100 runs in both.
"""
from __future__ import annotations

import math

import numpy as np

from certify.explain.skit import (
    SYNTHETIC_COV,
    SYNTHETIC_MEAN,
    cskit,
    gaussian_conditional_sampler,
    ons_bets,
    skit,
    synthetic_concepts,
    two_sample_betting,
)
from proofs_checks.framework import CheckContext, Report, theorem

ALPHA = 0.05
RUNS = 100


def _tolerance(alpha: float, runs: int) -> float:
    return alpha + 3.0 * math.sqrt(alpha * (1.0 - alpha) / runs)


@theorem("SKIT", "type-I error <= alpha (Ville); wealth > 0, bets in [0, 1/2]; power on alternatives",
         "Teneggi & Sulam, NeurIPS 2024, sec. 3; Podkopaev et al., ICML 2023; ANCHORS 5.4")
def check(ctx: CheckContext, report: Report) -> None:
    steps = ctx.examples(200, 1000)
    csteps = ctx.examples(400, 1000)
    bound = _tolerance(ALPHA, RUNS)
    type1 = report.tally(f"null rejection rate <= alpha + 3 sqrt(alpha(1-alpha)/r) = {bound:.3f} (r = {RUNS})",
                         kind="measurement")
    game = report.tally("K_t > 0, kappa_t in [0, 1/2], K_t/K_(t-1) >= 1/2, |v_t| <= 1, bets = ONS(payoffs)")
    pvals = report.tally("anytime p-value <= alpha exactly when rejected")
    antisym = report.tally("payoff antisymmetry: swapping observed and null samples flips g and v", kind="closed-form")
    power = report.tally("power >= 0.95 on the alternatives (1 - rate <= 0.05)", role="paper-claim", kind="measurement")
    times = report.tally("median rejection time (steps) on the alternatives", role="evidence", kind="measurement")
    null_rates = report.tally("null rejection rates", role="evidence", kind="measurement")

    y_a, z_a = synthetic_concepts(2 * max(steps, csteps), beta=(1.0, 0.0, 1.0), reps=RUNS, seed=ctx.seed + 1)
    y_b, z_b = synthetic_concepts(csteps, beta=(0.0, 1.0, 1.0), reps=RUNS, seed=ctx.seed + 2)
    rng = np.random.default_rng(ctx.seed + 3)
    z_lin = rng.standard_normal((RUNS, 2 * steps))
    y_lin = 0.5 * z_lin + rng.standard_normal((RUNS, 2 * steps))

    def sampler(j: int):
        return gaussian_conditional_sampler(SYNTHETIC_MEAN, SYNTHETIC_COV, j)

    runs = {
        ("null", "SKIT Z2, b=(1,0,1)"): skit(y_a, z_a[..., 1], ALPHA, tau_max=steps),
        ("null", "c-SKIT Z2, b=(1,0,1)"): cskit(y_a[:, :csteps], z_a[:, :csteps], 1, sampler(1), ALPHA,
                                                tau_max=csteps, seed=ctx.seed + 11),
        ("null", "c-SKIT Z1 | Z2,Z3, b=(0,1,1)"): cskit(y_b, z_b, 0, sampler(0), ALPHA, tau_max=csteps,
                                                        seed=ctx.seed + 12),
        ("alt", "SKIT Z1, b=(1,0,1)"): skit(y_a, z_a[..., 0], ALPHA, tau_max=steps),
        ("alt", "SKIT Z3, b=(1,0,1)"): skit(y_a, z_a[..., 2], ALPHA, tau_max=steps),
        ("alt", "SKIT Y = 0.5 Z + eps"): skit(y_lin, z_lin, ALPHA, tau_max=steps),
        ("alt", "c-SKIT Z1, b=(1,0,1)"): cskit(y_a[:, :csteps], z_a[:, :csteps], 0, sampler(0), ALPHA,
                                               tau_max=csteps, seed=ctx.seed + 13),
        ("alt", "c-SKIT Z3, b=(1,0,1)"): cskit(y_a[:, :csteps], z_a[:, :csteps], 2, sampler(2), ALPHA,
                                               tau_max=csteps, seed=ctx.seed + 14),
    }
    for (kind, label), res in runs.items():
        k, kappa, v = res.wealth, res.bets, res.payoffs
        prev = np.concatenate([np.ones((len(res), 1)), k[:, :-1]], axis=1)
        ons = ons_bets(v)
        # after a rejection the test stops betting (kappa = 0); ONS is compared on the steps played
        played = np.arange(res.steps)[None, :] < np.where(res.rejected, res.rejection_time, res.steps)[:, None]
        ok = (k.min() > 0 and kappa.min() >= 0 and kappa.max() <= 0.5 and (k / prev).min() >= 0.5 - 1e-12
              and np.abs(v).max() <= 1 and np.allclose(ons[played], kappa[played], rtol=0, atol=1e-12))
        game.record_true(bool(ok), f"{label}: min K {k.min():.3g}, bets [{kappa.min():.3g}, {kappa.max():.3g}]")
        pvals.record_true(bool(np.array_equal(res.p_value <= ALPHA, res.rejected)), label)
        rate = res.rejection_rate()
        if kind == "null":
            type1.record(rate, bound, f"{label}, {res.steps} steps")
            null_rates.observe(rate)
            report.note(f"{label}: null rejection rate {rate:.2f} over {RUNS} runs ({res.steps} steps)")
        else:
            power.record(1.0 - rate, 0.05, f"{label}: power {rate:.2f}")
            times.observe(res.median_rejection_time())
            report.note(f"{label}: power {rate:.2f}, median rejection time {res.median_rejection_time():.0f} "
                        f"steps ({res.steps} max)")

    # antisymmetry (fairness): with the past fixed, swapping the current observed and null samples flips g
    # (swapping whole streams flips the witness too and leaves g unchanged, so only the last step is swapped)
    t_last = 60
    u = np.concatenate([y_a[:10, : t_last + 1, None], z_a[:10, : t_last + 1]], axis=2)
    u_null = u.copy()
    u_null[..., 1] = sampler(0)(u[..., 1:].reshape(-1, 3), np.random.default_rng(ctx.seed + 5)).reshape(10, -1)
    blocks = [[0], [1], [2, 3]]
    base = two_sample_betting(u, u_null, 1e-12, blocks=blocks)
    u_sw, u_null_sw = u.copy(), u_null.copy()
    u_sw[:, -1], u_null_sw[:, -1] = u_null[:, -1], u[:, -1]
    swapped = two_sample_betting(u_sw, u_null_sw, 1e-12, blocks=blocks)
    g0, g1 = base.statistics[:, -1], swapped.statistics[:, -1]
    antisym.record_close(np.abs(g0 + g1).max() / max(np.abs(g0).max(), 1e-300), 0.0, 1e-9,
                         "two-sample (c-SKIT) last-step swap, relative")
    antisym.record_close(np.abs(base.payoffs[:, -1] + swapped.payoffs[:, -1]).max(), 0.0, 1e-9,
                         "two-sample payoff v, last-step swap")
    # SKIT: swap z within the last pair of each run (observed pairs <-> swapped pairs)
    y_s, z_s = y_a[:10, : 2 * t_last + 2], z_a[:10, : 2 * t_last + 2, 2].copy()
    base = skit(y_s, z_s, 1e-12, tau_max=t_last + 1).statistics[:, -1]
    z_s[:, [-2, -1]] = z_s[:, [-1, -2]]
    flipped = skit(y_s, z_s, 1e-12, tau_max=t_last + 1).statistics[:, -1]
    antisym.record_close(np.abs(base + flipped).max() / max(np.abs(base).max(), 1e-300), 0.0, 1e-9,
                         "SKIT last-pair swap, relative")
