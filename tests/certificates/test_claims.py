"""Claims as structured statements (certify/certificates/claims.py): every claim type's parameter validators
reject out-of-range values naming the parameter; values are range-checked per type; kinds allowed per type;
the statement is re-rendered from params and compared; `issue` rounds outward and `refuse` keeps the reason."""
import math

import numpy as np
import pytest

from certify.certificates.claims import (CLAIM_TYPES, RADIUS_TYPES, Claim, ClaimError, claim_type, issue, refuse,
                                         render, validate_claim, validate_params)
from certify.vocabulary import BUILDER_MARGIN, KINDS

N, C = 6, 3  # features and classes of the example certificate
BOX = {"lower": 0.0, "upper": 1.0}
MOREAU = {"target": 1, "rho": 0.3, "sparsity": 0.0, "group_size": None, "sigma": None, "confidence": None,
          "region": "global"}
RADIUS = {"target": 1, "p": "inf", "domain": BOX}

def _rec(values):
    from certify.certificates.document import encode_array

    return encode_array(np.asarray(values, dtype=np.float64))


PROPERTY = {"lower": _rec(np.zeros(N)), "upper": _rec(np.ones(N)),
            "conjunctions": [{"C": _rec([[1.0, -1.0, 0.0]]), "d": _rec([0.0])}, {"C": _rec([[1.0, 0.0, -1.0]]), "d": _rec([0.0])}]}

# one valid parameter set per claim type, and per parameter the out-of-range values each validator rejects
VALID = {
    "implementation-deviation": {},
    "lipschitz": {"target": 1, "p": 2},
    "weak-convexity": {"target": 1, "radius": None},
    "curvature": {"target": 1, "radius": 0.5},
    "smoothed-weak-convexity": {"target": 1, "sigma": 0.5},
    "explanation-error": {"target": 1, "method": "gradient", "quadrature": None, "n_steps": None, "baseline": None},
    "smoothed-explanation-error": {"target": 1, "sigma": 0.5, "confidence": 0.99},
    "solver-error": MOREAU,
    "stability-gradient": {"target": 1, "eps": 0.1},
    "stability-moreaugrad": {**MOREAU, "eps": 0.1, "tol": 1e-5},
    "stability-none": {"target": 1, "eps": 0.1},
    "topk-stability": {"target": 1, "k": 2, "eps": 0.1},
    "flip-witness": RADIUS,
    "lipschitz-radius": RADIUS,
    "radius-lower": {**RADIUS, "relaxation": "crown"},
    "exact-radius": RADIUS,
    "gap": RADIUS,
    "property-holds": PROPERTY,
    "property-violated": {**PROPERTY, "counterexample": _rec(np.full(N, 0.5))},
    "prox-structure": {},
    "prox-violation-cycle": {"cycle": _rec(np.eye(3, N))},
    "jacobian-asymmetry": {"points": 8, "search_steps": 0},
    "jacobian-min-eigenvalue": {"points": 8, "search_steps": 20},
    "cyclic-monotonicity-sampled": {"cycles": 64, "length": 3},
    "topk-smoothed": {"target": 1, "k": 2, "eps": 0.1, "sigma": 0.5, "samples": 256, "l0": 2, "confidence": 0.999},
    "xrt-p-value": {"features": [0, 1], "context": [3], "target": 1, "score": "probability", "K": 99, "M": 16,
                    "seed": 7, "tie": 1e-5, "alpha": 0.05, "confidence": 0.95, "decision": "retain"},
}
BAD = {
    "target": [-1, C, 1.0, True, "1", None],
    "p": [0, 3, 1.5, "l2", math.inf, True],
    "eps": [0.0, -0.1, math.inf, math.nan, True, "0.1"],
    "rho": [0.0, -1.0, math.inf, math.nan],
    "tol": [-1e-9, math.inf, math.nan],
    "sigma": [0.0, -0.5, math.inf],
    "sparsity": [-0.1, math.inf],
    "group_size": [0, N + 1, 2.0, True],
    "confidence": [0.0, 1.0, 1.5, -0.1],
    "k": [0, N, N + 1, 2.0, True],
    "domain": [{"lower": 1.0, "upper": 0.0}, {"lower": "a", "upper": 1.0}, [0, 1]],
    "relaxation": ["milp", None],
    "method": ["smoothgrad", None],
    "quadrature": ["simpson"],
    "n_steps": [0, 100_001, 2.5],
    "baseline": [math.inf, "zero"],
    "lower": [_rec(np.zeros(N + 1)), _rec(np.zeros((1, N))), {**_rec(np.zeros(N)), "sha256": "0" * 64}, [0.0] * N,
              {"shape": [N], "sha256": "0" * 64, "sidecar": "a.npy"}],
    "upper": [_rec(np.ones(N - 1)), {**_rec(np.ones(N)), "values": [1.0] * (N - 1) + [math.inf]}],
    "conjunctions": [[], [{"C": _rec([[1.0, -1.0]]), "d": _rec([0.0])}], [{"C": _rec([[1.0, -1.0, 0.0]]), "d": _rec([0.0, 1.0])}],
                     [{"C": _rec([[1.0, -1.0, 0.0]])}], None],
    "counterexample": [_rec(np.zeros(N - 1)), None],
    "cycle": [_rec(np.zeros((1, N))), _rec(np.zeros((3, N + 1))), _rec(np.zeros(N)), None],
    "points": [0, -1, 2.0, True],
    "search_steps": [-1, 1.5, None],
    "cycles": [0, None],
    "length": [1, 0, 2.5],
    "samples": [0, 2.5, None],
    "l0": [0, -1, 1.5],
    "features": [[], [1, 0], [0, 0], [0, N], [-1], [0.0], [True], "0", None],
    "context": [[2, 1], [N], [1.5], None],
    "score": ["margin", None],
    "K": [0, 1.5, True, None],
    "M": [0, -3, None],
    "seed": [-1, 2.0, None],
    "tie": [-1e-9, math.inf, math.nan, None],
    "alpha": [0.0, 1.0, -0.1, "0.05", None],
    "decision": ["rejected", None],
}
WITNESS = {"property-holds": {"format": "", "unstable": [], "root_alphas": [], "conjunctions": []},
           "solver-error": {"z": {}}, "flip-witness": {"delta": {}}, "radius-lower": {"alphas": []},
           "smoothed-explanation-error": {"samples": 4, "seed": 0},
           "jacobian-asymmetry": {"point": {}}, "jacobian-min-eigenvalue": {"point": {}},
           "cyclic-monotonicity-sampled": {"cycle": {}}, "xrt-p-value": {"statistic": 0.5, "gamma": 0.1},
           "topk-smoothed": {"seed": 0, "batch": 1, "position": 0, "dtype": "float32"}}


