"""The tamper suite's independent ORACLE and MUTATOR (issue 10, "tamper suite"; test code, never imported by
the package).

ORACLE. `Oracle.judge(doc, report)` decides whether the certified claims of a certificate (and the
probabilistic claims the checker calls valid) are TRUE, from the model, the input, the explanation and each
claim's type and params only, by recomputing the truth with the strongest means a test can afford:

* the function: N, the model translated here by hand (Linear / ReLU / exact softplus, float64), and the
  model as torch runs it (its own dtype) where a statement names it;
* exact gradients and Hessians (autograd, float64) at data points, random points and adversarially searched
  points (gradient-norm ascent, Hessian eigenvector ascent), and second differences on short segments
  (which see ReLU kinks): LOWER estimates of Lipschitz constants, weak convexity and curvature;
* explanation changes under perturbations of norm eps (projected ascent on ||grad N(x + d) - a||, Hessian
  eigen-directions of the MoreauGrad Jacobian), with the exact MoreauGrad explanation solved here to 1e-13;
* the exact minimal top-k intersection of every explanation within a stated l2 distance of a;
* minimal flipping radii: concrete flips found by a min-norm PGD (and an exhaustive ray scan on 2-d inputs),
  each re-evaluated in float64, which refute any larger lower bound; witnesses re-evaluated for upper bounds.

A claim is FALSE when the oracle holds a counterexample to its statement (an upper bound below an observed
value, a lower bound above an achieved one, a witness that does not flip), when its statement is not the
one rendered from its params (`certify.certificates.claims.render`, the definition of the text), or when its
params are out of range; a claim is judged by its own params (target, eps, p, domain, ...). Statements that
name other claims are judged with the values those claims STATE: top-k speaks of "every explanation within
the stability claim's bound of a", the gap of "(upper bound on r*) - (certified lower bound)". The stored
explanation of a closed-form method (gradient, IG) must be that method's output at x (certificate-level
"explanation" verdict). Probabilistic claims (smoothed mode) are judged only when the checker calls them
valid, statistically (several standard errors of margin). The oracle never trusts a value or a witness of
the certificate except as the thing being judged; from the package it uses only the zoo, the explainers
(to recompute explanations), the IG quadrature rule (its nodes and weights) and `render`.

MUTATOR. `mutations(cases)` is a Hypothesis strategy over the certificate JSON: every field, by family.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st
from torch import Tensor, nn

from certify.certificates.checker import verify_certificate
from certify.certificates.document import encode_array, parse_certificate
from certify.errors import CertificateFormatError

from certify.certificates.claims import render as _render  # the definition of each statement

EPS = 0.1
K = 6
TOL_REL = 1e-9  # relative slack of the oracle's comparisons (its own measurements are exact to ~1e-14)
SQRT2 = math.sqrt(2.0)

# ------------------------------------------------------------------ the cases


@dataclass
class Case:
    key: str
    model_name: str
    method: str
    model: nn.Module
    data: Any
    explainer_factory: Callable[[], Any]
    doc: dict = field(default_factory=dict)
    group: str = ""  # model and input: the cases that share an oracle


def _explainers(name: str, model: nn.Module, data: Any) -> dict[str, Callable[[], Any]]:
    from certify.explain import Gradient, IntegratedGradients
    from certify.explain.lagrange_dual import LagrangeDual
    from certify.explain.moreaugrad import MoreauGrad
    from certify.explain.smoothgrad import SmoothGrad

    relu = "relu" in name
    smooth_rho = 0.003 if relu else 0.01
    dom = None if bool(torch.isinf(data.domain_lo).all()) else data.domain
    out = {
        "gradient": lambda: Gradient(model),
        "integrated-gradients": lambda: IntegratedGradients(model, n_steps=16),
        "smoothgrad": lambda: SmoothGrad(model, samples=16, seed=0),
        "moreaugrad": lambda: MoreauGrad(model, rho=0.3, tol=1e-6),
        "moreaugrad-sparse": lambda: MoreauGrad(model, rho=0.3, sparsity=0.25, tol=1e-6),
        "moreaugrad-auto": lambda: MoreauGrad(model, rho="auto", eps=EPS, tol=1e-6),  # local constants on deeper nets
        "moreaugrad-group": lambda: MoreauGrad(model, rho=0.3, sparsity=0.25, group_size=2, tol=1e-6),
        "moreaugrad-smoothed": lambda: MoreauGrad(model, rho=smooth_rho, smoothing_sigma=0.1, samples=16, tol=1e-2,
                                                  max_iter=200, seed=0),
        "lagrange-dual-2": lambda: LagrangeDual(model, p=2, domain=dom),
        "lagrange-dual-inf": lambda: LagrangeDual(model, p="inf", domain=dom),
    }
    if name.startswith("blobs"):  # the tiny net: radius claims with exhaustive truth
        out = {k: v for k, v in out.items() if k.startswith("lagrange") or k == "gradient"}
    return out


MODELS = ("digits-softplus-mlp", "digits-relu-mlp", "blobs-relu-mlp")


def build_cases(models: tuple[str, ...] = MODELS, indices: tuple[int, ...] = (0,)) -> dict[str, Case]:
    """One honest certificate per (model, test input, method), as a JSON dict (generated once, then mutated).
    Keys "model/method" for the first test input, "model#i/method" for input i."""
    from certify.certificates.builder import certify_explanations
    from certify.models import zoo

    cases: dict[str, Case] = {}
    for name in models:
        model, data = zoo.load(name)
        for index in indices:
            x = data.x_test[index : index + 1]
            n = x[0].numel()
            group = name if index == 0 else f"{name}#{index}"
            for method, factory in _explainers(name, model, data).items():
                (cert,) = certify_explanations(factory(), x, eps=EPS, k=min(K, n - 1), model_spec=name)
                doc = json.loads(cert.to_json())
                cases[f"{group}/{method}"] = Case(f"{group}/{method}", name, method, model, data, factory, doc, group)
    return cases


def verify_doc(doc: dict, model: nn.Module):
    """(report or None, outcome): outcome "accepted", "rejected", "format" (parse error) or "crash: ..."."""
    try:
        cert = parse_certificate(json.dumps(doc, allow_nan=False))
    except CertificateFormatError:
        return None, "format"
    except (ValueError, TypeError) as exc:  # e.g. NaN/inf written by a mutation
        return None, f"format ({type(exc).__name__})"
    try:
        report = verify_certificate(cert, model)
    except CertificateFormatError:
        return None, "format"
    except Exception as exc:  # noqa: BLE001 - a raw crash of the checker is recorded, not hidden
        return None, f"crash: {type(exc).__name__}: {str(exc)[:120]}"
    return report, ("accepted" if report.valid else "rejected")


# ------------------------------------------------------------------ the function, translated here by hand


class ExactNet:
    """N: the Sequential's Linear layers in float64 with exact ReLU / softplus (no threshold)."""

    def __init__(self, model: nn.Module) -> None:
        self.layers: list[tuple[str, Any]] = []
        for m in model.modules():
            if isinstance(m, nn.Sequential):
                continue
            if isinstance(m, nn.Linear):
                b = m.bias.detach().double() if m.bias is not None else torch.zeros(m.out_features, dtype=torch.float64)
                self.layers.append(("linear", (m.weight.detach().double().clone(), b.clone())))
            elif isinstance(m, nn.ReLU):
                self.layers.append(("relu", None))
            elif isinstance(m, nn.Softplus):
                self.layers.append(("softplus", float(m.beta)))
            elif isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout)):
                continue
            else:
                raise NotImplementedError(f"oracle: no exact semantics for {type(m).__name__}")
        self.relu = all(kind != "softplus" for kind, _ in self.layers)

    def __call__(self, x: Tensor) -> Tensor:
        h = x.reshape(x.shape[0], -1).double()
        for kind, arg in self.layers:
            if kind == "linear":
                h = h @ arg[0].T + arg[1]
            elif kind == "relu":
                h = torch.relu(h)
            else:
                z = arg * h
                h = (torch.relu(z) + torch.log1p(torch.exp(-z.abs()))) / arg
        return h

    def rounding_bound(self, x: Tensor) -> Tensor:
        """Per point [M], a bound on |fl(N(x)) - N(x)|_inf for ANY float64 evaluation of these layers in any
        summation order (this one's `h @ W.T + b`, or torch's fused addmm in the model): per Linear,
        |fl(W h + b) - (W h + b)| <= gamma_(n+1) (|W| |h| + |b|) (Higham, Accuracy and Stability, 2nd ed.,
        eq. 3.12), an input error e carried as |W| e; ReLU is exact and 1-Lipschitz; softplus 1-Lipschitz
        with its log1p / exp rounding charged as 8 u (|h| + 1)."""
        u = 2.0 ** -53
        h = x.reshape(x.shape[0], -1).double()
        err = torch.zeros_like(h)
        for kind, arg in self.layers:
            if kind == "linear":
                w, b = arg
                n = w.shape[1] + 1
                gamma = n * u / (1 - n * u)
                err = err @ w.abs().T + gamma * ((h.abs() + err) @ w.abs().T + b.abs())
                h = h @ w.T + b
            elif kind == "relu":
                h = torch.relu(h)
            else:
                z = arg * h
                h = (torch.relu(z) + torch.log1p(torch.exp(-z.abs()))) / arg
                err = err + 8 * u * (h.abs() + 1)
        return err.amax(dim=1) * (1 + 1e-6)

    def score(self, x: Tensor, c: int) -> Tensor:
        return self(x)[:, c]

    def grad(self, x: Tensor, c: int, create_graph: bool = False) -> Tensor:
        with torch.enable_grad():
            x = x if x.requires_grad else x.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(self.score(x, c).sum(), x, create_graph=create_graph)
        return g

    def hessians(self, x: Tensor, c: int) -> Tensor:
        f = lambda v: self(v[None])[0, c]  # noqa: E731
        return torch.func.vmap(torch.func.hessian(f))(x.detach())


