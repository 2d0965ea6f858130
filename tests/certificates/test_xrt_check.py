"""The importance-test certificate (SHAP-XRT p-values, issue 15) and its independent checker: the checker's own
sampling protocol draws exactly what the library's sampler draws; honest certificates verify; every edit of a
claim, the input, the reference or the model that makes a statement false is caught; forged p-values on
saturated or near-tied scores (where a tie allowance could be abused) are refused."""
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edits import doc_claim  # noqa: E402

from certify.certificates.checker import verify_certificate  # noqa: E402
from certify.certificates.claims import render  # noqa: E402
from certify.certificates.document import encode_array, parse_certificate  # noqa: E402
from certify.certificates.issuers.importance import checked_importance_certificate  # noqa: E402
from certify.certificates.xrt_check import draw  # noqa: E402
from certify.errors import UnsupportedError  # noqa: E402
from certify.explain.shap_xrt import GaussianSampler, MarginalSampler, region_labels  # noqa: E402
from certify.models import zoo  # noqa: E402

K, M = 49, 8


@pytest.fixture(scope="module")
def composite():
    model, data = zoo.load("composite-relu-cnn")
    support = data.support_test.flatten(1)  # [N, 4] tiles in row-major order = quadrant labels
    single = torch.nonzero((support.sum(dim=1) == 1)).flatten()
    i = int(single[0])
    return model, data, i, int(torch.nonzero(support[i])[0])


def _certificate(composite, tmp_path, context="empty", mode="product", reference=("digits-composite", "train")):
    model, data, i, tile = composite
    x = data.x_test[i]
    labels = region_labels("quadrants", x.shape)
    sampler = MarginalSampler(data.x_train[:300], mode, labels if mode == "product" else None)
    feats = [torch.nonzero(labels == r).flatten().tolist() for r in range(4)]
    ctx = [[] if context == "empty" else torch.nonzero(labels != r).flatten().tolist() for r in range(4)]
    out = tmp_path / "xrt.json"
    cert, problems = checked_importance_certificate(model, x, feats, ctx, sampler=sampler, reference=reference,
                                                    names=[f"q{r}" for r in range(4)], k=K, m=M, target=1,
                                                    model_spec="composite-relu-cnn", out=out, seed=3)
    assert problems == []
    cert.write(out)
    return cert, out


def _verify(doc, model, base):
    return verify_certificate(parse_certificate(json.dumps(doc)), model, base)


def _rerender(claim):
    claim["statement"] = render(claim["type"], claim["params"])


@pytest.mark.parametrize("mode, grouped", [("joint", False), ("product", False), ("product", True)])
def test_the_checker_draws_exactly_what_the_library_sampler_draws(mode, grouped):
    gen = torch.Generator().manual_seed(0)
    ref = torch.rand(37, 2, 4, 4, generator=gen, dtype=torch.float64)
    groups = region_labels("tile:2", (2, 4, 4)) * 3 + 5 if grouped else None  # labels not 0..G-1: relabelled
    sampler = MarginalSampler(ref, mode, groups)
    x = torch.rand(32, generator=gen, dtype=torch.float64)
    fixed = torch.rand(32, generator=gen) < 0.4
    ours = sampler.sample(x, fixed, 23, np.random.default_rng(11))
    labels = None if groups is None else np.unique(groups.reshape(-1).numpy(), return_inverse=True)[1]
    theirs = draw(ref.reshape(37, -1).numpy(), mode, labels, x.numpy(), fixed.numpy(), 23, np.random.default_rng(11))
    assert np.array_equal(ours.numpy(), theirs)


@pytest.mark.parametrize("context, mode", [("empty", "product"), ("others", "product"), ("empty", "joint")])
def test_honest_certificates_verify_and_reject_the_tile_holding_the_digit(composite, tmp_path, context, mode):
    model, data, i, tile = composite
    cert, out = _certificate(composite, tmp_path, context, mode)
    report = verify_certificate(parse_certificate(out.read_text()), model, out.parent)
    assert report.valid, report.failures()
    assert [c.status for c in report.checks] == ["valid (probabilistic)"] * 4
    decisions = {c.id: c.params["decision"] for c in cert.claims}
    assert decisions[f"q{tile}"] == "reject"
    if context == "empty":
        assert all(d == "retain" for k, d in decisions.items() if k != f"q{tile}")
    assert cert.sampler["reference"]["data"] is None  # named by its data set: the checker reloads the rows