def test_every_claim_type_has_an_example_here():
    assert set(VALID) == set(CLAIM_TYPES)
    assert RADIUS_TYPES <= set(CLAIM_TYPES)


DEFAULT_KIND = {"smoothed-explanation-error": "probabilistic", "exact-radius": "solver-reported", "stability-none": "refused",
                "jacobian-asymmetry": "estimated", "jacobian-min-eigenvalue": "estimated",
                "cyclic-monotonicity-sampled": "estimated", "xrt-p-value": "probabilistic", "topk-smoothed": "probabilistic"}


def _claim(type_, params=None, value=0.5, kind=None, **changes):
    """A well-formed claim of `type_` (its example params, its usual kind), then `changes` applied."""
    params = dict(VALID[type_] if params is None else params)
    kind = kind or DEFAULT_KIND.get(type_, "certified")
    refused = kind == "refused" and type_ == "stability-none"
    claim = Claim(type_, type_, params, claim_type(type_).relation, None if refused else value, kind, "test", [],
                  dict(WITNESS.get(type_, {})), params.get("confidence"), "no theorem" if refused else None,
                  render(type_, params))
    for key, v in changes.items():
        setattr(claim, key, v)
    return claim


@pytest.mark.parametrize("type_", sorted(VALID))
def test_valid_example_validates(type_):
    assert validate_claim(_claim(type_), N, C) is CLAIM_TYPES[type_]


CASES = [(t, name, bad) for t in sorted(VALID) for name in VALID[t] for bad in BAD.get(name, [])]


@pytest.mark.parametrize("type_, name, bad", CASES)
def test_every_parameter_validator_rejects_out_of_range_values_naming_it(type_, name, bad):
    if type_ == "explanation-error" and name in ("quadrature", "n_steps", "baseline"):
        params = {**VALID[type_], "method": "integrated-gradients", "quadrature": "gausslegendre", "n_steps": 8,
                  "baseline": 0.0}
    else:
        params = dict(VALID[type_])
    params[name] = bad
    with pytest.raises(ClaimError, match=name if name not in ("target",) else "target"):
        validate_params(type_, params, N, C)


