"""Tests of certify.vocabulary: the one definition of norms, constants, rounding margins and the domain."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from certify.errors import UsageError
from certify.vocabulary import (
    BUILDER_MARGIN,
    CHECKER_SAFETY,
    NORMS,
    SQRT2,
    STEIN_CONSTANT,
    Domain,
    dual_norm,
    norm_json,
    norm_name,
    parse_norm,
    round_down,
    round_up,
)


@pytest.mark.parametrize(
    "spelling, value",
    [(1, 1.0), (2, 2.0), (1.0, 1.0), (2.0, 2.0), ("1", 1.0), ("2", 2.0), ("l1", 1.0), ("l2", 2.0),
     ("inf", math.inf), ("linf", math.inf), (math.inf, math.inf), (float("inf"), math.inf), ("Linf", math.inf),
     (" L2 ", 2.0), (np.float64(2.0), 2.0), (np.int64(1), 1.0)],
)
def test_parse_norm_accepts_every_documented_spelling(spelling, value):
    assert parse_norm(spelling) == value
    assert parse_norm(spelling) in NORMS


@pytest.mark.parametrize("bad", [3, 0, -1, 1.5, -math.inf, math.nan, True, "l3", "two", "", None, [2]])
def test_parse_norm_refuses_anything_else_naming_the_spellings(bad):
    with pytest.raises(UsageError, match="accepted spellings: 1, 2, inf"):
        parse_norm(bad)


def test_dual_norm_pairs():
    assert dual_norm(1) == math.inf and dual_norm("inf") == 1.0 and dual_norm(2) == 2.0
    for p in NORMS:
        q = dual_norm(p)
        assert dual_norm(q) == p
        assert (1 / p if p != math.inf else 0) + (1 / q if q != math.inf else 0) == 1


def test_norm_renderings_round_trip_through_json():
    assert [norm_name(p) for p in NORMS] == ["1", "2", "inf"]
    assert [norm_json(p) for p in NORMS] == [1, 2, "inf"]
    for p in NORMS:
        encoded = json.loads(json.dumps(norm_json(p), allow_nan=False))
        assert parse_norm(encoded) == p and parse_norm(norm_name(p)) == p


def test_constants():
    assert STEIN_CONSTANT == pytest.approx(math.sqrt(2 / math.pi), rel=1e-15)
    # E|Z| for Z ~ N(0, 1) is sqrt(2/pi): the constant is the one Stein's lemma gives
    z = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float(z.abs().mean()) == pytest.approx(STEIN_CONSTANT, abs=3e-3)
    assert SQRT2 * SQRT2 == pytest.approx(2.0, rel=1e-15)
    assert CHECKER_SAFETY < BUILDER_MARGIN


@pytest.mark.parametrize("v", [0.0, 1.0, -1.0, 3.7e5, -2.5e-8, 1e300])
def test_round_up_and_down_widen_by_the_builder_margin(v):
    up, down = round_up(v), round_down(v)
    assert up > v and down < v
    assert up - v == pytest.approx(abs(v) * BUILDER_MARGIN + 1e-300, rel=1e-6)
    assert v - down == pytest.approx(abs(v) * BUILDER_MARGIN + 1e-300, rel=1e-6)
    # the checker's own safety is smaller: a value the issuer rounded up still exceeds v + CHECKER_SAFETY |v|
    assert up >= v + abs(v) * CHECKER_SAFETY


def test_domain_scalar_json_round_trip_and_tensors():
    d = Domain(0.0, 1.0)
    assert d.to_json() == {"lower": 0.0, "upper": 1.0}
    assert Domain.from_json(json.loads(json.dumps(d.to_json(), allow_nan=False))) == d
    lo, hi = d.tensors((2, 3), torch.float32)
    assert lo.dtype == torch.float32 and lo.shape == (2, 3) and bool((lo == 0).all() and (hi == 1).all())
    assert d.contains(torch.full((4, 2, 3), 0.5)) and d.contains([0.0, 1.0])
    assert not d.contains(torch.tensor([0.5, 1.0 + 1e-12], dtype=torch.float64)) and not d.contains([math.nan])


def test_domain_nested_lists_tensors_and_unbounded_sides():
    d = Domain(torch.zeros(2, 2), np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert d.to_json() == {"lower": [[0.0, 0.0], [0.0, 0.0]], "upper": [[1.0, 2.0], [3.0, 4.0]]}
    assert d.contains(torch.tensor([[0.5, 1.5], [2.5, 3.5]]))
    assert not d.contains(torch.tensor([[0.5, 2.5], [2.5, 3.5]]))
    half = Domain(None, 1.0)
    assert half.to_json() == {"lower": None, "upper": 1.0}
    lo, hi = half.tensors((3,))
    assert bool(torch.isinf(lo).all()) and bool((hi == 1).all())
    assert half.contains([-1e300, 1.0]) and not half.contains([2.0])
    # +-inf everywhere is the same set as no bound, and is written as null (JSON has no infinity)
    assert Domain(-math.inf, torch.full((3,), math.inf)).to_json() == {"lower": None, "upper": None}
    json.dumps(Domain(-math.inf, 1.0).to_json(), allow_nan=False)


def test_domain_of_accepts_pairs_domains_json_and_none():
    assert Domain.of(None) is None and Domain.from_json(None) is None
    d = Domain.of((0, 1))
    assert d == Domain(0.0, 1.0) and Domain.of(d) is d
    assert Domain.of({"lower": 0, "upper": 1}) == d


@pytest.mark.parametrize(
    "lower, upper, match",
    [(1.0, 0.0, "exceeds"), ([0.0, 2.0], [1.0, 1.0], "exceeds"), (math.nan, 1.0, "NaN"),
     ([0.0, -math.inf], 1.0, "finite"), ("a", 1.0, "number"), (True, 1.0, "number"),
     ([0.0, 0.0, 0.0], [1.0, 1.0], "broadcast")],
)
def test_domain_validation(lower, upper, match):
    with pytest.raises(UsageError, match=match):
        Domain(lower, upper)


def test_domain_json_shape_is_enforced():
    with pytest.raises(UsageError, match="'lower' and 'upper'"):
        Domain.from_json({"lo": 0, "hi": 1})
    with pytest.raises(UsageError, match="'lower' and 'upper'"):
        Domain.from_json([0, 1])
    with pytest.raises(UsageError, match="broadcast"):
        Domain(0.0, [1.0, 1.0]).tensors((3,))
    with pytest.raises(UsageError, match="pair"):
        Domain.of(0.5)


def test_vocabulary_is_the_bottom_layer():
    """The module imports only the standard library, torch and certify.errors (the checker may import it)."""
    import ast
    import inspect

    import certify.vocabulary as vocabulary

    tree = ast.parse(inspect.getsource(vocabulary))
    imported = {alias.name.split(".")[0] if not alias.name.startswith("certify") else alias.name
                for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    certify_imports = {m for m in imported if m and m.startswith("certify")}
    assert certify_imports <= {"certify.errors"}
    assert not imported & {"numpy", "scipy", "cvxpy"}


def test_kind_is_one_enum_shared_by_bounds_and_claims():
    from certify.bounds.results import Kind as BoundKind
    from certify.vocabulary import KINDS, Kind

    assert BoundKind is Kind
    assert KINDS == ("certified", "probabilistic", "estimated", "solver-reported", "refused")
    assert Kind("solver-reported") is Kind.SOLVER_REPORTED and Kind.CERTIFIED == "certified"
