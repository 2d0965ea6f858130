"""The checker's own local curvature bound (certify.certificates.local_check, DESIGN section 11) and the rules of
local weak-convexity / curvature claims: agreement with the issuer's certify.bounds.local to a relative 1e-9,
soundness against exact Hessians (autograd, float64) at sampled points of the ball and on its boundary, the
exact eigenvalues at x as the radius shrinks, refusals (ReLU, a skip connection), and the region conditions
of lemma MG-LOC (tamper-style: each violated condition is rejected with a message naming it)."""
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from certify.bounds import local as issuer_local
from certify.bounds.network import from_module
from certify.certificates import checker, local_check, semantics
from certify.certificates._common import Invalid
from certify.certificates.builder import certify_explanations
from certify.certificates.checker import verify_certificate
from certify.certificates.claims import Claim, render
from certify.certificates.document import encode_array
from certify.explain import Gradient
from certify.explain.moreaugrad import MoreauGrad
from certify.models import zoo
from certify.models.hashing import model_hash

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edits import doc_claim as _doc_claim, edited as _edit  # noqa: E402

ZOO = ("digits-softplus-mlp", "digits-softplus-mlp2", "digits-softplus-cnn")


class _Residual(nn.Sequential):
    def forward(self, x):
        return x + super().forward(x)


def _small(acts, seed=0, scale=1.5):
    """A small chain 6 -> 8 (-> 7) -> 3 with the given activation modules, weights large enough for the boxes
    to straddle the critical points of sigma' and sigma''."""
    torch.manual_seed(seed)
    widths = (6, 8, 7)[: len(acts) + 1] + (3,)
    layers = []
    for k, act in enumerate(acts):
        layers += [nn.Linear(widths[k], widths[k + 1]), act]
    layers.append(nn.Linear(widths[len(acts)], widths[len(acts) + 1]))
    model = nn.Sequential(*layers).double().eval()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(scale)
    return model, (widths[0],)


@pytest.fixture(scope="module")
def zoo_models():
    out = {}
    for name in ZOO:
        model, data = zoo.load(name)
        shape = tuple(data.input_shape)
        out[name] = (model, shape, torch.as_tensor(data.x_test[:2], dtype=torch.float64))
    return out


def _row(classes, c):
    row = torch.zeros(classes, dtype=torch.float64)
    row[c] = 1.0
    return row


def _issuer(model, shape, x, radius, row):
    net = from_module(model, shape)
    boxes = issuer_local.region_boxes(net, x.reshape(1, -1), torch.tensor([radius], dtype=torch.float64), p=2)
    lc = issuer_local.local_curvature(net, row, boxes)
    return float(lc.lower[0]), float(lc.upper[0]), boxes


def _f(stages, row):
    """f = row . N with exact activations (autograd-differentiable twice), for the reference Hessians."""
    def act(a, z):
        if a[0] == "softplus":
            return torch.logaddexp(torch.zeros_like(z), a[1] * z) / a[1]
        return torch.sigmoid(z) if a[0] == "sigmoid" else torch.tanh(z)

    def f(y):
        h = y
        for k, (w, b) in enumerate(zip(stages.mats, stages.biases)):
            z = torch.as_tensor(w, dtype=torch.float64) @ h + torch.as_tensor(b, dtype=torch.float64)
            h = act(stages.acts[k], z) if k < len(stages.acts) else z
        return row @ h
    return f


