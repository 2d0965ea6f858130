"""certify.bounds.topk_smoothing: the Hoeffding radius, the per-feature smoothing bounds (tight on a halfspace
indicator), the pairing count on hand-made estimates, the claim on smoothed maps known in closed form, and an
adversarial test on a zoo model: a PGD attack on Sparsified SmoothGrad inside the eps-ball never brings the
top-k overlap below the certified count (beyond the Monte Carlo slack of the check)."""
import copy
import math

import pytest
import torch
from scipy.stats import norm

from certify.bounds.topk_smoothing import certified_topk, hoeffding_error, smoothed_bounds
from certify.errors import InvalidInputError, UsageError
from certify.explain.sparsified_smoothgrad import SparsifiedSmoothGrad
from certify.metrics.similarity import topk_mask
from certify.models import zoo


def test_hoeffding_error_formula_and_refusals():
    assert hoeffding_error(1000, 64, 0.999) == pytest.approx(math.sqrt(math.log(128 / 0.001) / 2000), rel=1e-8)
    assert hoeffding_error(4000, 64, 0.999) < hoeffding_error(1000, 64, 0.999)
    for bad in [(0, 4, 0.9), (10, 0, 0.9), (10, 4, 1.0), (10, 4, 0.0), (10, 4, True)]:
        with pytest.raises(UsageError):
            hoeffding_error(*bad)


def test_smoothed_bounds_are_tight_for_a_halfspace_indicator():
    """b(x) = 1[x_1 > 0] smoothed at sigma gives p(x) = Phi(x_1 / sigma) exactly, and p(x + delta) reaches
    Phi(Phi^-1(p) -+ eps/sigma) at delta = -+eps e_1: with a huge sample count the bounds equal these values."""
    sigma, eps, x1 = 0.5, 0.3, torch.tensor([-0.4, 0.0, 0.2, 1.1], dtype=torch.float64)
    p = norm.cdf(x1.numpy() / sigma)
    lower, upper = smoothed_bounds(torch.tensor(p).view(-1, 1), eps, sigma, 10**12, 0.9)
    assert torch.allclose(lower.flatten(), torch.tensor(norm.cdf((x1.numpy() - eps) / sigma)), atol=1e-5)
    assert torch.allclose(upper.flatten(), torch.tensor(norm.cdf((x1.numpy() + eps) / sigma)), atol=1e-5)


def test_smoothed_bounds_at_zero_and_one_and_zero_radius():
    p_hat = torch.tensor([[0.0, 1.0, 0.5]])
    err = hoeffding_error(100, 3, 0.95)
    lower, upper = smoothed_bounds(p_hat, 0.0, 1.0, 100, 0.95)
    assert lower[0, 0] == 0.0 and upper[0, 1] == 1.0  # Phi^-1(0) = -inf, Phi^-1(1) = +inf
    assert torch.allclose(lower, (p_hat.double() - err).clamp(0, 1), atol=1e-12)
    assert torch.allclose(upper, (p_hat.double() + err).clamp(0, 1), atol=1e-12)
    wider = smoothed_bounds(p_hat, 0.5, 1.0, 100, 0.95)
    assert (wider[0] <= lower).all() and (wider[1] >= upper).all() and wider[0][0, 2] < lower[0, 2]
    with pytest.raises(InvalidInputError):
        smoothed_bounds(torch.tensor([[1.2]]), 0.1, 1.0, 100, 0.9)
    with pytest.raises(UsageError):
        smoothed_bounds(p_hat, -0.1, 1.0, 100, 0.9)
    with pytest.raises(UsageError):
        smoothed_bounds(p_hat, 0.1, 0.0, 100, 0.9)


def _pair_count(p: list[float], k: int, eps: float, sigma: float, err: float) -> int:
    """The count written out by hand: ranks m = 1, 2, ... while Phi^-1(p_(m) - err) - Phi^-1(p_(2k+1-m) + err) >
    2 eps / sigma (partner beyond d: certified)."""
    s = sorted(p, reverse=True)
    count = 0
    for m in range(1, k + 1):
        j = 2 * k + 1 - m
        if j <= len(s) and not norm.ppf(max(s[m - 1] - err, 0.0)) - norm.ppf(min(s[j - 1] + err, 1.0)) > 2 * eps / sigma:
            break
        count += 1
    return count


