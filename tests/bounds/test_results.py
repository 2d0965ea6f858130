"""certify.bounds.results: the BoundResult record, its refusals and its Kind (defined once, in the
vocabulary)."""
import dataclasses

import torch

import certify.vocabulary as vocabulary
from certify.bounds import results
from certify.bounds.results import BoundResult, Kind


def test_kind_is_the_vocabulary_kind_and_reads_its_json_back():
    assert Kind is vocabulary.Kind
    assert [k.value for k in Kind] == ["certified", "probabilistic", "estimated", "solver-reported", "refused"]
    assert Kind("solver-reported") is Kind.SOLVER_REPORTED and Kind.CERTIFIED == "certified"
    assert set(results.__all__) == {"BoundResult", "Kind"}


def test_refuse_builds_a_value_free_refused_record():
    r = BoundResult.refuse("crown", "ReLU network: no curvature bound", ["softplus beta = 1"])
    assert r.value is None and r.kind is Kind.REFUSED and r.refused
    assert r.method == "crown" and r.reason == "ReLU network: no curvature bound"
    assert r.assumptions == ["softplus beta = 1"] and r.witness == {} and r.details == {} and r.confidence is None
    assert BoundResult.refuse("lp", "no solver").assumptions == []


def test_only_the_refused_kind_is_refused():
    for kind in Kind:
        assert BoundResult(1.0, kind, "m").refused is (kind is Kind.REFUSED)


def test_defaults_are_fresh_per_record():
    """Mutable defaults are per instance (default_factory): one record's witness never leaks into another."""
    a, b = BoundResult(0.5, Kind.CERTIFIED, "ibp"), BoundResult(0.7, Kind.CERTIFIED, "ibp")
    a.assumptions.append("input in the box")
    a.witness["slopes"] = [1.0]
    a.details["time"] = 1.0
    assert b.assumptions == [] and b.witness == {} and b.details == {}
    c, d = BoundResult.refuse("x", "r"), BoundResult.refuse("x", "r")
    c.assumptions.append("leak")
    assert d.assumptions == []


def test_tensor_values_and_probabilistic_confidence_are_kept():
    value = torch.tensor([0.1, 0.2], dtype=torch.float64)
    r = BoundResult(value, Kind.PROBABILISTIC, "sampling", confidence=0.99, witness={"seed": 3})
    assert r.value is value and r.confidence == 0.99 and r.witness == {"seed": 3} and not r.refused
    fields = [f.name for f in dataclasses.fields(BoundResult)]
    assert fields == ["value", "kind", "method", "assumptions", "confidence", "reason", "witness", "details"]