def _points(x, radius, m, seed):
    """m points of the ball B(x, radius): half on its boundary, half inside (uniform in volume)."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(m, x.numel(), generator=g, dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True)
    t = torch.rand(m, 1, generator=g, dtype=torch.float64) ** (1.0 / x.numel())
    t[: m // 2] = 1.0
    return x.reshape(1, -1) + radius * (1 - 1e-15) * t * d


def _hessian_eigs(f, y):
    return torch.linalg.eigvalsh(torch.autograd.functional.hessian(f, y))


# ------------------------------------------------------------------ agreement with the issuer


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("radius", [1e-6, 0.05, 0.3, 1.5])
def test_agrees_with_the_issuer_on_the_zoo(zoo_models, name, radius):
    model, shape, xs = zoo_models[name]
    stages = semantics.translate(model, shape)
    for i, c in ((0, 0), (1, 7)):
        row = _row(10, c)
        lower, upper, boxes = _issuer(model, shape, xs[i], radius, row)
        lo, hi = local_check.hessian_bounds(stages, xs[i].reshape(-1), radius, row)
        assert abs(lo - lower) <= 1e-9 * abs(lower) and abs(hi - upper) <= 1e-9 * abs(upper), (lo, lower, hi, upper)
        mine = local_check.region_boxes(stages, xs[i].reshape(-1), radius)
        for (b_lo, b_hi), theirs in zip(mine, boxes):
            scale = theirs.mag[0]
            assert bool(((b_lo - theirs.lo[0]).abs() <= 1e-12 * scale).all())
            assert bool(((b_hi - theirs.hi[0]).abs() <= 1e-12 * scale).all())


@pytest.mark.parametrize("acts", [(nn.Sigmoid(), nn.Tanh()), (nn.Softplus(beta=3.0), nn.Sigmoid()), (nn.Tanh(),)])
def test_agrees_with_the_issuer_on_smooth_activations(acts):
    model, shape = _small(acts)
    stages = semantics.translate(model, shape)
    x = torch.randn(6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for radius in (0.2, 1.0):
        row = torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64)
        lower, upper, _ = _issuer(model, shape, x, radius, row)
        lo, hi = local_check.hessian_bounds(stages, x, radius, row)
        assert abs(lo - lower) <= 1e-9 * abs(lower) and abs(hi - upper) <= 1e-9 * abs(upper), (lo, lower, hi, upper)


# ------------------------------------------------------------------ soundness and tightness


def _sound(stages, x, radius, row, m, seed):
    lo, hi = local_check.hessian_bounds(stages, x.reshape(-1), radius, row)
    boxes = local_check.region_boxes(stages, x.reshape(-1), radius)
    f = _f(stages, row)
    points = _points(x, radius, m, seed)
    for y in points:
        eig = _hessian_eigs(f, y)
        assert lo <= float(eig[0]) and float(eig[-1]) <= hi, (radius, lo, float(eig[0]), float(eig[-1]), hi)
    hs = points
    for k, (b_lo, b_hi) in enumerate(boxes):  # the boxes contain every pre-activation of the samples
        z = hs @ torch.as_tensor(stages.mats[k], dtype=torch.float64).T + torch.as_tensor(stages.biases[k], dtype=torch.float64)
        assert bool(((z >= b_lo) & (z <= b_hi)).all())
        hs = semantics.activate(stages.acts[k], z)
    return lo, hi


@pytest.mark.parametrize("name", ZOO)
def test_sound_against_exact_hessians_on_the_zoo(zoo_models, name):
    model, shape, xs = zoo_models[name]
    stages = semantics.translate(model, shape)
    for radius in (0.05, 0.5):
        _sound(stages, xs[0], radius, _row(10, 3), 6, seed=11)


@pytest.mark.parametrize("acts", [(nn.Sigmoid(), nn.Tanh()), (nn.Softplus(beta=3.0), nn.Sigmoid()), (nn.Tanh(), nn.Softplus())])
def test_sound_against_exact_hessians_on_smooth_activations(acts):
    model, shape = _small(acts, seed=2)
    stages = semantics.translate(model, shape)
    x = torch.randn(6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    row = torch.tensor([0.5, 1.0, -1.0], dtype=torch.float64)
    for radius in (0.1, 0.7, 3.0):
        _sound(stages, x, radius, row, 24, seed=7)


@pytest.mark.parametrize("acts", [(nn.Sigmoid(), nn.Tanh()), (nn.Softplus(beta=3.0), nn.Sigmoid()), (nn.Tanh(), nn.Softplus())])
def test_the_hessian_lies_between_l_and_u_up_to_p(acts, zoo_models):
    """The theorem's decomposition itself: at sampled points y of the ball, Hess f(y) - L >= -||P|| I and
    Hess f(y) - U <= ||P|| I (L, U: the first term by congruence at the ends of w_0, plus M)."""
    cases = [(*_small(acts, seed=4), torch.randn(6, generator=torch.Generator().manual_seed(6), dtype=torch.float64),
              torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64))]
    model, shape, xs = zoo_models["digits-softplus-mlp2"]
    cases.append((model, shape, xs[0], _row(10, 4)))
    for model, shape, x, row in cases:
        stages = semantics.translate(model, shape)
        f = _f(stages, row)
        for radius in (0.05, 0.8):
            low, high, mag, p = local_check.hessian_split(stages, x.reshape(-1), radius, row)
            p_norm = float(torch.linalg.eigvalsh(p)[-1])
            for y in _points(x, radius, 8, seed=9):
                h = torch.autograd.functional.hessian(f, y)
                slack = 1e-10 * float(h.abs().max() + mag.max()) * h.shape[0]
                assert float(torch.linalg.eigvalsh(h - low)[0]) >= -p_norm - slack
                assert float(torch.linalg.eigvalsh(h - high)[-1]) <= p_norm + slack


@pytest.mark.parametrize("act", [("softplus", 1.0, 20.0), ("softplus", 3.0, 20.0), ("sigmoid",), ("tanh",)])
def test_derivative_ranges_contain_and_touch_the_exact_ranges(act):
    """The ranges of sigma' and sigma'' on boxes around and away from the critical points contain the values on
    a fine grid (which includes the critical points) and exceed its hull by no more than rounding."""
    beta = act[1] if act[0] == "softplus" else 1.0
    crit = [0.0, -math.log(2 + math.sqrt(3)) / beta, math.log(2 + math.sqrt(3)) / beta,
            -math.atanh(1 / math.sqrt(3)), math.atanh(1 / math.sqrt(3))]
    los = torch.tensor([-3.0, -1.4, -0.9, -0.2, 0.1, 0.5, 1.2, -40.0, 2.0], dtype=torch.float64)
    his = torch.tensor([3.0, -1.2, -0.5, 0.2, 0.3, 1.4, 2.5, 40.0, 30.0], dtype=torch.float64)
    (dm, dr), (sm, sr) = local_check.derivative_ranges(act, los, his)
    for i in range(los.numel()):
        grid = torch.cat([torch.linspace(float(los[i]), float(his[i]), 4001, dtype=torch.float64),
                          torch.tensor([c for c in crit if los[i] <= c <= his[i]], dtype=torch.float64)])
        if act[0] == "softplus":
            d = torch.sigmoid(beta * grid)
            s = beta * d * torch.sigmoid(-beta * grid)
        elif act[0] == "sigmoid":
            d = torch.sigmoid(grid) * torch.sigmoid(-grid)
            s = d * (1 - 2 * torch.sigmoid(grid))
        else:
            d = 1 - torch.tanh(grid) ** 2
            s = -2 * torch.tanh(grid) * d
        for mid, rad, v in ((dm[i], dr[i], d), (sm[i], sr[i], s)):
            tol = 1e-13 * float(v.abs().max()) + 1e-300
            assert float(mid - rad) <= float(v.min()) + tol and float(v.max()) - tol <= float(mid + rad)
            slack = 1e-11 * float(v.abs().max()) + 1e-300  # the margins: 32 u (1 + |beta t|) of the value
            assert float(mid - rad) >= float(v.min()) - slack and float(mid + rad) <= float(v.max()) + slack


@pytest.mark.parametrize("name", ZOO)
def test_shrinking_radius_gives_the_exact_eigenvalues_at_x(zoo_models, name):
    model, shape, xs = zoo_models[name]
    stages = semantics.translate(model, shape)
    row = _row(10, 2)
    eig = _hessian_eigs(_f(stages, row), xs[1].reshape(-1))
    scale = float(eig.abs().max())
    for radius in (1e-7, 1e-10, 0.0):
        lo, hi = local_check.hessian_bounds(stages, xs[1].reshape(-1), radius, row)
        assert lo <= float(eig[0]) + 1e-12 * scale and float(eig[-1]) - 1e-12 * scale <= hi
        assert abs(lo - float(eig[0])) <= 1e-5 * scale and abs(hi - float(eig[-1])) <= 1e-5 * scale
    assert abs(lo - float(eig[0])) <= 1e-11 * scale and abs(hi - float(eig[-1])) <= 1e-11 * scale


def test_the_bound_grows_with_the_radius(zoo_models):
    model, shape, xs = zoo_models["digits-softplus-mlp2"]
    stages = semantics.translate(model, shape)
    widths = [local_check.hessian_bounds(stages, xs[0].reshape(-1), r, _row(10, 0)) for r in (0.01, 0.1, 1.0)]
    assert widths[0][0] >= widths[1][0] >= widths[2][0] and widths[0][1] <= widths[1][1] <= widths[2][1]


# ------------------------------------------------------------------ refusals


def test_refuses_relu_and_skip_connections():
    relu, shape = _small((nn.ReLU(),))
    with pytest.raises(Invalid, match="softplus, sigmoid, tanh activations only, not relu"):
        local_check.hessian_bounds(semantics.translate(relu, shape), torch.zeros(6), 0.1, torch.ones(3))
    torch.manual_seed(0)
    residual = _Residual(nn.Linear(3, 8), nn.Softplus(), nn.Linear(8, 3)).eval()
    stages = semantics.translate(residual, (3,))
    assert stages.skips
    with pytest.raises(Invalid, match="chains only: this network has skip connections"):
        local_check.hessian_bounds(stages, torch.zeros(3), 0.1, torch.ones(3))
    with pytest.raises(Invalid, match="features"):
        local_check.hessian_bounds(semantics.translate(_small((nn.Tanh(),))[0], (6,)), torch.zeros(5), 0.1, torch.ones(3))


def test_linear_network_has_zero_hessian():
    model = nn.Sequential(nn.Linear(4, 3)).double().eval()
    assert local_check.hessian_bounds(semantics.translate(model, (4,)), torch.zeros(4), 1.0, torch.ones(3)) == (0.0, 0.0)


# ------------------------------------------------------------------ the checker's rules (minimal contexts)


def _context(model, shape, x, claims, values, explanation=None):
    """A checker context whose assumptions' re-derived values are `values` (id -> value, taken as verified)."""
    ctx = object.__new__(checker._Context)
    stages, reason, kept, sem = checker._translate(model, shape, model_hash(model))
    assert reason is None
    ctx.stages, ctx.no_function, ctx.raw_stages, ctx.semantics = stages, None, kept.stages, sem
    ctx.model_memo, ctx.memo = kept.memo, {}
    ctx.x = x.reshape((1,) + shape).double()
    ctx.explanation = (torch.zeros_like(ctx.x) if explanation is None else explanation).reshape(ctx.x.shape)
    ctx.base_dir, ctx.target = None, 0
    ctx.claims = {c.id: c for c in claims}
    ctx.values, ctx.kinds = dict(values), {k: "certified" for k in values}
    return ctx


