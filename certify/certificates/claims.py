"""Claims as structured statements (DESIGN section 10; issue 10, item 2).

A claim is typed data: `type` (a key of `CLAIM_TYPES`), `params` (every parameter of the statement:
target class, norm p, eps, rho, tol, k, sigma, domain, confidence, ...), `relation`, `value`, `kind`,
`assumptions` (ids of the claims it rests on), `witness` (evidence only: iterates, perturbations, slopes,
multipliers, seeds, sample counts) and `statement`, the human-readable text RENDERED from type and params
by `render` (never typed by hand, never parsed back). The registry below fixes, per type:

* the relation of `value` to the quantity (`<=` upper bound, `>=` lower bound, `==` exact);
* the kinds a claim of the type may have (a probabilistic Lipschitz constant is not a thing);
* the parameter names, each with its validator (`validate_claim` range-checks all of them);
* the range of `value` (finite, and e.g. a top-k ratio in [0, 1]);
* the assumption TYPES it must rest on (`required_assumptions(params)`: slots of alternatives);
* the statement template; the witness keys allowed.

This module is part of the checker's trusted base: it imports only the stdlib, numpy and `certify.vocabulary`.
Property claims (`property-holds`, `property-violated`) carry the input box and the counterexample formula
as inline array records in params (validated against their sha256 here).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from certify.vocabulary import KINDS, Domain, Kind, norm_name, round_down, round_up  # Kind: one definition

RELATIONS = ("<=", ">=", "==")

# The certificate's `function.description`: what every claim is about (DESIGN section 10). Fixed text, checked
# by the checker, so that the description a reader sees cannot be edited into a different promise.
FUNCTION_DESCRIPTION = (
    "N: the model's traced graph as dense affine maps (a layer may also add affine maps of earlier layers' "
    "outputs: skip terms) and elementwise activations, evaluated in "
    "exact arithmetic with exact softplus log(1 + exp(beta t))/beta (torch's threshold switch to the identity "
    "is not part of N; its effect on the logits is bounded by the implementation-deviation claim). Every "
    "claim is about N (and about the model where its statement says so)."
)


class ClaimError(ValueError):
    """A claim that is not a well-formed statement of its type (parameter, value, kind, witness, text)."""


@dataclass
class Claim:
    id: str
    type: str
    params: dict[str, Any]
    relation: str
    value: float | None
    kind: str
    method: str
    assumptions: list[str] = field(default_factory=list)
    witness: dict[str, Any] = field(default_factory=dict)
    confidence: float | None = None
    reason: str | None = None
    statement: str = ""


# ------------------------------------------------------------------ parameter validators
# Each takes (value, n_features, n_classes) and raises ClaimError with the reason.

Validator = Callable[[Any, int, int], None]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _target(v: Any, n: int, classes: int) -> None:
    if not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < classes):
        raise ClaimError(f"target {v!r} is not a class index in [0, {classes})")


def _positive(name: str) -> Validator:
    def check(v: Any, n: int, classes: int) -> None:
        if not (_number(v) and math.isfinite(v) and v > 0):
            raise ClaimError(f"{name} = {v!r} must be a finite number > 0")
    return check


def _nonnegative(name: str) -> Validator:
    def check(v: Any, n: int, classes: int) -> None:
        if not (_number(v) and math.isfinite(v) and v >= 0):
            raise ClaimError(f"{name} = {v!r} must be a finite number >= 0")
    return check


def _optional(check: Validator) -> Validator:
    def wrapped(v: Any, n: int, classes: int) -> None:
        if v is not None:
            check(v, n, classes)
    return wrapped


def _norm(allowed: tuple[Any, ...] = (1, 2, "inf")) -> Validator:
    def check(v: Any, n: int, classes: int) -> None:
        if isinstance(v, bool) or v not in allowed:
            raise ClaimError(f"norm p = {v!r} must be one of {list(allowed)} (JSON spelling)")
    return check


def _k(v: Any, n: int, classes: int) -> None:
    if not (isinstance(v, int) and not isinstance(v, bool) and 1 <= v < n):
        raise ClaimError(f"k = {v!r} must be an integer in [1, {n})")


def _confidence(v: Any, n: int, classes: int) -> None:
    if not (_number(v) and 0 < v < 1):
        raise ClaimError(f"confidence = {v!r} must lie in (0, 1)")


def _group_size(v: Any, n: int, classes: int) -> None:
    if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= n):
        raise ClaimError(f"group_size = {v!r} must be null or an integer in [1, {n}]")


def _domain(v: Any, n: int, classes: int) -> None:
    if v is None:
        return
    try:
        Domain.from_json(v)
    except Exception as exc:  # noqa: BLE001 - any failure to read the box is a malformed parameter
        raise ClaimError(f"domain {str(v)[:80]} is not a valid box: {exc}") from None


def _record(v: Any, where: str) -> Any:
    """The float64 array of an inline array record (document.py's format), or ClaimError. The record's hash
    is checked; sidecars are not allowed in params (a statement's parameters travel with its text)."""
    if not (isinstance(v, dict) and set(v) == {"shape", "sha256", "values"} and isinstance(v["shape"], list)):
        raise ClaimError(f"{where} must be an inline array record {{shape, sha256, values}}")
    try:
        a = np.asarray(v["values"], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ClaimError(f"{where}: values are not an array of numbers ({exc})") from None
    if list(a.shape) != list(v["shape"]) or not np.isfinite(a).all():
        raise ClaimError(f"{where}: values are not finite numbers of shape {v['shape']}")
    if array_sha256(a) != v["sha256"]:
        raise ClaimError(f"{where}: values do not match their sha256")
    return a


def array_sha256(array: Any) -> str:
    """The hash of a float64 array as certificates record it: sha256 of its shape's text and its bytes."""
    a = np.ascontiguousarray(array, dtype=np.float64)
    return hashlib.sha256(str(a.shape).encode() + a.tobytes()).hexdigest()


def _box_side(name: str) -> Validator:
    def check(v: Any, n: int, classes: int) -> None:
        a = _record(v, name)
        if a.shape != (n,):
            raise ClaimError(f"{name} has shape {list(a.shape)}; the property has {n} inputs")
    return check


def _conjunctions(v: Any, n: int, classes: int) -> None:
    if not (isinstance(v, list) and v):
        raise ClaimError("conjunctions must be a non-empty list of {C, d}")
    for i, conj in enumerate(v):
        if not (isinstance(conj, dict) and set(conj) == {"C", "d"}):
            raise ClaimError(f"conjunctions[{i}] must be an object with exactly C and d")
        c, d = _record(conj["C"], f"conjunctions[{i}].C"), _record(conj["d"], f"conjunctions[{i}].d")
        if c.ndim != 2 or c.shape[1] != classes or c.shape[0] < 1 or d.shape != (c.shape[0],):
            raise ClaimError(f"conjunctions[{i}]: C must be [r >= 1, {classes}] and d [r], got {list(c.shape)} and {list(d.shape)}")


def _counterexample(v: Any, n: int, classes: int) -> None:
    if _record(v, "counterexample").shape != (n,):
        raise ClaimError(f"counterexample must have shape [{n}]")


def _property_consistent(q: dict[str, Any]) -> None:
    if bool((_record(q["lower"], "lower") > _record(q["upper"], "upper")).any()):
        raise ClaimError("the input box is empty: some lower bound exceeds its upper bound")


def _choice(name: str, options: tuple[str, ...]) -> Validator:
    def check(v: Any, n: int, classes: int) -> None:
        if v not in options:
            raise ClaimError(f"{name} = {v!r} must be one of {list(options)}")
    return check


# ------------------------------------------------------------------ rendering helpers

def _num(v: Any) -> str:
    """A parameter as text: exact (repr of the float64), so two different values never render alike."""
    if v is None:
        return "none"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _p(v: Any) -> str:
    return "inf" if v == "inf" else norm_name(float(v))


def _domain_text(v: Any) -> str:
    return "" if v is None else " with x + delta inside the domain box params.domain"


def _function(params: dict[str, Any]) -> str:
    sigma = params.get("sigma")
    c = params["target"]
    return f"N_{c}" if sigma is None else f"h = E N_{c}(. + {_num(sigma)} Z), Z ~ N(0, I),"


def _confidence_text(params: dict[str, Any]) -> str:
    conf = params.get("confidence")
    return "" if conf is None else f", with probability >= {_num(conf)} over the solver's Monte Carlo samples"


def _moreau_text(params: dict[str, Any]) -> str:
    region = ("; curvature constants on B(x, eps + rho L), L the lipschitz claim's value (lemma MG-LOC)"
              if params.get("region") == "local" else "")
    return (f"rho = {_num(params['rho'])}, sparsity = {_num(params['sparsity'])}, "
            f"group size = {_num(params['group_size'])}{region}")


def _property_text(q: dict[str, Any]) -> str:
    conj = q["conjunctions"]
    rows = sum(len(c["d"]["values"]) for c in conj)
    return (f"the box params.lower <= x <= params.upper ({len(q['lower']['values'])} inputs; sha256 "
            f"{q['lower']['sha256'][:16]}, {q['upper']['sha256'][:16]}) and the counterexample formula OR_i "
            f"(C_i y <= d_i) of params.conjunctions ({len(conj)} conjunctions, {rows} rows; sha256 "
            + ", ".join(f"{c['C']['sha256'][:16]}/{c['d']['sha256'][:16]}" for c in conj) + ")")


# ------------------------------------------------------------------ the registry

Slots = tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class ClaimType:
    name: str
    relation: str
    kinds: frozenset[str]
    params: dict[str, Validator]
    render: Callable[[dict[str, Any]], str]
    witness: frozenset[str] = frozenset()
    required_witness: Callable[[dict[str, Any], str], frozenset[str]] = lambda params, kind: frozenset()
    value_range: tuple[float, float] = (0.0, math.inf)
    assumptions: Callable[[dict[str, Any]], Slots] = lambda params: ()
    consistent: Callable[[dict[str, Any]], None] = lambda params: None  # cross-parameter rules

    @property
    def about_target(self) -> bool:
        return "target" in self.params

    @property
    def radius(self) -> bool:
        return self.name in RADIUS_TYPES


_T = {"target": _target}
_RADIUS = {**_T, "p": _norm(), "domain": _domain}
_BOUNDED = frozenset({Kind.CERTIFIED.value, Kind.REFUSED.value})
_MOREAU = {**_T, "rho": _positive("rho"), "sparsity": _nonnegative("sparsity"), "group_size": _group_size,
           "sigma": _optional(_positive("sigma")), "confidence": _optional(_confidence),
           "region": _choice("region", ("global", "local"))}
# the ball B(x, radius) around the certificate's input a curvature claim holds on (null: all of R^n)
_CURV = {**_T, "radius": _optional(_positive("radius"))}


QUADRATURES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def _n_steps(v: Any, n: int, classes: int) -> None:
    if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 100_000):
        raise ClaimError(f"n_steps = {v!r} must be null or an integer in [1, 100000]")


def _baseline(v: Any, n: int, classes: int) -> None:
    if v is not None and not (_number(v) and math.isfinite(v)):
        raise ClaimError(f"baseline = {v!r} must be null or a finite number")


def _explanation_error_consistent(q: dict[str, Any]) -> None:
    ig = q["method"] == "integrated-gradients"
    given = [q["quadrature"] is not None, q["n_steps"] is not None, q["baseline"] is not None]
    if ig and not all(given):
        raise ClaimError("an integrated-gradients explanation error states its quadrature, n_steps and baseline")
    if not ig and any(given):
        raise ClaimError("a gradient explanation error has no quadrature, n_steps or baseline")
    if q["quadrature"] == "riemann_trapezoid" and q["n_steps"] < 2:
        raise ClaimError("the trapezoid rule needs n_steps >= 2")


def _explanation_text(q: dict[str, Any]) -> str:
    c = q["target"]
    if q["method"] == "gradient":
        return f"grad N_{c}(x)"
    return (f"(x - x') * sum_k w_k grad N_{c}(x' + a_k (x - x')), the {q['n_steps']}-point {q['quadrature']} rule "
            f"(nodes a_k and weights w_k in float64 as numpy computes them) with baseline x' = {_num(q['baseline'])}")


def _local(params: dict[str, Any]) -> Slots:
    """The l2 Lipschitz claim a local constant rests on: its region B(x, eps + rho L) (lemma MG-LOC)."""
    return (("lipschitz",),) if params.get("region") == "local" else ()


def _solver_error_assumptions(params: dict[str, Any]) -> Slots:
    if params.get("sigma") is None:
        return (("weak-convexity",),) + _local(params)
    return (("smoothed-weak-convexity",), ("lipschitz",))


def _stability_moreau_assumptions(params: dict[str, Any]) -> Slots:
    if params.get("sigma") is not None:  # Proposition 1 bounds h's curvature on both sides
        return (("smoothed-weak-convexity",), ("solver-error",))
    return (("weak-convexity",), ("curvature",), ("solver-error",)) + _local(params)


def _moreau_consistent(q: dict[str, Any]) -> None:
    if q["region"] == "local" and q["sigma"] is not None:
        raise ClaimError("smoothed MoreauGrad uses Proposition 1's global constant: its region is 'global'")


def _where(q: dict[str, Any]) -> str:
    return "on R^n" if q["radius"] is None else f"on the ball ||y - x||_2 <= {_num(q['radius'])} (x the input)"


def _solver_error_witness(params: dict[str, Any], kind: str) -> frozenset[str]:
    if kind == Kind.REFUSED.value:
        return frozenset()
    if params.get("sigma") is not None:
        return frozenset({"z", "samples", "seed"})
    return frozenset({"z", "radii"}) if params.get("region") == "local" else frozenset({"z"})


def _local_witness(params: dict[str, Any], kind: str) -> frozenset[str]:
    """The radii r_0 >= ... of the balls holding the prox points (certify.bounds.local.prox_region) of a claim
    with local constants."""
    return frozenset({"radii"}) if kind != Kind.REFUSED.value and params.get("region") == "local" else frozenset()


_TYPES = [
    ClaimType(
        "implementation-deviation", "<=", _BOUNDED, {},
        lambda q: ("sup over all x of max_j |T_j(x) - N_j(x)| <= value, where T is the model's traced graph in exact "
                   "arithmetic with torch's thresholded softplus (the identity where beta t > threshold) and N the same "
                   "graph with exact softplus, the function every other claim is about (floating-point rounding of "
                   "the model as run is not part of T; the conformance check in `function` measures it)"),
    ),
    ClaimType(
        "lipschitz", "<=", _BOUNDED, {**_T, "p": _norm((2, "inf"))},
        lambda q: f"|N_{q['target']}(x) - N_{q['target']}(y)| <= value * ||x - y||_{_p(q['p'])} for all x, y",
    ),
    ClaimType(
        "weak-convexity", "<=", _BOUNDED, dict(_CURV),
        lambda q: f"N_{q['target']}(y) + value/2 * ||y||_2^2 is convex {_where(q)}",
    ),
    ClaimType(
        "curvature", "<=", _BOUNDED, dict(_CURV),
        lambda q: f"||Hess N_{q['target']}(y)||_2 <= value for all y {_where(q)}",
    ),
    ClaimType(
        "smoothed-weak-convexity", "<=", _BOUNDED, {**_T, "sigma": _positive("sigma")},
        lambda q: (f"h = E N_{q['target']}(. + {_num(q['sigma'])} Z), Z ~ N(0, I), has ||Hess h(x)||_2 <= value "
                   "for all x, so h is value-weakly convex (Proposition 1: sqrt(2/pi) L / sigma, L the l2 Lipschitz "
                   "constant of the lipschitz claim)"),
        assumptions=lambda q: (("lipschitz",),),
    ),
    ClaimType(
        "explanation-error", "<=", _BOUNDED,
        {**_T, "method": _choice("method", ("gradient", "integrated-gradients")),
         "quadrature": _optional(_choice("quadrature", QUADRATURES)), "n_steps": _n_steps, "baseline": _baseline},
        lambda q: (f"||a - E(x)||_2 <= value, a the stored explanation and E(x) the exact {q['method']} "
                   f"explanation of N_{q['target']} at x: {_explanation_text(q)}"),
        consistent=_explanation_error_consistent,
    ),
    ClaimType(
        "smoothed-explanation-error", "<=", frozenset({Kind.PROBABILISTIC.value, Kind.REFUSED.value}),
        {**_T, "sigma": _positive("sigma"), "confidence": _confidence},
        lambda q: (f"||a - grad h(x)||_2 <= value, a the stored explanation and h = E N_{q['target']}(. + "
                   f"{_num(q['sigma'])} Z), Z ~ N(0, I), with probability >= {_num(q['confidence'])} over the "
                   "Monte Carlo draw the witness's seed and sample count reproduce"),
        witness=frozenset({"samples", "seed"}),
        required_witness=lambda q, kind: frozenset({"samples", "seed"}) if kind != "refused" else frozenset(),
        assumptions=lambda q: (("lipschitz",),),
    ),
    ClaimType(
        "solver-error", "<=", frozenset({Kind.CERTIFIED.value, Kind.PROBABILISTIC.value, Kind.REFUSED.value}), _MOREAU,
        lambda q: (f"||a - MG(x)||_2 <= value, a the stored explanation and MG(x) the exact MoreauGrad explanation of "
                   f"{_function(q)} at x ({_moreau_text(q)}){_confidence_text(q)}"),
        witness=frozenset({"z", "samples", "seed", "radii"}), required_witness=_solver_error_witness,
        assumptions=_solver_error_assumptions, consistent=_moreau_consistent,
    ),
    ClaimType(
        "stability-gradient", "<=", _BOUNDED, {**_T, "eps": _positive("eps")},
        lambda q: (f"||grad N_{q['target']}(x + d) - a||_2 <= value for every ||d||_2 <= {_num(q['eps'])} "
                   "(a the stored explanation)"),
        assumptions=lambda q: (("curvature",), ("explanation-error",)),
    ),
    ClaimType(
        "stability-moreaugrad", "<=", frozenset({Kind.CERTIFIED.value, Kind.PROBABILISTIC.value, Kind.REFUSED.value}),
        {**_MOREAU, "eps": _positive("eps"), "tol": _nonnegative("tol")},
        lambda q: (f"||b - a||_2 <= value for every ||d||_2 <= {_num(q['eps'])} and every MoreauGrad explanation b "
                   f"of {_function(q)} at x + d computed to residual <= {_num(q['tol'])} ({_moreau_text(q)}; a the "
                   f"stored explanation){_confidence_text(q)}"),
        assumptions=_stability_moreau_assumptions, consistent=_moreau_consistent,
        witness=frozenset({"radii"}), required_witness=_local_witness,
    ),
    ClaimType(
        "stability-none", "<=", frozenset({Kind.REFUSED.value}), {**_T, "eps": _positive("eps")},
        lambda q: f"||a(x + d) - a(x)||_2 <= value for every ||d||_2 <= {_num(q['eps'])}",
    ),
    ClaimType(
        "topk-stability", ">=", _BOUNDED, {**_T, "k": _k, "eps": _positive("eps")},
        lambda q: (f"every b with ||b - a||_2 <= B, B the value of the stability claim (which bounds the explanation "
                   f"at x + d for every ||d||_2 <= {_num(q['eps'])}), keeps at least value * {q['k']} of the "
                   f"top-{q['k']} features of a by |a| in its own top-{q['k']} (ties counted against)"),
        value_range=(0.0, 1.0),
        assumptions=lambda q: (("stability-gradient", "stability-moreaugrad"),),
    ),
    ClaimType(
        "flip-witness", "<=", _BOUNDED, dict(_RADIUS),
        lambda q: (f"r*_{_p(q['p'])}(x) <= value: x + delta with ||delta||_{_p(q['p'])} <= value{_domain_text(q['domain'])} "
                   f"is classified differently from class {q['target']} by the model as run (its own dtype) and by N "
                   "in float64"),
        witness=frozenset({"delta"}), required_witness=lambda q, kind: frozenset({"delta"}) if kind != "refused" else frozenset(),
    ),
    ClaimType(
        "lipschitz-radius", ">=", _BOUNDED, dict(_RADIUS),
        lambda q: (f"r*_{_p(q['p'])}(x) >= value: no delta with ||delta||_{_p(q['p'])} <= value"
                   f"{_domain_text(q['domain'])} changes N's decision from class {q['target']} "
                   "(margins over global Lipschitz constants)"),
    ),
    ClaimType(
        "radius-lower", ">=", _BOUNDED, {**_RADIUS, "relaxation": _choice("relaxation", ("crown", "lp"))},
        lambda q: (f"r*_{_p(q['p'])}(x) >= value: no delta with ||delta||_{_p(q['p'])} <= value"
                   f"{_domain_text(q['domain'])} changes N's decision from class {q['target']} "
                   f"({q['relaxation']} relaxation)"),
        witness=frozenset({"alphas", "tightening", "final", "radius"}),
        required_witness=lambda q, kind: frozenset({"alphas"}) if kind != "refused" else frozenset(),
    ),
    ClaimType(
        "exact-radius", "==", frozenset({Kind.SOLVER_REPORTED.value, Kind.REFUSED.value}), dict(_RADIUS),
        lambda q: (f"r*_{_p(q['p'])}(x) == value{_domain_text(q['domain'])} for N and class {q['target']} "
                   "(MILP optimum, solver-reported)"),
        witness=frozenset({"solver", "tolerances", "status"}),
    ),
    ClaimType(
        "gap", "<=", _BOUNDED, dict(_RADIUS),
        lambda q: (f"(the value of the flip-witness claim) - (the value of the certified lower bound it lists) <= value: "
                   f"the width of the bracket on r*_{_p(q['p'])}(x){_domain_text(q['domain'])} for class {q['target']}"),
        assumptions=lambda q: (("flip-witness",), ("lipschitz-radius", "radius-lower")),
    ),
]

_PROPERTY = {"lower": _box_side("lower"), "upper": _box_side("upper"), "conjunctions": _conjunctions}
# the smallest positive float64: a holds claim states a bound > 0, never 0
_POSITIVE = (5e-324, math.inf)

_TYPES += [
    ClaimType(
        "property-holds", ">=", _BOUNDED, dict(_PROPERTY),
        lambda q: (f"for every x in {_property_text(q)}, N(x) satisfies no conjunction: min over x in the box and "
                   "over i of max_r (C_i N(x) - d_i)_r >= value > 0, so the property holds for N (VNN-LIB: unsat)"),
        witness=frozenset({"format", "unstable", "root_alphas", "conjunctions"}),
        required_witness=lambda q, kind: (frozenset({"format", "unstable", "root_alphas", "conjunctions"})
                                          if kind != "refused" else frozenset()),
        value_range=_POSITIVE, consistent=_property_consistent,
    ),
    ClaimType(
        "property-violated", ">=", _BOUNDED, {**_PROPERTY, "counterexample": _counterexample},
        lambda q: (f"the point params.counterexample (sha256 {q['counterexample']['sha256'][:16]}) lies in "
                   f"{_property_text(q)}, and both the model as run (its own dtype) and N (float64, exactly) map it "
                   "into one conjunction with every row satisfied by at least value: max_i min_r (d_i - C_i y)_r "
                   ">= value > 0 for y either output, so the property is violated (VNN-LIB: sat)"),
        value_range=_POSITIVE, consistent=_property_consistent,
    ),
]


# ------------------------------------------------------------------ prox claims (issue 14): about a denoiser f

def _cycle(v: Any, n: int, classes: int) -> None:
    a = _record(v, "cycle")
    if a.ndim != 2 or a.shape[0] < 2 or a.shape[1] != n:
        raise ClaimError(f"cycle must have shape [m >= 2, {n}] (m points of the denoiser's {n} features)")


def _count(name: str, least: int = 1) -> Validator:
    def check(v: Any, n: int, classes: int) -> None:
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= least):
            raise ClaimError(f"{name} = {v!r} must be an integer >= {least}")
    return check


def _point_witness(params: dict[str, Any], kind: str) -> frozenset[str]:
    return frozenset({"point"}) if kind != "refused" else frozenset()


_SAMPLED = frozenset({Kind.ESTIMATED.value, Kind.REFUSED.value})
# a certified violating cycle exceeds its rounding by this fraction of sum_i ||f(y_i)|| ||y_(i+1) - y_i||, so that
# an evaluation of f accurate to this relative error cannot have made the violation
RELATIVE_MARGIN = 1e-9
_EVIDENCE = {"points": _count("points"), "search_steps": _count("search_steps", 0)}
PROX_TYPES = frozenset({"prox-structure", "prox-violation-cycle", "jacobian-asymmetry", "jacobian-min-eigenvalue",
                        "cyclic-monotonicity-sampled"})

_TYPES += [
    ClaimType(
        "prox-structure", ">=", _BOUNDED, {},
        lambda q: ("f = grad psi in exact arithmetic, psi(y) = w^T z_K + h^T y + c + (alpha/2)||y||^2 the model's "
                   "input-convex network (z_1 = s(W_0 y + b_0), z_(k+1) = s(W_k z_k + H_k y + b_k), W_1..W_(K-1) >= 0 "
                   "and w >= 0 entrywise, s the softplus log(1 + exp(beta t))/beta without threshold, beta > 0): psi "
                   "is value-strongly convex with value = alpha >= 0, hence convex, so f is the proximal operator of "
                   "a function R: f(y) in argmin_x 1/2 ||y - x||^2 + R(x) (Gribonval & Nikolova 2020, Cor. 1)"),
        witness=frozenset({"layers", "beta", "hidden"}),
    ),
    ClaimType(
        "prox-violation-cycle", ">=", _BOUNDED, {"cycle": _cycle},
        lambda q: (f"S = sum_i <f(y_i), y_(i+1) - y_i> >= value > 0 over the {len(q['cycle']['values'])}-point cycle "
                   f"y_1..y_m of params.cycle (indices mod m; sha256 {q['cycle']['sha256'][:16]}), for f the model as "
                   "run (its own dtype) and its float64 and float32 evaluations (which agree within half), rounding of "
                   "the sum bounded, every step at least 1e-06 (1 + max ||y_i||), and value >= "
                   f"{RELATIVE_MARGIN!r} sum_i ||f(y_i)|| ||y_(i+1) - y_i|| (float64): f is not cyclically monotone, so it "
                   "is not the gradient of a convex function (Rockafellar 1970, Thm 24.8) and not the proximal operator "
                   "of any function (Gribonval & Nikolova 2020); for the model's exact function too wherever each "
                   f"float64 evaluation f(y_i) is within relative error {RELATIVE_MARGIN!r} of it"),
        value_range=_POSITIVE,
    ),
    ClaimType(
        "jacobian-asymmetry", ">=", _SAMPLED, dict(_EVIDENCE),
        lambda q: (f"max over the {q['points']} sampled points and {q['search_steps']} adversarial search steps of "
                   "||J_f(y) - J_f(y)^T||_F / ||J_f(y)||_F >= value, attained at witness.point (autograd Jacobian of "
                   "the model in float64; a gradient field has a symmetric Jacobian wherever it is differentiable)"),
        witness=frozenset({"point"}), required_witness=_point_witness,
    ),
    ClaimType(
        "jacobian-min-eigenvalue", "<=", _SAMPLED, dict(_EVIDENCE),
        lambda q: (f"min over the {q['points']} sampled points and {q['search_steps']} adversarial search steps of "
                   "lambda_min((J_f(y) + J_f(y)^T)/2) <= value, attained at witness.point (autograd Jacobian of the "
                   "model in float64; the gradient of a convex function has a positive semi-definite Jacobian)"),
        witness=frozenset({"point"}), required_witness=_point_witness, value_range=(-math.inf, math.inf),
    ),
    ClaimType(
        "cyclic-monotonicity-sampled", "==", _SAMPLED, {"cycles": _count("cycles"), "length": _count("length", 2)},
        lambda q: (f"max over {q['cycles']} sampled and searched cycles of length {q['length']} of the normalised "
                   "cycle sum sum_i <f(y_i), y_(i+1) - y_i> / sum_i ||y_(i+1) - y_i||^2 == value, attained at "
                   "witness.cycle (> 0: a violation of cyclic monotonicity; <= 0: none found among these cycles)"),
        witness=frozenset({"cycle"}), required_witness=lambda q, kind: frozenset({"cycle"}) if kind != "refused" else frozenset(),
        value_range=(-math.inf, math.inf),
    ),
]

# ------------------------------------------------------------------ Sparsified SmoothGrad's top-k (issue 16)

def _topk_smoothed_witness(params: dict[str, Any], kind: str) -> frozenset[str]:
    return frozenset({"seed", "batch", "position", "dtype"}) if kind != "refused" else frozenset()


_TYPES += [
    ClaimType(
        "topk-smoothed", ">=", frozenset({Kind.PROBABILISTIC.value, Kind.REFUSED.value}),
        {**_T, "k": _k, "eps": _positive("eps"), "sigma": _positive("sigma"), "samples": _count("samples"),
         "l0": _count("l0"), "confidence": _confidence},
        lambda q: (f"with probability >= {_num(q['confidence'])} over the {q['samples']} Gaussian draws the witness's "
                   f"seed reproduces, the stored map a is p_hat_i = the fraction of the draws x + {_num(q['sigma'])} Z_t "
                   f"at which feature i is among the top-{q['l0']} entries of |grad N_{q['target']}| (ties to the lower "
                   f"index), and for every x' with ||x' - x||_2 <= {_num(q['eps'])} every top-{q['k']} set of the exact "
                   f"smoothed map p(x') = E 1[i in top-{q['l0']} of |grad N_{q['target']}(x' + {_num(q['sigma'])} Z)|] "
                   f"shares at least value * {q['k']} features with the top-{q['k']} set of a (ties to the lower index) "
                   "(Levine, Singla & Feizi 2019, Sparsified SmoothGrad; certify.bounds.topk_smoothing); the draws "
                   "and points are in the model's dtype, each point's coordinates rounded by at most 2^-10 sigma "
                   "(the smoothing is Gaussian up to that rounding), for a seed fixed independently of the outcome"),
        witness=frozenset({"seed", "batch", "position", "dtype"}), required_witness=_topk_smoothed_witness,
        value_range=(0.0, 1.0),
    ),
]


# ------------------------------------------------------------------ importance tests (issue 15): SHAP-XRT p-values

XRT_SCORES = ("probability", "logit", "output")


def _indices(name: str, allow_empty: bool) -> Validator:
    def check(v: Any, n: int, classes: int) -> None:
        if not (isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in v)):
            raise ClaimError(f"{name} must be a list of feature indices")
        if not v and not allow_empty:
            raise ClaimError(f"{name} must not be empty")
        if any(b <= a for a, b in zip(v, v[1:])) or (v and not 0 <= v[0] <= v[-1] < n):
            raise ClaimError(f"{name} must be strictly increasing feature indices in [0, {n})")
    return check


