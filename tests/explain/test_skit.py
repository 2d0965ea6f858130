"""Testing by betting (certify.explain.skit): Ville/wealth properties, ONS, e-BH, kernels, validity, power."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics.pairwise import rbf_kernel

from certify.errors import InvalidInputError, UsageError
from certify.explain.skit import (
    SYNTHETIC_COV,
    SYNTHETIC_MEAN,
    _Bandwidths,
    _gram,
    conditional_gaussian_samples,
    cskit,
    ebh,
    gaussian_conditional_sampler,
    median_heuristic,
    ons_bets,
    payoff_scales,
    skit,
    synthetic_concepts,
    two_sample_betting,
    xskit,
)


def _null_pairs(reps: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((reps, n)), rng.standard_normal((reps, n))


def test_wealth_recursion_and_ranges():
    y, z = _null_pairs(20, 200, 0)
    res = skit(y, z + 0.3 * y, alpha=0.05)
    prev = np.concatenate([np.ones((20, 1)), res.wealth[:, :-1]], axis=1)
    np.testing.assert_allclose(res.wealth, prev * (1 + res.bets * res.payoffs), rtol=1e-12)
    assert res.wealth.min() > 0
    assert res.bets.min() >= 0 and res.bets.max() <= 0.5
    assert np.abs(res.payoffs).max() <= 1
    assert (res.wealth / prev).min() >= 0.5
    # rejection at the first crossing of 1/alpha, p-value = 1/max wealth
    for i in range(20):
        crossed = np.flatnonzero(res.wealth[i] >= 20)
        assert res.rejection_times()[i] == (int(crossed[0]) + 1 if crossed.size else None)
    np.testing.assert_allclose(res.p_value, np.minimum(1, 1 / res.wealth.max(1)))
    assert np.array_equal(res.rejected, res.p_value <= 0.05)


def test_stopped_wealth_is_constant_after_rejection():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((5, 400))
    res = skit(z + 0.1 * rng.standard_normal((5, 400)), z)
    assert res.rejected.all()
    for i, t in enumerate(res.rejection_times()):
        assert np.all(res.wealth[i, t - 1:] == res.wealth[i, t - 1])
        assert np.all(res.bets[i, t:] == 0)
    assert np.allclose(res.e_value, res.wealth[:, -1])
    go_on = skit(z + 0.1 * rng.standard_normal((5, 400)), z, stop=False)
    assert (go_on.e_value > 1e3).all()  # playing on keeps growing the wealth


def test_ons_bets_in_range_and_predictable():
    rng = np.random.default_rng(2)
    v = np.clip(rng.normal(0.3, 0.5, size=(4, 300)), -1, 1)
    kappa = ons_bets(v)
    assert kappa[:, 0].tolist() == [0.0] * 4
    assert kappa.min() >= 0 and kappa.max() <= 0.5
    # predictable: changing v_t leaves kappa_1..kappa_t unchanged
    v2 = v.copy()
    v2[:, 100] = -v2[:, 100]
    k2 = ons_bets(v2)
    assert np.array_equal(kappa[:, :101], k2[:, :101]) and not np.array_equal(kappa[:, 101:], k2[:, 101:])
    # one step by hand (ANCHORS 5.4)
    z = 0.5 / (1 + 0 * 0.5)
    a = 1 + z**2
    assert ons_bets(np.array([0.5, 0.0]))[1] == pytest.approx(min(0.5, 2 / (2 - math.log(3)) * z / a))
    # positive payoffs push the bet to its cap
    assert ons_bets(np.ones(50))[-1] == 0.5
    assert ons_bets(-np.ones(50)).max() == 0.0
    with pytest.raises(InvalidInputError):
        ons_bets(np.array([1.5]))


def test_payoff_scales():
    assert payoff_scales(np.zeros((3, 1))).tolist() == [1.0, 1.0, 1.0]
    h = np.arange(11.0)[None]
    assert payoff_scales(h)[0] == pytest.approx(8.0)  # q90 - q10 of 0..10
    assert payoff_scales(np.zeros((1, 5)))[0] == 1e-4


def test_ebh_known_e_values():
    e = np.array([100.0, 50.0, 2.0, 0.5])  # m = 4, alpha = 0.05: thresholds 80, 40, 26.7, 20
    assert ebh(e, 0.05).tolist() == [True, True, False, False]
    assert ebh(np.array([30.0, 30.0, 30.0, 30.0]), 0.05).tolist() == [True] * 4  # k = 4: 30 >= 20
    assert ebh(np.array([70.0, 1.0, 1.0, 1.0]), 0.05).tolist() == [False] * 4  # 70 < 80
    assert ebh(np.array([]), 0.05).tolist() == []
    with pytest.raises(InvalidInputError):
        ebh(np.array([-1.0]))
    with pytest.raises(UsageError):
        ebh(np.array([1.0]), alpha=1.5)


def test_median_heuristic_matches_sklearn():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 3))
    gamma = median_heuristic(x)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    med = np.median(d[np.triu_indices(40, 1)])
    assert gamma == pytest.approx(1 / (2 * med**2))
    # the game's incremental bandwidths equal the median heuristic of each prefix (then frozen at `limit`),
    # and the kernel agrees with sklearn's rbf_kernel
    xb = rng.standard_normal((3, 40, 2))
    bw = _Bandwidths([xb, xb[..., :1]], 25, "rbf")
    for n in (2, 3, 7, 8, 24, 25, 30):
        bw.update(n)
        for b in range(3):
            assert bw.gamma[0][b] == median_heuristic(xb[b, :min(n, 25)])
            assert bw.gamma[1][b] == median_heuristic(xb[b, :min(n, 25), :1])
    assert bw.frozen and bw.gamma[0][0] == median_heuristic(xb[0, :25]) != median_heuristic(xb[0, :30])
    gb = bw.gamma[0]
    for b in range(3):
        np.testing.assert_allclose(_gram(xb[b:b + 1, :5], xb[b:b + 1], "rbf", gb[b:b + 1])[0],
                                   rbf_kernel(xb[b, :5], xb[b], gamma=gb[b]), rtol=1e-12)
    assert median_heuristic(np.ones((5, 2))) == 0.5


def test_null_rejection_rate_small_run():
    y, z = _null_pairs(60, 300, 4)
    res = skit(y, z, alpha=0.1)
    assert res.rejection_rate() <= 0.1 + 3 * math.sqrt(0.1 * 0.9 / 60)
    assert np.array_equal(res.p_value <= 0.1, res.rejected)


def test_power_on_easy_alternative():
    rng = np.random.default_rng(5)
    z = rng.standard_normal((20, 300))
    res = skit(0.5 * z + rng.standard_normal((20, 300)), z, alpha=0.05)
    assert res.rejection_rate() >= 0.95
    lin = skit(0.5 * z + rng.standard_normal((20, 300)), z, alpha=0.05, kernel="linear")
    assert lin.rejection_rate() >= 0.9
    # two-sample: a mean shift is found
    shift = two_sample_betting(rng.standard_normal((10, 300)) + 1.0, rng.standard_normal((10, 300)))
    assert shift.rejected.all()


def test_cskit_synthetic_null_and_alternative():
    y, z = synthetic_concepts(300, beta=(1.0, 0.0, 1.0), reps=30, seed=6)
    null = cskit(y, z, 1, gaussian_conditional_sampler(SYNTHETIC_MEAN, SYNTHETIC_COV, 1), tau_max=300, seed=1)
    alt = cskit(y, z, 2, gaussian_conditional_sampler(SYNTHETIC_MEAN, SYNTHETIC_COV, 2), tau_max=300, seed=2)
    assert null.rejection_rate() <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 30)
    assert alt.rejection_rate() >= 0.9


def test_gaussian_conditional_sampler_is_the_conditional():
    sampler = gaussian_conditional_sampler(SYNTHETIC_MEAN, SYNTHETIC_COV, 0)
    rows = np.zeros((20000, 3))
    rows[:, 2] = 3.0
    draws = sampler(rows, np.random.default_rng(0))
    assert draws.mean() == pytest.approx(2.0, abs=0.03)  # (z3 + 1)/2
    assert draws.var() == pytest.approx(0.5, abs=0.03)
    h = conditional_gaussian_samples(np.zeros(4), np.eye(4), np.array([[1.0], [1.0], [0.0], [0.0]]), [2.0], 50)
    np.testing.assert_allclose(h[:, 0] + h[:, 1], 2.0, atol=1e-9)


def test_xskit_runs_two_sample():
    rng = np.random.default_rng(7)
    same = xskit(rng.uniform(size=(40, 200)), rng.uniform(size=(40, 200)))
    diff = xskit(rng.beta(5, 1, size=(10, 200)), rng.uniform(size=(10, 200)))
    assert same.rejection_rate() <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 40)
    assert diff.rejected.all() and diff.test == "x-skit"


def test_determinism_with_seeds():
    y, z = synthetic_concepts(200, reps=5, seed=8)
    y2, z2 = synthetic_concepts(200, reps=5, seed=8)
    assert np.array_equal(y, y2) and np.array_equal(z, z2)
    sampler = gaussian_conditional_sampler(SYNTHETIC_MEAN, SYNTHETIC_COV, 0)
    a = cskit(y, z, 0, sampler, seed=3)
    b = cskit(y, z, 0, sampler, seed=3)
    c = cskit(y, z, 0, sampler, seed=4)
    assert np.array_equal(a.wealth, b.wealth) and not np.array_equal(a.wealth, c.wealth)
    assert np.array_equal(skit(y, z[..., 0]).wealth, skit(torch.tensor(y), torch.tensor(z[..., 0])).wealth)


def test_batched_equals_single():
    y, z = synthetic_concepts(200, reps=4, seed=9)
    batch = skit(y, z[..., 2])
    for i in range(4):
        one = skit(y[i], z[i, :, 2])
        np.testing.assert_allclose(one.wealth[0], batch.wealth[i], rtol=1e-10)


@pytest.mark.parametrize(
    "call",
    [
        lambda y, z: skit(y, z, alpha=0.0),
        lambda y, z: skit(y, z, alpha=1.0),
        lambda y, z: skit(y, z, kernel="poly"),
        lambda y, z: skit(y, z, tau_max=0),
        lambda y, z: skit(y, z, bandwidth_samples=1),
        lambda y, z: skit(y, z, names=["a"]),
        lambda y, z: two_sample_betting(y[..., None].repeat(2, -1), z[..., None].repeat(2, -1), blocks=[[0]]),
        lambda y, z: cskit(y, np.stack([z, z], -1), 5, lambda r, g: r[:, 0]),
        lambda y, z: cskit(y, np.stack([z, z], -1), 0, "not callable"),
    ],
)
def test_bad_parameters_raise_usage_error(call):
    y, z = _null_pairs(2, 20, 10)
    with pytest.raises(UsageError):
        call(y, z)


def test_bad_data_raises_invalid_input():
    y, z = _null_pairs(2, 20, 11)
    z[0, 3] = np.nan
    with pytest.raises(InvalidInputError):
        skit(y, z)
    with pytest.raises(InvalidInputError):
        skit(y, z[:, :10])
    with pytest.raises(InvalidInputError):
        skit(y[:, :1], y[:, :1])