def _claim(id_, type_, params, value=1.0, assumptions=(), witness=None):
    return Claim(id_, type_, dict(params), "<=", value, "certified", "test", list(assumptions), dict(witness or {}))


def test_weak_convexity_and_curvature_take_the_smaller_of_global_and_local(zoo_models):
    model, shape, xs = zoo_models["digits-softplus-mlp2"]
    for radius in (None, 0.05, 5.0):
        wc = _claim("wc", "weak-convexity", {"target": 0, "radius": radius})
        cv = _claim("cv", "curvature", {"target": 0, "radius": radius})
        ctx = _context(model, shape, xs[0], [wc, cv], {})
        lam, beta = checker.check_weak_convexity(ctx, wc), checker.check_curvature(ctx, cv)
        low_g, high_g = checker._hessian_eigen_bounds(ctx, _row(10, 0))
        lam_g, beta_g = max(0.0, -low_g), max(high_g, -low_g, 0.0)
        if radius is None:
            assert lam == pytest.approx(lam_g, rel=1e-11) and beta == pytest.approx(beta_g, rel=1e-11)
            continue
        lower, upper, _ = _issuer(model, shape, xs[0], radius, _row(10, 0))
        assert lam == pytest.approx(min(lam_g, max(0.0, -lower)), rel=1e-9)
        assert beta == pytest.approx(min(beta_g, max(upper, -lower, 0.0)), rel=1e-9)
        if radius == 0.05:
            assert lam < lam_g and beta < beta_g  # the local constant is the useful one on a small ball


