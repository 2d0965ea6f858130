"""Property certificates (certify/certificates/issuers/property.py, checked by property_check through
`certify verify`'s checker): holds certificates from the real pipeline (CROWN, and branch and bound with
splits) verify; a violated certificate's counterexample is re-evaluated; an unknown answer carries a refused
claim only; every tampering (the box, the formula, a split, a slope outside [0, 1], a negative beta, a leaf
removed, the counterexample moved outside the box or to a point that does not violate, the answer) fails
verification; and over many seeds a violated property never yields a verified holds certificate."""
import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from property_grid import classification, grid_values, predicted, tiny_net  # noqa: E402

from certify.attacks.property import PropertyResult, verify_property  # noqa: E402
from certify.certificates.checker import verify_certificate  # noqa: E402
from certify.certificates.claims import render  # noqa: E402
from certify.certificates.document import PropertyCertificate, encode_array, parse_certificate  # noqa: E402
from certify.certificates.issuers.property import property_certificate  # noqa: E402
from certify.errors import CertificateFormatError  # noqa: E402

CENTRE = np.array([0.3, -0.2])


def _answer(model, prop, timeout=5.0, out=None):
    result = verify_property(model, prop, timeout=timeout, input_shape=(2,), methods=("crown", "bab"))
    return result, property_certificate(model, prop, result, (2,), "bab", timeout, out=out)


def _verify(doc: dict, model, base=None):
    """(valid, report or the format error)."""
    try:
        cert = parse_certificate(json.dumps(doc))
        report = verify_certificate(cert, model, base)
    except CertificateFormatError as exc:
        return False, exc
    return report.valid, report


def _holds_with_splits():
    """A (model, property, certificate) whose holds witness has a split tree (BaB beyond the root)."""
    for seed in range(12):
        model = tiny_net(seed)
        label = predicted(model, CENTRE)
        for eps in (1.0, 1.5, 2.0, 3.0):
            prop = classification(CENTRE, eps, label)
            result, cert = _answer(model, prop)
            if cert.answer == "holds" and any(len(t["splits"]["values"]) for t in cert.claims[0].witness["conjunctions"]):
                return model, prop, cert
    pytest.fail("no property on the tiny nets needed branch and bound")


@pytest.fixture(scope="module")
def split_case():
    return _holds_with_splits()


def test_holds_certificates_verify_and_bound_the_grid():
    held = 0
    for seed in range(5):
        model = tiny_net(seed)
        prop = classification(CENTRE, 0.3, predicted(model, CENTRE))
        result, cert = _answer(model, prop)
        if result.status != "holds":
            continue
        held += 1
        assert isinstance(cert, PropertyCertificate) and cert.answer == "holds"
        claim = cert.claims[0]
        assert claim.type == "property-holds" and claim.kind == "certified"
        assert 0 < claim.value <= grid_values(model, prop).min()
        valid, report = _verify(json.loads(cert.to_json()), model)
        assert valid, report.failures()
        assert report.checks[0].status == "valid"
    assert held >= 3


def test_a_split_tree_certificate_verifies(split_case):
    model, prop, cert = split_case
    valid, report = _verify(json.loads(cert.to_json()), model)
    assert valid, report.failures()
    assert 0 < cert.claims[0].value <= grid_values(model, prop).min()


def _violated_case():
    for seed in range(12):
        model = tiny_net(seed)
        prop = classification(CENTRE, 2.0, predicted(model, CENTRE))
        result, cert = _answer(model, prop)
        if cert.answer == "violated":
            return model, prop, cert
    pytest.fail("no violated property found on the tiny nets")


