"""Captum adapters (certify/explain/captum_adapter.py and one module per method): each equals calling Captum
directly with the same options, targets, baselines and seed; shapes and targets follow certify's API; seeded
calls are deterministic and leave the global generator alone; bad options, layers and masks are refused; a
missing Captum names the extra to install."""
import sys

import pytest
import torch
from captum.attr import DeepLift as CaptumDeepLift
from captum.attr import KernelShap as CaptumKernelShap
from captum.attr import LayerAttribution, LayerGradCam
from captum.attr import Lime as CaptumLime
from captum.attr import Occlusion as CaptumOcclusion
from captum.attr import ShapleyValueSampling as CaptumShapleyValueSampling

from certify.errors import InvalidInputError, UnsupportedError, UsageError
from certify.explain.deeplift import DeepLift
from certify.explain.gradcam import GradCam
from certify.explain.kernel_shap import KernelShap, ShapleyValueSampling
from certify.explain.lime import Lime
from certify.explain.occlusion import Occlusion
from certify.models import zoo

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Captum's notices when called directly


@pytest.fixture(scope="module")
def cnn():
    model, data = zoo.load("digits-relu-cnn")
    return model, data.x_test[:5].clone(), data.y_test[:5].clone()


@pytest.fixture(scope="module")
def tabular():
    model, data = zoo.load("breast-cancer-relu-mlp")
    return model, data.x_test[:3].clone(), data.y_test[:3].clone()


def test_deeplift_equals_captum_with_its_convergence_delta(cnn):
    model, x, y = cnn
    baseline = torch.full_like(x[:1], 0.2)
    ours = DeepLift(model).explain(x, target=y, baselines=baseline)
    theirs, delta = CaptumDeepLift(model).attribute(x.clone().requires_grad_(), baselines=baseline, target=y,
                                                    return_convergence_delta=True)
    assert ours.attributions.shape == x.shape and ours.method == "deeplift"
    assert torch.equal(ours.attributions, theirs.detach())
    assert torch.equal(ours.diagnostics["convergence_delta"], delta)
    # summation-to-delta is exact for a ReLU network up to float32 rounding
    assert ours.diagnostics["convergence_delta"].abs().max() < 1e-4


def test_deeplift_default_target_is_the_predicted_class_and_runs_under_no_grad(cnn):
    model, x, _ = cnn
    with torch.no_grad():
        ours = DeepLift(model, multiply_by_inputs=False).explain(x)
    predicted = model(x).argmax(dim=1)
    assert torch.equal(ours.target, predicted) and "convergence_delta" not in ours.diagnostics
    theirs = CaptumDeepLift(model, multiply_by_inputs=False).attribute(x.clone().requires_grad_(), target=predicted)
    assert torch.equal(ours.attributions, theirs.detach())


@pytest.mark.parametrize("layer, relu, mode", [(None, False, "nearest"), ("0", True, "bilinear")])
def test_gradcam_equals_captum_upsampled(cnn, layer, relu, mode):
    model, x, y = cnn
    explainer = GradCam(model, layer=layer, relu_attributions=relu, interpolate_mode=mode)
    ours = explainer.explain(x, target=y)
    name = layer or "2"  # the last Conv2d of the zoo CNN
    cam = LayerGradCam(model, model.get_submodule(name)).attribute(x.clone().requires_grad_(), target=y,
                                                                   relu_attributions=relu)
    theirs = LayerAttribution.interpolate(cam, (8, 8), interpolate_mode=mode)
    assert explainer.params()["layer"] == name
    assert ours.attributions.shape == x.shape
    assert torch.equal(ours.attributions, theirs.detach())
    assert torch.equal(ours.diagnostics["layer_attributions"], cam.detach())
    if relu:
        assert bool((ours.attributions >= 0).all())


def test_gradcam_refusals(cnn, digits_mlp):
    model, x, _ = cnn
    with pytest.raises(UnsupportedError, match="no nn.Conv2d"):
        GradCam(digits_mlp[0])
    with pytest.raises(UsageError, match="no layer named 'conv9'"):
        GradCam(model, layer="conv9")
    with pytest.raises(UsageError, match="interpolate_mode"):
        GradCam(model, interpolate_mode="cubic")
    with pytest.raises(UnsupportedError, match="output"):
        GradCam(model, layer="5").attribute(x)  # the final Linear layer: activations [N, 10]
    with pytest.raises(UsageError, match="unknown options"):
        GradCam(model).attribute(x, baselines=0.0)


def test_occlusion_equals_captum(cnn):
    model, x, y = cnn
    ours = Occlusion(model, (1, 3, 3), strides=(1, 2, 2)).attribute(x, target=y, baselines=0.5)
    theirs = CaptumOcclusion(model).attribute(x, sliding_window_shapes=(1, 3, 3), strides=(1, 2, 2), baselines=0.5,
                                              target=y)
    assert torch.equal(ours, theirs)
    one_stride = Occlusion(model, (1, 2, 2), strides=2).attribute(x, target=y)
    assert torch.equal(one_stride, CaptumOcclusion(model).attribute(x, sliding_window_shapes=(1, 2, 2),
                                                                    strides=(2, 2, 2), target=y))


def test_occlusion_refusals(cnn):
    model, x, _ = cnn
    with pytest.raises(UsageError, match="sliding_window_shapes"):
        Occlusion(model, (1, 0, 2))
    with pytest.raises(UsageError, match="strides"):
        Occlusion(model, (1, 2, 2), strides=(1, 2))
    with pytest.raises(InvalidInputError, match="do not fit"):
        Occlusion(model, (2, 2)).attribute(x)
    with pytest.raises(InvalidInputError, match="do not fit"):
        Occlusion(model, (1, 9, 2)).attribute(x)
    with pytest.raises(InvalidInputError, match="broadcast"):
        Occlusion(model, (1, 2, 2)).attribute(x, baselines=torch.zeros(3, 3))