def test_certified_topk_pairs_rank_m_with_rank_2k_plus_1_minus_m():
    n, conf, sigma = 10**6, 0.99, 1.0
    err = hoeffding_error(n, 6, conf)
    # k = 2: rank 1 (0.99) pairs with rank 4 (0.2), rank 2 (0.6) with rank 3 (0.5)
    p = [0.2, 0.99, 0.5, 0.6, 0.01, 0.0]
    for eps in [0.0, 0.01, 0.05, 0.5, 1.0, 3.0]:
        got = int(certified_topk(torch.tensor([p]), 2, eps, sigma, n, conf))
        assert got == _pair_count(p, 2, eps, sigma, err)
    assert int(certified_topk(torch.tensor([p]), 2, 0.02, sigma, n, conf)) == 2
    assert int(certified_topk(torch.tensor([p]), 2, 0.5, sigma, n, conf)) == 1
    assert int(certified_topk(torch.tensor([p]), 2, 3.0, sigma, n, conf)) == 0
    # 2k > d: ranks whose partner lies beyond d are certified for free (pigeonhole); k = d keeps everything
    assert int(certified_topk(torch.tensor([p]), 4, 50.0, sigma, n, conf)) == 2
    assert int(certified_topk(torch.tensor([p]), 6, 50.0, sigma, n, conf)) == 6
    # batched rows are independent and equal the one-row calls
    rows = torch.rand((5, 6), generator=torch.Generator().manual_seed(0))
    batched = certified_topk(rows, 3, 0.05, 0.5, 5000, 0.9)
    assert batched.tolist() == [_pair_count(r.tolist(), 3, 0.05, 0.5, hoeffding_error(5000, 6, 0.9)) for r in rows]
    with pytest.raises(UsageError):
        certified_topk(torch.tensor([p]), 7, 0.1, sigma, n, conf)
    with pytest.raises(InvalidInputError):
        certified_topk(torch.tensor(p), 2, 0.1, sigma, n, conf)


def test_claim_holds_on_halfspace_maps_under_the_worst_pairwise_perturbation():
    """b_i(x) = 1[w_i . x > t_i] (unit w_i) has the closed form p_i(x) = Phi((w_i . x - t_i)/sigma). p_hat is a
    genuine Monte Carlo estimate (n draws of x + sigma Z); for every x' tried in the eps-ball (the directions that
    move one pair of features the most against each other, w_j - w_i, and random ones) every top-k set of the
    exact p(x') shares at least c features with the top-k of p_hat. Also the count is not vacuous."""
    gen = torch.Generator().manual_seed(5)
    dim, d, k, sigma, n, conf = 4, 10, 3, 0.5, 4000, 0.99
    certified_total = 0
    for trial in range(6):
        w = torch.randn((d, dim), generator=gen, dtype=torch.float64)
        w = w / w.norm(dim=1, keepdim=True)
        t = torch.randn(d, generator=gen, dtype=torch.float64) * 0.8
        x = torch.randn(dim, generator=gen, dtype=torch.float64) * 0.5
        z = torch.randn((n, dim), generator=gen, dtype=torch.float64)
        p_hat = (((x + sigma * z) @ w.T) > t).double().mean(0, keepdim=True)
        reported = topk_mask(p_hat, k)[0]
        for eps in [0.05, 0.15, 0.4]:
            c = int(certified_topk(p_hat, k, eps, sigma, n, conf))
            certified_total += c
            pairs = (w.unsqueeze(0) - w.unsqueeze(1)).reshape(-1, dim)
            dirs = torch.cat([pairs[pairs.norm(dim=1) > 1e-9], torch.randn((200, dim), generator=gen, dtype=torch.float64)])
            moved = x + eps * dirs / dirs.norm(dim=1, keepdim=True)
            exact = torch.tensor(norm.cdf(((moved @ w.T - t) / sigma).numpy()))
            kth = exact.sort(dim=1, descending=True).values[:, k - 1 : k]
            # the least favourable top-k set: all features strictly above the k-th value, then tied ones not reported
            above = exact > kth
            tied_reported = ((exact == kth) & reported).sum(1)
            worst = (above & reported).sum(1) + (k - above.sum(1) - ((exact == kth) & ~reported).sum(1)).clamp_min(0).clamp_max(tied_reported)
            assert (worst >= c).all(), f"trial {trial}, eps {eps}: overlap {int(worst.min())} < certified {c}"
    assert certified_total > 0


# ---- adversarial test on a zoo model ------------------------------------------------------------------------

SIGMA, SAMPLES, CONFIDENCE, K, L0 = 0.5, 1024, 0.999, 6, 0.1
BIG, CHECK_CONFIDENCE = 8192, 0.999


