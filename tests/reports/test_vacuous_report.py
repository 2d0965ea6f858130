"""The report never shows an empty certificate as an achievement (issue 13, item 5): a certified top-k of 0
is labelled vacuous in the claim table (and kept out of its value column) and in the robustness table."""
import json

import pytest

from certify.certificates.builder import certify_explanations
from certify.certificates.document import parse_certificate
from certify.certificates.summary import TOPK_VACUOUS, vacuous_label
from certify.explain import Gradient
from certify.models import zoo
from certify.reports.report import claim_table_rows, write_report

TOPK_LABEL = vacuous_label(TOPK_VACUOUS)


def _zero_topk(cert):
    doc = json.loads(cert.to_json())
    next(c for c in doc["claims"] if c["id"] == "topk")["value"] = 0.0
    return parse_certificate(json.dumps(doc))


@pytest.fixture(scope="module")
def certificates():
    model, data = zoo.load("digits-softplus-mlp")
    return certify_explanations(Gradient(model), data.x_test[:2])


def _row(rows, claim_id):
    return next(r for r in rows if r[1] == claim_id)


def test_claim_table_counts_vacuous_values_apart(certificates):
    honest = _row(claim_table_rows("gradient", certificates), "topk")
    assert honest[2] == "certified" and honest[3].startswith(">= ") and "vacuous" not in honest[4]

    one = _row(claim_table_rows("gradient", [_zero_topk(certificates[0]), certificates[1]]), "topk")
    assert one[2] == "certified, vacuous on 1/2"
    assert one[3] == f">= {certificates[1].claim('topk').value:.4g} [{certificates[1].claim('topk').value:.4g}, " \
                     f"{certificates[1].claim('topk').value:.4g}]"  # the 0 is not in the spread
    assert one[4].startswith(f"{TOPK_LABEL} on 1 of 2 examples")

    both = _row(claim_table_rows("gradient", [_zero_topk(c) for c in certificates]), "topk")
    assert both[2] == "certified, vacuous on 2/2" and both[3] == "-"


def _stat(v):
    return {"mean": v, "std": 0.0, "min": v, "max": v, "median": v}


def test_report_labels_a_zero_topk_vacuous(certificates, tmp_path):
    rows = claim_table_rows("gradient", [_zero_topk(c) for c in certificates])
    (tmp_path / "summary.json").write_text(json.dumps({
        "description": "test model", "method_rows": [["gradient", "{}", "0.1", "2/2 verified", "0.3", "0.0"]],
        "certificate_note": "note", "claim_rows": rows, "environment": {},
    }))
    sim = {"normalized_l2_distance": _stat(0.1), "topk_intersection": _stat(0.9), "ssim": _stat(0.9)}
    entry = {"eps": 0.1, "random": sim, "adversarial": sim, "observed_change": _stat(0.1), "certified_bound": _stat(1.0),
             "observed_over_certified": _stat(0.1), "certified_topk": _stat(0.0)}
    (tmp_path / "evaluation.json").write_text(json.dumps({
        "description": "study", "verdict": "verdict", "methods": {"gradient": [entry]}}))
    md, page, _ = write_report(tmp_path)
    table = [line for line in md.read_text().splitlines() if line.startswith("| gradient | topk |")]
    assert len(table) == 1 and "vacuous on 2/2" in table[0] and TOPK_LABEL in table[0] and ">= 0 " not in table[0]
    robustness = [line for line in md.read_text().splitlines() if line.startswith("| gradient | 0.1 |")]
    assert len(robustness) == 1 and robustness[0].rstrip(" |").endswith(TOPK_LABEL)
    assert TOPK_LABEL in page.read_text()


def test_a_statement_shown_for_several_examples_names_whose_class_it_is(certificates):
    """The table shows example 0's statement (it names N_c of example 0's class): with examples of other
    classes the row says so and lists them."""
    classes = sorted({c.target for c in certificates})
    rows = claim_table_rows("gradient", certificates)
    stability = _row(rows, "stability")[4]
    if len(classes) > 1:
        assert stability.startswith(f"(example 0, explained class {certificates[0].target}; the examples' classes: "
                                    f"{', '.join(map(str, classes))})")
    else:
        assert not stability.startswith("(example 0")
    assert f"N_{certificates[0].target}" in stability