def test_a_violated_certificate_reevaluates_its_counterexample():
    model, prop, cert = _violated_case()
    claim = cert.claims[0]
    assert claim.type == "property-violated" and claim.kind == "certified" and claim.value > 0
    point = np.asarray(claim.params["counterexample"]["values"])
    assert ((point >= prop.lower) & (point <= prop.upper)).all()
    with torch.no_grad():
        y = model(torch.tensor(point, dtype=torch.float32)[None])[0].double().numpy()
    assert any((c @ y <= d).all() for c, d in prop.disjuncts)
    valid, report = _verify(json.loads(cert.to_json()), model)
    assert valid, report.failures()
    doc = json.loads(cert.to_json())
    # outside the box; the box centre, classified as the label; a value the model's float32 would round
    for moved, reason in ((prop.upper + 0.25, "outside the input box"), (CENTRE.astype(np.float32).astype(np.float64), "not a counterexample"),
                          (point + 1e-12, "not a value of the model's dtype")):
        edited = copy.deepcopy(doc)
        _set(edited["claims"][0], "counterexample", np.asarray(moved, dtype=np.float64))
        valid, report = _verify(edited, model)
        assert not valid, f"a counterexample moved to {moved} still verifies"
        assert reason in "; ".join(report.failures())


def test_an_unknown_answer_carries_only_a_refusal():
    model = tiny_net(0)
    prop = classification(CENTRE, 0.3, predicted(model, CENTRE))
    result = PropertyResult("unknown", 1.0, "bab", -0.5, notes=["test"])
    cert = property_certificate(model, prop, result, (2,), "bab", 1.0)
    assert cert.answer == "unknown" and cert.claims[0].kind == "refused" and "neither proven" in cert.claims[0].reason
    valid, report = _verify(json.loads(cert.to_json()), model)
    assert valid and report.checks[0].status == "refused"
    doc = json.loads(cert.to_json())
    doc["answer"] = "holds"
    assert not _verify(doc, model)[0]


def test_a_holds_result_without_a_recheckable_witness_is_refused():
    model = tiny_net(0)
    prop = classification(CENTRE, 0.3, predicted(model, CENTRE))
    result, _ = _answer(model, prop)
    assert result.status == "holds"
    result.witness = copy.deepcopy(result.witness)
    for tree in result.witness["conjunctions"]:
        tree["alphas"] = np.clip(tree["alphas"] * 0 + 0.0, 0, 1)
        tree["row"] = tree["row"] * 0
    result.witness["root_alphas"] = [[a * 0 for a in layer] for layer in result.witness["root_alphas"]]
    prop_far = classification(CENTRE, 50.0, predicted(model, CENTRE))  # the witness cannot prove this box
    cert = property_certificate(model, prop_far, result, (2,), "bab", 1.0)
    reason = cert.claims[0].reason
    assert cert.answer == "unknown" and "no witness re-checks" in reason and "bound code: conjunction" in reason


# ------------------------------------------------------------------ tampering

def _set(claim: dict, key: str, values: np.ndarray) -> None:
    claim["params"][key] = encode_array(values)
    claim["statement"] = render(claim["type"], claim["params"])


def _set_witness(record: dict, values: np.ndarray) -> None:
    record.clear()
    record.update(encode_array(values))


def _arr(record: dict) -> np.ndarray:
    return np.asarray(record["values"], dtype=np.float64).reshape(record["shape"])


def test_tampered_holds_certificates_fail(split_case):
    model, prop, cert = split_case
    doc = json.loads(cert.to_json())
    claim = doc["claims"][0]
    witness = claim["witness"]
    tree = next(t for t in witness["conjunctions"] if len(t["splits"]["values"]))

    def box_grown(d):
        _set(d["claims"][0], "upper", _arr(d["claims"][0]["params"]["upper"]) + 5.0)

    def constraint_flipped(d):
        conj = d["claims"][0]["params"]["conjunctions"][0]
        conj["C"] = encode_array(-_arr(conj["C"]))
        d["claims"][0]["statement"] = render("property-holds", d["claims"][0]["params"])

    def tree_of(d):
        return next(t for t in d["claims"][0]["witness"]["conjunctions"] if len(t["splits"]["values"]))

    def split_moved(d):
        t = tree_of(d)
        s = _arr(t["splits"])
        s[0, 1] = (s[0, 1] + 1) % model[0].out_features
        _set_witness(t["splits"], s)

    def slope_out_of_range(d):
        t = tree_of(d)
        a = _arr(t["alphas"])
        a[0, 0] = 1.25
        _set_witness(t["alphas"], a)

    def beta_negative(d):
        t = tree_of(d)
        b = _arr(t["betas"])
        b[0] = -0.5
        _set_witness(t["betas"], b)

    def leaf_removed(d):
        t = tree_of(d)
        depth = _arr(t["depth"])
        first = int(depth[0])
        _set_witness(t["depth"], depth[1:])
        _set_witness(t["splits"], _arr(t["splits"])[first:])
        _set_witness(t["betas"], _arr(t["betas"])[first:])
        _set_witness(t["row"], _arr(t["row"])[1:])
        _set_witness(t["alphas"], _arr(t["alphas"])[1:])

    def value_raised(d):
        d["claims"][0]["value"] *= 2

    def answer_changed(d):
        d["answer"] = "violated"

    tampers = {box_grown: "not > 0", constraint_flipped: "not > 0", split_moved: "complete split tree",
               slope_out_of_range: "slope outside [0, 1]", beta_negative: "beta < 0",
               leaf_removed: "complete split tree", value_raised: "above the re-derived", answer_changed: "answer"}
    assert _verify(copy.deepcopy(doc), model)[0]
    assert tree is not None
    for tamper, reason in tampers.items():
        edited = copy.deepcopy(doc)
        tamper(edited)
        valid, report = _verify(edited, model)
        assert not valid, f"{tamper.__name__} still verifies"
        assert reason in "; ".join(report.failures()), (tamper.__name__, report.failures())


