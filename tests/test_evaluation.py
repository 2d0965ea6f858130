"""The robustness study: structure, certified bounds never violated, verdict, bad configuration."""
import pytest
import torch

from certify.errors import UsageError
from certify.evaluation import StudyConfig, run_study
from certify.models import zoo


def test_study_reports_metrics_certificates_and_verdict():
    model, data = zoo.load("digits-softplus-mlp")
    result = run_study(model, data, "digits-softplus-mlp", ["gradient", "integrated-gradients", "moreaugrad"],
                       StudyConfig(n=4, eps=(0.3, 1.0), steps=4, restarts=1))
    assert result["violations"] == 0
    assert set(result["methods"]) == {"gradient", "integrated-gradients", "moreaugrad"}
    mg = result["methods"]["moreaugrad"][-1]
    assert mg["eps"] == 1.0 and mg["certified_bound"]["min"] > 0
    assert mg["observed_over_certified"]["max"] <= 1
    assert result["methods"]["integrated-gradients"][0]["certified_bound"] is None  # no stability theorem
    for row in result["methods"]["gradient"]:
        assert 0 <= row["adversarial"]["topk_intersection"]["mean"] <= 1
        assert row["adversarial"]["normalized_l2_distance"]["mean"] >= 0
    assert any(word in result["verdict"] for word in ("REPRODUCED", "REFUTED", "PARTLY"))


@pytest.mark.parametrize("bad", [dict(n=0), dict(eps=()), dict(eps=(-1.0,)), dict(k=1.5)])
def test_bad_configuration(bad):
    with pytest.raises(UsageError):
        StudyConfig(**bad)


def test_the_study_keeps_the_report_panels_examples():
    """At the largest eps each method records the input its attack moved most (x, a(x), x + d, a(x + d)), and
    the study explains the first misclassified test inputs for their predicted class."""
    from certify.evaluation import StudyConfig, run_study
    from certify.models import zoo

    model, data = zoo.load("digits-softplus-mlp")
    result = run_study(model, data, "digits-softplus-mlp", ["gradient"], StudyConfig(n=4, eps=(0.1, 0.5), steps=2, restarts=1))
    rows = result["methods"]["gradient"]
    assert "example" not in rows[0] and rows[1]["eps"] == 0.5
    e = rows[1]["example"]
    d = torch.tensor(e["x_attacked"]) - torch.tensor(e["x"])
    assert float(d.norm()) <= 0.5 + 1e-6 and len(e["a"]) == len(e["a_attacked"]) == 64
    wrong = result["misclassified"]
    with torch.no_grad():
        predicted = model(data.x_test).argmax(dim=1)
    assert wrong["indices"] == torch.nonzero(predicted != data.y_test).flatten()[:4].tolist()
    assert all(int(predicted[i]) == p != y for i, p, y in zip(wrong["indices"], wrong["predicted"], wrong["labels"]))
    assert len(wrong["attributions"]["gradient"]) == len(wrong["indices"])
