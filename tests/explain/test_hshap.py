"""certify.explain.hshap: exactness on OR games against brute force, batching, budget, thresholds,
references, targets, refusals, and the support found on the composite-digit task."""
import math

import pytest
import torch

from certify.errors import InvalidInputError, UsageError
from certify.explain.hshap import HShap, shapley_matrix
from certify.explain.registry import make_explainer
from certify.models import zoo
from certify.models.composite import tile_scores
from proofs_checks.hshap import OrGame, brute_force_shapley


def _or_case(n, concepts):
    x = torch.zeros(1, n, dtype=torch.float64)
    x[0, concepts] = 1.0
    return OrGame(concepts).double().eval(), x


def test_shapley_matrix_matches_the_definition():
    # v(S) = |S|^2 on 3 players: phi_j = sum_S w(|S|) ((|S|+1)^2 - |S|^2) = 3 (symmetric, efficiency 9)
    W = shapley_matrix(3)
    v = torch.tensor([bin(c).count("1") ** 2 for c in range(8)], dtype=torch.float64)
    assert torch.allclose(v @ W, torch.full((3,), 3.0, dtype=torch.float64))
    assert torch.allclose(W.sum(dim=0), torch.zeros(3, dtype=torch.float64), atol=1e-15)  # null game -> 0


@pytest.mark.parametrize("gamma", [2, 4])
@pytest.mark.parametrize("concepts", [[5], [1, 14], [0, 7, 9], [2, 3, 8, 11, 15]])
def test_or_game_support_sum_and_cost_against_brute_force(gamma, concepts):
    model, x = _or_case(16, concepts)
    e = HShap(model, gamma=gamma, score="logit").explain(x, target=1)
    a = e.attributions[0]
    brute = brute_force_shapley(model, x, torch.eye(16, dtype=torch.bool))
    assert set(a.nonzero().flatten().tolist()) == set(brute.abs().gt(1e-9).nonzero().flatten().tolist()) == set(concepts)
    assert math.isclose(float(a.sum()), 1.0, abs_tol=1e-12)
    k, depth = len(concepts), round(math.log(16, gamma))
    assert int(e.diagnostics["calls"][0]) <= 2**gamma * k * depth
    assert int(e.diagnostics["depth"][0]) == depth and int(e.diagnostics["leaves"][0]) == k
    if k <= 2:
        assert torch.allclose(a, brute, atol=1e-12)


def test_k3_leaf_values_differ_from_shapley():
    """The measured nuance (ANCHORS 5.2): concepts 0, 1 share a half, 8 is alone -> 1/4, 1/4, 1/2, not 1/3."""
    model, x = _or_case(16, [0, 4, 8])
    a = HShap(model, gamma=2, score="logit").attribute(x, target=1)[0]
    assert a[[0, 4, 8]].tolist() == [0.25, 0.25, 0.5]


def test_images_quadrants_and_halves():
    x = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    x[0, :, 1, 1] = 1.0
    x[0, :, 6, 2] = 1.0
    model = OrGame([9, 50]).double().eval()  # channel 0, pixels (1, 1) and (6, 2)
    for gamma in (4, 2):
        a = HShap(model, gamma=gamma, score="logit").attribute(x, target=1)
        support = a[0].sum(dim=0).nonzero().tolist()
        assert support == [[1, 1], [6, 2]]
        assert math.isclose(float(a.sum()), 1.0, abs_tol=1e-12)
        assert torch.allclose(a[0, 0], a[0, 2])  # spread uniformly over the channels
    a = HShap(model, min_size=2, score="logit").attribute(x, target=1)[0, 0]  # leaves are 2x2 blocks
    assert torch.allclose(a[0:2, 0:2], torch.full((2, 2), 0.5 / 12, dtype=torch.float64))
    assert float(a[6:8, 2:4].sum()) * 3 == pytest.approx(0.5)


def test_batch_equals_one_at_a_time():
    model, data = zoo.load("composite-relu-cnn")
    x = data.x_test[:6]
    explainer = HShap(model, min_size=4, reference=data)
    batch = explainer.explain(x, target=1)
    for i in range(6):
        one = explainer.explain(x[i : i + 1], target=1)
        assert torch.allclose(one.attributions[0], batch.attributions[i], atol=1e-6)
        assert int(one.diagnostics["calls"][0]) == int(batch.diagnostics["calls"][i])
    small = HShap(model, min_size=4, reference=data, batch_size=7).explain(x, target=1)  # chunking: same result
    assert torch.allclose(small.attributions, batch.attributions, atol=1e-6)


def test_sum_identity_and_budget_on_a_real_model():
    model, data = zoo.load("composite-relu-cnn")
    x = data.x_test[:20]
    for kw in ({}, {"threshold": 0.05}, {"relative": True, "threshold": 50.0}, {"budget": 30}):
        e = HShap(model, min_size=2, reference=data, **kw).explain(x)
        d = e.diagnostics
        gap = d["f_x"] - d["f_ref"]
        assert torch.allclose(e.attributions.flatten(1).sum(1) + d["pruned"], gap, atol=1e-5)
        if "budget" in kw:
            assert int(d["calls"].max()) <= 30 and int(d["truncated"].sum()) > 0
    unlimited = HShap(model, min_size=1, reference=data).explain(x)
    assert int(unlimited.diagnostics["calls"].max()) > 30