CAPTUM_SAMPLERS = [
    (KernelShap, CaptumKernelShap, {"n_samples": 40}),
    (ShapleyValueSampling, CaptumShapleyValueSampling, {"n_samples": 4, "perturbations_per_eval": 8}),
    (Lime, CaptumLime, {"n_samples": 60}),  # certify's defaults are Captum's: Lasso(0.01), cosine kernel of width 1
]


@pytest.mark.parametrize("ours_cls, theirs_cls, options", CAPTUM_SAMPLERS)
def test_sampling_methods_equal_captum_with_the_same_seed(tabular, ours_cls, theirs_cls, options):
    model, x, y = tabular
    baseline = x.mean(dim=0, keepdim=True)
    ours = ours_cls(model, seed=3, **options).explain(x, target=y, baselines=baseline)
    torch.manual_seed(3)
    theirs = theirs_cls(model).attribute(x, baselines=baseline, target=y, **options)
    assert ours.attributions.shape == x.shape and ours.params["seed"] == 3
    assert torch.equal(ours.attributions, theirs)


@pytest.mark.parametrize("ours_cls, theirs_cls, options", CAPTUM_SAMPLERS)
def test_sampling_methods_with_a_feature_mask_equal_captum(tabular, ours_cls, theirs_cls, options):
    model, x, y = tabular
    mask = (torch.arange(30) // 5).unsqueeze(0)  # six groups of five features
    ours = ours_cls(model, seed=1, **options).attribute(x, target=1, feature_mask=mask)
    torch.manual_seed(1)
    theirs = theirs_cls(model).attribute(x, target=1, feature_mask=mask, **options)
    assert torch.equal(ours, theirs)
    grouped = ours.view(3, 6, 5)
    assert torch.equal(grouped, grouped[:, :, :1].expand_as(grouped))  # one value per group


@pytest.mark.parametrize("ours_cls, _, options", CAPTUM_SAMPLERS)
def test_sampling_methods_are_deterministic_and_leave_the_global_generator_alone(tabular, ours_cls, _, options):
    model, x, _y = tabular
    torch.manual_seed(11)
    first = ours_cls(model, **options).attribute(x)
    after_call = torch.rand(4)
    torch.manual_seed(11)
    assert torch.equal(torch.rand(4), after_call)  # the call drew nothing from the caller's stream
    assert torch.equal(ours_cls(model, **options).attribute(x), first)
    assert not torch.equal(ours_cls(model, seed=5, **options).attribute(x), first)


def test_shapley_value_sampling_is_efficient(tabular):
    """Every permutation's marginal contributions telescope: sum_i a_i = f_c(x) - f_c(baseline) exactly."""
    model, x, y = tabular
    a = ShapleyValueSampling(model, n_samples=3).attribute(x, target=y)
    with torch.no_grad():
        gap = model(x).gather(1, y[:, None]).squeeze(1) - model(torch.zeros_like(x)).gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(a.sum(dim=1), gap, atol=1e-4)


def test_sampling_method_refusals(tabular):
    model, x, _ = tabular
    with pytest.raises(UsageError, match="n_samples"):
        KernelShap(model, n_samples=0)
    with pytest.raises(UsageError, match="seed"):
        ShapleyValueSampling(model, seed=-1)
    with pytest.raises(UsageError, match="distance_mode"):
        Lime(model, distance_mode="manhattan")
    with pytest.raises(UsageError, match="alpha"):
        Lime(model, alpha=-0.1)
    with pytest.raises(InvalidInputError, match="integer tensor"):
        KernelShap(model).attribute(x, feature_mask=torch.zeros(1, 30))
    with pytest.raises(InvalidInputError, match="every id used"):
        Lime(model).attribute(x, feature_mask=torch.arange(30).unsqueeze(0) * 2)
    with pytest.raises(InvalidInputError, match="shape"):
        KernelShap(model).attribute(x, feature_mask=torch.arange(30))
    with pytest.raises(InvalidInputError, match="NaN or Inf"):
        KernelShap(model).attribute(x, baselines=torch.full((30,), float("nan")))


def test_constructor_options_can_be_given_per_call(cnn, tabular):
    model, x, y = tabular
    per_call = KernelShap(model).explain(x, target=y, n_samples=30, seed=7)
    assert per_call.params["n_samples"] == 30 and per_call.params["seed"] == 7
    assert torch.equal(per_call.attributions, KernelShap(model, n_samples=30, seed=7).attribute(x, target=y))
    image_model, images, labels = cnn
    occluded = Occlusion(image_model, (1, 2, 2)).attribute(images, target=labels, sliding_window_shapes=(1, 4, 4), strides=4)
    assert torch.equal(occluded, CaptumOcclusion(image_model).attribute(images, sliding_window_shapes=(1, 4, 4),
                                                                        strides=(4, 4, 4), target=labels))
    first_layer = GradCam(image_model).explain(images, layer="0")
    assert first_layer.params["layer"] == "0" and first_layer.diagnostics["layer_attributions"].shape == (5, 1, 8, 8)
    with pytest.raises(UsageError, match="n_samples"):
        Lime(model).attribute(x, n_samples=0)
    with pytest.raises(UsageError, match="additional_forward_args"):
        DeepLift(image_model).attribute(images, additional_forward_args=(1,))


def test_missing_captum_names_the_extra(cnn, monkeypatch):
    model, x, _ = cnn
    monkeypatch.setitem(sys.modules, "captum.attr", None)  # `import captum.attr` now raises ImportError
    with pytest.raises(UnsupportedError, match=r"pip install 'certify\[baselines\]'"):
        DeepLift(model).attribute(x)