def test_local_claims_on_sigmoid_networks_need_no_global_bound():
    model, shape = _small((nn.Sigmoid(), nn.Tanh()))
    x = torch.zeros(6, dtype=torch.float64)
    wc_global = _claim("wc", "weak-convexity", {"target": 0, "radius": None})
    wc_local = _claim("wcl", "weak-convexity", {"target": 0, "radius": 0.5})
    ctx = _context(model, shape, x, [wc_global, wc_local], {})
    with pytest.raises(Invalid, match="softplus"):
        checker.check_weak_convexity(ctx, wc_global)
    lower, _, _ = _issuer(model, shape, x, 0.5, _row(3, 0))
    assert checker.check_weak_convexity(ctx, wc_local) == pytest.approx(max(0.0, -lower), rel=1e-9)
    relu, shape = _small((nn.ReLU(),))
    ctx = _context(relu, shape, x, [wc_local], {})
    with pytest.raises(Invalid, match="ReLU units may change state"):  # a ReLU net: 0 only where no unit switches
        checker.check_weak_convexity(ctx, wc_local)
    tiny = _claim("wct", "weak-convexity", {"target": 0, "radius": 1e-9})
    assert checker.check_weak_convexity(_context(relu, shape, x + 0.123, [tiny], {}), tiny) <= 1e-300
    with pytest.raises(Invalid, match="relu"):
        local_check.region_boxes(semantics.translate(relu, shape), x, 0.5)  # the curvature boxes refuse ReLU


RHO, LIP, LAM, EPS, TOL = 0.2, 2.0, 0.5, 0.1, 1e-3


def _moreau(model, shape, x, *, wc_radius, region="local", err_region=None, cv_radius=None, sparsity=0.0,
            lip_p=2, z_offset=0.01, err_rests_on="wcl", curvature=None, stab_radii=None, err_radii=None, lip=LIP):
    """A stability-moreaugrad claim with its solver-error, weak-convexity(-local), curvature and lipschitz
    assumptions (their re-derived values given), the iterate z at distance z_offset from x; `curvature`
    (or sparsity > 0) lists the curvature claim; *_radii: the witnesses of lemma MG-LOC's shrinking radii."""
    n = x.numel()
    z = x.reshape(-1) + z_offset * torch.eye(n, dtype=torch.float64)[0]
    a = (x.reshape(-1) - z) / RHO
    base = {"target": 0, "rho": RHO, "sparsity": sparsity, "group_size": None, "sigma": None, "confidence": None}
    lip_claim = _claim("lipschitz", "lipschitz", {"target": 0, "p": lip_p})
    wcg = _claim("weak-convexity", "weak-convexity", {"target": 0, "radius": None})
    wcl = _claim("wcl", "weak-convexity", {"target": 0, "radius": wc_radius})
    cv = _claim("cv", "curvature", {"target": 0, "radius": cv_radius})
    local = ["lipschitz"] if region == "local" else []
    err_region = region if err_region is None else err_region
    err_witness = {"z": encode_array(z.numpy()), **({} if err_radii is None else {"radii": err_radii})}
    err = _claim("solver-error", "solver-error", {**base, "region": err_region}, 1.0,
                 [err_rests_on] + (["lipschitz"] if err_region == "local" else []), err_witness)
    uses_cv = sparsity > 0 or curvature is not None
    stab = _claim("stability", "stability-moreaugrad", {**base, "region": region, "eps": EPS, "tol": TOL}, 10.0,
                  ["wcl" if region == "local" else "weak-convexity", "solver-error"] + (["cv"] if uses_cv else []) + local,
                  None if stab_radii is None else {"radii": stab_radii})
    values = {"lipschitz": lip, "weak-convexity": LAM, "wcl": LAM, "cv": 1.0 if curvature is None else curvature,
              "solver-error": 0.01}
    ctx = _context(model, shape, x, [lip_claim, wcg, wcl, cv, err, stab], values, explanation=a)
    return ctx, err, stab


@pytest.fixture(scope="module")
def mlp(zoo_models):
    model, shape, xs = zoo_models["digits-softplus-mlp"]
    return model, shape, xs[0]


def test_local_solver_error_rules(mlp):
    ok = RHO * LIP * 1.001
    ctx, err, _ = _moreau(*mlp, wc_radius=ok)
    assert math.isfinite(checker.check_solver_error(ctx, err))
    ctx, err, _ = _moreau(*mlp, wc_radius=RHO * LIP * 0.999)  # the prox point may leave the ball
    with pytest.raises(Invalid, match=r"holds on the ball of radius .* < 0.4"):
        checker.check_solver_error(ctx, err)
    ctx, err, _ = _moreau(*mlp, wc_radius=ok, z_offset=ok * 1.01)  # the iterate is outside the ball
    with pytest.raises(Invalid, match="iterate z is at distance .* outside the ball"):
        checker.check_solver_error(ctx, err)
    ctx, err, _ = _moreau(*mlp, wc_radius=ok, lip_p="inf")
    with pytest.raises(Invalid, match="l2 Lipschitz"):
        checker.check_solver_error(ctx, err)
    ctx, err, _ = _moreau(*mlp, wc_radius=ok, region="global", err_rests_on="wcl")  # global on a local lambda
    with pytest.raises(Invalid, match="region 'global' rests on the weak-convexity claim 'wcl'"):
        checker.check_solver_error(ctx, err)
    ctx, err, _ = _moreau(*mlp, wc_radius=ok, region="global", err_rests_on="weak-convexity")
    assert math.isfinite(checker.check_solver_error(ctx, err))


