"""The robustness study: structure, certified bounds never violated, verdicts with n and confidence intervals,
the new baselines and metrics, the gradient-free search, the parameter sweep, bad configuration."""
import math

import pytest
import torch
from scipy import stats

from certify.errors import UsageError
from certify.evaluation import StudyConfig, SweepConfig, run_study, run_sweep
from certify.evaluation.claims import lagrange_speed, lagrange_stability
from certify.evaluation.statistics import MIN_EVIDENCE, proportion, ratio_of_means, summary
from certify.evaluation.study import random_search, random_sphere, study_explainer
from certify.evaluation.table import render, render_sweep
from certify.metrics import normalized_l2_distance, topk_intersection
from certify.models import zoo


@pytest.fixture(scope="module")
def mlp():
    return zoo.load("digits-softplus-mlp")


def test_study_reports_metrics_certificates_and_verdict(mlp):
    model, data = mlp
    result = run_study(model, data, "digits-softplus-mlp", ["gradient", "integrated-gradients", "moreaugrad"],
                       StudyConfig(n=4, eps=(0.3, 1.0), steps=4, restarts=1))
    assert result["violations"] == 0
    assert set(result["methods"]) == {"gradient", "integrated-gradients", "moreaugrad"}
    mg = result["methods"]["moreaugrad"][-1]
    assert mg["eps"] == 1.0 and mg["certified_bound"]["min"] > 0
    assert mg["observed_over_certified"]["max"] <= 1
    assert mg["certified_topk_kind"].startswith("deterministic")
    assert result["methods"]["integrated-gradients"][0]["certified_bound"] is None  # no stability theorem
    for row in result["methods"]["gradient"]:
        adv = row["adversarial"]
        assert 0 <= adv["topk_intersection"]["mean"] <= 1 and adv["normalized_l2_distance"]["mean"] >= 0
        assert adv["normalized_l2_distance"]["n"] == 4
        lo, hi = adv["absolute_change"]["ci95"]
        assert lo <= adv["absolute_change"]["mean"] <= hi
        assert row["attack"].startswith("L2 top-k interpretation attack")
    # n = 4 < 30: the paper's claim is neither reproduced nor refuted
    assert result["claims"][0]["verdict"].startswith("NOT ENOUGH EVIDENCE") and result["verdict"].startswith("NOT ENOUGH")
    assert result["quality"] is None and result["accuracy"] is None  # metrics are off by default (the demo stays fast)


@pytest.mark.parametrize("bad", [dict(n=0), dict(eps=()), dict(eps=(-1.0,)), dict(k=1.5), dict(search_draws=0),
                                 dict(topk_confidence=1.0), dict(severities=(6,)), dict(severities=())])
def test_bad_configuration(bad):
    with pytest.raises(UsageError):
        StudyConfig(**bad)


def test_unknown_method_is_a_usage_error(mlp):
    model, data = mlp
    with pytest.raises(UsageError, match="unknown methods"):
        run_study(model, data, None, ["frobnicate"], StudyConfig(n=1, eps=(0.1,)))


def test_the_study_keeps_the_report_panels_examples(mlp):
    """At the largest eps each method records the input its attack moved most (x, a(x), x + d, a(x + d)), and
    the study explains the first misclassified test inputs for their predicted class."""
    model, data = mlp
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


def test_baselines_metrics_and_certified_topk_side_by_side(mlp):
    """The Lagrange-dual explainer and the baselines are attacked by the random search; Sparsified SmoothGrad's
    probabilistic certified top-k sits next to MoreauGrad's; every metric has n and a CI; the table shows them."""
    model, data = mlp
    methods = ["moreaugrad", "sparsified-smoothgrad", "lagrange-dual", "kernel-shap", "occlusion"]
    result = run_study(model, data, "digits-softplus-mlp", methods,
                       StudyConfig(n=3, eps=(0.5,), steps=2, restarts=1, search_draws=2, metrics=True, infidelity_samples=4,
                                   sensitivity_samples=2))
    assert result["violations"] == 0
    for m in methods[1:]:
        assert result["methods"][m][0]["attack"].startswith("gradient-free random search")
    ssg = result["methods"]["sparsified-smoothgrad"][0]
    assert ssg["certified_topk_kind"].startswith("probabilistic") and 0 <= ssg["certified_topk"]["mean"] <= 1
    assert ssg["certified_bound"] is None  # no stability theorem: a top-k claim only
    for m in methods:
        q = result["quality"][m]
        for key in ("deletion_auc", "insertion_auc", "infidelity", "max_sensitivity", "seconds_per_explanation"):
            assert q[key]["n"] == 3 and q[key]["ci95"][0] <= q[key]["mean"] <= q[key]["ci95"][1]
        assert set(q["corruption_change"]) == {f"{c}@3" for c in ("gaussian-noise", "gaussian-blur", "contrast", "pixelate")}
        assert q["peak_memory_bytes"] == "n/a (CPU)" and all(t > 0 for t in q["per_input"]["seconds"])
    assert set(result["accuracy"]) == {"clean", "fgsm@0.5", "pgd@0.5"}
    assert result["accuracy"]["pgd@0.5"]["mean"] <= result["accuracy"]["clean"]["mean"]
    assert result["claims"][0]["verdict"] == "NOT RUN"  # no gradient baseline among the methods
    assert all("NOT ENOUGH EVIDENCE (n = 3 < 30" in c["verdict"] for c in result["claims"][1:])
    text = render(result)
    assert "sparsified-smoothgrad (probabilistic" in text and "moreaugrad (deterministic" in text and "insertion AUC" in text