def _alpha(v: Any, n: int, classes: int) -> None:
    if not (_number(v) and 0 < v < 1):
        raise ClaimError(f"alpha = {v!r} must lie in (0, 1)")


def _xrt_consistent(q: dict[str, Any]) -> None:
    if set(q["features"]) & set(q["context"]):
        raise ClaimError("features and context overlap: the test fixes j in addition to C")
    if abs(q["confidence"] - (1 - q["alpha"])) > 1e-12:
        raise ClaimError(f"confidence {q['confidence']!r} must be 1 - alpha = {1 - q['alpha']!r}")


def index_text(v: list[int]) -> str:
    """Feature indices as sorted runs: [0-7, 16-23] (exact: two different lists never render alike)."""
    runs, start = [], None
    for i, idx in enumerate(v):
        if start is None:
            start = idx
        if i + 1 == len(v) or v[i + 1] != idx + 1:
            runs.append(str(start) if start == idx else f"{start}-{idx}")
            start = None
    return "[" + ", ".join(runs) + "]"


XRT_TYPES = frozenset({"xrt-p-value"})
_TYPES += [
    ClaimType(
        "xrt-p-value", "<=", frozenset({Kind.PROBABILISTIC.value, Kind.REFUSED.value}),
        {"features": _indices("features", False), "context": _indices("context", True), "target": _target,
         "score": _choice("score", XRT_SCORES), "K": _count("K"), "M": _count("M"), "seed": _count("seed", 0),
         "tie": _nonnegative("tie"), "alpha": _alpha, "confidence": _confidence,
         "decision": _choice("decision", ("reject", "retain"))},
        lambda q: (f"p <= value, p = (1 + #{{k : T~_k >= T}}) / (K + 1) the SHAP-XRT p-value (Teneggi, Bharti, Romano "
                   f"& Sulam, TMLR 2023, Alg. 1) of the features j = {index_text(q['features'])} in the context C = "
                   f"{index_text(q['context'])} at the certificate's input x, for f = the model's {q['score']} of class "
                   f"{q['target']} (each input evaluated alone, in the model's dtype): T the mean of f (sum rounded "
                   f"once) over M = {q['M']} draws of "
                   "X~_(C u j) (C u j held at x, the other features drawn by the certificate's sampler), T~_1..T~_K "
                   f"(K = {q['K']}) the same mean over draws of X~_C, all drawn from numpy's default_rng(seed = "
                   f"{q['seed']}) in the certificate's sampling protocol; value >= (1 + #{{k : T~_k >= T - tie/2}}) / "
                   f"(K + 1) exactly, tie = {_num(q['tie'])} (near-ties counted as ties, so value >= p). Decision at "
                   f"level alpha = {_num(q['alpha'])}: {q['decision']} "
                   "H0 (reject iff value <= alpha). Validity: under H0_(j,C), f(X~_(C u j)) =d f(X~_C) for the "
                   "sampler's law, P(value <= alpha) <= P(p <= alpha) <= alpha for every alpha (the rank of T among K + 1 "
                   "exchangeable statistics), for a seed fixed independently of the outcome (trying several seeds and "
                   "keeping the smallest p voids it); a statement about the data's conditional law only where the "
                   "sampler draws from it (an assumption, not certified)"),
        witness=frozenset({"statistic", "gamma"}),
        required_witness=lambda q, kind: frozenset({"statistic", "gamma"}) if kind != "refused" else frozenset(),
        value_range=(_POSITIVE[0], 1.0), consistent=_xrt_consistent,
    ),
]