def test_local_stability_moreaugrad_rules(mlp):
    need = EPS + RHO * (LIP + TOL)  # every iterate with residual <= tol at x' in B(x, eps) lies this close to x
    ctx, _, stab = _moreau(*mlp, wc_radius=need * 1.001)
    assert math.isfinite(checker.check_stability_moreaugrad(ctx, stab))
    # the weak-convexity radius covers the solver-error's rho L but not eps + rho (L + tol): rejected
    for radius in (need * 0.999, EPS + RHO * LIP):
        ctx, err, stab = _moreau(*mlp, wc_radius=radius)
        assert math.isfinite(checker.check_solver_error(ctx, err))
        with pytest.raises(Invalid, match=r"weak-convexity claim 'wcl' holds on the ball of radius .* < 0.5002"):
            checker.check_stability_moreaugrad(ctx, stab)
    # sparse (and vanilla resting on a curvature claim): the curvature claim must cover the region too
    for kw in (dict(sparsity=0.05), dict(curvature=1.0)):
        ctx, _, stab = _moreau(*mlp, wc_radius=need * 1.001, cv_radius=need * 1.001, **kw)
        assert math.isfinite(checker.check_stability_moreaugrad(ctx, stab))
        ctx, _, stab = _moreau(*mlp, wc_radius=need * 1.001, cv_radius=need * 0.9, **kw)
        with pytest.raises(Invalid, match="curvature claim 'cv' holds on the ball"):
            checker.check_stability_moreaugrad(ctx, stab)
        ctx, _, stab = _moreau(*mlp, wc_radius=need * 1.001, cv_radius=None, **kw)  # a global beta holds everywhere
        assert math.isfinite(checker.check_stability_moreaugrad(ctx, stab))
    # the solver-error claim must be local too, on the same lambda
    ctx, _, stab = _moreau(*mlp, wc_radius=need * 1.001, err_region="global", err_rests_on="weak-convexity")
    with pytest.raises(Invalid, match="region = 'local' differs from the solver-error claim's 'global'"):
        checker.check_stability_moreaugrad(ctx, stab)
    ctx, _, stab = _moreau(*mlp, wc_radius=need * 1.001, err_rests_on="weak-convexity")
    with pytest.raises(Invalid, match="another weak-convexity claim"):
        checker.check_stability_moreaugrad(ctx, stab)
    # region global may not rest on a local lambda, nor (sparse) on a local beta
    ctx, _, stab = _moreau(*mlp, wc_radius=need, region="global", err_rests_on="weak-convexity")
    assert math.isfinite(checker.check_stability_moreaugrad(ctx, stab))
    stab.assumptions[0] = "wcl"
    with pytest.raises(Invalid, match="region 'global' rests on the weak-convexity claim 'wcl'"):
        checker.check_stability_moreaugrad(ctx, stab)
    ctx, _, stab = _moreau(*mlp, wc_radius=need, region="global", err_rests_on="weak-convexity", sparsity=0.05, cv_radius=9.0)
    with pytest.raises(Invalid, match="region 'global' rests on the curvature claim 'cv'"):
        checker.check_stability_moreaugrad(ctx, stab)


def _chain(stages, x, eps, tol, lip, steps=3):
    """Shrinking radii r_0 = eps + rho (L + tol), r_k = min(r_{k-1}, eps + rho (L(r_{k-1}) + tol)), each widened
    by a relative 1e-9, L(r) the checker's local gradient bound (as an honest issuer computes them)."""
    radii = [(eps + RHO * (lip + tol)) * (1 + 1e-9)]
    for _ in range(steps):
        local = local_check.gradient_bound(stages, x.reshape(-1), radii[-1], _row(10, 0))
        radii.append(min(radii[-1], (eps + RHO * (local + tol)) * (1 + 1e-9)))
    return radii


def test_shrinking_radii_witness(mlp):
    """Lemma MG-LOC's induction: each radius may shrink to eps + rho (L(previous) + tol); the weak-convexity
    claim must cover the last one; a radius below its bound or a malformed witness is rejected."""
    model, shape, x = mlp
    stages = semantics.translate(model, shape)
    big = local_check.gradient_bound(stages, x.reshape(-1), 10.0, _row(10, 0))  # a loose "global" L
    radii = _chain(stages, x, EPS, TOL, big)
    assert radii[3] < radii[2] < radii[1] < radii[0]  # the local gradient bound shrinks the region
    err_radii = _chain(stages, x, 0.0, 0.0, big)
    ctx, err, stab = _moreau(*mlp, wc_radius=radii[-1], stab_radii=radii, err_radii=err_radii, lip=big)
    assert checker.prox_radius(ctx, stab, EPS, TOL) == radii[-1]
    assert math.isfinite(checker.check_stability_moreaugrad(ctx, stab))
    assert math.isfinite(checker.check_solver_error(ctx, err))
    # the weak-convexity ball must hold the last radius
    ctx, _, stab = _moreau(*mlp, wc_radius=radii[-1] * 0.999, stab_radii=radii, lip=big)
    with pytest.raises(Invalid, match="weak-convexity claim 'wcl' holds on the ball of radius"):
        checker.check_stability_moreaugrad(ctx, stab)
    # a radius shrunk below eps + rho (L(previous) + tol)
    bad = radii[:2] + [radii[2] * 0.99] + radii[3:]
    ctx, _, stab = _moreau(*mlp, wc_radius=radii[-1], stab_radii=bad, lip=big)
    with pytest.raises(Invalid, match=r"radii\[2\] = .* < eps \+ rho \(L\(radii\[1\]\) \+ tol\)"):
        checker.check_stability_moreaugrad(ctx, stab)
    # r_0 without tol
    no_tol = _chain(stages, x, EPS, 0.0, big)
    ctx, _, stab = _moreau(*mlp, wc_radius=radii[-1], stab_radii=no_tol, lip=big)
    with pytest.raises(Invalid, match=r"radii\[0\] = .* < eps \+ rho \(L \+ tol\)"):
        checker.check_stability_moreaugrad(ctx, stab)
    # growing radii are allowed (no shrinking claimed)
    ctx, _, stab = _moreau(*mlp, wc_radius=radii[0] * 2, stab_radii=[radii[0], radii[0] * 2], lip=big)
    assert checker.prox_radius(ctx, stab, EPS, TOL) == radii[0] * 2
    for witness in ([], [True], [0.0], [math.inf], ["0.5"], [radii[0]] * 65, radii[0]):
        ctx, _, stab = _moreau(*mlp, wc_radius=radii[-1], stab_radii=witness, lip=big)
        with pytest.raises(Invalid, match="witness radii"):
            checker.prox_radius(ctx, stab, EPS, TOL)