def test_lipschitz_norms_are_two_and_inf_only():
    validate_params("lipschitz", {"target": 0, "p": "inf"}, N, C)
    with pytest.raises(ClaimError, match="norm p = 1"):
        validate_params("lipschitz", {"target": 0, "p": 1}, N, C)


@pytest.mark.parametrize("type_", sorted(VALID))
def test_missing_or_unknown_parameters_are_named(type_):
    with pytest.raises(ClaimError, match="unknown \\['extra'\\]"):
        validate_params(type_, {**VALID[type_], "extra": 1}, N, C)
    if VALID[type_]:
        name = sorted(VALID[type_])[0]
        params = {k: v for k, v in VALID[type_].items() if k != name}
        with pytest.raises(ClaimError, match=f"missing \\['{name}'\\]"):
            validate_params(type_, params, N, C)


def test_cross_parameter_rules():
    ig = {**VALID["explanation-error"], "method": "integrated-gradients"}
    with pytest.raises(ClaimError, match="states its quadrature"):
        validate_params("explanation-error", ig, N, C)
    with pytest.raises(ClaimError, match="no quadrature"):
        validate_params("explanation-error", {**VALID["explanation-error"], "n_steps": 8}, N, C)
    with pytest.raises(ClaimError, match="n_steps >= 2"):
        validate_params("explanation-error", {**ig, "quadrature": "riemann_trapezoid", "n_steps": 1, "baseline": 0.0}, N, C)


@pytest.mark.parametrize("type_", sorted(VALID))
def test_kinds_outside_the_type_are_rejected(type_):
    allowed = CLAIM_TYPES[type_].kinds
    assert "refused" in allowed and allowed <= set(KINDS)
    for kind in sorted(set(KINDS) - allowed):
        with pytest.raises(ClaimError, match="is not allowed"):
            validate_claim(_claim(type_, kind=kind), N, C)


def test_allowed_kinds_of_some_types():
    assert CLAIM_TYPES["lipschitz"].kinds == {"certified", "refused"}  # no probabilistic Lipschitz constant
    assert CLAIM_TYPES["exact-radius"].kinds == {"solver-reported", "refused"}
    assert CLAIM_TYPES["stability-none"].kinds == {"refused"}
    assert "probabilistic" in CLAIM_TYPES["solver-error"].kinds and "probabilistic" in CLAIM_TYPES["stability-moreaugrad"].kinds


@pytest.mark.parametrize("value", [math.nan, math.inf, -1e-12, None, "0.5", True])
def test_values_are_finite_and_in_range(value):
    with pytest.raises(ClaimError, match="value"):
        validate_claim(_claim("lipschitz", value=value), N, C)


def test_property_claims_state_a_positive_bound_on_a_nonempty_box():
    for type_ in ("property-holds", "property-violated"):
        with pytest.raises(ClaimError, match="outside"):
            validate_claim(_claim(type_, value=0.0), N, C)
        with pytest.raises(ClaimError, match="box is empty"):
            validate_params(type_, {**VALID[type_], "lower": _rec(np.full(N, 2.0))}, N, C)
    text = render("property-holds", PROPERTY)
    assert "2 conjunctions" in text and PROPERTY["lower"]["sha256"][:16] in text and "N(x)" in text
    other = {**PROPERTY, "upper": _rec(np.full(N, 1.0 + 1e-12))}
    assert render("property-holds", other) != text  # another box, another statement
    assert "model as run" in render("property-violated", VALID["property-violated"])


def test_topk_ratio_lies_in_zero_one():
    validate_claim(_claim("topk-stability", value=1.0), N, C)
    with pytest.raises(ClaimError, match="outside \\[0.0, 1.0\\]"):
        validate_claim(_claim("topk-stability", value=1.0 + 1e-12), N, C)


def test_statement_is_rerendered_and_must_match():
    claim = _claim("stability-gradient")
    assert claim.statement == render("stability-gradient", {"target": 1, "eps": 0.1})
    assert "0.1" in claim.statement and "N_1" in claim.statement
    # the statement follows the params, not the other way round: an edited eps no longer matches the text
    claim.params["eps"] = 1e-6
    with pytest.raises(ClaimError, match="statement differs"):
        validate_claim(claim, N, C)
    claim.statement = render(claim.type, claim.params)
    validate_claim(claim, N, C)
    assert render("stability-gradient", {"target": 1, "eps": 0.1}) != render("stability-gradient",
                                                                             {"target": 1, "eps": 0.1 + 1e-17})