CLAIM_TYPES: dict[str, ClaimType] = {t.name: t for t in _TYPES}
PROPERTY_TYPES = frozenset({"property-holds", "property-violated"})
RADIUS_TYPES = frozenset({"flip-witness", "lipschitz-radius", "radius-lower", "exact-radius", "gap"})
STABILITY_TYPES = frozenset({"stability-gradient", "stability-moreaugrad", "stability-none"})


def claim_type(name: str) -> ClaimType:
    try:
        return CLAIM_TYPES[name]
    except KeyError:
        raise ClaimError(f"unknown claim type {name!r}; known: {sorted(CLAIM_TYPES)}") from None


def render(type_: str, params: dict[str, Any]) -> str:
    """The statement of a claim of type `type_` with `params` (the only way a statement is written)."""
    return claim_type(type_).render(params)


def validate_params(type_: str, params: Any, n_features: int, n_classes: int) -> None:
    ct = claim_type(type_)
    if not isinstance(params, dict):
        raise ClaimError("params must be an object")
    if set(params) != set(ct.params):
        missing, extra = sorted(set(ct.params) - set(params)), sorted(set(params) - set(ct.params))
        raise ClaimError(f"params of {type_!r} must be exactly {sorted(ct.params)} (missing {missing}, unknown {extra})")
    for name, check in ct.params.items():
        check(params[name], n_features, n_classes)
    ct.consistent(params)