def test_vanilla_stability_takes_the_prox_curvature_bound_when_smaller(mlp):
    """Vanilla MG resting on a curvature claim: min(Corollary 1, beta eps / (1 - rho lambda)) + solver terms."""
    need = EPS + RHO * (LIP + TOL)
    for beta in (0.01, 100.0):
        ctx, _, stab = _moreau(*mlp, wc_radius=need * 1.001, curvature=beta)
        value = checker.check_stability_moreaugrad(ctx, stab)
        core = min(checker.corollary1(EPS, RHO, LAM), checker.prox_curvature(EPS, RHO, LAM, beta))
        assert value == pytest.approx(core + checker.solver_terms(0.01, TOL, RHO, LAM), rel=1e-12)
    assert checker.prox_curvature(EPS, RHO, LAM, 0.01) < checker.corollary1(EPS, RHO, LAM) < checker.prox_curvature(EPS, RHO, LAM, 100.0)
    from certify.bounds import stability
    if hasattr(stability, "prox_curvature_bound"):  # the issuer's copy
        for eps, rho, lam, beta in ((0.1, 0.2, 0.5, 3.0), (1e-3, 0.9, 1.0, 7.0), (0.5, 1e-4, 0.0, 1e3)):
            ours, theirs = checker.prox_curvature(eps, rho, lam, beta), stability.prox_curvature_bound(eps, rho, lam, beta)
            assert theirs <= ours <= theirs * (1 + 1e-10)
    with pytest.raises(Invalid, match="rho \\* lambda"):
        checker.prox_curvature(EPS, 2.0, 0.5, 1.0)


def test_gradient_stability_needs_a_curvature_ball_of_radius_eps(mlp):
    model, shape, x = mlp
    err = _claim("explanation-error", "explanation-error", {"target": 0, "method": "gradient"})
    for radius, ok in ((None, True), (EPS, True), (EPS * 0.999, False)):
        cv = _claim("cv", "curvature", {"target": 0, "radius": radius})
        stab = _claim("stability", "stability-gradient", {"target": 0, "eps": EPS}, 10.0, ["cv", "explanation-error"])
        ctx = _context(model, shape, x, [err, cv, stab], {"cv": 1.0, "explanation-error": 0.01})
        if ok:
            assert checker.check_stability_gradient(ctx, stab) == pytest.approx(EPS + 0.01)
        else:
            with pytest.raises(Invalid, match="curvature claim holds on the ball of radius .* < eps"):
                checker.check_stability_gradient(ctx, stab)



# ------------------------------------------------------------------ end to end (issued certificates, hand edits)


def _set_params(claim_id, **params):
    def change(doc):
        claim = _doc_claim(doc, claim_id)
        claim["params"].update(params)
        claim["statement"] = render(claim["type"], claim["params"])
    return change


def _status(report, claim_id):
    return next(c for c in report.checks if c.id == claim_id).status


@pytest.fixture(scope="module")
def local_certificates(zoo_models):
    model, _, xs = zoo_models["digits-softplus-mlp2"]
    out = {"model": model}
    (out["moreaugrad"],) = certify_explanations(MoreauGrad(model, rho="auto", sparsity=0.05, tol=1e-6), xs[:1].float(),
                                                eps=0.05, model_spec="digits-softplus-mlp2")
    (out["gradient"],) = certify_explanations(Gradient(model), xs[:1].float(), eps=0.05, model_spec="digits-softplus-mlp2")
    return out


def test_issued_local_certificates_verify_and_edits_of_their_regions_do_not(local_certificates):
    model, cert = local_certificates["model"], local_certificates["moreaugrad"]
    assert cert.claim("stability").params["region"] == "local" and cert.claim("weak-convexity-local").params["radius"]
    report = verify_certificate(cert, model)
    assert report.valid, report.failures()
    radius = cert.claim("weak-convexity-local").params["radius"]
    # a smaller ball for lambda (statement re-rendered): the claims resting on it no longer follow
    report = verify_certificate(_edit(cert, _set_params("weak-convexity-local", radius=radius * 0.9)), model)
    assert not report.valid and _status(report, "stability") == "invalid"
    # lambda on a larger ball than the one it was derived for: the re-derived value is larger
    report = verify_certificate(_edit(cert, _set_params("weak-convexity-local", radius=radius * 3)), model)
    assert not report.valid and _status(report, "weak-convexity-local") == "invalid"
    # the last witness radius shrunk below its bound
    def shrink(doc):
        _doc_claim(doc, "stability")["witness"]["radii"][-1] *= 0.9
    report = verify_certificate(_edit(cert, shrink), model)
    assert not report.valid and _status(report, "stability") == "invalid"
    # the solver-error claim switched to region global (its lambda is local)
    report = verify_certificate(_edit(cert, _set_params("solver-error", region="global")), model)
    assert not report.valid and _status(report, "solver-error") == "invalid"


def test_gradient_stability_rests_on_a_local_curvature_ball_of_radius_eps(local_certificates):
    model, cert = local_certificates["model"], local_certificates["gradient"]
    assert cert.claim("stability").assumptions[0] == "curvature-local"
    assert verify_certificate(cert, model).valid
    report = verify_certificate(_edit(cert, _set_params("curvature-local", radius=0.025)), model)
    assert not report.valid and _status(report, "stability") == "invalid"
    assert _status(report, "curvature-local") == "valid"  # a true statement on a smaller ball