def test_relative_threshold_explores_less():
    model, data = zoo.load("composite-relu-cnn")
    x = data.x_test[data.y_test == 1][:20]
    absolute = HShap(model, min_size=2, reference=data).explain(x, target=1)
    relative = HShap(model, min_size=2, reference=data, relative=True, threshold=75.0).explain(x, target=1)
    assert int(relative.diagnostics["calls"].sum()) < int(absolute.diagnostics["calls"].sum())
    assert int(relative.diagnostics["leaves"].sum()) < int(absolute.diagnostics["leaves"].sum())
    # the 75th percentile of 4 siblings keeps at most one child per node
    top = HShap(model, min_size=8, reference=data, relative=True, threshold=75.0).explain(x, target=1)
    assert int(top.diagnostics["leaves"].max()) == 1


def test_reference_forms_agree():
    model, data = zoo.load("composite-relu-cnn")
    x = data.x_test[:3]
    mean = data.x_train.mean(dim=0)
    base = HShap(model, min_size=8, reference=mean).attribute(x, target=1)
    for ref in (data, "digits-composite", mean.unsqueeze(0), mean.expand(3, 1, 16, 16)):
        assert torch.allclose(HShap(model, min_size=8, reference=ref).attribute(x, target=1), base, atol=1e-6)
    assert torch.allclose(HShap(model, min_size=8).attribute(x, target=1, reference=mean), base, atol=1e-6)
    zeros = HShap(model, min_size=8).explain(x, target=1)
    assert torch.allclose(zeros.diagnostics["f_ref"], model(torch.zeros(1, 1, 16, 16)).softmax(1)[0, 1].expand(3), atol=1e-6)
    assert HShap(model, reference=0.5).params()["reference"] == "constant:0.5"
    with pytest.raises(InvalidInputError):
        HShap(model).attribute(x, target=1, reference=torch.zeros(2, 1, 16, 16))
    with pytest.raises(UsageError):
        HShap(model, reference=[0.0]).attribute(x, target=1)


def test_targets_int_list_none_and_logit_score():
    model, data = zoo.load("composite-relu-cnn")
    x = data.x_test[:4]
    pred = model(x).argmax(1)
    e_none = HShap(model, min_size=8, reference=data).explain(x)
    assert torch.equal(e_none.target, pred)
    e_list = HShap(model, min_size=8, reference=data).explain(x, target=pred.tolist())
    assert torch.allclose(e_none.attributions, e_list.attributions)
    e0 = HShap(model, min_size=8, reference=data).explain(x, target=0)
    e1 = HShap(model, min_size=8, reference=data).explain(x, target=1)
    # two classes: p0 = 1 - p1, so f(x) - f(ref) flips sign
    assert torch.allclose(e0.diagnostics["f_x"] - e0.diagnostics["f_ref"], -(e1.diagnostics["f_x"] - e1.diagnostics["f_ref"]), atol=1e-6)
    logit = HShap(model, min_size=8, reference=data, score="logit").explain(x, target=1)
    ref_logit = model(data.x_train.mean(0, keepdim=True))[0, 1]
    assert torch.allclose(logit.diagnostics["f_ref"], ref_logit.expand(4), atol=1e-5)


def test_composite_support_precision_recall():
    model, data = zoo.load("composite-relu-cnn")
    pos = data.y_test == 1
    x, support = data.x_test[pos][:100], data.support_test[pos][:100]
    e = HShap(model, min_size=8, reference=data, threshold=0.05).explain(x, target=1)
    found = tile_scores(e.attributions, 2) > 0
    tp = (found & support).sum()
    assert float(tp / found.sum()) >= 0.9 and float(tp / support.sum()) >= 0.9
    assert int(e.diagnostics["calls"].max()) <= 16


def test_bad_parameters_and_inputs():
    model = OrGame([0]).eval()
    for kw in (
        {"gamma": 1}, {"gamma": 13}, {"gamma": 2.5}, {"threshold": float("nan")}, {"relative": True, "threshold": 120},
        {"relative": "yes"}, {"min_size": 0}, {"budget": 8}, {"score": "margin"}, {"batch_size": 0},
    ):
        with pytest.raises(UsageError):
            HShap(model, **kw)
    with pytest.raises(UsageError):
        HShap(model, gamma=3).attribute(torch.zeros(1, 1, 4, 4), target=1)  # images: 2 or a square
    with pytest.raises(InvalidInputError):
        HShap(model).attribute(torch.zeros(1, 1, 1, 4, 4), target=1)
    with pytest.raises(UsageError):
        HShap(model).attribute(torch.zeros(1, 4), target=1, baselines=0)


def test_registry_and_gamma3_vectors():
    model, x = _or_case(27, [4, 20])
    explainer = make_explainer("h-shap", model, gamma=3, score="logit")
    a = explainer.attribute(x, target=1)[0]
    assert set(a.nonzero().flatten().tolist()) == {4, 20} and torch.allclose(a[[4, 20]], torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert explainer.params()["gamma"] == 3


def test_the_recorded_reference_is_accepted_back_and_a_bad_name_is_a_usage_error():
    """Found by the issue-15 review: params() records the default reference as "zeros", which was refused."""
    import torch as _torch

    from certify.errors import UsageError as _UsageError
    from certify.explain.hshap import HShap as _HShap

    model = _torch.nn.Sequential(_torch.nn.Flatten(), _torch.nn.Linear(16, 2)).eval()
    assert _HShap(model, reference="zeros").params()["reference"] == "zeros"
    assert _HShap(model, reference="mean:digits-composite").params()["reference"] == "mean:digits-composite"
    with pytest.raises(_UsageError):
        _HShap(model, reference="mnist")
