"""Testing by betting: sequential kernel tests of (conditional) independence and of semantic importance.

Sources: Teneggi & Sulam, "I Bet You Did Not Mean That: Testing Semantic Importance via Betting", NeurIPS
2024 (arXiv 2405.19146), section 3 (SKIT, c-SKIT, x-SKIT); Podkopaev, Bloebaum, Kasiviswanathan & Ramdas,
"Sequential Kernelized Independence Testing", ICML 2023 (the HSIC witness, swapped pairs, ONS betting).
Conventions and constants as in ANCHORS 5.4.

The game. A player starts with wealth K_0 = 1 and at each step t = 1, 2, ... bets a fraction kappa_t in
[0, 1/2], chosen from the past only (predictable), on a payoff v_t in [-1, 1]:

    K_t = K_{t-1} (1 + kappa_t v_t),     v_t = tanh(g_t / s_t),

where g_t is a witness statistic evaluated on the new observation(s) and their null counterpart(s), with the
witness function estimated from the past only, and s_t = q90 - q10 of g_1..g_{t-1} (s_t = 1 for t <= 2,
s_t >= 1e-4). The fraction kappa_t follows online Newton step (ONS): kappa = 0, a = 1; after each step
z = v/(1 + kappa v), a <- a + z^2, kappa <- clip(kappa + (2/(2 - ln 3)) z/a, 0, 1/2). Since kappa <= 1/2 and
|v| <= 1, every factor 1 + kappa v >= 1/2 and the wealth stays positive.

Validity (Ville's inequality). Under the null the observed and null samples are exchangeable given the past
and g is antisymmetric in them, so E[v_t | past] = 0 and (K_t) is a non-negative martingale with K_0 = 1;
Ville's inequality gives

    P_H0( exists t >= 1 : K_t >= 1/alpha ) <= alpha,

so rejecting at the first t with K_t >= 1/alpha is an anytime-valid level-alpha test (any stopping rule,
any number of looks), p_t = min(1, 1/max_{s<=t} K_s) is an anytime-valid p-value, and the stopped wealth
K_tau is an e-value (E_H0 K_tau <= 1, optional stopping), which `ebh` combines across concepts (Wang &
Ramdas 2022, e-BH controls the false discovery rate at alpha under arbitrary dependence).

Witnesses (means over the past; kernels are RBF with the median heuristic gamma = 1/(2 median^2), median of
the pairwise Euclidean distances of the first `bandwidth_samples` past samples, then frozen; or linear):

* SKIT (Y independent of Z), two samples per step: w(y, z) = mean_i k(y,y_i) l(z,z_i) - mean_i k(y,y_i)
  mean_i l(z,z_i) (the HSIC witness) and g = w(y1,z1) + w(y2,z2) - w(y1,z2) - w(y2,z1).
* c-SKIT (Y independent of Z_j given Z_{-j}): u = (y, z_j, z_{-j}), u~ = (y, z~_j, z_{-j}) with
  z~_j ~ P(Z_j | Z_{-j}) from a conditional sampler; w(x) = mean_i k(x, u_i) - mean_i k(x, u~_i) (the MMD
  witness, product kernel over the blocks y, z_j, z_{-j}), g = w(u_t) - w(u~_t).
* x-SKIT (g(H~_{S u j}) =d g(H~_S)): the same MMD witness on y = g(H~_{S u j}) against y~ = g(H~_S).

Batching: every function runs B independent tests at once (concepts x repetitions); the time loop is
sequential by nature and each step is one set of array operations over the tests still running. By default
(`stop=True`) a test stops betting at its rejection time (kappa = 0 afterwards), so its wealth stays at
K_tau; with `stop=False` every test plays all T steps and its e-value is K_T (what e-BH needs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from scipy.spatial.distance import pdist

from certify.errors import InvalidInputError, UsageError

ONS_STEP = 2.0 / (2.0 - math.log(3.0))
KAPPA_MAX = 0.5
MIN_SCALE = 1e-4
KERNELS = ("rbf", "linear")

__all__ = [
    "BettingResult",
    "ebh",
    "median_heuristic",
    "ons_bets",
    "payoff_scales",
    "skit",
    "cskit",
    "xskit",
    "two_sample_betting",
    "gaussian_conditional_sampler",
    "conditional_gaussian_samples",
    "synthetic_concepts",
    "SYNTHETIC_MEAN",
    "SYNTHETIC_COV",
]


# ----------------------------------------------------------------------------------------------- results
@dataclass
class BettingResult:
    """B sequential tests run for T steps.

    Arrays (numpy): `wealth` [B, T] (K_1..K_T; constant after a rejection when stopped), `bets` [B, T] (kappa_t),
    `payoffs` [B, T] (v_t), `statistics` [B, T] (g_t), `rejected` [B] bool, `rejection_time` [B] int (the
    first t in 1..T with K_t >= 1/alpha, -1 if none), `p_value` [B] (min(1, 1/max_{s<=tau} K_s)), `e_value`
    [B] (the final wealth: K_tau when stopped at the rejection time tau, else K_T). `names` labels the tests (e.g. concept names)."""

    test: str
    alpha: float
    wealth: np.ndarray
    bets: np.ndarray
    payoffs: np.ndarray
    statistics: np.ndarray
    rejected: np.ndarray
    rejection_time: np.ndarray
    p_value: np.ndarray
    e_value: np.ndarray
    names: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.rejected.shape[0])

    @property
    def steps(self) -> int:
        return int(self.wealth.shape[1])

    def rejection_times(self) -> list[int | None]:
        """Per test: the rejection time (steps, 1-based) or None if the test never rejected."""
        return [int(t) if t >= 0 else None for t in self.rejection_time]

    def rejection_rate(self) -> float:
        return float(self.rejected.mean()) if len(self) else float("nan")

    def median_rejection_time(self) -> float:
        """Median rejection time over the tests that rejected (NaN if none did)."""
        times = self.rejection_time[self.rejected]
        return float(np.median(times)) if times.size else float("nan")

    def ebh(self, alpha: float | None = None) -> np.ndarray:
        """e-BH discoveries [B] on the e-values (K_tau, or K_T with stop=False; see `ebh`)."""
        return ebh(self.e_value, self.alpha if alpha is None else alpha)


# ------------------------------------------------------------------------------------------- validation
def _alpha(alpha: float) -> float:
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0.0 < float(alpha) < 1.0:
        raise UsageError(f"alpha must be a number in (0, 1), got {alpha!r}")
    return float(alpha)


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise UsageError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _kernel(kernel: str) -> str:
    if kernel not in KERNELS:
        raise UsageError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    return kernel


def _as_array(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor on any device
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must be a numeric array: {exc}") from exc
    if not np.all(np.isfinite(arr)):
        raise InvalidInputError(f"{name} contains NaN or Inf")
    return arr


def _stream(x: Any, name: str, batched: bool | None = None) -> np.ndarray:
    """Normalise an observation stream to [B, N, d]: [N] -> [1, N, 1]; [B, N] -> [B, N, 1]; [B, N, d] kept.
    A 2-D array is read as [B, N] (scalar observations) unless `batched` is False ([N, d], one test)."""
    arr = _as_array(x, name)
    if arr.ndim == 1:
        arr = arr[None, :, None]
    elif arr.ndim == 2:
        arr = arr[None] if batched is False else arr[:, :, None]
    elif arr.ndim != 3:
        raise InvalidInputError(f"{name} must be [N], [B, N] or [B, N, d], got shape {tuple(arr.shape)}")
    if arr.shape[1] < 2:
        raise InvalidInputError(f"{name} needs at least 2 observations per test, got {arr.shape[1]}")
    return arr


# ---------------------------------------------------------------------------------------------- kernels
def median_heuristic(x: Any) -> float:
    """gamma = 1/(2 median^2) for samples `x` [n, d] (or [n]): the median of the pairwise Euclidean
    distances (scipy.spatial.distance.pdist); a zero median (constant data) gives gamma = 1/2. Matches
    `sklearn.metrics.pairwise.rbf_kernel(x, gamma=...)`, k(a, b) = exp(-gamma ||a - b||^2)."""
    arr = _as_array(x, "x")
    arr = arr.reshape(arr.shape[0], -1)
    if arr.shape[0] < 2:
        raise InvalidInputError("median_heuristic needs at least 2 samples")
    return float(_gamma(np.median(pdist(arr))))


def _gamma(median: np.ndarray) -> np.ndarray:
    """gamma = 1/(2 median^2), a zero median (constant data) counting as 1."""
    return 1.0 / (2.0 * np.where(median > 0, median, 1.0) ** 2)


def _gram(query: np.ndarray, past: np.ndarray, kernel: str, gamma: np.ndarray | None) -> np.ndarray:
    """k(query [B, q, d], past [B, n, d]) -> [B, q, n] for each test (RBF exp(-gamma ||a-b||^2) or <a, b>)."""
    if kernel == "linear":
        return np.einsum("bqd,bnd->bqn", query, past)
    sq = ((query[:, :, None, :] - past[:, None, :, :]) ** 2).sum(-1)
    return np.exp(-gamma[:, None, None] * sq)


class _Bandwidths:
    """Per-test, per-block median-heuristic gammas of the first n samples of fixed streams [B, N_b, d_b]:
    recomputed while n < `limit` (the first n samples), then frozen at the value from the first `limit`.

    `update(n)` takes increasing n (the game's past grows). The pairwise distances are kept sorted per test
    and block, and an update merges in only the distances of the new samples to the earlier ones (a linear
    merge of two sorted runs, O(B n^2) per update instead of a median over all pairs after recomputing
    them); the median is then read off the sorted distances, the same value `np.median` gives."""

    def __init__(self, streams: Sequence[np.ndarray], limit: int, kernel: str) -> None:
        self.kernel, self.limit = kernel, limit
        self.streams = [s[:, :limit] for s in streams]
        tests = self.streams[0].shape[0]
        self.gamma = [np.ones(tests) for _ in self.streams]
        self.frozen = False
        self.size = 0  # samples whose pairwise distances are merged in
        self.sorted = [np.empty((tests, 0)) for _ in self.streams]
        # pairs (later, earlier) ordered by the later sample: those among the first m come first
        self.later, self.earlier = np.tril_indices(self.streams[0].shape[1], -1)

    def update(self, n: int) -> None:
        if self.kernel == "linear" or self.frozen or n < 2:
            return
        m = min(n, self.limit)
        start, pairs = self.size * (self.size - 1) // 2, m * (m - 1) // 2
        later, earlier = self.later[start:pairs], self.earlier[start:pairs]
        for b, x in enumerate(self.streams):
            new = np.sort(np.sqrt(((x[:, later] - x[:, earlier]) ** 2).sum(-1)), axis=1)
            merged = np.sort(np.concatenate([self.sorted[b], new], axis=1), axis=1, kind="stable")
            self.sorted[b] = merged
            self.gamma[b] = _gamma((merged[:, (pairs - 1) // 2] + merged[:, pairs // 2]) / 2)
        self.size = m
        self.frozen = n >= self.limit

    def take(self, rows: np.ndarray) -> list[np.ndarray]:
        return [g[rows] for g in self.gamma]


# ---------------------------------------------------------------------------------------------- betting
def payoff_scales(history: np.ndarray) -> np.ndarray:
    """s_t from past statistics `history` [B, t-1]: q90 - q10 (numpy quantiles), 1 while fewer than 2 past
    values, at least 1e-4."""
    if history.shape[1] < 2:
        return np.ones(history.shape[0])
    q10, q90 = np.quantile(history, [0.1, 0.9], axis=1)
    return np.maximum(q90 - q10, MIN_SCALE)


def ons_bets(payoffs: Any) -> np.ndarray:
    """ONS betting fractions kappa [B, T] for payoffs v [B, T] (or [T]) in [-1, 1]: kappa_1 = 0, a = 1, and
    after step t: z = v_t/(1 + kappa_t v_t), a <- a + z^2, kappa_{t+1} = clip(kappa_t + (2/(2 - ln 3)) z/a,
    0, 1/2) (ANCHORS 5.4; Cutkosky & Orabona 2018). kappa_t depends on v_1..v_{t-1} only."""
    v = _as_array(payoffs, "payoffs")
    single = v.ndim == 1
    v = np.atleast_2d(v)
    if np.any(np.abs(v) > 1.0):
        raise InvalidInputError("payoffs must lie in [-1, 1]")
    kappa, a = np.zeros(v.shape[0]), np.ones(v.shape[0])
    out = np.empty_like(v)
    for t in range(v.shape[1]):
        out[:, t] = kappa
        kappa, a = _ons_update(kappa, a, v[:, t])
    return out[0] if single else out


def _ons_update(kappa: np.ndarray, a: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = v / (1.0 + kappa * v)
    a = a + z * z
    return np.clip(kappa + ONS_STEP * z / a, 0.0, KAPPA_MAX), a


def ebh(e_values: Any, alpha: float = 0.05) -> np.ndarray:
    """e-BH (Wang & Ramdas 2022): with e_(1) >= ... >= e_(m) the sorted e-values, k* = max{k : e_(k) >=
    m/(alpha k)} and the k* largest are discoveries (none if no k qualifies). Returns a bool mask [m]; FDR
    <= alpha under any dependence. Raises UsageError for alpha outside (0, 1), InvalidInputError for
    negative or non-finite e-values."""
    alpha = _alpha(alpha)
    e = _as_array(e_values, "e_values").reshape(-1)
    if np.any(e < 0):
        raise InvalidInputError("e-values must be non-negative")
    m = e.size
    mask = np.zeros(m, dtype=bool)
    if m == 0:
        return mask
    order = np.argsort(-e, kind="stable")
    ks = np.arange(1, m + 1)
    ok = e[order] >= m / (alpha * ks)
    if ok.any():
        kstar = int(ks[ok].max())
        mask[order[:kstar]] = True
    return mask


def _run_game(
    test: str,
    batch: int,
    steps: int,
    statistic: Callable[[int, np.ndarray], np.ndarray],
    alpha: float,
    names: Sequence[str] | None,
    params: dict[str, Any],
    stop: bool = True,
) -> BettingResult:
    """The betting loop shared by all tests: `statistic(t, rows)` gives g_t [len(rows)] for the running
    tests `rows` (0-based step t, witness from steps < t). With `stop` a test leaves the game at its first
    crossing of 1/alpha; without, it plays all steps (its e-value is then K_T, for e-BH)."""
    threshold = 1.0 / alpha
    wealth = np.ones((batch, steps))
    bets = np.zeros((batch, steps))
    payoffs = np.zeros((batch, steps))
    stats = np.zeros((batch, steps))
    kappa, a, k = np.zeros(batch), np.ones(batch), np.ones(batch)
    tau = np.full(batch, -1, dtype=np.int64)
    running = np.arange(batch)
    for t in range(steps):
        if running.size == 0:
            wealth[:, t:] = k[:, None]
            break
        g = statistic(t, running)
        s = payoff_scales(stats[running, :t])
        v = np.tanh(g / s)
        kr = kappa[running]
        k[running] = k[running] * (1.0 + kr * v)
        stats[running, t], payoffs[running, t], bets[running, t] = g, v, kr
        kappa[running], a[running] = _ons_update(kr, a[running], v)
        wealth[:, t] = k
        hit = running[(k[running] >= threshold) & (tau[running] < 0)]
        tau[hit] = t + 1
        if stop:
            running = running[k[running] < threshold]
    rejected = tau >= 0
    p_value = np.minimum(1.0, 1.0 / wealth.max(axis=1))
    labels = list(names) if names is not None else [f"test {i}" for i in range(batch)]
    if len(labels) != batch:
        raise UsageError(f"names has {len(labels)} entries for {batch} tests")
    return BettingResult(test, alpha, wealth, bets, payoffs, stats, rejected, tau, p_value, k.copy(), labels,
                         dict(params, alpha=alpha, steps=steps, stop=stop))


def _common(alpha: float, kernel: str, tau_max: int | None, bandwidth_samples: int) -> tuple[float, str]:
    alpha = _alpha(alpha)
    kernel = _kernel(kernel)
    if tau_max is not None:
        _positive_int(tau_max, "tau_max")
    _positive_int(bandwidth_samples, "bandwidth_samples", 2)
    return alpha, kernel


# ------------------------------------------------------------------------------------------------- SKIT
def skit(
    y: Any,
    z: Any,
    alpha: float = 0.05,
    kernel: str = "rbf",
    tau_max: int | None = None,
    bandwidth_samples: int = 100,
    names: Sequence[str] | None = None,
    stop: bool = True,
) -> BettingResult:
    """SKIT (Podkopaev et al. 2023, section 3; Teneggi & Sulam 2024, eq. for H0: Y-hat independent of Z_j):
    B sequential HSIC tests of Y independent of Z at once.

    `y` [N], [B, N] or [B, N, dy]; `z` likewise with the same B and N. Step t uses the pair of observations
    (2t-1, 2t) and their swapped pairs as the null samples, so T = min(N // 2, tau_max) steps. Raises
    UsageError (alpha, kernel, tau_max, bandwidth_samples, names) and InvalidInputError (shapes, NaN).
    `stop=False` keeps betting after a rejection (rejection time unchanged; e-value K_T for e-BH: a
    stopped K_tau is capped near 1/alpha, too small for e-BH's thresholds m/(alpha k))."""
    alpha, kernel = _common(alpha, kernel, tau_max, bandwidth_samples)
    ys, zs = _stream(y, "y"), _stream(z, "z")
    if ys.shape[:2] != zs.shape[:2]:
        raise InvalidInputError(f"y and z need the same [B, N], got {ys.shape[:2]} and {zs.shape[:2]}")
    batch, n = ys.shape[:2]
    steps = n // 2 if tau_max is None else min(n // 2, tau_max)
    bw = _Bandwidths([ys, zs], bandwidth_samples, kernel)

    def statistic(t: int, rows: np.ndarray) -> np.ndarray:
        if t == 0:
            return np.zeros(rows.size)
        past = 2 * t
        bw.update(past)
        gy, gz = bw.take(rows)
        yp, zp = ys[rows, :past], zs[rows, :past]
        ky = _gram(ys[rows, past:past + 2], yp, kernel, gy)  # [b, 2, n]
        lz = _gram(zs[rows, past:past + 2], zp, kernel, gz)
        my, mz = ky.mean(-1), lz.mean(-1)  # [b, 2]
        joint = np.einsum("bqn,brn->bqr", ky, lz) / past  # [b, 2 (y), 2 (z)]
        w = joint - my[:, :, None] * mz[:, None, :]
        return w[:, 0, 0] + w[:, 1, 1] - w[:, 0, 1] - w[:, 1, 0]

    return _run_game("skit", batch, steps, statistic, alpha, names,
                     {"kernel": kernel, "bandwidth_samples": bandwidth_samples, "samples_per_step": 2}, stop)


# ------------------------------------------------------------------------------------ two-sample (MMD)
def two_sample_betting(
    x: Any,
    x_null: Any,
    alpha: float = 0.05,
    kernel: str = "rbf",
    tau_max: int | None = None,
    bandwidth_samples: int = 100,
    blocks: Sequence[Sequence[int]] | None = None,
    names: Sequence[str] | None = None,
    test: str = "two-sample",
    stop: bool = True,
) -> BettingResult:
    """Sequential kernel two-sample test of x =d x_null by betting with the MMD witness w(u) = mean_i
    k(u, x_i) - mean_i k(u, x~_i) over the past and g_t = w(x_t) - w(x~_t) (one pair per step).

    `x`, `x_null`: [N], [B, N] or [B, N, d]; `blocks`: column groups of d with one RBF bandwidth each (a
    product kernel; default one block), bandwidths from the pooled past of x and x_null (so swapping the two
    streams leaves them unchanged and flips g). Used by c-SKIT and x-SKIT."""
    alpha, kernel = _common(alpha, kernel, tau_max, bandwidth_samples)
    xs, xn = _stream(x, "x"), _stream(x_null, "x_null")
    if xs.shape != xn.shape:
        raise InvalidInputError(f"x and x_null need the same shape, got {xs.shape} and {xn.shape}")
    batch, n, d = xs.shape
    groups = [list(range(d))] if blocks is None else [list(b) for b in blocks]
    flat = sorted(i for b in groups for i in b)
    if not groups or any(not b for b in groups) or flat != list(range(d)):
        raise UsageError(f"blocks must partition the {d} columns, got {blocks!r}")
    steps = n if tau_max is None else min(n, tau_max)
    parts = [(xs[..., b], xn[..., b]) for b in groups]
    # bandwidths from the pooled past of both streams, interleaved so the first `limit` samples are balanced
    pooled = [np.stack([o, q], axis=2).reshape(batch, 2 * n, -1) for o, q in parts]
    bw = _Bandwidths(pooled, bandwidth_samples, kernel)

    def statistic(t: int, rows: np.ndarray) -> np.ndarray:
        if t == 0:
            return np.zeros(rows.size)
        bw.update(2 * t)
        gammas = bw.take(rows)
        kx = kn = None
        for (o, q), gamma in zip(parts, gammas):
            query = np.stack([o[rows, t], q[rows, t]], axis=1)  # [b, 2, d_b]
            a = _gram(query, o[rows, :t], kernel, gamma)  # [b, 2, t]
            c = _gram(query, q[rows, :t], kernel, gamma)
            kx = a if kx is None else kx * a
            kn = c if kn is None else kn * c
        w = kx.mean(-1) - kn.mean(-1)  # witness at (x_t, x~_t)
        return w[:, 0] - w[:, 1]

    return _run_game(test, batch, steps, statistic, alpha, names,
                     {"kernel": kernel, "bandwidth_samples": bandwidth_samples, "blocks": groups,
                      "samples_per_step": 1}, stop)


def cskit(
    y: Any,
    z: Any,
    j: int,
    sampler: Callable[[np.ndarray, np.random.Generator], np.ndarray],
    alpha: float = 0.05,
    kernel: str = "rbf",
    tau_max: int | None = None,
    bandwidth_samples: int = 100,
    seed: int = 0,
    names: Sequence[str] | None = None,
    stop: bool = True,
) -> BettingResult:
    """c-SKIT (Teneggi & Sulam 2024, section 3.2): B sequential tests of Y independent of Z_j given Z_{-j}.

    `y` [B, N] or [B, N, dy]; `z` [B, N, d] (or [N, d] for one test); `j` the tested column; `sampler(z_rows
    [M, d], rng)` returns M draws of Z_j given Z_{-j} = z_rows[:, -j] (e.g. `gaussian_conditional_sampler`),
    called once with all B*N rows and numpy default_rng([seed, 0x5C17]). The test compares u = (y, z_j, z_{-j}) with
    u~ = (y, z~_j, z_{-j}) by `two_sample_betting` with a product RBF kernel over the blocks y, z_j, z_{-j}.
    Valid when the sampler is the true conditional (model-X); an approximate sampler tests its own error
    too."""
    zs, ya = _as_array(z, "z"), _as_array(y, "y")
    single = zs.ndim == 2
    if single:
        zs = zs[None]
    if zs.ndim != 3:
        raise InvalidInputError(f"z must be [B, N, d] or [N, d], got shape {tuple(zs.shape)}")
    if single and ya.ndim in (1, 2):  # one test: y [N] or [N, dy]
        ya = ya.reshape(1, ya.shape[0], -1)
    ys = _stream(ya, "y")
    if ys.shape[:2] != zs.shape[:2]:
        raise InvalidInputError(f"y and z need the same [B, N], got {ys.shape[:2]} and {zs.shape[:2]}")
    batch, n, d = zs.shape
    if isinstance(j, bool) or not isinstance(j, (int, np.integer)) or not 0 <= int(j) < d:
        raise UsageError(f"j must be a column index in [0, {d}), got {j!r}")
    if not callable(sampler):
        raise UsageError("sampler must be callable as sampler(z_rows, rng)")
    # a stream of its own: Generator(seed) itself would replay data drawn with the same integer seed
    rng = np.random.default_rng([int(seed), 0x5C17])
    draws = np.asarray(sampler(zs.reshape(batch * n, d), rng), dtype=np.float64).reshape(-1)
    if draws.size != batch * n or not np.all(np.isfinite(draws)):
        raise InvalidInputError(f"sampler must return {batch * n} finite values, got {draws.size}")
    rest = [i for i in range(d) if i != j]
    dy = ys.shape[2]
    u = np.concatenate([ys, zs[..., [j]], zs[..., rest]], axis=2)
    u_null = np.concatenate([ys, draws.reshape(batch, n, 1), zs[..., rest]], axis=2)
    blocks = [list(range(dy)), [dy]] + ([list(range(dy + 1, dy + 1 + len(rest)))] if rest else [])
    result = two_sample_betting(u, u_null, alpha, kernel, tau_max, bandwidth_samples, blocks, names, "c-skit", stop)
    result.params.update(j=int(j), seed=seed)
    return result


def xskit(
    y: Any,
    y_null: Any,
    alpha: float = 0.05,
    kernel: str = "rbf",
    tau_max: int | None = None,
    bandwidth_samples: int = 100,
    names: Sequence[str] | None = None,
    stop: bool = True,
) -> BettingResult:
    """x-SKIT (Teneggi & Sulam 2024, section 3.3, local importance): B sequential tests of g(H~_{S u j}) =d
    g(H~_S), H~_C ~ P(H | Z_C = z_C). `y` [B, N(, d)]: model outputs on samples conditioned on S u {j};
    `y_null`: on samples conditioned on S (see `conditional_gaussian_samples`). One pair per step."""
    return two_sample_betting(y, y_null, alpha, kernel, tau_max, bandwidth_samples, None, names, "x-skit", stop)


# --------------------------------------------------------------------------------- conditional samplers
def gaussian_conditional_sampler(mean: Any, cov: Any, j: int) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """Sampler of Z_j | Z_{-j} for Z ~ N(mean, cov): mean_j + S_{j,-j} S_{-j,-j}^{-1} (z_{-j} - mean_{-j}),
    variance S_jj - S_{j,-j} S_{-j,-j}^{-1} S_{-j,j}. Returns `sampler(z_rows [M, d], rng) -> [M]`."""
    mu, sigma = _as_array(mean, "mean").reshape(-1), _as_array(cov, "cov")
    d = mu.size
    if sigma.shape != (d, d):
        raise InvalidInputError(f"cov must be [{d}, {d}], got {sigma.shape}")
    if not 0 <= j < d:
        raise UsageError(f"j must be in [0, {d}), got {j}")
    rest = [i for i in range(d) if i != j]
    if rest:
        coef = np.linalg.solve(sigma[np.ix_(rest, rest)], sigma[rest, j])
        var = float(sigma[j, j] - sigma[j, rest] @ coef)
    else:
        coef, var = np.zeros(0), float(sigma[j, j])
    if var < -1e-10:
        raise InvalidInputError("cov is not positive semi-definite")
    std = math.sqrt(max(var, 0.0))

    def sample(z_rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        centre = mu[j] + (z_rows[:, rest] - mu[rest]) @ coef
        return centre + std * rng.standard_normal(z_rows.shape[0])

    return sample


def conditional_gaussian_samples(
    mean: Any, cov: Any, directions: Any, values: Any, n: int, seed: int = 0
) -> np.ndarray:
    """n draws of H ~ N(mean, cov) conditioned on C^T H = values (C = `directions` [d, k], k concepts):
    mean + S C (C^T S C)^+ (values - C^T mean), covariance S - S C (C^T S C)^+ C^T S. For x-SKIT's
    H~_C ~ P(H | Z_C = z_C) under a Gaussian model of the representation. Returns [n, d]."""
    mu, sigma = _as_array(mean, "mean").reshape(-1), _as_array(cov, "cov")
    c = _as_array(directions, "directions").reshape(mu.size, -1)
    z = _as_array(values, "values").reshape(-1)
    if z.size != c.shape[1]:
        raise InvalidInputError(f"values has {z.size} entries for {c.shape[1]} directions")
    n = _positive_int(n, "n")
    sc = sigma @ c
    inv = np.linalg.pinv(c.T @ sc)
    m = mu + sc @ inv @ (z - c.T @ mu)
    s = sigma - sc @ inv @ sc.T
    vals, vecs = np.linalg.eigh((s + s.T) / 2)
    root = vecs * np.sqrt(np.clip(vals, 0.0, None))
    rng = np.random.default_rng(seed)
    return m + rng.standard_normal((n, mu.size)) @ root.T


# ------------------------------------------------------------------------------------------- synthetic
SYNTHETIC_MEAN = np.array([1.0, -1.0, 1.0])
SYNTHETIC_COV = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 2.0]])


def synthetic_concepts(
    n: int, beta: Sequence[float] = (1.0, 1.0, 1.0), reps: int = 1, noise: float = 0.01, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic model of Teneggi & Sulam 2024 (section 4.1; ANCHORS 5.4): Z1 ~ N(1, 1), Z2 ~ N(-1, 1),
    Z3 = Z1 + N(0, 1), Y = sigmoid(b1 Z1 + b2 Z2 Z3 + b3 Z3) + N(0, noise^2). Z is jointly Gaussian with
    mean SYNTHETIC_MEAN and covariance SYNTHETIC_COV (so Z1 | Z3 ~ N((z3 + 1)/2, 1/2)). Returns (y [reps, n],
    z [reps, n, 3]). With b2 = 0, Y is independent of Z2; with b1 = 0, Y is independent of Z1 given Z3 (but
    not marginally)."""
    n, reps = _positive_int(n, "n"), _positive_int(reps, "reps")
    b = _as_array(beta, "beta").reshape(-1)
    if b.size != 3:
        raise UsageError(f"beta must have 3 entries, got {b.size}")
    rng = np.random.default_rng(seed)
    z1 = 1.0 + rng.standard_normal((reps, n))
    z2 = -1.0 + rng.standard_normal((reps, n))
    z3 = z1 + rng.standard_normal((reps, n))
    y = 1.0 / (1.0 + np.exp(-(b[0] * z1 + b[1] * z2 * z3 + b[2] * z3))) + noise * rng.standard_normal((reps, n))
    return y, np.stack([z1, z2, z3], axis=-1)