def _saturated() -> nn.Sequential:
    """Two softplus units deep in saturation at x = 0 (pre-activations -460, -510): Hessian entries ~1e-200, whose
    squares underflow (attacker's finding: the eigenvalue slack and the gradient norm collapsed to 0)."""
    g = torch.Generator().manual_seed(16)
    m = nn.Sequential(nn.Linear(3, 2), nn.Softplus(), nn.Linear(2, 2)).double().eval()
    with torch.no_grad():
        m[0].weight.copy_(torch.randn(2, 3, generator=g, dtype=torch.float64))
        m[0].bias.copy_(torch.tensor([-460.0, -510.0], dtype=torch.float64))
        m[2].weight.copy_(torch.tensor([[1.0, -1.0], [0.0, 0.0]], dtype=torch.float64))
        m[2].bias.copy_(torch.tensor([1.0, 0.0], dtype=torch.float64))
    return m


def test_tiny_hessians_and_gradients_do_not_underflow_into_false_bounds():
    """At x = 0 the exact Hessian is W0^T diag(g s''(z)) W0 with g = (1, -1): its lambda_min ~ -1e-221 < 0, so
    no weak-convexity value below that is true; computed here exactly up to a power-of-two scaling. Both sides'
    bounds must hold, and a claim of 1e-300 must be rejected."""
    model = _saturated()
    x = torch.zeros(3, dtype=torch.float64)
    w0, b0 = model[0].weight.detach(), model[0].bias.detach()
    z = b0
    s2 = torch.sigmoid(z) * torch.sigmoid(-z)  # softplus'' (beta 1), ~1e-200 and ~1e-222: representable
    scale = 2.0**600
    h_scaled = w0.T @ torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64) * s2 * scale) @ w0
    exact_min = float(torch.linalg.eigvalsh(h_scaled)[0]) / scale
    exact_max = float(torch.linalg.eigvalsh(h_scaled)[-1]) / scale
    assert exact_min < 0 < exact_max
    stages = semantics.translate(model, (3,))
    row = torch.tensor([1.0, 0.0], dtype=torch.float64)
    lower, upper = local_check.hessian_bounds(stages, x, 1e-6, row)
    assert lower <= exact_min and upper >= exact_max
    net = from_module(model, (3,))
    mine = issuer_local.local_constants(net, x[None], row[None], torch.tensor([1e-6], dtype=torch.float64))
    assert float(mine.lower) <= exact_min and float(mine.upper) >= exact_max
    gradient = w0.T @ (torch.tensor([1.0, -1.0], dtype=torch.float64) * torch.sigmoid(z))  # ~1e-200
    norm = float((gradient * scale).norm()) / scale  # its norm, without the underflow of the squares
    assert local_check.gradient_bound(stages, x, 1e-6, row) >= norm > 0
    assert float(mine.lipschitz) >= norm
    wc = _claim("wcl", "weak-convexity", {"target": 0, "radius": 1e-3}, value=1e-300)
    assert checker.check_weak_convexity(_context(model, (3,), x, [wc], {}), wc) > 1e-300  # the claim is refuted


def test_a_certificate_for_an_input_far_from_the_data_verifies():
    """Attacker's finding: for a digit scaled by 1e6 the checker's (looser) softplus slope allowance made its
    gradient bounds exceed the issuer's radii by 1e-8; the issuer now raises its radii to what the checker
    re-derives."""
    model, data = zoo.load("digits-softplus-mlp")
    x = data.x_test[:1] * 1e6
    (cert,) = certify_explanations(MoreauGrad(model, rho="auto", eps=0.1, tol=1e-5), x, eps=0.1)
    report = verify_certificate(cert, model)
    assert report.valid, report.failures()


def test_global_curvature_keeps_deep_terms_when_the_jacobian_norm_squared_underflows():
    """Second attacker's finding: first-layer weights 1e-170 made ||J||^2 underflow to 0 in both global bounds,
    dropping a deeper layer's term of size ~1e-38 (a claim of 5e-44 verified). The true lambda_min at x = 0 is
    about -1.25e-38 (the local bounds, exact at a point, show it); both global values must now be >= 1.25e-38."""
    m = nn.Sequential(nn.Linear(2, 1), nn.Softplus(beta=1e-3), nn.Linear(1, 1), nn.Softplus(beta=1e3),
                      nn.Linear(1, 2)).double().eval()
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[1e-170, 1e-170]], dtype=torch.float64))
        m[0].bias.zero_()
        m[2].weight.copy_(torch.tensor([[1.0]], dtype=torch.float64))
        m[2].bias.copy_(torch.tensor([-math.log(2.0) / 1e-3], dtype=torch.float64))
        m[4].weight.copy_(torch.tensor([[-1e300], [0.0]], dtype=torch.float64))
        m[4].bias.copy_(torch.tensor([1e298, 0.0], dtype=torch.float64))
    x = torch.zeros(2, dtype=torch.float64)
    row = torch.tensor([1.0, 0.0], dtype=torch.float64)
    stages = semantics.translate(m, (2,))
    lower, _ = local_check.hessian_bounds(stages, x, 1e-12, row)
    assert -lower >= 1.2e-38  # the local bound at (almost) a point: lambda_min(Hess f(0)) ~ -1.25e-38
    from certify.bounds.curvature import weak_convexity
    assert float(weak_convexity(from_module(m, (2,)), row).value) >= -lower
    wc = _claim("wc", "weak-convexity", {"target": 0, "radius": None}, value=5e-44)
    assert checker.check_weak_convexity(_context(m, (2,), x, [wc], {}), wc) >= -lower