def test_relation_refusal_confidence_and_witness_rules():
    with pytest.raises(ClaimError, match="relation"):
        validate_claim(_claim("lipschitz", relation=">="), N, C)
    with pytest.raises(ClaimError, match="no value and a reason"):
        validate_claim(_claim("lipschitz", kind="refused"), N, C)  # refused but with a value, no reason
    with pytest.raises(ClaimError, match="only a refused claim carries a reason"):
        validate_claim(_claim("lipschitz", reason="why"), N, C)
    with pytest.raises(ClaimError, match="confidence"):
        validate_claim(_claim("lipschitz", confidence=0.99), N, C)
    smoothed = {**MOREAU, "sigma": 0.5, "confidence": 0.99}
    with pytest.raises(ClaimError, match="certified claim has no confidence"):
        validate_claim(_claim("solver-error", smoothed, witness={"z": {}, "samples": 4, "seed": 0}), N, C)
    with pytest.raises(ClaimError, match="must state its confidence"):
        validate_claim(_claim("solver-error", kind="probabilistic"), N, C)
    with pytest.raises(ClaimError, match="not evidence"):
        validate_claim(_claim("lipschitz", witness={"row": [0, 0, 0]}), N, C)
    with pytest.raises(ClaimError, match="witness lacks \\['samples', 'seed'\\]"):
        validate_claim(_claim("solver-error", smoothed, kind="probabilistic", witness={"z": {}}), N, C)


def test_issue_rounds_outward_and_refuse_keeps_the_reason():
    upper = issue("lipschitz", "lipschitz", {"target": 0, "p": 2}, 2.0, "m")
    assert upper.value == 2.0 * (1 + BUILDER_MARGIN) and upper.kind == "certified"
    lower = issue("r", "lipschitz-radius", RADIUS, 2.0, "m")
    assert lower.value < 2.0 and lower.relation == ">="
    assert issue("r", "lipschitz-radius", RADIUS, -1e-300, "m").value == 0.0  # a lower bound >= 0 stays >= 0
    for bad in (math.inf, math.nan, None):
        refused = issue("lipschitz", "lipschitz", {"target": 0, "p": 2}, bad, "m")
        assert refused.kind == "refused" and refused.value is None and "no finite bound" in refused.reason
    refused = refuse("stability", "stability-none", {"target": 0, "eps": 0.1}, "none", "no theorem")
    assert refused.reason == "no theorem" and refused.statement == render("stability-none", {"target": 0, "eps": 0.1})
    validate_claim(refused, N, C)
    with pytest.raises(ClaimError, match="unknown claim type"):
        render("made-up", {})


def test_local_region_rests_on_the_lipschitz_claim():
    """Lemma MG-LOC: a MoreauGrad claim with local constants needs the l2 Lipschitz claim (its region is
    B(x, eps + rho L)); smoothed MoreauGrad has only the global Proposition 1 constant."""
    local = {**MOREAU, "region": "local"}
    slots = CLAIM_TYPES["solver-error"].assumptions(local)
    assert ("lipschitz",) in slots and ("lipschitz",) not in CLAIM_TYPES["solver-error"].assumptions(MOREAU)
    assert ("lipschitz",) in CLAIM_TYPES["stability-moreaugrad"].assumptions({**local, "eps": 0.1, "tol": 1e-5})
    validate_params("solver-error", local, N, C)
    with pytest.raises(ClaimError, match="global"):
        validate_params("solver-error", {**local, "sigma": 0.1, "confidence": 0.99}, N, C)
    with pytest.raises(ClaimError):
        validate_params("weak-convexity", {"target": 1, "radius": 0.0}, N, C)
    assert "ball" in render("weak-convexity", {"target": 1, "radius": 0.5})


def test_an_xrt_claim_refuses_overlapping_sets_and_a_confidence_other_than_one_minus_alpha():
    q = dict(VALID["xrt-p-value"])
    with pytest.raises(ClaimError, match="overlap"):
        validate_params("xrt-p-value", {**q, "context": [1, 3]}, N, C)
    with pytest.raises(ClaimError, match="1 - alpha"):
        validate_params("xrt-p-value", {**q, "confidence": 0.99}, N, C)
    with pytest.raises(ClaimError, match="range"):  # a p-value is never above 1
        validate_claim(_claim("xrt-p-value", value=1.01), N, C)


def test_index_text_renders_runs_exactly():
    from certify.certificates.claims import index_text

    assert index_text([0, 1, 2, 5, 7, 8]) == "[0-2, 5, 7-8]" and index_text([]) == "[]"
    assert index_text([0, 1, 2]) != index_text([0, 2])