def _tampers(tile):
    target_q, other_q = f"q{tile}", f"q{(tile + 1) % 4}"

    def lower(doc):  # a retained test's p lowered by one count
        c = doc_claim(doc, other_q)
        c["value"] = c["value"] - 1 / (K + 1)

    def flip(doc):
        c = doc_claim(doc, target_q)
        c["params"]["decision"] = "retain"
        _rerender(c)

    def move(doc):  # the rejection moved to a tile without the digit
        a, b = doc_claim(doc, target_q), doc_claim(doc, other_q)
        b["value"], b["params"]["decision"], b["witness"] = a["value"], "reject", a["witness"]
        _rerender(b)

    def target(doc):
        c = doc_claim(doc, target_q)
        c["params"]["target"] = 0
        _rerender(c)

    def gamma(doc):
        doc_claim(doc, target_q)["witness"]["gamma"] += 0.05

    def statement(doc):
        doc_claim(doc, target_q)["statement"] += " (and it is certain)"

    def tie(doc):  # a larger allowance raises the recomputed p: the stated one falls below it
        c = doc_claim(doc, other_q)
        c["params"]["tie"] = 10.0
        _rerender(c)

    def confidence(doc):
        c = doc_claim(doc, target_q)
        c["confidence"] = 0.999
        c["params"]["confidence"] = 0.999
        _rerender(c)

    def kind(doc):
        doc_claim(doc, target_q)["kind"] = "certified"

    return [lower, flip, move, target, gamma, statement, tie, confidence, kind]


@pytest.mark.parametrize("which", range(9))
def test_every_claim_tamper_is_caught(composite, tmp_path, which):
    model, data, i, tile = composite
    cert, out = _certificate(composite, tmp_path)
    doc = json.loads(out.read_text())
    _tampers(tile)[which](doc)
    try:
        report = _verify(doc, model, out.parent)
    except Exception as exc:  # noqa: BLE001 - a schema refusal is a catch too
        assert "CertificateFormatError" in type(exc).__name__, exc
        return
    assert not report.valid


def test_an_input_the_tests_were_not_made_at_is_caught(composite, tmp_path):
    model, data, i, tile = composite
    cert, out = _certificate(composite, tmp_path)
    doc = json.loads(out.read_text())
    negative = int(torch.nonzero(data.y_test == 0)[0])
    doc["input"]["x"] = encode_array(data.x_test[negative].double().numpy())
    report = _verify(doc, model, out.parent)
    assert not report.valid and any(c.id == f"q{tile}" and c.status == "invalid" for c in report.checks)


def test_reference_rows_that_are_not_the_named_data_set_are_caught(composite, tmp_path):
    model, data, i, tile = composite
    cert, out = _certificate(composite, tmp_path)
    doc = json.loads(out.read_text())
    doc["sampler"]["reference"]["split"] = "test"  # another split: other rows than the tests drew from
    report = _verify(doc, model, out.parent)
    assert not report.valid and "sha256" in report.problems[0]
    doc = json.loads(out.read_text())  # the named rows plus stored rows that differ from them
    rows = data.x_train[:300].reshape(300, -1).double().numpy().copy()
    rows[0, 0] += 0.5
    doc["sampler"]["reference"]["data"] = encode_array(rows)
    report = _verify(doc, model, out.parent)
    assert not report.valid and "not the first 300 rows" in report.problems[0]


def test_stored_reference_rows_are_hash_checked(composite, tmp_path):
    model, data, i, tile = composite
    cert, out = _certificate(composite, tmp_path, reference=None)
    sidecar = out.parent / "xrt-reference.npy"  # 300 x 256 values: a sidecar next to the certificate
    assert cert.sampler["reference"]["dataset"] is None and sidecar.is_file()
    assert verify_certificate(parse_certificate(out.read_text()), model, out.parent).valid
    rows = np.load(sidecar)
    rows[0, 0] += 0.5
    np.save(sidecar, rows)
    report = verify_certificate(parse_certificate(out.read_text()), model, out.parent)
    assert not report.valid and "sha256" in report.problems[0]
    doc = json.loads(out.read_text())  # the rows re-hashed, the recorded sha256 of the sampler's rows kept
    doc["sampler"]["reference"]["data"] = encode_array(rows)
    report = _verify(doc, model, out.parent)
    assert not report.valid and "do not match the recorded sha256" in report.problems[0]


def test_another_model_is_caught(composite, tmp_path):
    model, data, i, tile = composite
    cert, out = _certificate(composite, tmp_path)
    other = zoo.load("composite-relu-cnn")[0]
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    report = verify_certificate(parse_certificate(out.read_text()), other, out.parent)
    assert not report.valid and "model hash" in report.problems[0]


