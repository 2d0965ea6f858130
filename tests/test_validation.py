"""Bad input to any explainer gets a clear error of the package's own type, naming the problem; bad radii
(eps = inf, nan, 0, negative) are usage errors wherever they enter, in the API and on the command line."""
import math

import pytest
import torch
from torch import nn

from certify.attacks.interpretation import interpretation_attack, random_perturbation
from certify.certificates.builder import certify_explanations
from certify.cli import main
from certify.errors import EXIT_USAGE, InvalidInputError, ModelModeError, TargetError, UsageError
from certify.evaluation import StudyConfig
from certify.explain import Gradient, IntegratedGradients, SmoothGrad
from certify.validation import (
    all_finite,
    autograd_enabled,
    check_explainable,
    check_finite_attributions,
    grad_ready,
    nonnegative_number,
    positive_int,
    positive_number,
    submodules,
)

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


BAD_RADII = [math.inf, -math.inf, math.nan, 0.0, -0.1, True, "0.1", None]


@pytest.mark.parametrize("value", BAD_RADII)
def test_positive_number_refuses_non_finite_and_non_positive_values(value):
    with pytest.raises(UsageError, match="eps must be a finite number > 0"):
        positive_number(value, "eps")


def test_parameter_checks_accept_good_values_and_name_the_parameter():
    assert positive_number(0.1) == 0.1 and positive_number(2, "rho") == 2.0
    assert nonnegative_number(0, "sigma") == 0.0
    with pytest.raises(UsageError, match="sigma must be a finite number >= 0"):
        nonnegative_number(math.inf, "sigma")
    assert positive_int(3, "samples") == 3
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(UsageError, match="samples must be an integer >= 1"):
            positive_int(bad, "samples")
    with pytest.raises(UsageError, match="sigma must be a finite number >= 0"):
        SmoothGrad(nn.Linear(2, 2), sigma=math.inf)


@pytest.mark.parametrize("eps", [math.inf, math.nan, 0.0, -0.1])
def test_bad_eps_is_a_usage_error_at_every_api_entry(digits_mlp, eps):
    model, data = digits_mlp
    x = data.x_test[:1]
    explainer = Gradient(model)
    with pytest.raises(UsageError, match="eps must be a finite number > 0"):
        certify_explanations(explainer, x, eps=eps)
    with pytest.raises(UsageError, match="eps must be a finite number > 0"):
        interpretation_attack(explainer, x, eps)
    with pytest.raises(UsageError, match="eps must be a finite number > 0"):
        random_perturbation(explainer, x, eps)
    with pytest.raises(UsageError, match="eps"):
        StudyConfig(eps=(0.1, eps))


@pytest.mark.parametrize("eps", ["inf", "nan", "0", "-1", "Infinity"])
def test_bad_eps_on_the_command_line_exits_64_without_a_traceback(tmp_path, capsys, eps):
    out = tmp_path / "c.json"
    for argv in (["explain", "--model", "zoo:digits-relu-mlp", "--method", "gradient", f"--eps={eps}", "--out", str(out)],
                 ["evaluate", "--model", "zoo:digits-relu-mlp", "--eps", "0.1", f"{eps}"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == EXIT_USAGE
        err = capsys.readouterr().err
        assert "eps must be a finite number > 0" in err and "Traceback" not in err
    assert not out.exists()


def test_autograd_helpers_work_inside_inference_mode():
    model = nn.Linear(3, 2)
    with torch.inference_mode():
        x = torch.ones(2, 3)
        with autograd_enabled():
            y = grad_ready(x, model).requires_grad_(True)
            (grad,) = torch.autograd.grad(model(y).sum(), y)
    assert torch.allclose(grad, model.weight.sum(0).expand(2, 3))
    with torch.inference_mode():
        frozen = nn.Linear(3, 2)
    with pytest.raises(UsageError, match="inference_mode"):
        grad_ready(torch.ones(1, 3), frozen)


def test_non_finite_attributions_are_refused_naming_the_examples():
    a = torch.zeros(4, 3)
    a[2, 1] = math.nan
    a[3, 0] = math.inf
    with pytest.raises(InvalidInputError, match=r"gradient: non-finite attributions for examples \[2, 3\]"):
        check_finite_attributions(a, "gradient")
    check_finite_attributions(a, "moreaugrad", exempt=torch.tensor([False, False, True, True]))


def test_all_finite_agrees_with_the_entrywise_check_also_when_the_sum_overflows():
    big = torch.full((4, 3), torch.finfo(torch.float32).max)  # finite entries whose float32 sum is inf
    assert all_finite(big) and all_finite(torch.zeros(0, 3)) and all_finite(torch.arange(6).view(2, 3))
    for bad in (math.nan, math.inf, -math.inf):
        for values in (torch.zeros(2, 5), big.clone()):
            values[1, 2] = bad
            assert not all_finite(values)
    mixed = torch.tensor([[math.inf, -math.inf]])  # a NaN sum
    assert not all_finite(mixed)
    assert not all_finite(torch.tensor([1.0 + 0j, complex(0.0, math.nan)])) and all_finite(torch.ones(2, dtype=torch.complex64))


def test_submodules_are_the_modules_of_named_modules_each_once():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), nn.Sequential(shared, nn.Identity()))
    model.register_module("missing", None)
    model[2].add_module("loop", model)  # a cycle: named_modules' memo ends it, and so must the walk
    assert sorted(map(id, submodules(model))) == sorted(id(m) for _, m in model.named_modules())


def test_check_explainable_refuses_training_mode_before_inference_parameters():
    with torch.inference_mode():
        frozen = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5))
    frozen.eval()
    frozen[1].train()
    with pytest.raises(ModelModeError, match=r"modules: 1\)"):
        check_explainable(frozen)
    frozen.eval()
    with pytest.raises(UsageError, match=r"parameters \['0.weight', '0.bias'\].*inference_mode"):
        check_explainable(frozen)
    model = nn.Sequential(nn.Linear(3, 2))
    with torch.inference_mode():
        model.register_buffer("scale", torch.ones(2))  # an inference buffer is refused as well
    with pytest.raises(UsageError, match=r"\['scale'\].*inference_mode"):
        check_explainable(model.eval())
    check_explainable(nn.Sequential(nn.Linear(3, 2)).eval())
