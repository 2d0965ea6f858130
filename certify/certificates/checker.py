"""The independent checker: re-checks a certificate against the model without the solver or the
bound-propagation code (it imports neither `certify.explain`, `certify.bounds` nor `certify.attacks`).

What it does (DESIGN section 5, "Certificate checking"):
* recomputes the model hash and the hashes of the input and the explanation;
* re-evaluates witnesses in float64: a flipping perturbation must flip the decision and have the claimed
  norm; the residual at a stored MoreauGrad iterate z is recomputed from one gradient, and the distance of
  the stored explanation from (x - z)/rho enters the solver-error bound;
* re-derives constants from the weights by its own small code: the product-of-norms Lipschitz bound and
  the curvature bounds of softplus networks (symmetric eigensolver, with a rounding margin);
* re-derives relaxation lower bounds on the flipping radius (claim type radius-lower) in exact rational
  arithmetic from the stored slopes and LP multipliers, re-deriving every hidden box (`relaxation_check`);
* re-checks the arithmetic of derived claims (stability from lambda, rho, eps; top-k from the explanation
  and the bound; radius from margins and Lipschitz constants; gaps);
* labels solver-reported claims (MILP optima) as not re-checkable, and estimated claims as estimates.

A claim is valid when its value is no tighter than what the checker re-derives: an upper bound must be
>= the re-derived bound rounded up by `SAFETY` (relative), a lower bound <= the re-derived one rounded
down. The builder writes values with a larger outward margin, so honest certificates pass and any claim
tightened by more than that margin fails.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from certify.certificates.document import Certificate, Claim, decode_array, read_certificate
from certify.certificates.relaxation_check import check_radius_lower
from certify.errors import CertificateFormatError
from certify.models.hashing import model_hash

SAFETY = 1e-12  # relative outward rounding of every re-derived float64 value
SQRT2 = math.sqrt(2.0)


def up(value: float) -> float:
    return value + abs(value) * SAFETY + 1e-300


def down(value: float) -> float:
    return value - abs(value) * SAFETY - 1e-300


@dataclass
class ClaimCheck:
    id: str
    status: str  # "valid", "invalid", "refused" (a refusal, nothing to check), "not re-checkable", "estimate"
    detail: str


@dataclass
class VerifyReport:
    checks: list[ClaimCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # document-level failures (hashes, consistency)

    @property
    def valid(self) -> bool:
        return not self.problems and all(c.status != "invalid" for c in self.checks)

    def failures(self) -> list[str]:
        return self.problems + [f"{c.id}: {c.detail}" for c in self.checks if c.status == "invalid"]


class _Context:
    """What the rules share: the float64 model, the input, the target, the explanation, verified claims."""

    def __init__(self, cert: Certificate, model: nn.Module, base_dir: Path | None) -> None:
        self.cert = cert
        self.model = copy.deepcopy(model).double().eval()
        self.x = torch.as_tensor(decode_array(cert.input, "input", base_dir))
        self.explanation = torch.as_tensor(decode_array(cert.explanation, "explanation", base_dir))
        self.target = cert.target
        self.base_dir = base_dir
        self.claims = {c.id: c for c in cert.claims}
        self.values: dict[str, float] = {}
        self._affine: tuple[list[Tensor], list[nn.Module]] | None = None

    @property
    def affine(self) -> tuple[list[Tensor], list[nn.Module]]:
        """The model's dense affine stages and activations (computed once per certificate)."""
        if self._affine is None:
            self._affine = _affine_maps(self.model, tuple(self.x.shape[1:]))
        return self._affine

    def logits(self, points: Tensor) -> Tensor:
        with torch.no_grad():
            return self.model(points.view(-1, *self.x.shape[1:]))

    def margins(self, point: Tensor) -> Tensor:
        """f_c - f_j for every j != c at one point [1, ...] (float64)."""
        z = self.logits(point)[0]
        others = torch.cat([z[: self.target], z[self.target + 1 :]])
        return z[self.target] - others

    def verified(self, claim_id: str) -> float:
        """The checker's own re-derived (sound) value for claim `claim_id`, computed once: dependents use it,
        not the claimed value, so loosening an assumption never invalidates what rests on it."""
        if claim_id not in self.values:
            dep = self.claims.get(claim_id)
            if dep is None or dep.kind != "certified" or dep.value is None or dep.type not in RULES:
                kind = "missing" if dep is None else dep.kind
                raise _Invalid(f"rests on {claim_id!r}, which is {kind}, not a certified claim")
            rule, relation = RULES[dep.type]
            self.values[claim_id] = _compare(dep, rule(self, dep), relation)[0]
        return self.values[claim_id]

    def assumption(self, claim: Claim, type_: str) -> float:
        """Re-derived value of the assumption of type `type_` that `claim` lists."""
        for a in claim.assumptions:
            dep = self.claims.get(a)
            if dep is not None and dep.type == type_:
                return self.verified(a)
        raise _Invalid(f"no assumption of type {type_!r} listed")

    def array(self, claim: Claim, key: str) -> Tensor:
        try:
            return torch.as_tensor(decode_array(claim.witness[key], f"claim {claim.id} witness {key}", self.base_dir))
        except KeyError:
            raise _Invalid(f"witness {key!r} missing") from None