def test_split_bounds_on_the_two_input_moons_model_hold_and_agree_with_the_issuer():
    """Input splitting (rule 5) on the zoo's 2-D moons model: the checker's covering balls cover the ball; its
    bounds and the issuer's enclose the exact Hessian eigenvalues and gradient norms on a dense grid of the
    ball, and the checker's are at least as tight as the issuer's up to rounding (so a claim the issuer makes
    from them verifies)."""
    model, data = zoo.load("moons-softplus-mlp")
    model = model.double()
    stages = semantics.translate(model, (2,))
    net = from_module(model, (2,))
    t = torch.linspace(-1, 1, 241, dtype=torch.float64)
    square = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    disc = square[square.norm(dim=1) <= 1]
    for i, radius in ((0, 0.1), (3, 0.4), (7, 1.2)):
        x = data.x_test[i].double()
        balls = local_check.covering_balls(x, radius)
        assert len(balls) > 1
        pts = x + radius * disc
        covered = ((pts[:, None] - torch.stack([c for c, _ in balls])[None]).norm(dim=2) <= balls[0][1]).any(1)
        assert bool(covered.all())
        for c in range(2):
            row = _row(2, c)
            xs = pts.clone().requires_grad_(True)
            g = torch.autograd.grad(model(xs)[:, c].sum(), xs, create_graph=True)[0]
            h = torch.stack([torch.autograd.grad(g[:, j].sum(), xs, retain_graph=True)[0] for j in range(2)], 1)
            eig = torch.linalg.eigvalsh(h.detach())
            lower, upper = local_check.hessian_bounds(stages, x, radius, row)
            mine = issuer_local.local_constants(net, x[None], row[None], torch.tensor([radius], dtype=torch.float64))
            allowance = 1e-12 * (1 + float(eig.abs().max()))
            assert lower <= float(eig[:, 0].min()) + allowance and float(eig[:, 1].max()) <= upper + allowance
            assert float(mine.lower) <= float(eig[:, 0].min()) + allowance and float(eig[:, 1].max()) <= float(mine.upper) + allowance
            assert lower >= float(mine.lower) - 1e-9 * (1 + abs(lower)) and upper <= float(mine.upper) + 1e-9 * (1 + abs(upper))
            lip = local_check.gradient_bound(stages, x, radius, row)
            assert float(g.detach().norm(dim=1).max()) <= lip <= float(mine.lipschitz) * (1 + 1e-9)


# ------------------------------------------------------------------ facts kept between balls (issue 18)

def test_spread_norm_of_a_constant_matrix_is_kept_and_equals_the_direct_bound():
    """`_spread_norm` keeps the bound of a constant P (one hidden layer: P is the margin floor on every ball), and it
    is the bound computed directly from that matrix; a P that is not constant is bounded directly."""
    stages = semantics.translate(*zoo.load("digits-softplus-mlp")[:1], (64,))
    x = zoo.load("digits-softplus-mlp")[1].x_test[0].double().reshape(-1)
    *_, p_mat = local_check.hessian_split(stages, x, 0.3, _row(10, 2))
    assert bool((p_mat == p_mat[0, 0]).all())  # the kept path is the one a one-hidden-layer chain takes
    for p in (p_mat, p_mat * 1e300, torch.rand(5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)):
        p = (p + p.T) / 2
        direct = local_check._eig_bounds(p, local_check._eig_slack(p, p.shape[0]))[1]
        assert local_check._spread_norm(p) == direct == local_check._spread_norm(p.clone())


@pytest.mark.parametrize("act", [("softplus", 1.0, 20.0), ("softplus", 3.0, 20.0), ("sigmoid",), ("tanh",)])
def test_kept_critical_point_enclosures_are_the_enclosures_at_the_point(act):
    lo = torch.linspace(-2.0, 0.5, 7, dtype=torch.float64)
    first, second = local_check._critical(act)
    for c, which in [(c, 0) for c in first] + [(c, 1) for c in second]:
        kept = local_check._critical_enclosure(act, c, lo.shape, lo.dtype, which)
        direct = local_check._derivatives(act, torch.full_like(lo, c))[which]
        assert all(torch.equal(a, b) for a, b in zip(kept, direct))


@pytest.mark.parametrize("name", ["digits-softplus-mlp", "digits-softplus-mlp2"])
def test_the_local_hessian_bound_with_kept_facts_is_the_bound_from_its_matrices(zoo_models, name):
    """With the kept facts (the constant P's bound, the critical-point enclosures) in use, first call or later, the
    bound is rule 3 computed directly from L, U, P: every eigenvalue bound from its own matrix."""
    model, shape, xs = zoo_models[name]
    stages = semantics.translate(model, shape)
    row = _row(10, 4)
    for x in xs:
        lower_m, upper_m, magnitude, p_mat = local_check.hessian_split(stages, x.reshape(-1), 0.2, row)
        slack = local_check._eig_slack(magnitude, local_check._terms(list(stages.mats)))
        low, high = local_check._eig_bounds(lower_m, slack)[0], local_check._eig_bounds(upper_m, slack)[1]
        p_norm = max(local_check._eig_bounds(p_mat, local_check._eig_slack(p_mat, p_mat.shape[0]))[1], 0.0)
        direct = (math.nextafter(low - p_norm, -math.inf), math.nextafter(high + p_norm, math.inf))
        local_check._constant_spread_norm.cache_clear()
        local_check._critical_enclosure.cache_clear()
        assert local_check.hessian_bounds(stages, x.reshape(-1), 0.2, row) == direct
        assert local_check.hessian_bounds(stages, x.reshape(-1), 0.2, row) == direct  # from the kept facts