def validate_claim(claim: Claim, n_features: int, n_classes: int) -> ClaimType:
    """Check that `claim` is a well-formed statement of its type: kind allowed, relation, every parameter in
    range, value present iff not refused and in the type's range, confidence consistent, witness keys
    allowed (and present), statement == render(type, params). Raises ClaimError naming the first fault."""
    ct = claim_type(claim.type)
    if claim.kind not in ct.kinds:
        raise ClaimError(f"kind {claim.kind!r} is not allowed for a {claim.type!r} claim (allowed: {sorted(ct.kinds)})")
    if claim.relation != ct.relation:
        raise ClaimError(f"relation {claim.relation!r} where {claim.type!r} states {ct.relation!r}")
    validate_params(claim.type, claim.params, n_features, n_classes)
    if claim.kind == Kind.REFUSED.value:
        if claim.value is not None or not claim.reason:
            raise ClaimError("a refused claim has no value and a reason")
    else:
        v = claim.value
        if not (_number(v) and math.isfinite(v)):
            raise ClaimError(f"value {v!r} is not a finite number")
        lo, hi = ct.value_range
        if not lo <= v <= hi:
            raise ClaimError(f"value {v!r} is outside [{lo}, {hi}], the range of a {claim.type!r} value")
        if claim.reason is not None:
            raise ClaimError("only a refused claim carries a reason")
    conf = claim.params.get("confidence")
    if claim.confidence != conf:
        raise ClaimError(f"confidence {claim.confidence!r} differs from params.confidence {conf!r}")
    if claim.kind == Kind.PROBABILISTIC.value and conf is None:
        raise ClaimError("a probabilistic claim must state its confidence in params")
    if claim.kind == Kind.CERTIFIED.value and conf is not None:
        raise ClaimError("a certified claim has no confidence (it holds with certainty)")
    if not isinstance(claim.witness, dict):
        raise ClaimError("witness must be an object")
    unknown = set(claim.witness) - ct.witness
    if unknown:
        raise ClaimError(f"witness keys {sorted(unknown)} are not evidence of a {claim.type!r} claim "
                         f"(allowed: {sorted(ct.witness)})")
    missing = ct.required_witness(claim.params, claim.kind) - set(claim.witness)
    if missing:
        raise ClaimError(f"witness lacks {sorted(missing)}")
    expected = render(claim.type, claim.params)
    if claim.statement != expected:
        raise ClaimError(f"statement differs from the one its type and params render: {expected!r}")
    return ct