class _Invalid(Exception):
    """A claim that fails its re-check (the message says why)."""


_SHAPE_ONLY = (nn.Flatten, nn.Identity, nn.Dropout)


def _affine_stages(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[list[Tensor], list[Tensor], list[nn.Module]]:
    """Dense float64 matrices and bias vectors of the affine stages of a Sequential (consecutive affine
    modules merged), and the activations between them: the checker's own small re-implementation. The
    bias is the stage's value at 0; the matrix is a single Linear's weight (exact), else the stage applied
    to the basis minus the bias (exact for float32 weights within 2^29 of their bias in magnitude, else
    within one rounding)."""
    mats: list[Tensor] = []
    biases: list[Tensor] = []
    acts: list[nn.Module] = []
    pending: list[nn.Module] = []
    shape = input_shape
    leaves = [m for m in model.modules() if not isinstance(m, nn.Sequential)]

    def flush() -> None:
        nonlocal shape
        n = int(np.prod(shape))
        chain = nn.Sequential(*pending).double()
        with torch.no_grad():
            basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
            zero = chain(torch.zeros(1, *shape, dtype=torch.float64))
            linear = [m for m in pending if not isinstance(m, _SHAPE_ONLY)]
            if len(linear) == 1 and isinstance(linear[0], nn.Linear):
                mats.append(linear[0].weight.detach().clone())  # exact, no bias to subtract
            else:
                mats.append((chain(basis) - zero).reshape(n, -1).T)
            biases.append(zero.reshape(-1))
            shape = tuple(zero.shape[1:])
        pending.clear()

    for m in leaves:
        if isinstance(m, (nn.ReLU, nn.Softplus)):
            flush()
            acts.append(m)
        else:
            pending.append(copy.deepcopy(m))
    flush()
    return mats, biases, acts


def _affine_maps(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[list[Tensor], list[nn.Module]]:
    """The matrices of `_affine_stages` and the activations (no biases)."""
    mats, _, acts = _affine_stages(model, input_shape)
    return mats, acts


def _spectral_norm(matrix: Tensor) -> float:
    return float(torch.linalg.matrix_norm(matrix, ord=2))


def check_lipschitz_product(ctx: _Context, claim: Claim) -> float:
    """L_p(row . logits) <= ||W_L^T row||_q * prod_k ||W_k||_{p->p}, activations 1-Lipschitz (p = 2 or inf)."""
    p = float(claim.witness["p"])
    row = torch.as_tensor(claim.witness["row"], dtype=torch.float64)
    mats, acts = ctx.affine
    if not all(isinstance(a, (nn.ReLU, nn.Softplus)) and getattr(a, "beta", 1) > 0 for a in acts):
        raise _Invalid("activations are not all 1-Lipschitz")
    head = mats[-1].T @ row
    if p == 2:
        value = float(head.norm(2)) * math.prod(_spectral_norm(w) for w in mats[:-1])
    elif math.isinf(p):
        value = float(head.abs().sum()) * math.prod(float(w.abs().sum(dim=1).max()) for w in mats[:-1])
    else:
        raise _Invalid(f"p = {p} not supported")
    return up(value) * (1 + 1e-10 * len(mats))


def _hessian_eigen_bounds(ctx: _Context, row: Tensor) -> tuple[float, float]:
    """(m, M) with m <= lambda_min(Hess f) and lambda_max(Hess f) <= M on all of R^n, f = row . logits of a
    softplus network (Singla & Feizi 2020, Lemma 1; Theorem 3 for the first-layer term, Theorem 4 for the
    others). Hess f = sum_I J_I^T diag(g_I s''(z_I)) J_I with s'' in [0, b/4], s' in [0, 1]; the g_I are
    bounded by backward interval arithmetic from g_{L-1} = W_L^T row; J_1 = W_1 exactly (eigenvalues of
    W_1^T diag(w) W_1 at the interval ends), ||J_I|| <= prod_k ||W_k|| for I >= 2."""
    mats, acts = ctx.affine
    if not acts or not all(isinstance(a, nn.Softplus) for a in acts):
        raise _Invalid("curvature bounds exist only for softplus networks")
    g_lo = g_hi = mats[-1].T @ row
    terms: list[tuple[Tensor, Tensor]] = [None] * len(acts)  # type: ignore[list-item]
    for idx in range(len(acts) - 1, -1, -1):
        b = float(acts[idx].beta) / 4
        terms[idx] = (torch.clamp(g_lo, max=0) * b, torch.clamp(g_hi, min=0) * b)
        if idx > 0:
            lo, hi = torch.clamp(g_lo, max=0), torch.clamp(g_hi, min=0)  # times s' in [0, 1]
            w = mats[idx]
            g_lo = w.clamp(min=0).T @ lo + w.clamp(max=0).T @ hi
            g_hi = w.clamp(min=0).T @ hi + w.clamp(max=0).T @ lo
    w1 = mats[0]
    # forming W^T diag(d) W and its symmetric eigendecomposition are backward stable: their errors are below
    # n u ||W||_F^2 max|d| (n <= 1e4 here), far inside the 1e-11 relative slack used
    scale = float(torch.linalg.matrix_norm(w1)) ** 2 * float(torch.maximum(terms[0][0].abs(), terms[0][1].abs()).max())
    low = float(torch.linalg.eigvalsh(w1.T @ torch.diag(terms[0][0]) @ w1)[0]) - 1e-11 * scale
    high = float(torch.linalg.eigvalsh(w1.T @ torch.diag(terms[0][1]) @ w1)[-1]) + 1e-11 * scale
    jac = _spectral_norm(w1)
    for idx in range(1, len(acts)):
        jac *= _spectral_norm(mats[idx])
        low += float(terms[idx][0].min()) * up(jac) ** 2
        high += float(terms[idx][1].max()) * up(jac) ** 2
    return down(low), up(high)


def check_weak_convexity(ctx: _Context, claim: Claim) -> float:
    """row . f is lambda-weakly convex with lambda = max(0, -m)."""
    low, _ = _hessian_eigen_bounds(ctx, torch.as_tensor(claim.witness["row"], dtype=torch.float64))
    return up(max(0.0, -low))


def check_curvature(ctx: _Context, claim: Claim) -> float:
    """||Hess(row . f)|| <= beta = max(M, -m, 0)."""
    low, high = _hessian_eigen_bounds(ctx, torch.as_tensor(claim.witness["row"], dtype=torch.float64))
    return up(max(high, -low, 0.0))


def _residual(ctx: _Context, z: Tensor, rho: float, sparsity: float, group_size: int | None) -> float:
    """Minimal-norm subgradient of F_x at z (DESIGN 4.1), recomputed here from one float64 gradient."""
    z = z.clone().requires_grad_(True)
    score = ctx.model(z)[0, ctx.target]
    (grad,) = torch.autograd.grad(score, z)
    u = (z - ctx.x).detach()
    g = grad + u / rho
    if sparsity == 0:
        r = g
    elif group_size is None:
        r = torch.where(u != 0, g + sparsity * torch.sign(u), torch.sign(g) * torch.clamp(g.abs() - sparsity, min=0))
    else:
        r = _group_residual(g, u, sparsity, group_size)
    return float(r.norm())


def _groups(t: Tensor, group_size: int) -> Tensor:
    """[1, ...] -> [groups, members]: g x g spatial patches across channels for images, else blocks."""
    if t.dim() == 4:
        _, c, h, w = t.shape
        s = group_size
        return t.reshape(c, h // s, s, w // s, s).permute(1, 3, 0, 2, 4).reshape((h // s) * (w // s), c * s * s)
    return t.reshape(-1, group_size)


def _group_residual(g: Tensor, u: Tensor, eta: float, group_size: int) -> Tensor:
    gg, uu = _groups(g, group_size), _groups(u, group_size)
    un, gn = uu.norm(dim=1, keepdim=True), gg.norm(dim=1, keepdim=True)
    active = gg + eta * uu / un.clamp_min(1e-300)
    inactive = gg * torch.clamp(1 - eta / gn.clamp_min(1e-300), min=0)
    return torch.where(un > 0, active, inactive)


def check_solver_error(ctx: _Context, claim: Claim) -> float:
    """||a - MG_exact||_2 <= ||r|| / (1 - rho lambda) + ||a - (x - z)/rho||: r recomputed at the stored
    iterate z, the second term the rounding of the stored explanation a against (x - z)/rho."""
    w = claim.witness
    rho, eta = float(w["rho"]), float(w.get("sparsity", 0.0))
    lam = ctx.assumption(claim, "weak-convexity")
    if not rho * lam < 1:
        raise _Invalid(f"rho * lambda = {rho * lam} >= 1: no bound exists")
    z = ctx.array(claim, "z").view_as(ctx.x)
    rounding = float(((ctx.x - z) / rho - ctx.explanation).norm())
    r = _residual(ctx, z, rho, eta, w.get("group_size"))
    return up(up(r) / down(1 - rho * lam) + up(rounding))


def check_smoothed_weak_convexity(ctx: _Context, claim: Claim) -> float:
    """Proposition 1, sharpened by Stein's lemma: h = E f(. + sigma Z) has ||Hess h|| <= sqrt(2/pi) L / sigma."""
    return up(math.sqrt(2.0 / math.pi) * up(ctx.assumption(claim, "lipschitz-product")) / down(float(claim.witness["sigma"])))


def check_stability_vanilla(ctx: _Context, claim: Claim) -> float:
    """sup_{||d|| <= eps} ||MG(x+d) - MG(x)|| <= eps/min(rho, 1/lambda - rho) + (||r|| + tol)/(1 - rho lambda)."""
    w = claim.witness
    eps, rho, tol = float(w["eps"]), float(w["rho"]), float(w["tol"])
    lam = ctx.assumption(claim, "weak-convexity")
    err = ctx.assumption(claim, "solver-error")
    if not rho * lam < 1:
        raise _Invalid("rho * lambda >= 1")
    inv = 1.0 / lam - rho if lam > 0 else math.inf
    bound = up(eps / down(min(rho, inv))) + err + up(tol / down(1 - rho * lam))
    return up(bound)


def check_stability_sparse(ctx: _Context, claim: Claim) -> float:
    """Corrected Corollary 2: beta eps / (1 - rho beta) + solver terms, with beta certified and rho beta < 1."""
    w = claim.witness
    eps, rho, tol = float(w["eps"]), float(w["rho"]), float(w["tol"])
    beta = ctx.assumption(claim, "curvature")
    lam = ctx.assumption(claim, "weak-convexity")
    err = ctx.assumption(claim, "solver-error")
    if not rho * beta < 1:
        raise _Invalid("rho * beta >= 1")
    bound = up(beta * eps / down(1 - rho * beta)) + err + up(tol / down(1 - rho * lam))
    return up(bound)


def check_stability_gradient(ctx: _Context, claim: Claim) -> float:
    """||grad f(x + d) - grad f(x)|| <= beta eps for a beta-smooth score."""
    beta = ctx.assumption(claim, "curvature")
    return up(beta * float(claim.witness["eps"]))


def check_topk(ctx: _Context, claim: Claim) -> float:
    """Feature i stays in the top-k by |a| under any change of norm <= B if |a_i| - |a_(k+1)| > sqrt(2) B
    (ties broken against i); their count / k lower-bounds the top-k intersection ratio."""
    k = int(claim.witness["k"])
    bound = ctx.verified(claim.witness["bound"])
    mags = ctx.explanation.abs().flatten().sort(descending=True).values
    if not 0 < k < mags.numel():
        raise _Invalid(f"k = {k} out of range")
    kept = int((mags[:k] - mags[k] > up(SQRT2 * bound)).sum())
    return kept / k


def check_flip_witness(ctx: _Context, claim: Claim) -> float:
    """r* <= ||delta||_p: x + delta (inside the domain, if one is stated) is classified differently."""
    delta = ctx.array(claim, "delta").view_as(ctx.x)
    p = float(claim.witness["p"])
    point = ctx.x + delta
    if "domain" in claim.witness:
        lo, hi = (torch.as_tensor(v, dtype=torch.float64) for v in claim.witness["domain"])
        if bool((point < lo).any() or (point > hi).any()):
            raise _Invalid("x + delta leaves the input domain")
    if float(ctx.margins(point).min()) >= 0:
        raise _Invalid("x + delta does not change the decision (margin >= 0 in float64)")
    return up(float(delta.flatten().norm(p)))


def check_lipschitz_radius(ctx: _Context, claim: Claim) -> float:
    """r* >= min_j m_cj(x) / L_j, with L_j the product-of-norms Lipschitz constant of m_cj re-derived here:
    in l2 for p = 2 (and for p = 1, since ||d||_2 <= ||d||_1), in l-inf (dual l1 head) for p = inf."""
    constants = claim.witness["lipschitz"]
    p = float(claim.witness["p"])
    if p not in (1.0, 2.0, math.inf):
        raise _Invalid(f"p = {p} not supported")
    q = 1.0 if math.isinf(p) else 2.0
    mats, _ = ctx.affine
    margins = ctx.margins(ctx.x)
    if float(margins.min()) <= 0:
        return 0.0
    others = [j for j in range(mats[-1].shape[0]) if j != ctx.target]
    radii = []
    for m, j, claimed_l in zip(margins, others, constants):
        row = torch.zeros(mats[-1].shape[0], dtype=torch.float64)
        row[ctx.target], row[j] = 1.0, -1.0
        head = mats[-1].T @ row
        if q == 2:
            bound = float(head.norm(2)) * math.prod(_spectral_norm(w) for w in mats[:-1])
        else:  # p = inf: |m(x) - m(y)| <= ||W_L^T row||_1 prod ||W_k||_inf ||x - y||_inf
            bound = float(head.abs().sum()) * math.prod(float(w.abs().sum(dim=1).max()) for w in mats[:-1])
        bound = up(bound) * (1 + 1e-10 * len(mats))
        if claimed_l < bound * (1 - 1e-9):
            raise _Invalid(f"Lipschitz constant for class {j} claimed {claimed_l:.6g} < re-derived {bound:.6g}")
        radii.append(down(float(m)) / bound)
    return down(min(radii))


def check_gap(ctx: _Context, claim: Claim) -> float:
    """gap = upper - lower of two listed claims on the same quantity (their re-derived values)."""
    upper, lower = ctx.verified(claim.witness["upper"]), ctx.verified(claim.witness["lower"])
    if lower > upper:
        raise _Invalid(f"lower bound {lower} exceeds upper bound {upper}")
    return up(upper - lower)


def _compare(claim: Claim, rederived: float, relation: str) -> tuple[float, str]:
    """Accept the claim if it is no tighter than the re-derived value; returns (re-derived, message)."""
    if claim.relation != relation:
        raise _Invalid(f"relation {claim.relation!r} where {relation!r} is expected")
    if relation == "<=" and not claim.value >= rederived:
        raise _Invalid(f"claimed {claim.value:.10g} is below the re-derived upper bound {rederived:.10g}")
    if relation == ">=" and not claim.value <= rederived:
        raise _Invalid(f"claimed {claim.value:.10g} is above the re-derived lower bound {rederived:.10g}")
    word = ">=" if relation == "<=" else "<="
    return rederived, f"claimed {claim.value:.6g} {word} re-derived {rederived:.6g}"


RULES: dict[str, tuple[Callable[[_Context, Claim], float], str]] = {
    "lipschitz-product": (check_lipschitz_product, "<="),
    "weak-convexity": (check_weak_convexity, "<="),
    "curvature": (check_curvature, "<="),
    "solver-error": (check_solver_error, "<="),
    "smoothed-weak-convexity": (check_smoothed_weak_convexity, "<="),
    "stability-vanilla": (check_stability_vanilla, "<="),
    "stability-sparse": (check_stability_sparse, "<="),
    "stability-gradient": (check_stability_gradient, "<="),
    "topk-stability": (check_topk, ">="),
    "flip-witness": (check_flip_witness, "<="),
    "lipschitz-radius": (check_lipschitz_radius, ">="),
    "gap": (check_gap, "<="),
    "radius-lower": (check_radius_lower, ">="),
}


def verify_certificate(cert: Certificate, model: nn.Module, base_dir: Path | None = None) -> VerifyReport:
    """Re-check every claim of `cert` against `model` (the model must hash to the recorded value)."""
    report = VerifyReport()
    recorded = cert.provenance.get("model", {}).get("sha256")
    actual = model_hash(model)
    if recorded != actual:
        report.problems.append(f"model hash {actual[:16]}… differs from the certificate's {str(recorded)[:16]}…")
        return report
    ctx = _Context(cert, model, base_dir)
    if not 0 <= cert.target < ctx.logits(ctx.x).shape[1]:
        raise CertificateFormatError(f"target {cert.target} out of range for the model")
    for claim in cert.claims:
        if claim.kind == "refused":
            report.checks.append(ClaimCheck(claim.id, "refused", claim.reason or ""))
        elif claim.kind == "solver-reported":
            report.checks.append(ClaimCheck(claim.id, "not re-checkable", "solver-reported optimum (MIP gap and tolerances recorded)"))
        elif claim.kind == "probabilistic":
            report.checks.append(ClaimCheck(claim.id, "not re-checkable", f"probabilistic (Monte Carlo) claim, confidence {claim.confidence}"))
        elif claim.kind == "estimated":
            report.checks.append(ClaimCheck(claim.id, "estimate", "an estimate, no guarantee"))
        elif claim.type not in RULES:
            report.checks.append(ClaimCheck(claim.id, "invalid", f"no re-check rule for claim type {claim.type!r}"))
        else:
            try:
                rule, relation = RULES[claim.type]
                ctx.values[claim.id], message = _compare(claim, rule(ctx, claim), relation)
                report.checks.append(ClaimCheck(claim.id, "valid", message))
            except _Invalid as exc:
                report.checks.append(ClaimCheck(claim.id, "invalid", str(exc)))
            except (KeyError, TypeError, ValueError) as exc:
                raise CertificateFormatError(f"claim {claim.id!r}: malformed witness: {exc!r}") from exc
    return report


def verify_file(path: Path, model_spec: str | None = None) -> VerifyReport:
    """Read a certificate file, load its model (or `model_spec`) and verify it."""
    from certify.errors import UnsupportedError
    from certify.models.spec import load_model

    cert = read_certificate(path)
    spec = model_spec or cert.provenance.get("model", {}).get("spec")
    if not spec:
        raise CertificateFormatError("the certificate names no model and no --model was given")
    try:
        model, _ = load_model(spec)
    except UnsupportedError as exc:
        raise CertificateFormatError(f"cannot load the model {spec!r}: {exc}") from exc
    return verify_certificate(cert, model, Path(path).parent)