def _hash(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, Tensor):
            h.update(p.detach().double().contiguous().numpy().tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _decode(record: Any) -> Tensor | None:
    """An array record's values (the oracle reads the values; it does not trust the hash)."""
    try:
        a = torch.as_tensor(np.asarray(record["values"], dtype=np.float64))
        return a if bool(torch.isfinite(a).all()) else None
    except Exception:  # noqa: BLE001
        return None


def _pnum(p: Any) -> float | None:
    if isinstance(p, bool):
        return None
    if p in ("inf", "linf") or (isinstance(p, float) and math.isinf(p)):
        return math.inf
    if p in (1, 2, "1", "2", 1.0, 2.0):
        return float(p)
    return None


def _dual(p: float) -> float:
    return {1.0: math.inf, 2.0: 2.0, math.inf: 1.0}[p]


def _norm(v: Tensor, p: float) -> Tensor:
    return v.flatten(1).norm(p=p, dim=1)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ------------------------------------------------------------------ the oracle


class Oracle:
    """Truth about the claims of certificates of one model at one input (all expensive truths cached)."""

    def __init__(self, model: nn.Module, data: Any, x: Tensor, explainer_factories: dict[str, Callable[[], Any]],
                 known_deltas: list[Tensor]) -> None:
        self.model = model.eval()
        self.native_dtype = next(model.parameters()).dtype
        self.net = ExactNet(model)
        self.data = data
        self.x = x.detach().double().reshape(1, -1)
        self.shape = tuple(x.shape[1:])
        self.n = self.x.shape[1]
        self.classes = int(self.net(self.x).shape[1])
        self.factories = explainer_factories
        self.known_deltas = [d.reshape(1, -1).double() for d in known_deltas]
        self.cache: dict[Any, Any] = {}
        self.undetermined = 0  # judgements the oracle could not make (no converged exact MoreauGrad, overflow)
        self.failures: list[str] = []
        gen = torch.Generator().manual_seed(0)
        pts = [self.x, data.x_test.reshape(len(data.x_test), -1).double()[:200],
               data.x_train.reshape(len(data.x_train), -1).double()[:200]]
        lo, hi = data.domain_lo.reshape(-1).double(), data.domain_hi.reshape(-1).double()
        lo = torch.where(torch.isfinite(lo), lo, pts[1].min(0).values - 1)
        hi = torch.where(torch.isfinite(hi), hi, pts[1].max(0).values + 1)
        pts.append(lo + (hi - lo) * torch.rand(100, self.n, generator=gen, dtype=torch.float64))
        pts.append(self.x + 0.3 * torch.randn(100, self.n, generator=gen, dtype=torch.float64))
        self.points = torch.cat(pts)
        self.gen = gen

    # ---------------- helpers

    def _cached(self, key: Any, fn: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = fn()
        return self.cache[key]

    def native_logits(self, points: Tensor) -> Tensor:
        with torch.no_grad():
            return self.model(points.to(self.native_dtype).reshape(-1, *self.shape)).double()

    def _flips(self, points: Tensor, c: int, native: bool = False) -> Tensor:
        z = self.native_logits(points) if native else self.net(points)
        others = torch.cat([z[:, :c], z[:, c + 1 :]], dim=1)
        return others.max(dim=1).values > z[:, c]

    @staticmethod
    def domain_of(params: dict) -> tuple[bool, Any]:
        """(ok, (lo, hi) or None) from params["domain"]."""
        d = params.get("domain")
        if d is None:
            return True, None
        if isinstance(d, dict) and set(d) == {"lower", "upper"}:
            try:
                lo = torch.as_tensor(-math.inf if d["lower"] is None else d["lower"], dtype=torch.float64).reshape(-1)
                hi = torch.as_tensor(math.inf if d["upper"] is None else d["upper"], dtype=torch.float64).reshape(-1)
                if bool((lo > hi).any()):
                    return False, None
                return True, (lo, hi)
            except Exception:  # noqa: BLE001
                return False, None
        if isinstance(d, list) and len(d) == 2:  # v1 witness: [lower, upper] nested lists
            try:
                lo = torch.as_tensor(d[0], dtype=torch.float64).reshape(-1)
                hi = torch.as_tensor(d[1], dtype=torch.float64).reshape(-1)
                return True, (lo, hi)
            except Exception:  # noqa: BLE001
                return False, None
        return False, None

    def _target(self, params: dict) -> int | None:
        c = params.get("target")
        if isinstance(c, int) and not isinstance(c, bool) and 0 <= c < self.classes:
            return c
        return None

    # ---------------- model-level truths (lower estimates of the suprema)

    def max_grad_norms(self, c: int) -> dict[float, float]:
        """max over searched points of ||grad N_c||_q for q = 2, 1, inf (lower estimates of L_2, L_inf, L_1)."""
        def compute() -> dict[float, float]:
            g = self.net.grad(self.points, c)
            best = {2.0: g.norm(dim=1), 1.0: g.abs().sum(dim=1), math.inf: g.abs().max(dim=1).values}
            out = {q: float(v.max()) for q, v in best.items()}
            if not self.net.relu:  # projected-free ascent on ||grad||_q from the best points
                for q, v in best.items():
                    start = self.points[v.argsort(descending=True)[:6]].clone()
                    for _ in range(25):
                        y = start.clone().requires_grad_(True)
                        gy = self.net.grad(y, c, create_graph=True)
                        obj = gy.norm(p=q if q != math.inf else 50.0, dim=1).sum()
                        (step,) = torch.autograd.grad(obj, y)
                        start = (start + 0.2 * step / step.norm(dim=1, keepdim=True).clamp_min(1e-12)).detach()
                        gv = self.net.grad(start, c)
                        out[q] = max(out[q], float(gv.norm(p=q, dim=1).max()))
            return out
        return self._cached(("grad-norms", c), compute)

    def curvature_truth(self, c: int) -> tuple[float, float]:
        """(lambda_hat, beta_hat): lower estimates of the weak-convexity constant max(0, -min eig Hess) and of
        sup ||Hess||, from exact Hessians (softplus) and second differences / gradient differences on short
        segments (which also see ReLU kinks)."""
        def compute() -> tuple[float, float]:
            pts = self.points[:120]
            lam_hat, beta_hat = 0.0, 0.0
            if not self.net.relu:
                hs = self.net.hessians(pts, c)
                ev = torch.linalg.eigvalsh(hs)
                lam_hat = max(lam_hat, float((-ev[:, 0]).max()))
                beta_hat = max(beta_hat, float(ev.abs().max()))
                # eigenvector ascent on -lambda_min and lambda_max from the extreme points
                for which, sign in ((0, -1.0), (-1, 1.0)):
                    y = pts[(sign * ev[:, which]).argsort(descending=True)[:4]].clone()
                    for _ in range(15):
                        h = self.net.hessians(y, c)
                        e, v = torch.linalg.eigh(h)
                        vec = v[:, :, which]
                        yy = y.clone().requires_grad_(True)
                        # d/dy (v^T H(y) v) via the third derivative: gradient of the directional 2nd derivative
                        def quad(yv: Tensor) -> Tensor:
                            gfun = self.net.grad(yv, c, create_graph=True)
                            hv = torch.autograd.grad((gfun * vec).sum(), yv, create_graph=True)[0]
                            return (hv * vec).sum()
                        (step,) = torch.autograd.grad(quad(yy), yy)
                        y = (y + sign * 0.2 * step / step.norm(dim=1, keepdim=True).clamp_min(1e-12)).detach()
                        ev2 = torch.linalg.eigvalsh(self.net.hessians(y, c))
                        lam_hat = max(lam_hat, float((-ev2[:, 0]).max()))
                        beta_hat = max(beta_hat, float(ev2.abs().max()))
            # segments: second differences (weak convexity) and gradient differences (curvature)
            gen = torch.Generator().manual_seed(1)
            centers = pts[:60]
            for h in (1e-1, 1e-2, 1e-3):
                u = torch.randn(centers.shape, generator=gen, dtype=torch.float64)
                u = u / u.norm(dim=1, keepdim=True)
                a, b = centers - h * u / 2, centers + h * u / 2
                m = (a + b) / 2
                fa, fb, fm = self.net.score(a, c), self.net.score(b, c), self.net.score(m, c)
                second = fm - (fa + fb) / 2  # <= lambda h^2 / 8 for lambda-weakly convex; |.| <= beta h^2/8
                rounding = 8 * 4e-16 * (fa.abs() + fb.abs() + fm.abs() + 1) / h**2
                lam_seg = (8 * second / h**2 - rounding).max()
                lam_hat = max(lam_hat, float(lam_seg))
                ga, gb = self.net.grad(a, c), self.net.grad(b, c)
                ratio = ((ga - gb).norm(dim=1) - 1e-14 * (ga.norm(dim=1) + 1)) / h
                beta_hat = max(beta_hat, float(ratio.max()), float((8 * second.abs() / h**2 - rounding).max()))
            return lam_hat, beta_hat
        return self._cached(("curvature", c), compute)

    def local_curvature_truth(self, c: int, radius: float) -> tuple[float, float]:
        """(lambda_hat, beta_hat) on the ball B(x, radius) only (a claim with a radius): exact Hessians at random
        points of the ball (inside and on the sphere) and eigenvector ascent projected back onto it (smooth nets;
        ReLU nets: 0, 0, as no local claim is issued for them)."""
        def compute() -> tuple[float, float]:
            if self.net.relu:
                return 0.0, 0.0
            gen = torch.Generator().manual_seed(3)
            u = torch.randn(96, self.n, generator=gen, dtype=torch.float64)
            u = u / u.norm(dim=1, keepdim=True)
            scale = torch.cat([torch.ones(48, 1, dtype=torch.float64), torch.rand(48, 1, generator=gen, dtype=torch.float64)])
            pts = torch.cat([self.x, self.x + radius * scale * u])
            ev = torch.linalg.eigvalsh(self.net.hessians(pts, c))
            lam_hat, beta_hat = float((-ev[:, 0]).clamp_min(0).max()), float(ev.abs().max())
            for which, sign in ((0, -1.0), (-1, 1.0)):
                y = pts[(sign * ev[:, which]).argsort(descending=True)[:4]].clone()
                for _ in range(10):
                    _, v = torch.linalg.eigh(self.net.hessians(y, c))
                    vec = v[:, :, which]
                    yy = y.clone().requires_grad_(True)
                    gfun = self.net.grad(yy, c, create_graph=True)
                    hv = torch.autograd.grad((gfun * vec).sum(), yy, create_graph=True)[0]
                    (step,) = torch.autograd.grad((hv * vec).sum(), yy)
                    y = (y + sign * 0.1 * radius * step / step.norm(dim=1, keepdim=True).clamp_min(1e-12)).detach()
                    d = y - self.x
                    y = self.x + d * (radius / d.norm(dim=1, keepdim=True).clamp_min(radius))  # back into the ball
                    ev2 = torch.linalg.eigvalsh(self.net.hessians(y, c))
                    lam_hat = max(lam_hat, float((-ev2[:, 0]).max()))
                    beta_hat = max(beta_hat, float(ev2.abs().max()))
            return lam_hat, beta_hat
        return self._cached(("local-curvature", c, radius), compute)

    def smoothed_curvature(self, c: int, sigma: float) -> float:
        """Lower confidence estimate of sup ||Hess h||, h = E N_c(. + sigma Z), from second differences of h
        along segments, with common random numbers (4 standard errors below the estimate)."""
        def compute() -> float:
            gen = torch.Generator().manual_seed(2)
            best = 0.0
            dirs = [torch.randn(1, self.n, generator=gen, dtype=torch.float64) for _ in range(3)]
            if not self.net.relu:
                e, v = torch.linalg.eigh(self.net.hessians(self.x, c)[0])
                dirs += [v[:, 0][None], v[:, -1][None]]
            for d in dirs:
                d = d / d.norm()
                for h in (sigma, 3 * sigma):
                    z = torch.randn(4096, self.n, generator=gen, dtype=torch.float64) * sigma
                    a, b, m = self.x - h * d / 2 + z, self.x + h * d / 2 + z, self.x + z
                    second = self.net.score(m, c) - (self.net.score(a, c) + self.net.score(b, c)) / 2
                    mean, se = float(second.mean()), float(second.std() / math.sqrt(len(second)))
                    est = 8 * (abs(mean) - 4 * se) / h / h
                    if math.isfinite(est):  # (a huge sigma: no estimate; 0 is always a valid lower one)
                        best = max(best, est)
            return best
        return self._cached(("smoothed", c, sigma), compute)

    def smoothed_gradient(self, c: int, sigma: float) -> tuple[Tensor, float]:
        """grad h(x) = E grad N_c(x + sigma Z), estimated from 32768 antithetic draws, with the standard error of
        the estimate's l2 norm (sqrt of the trace of its covariance)."""
        def compute() -> tuple[Tensor, float]:
            gen = torch.Generator().manual_seed(9)
            parts = []
            for _ in range(8):
                z = torch.randn(2048, self.n, generator=gen, dtype=torch.float64) * sigma
                parts.append((self.net.grad(self.x + z, c) + self.net.grad(self.x - z, c)) / 2)
            g = torch.cat(parts)
            return g.mean(dim=0, keepdim=True), float(torch.sqrt(g.var(dim=0).sum() / g.shape[0]))
        return self._cached(("smoothed-grad", c, sigma), compute)

    def deviation(self) -> float:
        """A lower bound on sup_x max_j |model_j(x) - N_j(x)| in exact arithmetic (torch's function vs exact
        softplus) at searched points, including far points where softplus thresholds bite: the float64
        difference of the two evaluations less twice ExactNet.rounding_bound (each evaluation's own rounding,
        which can differ between the fused addmm of nn.Linear and `h @ W.T + b` on some CPUs; the claim is
        about the functions, not their float64 evaluations)."""
        def compute() -> float:
            gen = torch.Generator().manual_seed(3)
            model64 = copy.deepcopy(self.model).double()
            pts = [self.points] + [s * torch.randn(200, self.n, generator=gen, dtype=torch.float64) for s in (3, 30, 300, 3000)]
            best = 0.0
            with torch.no_grad():
                for p in pts:
                    diff = (model64(p.reshape(-1, *self.shape)) - self.net(p)).abs().amax(dim=1)
                    best = max(best, float((diff - 2 * self.net.rounding_bound(p)).max()))
            return best
        return self._cached(("deviation",), compute)

    # ---------------- explanations

    def residual(self, z: Tensor, xp: Tensor, c: int, rho: float, eta: float, group: int | None) -> float:
        """Minimal-norm subgradient of F(z) = N_c(z) + ||z - x'||^2/(2 rho) + eta P(z - x')."""
        g = self.net.grad(z, c) + (z - xp) / rho
        u = z - xp
        if eta == 0:
            r = g
        elif group is None:
            r = torch.where(u != 0, g + eta * torch.sign(u), torch.sign(g) * torch.clamp(g.abs() - eta, min=0))
        else:
            gg, uu = g.reshape(-1, group), u.reshape(-1, group)
            un, gn = uu.norm(dim=1, keepdim=True), gg.norm(dim=1, keepdim=True)
            r = torch.where(un > 0, gg + eta * uu / un.clamp_min(1e-300), gg * torch.clamp(1 - eta / gn.clamp_min(1e-300), min=0))
        return float(r.norm())

    def moreau_exact(self, xp: Tensor, c: int, rho: float, eta: float, group: int | None,
                     start: Tensor | None = None, net: Any = None, tag: Any = None) -> Tensor | None:
        """The exact MoreauGrad explanation (x' - z*)/rho, z* solved by proximal gradient with backtracking in
        float64 to a fixed-point residual < 1e-13 (None if it does not converge: no unique minimiser).
        `net` (with score / grad) replaces N, e.g. by a sample average for the smoothed mode."""
        net = net or self.net
        key = ("mg", _hash(xp), c, rho, eta, group, tag)
        if key in self.cache:
            return self.cache[key]
        u = torch.zeros_like(xp) if start is None else (-rho * start.reshape(xp.shape)).clone()

        def smooth(uu: Tensor) -> Tensor:
            return net.score(xp + uu, c) + (uu * uu).sum(dim=1) / (2 * rho)

        def prox(v: Tensor, t: float) -> Tensor:
            if eta == 0:
                return v
            if group is None:
                return torch.sign(v) * torch.clamp(v.abs() - t * eta, min=0)
            vg = v.reshape(-1, group)
            nrm = vg.norm(dim=1, keepdim=True)
            return (vg * torch.clamp(1 - t * eta / nrm.clamp_min(1e-300), min=0)).reshape(v.shape)

        t = rho / 2
        result = None
        g = net.grad(xp + u, c) + u / rho
        for _ in range(3000):
            # step accepted when the gradient of the smooth part is (1/t)-Lipschitz along it (robust in float64,
            # unlike a function-value test at the noise floor)
            while True:
                new = prox(u - t * g, t)
                diff = new - u
                g_new = net.grad(xp + new, c) + new / rho
                if float((g_new - g).norm()) <= float(diff.norm()) / t or t < 1e-12:
                    break
                t /= 2
            u, g = new, g_new
            if float(diff.norm()) / t < 1e-12 * max(1.0, float(g.norm())) or float(diff.norm()) < 1e-16:
                result = ((-u) / rho).detach()
                break
            t *= 1.1
        self.cache[key] = result
        return result

    def moreau_saa(self, xp: Tensor, c: int, rho: float, eta: float, group: int | None, sigma: float,
                   samples: Tensor, start: Tensor | None) -> Tensor | None:
        """MoreauGrad of the sample average of N_c(. + sigma Z) over `samples` (an estimate of the smoothed one)."""
        net = self.net

        class Avg:
            @staticmethod
            def score(y: Tensor, cc: int) -> Tensor:
                pts = (y[:, None, :] + sigma * samples[None]).reshape(-1, y.shape[1])
                return net.score(pts, cc).reshape(y.shape[0], -1).mean(dim=1)

            @staticmethod
            def grad(y: Tensor, cc: int) -> Tensor:
                with torch.enable_grad():
                    y = y.detach().clone().requires_grad_(True)
                    (g,) = torch.autograd.grad(Avg.score(y, cc).sum(), y)
                return g

        return self.moreau_exact(xp, c, rho, eta, group, start=start, net=Avg, tag=("saa", sigma, _hash(samples)))

    def explain_product(self, method_key: str, xp: Tensor, c: int) -> Tensor | None:
        """The product's explainer (as configured in the case) at x'."""
        factory = self.factories.get(method_key)
        if factory is None:
            return None
        try:
            e = factory().explain(xp.to(self.native_dtype).reshape(1, *self.shape), torch.tensor([c]))
            return e.attributions.detach().double().reshape(1, -1)
        except Exception:  # noqa: BLE001
            return None

    # ---------------- stability searches

    def gradient_stability(self, c: int, eps: float, a: Tensor) -> float:
        """max over searched ||d||_2 <= eps of ||grad N_c(x + d) - a|| (projected ascent + random points)."""
        def compute() -> float:
            gen = torch.Generator().manual_seed(4)
            starts = [torch.zeros(1, self.n, dtype=torch.float64)]
            if not self.net.relu:
                e, v = torch.linalg.eigh(self.net.hessians(self.x, c)[0])
                for j in (0, 1, -1, -2):
                    starts += [eps * v[:, j][None], -eps * v[:, j][None]]
            rnd = torch.randn(256, self.n, generator=gen, dtype=torch.float64)
            rnd = eps * rnd / rnd.norm(dim=1, keepdim=True)
            best = float((self.net.grad(self.x + rnd, c) - a).norm(dim=1).max())
            d = torch.cat(starts + [rnd[:4]])
            for _ in range(40 if not self.net.relu else 1):
                y = (self.x + d).requires_grad_(True)
                g = self.net.grad(y, c, create_graph=True)
                obj = ((g - a) ** 2).sum()
                best = max(best, float((g - a).detach().norm(dim=1).max()))
                if self.net.relu:
                    break
                (step,) = torch.autograd.grad(obj, y)
                d = d + eps * 0.25 * step / step.norm(dim=1, keepdim=True).clamp_min(1e-300)
                d = (d * torch.clamp(eps / d.norm(dim=1, keepdim=True).clamp_min(1e-300), max=1.0)).detach()
            best = max(best, float((self.net.grad(self.x + d, c) - a).norm(dim=1).max()))
            return best
        return self._cached(("gstab", c, eps, _hash(a)), compute)

    def moreau_stability(self, c: int, eps: float, a: Tensor, rho: float, eta: float, group: int | None,
                         tol: float) -> float | None:
        """max over searched d (||d|| <= eps) and explanations b computed to residual <= tol at x + d of ||b - a||:
        b = the exact MG(x + d) moved towards away-from-a as far as its residual stays <= tol."""
        def compute() -> float | None:
            base = self.moreau_exact(self.x, c, rho, eta, group, start=a)
            if base is None:
                return None
            z = self.x - rho * base
            dirs = [torch.zeros(1, self.n, dtype=torch.float64)]
            if not self.net.relu:
                h = self.net.hessians(z, c)[0]
                e, v = torch.linalg.eigh(h)
                gain = (e / (1 + rho * e)).abs()
                for j in gain.argsort(descending=True)[:3]:
                    dirs += [eps * v[:, j][None], -eps * v[:, j][None]]
            gen = torch.Generator().manual_seed(5)
            for _ in range(3):
                r = torch.randn(1, self.n, generator=gen, dtype=torch.float64)
                dirs.append(eps * r / r.norm())
            best = 0.0
            for d in dirs:
                for _ in range(3):  # a few ascent steps along J^T (MG(x + d) - a), J = (I + rho H)^-1 H
                    xp = self.x + d
                    mg = self.moreau_exact(xp, c, rho, eta, group, start=a)
                    if mg is None:
                        break
                    best = max(best, self._push(xp, mg, a, c, rho, eta, group, tol))
                    if self.net.relu or float(d.norm()) == 0:
                        break
                    h = self.net.hessians(xp - rho * mg, c)[0]
                    jac = torch.linalg.solve(torch.eye(self.n, dtype=torch.float64) + rho * h, h)
                    step = (jac.T @ (mg - a).T).T
                    if float(step.norm()) == 0:
                        break
                    d = d + 0.5 * eps * step / step.norm()
                    d = d * min(1.0, eps / float(d.norm()))
            return best
        return self._cached(("mstab", c, eps, _hash(a), rho, eta, group, tol), compute)

    def _push(self, xp: Tensor, mg: Tensor, a: Tensor, c: int, rho: float, eta: float, group: int | None, tol: float) -> float:
        """||b - a|| for b = mg + s w (w the unit vector from a to mg), s the largest step keeping the residual of
        z_b = x' - rho b at most tol (bisection; every b tried is checked, so the value is achieved)."""
        base = float((mg - a).norm())
        w = (mg - a) / base if base > 0 else torch.zeros_like(mg)
        if tol <= 0 or base == 0:
            return base
        lo, hi = 0.0, tol * 10
        for _ in range(40):
            s = (lo + hi) / 2
            if self.residual(xp - rho * (mg + s * w), xp, c, rho, eta, group) <= tol * (1 - 1e-6):
                lo = s
            else:
                hi = s
        return float((mg + lo * w - a).norm())

    # ---------------- radii

    def flip_upper(self, c: int, p: float, dom: Any) -> float:
        """min ||delta||_p over concrete flips found (known witnesses, min-norm PGD in l2 and linf, ray scan in
        2-d) with x + delta in the domain, each flipping N strictly in float64. inf if none found."""
        key = ("flips", c, None if dom is None else _hash(dom[0], dom[1]))

        def compute() -> Tensor | None:
            cands = [d for d in self.known_deltas]
            if self.n == 2:  # exhaustive in the plane
                cands += self._ray_scan(c, dom)
            else:
                cands += self._pgd_flips(c, 2.0, dom) + self._pgd_flips(c, math.inf, dom)
            if not cands:
                return None
            d = torch.cat(cands)
            pts = self.x + d
            ok = self._flips(pts, c)
            if dom is not None:
                ok &= ((pts >= dom[0]) & (pts <= dom[1])).all(dim=1)
            return d[ok] if bool(ok.any()) else None
        flips = self._cached(key, compute)
        return math.inf if flips is None else float(_norm(flips, p).min())

    def _pgd_flips(self, c: int, p: float, dom: Any) -> list[Tensor]:
        """Min-norm flips by bisection on the radius with a PGD margin attack (l2 or linf, clipped to the box)."""
        best = [d for d in self.known_deltas if bool(self._flips(self.x + d, c))]
        hi = min([float(_norm(d, p)) for d in best], default=4.0 if p == 2 else 1.0)
        lo, found = 0.0, []
        gen = torch.Generator().manual_seed(6)
        for _ in range(12):
            r = (lo + hi) / 2
            d = self._pgd(c, p, r, dom, gen)
            if d is not None:
                found.append(d)
                hi = float(_norm(d, p))
            else:
                lo = r
        return found

    def _pgd(self, c: int, p: float, r: float, dom: Any, gen: torch.Generator) -> Tensor | None:
        d = torch.randn(8, self.n, generator=gen, dtype=torch.float64)
        d = r * 0.5 * (d / d.norm(dim=1, keepdim=True) if p == 2 else d.sign())
        d[0] = 0
        for _ in range(60):
            y = (self.x + d).requires_grad_(True)
            z = self.net(y)
            others = torch.cat([z[:, :c], z[:, c + 1 :]], dim=1)
            obj = (others.max(dim=1).values - z[:, c]).sum()
            (g,) = torch.autograd.grad(obj, y)
            with torch.no_grad():
                if p == 2:
                    d = d + 0.1 * r * g / g.norm(dim=1, keepdim=True).clamp_min(1e-300)
                    d = d * torch.clamp(r / d.norm(dim=1, keepdim=True).clamp_min(1e-300), max=1.0)
                else:
                    d = (d + 0.1 * r * g.sign()).clamp(-r, r)
                if dom is not None:
                    d = torch.maximum(torch.minimum(self.x + d, dom[1]), dom[0]) - self.x
                ok = self._flips(self.x + d, c)
                if bool(ok.any()):
                    return d[ok][:1].clone()
        return None

    def _ray_scan(self, c: int, dom: Any) -> list[Tensor]:
        """2-d inputs: the first flip along 2048 rays (scan, then bisection on all rays at once)."""
        angles = torch.linspace(0, 2 * math.pi, 2049, dtype=torch.float64)[:-1]
        u = torch.stack([angles.cos(), angles.sin()], dim=1)
        ts = torch.linspace(0, 8, 1601, dtype=torch.float64)[1:]
        pts = (self.x[:, None, :] + ts[None, :, None] * u[:, None, :]).reshape(-1, 2)
        flips = self._flips(pts, c)
        if dom is not None:
            flips &= ((pts >= dom[0]) & (pts <= dom[1])).all(dim=1)
        flips = flips.reshape(len(u), len(ts))
        has = flips.any(dim=1)
        if not bool(has.any()):
            return []
        first = flips.float().argmax(dim=1)[has]
        u = u[has]
        hi = ts[first]
        lo = torch.where(first > 0, ts[(first - 1).clamp_min(0)], torch.zeros_like(hi))
        for _ in range(45):
            mid = (lo + hi) / 2
            pt = self.x + mid[:, None] * u
            f = self._flips(pt, c)
            if dom is not None:
                f &= ((pt >= dom[0]) & (pt <= dom[1])).all(dim=1)
            hi = torch.where(f, mid, hi)
            lo = torch.where(f, lo, mid)
        return [hi[:, None] * u]

    # ---------------- top-k

    @staticmethod
    def topk_min_intersection(a: Tensor, k: int, bound: float) -> int:
        """min over ||b - a||_2 <= bound of |topk(a) cap topk(b)| with ties counted against (exact): removing m
        features costs min_tau sum_{i in R}(|a_i| - tau)_+^2 + sum_{j in P}(tau - |a_j|)_+^2, R the m smallest of
        the top-k, P the m largest of the rest (an exchange argument), convex in tau."""
        mags = a.abs().flatten().sort(descending=True).values.tolist()
        n = len(mags)
        removed = 0
        for m in range(1, min(k, n - k) + 1):
            top, rest = mags[k - m : k], mags[k : k + m]
            cand = sorted(top + rest)

            def cost(tau: float) -> float:
                return sum(max(0.0, v - tau) ** 2 for v in top) + sum(max(0.0, tau - v) ** 2 for v in rest)

            lo_, hi_ = cand[0], cand[-1]
            for _ in range(200):
                m1, m2 = lo_ + (hi_ - lo_) / 3, hi_ - (hi_ - lo_) / 3
                if cost(m1) <= cost(m2):
                    hi_ = m2
                else:
                    lo_ = m1
            if math.sqrt(cost((lo_ + hi_) / 2)) <= bound * (1 - 1e-9):
                removed = m
            else:
                break
        return k - removed

    @staticmethod
    def topk_ratio(a: Tensor, b: Tensor, k: int) -> float:
        sa = set(a.abs().flatten().argsort(descending=True)[:k].tolist())
        sb = set(b.abs().flatten().argsort(descending=True)[:k].tolist())
        return len(sa & sb) / k

    # ---------------- judging

    def judge(self, doc: dict, report: Any = None, method_key: str | None = None) -> list[tuple[str, str]]:
        """[(claim id, why it is false)] over the certified claims of `doc` (and the probabilistic ones the
        checker called valid)."""
        statuses = {c.id: c.status for c in report.checks} if report is not None else {}
        false: list[tuple[str, str]] = []
        a = _decode(doc.get("explanation", {}))
        a = None if a is None else a.reshape(1, -1)
        x = _decode(doc.get("input", {}))
        if x is None or x.numel() != self.n or not torch.equal(x.reshape(1, -1), self.x):
            # the oracle was built for one input: a consistently re-hashed other input is judged there
            return [("input", "the certificate's input is not the oracle's input (judged by a fresh oracle)")]
        if doc.get("target_source") == "predicted":
            c = doc.get("target")
            for native in (False, True):
                z = self.native_logits(self.x) if native else self.net(self.x)
                if not isinstance(c, int) or int(z.argmax()) != c or bool((z[0] >= z[0, c]).sum() > 1):
                    false.append(("target", f"target_source 'predicted' but argmax {'native' if native else 'float64'} is {int(z.argmax())}, target {c}"))
                    break
        why = self.judge_explanation(doc, a, method_key)
        if why:
            false.append(("explanation", why))
        claims = doc.get("claims", [])
        by_id = {c.get("id"): c for c in claims if isinstance(c, dict)}
        for claim in claims:
            kind = claim.get("kind")
            status = statuses.get(claim.get("id"), "")
            if kind == "certified" or (kind == "probabilistic" and status.startswith("valid")):
                why = self.judge_claim(doc, claim, by_id, a, method_key)
                if why:
                    false.append((claim.get("id"), f"{claim.get('type')}: {why}"))
        return false

    CLOSED_FORM = ("gradient", "integrated-gradients")  # re-derivable (issue 10: gradient, IG with its quadrature)

    def judge_explanation(self, doc: dict, a: Tensor | None, method_key: str | None) -> str | None:
        """The stored explanation of a closed-form method must be that method's output at x for the certificate's
        target, the method and its parameters read from the certificate's provenance (recomputed with the
        product's explainer so configured, in the model's dtype, to 1e-5 relative)."""
        explainer = (doc.get("provenance") or {}).get("explainer") or {}
        method = explainer.get("method")
        if method not in self.CLOSED_FORM or a is None:
            return None
        c = doc.get("target")
        if not (isinstance(c, int) and not isinstance(c, bool) and 0 <= c < self.classes):
            return f"target {c!r}"
        params = explainer.get("params") or {}

        def compute() -> Tensor | None:
            from certify.explain.registry import make_explainer
            try:
                e = make_explainer(method, self.model, **params).explain(
                    self.x.to(self.native_dtype).reshape(1, *self.shape), torch.tensor([c]))
            except Exception:  # noqa: BLE001 - the stated configuration does not run: not judged here
                return None
            return e.attributions.detach().double().reshape(1, -1)
        ref = self._cached(("explain", method, json.dumps(params, sort_keys=True, default=str), c), compute)
        if ref is None:  # the stated configuration does not run (e.g. n_steps = -1): nothing to compare with
            return None
        err = float((a - ref).norm())
        if err > 1e-5 * float(ref.norm()) + 1e-12:
            return f"the stored explanation is not the {method} explanation at x for class {c} (off by {err:.3g})"
        return None

    def exact_explanation(self, params: dict, c: int) -> Tensor | str:
        """E(x) of an explanation-error claim: grad N_c(x), or IG of N_c with the stated rule, steps, baseline."""
        method = params.get("method")
        if method == "gradient":
            return self.net.grad(self.x, c)
        if method != "integrated-gradients":
            return f"method {method!r} has no closed form here"
        from certify.explain.integrated_gradients import quadrature  # the rule's nodes and weights (its definition)
        rule, steps, base = params.get("quadrature"), params.get("n_steps"), params.get("baseline")
        if not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1) or not _number(base) or not isinstance(rule, str):
            return f"quadrature {rule!r} / n_steps {steps!r} / baseline {base!r}"
        nodes, weights = quadrature(rule, steps)
        x0 = torch.full_like(self.x, float(base))
        pts = x0 + torch.as_tensor(nodes, dtype=torch.float64)[:, None] * (self.x - x0)
        g = self.net.grad(pts, c)
        return (self.x - x0) * (torch.as_tensor(weights, dtype=torch.float64)[:, None] * g).sum(dim=0, keepdim=True)

    def judge_claim(self, doc: dict, claim: dict, by_id: dict, a: Tensor | None, method_key: str | None) -> str | None:
        try:
            return self._judge_claim(doc, claim, by_id, a, method_key)
        except Exception as exc:  # noqa: BLE001 - the oracle's own numerics failed (e.g. overflow at sigma = 1e300)
            self.undetermined += 1
            self.failures.append(f"{claim.get('id')}: {type(exc).__name__}: {exc}")
            return None

    def _judge_claim(self, doc: dict, claim: dict, by_id: dict, a: Tensor | None, method_key: str | None) -> str | None:
        type_ = claim.get("type")
        params = claim.get("params")
        value = claim.get("value")
        if not isinstance(params, dict):
            return "no params"
        if not _number(value):
            return f"value {value!r} is not a finite number"
        if _render is not None:
            try:
                expected = _render(type_, params)
            except Exception as exc:  # noqa: BLE001
                return f"params do not render ({exc})"
            if claim.get("statement") != expected:
                return "statement differs from the one rendered from its params"
        expected_rel = {"lipschitz": "<=", "weak-convexity": "<=", "curvature": "<=", "smoothed-weak-convexity": "<=",
                        "explanation-error": "<=", "solver-error": "<=", "stability-gradient": "<=",
                        "stability-moreaugrad": "<=", "stability-none": "<=", "topk-stability": ">=",
                        "flip-witness": "<=", "lipschitz-radius": ">=", "radius-lower": ">=", "exact-radius": "==",
                        "gap": "<=", "implementation-deviation": "<=", "smoothed-explanation-error": "<=",
                        "property-holds": ">=", "property-violated": ">="}
        if type_ not in expected_rel:
            return f"unknown claim type {type_!r}"
        if claim.get("relation") != expected_rel[type_]:
            return f"relation {claim.get('relation')!r} is not the type's {expected_rel[type_]!r}"
        if type_ in ("property-holds", "property-violated"):  # judged in tests/certificates/test_property_check.py
            return "a property claim says nothing about an explanation certificate's input"
        if type_ == "implementation-deviation":
            obs = self.deviation()
            return None if value >= obs * (1 - 1e-6) else f"observed deviation {obs:.6g} > {value:.6g}"
        c = self._target(params)
        if c is None:
            return f"target {params.get('target')!r} is not a class"
        slack = lambda v: v * (1 + TOL_REL) + 1e-300  # noqa: E731
        if type_ == "lipschitz":
            p = _pnum(params.get("p"))
            if p is None:
                return f"p = {params.get('p')!r}"
            obs = self.max_grad_norms(c)[_dual(p)]
            return None if slack(value) >= obs else f"gradient dual norm {obs:.6g} reached > L = {value:.6g}"
        if type_ in ("weak-convexity", "curvature"):
            radius = params.get("radius")
            if radius is not None and not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
                return f"radius = {radius!r}"
            lam_hat, beta_hat = self.curvature_truth(c) if radius is None else self.local_curvature_truth(c, float(radius))
            obs = lam_hat if type_ == "weak-convexity" else beta_hat
            return None if slack(value) >= obs else f"observed {obs:.6g} > {value:.6g}"
        if type_ == "smoothed-weak-convexity":
            sigma = params.get("sigma")
            if not (_number(sigma) and sigma > 0):
                return f"sigma = {sigma!r}"
            obs = self.smoothed_curvature(c, float(sigma))
            return None if slack(value) >= obs else f"smoothed curvature {obs:.6g} (lower 4-se estimate) > {value:.6g}"
        if type_ == "explanation-error":
            if a is None:
                return "no explanation"
            exact = self.exact_explanation(params, c)
            if isinstance(exact, str):
                return exact
            obs = float((a - exact).norm())
            return None if slack(value) + 1e-15 >= obs else f"||a - E(x)|| = {obs:.6g} > {value:.6g}"
        if type_ == "solver-error":
            return self._judge_solver_error(params, value, a, c)
        if type_ == "smoothed-explanation-error":
            sigma = params.get("sigma")
            if not (_number(sigma) and sigma > 0) or a is None:
                return f"sigma = {sigma!r}"
            mean, err = self.smoothed_gradient(c, float(sigma))
            obs = float((a - mean).norm()) - 5 * err
            return None if value >= obs else f"||a - grad h(x)|| >= {obs:.6g} (5 standard errors below) > {value:.6g}"
        if type_ == "stability-gradient":
            eps = params.get("eps")
            if not (_number(eps) and eps > 0) or a is None:
                return f"eps = {eps!r}"
            obs = self.gradient_stability(c, float(eps), a)
            return None if slack(value) >= obs else f"||grad N(x + d) - a|| = {obs:.6g} reached > {value:.6g}"
        if type_ == "stability-moreaugrad":
            return self._judge_moreau_stability(params, value, a, c)
        if type_ == "stability-none":
            eps = params.get("eps")
            if not (_number(eps) and eps > 0) or a is None or method_key is None:
                return f"eps = {eps!r}"
            gen = torch.Generator().manual_seed(7)
            obs = 0.0
            for _ in range(3):
                r = torch.randn(1, self.n, generator=gen, dtype=torch.float64)
                b = self.explain_product(method_key, self.x + eps * r / r.norm(), c)
                if b is not None:
                    obs = max(obs, float((b - a).norm()))
            return None if slack(value) >= obs else f"explanation moved by {obs:.6g} > {value:.6g}"
        if type_ == "topk-stability":
            return self._judge_topk(params, value, a, c, claim, by_id)
        if type_ in ("flip-witness", "lipschitz-radius", "radius-lower", "exact-radius", "gap"):
            return self._judge_radius(type_, params, value, c, claim, by_id)
        return f"no rule for {type_!r}"

    def _moreau_params(self, params: dict) -> tuple[float, float, int | None, float | None] | str:
        rho, eta, group, sigma = params.get("rho"), params.get("sparsity"), params.get("group_size"), params.get("sigma")
        if not (_number(rho) and rho > 0):
            return f"rho = {rho!r}"
        if not (_number(eta) and eta >= 0):
            return f"sparsity = {eta!r}"
        if group is not None and not (isinstance(group, int) and not isinstance(group, bool) and group >= 1 and self.n % group == 0):
            return f"group_size = {group!r}"
        if sigma is not None and not (_number(sigma) and sigma > 0):
            return f"sigma = {sigma!r}"
        if eta == 0:
            group = None
        return float(rho), float(eta), group, (None if sigma is None else float(sigma))

    def _judge_solver_error(self, params: dict, value: float, a: Tensor | None, c: int) -> str | None:
        mp = self._moreau_params(params)
        if isinstance(mp, str):
            return mp
        if a is None:
            return "no explanation"
        rho, eta, group, sigma = mp
        if sigma is None:
            mg = self.moreau_exact(self.x, c, rho, eta, group, start=a)
            if mg is None:
                self.undetermined += 1
                return None  # no unique minimiser found: undetermined (counted apart)
            obs = float((a - mg).norm())
            return None if value * (1 + 1e-6) + 1e-12 >= obs else f"||a - MG(x)|| = {obs:.6g} > {value:.6g}"
        gen = torch.Generator().manual_seed(8)
        ests = []
        for _ in range(2):
            z = torch.randn(512, self.n, generator=gen, dtype=torch.float64)
            mg = self.moreau_saa(self.x, c, rho, eta, group, sigma, z, a)
            if mg is None:
                return None
            ests.append(mg)
        spread = float((ests[0] - ests[1]).norm())
        obs = float((a - (ests[0] + ests[1]) / 2).norm()) - 3 * spread
        return None if value >= obs else f"||a - MG_h(x)|| >= {obs:.6g} (SAA, 3 spreads below) > {value:.6g}"

    def _judge_moreau_stability(self, params: dict, value: float, a: Tensor | None, c: int) -> str | None:
        mp = self._moreau_params(params)
        if isinstance(mp, str):
            return mp
        eps, tol = params.get("eps"), params.get("tol")
        if not (_number(eps) and eps > 0):
            return f"eps = {eps!r}"
        if not (_number(tol) and tol >= 0):
            return f"tol = {tol!r}"
        if a is None:
            return "no explanation"
        rho, eta, group, sigma = mp
        if sigma is not None:
            return None  # smoothed: probabilistic, judged through its solver error (no exact MG of h here)
        obs = self.moreau_stability(c, float(eps), a, rho, eta, group, float(tol))
        if obs is None:
            self.undetermined += 1
            return None
        return None if value * (1 + TOL_REL) >= obs else f"||b - a|| = {obs:.6g} reached > {value:.6g}"

    def _judge_topk(self, params: dict, value: float, a: Tensor | None, c: int, claim: dict, by_id: dict) -> str | None:
        k, eps = params.get("k"), params.get("eps")
        if not (isinstance(k, int) and not isinstance(k, bool) and 1 <= k < self.n):
            return f"k = {k!r}"
        if not (_number(eps) and eps > 0):
            return f"eps = {eps!r}"
        if a is None:
            return "no explanation"
        stab = [by_id.get(i) for i in claim.get("assumptions", [])]
        stab = [s for s in stab if isinstance(s, dict) and s.get("type") in ("stability-gradient", "stability-moreaugrad")]
        if len(stab) != 1:
            return f"rests on {len(stab)} stability claims, not one"
        s = stab[0]
        if s.get("kind") != "certified" or not _number(s.get("value")):
            return "its stability claim is not a certified number"
        sp = s.get("params", {})
        if sp.get("eps") != eps or sp.get("target") != params.get("target"):
            return "eps / target differ from its stability claim's"
        bound = float(s["value"])
        kept = self.topk_min_intersection(a, k, bound)
        if value > kept / k + 1e-12:
            return f"an explanation within {bound:.6g} of a keeps only {kept}/{k} of its top-{k}"
        return None

    def _judge_radius(self, type_: str, params: dict, value: float, c: int, claim: dict, by_id: dict) -> str | None:
        p = _pnum(params.get("p"))
        if p is None:
            return f"p = {params.get('p')!r}"
        ok, dom = self.domain_of(params)
        if not ok:
            return f"domain {str(params.get('domain'))[:60]} is not a box"
        if dom is not None and (dom[0].numel() not in (1, self.n) or dom[1].numel() not in (1, self.n)):
            return "domain has the wrong size"
        if type_ == "flip-witness":
            d = _decode(claim.get("witness", {}).get("delta", {}))
            if d is None or d.numel() != self.n:
                return "no readable delta"
            d = d.reshape(1, -1)
            pt = self.x + d
            if dom is not None and not bool(((pt >= dom[0]) & (pt <= dom[1])).all()):
                return "x + delta leaves the domain"
            if not bool(self._flips(pt, c)):
                return "x + delta does not flip N in float64"
            if not bool(self._flips(pt, c, native=True)):
                return f"x + delta does not flip the model as run ({self.native_dtype})"
            nrm = float(_norm(d, p))
            return None if value * (1 + TOL_REL) >= nrm else f"||delta||_p = {nrm:.6g} > {value:.6g}"
        if type_ in ("lipschitz-radius", "radius-lower", "exact-radius"):
            if value < 0:
                return None if type_ != "exact-radius" else "negative radius"
            up = self.flip_upper(c, p, dom)
            return None if up >= value * (1 - 1e-12) else f"a flip of norm {up:.6g} < {value:.6g} exists"
        if type_ == "gap":
            ups = [by_id.get(i) for i in claim.get("assumptions", [])]
            upper = [u for u in ups if isinstance(u, dict) and u.get("type") == "flip-witness"]
            lower = [u for u in ups if isinstance(u, dict) and u.get("type") in ("lipschitz-radius", "radius-lower")]
            if len(upper) != 1 or len(lower) != 1:
                return "does not rest on one upper and one lower bound"
            for dep in upper + lower:
                if dep.get("params", {}) .get("p") != params.get("p") or dep.get("params", {}).get("domain") != params.get("domain") \
                        or dep.get("params", {}).get("target") != params.get("target"):
                    return f"p / domain / target differ from those of {dep.get('id')!r}"
                if dep.get("kind") != "certified" or not _number(dep.get("value")):
                    return f"{dep.get('id')!r} is not a certified number"
            diff = upper[0]["value"] - lower[0]["value"]
            return None if value * (1 + TOL_REL) + 1e-300 >= diff else f"upper - lower = {diff:.6g} > {value:.6g}"
        return None


# ------------------------------------------------------------------ the mutator


FAMILIES = ("value", "param", "witness", "kind", "relation", "statement", "target", "explanation", "input",
            "structure", "assumptions", "provenance", "consistent", "dependency", "combo")
FACTORS = (1e-9, 1e-6, 1e-3, 1e-2, 0.1, 0.5, 0.9)


def _rehash(record: dict, values: Any) -> None:
    a = np.asarray(values, dtype=np.float64)
    fresh = encode_array(a)
    record.clear()
    record.update(fresh)


def _num_mut(draw: Callable, v: Any) -> Any:
    """A number tightened / loosened by 1e-9 .. 10x, or replaced by an edge value."""
    how = draw(st.sampled_from(["down", "up", "x10", "/10", "zero", "neg", "tiny", "huge", "plus", "int"]))
    if not _number(v):
        v = 1.0
    if how == "down":
        return v * (1 - draw(st.sampled_from(FACTORS)))
    if how == "up":
        return v * (1 + draw(st.sampled_from(FACTORS)))
    return {"x10": v * 10, "/10": v / 10, "zero": 0.0, "neg": -abs(v) - 1e-3, "tiny": 1e-299, "huge": 1e300,
            "plus": v + 1e-12, "int": int(round(v))}[how]


def _param_mut(draw: Callable, key: str, v: Any, case: Case, doc: dict) -> Any:
    n = len(doc["input"].get("values", [[0]])[0]) if isinstance(doc["input"].get("values"), list) else 64
    classes = 3 if case.model_name.startswith("blobs") else 10
    if key == "target":
        return draw(st.sampled_from([(v + 1) % classes if isinstance(v, int) else 0, (v - 1) % classes if isinstance(v, int) else 1,
                                     -1, classes, float(v) if isinstance(v, int) else 0.0, str(v), None]))
    if key == "p":
        return draw(st.sampled_from([1, 2, "inf", 3, 1e300, "2", 0, None, 2.0]))
    if key == "k":
        vv = v if isinstance(v, int) else 6
        return draw(st.sampled_from([vv - 1, vv + 1, 1, 0, n - 1, n, n + 1, float(vv), 2 * vv]))
    if key == "group_size":
        return draw(st.sampled_from([None, 1, 2, 3, 4, 64, 0, 2.0]))
    if key == "domain":
        x = doc["input"].get("values")
        flat = np.asarray(x, dtype=np.float64).reshape(-1).tolist() if x is not None else [0.0]
        return draw(st.sampled_from([
            None, {"lower": flat, "upper": flat}, {"lower": 0.4, "upper": 0.6}, {"lower": -1e6, "upper": 1e6},
            {"lower": 1.0, "upper": 0.0}, {"lower": [v_ - 0.01 for v_ in flat], "upper": [v_ + 0.01 for v_ in flat]},
            {"lower": 0.0, "upper": 1.0}, {"lower": None, "upper": None}, {"lower": 0.9, "upper": 1.0}, [0, 1]]))
    if key == "relaxation":
        return draw(st.sampled_from(["crown", "lp", "milp", None]))
    if key == "method":
        return draw(st.sampled_from(["gradient", "integrated-gradients", "moreaugrad", None]))
    if key == "confidence":
        return draw(st.sampled_from([0.5, 0.9, 0.999999, 1.0, 0.0, -0.5, None, 2.0]))
    if key == "sparsity" and draw(st.booleans()):
        return draw(st.sampled_from([0.0, 0.25, 0.05, 1.0, -0.25]))
    if key == "sigma" and v is None:
        return draw(st.sampled_from([0.1, 1.0, 0.01]))
    if isinstance(v, int) and not isinstance(v, bool):  # counts and seeds
        return draw(st.sampled_from([v + 1, v - 1, 0, 1, 2 * v, 1000 * v + 7, -1, float(v)]))
    return _num_mut(draw, v) if _number(v) else draw(st.sampled_from([0.1, -1.0, None, "x"]))


def _rerender(claim: dict) -> None:
    if _render is not None:
        try:
            claim["statement"] = _render(claim["type"], claim["params"])
        except Exception:  # noqa: BLE001
            pass


def _pick_claim(draw: Callable, doc: dict, pred: Callable[[dict], bool] = lambda c: True) -> dict | None:
    claims = [c for c in doc["claims"] if pred(c)]
    if not claims:
        return None
    # bias towards certified claims, where a bug would matter
    certified = [c for c in claims if c.get("kind") == "certified"]
    pool = certified if certified and draw(st.integers(0, 3)) else claims
    return draw(st.sampled_from(pool))


def _array_mut(draw: Callable, record: dict, rng: np.random.Generator) -> str:
    vals = record.get("values")
    if vals is None:
        return "no values"
    a = np.asarray(vals, dtype=np.float64)
    how = draw(st.sampled_from(["noise", "scale", "swap", "permute", "zero", "made-up", "sign", "one-entry", "nohash"]))
    f = draw(st.sampled_from(FACTORS + (1.0, 10.0)))
    if how == "noise":
        a = a + f * (np.abs(a).max() + 1e-12) * rng.standard_normal(a.shape)
    elif how == "scale":
        a = a * (1 + draw(st.sampled_from([-1, 1])) * f)
    elif how == "swap" and a.size > 1:
        flat = a.reshape(-1)
        i, j = rng.choice(flat.size, 2, replace=False)
        flat[i], flat[j] = flat[j], flat[i]
    elif how == "permute":
        a = rng.permutation(a.reshape(-1)).reshape(a.shape)
    elif how == "zero":
        a = np.zeros_like(a)
    elif how == "made-up":
        a = rng.standard_normal(a.shape)
    elif how == "sign":
        a = -a
    elif how == "one-entry":
        flat = a.reshape(-1)
        flat[rng.integers(flat.size)] += f * (np.abs(flat).max() + 1e-12)
    elif how == "nohash":
        record["values"] = (a * (1 + f)).tolist()
        return how
    _rehash(record, a)
    return how


def _mutate_once(draw: Callable, family: str, doc: dict, case: Case, cases: dict[str, Case]) -> str:
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    if family == "value":
        cl = _pick_claim(draw, doc)
        if cl is None:
            return "none"
        cl["value"] = _num_mut(draw, cl.get("value"))
        return f"{cl['id']}.value"
    if family == "param":
        cl = _pick_claim(draw, doc, lambda c: bool(c.get("params")) or bool(c.get("witness")))
        if cl is None:
            return "none"
        holder = cl["params"] if "params" in cl else cl["witness"]
        keys = sorted(holder) + ["<delete>", "<add>"]
        key = draw(st.sampled_from(keys))
        if key == "<delete>" and holder:
            holder.pop(draw(st.sampled_from(sorted(holder))))
        elif key == "<add>":
            holder[draw(st.sampled_from(["eps", "k", "p", "extra", "sigma", "domain"]))] = draw(st.sampled_from([0.1, 1, "inf", None]))
        elif key in holder:
            holder[key] = _param_mut(draw, key, holder[key], case, doc)
            if key == "confidence":
                cl["confidence"] = holder[key]
        if draw(st.integers(0, 9)) < 7:  # mostly a consistent edit: the statement re-rendered from the params
            _rerender(cl)
        return f"{cl['id']}.params.{key}"
    if family == "witness":
        cl = _pick_claim(draw, doc, lambda c: bool(c.get("witness")))
        if cl is None:
            return "none"
        w = cl["witness"]
        key = draw(st.sampled_from(sorted(w) + ["<delete>", "<add>"]))
        if key == "<delete>":
            w.pop(draw(st.sampled_from(sorted(w))))
            return f"{cl['id']}.witness.delete"
        if key == "<add>":
            new = draw(st.sampled_from(["eps", "k", "p", "target", "rho", "tol", "row", "domain"]))
            w[new] = draw(st.sampled_from([1e-6, 1, "inf", 0, [0.0] * 3, None]))
            return f"{cl['id']}.witness.add.{new}"
        v = w[key]
        if isinstance(v, dict) and "sha256" in v:
            return f"{cl['id']}.witness.{key}.{_array_mut(draw, v, rng)}"
        if isinstance(v, list) and v and all(_number(e) for e in v):
            how = draw(st.sampled_from(["zeros", "scale", "one"]))
            if how == "zeros":
                w[key] = [0.0] * len(v)
            elif how == "scale":
                f = draw(st.sampled_from(FACTORS))
                w[key] = [e * (1 - f) for e in v]
            else:
                w[key] = list(v)
                w[key][draw(st.integers(0, len(v) - 1))] = _num_mut(draw, v[0])
            return f"{cl['id']}.witness.{key}.{how}"
        if isinstance(v, list) and v and isinstance(v[0], dict):  # lists of records (alphas, tightening)
            item = draw(st.sampled_from(v))
            sub = [k_ for k_, vv in item.items() if isinstance(vv, dict) and "sha256" in vv] if isinstance(item, dict) else []
            if "sha256" in item:
                return f"{cl['id']}.witness.{key}[].{_array_mut(draw, item, rng)}"
            if sub:
                return f"{cl['id']}.witness.{key}[].{_array_mut(draw, item[draw(st.sampled_from(sub))], rng)}"
            return "none"
        if isinstance(v, dict):
            sub = sorted(v)
            if not sub:
                return "none"
            k2 = draw(st.sampled_from(sub))
            if isinstance(v[k2], dict) and "sha256" in v[k2]:
                return f"{cl['id']}.witness.{key}.{k2}.{_array_mut(draw, v[k2], rng)}"
            if isinstance(v[k2], list) and v[k2] and isinstance(v[k2][0], dict) and "sha256" in v[k2][0]:
                return f"{cl['id']}.witness.{key}.{k2}[].{_array_mut(draw, draw(st.sampled_from(v[k2])), rng)}"
            v[k2] = _num_mut(draw, v[k2]) if _number(v[k2]) else None
            return f"{cl['id']}.witness.{key}.{k2}"
        w[key] = _param_mut(draw, key, v, case, doc)
        return f"{cl['id']}.witness.{key}"
    if family == "kind":
        cl = _pick_claim(draw, doc)
        if cl is None:
            return "none"
        old = cl["kind"]
        new = draw(st.sampled_from([k_ for k_ in ("certified", "probabilistic", "estimated", "solver-reported", "refused") if k_ != old]))
        cl["kind"] = new
        if new == "refused":
            cl["value"], cl["reason"] = None, "tampered"
            if draw(st.booleans()):
                cl["witness"] = {}
        else:
            if cl.get("value") is None:
                cl["value"] = draw(st.sampled_from([0.0, 1e-299, 0.5, 1.0, 10.0, 1e6]))
            cl["reason"] = None
        if new == "probabilistic":
            cl["confidence"] = draw(st.sampled_from([0.99, 0.5, None]))
            if "params" in cl and draw(st.booleans()):
                cl["params"]["confidence"] = cl["confidence"]
                _rerender(cl)
        elif draw(st.booleans()):
            cl["confidence"] = None
        if draw(st.booleans()) and _number(cl.get("value")):
            cl["value"] = _num_mut(draw, cl["value"])
        return f"{cl['id']}.kind.{old}->{new}"
    if family == "relation":
        cl = _pick_claim(draw, doc)
        if cl is None:
            return "none"
        cl["relation"] = draw(st.sampled_from([r for r in ("<=", ">=", "==", "<", "!=") if r != cl.get("relation")]))
        return f"{cl['id']}.relation"
    if family == "statement":
        cl = _pick_claim(draw, doc)
        if cl is None:
            return "none"
        how = draw(st.sampled_from(["append", "number", "other-params", "empty"]))
        s = cl.get("statement", "")
        if how == "append":
            cl["statement"] = s + " (for all x)"
        elif how == "number":
            cl["statement"] = re.sub(r"\d+(\.\d+)?", "7", s, count=1)
        elif how == "other-params" and isinstance(cl.get("params"), dict) and cl["params"] and _render is not None:
            q = copy.deepcopy(cl["params"])
            key = draw(st.sampled_from(sorted(q)))
            q[key] = _param_mut(draw, key, q[key], case, doc)
            try:
                cl["statement"] = _render(cl["type"], q)
            except Exception:  # noqa: BLE001
                cl["statement"] = s + "?"
        else:
            cl["statement"] = ""
        return f"{cl['id']}.statement.{how}"
    if family == "target":
        classes = 3 if case.model_name.startswith("blobs") else 10
        how = draw(st.sampled_from(["doc", "doc+params", "params-one", "source"]))
        new = (doc["target"] + draw(st.integers(1, classes - 1))) % classes
        if how in ("doc", "doc+params"):
            doc["target"] = new
        if how == "doc+params":
            for cl in doc["claims"]:
                if isinstance(cl.get("params"), dict) and "target" in cl["params"]:
                    cl["params"]["target"] = new
                    _rerender(cl)
        if how == "params-one":
            cl = _pick_claim(draw, doc, lambda c: isinstance(c.get("params"), dict) and "target" in c["params"])
            if cl is not None:
                cl["params"]["target"] = new
                _rerender(cl)
        if how == "source":
            doc["target_source"] = "given" if doc.get("target_source") == "predicted" else "predicted"
            if draw(st.booleans()):
                doc["target"] = new
        return f"target.{how}"
    if family in ("explanation", "input"):
        return f"{family}.{_array_mut(draw, doc[family], rng)}"
    if family == "structure":
        how = draw(st.sampled_from(["remove", "duplicate-new-id", "duplicate-same-id", "foreign", "reorder", "empty"]))
        claims = doc["claims"]
        if how == "remove" and claims:
            claims.pop(draw(st.integers(0, len(claims) - 1)))
        elif how in ("duplicate-new-id", "duplicate-same-id") and claims:
            cl = copy.deepcopy(draw(st.sampled_from(claims)))
            if how == "duplicate-new-id":
                cl["id"] = cl["id"] + "-copy"
                if _number(cl.get("value")):
                    cl["value"] = _num_mut(draw, cl["value"])
            claims.append(cl)
        elif how == "foreign":
            other = draw(st.sampled_from(sorted(k for k, v in cases.items() if k != case.key)))
            pool = [c for c in cases[other].doc["claims"] if c.get("kind") == "certified"]
            if pool:
                cl = copy.deepcopy(draw(st.sampled_from(pool)))
                if draw(st.booleans()):
                    cl["id"] = cl["id"] + "-foreign"
                    cl["assumptions"] = [a for a in cl.get("assumptions", []) if a in {c["id"] for c in claims}]
                if draw(st.booleans()) and _number(cl.get("value")):
                    cl["value"] = _num_mut(draw, cl["value"])
                claims.append(cl)
        elif how == "reorder":
            claims.reverse()
        elif how == "empty":
            claims.clear()
        return f"structure.{how}"
    if family == "assumptions":
        cl = _pick_claim(draw, doc)
        if cl is None:
            return "none"
        ids = [c["id"] for c in doc["claims"] if c is not cl]
        asm = list(cl.get("assumptions", []))
        how = draw(st.sampled_from(["remove", "add", "replace", "clear", "self"] if asm else ["add", "self"]))
        if how == "remove" and asm:
            asm.pop(draw(st.integers(0, len(asm) - 1)))
        elif how == "add" and ids:
            asm.append(draw(st.sampled_from(ids)))
        elif how == "replace" and asm and ids:
            asm[draw(st.integers(0, len(asm) - 1))] = draw(st.sampled_from(ids))
        elif how == "clear":
            asm = []
        elif how == "self":
            asm.append(cl["id"])
        cl["assumptions"] = asm
        return f"{cl['id']}.assumptions.{how}"
    if family == "provenance":
        how = draw(st.sampled_from(["explainer-param", "model-hash", "function", "method"]))
        prov = doc.get("provenance", {})
        if how == "explainer-param":
            params = prov.get("explainer", {}).get("params") or {}
            if params:
                key = draw(st.sampled_from(sorted(params)))
                params[key] = _param_mut(draw, key, params[key], case, doc)
        elif how == "model-hash":
            prov.setdefault("model", {})["sha256"] = "0" * 64
        elif how == "method":
            prov.setdefault("explainer", {})["method"] = draw(st.sampled_from(["gradient", "moreaugrad", "smoothgrad"]))
        elif how == "function" and isinstance(doc.get("function"), dict):
            fn = doc["function"]
            sub = draw(st.sampled_from(["passed", "tolerance", "refused", "semantics"]))
            conf = fn.get("conformance")
            if sub == "passed" and isinstance(conf, dict):
                conf["passed"] = not conf.get("passed")
            elif sub == "tolerance" and isinstance(conf, dict):
                conf["tolerance"] = _num_mut(draw, conf.get("tolerance"))
            elif sub == "refused":
                doc["function"] = {"refused": "tampered"}
            elif sub == "semantics" and isinstance(fn.get("semantics"), dict):
                fn["semantics"]["tampered"] = True
        return f"provenance.{how}"
    if family == "consistent":
        # an attacker's edit: one parameter changed in EVERY claim that states it (statements re-rendered), and
        # optionally the values of those claims scaled alike
        holders = [c for c in doc["claims"] if isinstance(c.get("params"), dict)]
        keys = sorted({k_ for c in holders for k_ in c["params"]} - {"method", "quadrature", "relaxation"})
        if not keys:
            return "none"
        key = draw(st.sampled_from(keys))
        sample = next(c["params"][key] for c in holders if key in c["params"])
        new = _param_mut(draw, key, sample, case, doc)
        scale = draw(st.sampled_from([None, None, 0.5, 0.9, 1.1, 2.0, 10.0]))
        for c in holders:
            if key in c["params"]:
                c["params"][key] = copy.deepcopy(new)
                if key == "confidence":
                    c["confidence"] = new
                _rerender(c)
                if scale is not None and _number(c.get("value")):
                    c["value"] = c["value"] * scale
        if key == "target" and isinstance(new, int):
            doc["target"] = new
        return f"all.params.{key}" + (f".value*{scale}" if scale else "")
    if family == "dependency":
        # loosen a claim others rest on (still true), tighten one that rests on it
        deps = [c for c in doc["claims"] if c.get("assumptions") and c.get("kind") == "certified" and _number(c.get("value"))]
        if not deps:
            return "none"
        top = draw(st.sampled_from(deps))
        base = next((c for c in doc["claims"] if c.get("id") == draw(st.sampled_from(top["assumptions"]))), None)
        if base is None or not _number(base.get("value")):
            return "none"
        f = draw(st.sampled_from((1.001, 1.1, 2.0, 10.0)))
        base["value"] = base["value"] * f if base.get("relation") == "<=" else base["value"] / f
        g = draw(st.sampled_from((0.0, 1e-9, 1e-3, 0.1, 0.5)))
        if g:
            top["value"] = top["value"] * (1 - g) if top.get("relation") == "<=" else min(1.0, top["value"] * (1 + g) + g)
        return f"{base['id']}.loosened+{top['id']}.tightened"
    raise ValueError(family)


@st.composite
def mutations(draw: Callable, cases: dict[str, Case], keys: tuple[str, ...] | None = None,
              families: tuple[str, ...] = FAMILIES) -> tuple[str, str, str, dict]:
    """(case key, family, description, mutated doc) over the cached honest certificates."""
    key = draw(st.sampled_from(sorted(keys or cases)))
    case = cases[key]
    family = draw(st.sampled_from(families))
    for attempt in range(4):  # a mutation that changes nothing is drawn again, from another family after the first
        if attempt:
            family = draw(st.sampled_from(families))
        doc = copy.deepcopy(case.doc)
        if family == "combo":
            parts = [_mutate_once(draw, draw(st.sampled_from(FAMILIES[:-1])), doc, case, cases)
                     for _ in range(draw(st.integers(2, 3)))]
            what = " + ".join(parts)
        else:
            what = _mutate_once(draw, family, doc, case, cases)
        if doc != case.doc:
            break
    return key, family, what, doc


# ------------------------------------------------------------------ running and counting


@dataclass
class Tally:
    tried: Counter = field(default_factory=Counter)
    accepted: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    format: Counter = field(default_factory=Counter)
    crashed: Counter = field(default_factory=Counter)
    false_accepted: Counter = field(default_factory=Counter)
    false_by_claim: Counter = field(default_factory=Counter)  # accepted-and-false, by the false claim's type
    unbound: Counter = field(default_factory=Counter)  # accepted, claims true, closed-form explanation not bound
    unbound_examples: list = field(default_factory=list)
    examples: list = field(default_factory=list)
    crashes: list = field(default_factory=list)

    def add(self, method: str, family: str, outcome: str, false: list, what: str) -> None:
        key = (method, family)
        self.tried[key] += 1
        if outcome == "accepted":
            self.accepted[key] += 1
            unbound = [f for f in false if f[0] == "explanation"]
            false = [f for f in false if f[0] != "explanation"]
            if unbound:  # no claim is false, but the explanation is not what the provenance says it is
                self.unbound[key] += 1
                if len(self.unbound_examples) < 100 and (method, family, what, unbound) not in self.unbound_examples:
                    self.unbound_examples.append((method, family, what, unbound))
            if false:
                self.false_accepted[key] += 1
                for _, why in false:
                    self.false_by_claim[why.split(":")[0]] += 1
                if len(self.examples) < 1000 and (method, family, what, false) not in self.examples:
                    self.examples.append((method, family, what, false))
        elif outcome == "rejected":
            self.rejected[key] += 1
        elif outcome.startswith("format"):
            self.format[key] += 1
        else:
            self.crashed[key] += 1
            if len(self.crashes) < 20:
                self.crashes.append((method, family, what, outcome))

    def table(self, by: int) -> str:
        keys = sorted({k[by] for k in self.tried})
        rows = [f"{'':28s} {'tried':>7s} {'accepted':>9s} {'rejected':>9s} {'format':>7s} {'crash':>6s} {'FALSE-ACC':>9s} {'unbound':>8s}"]
        total = Counter()
        for name in keys:
            sel = lambda c: sum(v for k, v in c.items() if k[by] == name)  # noqa: E731
            vals = [sel(self.tried), sel(self.accepted), sel(self.rejected), sel(self.format), sel(self.crashed),
                    sel(self.false_accepted), sel(self.unbound)]
            for i, v in enumerate(vals):
                total[i] += v
            rows.append(f"{name:28s} " + " ".join(f"{v:>{w}d}" for v, w in zip(vals, (7, 9, 9, 7, 6, 9, 8))))
        rows.append(f"{'TOTAL':28s} " + " ".join(f"{total[i]:>{w}d}" for i, w in enumerate((7, 9, 9, 7, 6, 9, 8))))
        return "\n".join(rows)


class Suite:
    """The cached certificates, one oracle per (model, input), and the tally."""

    def __init__(self, cases: dict[str, Case]) -> None:
        self.cases = cases
        self.oracles: dict[str, Oracle] = {}
        self.tally = Tally()
        self.undetermined = 0  # judgements of fresh oracles (other inputs) the oracle could not make

    def total_undetermined(self) -> int:
        return self.undetermined + sum(o.undetermined for o in self.oracles.values())

    def oracle(self, case: Case) -> Oracle:
        if case.group not in self.oracles:
            same = [c for c in self.cases.values() if c.group == case.group]
            deltas = []
            for c in same:
                for cl in c.doc["claims"]:
                    if cl.get("type") == "flip-witness" and cl.get("kind") == "certified":
                        d = _decode(cl["witness"]["delta"])
                        if d is not None:
                            deltas.append(d)
            x = _decode(case.doc["input"])
            factories = {c.method: c.explainer_factory for c in same}
            self.oracles[case.group] = Oracle(case.model, case.data, x.reshape(1, *case.data.x_test.shape[1:]), factories, deltas)
        return self.oracles[case.group]

    def judge(self, case: Case, doc: dict, report: Any) -> list:
        oracle = self.oracle(case)
        view = doc
        x = _decode(doc.get("input", {}))
        if x is not None and x.numel() == oracle.n and not torch.equal(x.reshape(1, -1), oracle.x):
            fresh = Oracle(case.model, case.data, x.reshape(1, *case.data.x_test.shape[1:]), oracle.factories, [])
            verdict = fresh.judge(view, report, case.method)
            self.undetermined += fresh.undetermined
            return verdict
        return oracle.judge(view, report, case.method)

    def run(self, key: str, family: str, what: str, doc: dict) -> tuple[str, list]:
        case = self.cases[key]
        if doc == case.doc:  # the mutation changed nothing (e.g. a relation set to its own value)
            family = "(no-op)"
        report, outcome = verify_doc(doc, case.model)
        false = self.judge(case, doc, report) if outcome == "accepted" else []
        self.tally.add(case.method if "blobs" not in key else f"{case.method} (blobs)", family, outcome, false, what)
        return outcome, false


def run_mutations(cases: dict[str, Case], n: int, rand: int, suite: "Suite | None" = None) -> "Suite":
    """Run `n` generated mutations (Hypothesis seed `rand`) of the certificates of `cases` through the checker
    and, for the accepted ones, the oracle; returns the suite with its tally (used by the test and the benchmark)."""
    suite = suite if suite is not None else Suite(cases)

    @hseed(rand)
    @settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(mutations(cases))
    def one(mutation):
        suite.run(*mutation)

    one()
    return suite