class _Constant(nn.Module):
    """Logits (50, 0): a probability of class 0 that is exactly 1.0 in float32 at every input (saturated)."""

    def __init__(self, d: int, gap: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(d, 2))
        self.gap = gap

    def forward(self, x):
        return x.flatten(1) @ self.w + torch.tensor([self.gap, 0.0])


def _forged(model, tmp_path, x, rows):
    """An honest certificate for `model`, then its p-value forged down to 1/(K + 1) with decision reject."""
    sampler = MarginalSampler(rows)
    cert, problems = checked_importance_certificate(model, x, [[0, 1]], [[]], sampler=sampler, k=K, m=M, target=0,
                                                    out=tmp_path / "c.json")
    assert problems == [] and cert.claims[0].value == 1.0  # the honest p: every T~ ties with T
    doc = json.loads(cert.to_json())
    c = doc["claims"][0]
    c["value"], c["params"]["decision"] = 1 / (K + 1), "reject"
    _rerender(c)
    return doc


@pytest.mark.parametrize("gap", [50.0, 0.0])
def test_forged_p_values_on_exact_ties_are_refused(tmp_path, gap):
    """Saturated (gap 50: probability exactly 1.0) and flat (gap 0: exactly 0.5) scores tie everywhere: p = 1,
    and no tie allowance lets a value of 1/(K + 1) through."""
    x = torch.rand(6)
    rows = torch.rand(20, 6)
    model = _Constant(6, gap).eval()
    report = _verify(_forged(model, tmp_path, x, rows), model, tmp_path)
    assert not report.valid and "below the recomputed p-value" in report.checks[0].detail


def test_forged_p_values_on_near_ties_are_refused(tmp_path):
    """Float32 probabilities that differ by about 1e-7 (inside the float32 tie allowance of 1e-5): the issuer and
    the checker count the near-ties as ties (p = 1), so a forged small value falls below the recount."""
    model = _Constant(6, 0.0).eval()
    with torch.no_grad():
        model.w[:, 0] = 1e-6
    report = _verify(_forged(model, tmp_path, torch.rand(6), torch.rand(20, 6)), model, tmp_path)
    assert not report.valid and "below the recomputed p-value" in report.checks[0].detail


def test_a_gaussian_sampler_is_not_certified():
    model = _Constant(3, 0.0).eval()
    with pytest.raises(UnsupportedError, match="MarginalSampler"):
        checked_importance_certificate(model, torch.rand(3), [[0]], [[]], sampler=GaussianSampler(torch.zeros(3), torch.eye(3)))


# ------------------------------------------------------------------ regressions: the attacks of issue 15's review


class _Cancel(nn.Module):
    """float64, one output: f(x) = x[1] when x[0] == 1 (j = {0} held at x), else -1."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1, dtype=torch.float64))

    def forward(self, x):
        x = x.reshape(x.shape[0], -1)
        return torch.where(x[:, 0] == 1, x[:, 1] * self.w, -self.w.expand(x.shape[0]))


def test_cancelling_scores_are_summed_exactly(tmp_path):
    """T's draws score [1e17, -7, -1e17]: a float mean says 0 > -1 = every T~ (p = 0.01), the exact mean -7/3 < -1
    (p = 1). The issuer and the checker sum exactly; the forged 0.01 is refused."""
    rows = torch.tensor([[0.0, -1e17], [0.0, -7.0], [0.0, 1e17]], dtype=torch.float64)
    seed = next(s for s in range(10000)
                if sorted(np.random.default_rng(int(np.random.SeedSequence(s).generate_state(1, dtype=np.uint32)[0]))
                          .integers(0, 3, size=3)) == [0, 1, 2])
    model = _Cancel().eval()
    cert, problems = checked_importance_certificate(model, torch.tensor([1.0, 0.0], dtype=torch.float64), [[0]], [[]],
                                                    sampler=MarginalSampler(rows, "joint"), k=K, m=3, score="output",
                                                    seed=seed)
    assert problems == [] and cert.claims[0].value == 1.0
    doc = json.loads(cert.to_json())
    c = doc["claims"][0]
    c["value"], c["params"]["decision"] = 1 / (K + 1), "reject"
    _rerender(c)
    assert not _verify(doc, model, tmp_path).valid


class _BatchPosition(nn.Module):
    """0.5 for every input alone; the first 16 rows of a larger batch get +0.5 (not a function of one input)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        n = x.shape[0]
        out = 0.5 + self.w + 0 * x.reshape(n, -1).sum(dim=1)
        return out + 0.5 * (torch.arange(n) < 16).to(out.dtype) if n > 1 else out