def test_a_holds_certificate_moved_to_a_violated_property_fails():
    """The witness of a held property, with the params (box and formula) of a violated one: refused."""
    model, violated_prop, _ = _violated_case()
    held = classification(CENTRE, 0.05, predicted(model, CENTRE))
    _, cert = _answer(model, held)
    assert cert.answer == "holds"
    doc = json.loads(cert.to_json())
    claim = doc["claims"][0]
    for key, values in (("lower", violated_prop.lower), ("upper", violated_prop.upper)):
        _set(claim, key, values)
    assert not _verify(doc, model)[0]


def test_violated_properties_never_yield_a_verified_holds_certificate():
    """Many seeds and boxes: whenever a grid point of the box satisfies the counterexample formula, the
    pipeline's certificate is never a verified holds."""
    rng = np.random.default_rng(3)
    violated = 0
    for seed in range(16):
        model = tiny_net(seed, widths=(2, 10, 10, 3))
        centre = rng.uniform(-1, 1, 2)
        label = predicted(model, centre)
        for eps in (0.4, 1.0, 2.0):
            prop = classification(centre, eps, label)
            if not (grid_values(model, prop, n=101) <= 0).any():
                continue
            violated += 1
            _, cert = _answer(model, prop, timeout=2.0)
            assert cert.answer != "holds"
            if cert.claims[0].type == "property-holds" and cert.claims[0].kind != "refused":
                assert not _verify(json.loads(cert.to_json()), model)[0]
    assert violated >= 8


def test_large_witness_arrays_go_to_sidecars_that_verify_reads(split_case, tmp_path, monkeypatch):
    import certify.certificates.document as document

    model, prop, _ = split_case
    monkeypatch.setattr(document, "INLINE_LIMIT", 4)
    result = verify_property(model, prop, timeout=5.0, input_shape=(2,), methods=("crown", "bab"))
    out = tmp_path / "cert.json"
    cert = property_certificate(model, prop, result, (2,), "bab", 5.0, out=out)
    cert.write(out)
    sidecars = sorted(tmp_path.glob("cert.w*.npy"))
    assert cert.answer == "holds" and sidecars
    assert _verify(json.loads(out.read_text()), model, tmp_path)[0]
    array = np.load(sidecars[-1])
    np.save(sidecars[-1], array + 0.5)
    assert not _verify(json.loads(out.read_text()), model, tmp_path)[0]


