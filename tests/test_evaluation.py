"""The robustness study: structure, certified bounds never violated, verdict, bad configuration."""
import pytest

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
