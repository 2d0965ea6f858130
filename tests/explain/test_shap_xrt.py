"""SHAP-XRT (certify.explain.shap_xrt): p-value range, ties, seeds and recomputation, the tight case, null
validity, the Gaussian conditional sampler, batching invariance, the explainer and bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from certify.errors import InvalidInputError, ModelModeError, UsageError
from certify.explain.shap_xrt import (
    SHAPXRT,
    GaussianSampler,
    MarginalSampler,
    derive_seeds,
    exact_means,
    expected_p_lower_bound,
    expected_p_upper_bound,
    grid_regions,
    make_sampler,
    recheck_records,
    recompute_pvalue,
    shapley_weight,
    shapley_xrt,
    xrt,
)


class Linear(torch.nn.Module):
    def __init__(self, theta):
        super().__init__()
        self.register_buffer("theta", torch.as_tensor(theta, dtype=torch.float64))

    def forward(self, x):
        return torch.sigmoid(x.reshape(x.shape[0], -1).to(self.theta) @ self.theta)


class Constant(torch.nn.Module):
    def forward(self, x):
        return torch.full((x.shape[0],), 0.5, dtype=torch.float64)


class Indicator(torch.nn.Module):
    def forward(self, x):
        return (x.reshape(x.shape[0], -1)[:, 0] > 0).double()


def gauss(d=4):
    return GaussianSampler(np.zeros(d), np.eye(d))


def test_p_range_and_grid():
    model = Linear([1.0, -1.0, 0.5, 2.0]).eval()
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for k in (1, 7, 99):
        res = xrt(model, x, [[i % 4] for i in range(50)], None, sampler=gauss(), k=k, m=3, score="output", seed=3)
        assert bool((res.p >= 1 / (k + 1) - 1e-15).all()) and bool((res.p <= 1).all())
        grid = res.p * (k + 1)
        assert torch.allclose(grid, grid.round(), atol=1e-9)
        assert res.null_statistics.shape == (50, k)
        assert res.model_inputs == 50 * (k + 1) * 3


def test_ties_count_conservative():
    # a constant model: every T~ ties with T, so p = (1 + K)/(K + 1) = 1
    res = xrt(Constant().eval(), torch.zeros(5, 3, dtype=torch.float64), 0, [1], sampler=gauss(3), k=19, m=2,
              score="output", seed=0)
    assert torch.equal(res.p, torch.ones(5, dtype=torch.float64))
    assert torch.equal(res.gamma, torch.zeros(5, dtype=torch.float64))


def test_tight_case():
    reference = torch.randn(32, 3, dtype=torch.float64)
    reference[:, 0] = -1.0
    x = torch.randn(10, 3, dtype=torch.float64)
    x[:, 0] = 1.0
    for mode in ("joint", "product"):
        res = xrt(Indicator().eval(), x, 0, None, sampler=MarginalSampler(reference, mode), k=9, m=4, score="output",
                  seed=1)
        assert torch.allclose(res.p, torch.full((10,), 0.1, dtype=torch.float64), atol=0, rtol=0)
        assert torch.equal(res.gamma, torch.ones(10, dtype=torch.float64))
        assert torch.allclose(res.expected_p_bound(), res.p)
    assert expected_p_upper_bound(1.0, 9) == pytest.approx(0.1)
    assert expected_p_lower_bound(-0.5, 9) == pytest.approx((1 + 4.5) / 10)
    assert expected_p_lower_bound(0.3, 9) == pytest.approx(0.1)


def test_seeded_determinism_and_recompute():
    model = Linear([1.0, -2.0, 0.5]).eval()
    sampler = GaussianSampler(np.zeros(3), 0.5 * np.eye(3) + 0.5)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = xrt(model, x, 1, [0], sampler=sampler, k=19, m=4, score="output", seed=11)
    b = xrt(model, x, 1, [0], sampler=sampler, k=19, m=4, score="output", seed=11)
    c = xrt(model, x, 1, [0], sampler=sampler, k=19, m=4, score="output", seed=12)
    assert torch.equal(a.p, b.p) and torch.equal(a.null_statistics, b.null_statistics)
    assert not torch.equal(a.null_statistics, c.null_statistics)
    assert a.seeds == derive_seeds(11, 6)
    for i in range(6):
        assert recompute_pvalue(model, x[i], 1, [0], k=19, m=4, sampler=sampler, seed=a.seeds[i], score="output") == float(a.p[i])
    assert all(recheck_records(model, x[2], a.records()[2:3], sampler))
    rebuilt = make_sampler(a.sampler, mean=np.zeros(3), cov=0.5 * np.eye(3) + 0.5)
    assert all(recheck_records(model, x[0], a.records()[:1], rebuilt))
    with pytest.raises(UsageError):
        make_sampler(a.sampler, mean=np.zeros(3), cov=np.eye(3))


def test_batching_invariance():
    model = Linear([1.0, -2.0, 0.5, 0.3]).eval()
    sampler = MarginalSampler(torch.randn(40, 4, dtype=torch.float64), "product")
    x = torch.randn(5, 4, dtype=torch.float64)
    js, cs = [[0], [1], [2], [3], [0, 1]], [[1], None, [0, 3], [], [2]]
    together = xrt(model, x, js, cs, sampler=sampler, k=9, m=3, score="output", seed=5, batch_size=7)
    big = xrt(model, x, js, cs, sampler=sampler, k=9, m=3, score="output", seed=5, batch_size=10_000)
    assert torch.equal(together.p, big.p) and big.model_calls < together.model_calls
    for i in range(5):
        alone = xrt(model, x[i : i + 1], [js[i]], [cs[i]], sampler=sampler, k=9, m=3, score="output", seed=[together.seeds[i]])
        assert float(alone.p[0]) == float(together.p[i])
        # the statistics agree to rounding (BLAS may sum a batch of 1 and of 50 rows differently)
        assert torch.allclose(alone.null_statistics[0], together.null_statistics[i], rtol=0, atol=1e-12)


def test_null_validity_small_model():
    # f ignores feature 0, which is independent of the rest: the null holds exactly
    reps, k = 600, 19
    cov = np.eye(3)
    cov[1:, 1:] = [[1.0, 0.7], [0.7, 1.0]]
    model = Linear([0.0, 1.0, -1.0]).eval()
    x = torch.as_tensor(np.random.default_rng(0).multivariate_normal(np.zeros(3), cov, size=reps))
    res = xrt(model, x, 0, [1], sampler=GaussianSampler(np.zeros(3), cov), k=k, m=4, score="output", seed=2)
    for alpha in (0.05, 0.1, 0.25):
        rate = float((res.p <= alpha + 1e-12).double().mean())
        assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps)
    # and the test has power where the model uses the feature
    res1 = xrt(model, torch.as_tensor([[0.0, 3.0, 0.0]]).expand(50, 3), 1, None, sampler=GaussianSampler(np.zeros(3), cov),
               k=k, m=32, score="output", seed=2)
    assert float((res1.p <= 0.05).double().mean()) > 0.9


def test_gaussian_conditional_closed_form():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 4))
    cov = a @ a.T + 0.5 * np.eye(4)
    mean = rng.standard_normal(4)
    sampler = GaussianSampler(mean, cov)
    x = rng.standard_normal(4)
    fixed = np.array([True, False, True, False])
    free, mu, sig = sampler.conditional(torch.as_tensor(x), torch.as_tensor(fixed))
    s, f = [0, 2], [1, 3]
    ref_mu = mean[f] + cov[np.ix_(f, s)] @ np.linalg.solve(cov[np.ix_(s, s)], x[s] - mean[s])
    ref_sig = cov[np.ix_(f, f)] - cov[np.ix_(f, s)] @ np.linalg.solve(cov[np.ix_(s, s)], cov[np.ix_(s, f)])
    assert free.tolist() == f
    np.testing.assert_allclose(mu, ref_mu, atol=1e-10)
    np.testing.assert_allclose(sig, ref_sig, atol=1e-10)
    # 2-D closed form: x2 | x1 ~ N(rho x1, 1 - rho^2)
    rho = 0.8
    s2 = GaussianSampler(np.zeros(2), [[1, rho], [rho, 1]])
    _, mu2, sig2 = s2.conditional(torch.tensor([1.5, 0.0]), torch.tensor([True, False]))
    assert mu2[0] == pytest.approx(rho * 1.5) and sig2[0, 0] == pytest.approx(1 - rho**2)
    # the draws match the conditional law and keep the fixed features exactly
    xt = torch.as_tensor(x)
    draws = sampler.sample(xt, torch.as_tensor(fixed), 40_000, np.random.default_rng(0)).numpy()
    assert np.array_equal(draws[:, s], np.broadcast_to(x[s], (40_000, 2)))
    np.testing.assert_allclose(draws[:, f].mean(0), ref_mu, atol=0.05)
    np.testing.assert_allclose(np.cov(draws[:, f].T), ref_sig, atol=0.08 * np.abs(ref_sig).max())
    # nothing fixed: the marginal
    _, mu0, sig0 = sampler.conditional(xt, torch.zeros(4, dtype=torch.bool))
    np.testing.assert_allclose(mu0, mean) and np.testing.assert_allclose(sig0, cov, atol=1e-10)


def test_marginal_sampler_modes():
    ref = torch.arange(12, dtype=torch.float64).view(4, 3)
    x = torch.tensor([-1.0, -2.0, -3.0], dtype=torch.float64)
    fixed = torch.tensor([False, True, False])
    joint = MarginalSampler(ref, "joint").sample(x, fixed, 200, np.random.default_rng(0))
    assert bool((joint[:, 1] == -2).all())
    assert bool(((joint[:, 2] - joint[:, 0]) == 2).all())  # one reference row per draw
    prod = MarginalSampler(ref, "product").sample(x, fixed, 200, np.random.default_rng(0))
    assert bool((prod[:, 1] == -2).all()) and bool(((prod[:, 2] - prod[:, 0]) != 2).any())
    # groups: features 0 and 2 in one group come from the same row; 1 is its own group
    grouped = MarginalSampler(ref, "product", groups=torch.tensor([5, 7, 5])).sample(x, torch.zeros(3, dtype=torch.bool), 300, np.random.default_rng(0))
    assert bool(((grouped[:, 2] - grouped[:, 0]) == 2).all()) and bool(((grouped[:, 1] - grouped[:, 0]) != 1).any())
    with pytest.raises(UsageError):
        MarginalSampler(ref, "joint", groups=torch.tensor([0, 1, 0]))
    with pytest.raises(UsageError):
        MarginalSampler(ref, "product", groups=torch.tensor([0, 1]))


def test_shapley_xrt_and_weights():
    assert sum(shapley_weight(s, 4) * math.comb(3, s) for s in range(4)) == pytest.approx(1.0)
    model = Linear([2.0, 0.0, 1.0, 0.0]).eval()
    x = torch.tensor([2.0, 0.0, 1.0, 0.5], dtype=torch.float64)
    out = shapley_xrt(model, x, [[0], [1], [2], [3]], 0, sampler=gauss(), k=19, m=8, score="output", seed=0)
    assert len(out.contexts) == 8 and out.weights.sum().item() == pytest.approx(1.0)
    assert out.phi > 0.1 and out.weighted_p < 0.2
    null = shapley_xrt(model, x, [[0], [1], [2], [3]], 1, sampler=gauss(), k=19, m=8, score="output", seed=0)
    # feature 1 is ignored: with every other feature fixed, f is constant, gamma-hat = 0 and p = 1 (ties)
    full = null.contexts.index((0, 2, 3))
    assert float(null.result.gamma[full]) == 0.0 and float(null.result.p[full]) == 1.0
    assert abs(null.phi) < out.phi


def test_explainer_on_classifier():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)).eval()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[1, :8] = 3.0  # class 1 reads the top half only
    regions = grid_regions((1, 4, 4), 2)
    assert regions.shape == (1, 4, 4) and int(regions.max()) == 3
    reference = torch.zeros(20, 1, 4, 4)
    x = torch.ones(2, 1, 4, 4)
    exp = SHAPXRT(model, MarginalSampler(reference), regions=regions, k=19, m=2, seed=0).explain(x, target=1)
    assert exp.attributions.shape == x.shape
    p = exp.diagnostics["p_values"]
    assert p.shape == (2, 4)
    assert bool((p[:, :2] == 0.05).all()) and bool((p[:, 2:] == 1).all())
    assert bool(exp.diagnostics["rejected"][:, :2].all()) and not bool(exp.diagnostics["rejected"][:, 2:].any())


def test_bad_input():
    model = Linear([1.0, 1.0, 1.0]).eval()
    x = torch.zeros(2, 3, dtype=torch.float64)
    s = gauss(3)
    with pytest.raises(UsageError):
        xrt(model, x, 0, [0], sampler=s, score="output")  # overlap
    with pytest.raises(UsageError):
        xrt(model, x, [], None, sampler=s, score="output")  # empty j
    with pytest.raises(UsageError):
        xrt(model, x, 5, None, sampler=s, score="output")  # out of range
    with pytest.raises(UsageError):
        xrt(model, x, 0, None, sampler=s, k=0, score="output")
    with pytest.raises(UsageError):
        xrt(model, x, 0, None, sampler=s, score="bogus")
    with pytest.raises(UsageError):
        xrt(model, x, 0, None, sampler="gaussian", score="output")
    with pytest.raises(UsageError):
        xrt(model, x, 0, None, sampler=s, seed=-1, score="output")
    with pytest.raises(UsageError):
        xrt(model, x, [[0], [1], [2]], None, sampler=s, score="output")  # 3 sets for 2 tests
    with pytest.raises(InvalidInputError):
        xrt(model, torch.full((2, 3), float("nan")), 0, None, sampler=s, score="output")
    with pytest.raises(InvalidInputError):
        xrt(model, torch.zeros(3), 0, None, sampler=s, score="output")  # no batch axis
    with pytest.raises(InvalidInputError):
        xrt(model, torch.zeros(2, 4, dtype=torch.float64), 0, None, sampler=s, score="output")  # sampler has 3 features
    with pytest.raises(InvalidInputError):
        GaussianSampler(np.zeros(2), [[1.0, 2.0], [2.0, 1.0]])  # indefinite
    with pytest.raises(InvalidInputError):
        GaussianSampler(np.zeros(2), np.eye(3))
    with pytest.raises(InvalidInputError):
        MarginalSampler(torch.tensor([[float("inf"), 0.0]]))
    with pytest.raises(UsageError):
        MarginalSampler(torch.zeros(3, 2), mode="weird")
    with pytest.raises(InvalidInputError):
        xrt(Linear([1.0, 1.0, 1.0]).eval(), x, 0, None, sampler=s, score="probability")  # scalar output, no classes
    trained = Linear([1.0, 1.0, 1.0]).train()
    with pytest.raises(ModelModeError):
        xrt(trained, x, 0, None, sampler=s, score="output")


def test_exact_means_equal_fsum_means():
    """The batched correctly rounded means are math.fsum's, bit for bit (sign of zero included), on rows whose
    float sums round (probabilities, cancellation, magnitudes 1e-30..1e30, subnormals) and on exact ones."""
    g = torch.Generator().manual_seed(0)
    cases = [torch.rand(300, 20, 8, generator=g, dtype=torch.float64),
             torch.sigmoid(5 * torch.randn(200, 7, generator=g, dtype=torch.float64)),
             torch.randn(100, 1, generator=g, dtype=torch.float64),
             (torch.rand(100, 9, generator=g) < 0.5).double(),
             torch.randn(100, 33, generator=g, dtype=torch.float64) * torch.logspace(-30, 30, 33, dtype=torch.float64),
             torch.tensor([[1e17, -7.0, -1e17], [-0.0, -0.0, -0.0], [1e-320, 3e-310, -1e-320], [0.1, 0.2, 0.3]],
                          dtype=torch.float64)]
    for values in cases:
        rows = values.reshape(-1, values.shape[-1]).tolist()
        expected = torch.tensor([math.fsum(r) / len(r) for r in rows], dtype=torch.float64).reshape(values.shape[:-1])
        got = exact_means(values)
        assert torch.equal(got, expected) and torch.equal(torch.signbit(got), torch.signbit(expected))
    assert float(exact_means(torch.tensor([[1e17, -7.0, -1e17]], dtype=torch.float64))[0]) == -7.0 / 3