@pytest.mark.parametrize("name", ["residual-mlp", "maxpool-cnn", "resnet-block", "leaky-relu-mlp"])
def test_relu_graphs_and_leaky_relu_nets_get_crown_witnesses_that_verify_and_hold(name):
    from graph_models import GRAPH_MODELS

    from certify.certificates.semantics import translate

    build, shape = GRAPH_MODELS[name]
    model = build(0)
    raw = translate(model, shape)
    assert raw.skips or raw.acts[0][0] == "leaky_relu"
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    prop = classification(x.reshape(-1).double().numpy(), 0.03, int(logits.argmax()), classes=logits.shape[1])
    result = verify_property(model, prop, timeout=5.0, input_shape=shape, methods=("crown", "bab"))
    assert result.status == "holds" and result.witness is None  # the bound code gives graphs no witness
    cert = property_certificate(model, prop, result, shape, "bab", 5.0)
    assert cert.answer == "holds", cert.claims[0].reason
    valid, report = _verify(json.loads(cert.to_json()), model)
    assert valid, report.failures()
    gen = torch.Generator().manual_seed(2)
    lower, upper = torch.as_tensor(prop.lower), torch.as_tensor(prop.upper)
    points = lower + (upper - lower) * torch.rand(2000, lower.numel(), generator=gen, dtype=torch.float64)
    corners = torch.where(torch.rand(500, lower.numel(), generator=gen) < 0.5, lower, upper)
    with torch.no_grad():
        y = model.double()(torch.cat([points, corners]).reshape(-1, *shape)).numpy()
    model.float()
    rows = np.concatenate([c for c, _ in prop.disjuncts])
    assert cert.claims[0].value <= (y @ rows.T).min()  # d = 0: every row of the formula stays above the bound


@pytest.mark.parametrize("name", ["sigmoid-mlp", "tanh-mlp", "gelu-mlp", "silu-mlp"])
def test_counterexamples_on_smooth_activations_verify_and_holds_answers_say_why_not(name):
    """property-violated re-evaluates N with any activation of the translation (its float64 error carried by
    semantics.act_rounding); property-holds has no relaxation for them: refused, answer unknown."""
    from graph_models import GRAPH_MODELS

    build, shape = GRAPH_MODELS[name]
    model = build(0)
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    label, classes = int(logits.argmax()), logits.shape[1]
    answers = {}
    # around x: its own class (holds for a tiny box), and a class it does not predict (violated)
    for eps, c in ((1e-3, label), (0.5, (label + 1) % classes)):
        prop = classification(x.reshape(-1).double().numpy(), eps, c, classes=classes)
        result = verify_property(model, prop, timeout=3.0, input_shape=shape, methods=("crown",))
        cert = property_certificate(model, prop, result, shape, "crown", 3.0)
        answers[result.status] = cert
        valid, report = _verify(json.loads(cert.to_json()), model)
        assert valid, report.failures()
    assert answers["violated"].answer == "violated" and answers["violated"].claims[0].value > 0
    if "holds" in answers:  # the bound code proved it, but no re-checkable relaxation exists here
        assert answers["holds"].answer == "unknown" and "ReLU" in answers["holds"].claims[0].reason


def test_random_mutations_are_rejected_or_still_true(split_case):
    """200 random edits of a split-tree certificate (witness numbers, indices, the box, the formula's d and
    C, the value), re-hashed and re-rendered: whatever the checker accepts is TRUE (its value is below the
    grid minimum of the edited property's rows); most edits are rejected."""
    from certify.models.vnnlib import Property

    model, prop, cert = split_case
    doc = json.loads(cert.to_json())
    rng = np.random.default_rng(11)
    accepted = rejected = 0
    for trial in range(200):
        d = copy.deepcopy(doc)
        claim = d["claims"][0]
        records = [r for t in claim["witness"]["conjunctions"] for r in t.values()]
        records += claim["witness"]["unstable"] + [a for layer in claim["witness"]["root_alphas"] for a in layer]
        kind = trial % 4
        if kind == 0:  # a witness number
            rec = records[rng.integers(len(records))]
            a = _arr(rec)
            if a.size == 0:
                continue
            flat = a.reshape(-1)
            flat[rng.integers(flat.size)] = rng.choice([0.0, 1.0, -1.0, flat[rng.integers(flat.size)] + 1, rng.uniform(0, 1)])
            _set_witness(rec, a)
        elif kind == 1:  # the box
            key = rng.choice(["lower", "upper"])
            a = _arr(claim["params"][key]) + rng.normal(0, 0.5, 2)
            _set(claim, key, a)
        elif kind == 2:  # the formula
            conj = claim["params"]["conjunctions"][rng.integers(len(claim["params"]["conjunctions"]))]
            which = rng.choice(["C", "d"])
            conj[which] = encode_array(_arr(conj[which]) + rng.normal(0, 0.3, _arr(conj[which]).shape))
            claim["statement"] = render(claim["type"], claim["params"])
        else:
            claim["value"] *= float(rng.uniform(0.5, 2.0))
        valid, _ = _verify(d, model)
        if not valid:
            rejected += 1
            continue
        accepted += 1
        box = (_arr(claim["params"]["lower"]), _arr(claim["params"]["upper"]))
        if (box[0] > box[1]).any():
            continue
        edited = Property(box[0], box[1], 3, [(_arr(c["C"]), _arr(c["d"])) for c in claim["params"]["conjunctions"]])
        values = grid_values(model, edited, n=151)
        starts = np.cumsum([0] + [c.shape[0] for c, _ in edited.disjuncts])
        truth = min(values[:, a:b].max(axis=1).min() for a, b in zip(starts[:-1], starts[1:]))
        assert claim["value"] <= truth + 1e-9, f"trial {trial}: accepted a false certificate"
    assert rejected >= 60 and accepted >= 10


