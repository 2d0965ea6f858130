"""Bad input to any explainer gets a clear error of the package's own type, naming the problem."""
import pytest
import torch
from torch import nn

from certify.errors import InvalidInputError, ModelModeError, TargetError
from certify.explain import Gradient, IntegratedGradients, SmoothGrad

EXPLAINERS = [Gradient, lambda m: IntegratedGradients(m, n_steps=4), lambda m: SmoothGrad(m, samples=2)]


@pytest.fixture(params=EXPLAINERS, ids=["gradient", "ig", "smoothgrad"])
def explainer(request, digits_mlp):
    return request.param(digits_mlp[0])


@pytest.fixture
def x(digits_mlp):
    return digits_mlp[1].x_test[:3].clone()


def test_nan_and_inf_are_refused(explainer, x):
    for bad in (float("nan"), float("inf")):
        x_bad = x.clone()
        x_bad[1, 5] = bad
        with pytest.raises(InvalidInputError, match=r"NaN or Inf \(examples \[1\]\)"):
            explainer.attribute(x_bad)


def test_wrong_rank_shape_and_dtype_are_refused(explainer, x):
    with pytest.raises(InvalidInputError, match="batch dimension"):
        explainer.attribute(x[0])
    with pytest.raises(InvalidInputError, match=r"cannot evaluate inputs of shape \(3, 63\)"):
        explainer.attribute(x[:, :63])
    with pytest.raises(InvalidInputError, match="floating dtype"):
        explainer.attribute(x.long())
    with pytest.raises(InvalidInputError, match="torch.Tensor"):
        explainer.attribute(x.numpy())
    with pytest.raises(InvalidInputError, match="empty batch"):
        explainer.attribute(x[:0])


def test_targets_out_of_range_or_wrong_length_are_refused(explainer, x):
    with pytest.raises(TargetError, match=r"\[10, 10, 10\] out of range .* 10 classes"):
        explainer.attribute(x, target=10)
    with pytest.raises(TargetError, match="out of range"):
        explainer.attribute(x, target=[0, -1, 2])
    with pytest.raises(TargetError, match="2 entries for a batch of 3"):
        explainer.attribute(x, target=[0, 1])
    with pytest.raises(TargetError, match="integer class indices"):
        explainer.attribute(x, target=torch.tensor([0.0, 1.0, 2.0]))


def test_target_forms_agree(explainer, x):
    as_int = Gradient(explainer.model).attribute(x, target=4)
    as_list = Gradient(explainer.model).attribute(x, target=[4, 4, 4])
    as_tensor = Gradient(explainer.model).attribute(x, target=torch.tensor([4, 4, 4]))
    assert torch.equal(as_int, as_list) and torch.equal(as_int, as_tensor)


def test_model_in_training_mode_is_refused(x):
    model = nn.Sequential(nn.Linear(64, 16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, 10))
    with pytest.raises(ModelModeError, match="training mode .*call model.eval"):
        Gradient(model).attribute(x)
    model.eval()
    model[1].train()  # one submodule left in training mode is enough to refuse
    with pytest.raises(ModelModeError, match="modules: 1"):
        Gradient(model).attribute(x)


def test_model_output_must_be_logits_matrix(x):
    model = nn.Sequential(nn.Linear(64, 10), nn.Flatten(0)).eval()
    with pytest.raises(InvalidInputError, match=r"logits of shape \[batch, classes\]"):
        Gradient(model).attribute(x)