# ------------------------------------------------------------------ issuing helpers

_ROUND = {"<=": round_up, ">=": round_down, "==": float}


def issue(id: str, type_: str, params: dict[str, Any], value: float, method: str, assumptions: list[str] | None = None,
          witness: dict[str, Any] | None = None, kind: str = Kind.CERTIFIED.value, exact: bool = False) -> Claim:
    """A claim of type `type_` with its statement rendered and its value rounded outward (upper bounds up,
    lower bounds down, by the builder's margin), unless `exact` (a value the checker recomputes by the same
    float64 expression, e.g. a p-value's count ratio). A non-finite value becomes a refusal."""
    ct = claim_type(type_)
    if value is None or not math.isfinite(value):
        return refuse(id, type_, params, method, f"no finite bound (value {value})")
    confidence = params.get("confidence")
    value = float(value) if exact else _ROUND[ct.relation](float(value))
    if ct.value_range[0] == 0.0 and ct.relation == ">=":
        value = max(0.0, value)
    return Claim(id, type_, dict(params), ct.relation, value, kind, method, list(assumptions or []),
                 dict(witness or {}), confidence, None, render(type_, params))


def refuse(id: str, type_: str, params: dict[str, Any], method: str, reason: str) -> Claim:
    """A refused claim: no value, the reason, the statement it would have made."""
    ct = claim_type(type_)
    return Claim(id, type_, dict(params), ct.relation, None, Kind.REFUSED.value, method, [], {},
                 params.get("confidence"), reason or "refused", render(type_, params))