def _soft_map(model, points, target, draws, count, temperature=0.05):
    """A differentiable stand-in for p: the mean over draws of sigmoid((|g| - tau)/(temperature * scale)), tau
    halfway between the count-th and (count+1)-th |g| (the sparsified indicator's threshold)."""
    n, size = points.shape[0], draws.shape[1]
    noisy = (points.unsqueeze(1) + SIGMA * draws).flatten(0, 1)
    scores = model(noisy).gather(1, target.repeat_interleave(size).view(-1, 1)).sum()
    (grads,) = torch.autograd.grad(scores, noisy, create_graph=True)
    mags = grads.abs()
    top = mags.detach().topk(count + 1, dim=1).values
    tau = (top[:, -2] + top[:, -1]).unsqueeze(1) / 2
    scale = top[:, :1].clamp_min(1e-12)
    return torch.sigmoid((mags - tau) / (temperature * scale)).view(n, size, -1).mean(1)


def _attack(model, x, target, reported, runner_up, eps, steps=25, gen=None):
    """L2 PGD on the soft map: push the reported top-k features down and the next k (by p_hat) up."""
    count = math.ceil(L0 * x.shape[1])
    delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        draws = torch.randn((x.shape[0], 64, x.shape[1]), generator=gen, dtype=x.dtype)
        soft = _soft_map(model, x + delta, target, draws, count)
        loss = (soft * reported).sum() - (soft * runner_up).sum()
        (step,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = delta - (eps / 5) * step / step.norm(dim=1, keepdim=True).clamp_min(1e-12)
            delta = delta * eps / delta.norm(dim=1, keepdim=True).clamp_min(eps)  # project onto the ball
    return delta.detach()


def _best_overlap(p_big, reported, err):
    """The LARGEST top-k overlap with `reported` that a true map within err of p_big (every feature) can have:
    reported features at their upper ends, the others at their lower ends, ties in favour of the reported. A
    value below c is a violation with confidence CHECK_CONFIDENCE; anything else cannot be called one."""
    favourable = torch.where(reported, p_big + err, p_big - err) + reported.double() * 1e-12
    return (topk_mask(favourable, K) & reported).sum(1)


@pytest.fixture(scope="module")
def attacked():
    model, data = zoo.load("digits-softplus-mlp")
    x = data.x_test[:12].double()
    model = copy.deepcopy(model).double()
    target = model(x).argmax(1)
    explainer = SparsifiedSmoothGrad(model, sigma=SIGMA, samples=SAMPLES, l0=L0, seed=3)
    p_hat = explainer.attribute(x, target=target)
    reported = topk_mask(p_hat, K)
    ranks = p_hat.sort(dim=1, descending=True, stable=True).indices
    runner_up = torch.zeros_like(reported).scatter_(1, ranks[:, K : 2 * K], True)
    big = SparsifiedSmoothGrad(model, sigma=SIGMA, samples=BIG, l0=L0, seed=11, samples_per_chunk=2048)
    err = hoeffding_error(BIG, x.shape[1], CHECK_CONFIDENCE)
    gen = torch.Generator().manual_seed(0)
    return model, x, target, p_hat, reported, runner_up, big, err, gen


@pytest.mark.parametrize("eps", [0.1, 0.25])
def test_pgd_on_sparsified_smoothgrad_never_beats_the_certified_topk(attacked, eps):
    model, x, target, p_hat, reported, runner_up, big, err, gen = attacked
    c = certified_topk(p_hat, K, eps, SIGMA, SAMPLES, CONFIDENCE)
    assert (c > 0).any()
    delta = _attack(model, x, target, reported.double(), runner_up.double(), eps, gen=gen)
    assert (delta.norm(dim=1) <= eps * (1 + 1e-9)).all()
    p_big = big.attribute(x + delta, target=target).double()
    best = _best_overlap(p_big, reported, err)
    assert (best >= c).all(), f"certified {c.tolist()}, largest overlap compatible with the estimate {best.tolist()}"


def test_the_attack_and_check_detect_a_bound_that_is_too_optimistic(attacked):
    """Power of the check: the count certified at eps = 0.1 is claimed for a ball 30 times larger; the same
    attack there must produce an overlap below it (with the same slack) for some input."""
    model, x, target, p_hat, reported, runner_up, big, err, gen = attacked
    c = certified_topk(p_hat, K, 0.1, SIGMA, SAMPLES, CONFIDENCE)
    delta = _attack(model, x, target, reported.double(), runner_up.double(), 3.0, gen=gen)
    best = _best_overlap(big.attribute(x + delta, target=target).double(), reported, err)
    assert (best < c).any(), f"certified at 0.1: {c.tolist()}; attacked at 3.0: {best.tolist()}"