def test_random_search_keeps_the_worst_draw_in_the_ball_and_class(mlp):
    model, data = mlp
    x = data.x_test[:4]
    explainer = study_explainer("occlusion", model, x, data)
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    original = explainer.attribute(x, target=target)
    found = random_search(explainer, x, original, 0.5, 13, 3, data.domain, 0, target)
    first = random_sphere(explainer, x, 0.5, 13, data.domain, 1, target)  # the search's first draw
    assert bool((topk_intersection(original, found.attributions, 13) <= topk_intersection(original, first.attributions, 13)).all())
    assert float((found.points - x).flatten(1).norm(dim=1).max()) <= 0.5 + 1e-5
    with torch.no_grad():
        assert torch.equal(model(found.points).argmax(dim=1), target)
    assert torch.allclose(found.attributions, explainer.attribute(found.points, target=target))


def _rows(distances):
    return [{"eps": 0.5, "per_input": {"adversarial_distance": distances.tolist()}}]


def test_lagrange_claims_need_thirty_inputs_and_follow_the_interval():
    torch.manual_seed(0)
    base = 0.5 + torch.rand(MIN_EVIDENCE)
    stable = lagrange_stability({"lagrange-dual": _rows(0.5 * base), "lime": _rows(base)}, seed=0)
    assert stable["verdict"] == "vs lime: REPRODUCED (gain interval above 0.15)" and stable["n"] == MIN_EVIDENCE
    same = lagrange_stability({"lagrange-dual": _rows(base), "kernel-shap": _rows(base)}, seed=0)
    assert same["verdict"].startswith("vs kernel-shap: REFUTED")
    few = lagrange_stability({"lagrange-dual": _rows(0.5 * base[:29]), "lime": _rows(base[:29])}, seed=0)
    assert "NOT ENOUGH EVIDENCE (n = 29" in few["verdict"]
    quality = lambda seconds, q: {"per_input": {"seconds": seconds.tolist(), "quality": q.tolist()}}  # noqa: E731
    fast = lagrange_speed({"lagrange-dual": quality(base / 3, base), "lime": quality(base, base)}, seed=0)
    assert fast["verdict"] == "vs lime: REPRODUCED (speed-up interval above 2)"
    worse = lagrange_speed({"lagrange-dual": quality(base / 3, base - 1), "lime": quality(base, base)}, seed=0)
    assert "not at matched quality" in worse["verdict"]


def test_intervals_match_their_definitions():
    values = torch.tensor([1.0, 2.0, 4.0, 7.0])
    s = summary(values)
    half = stats.t.ppf(0.975, 3) * float(values.std()) / 2
    assert s["n"] == 4 and s["ci95"] == pytest.approx([s["mean"] - half, s["mean"] + half])
    p = proportion(torch.tensor([False] * 10))
    assert p["mean"] == 0 and p["ci95"] == pytest.approx([0.0, 1 - 0.025 ** (1 / 10)])  # Clopper-Pearson at k = 0
    r = ratio_of_means(torch.full((5,), 3.0), torch.full((5,), 1.5))
    assert r["mean"] == 2.0 and r["ci95"] == pytest.approx([2.0, 2.0])
    assert math.isnan(summary(torch.tensor([math.nan]))["mean"])


def test_sweep_marks_the_rule_of_thumb_and_the_certified_rho(mlp):
    model, data = mlp
    sweep = run_sweep(model, data, SweepConfig(n=3, rhos=(0.01, 1.0), etas=(0.0, 0.5), sigmas=(0.1, 0.5)))
    thumb = 1 / math.sqrt(float(data.x_test[:3].double().norm(dim=1).mean()))
    assert sweep["rule_of_thumb_rho"] == pytest.approx(thumb) and thumb in [r["rho"] for r in sweep["rows"]["rho"]]
    by_rho = {r["rho"]: r["discrepancy"]["mean"] for r in sweep["rows"]["rho"]}
    assert by_rho[0.01] < by_rho[1.0]  # the Moreau envelope's gradient tends to the gradient as rho -> 0
    eta = {r["eta"]: r["gini"]["mean"] for r in sweep["rows"]["eta"]}
    assert eta[0.5] > eta[0.0]  # the sparsity penalty makes the map sparser
    assert len(sweep["matched_sparsity"]) == len(sweep["rows"]["rho"])
    assert sweep["certified_optimal_rho"]["n"] >= 1
    assert "rule of thumb" in render_sweep(sweep)