def test_a_model_whose_scores_depend_on_the_batch_is_judged_input_by_input(tmp_path):
    """Evaluated alone the model is constant: p = 1. The issuer's batched run says otherwise, so the checker
    refuses its claim; a hand-made 'reject' does not verify."""
    model = _BatchPosition().eval()
    x, rows = torch.rand(4), torch.rand(20, 4)
    cert, problems = checked_importance_certificate(model, x, [[0, 1]], [[]], sampler=MarginalSampler(rows), k=K, m=M,
                                                    score="output")
    assert cert.claims[0].kind == "refused" and "does not accept" in cert.claims[0].reason and problems
    doc = json.loads(cert.to_json())
    c = doc["claims"][0]
    c.update(kind="probabilistic", value=1 / (K + 1), reason=None, witness={"statistic": 1.0, "gamma": 0.5})
    c["params"]["decision"] = "reject"
    _rerender(c)
    report = _verify(doc, model, tmp_path)
    assert not report.valid and "below the recomputed p-value 1" in report.checks[0].detail


def test_a_value_is_never_rounded_below_the_fraction(tmp_path):
    """K = 2, alpha = fl(1/3): (1 + 0)/3 rounds below 1/3 in float; the issuer rounds up, so the decision is
    'retain' (the exact p is above alpha), and the rounded-down value is refused."""
    model = _Constant(3, 0.0).eval()
    with torch.no_grad():
        model.w[:, 0] = torch.tensor([5.0, 0.0, 0.0])  # x[0] drives the probability: j = {0} held high
    x, rows = torch.tensor([1.0, 0.0, 0.0]), torch.zeros(8, 3)
    cert, _ = checked_importance_certificate(model, x, [[0]], [[]], sampler=MarginalSampler(rows), k=2, m=1,
                                             alpha=1 / 3, target=0)
    c = cert.claims[0]
    assert c.value == math.nextafter(1 / 3, 1) and c.value > 1 / 3 and c.params["decision"] == "retain"
    doc = json.loads(cert.to_json())
    d = doc["claims"][0]
    d["value"], d["params"]["decision"] = 1 / 3, "reject"
    _rerender(d)
    assert not _verify(doc, model, tmp_path).valid


def test_seeds_must_be_derived_from_the_recorded_seed(composite, tmp_path):
    model, data, i, tile = composite
    cert, out = _certificate(composite, tmp_path)
    doc = json.loads(out.read_text())
    c = doc_claim(doc, f"q{(tile + 1) % 4}")
    c["params"]["seed"] = 33  # one test's seed shopped, the recorded seed unchanged
    _rerender(c)
    report = _verify(doc, model, out.parent)
    assert not report.valid and "derived from provenance.seed" in report.problems[0]


@pytest.mark.parametrize("edit, message", [
    (lambda doc: doc["claims"][0]["params"].update(K=10**12), "limit"),
    (lambda doc: doc["sampler"].update(mode="product", groups=[2**70] * 256), "2^62"),
    (lambda doc: doc["claims"][0].update(method="bound"), "method"),
])
def test_claims_that_cannot_be_rechecked_are_invalid_not_crashes(composite, tmp_path, edit, message):
    model, data, i, tile = composite
    cert, out = _certificate(composite, tmp_path)
    doc = json.loads(out.read_text())
    edit(doc)
    _rerender(doc["claims"][0])
    report = _verify(doc, model, out.parent)
    assert not report.valid and message in " ".join(report.failures())


def test_malformed_documents_are_format_errors(composite, tmp_path):
    from certify.errors import CertificateFormatError

    model, data, i, tile = composite
    cert, out = _certificate(composite, tmp_path)
    text = out.read_text()
    for bad in (text.replace('"values": [', '"values": [' + "1" * 401 + ", ", 1),  # a 401-digit integer literal
                "[" * 100000 + "]" * 100000,
                text.replace('"values": [', '"values": ["1", ', 1)):  # a number written as a string
        with pytest.raises(CertificateFormatError):
            report = verify_certificate(parse_certificate(bad), model, out.parent)
            assert not report.valid  # (when the parse succeeds, the check must still fail)
            raise CertificateFormatError("invalid")


def test_a_model_in_training_mode_or_returning_a_tuple_is_a_problem(composite, tmp_path):
    model, data, i, tile = composite
    cert, out = _certificate(composite, tmp_path)
    doc = json.loads(out.read_text())
    model.train()
    try:
        report = _verify(doc, model, out.parent)
    finally:
        model.eval()
    assert not report.valid and "training mode" in report.problems[0]

    class Pair(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x), x

    pair = Pair(model).eval()
    from certify.certificates.checker import _verify_importance, VerifyReport

    report = _verify_importance(parse_certificate(json.dumps(doc)), pair, out.parent, VerifyReport())
    assert not report.valid and "not [batch]" in report.problems[0]


