"""Gradient (saliency) explanations (certify/explain/gradient.py): equal to Captum's Saliency, exact on a
linear score, batched equal to per-example."""
import torch
from captum.attr import Saliency
from torch import nn

from certify.explain import Gradient
from conftest import assert_close_rel


def test_gradient_equals_captum_saliency(zoo_case):
    _, model, x, _ = zoo_case
    ours = Gradient(model).attribute(x, target=3)
    theirs = Saliency(model).attribute(x, target=3, abs=False)
    assert_close_rel(ours, theirs)


def test_gradient_of_a_linear_score_is_its_weight_row():
    layer = nn.Linear(6, 3).double().eval()
    x = torch.randn(4, 6, dtype=torch.float64)
    explanation = Gradient(layer).explain(x, target=[0, 1, 2, 1])
    assert torch.equal(explanation.attributions, layer.weight.detach()[[0, 1, 2, 1]])
    assert explanation.method == "gradient" and explanation.target.tolist() == [0, 1, 2, 1]


def test_batched_equals_per_example(zoo_case):
    _, model, x, y = zoo_case
    explainer = Gradient(model)
    batched = explainer.attribute(x, target=y)
    single = torch.cat([explainer.attribute(x[i : i + 1], target=int(y[i])) for i in range(x.shape[0])])
    assert_close_rel(batched, single, 1e-5)