def test_checked_certificates_keep_answers_the_checker_accepts():
    """checked_property_certificate (what `certify verify-property` prints, with or without --out): holds,
    violated and unknown answers the independent checker accepts come back unchanged, with no problems."""
    from certify.certificates.issuers.property import checked_property_certificate

    model = tiny_net(0)
    label = predicted(model, CENTRE)
    for eps, c, expected in ((0.05, label, "holds"), (2.0, (label + 1) % 3, "violated")):
        prop = classification(CENTRE, eps, c)
        result = verify_property(model, prop, timeout=3.0, input_shape=(2,), methods=("crown", "bab"))
        assert result.status == expected
        cert, problems = checked_property_certificate(model, prop, result, (2,), "bab", 3.0)
        assert cert.answer == expected and problems == [] and cert.claims[0].kind == "certified"
    unknown = PropertyResult("unknown", 0.5, "crown", -0.1)
    cert, problems = checked_property_certificate(model, classification(CENTRE, 0.05, label), unknown, (2,), "crown", 0.5)
    assert cert.answer == "unknown" and problems == []


@pytest.mark.parametrize("failure", ["problem", "invalid claim", "format error"])
def test_a_claim_the_checker_rejects_becomes_an_unknown_answer(monkeypatch, failure):
    """Should the checker ever reject what the issuer certified, the answer is unknown (the claim refused with
    the checker's reasons), never holds; and that certificate verifies, as unknown, with the real checker."""
    import certify.certificates.checker as checker
    from certify.certificates.issuers.property import checked_property_certificate
    from certify.errors import CertificateFormatError as FormatError

    model = tiny_net(0)
    prop = classification(CENTRE, 0.05, predicted(model, CENTRE))
    result = verify_property(model, prop, timeout=3.0, input_shape=(2,), methods=("crown",))
    assert result.status == "holds"
    real = checker.verify_certificate

    def rejecting(cert, model, base_dir=None):
        if failure == "format error":
            raise FormatError("simulated")
        report = real(cert, model, base_dir)
        if failure == "problem":
            report.problems.append("simulated problem")
        else:
            report.checks[0].status, report.checks[0].detail = "invalid", "simulated mismatch"
        return report

    monkeypatch.setattr(checker, "verify_certificate", rejecting)
    cert, problems = checked_property_certificate(model, prop, result, (2,), "crown", 3.0)
    assert cert.answer == "unknown" and cert.claims[0].kind == "refused" and problems
    assert "independent checker does not accept" in cert.claims[0].reason and "simulated" in cert.claims[0].reason
    monkeypatch.setattr(checker, "verify_certificate", real)
    valid, report = _verify(json.loads(cert.to_json()), model)
    assert valid, report.failures()


def test_a_network_without_hidden_layers_gets_a_crown_witness():
    """One Linear layer (no activation): the checker-side CROWN witness has no unstable units and no slopes,
    and proves the property exactly (the margin y_0 - y_j = 5 everywhere)."""
    from certify.certificates.issuers.property import checked_property_certificate

    model = torch.nn.Sequential(torch.nn.Linear(2, 3)).eval()
    with torch.no_grad():
        model[0].weight.fill_(0.1)
        model[0].bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
    prop = classification(CENTRE, 0.1, 0)
    result = PropertyResult("holds", 0.1, "crown", 5.0)  # what the bound code would say; it gives no witness
    cert, problems = checked_property_certificate(model, prop, result, (2,), "crown", 1.0)
    assert cert.answer == "holds" and problems == [] and cert.claims[0].method == "crown"
    assert 4.99 < cert.claims[0].value <= 5.0
    valid, report = _verify(json.loads(cert.to_json()), model)
    assert valid, report.failures()