# ------------------------------------------------------------------ regressions: the second review's attacks


class _BatchSize(nn.Module):
    """f(x) = sum(x) + 1e-3 * (rows in the batch): the batch-of-one value is the definition of f."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, x):
        return x.flatten(1).sum(dim=1) + self.w + 1e-3 * x.shape[0]


def test_the_checker_scores_each_input_in_a_call_of_its_own():
    from certify.certificates.xrt_check import scores

    model = _BatchSize().eval()
    points = np.random.default_rng(0).random((37, 3))
    with torch.no_grad():
        alone = np.array([float(model(torch.tensor(p).unsqueeze(0))) for p in points])
    assert np.array_equal(scores(model, points, (3,), 0, "output"), alone)  # bitwise: no batched kernel


class _InPlace(nn.Module):
    """f(x) = x[0] + 1, computed by changing the input in place."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, x):
        x = x.flatten(1)
        x.add_(1.0)
        return x[:, 0] + self.w


def test_a_model_that_changes_its_input_in_place_changes_neither_x_nor_the_draws(tmp_path):
    model = _InPlace().eval()
    x = torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64)
    cert, problems = checked_importance_certificate(model, x.clone(), [[0]], [[]], sampler=MarginalSampler(
        torch.rand(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))), k=K, m=M, score="output")
    assert problems == [] and cert.input["x"]["values"] == [0.5, 0.0, 0.0]
    assert verify_certificate(parse_certificate(cert.to_json()), model, tmp_path).valid


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_certificates_verify_and_forgeries_do_not(composite, tmp_path, dtype):
    model, data, i, tile = composite
    half = zoo.load("composite-relu-cnn")[0].to(dtype).eval()
    x = data.x_test[i].to(dtype)
    labels = region_labels("quadrants", x.shape)
    sampler = MarginalSampler(data.x_train[:64].to(dtype), "product", labels)
    feats = [torch.nonzero(labels == r).flatten().tolist() for r in range(4)]
    cert, problems = checked_importance_certificate(half, x, feats, [[]] * 4, sampler=sampler, k=19, m=4, target=1,
                                                    score="logit")
    assert problems == [] and all(c.kind == "probabilistic" for c in cert.claims)
    doc = json.loads(cert.to_json())
    assert _verify(doc, half, tmp_path).valid
    c = next(c for c in doc["claims"] if c["value"] > 2 / 20)
    c["value"], c["params"]["decision"] = 1 / 20, "reject"
    _rerender(c)
    assert not _verify(doc, half, tmp_path).valid


def test_a_test_is_seeded_by_its_content_not_its_position(composite, tmp_path):
    """Padding claims in front of a test or reordering cannot give it another seed; a repeated test is a problem."""
    model, data, i, tile = composite
    cert, out = _certificate(composite, tmp_path)
    doc = json.loads(out.read_text())
    doc["claims"].reverse()
    assert _verify(doc, model, out.parent).valid  # order does not matter
    doc["claims"].append(dict(doc["claims"][0], id="again"))
    report = _verify(doc, model, out.parent)
    assert not report.valid and "repeats another claim's test" in " ".join(report.problems)


class _Asserting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2, 2))

    def forward(self, x):
        assert bool((x >= 0).all()), "inputs must be non-negative"
        return x.flatten(1) @ self.w


def test_a_model_that_raises_assertion_error_is_invalid_input_or_an_invalid_claim(tmp_path):
    from certify.errors import InvalidInputError

    model = _Asserting().eval()
    with pytest.raises(InvalidInputError, match="AssertionError"):
        checked_importance_certificate(model, torch.rand(2), [[0]], [[]], sampler=MarginalSampler(-torch.rand(5, 2)), k=4, m=2)
    cert, _ = checked_importance_certificate(model, torch.rand(2), [[0]], [[]], sampler=MarginalSampler(torch.rand(5, 2)),
                                             k=4, m=2, out=tmp_path / "c.json")
    doc = json.loads(cert.to_json())
    doc["input"]["x"] = encode_array(-np.ones(2))
    report = _verify(doc, model, tmp_path)
    assert not report.valid and "AssertionError" in report.problems[0]


def test_an_alpha_whose_complement_rounds_to_one_is_a_usage_error():
    from certify.errors import UsageError

    with pytest.raises(UsageError, match="1 - alpha"):
        checked_importance_certificate(_Constant(3, 0.0).eval(), torch.rand(3), [[0]], [[]],
                                       sampler=MarginalSampler(torch.rand(4, 3)), alpha=1e-17)