def _counting_prove_holds(monkeypatch):
    """Counts every re-derivation of the leaves (the issuer's and the checker's prove_holds)."""
    import certify.certificates.issuers.property as issuer
    import certify.certificates.property_check as check

    calls = []
    real = check.prove_holds

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(check, "prove_holds", counted)
    monkeypatch.setattr(issuer, "prove_holds", counted)
    return calls


def test_a_checked_holds_certificate_re_derives_its_leaves_once(monkeypatch, split_case):
    """checked_property_certificate states the bound code's certified margin (times PROVISIONAL_SHARE) and lets
    the checker's single re-derivation accept it: one prove_holds, not two; the value is no tighter than the
    checker's own."""
    from certify.certificates.issuers.property import PROVISIONAL_SHARE, checked_property_certificate
    from certify.certificates.property_check import prove_holds, property_arrays, read_witness
    from certify.certificates.relu_graph import graph_of
    from certify.certificates.document import decode_array
    from certify.certificates.issuers.property import _function

    model, prop, _ = split_case
    result = verify_property(model, prop, timeout=5.0, input_shape=(2,), methods=("crown", "bab"))
    assert result.status == "holds" and result.margin > 0
    calls = _counting_prove_holds(monkeypatch)
    cert, problems = checked_property_certificate(model, prop, result, (2,), "bab", 5.0)
    assert cert.answer == "holds" and problems == [] and len(calls) == 1
    claim = cert.claims[0]
    assert claim.value <= result.margin * PROVISIONAL_SHARE and claim.value == pytest.approx(result.margin, rel=1e-5)
    _, raw = _function(model, (2,), prop)
    box, conjunctions = property_arrays(claim.params)
    net = graph_of(raw)
    rederived = prove_holds(net, box, conjunctions, read_witness(claim.witness, net, conjunctions,
                                                                 lambda rec, where: decode_array(rec, where, None)))
    assert claim.value <= rederived


@pytest.mark.parametrize("forged", ["inflated margin", "inflated margin and a removed leaf"])
def test_a_provisional_value_the_checker_rejects_is_re_derived_never_kept(monkeypatch, split_case, forged):
    """Attack on the provisional value: a result whose margin is far above the truth (x1000) gets the checker's
    rejection, then the value re-derived by the checker's code (two more re-derivations), and the certificate
    that comes back verifies with a value no higher than that; with a leaf removed as well (an incomplete tree,
    refused before any re-derivation), only the issuer's CROWN fallback can certify, or the answer is unknown; it
    is never holds with the forged value."""
    from certify.certificates.issuers.property import checked_property_certificate

    model, prop, _ = split_case
    result = verify_property(model, prop, timeout=5.0, input_shape=(2,), methods=("crown", "bab"))
    assert result.status == "holds"
    true_margin = result.margin
    result.margin = 1000.0 * true_margin + 1.0
    if forged != "inflated margin":
        tree = next(t for t in result.witness["conjunctions"] if t["depth"].size > 1)
        keep = slice(1, None)
        cut = int(tree["depth"][0])
        for key in ("depth", "row", "alphas"):
            tree[key] = tree[key][keep]
        for key in ("splits", "betas"):
            tree[key] = tree[key][cut:]
    calls = _counting_prove_holds(monkeypatch)
    cert, problems = checked_property_certificate(model, prop, result, (2,), "bab", 5.0)
    if forged == "inflated margin":  # the checker's rejection, then the issuer's re-derivation and the checker's
        assert len(calls) == 3 and cert.answer == "holds"
    if cert.answer == "holds":
        assert problems == [] and cert.claims[0].value < result.margin * 0.5
        valid, report = _verify(json.loads(cert.to_json()), model)
        assert valid, report.failures()
    else:
        assert cert.answer == "unknown" and cert.claims[0].kind == "refused"
