"""Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017, eqs. 1-2) through `captum.attr.LayerGradCam`, upsampled to the input:

    alpha_k = mean_{i,j} d f_c / d A^k_{ij},   L = sum_k alpha_k A^k   (optionally ReLU(L), the paper's eq. 2),

for the activations A [N, K, h, w] of a convolutional layer (the output of `layer`, given by its name in
`model.named_modules()`, or the model's last nn.Conv2d), then `captum.attr.LayerAttribution.interpolate` to the
input's height and width ("nearest" by default, as Captum; "bilinear", "bicubic" or "area"). Every channel of the
input carries the same map, so the attributions have the inputs' shape [N, C, H, W]. Signed by default (Captum's
`relu_attributions=False`); `relu_attributions=True` gives the paper's map, >= 0. Deterministic.
"""
from __future__ import annotations

from types import ModuleType

from torch import Tensor, nn

from certify.errors import InvalidInputError, UnsupportedError, UsageError
from certify.explain.captum_adapter import CaptumExplainer

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area")


def conv_layer(model: nn.Module, layer: str | None) -> str:
    """The name of the layer Grad-CAM explains: `layer` if the model has a submodule of that name (UsageError
    listing the convolutional layers otherwise), else the last nn.Conv2d (UnsupportedError when there is none)."""
    convs = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if layer is None:
        if not convs:
            raise UnsupportedError(f"Grad-CAM needs a convolutional layer; {type(model).__name__} has no nn.Conv2d")
        return convs[-1]
    if layer not in dict(model.named_modules()) or layer == "":
        raise UsageError(f"the model has no layer named {layer!r}; its convolutional layers: {convs or 'none'}")
    return layer


class GradCam(CaptumExplainer):
    """`GradCam(model, layer=None, relu_attributions=False, interpolate_mode="nearest")`: Grad-CAM of the layer named
    `layer` (default: the last nn.Conv2d) for image inputs [N, C, H, W]. Diagnostics: `layer_attributions`
    [N, 1, h, w] (the map before upsampling). Errors: UnsupportedError for a model without nn.Conv2d, or a layer
    whose output is not [N, K, h, w]; UsageError for an unknown layer name or interpolation; InvalidInputError for
    inputs that are not [N, C, H, W]."""

    method_name = "grad-cam"
    explain_options = ()
    call_options = ("layer", "relu_attributions", "interpolate_mode")

    def __init__(self, model: nn.Module, layer: str | None = None, relu_attributions: bool = False,
                 interpolate_mode: str = "nearest") -> None:
        super().__init__(model)
        self.layer = conv_layer(model, layer)
        if interpolate_mode not in INTERPOLATIONS:
            raise UsageError(f"unknown interpolate_mode {interpolate_mode!r}; choose one of {INTERPOLATIONS}")
        self.relu_attributions, self.interpolate_mode = bool(relu_attributions), interpolate_mode

    def params(self) -> dict[str, object]:
        return {"layer": self.layer, "relu_attributions": self.relu_attributions,
                "interpolate_mode": self.interpolate_mode}

    def _attribute(self, captum: ModuleType, inputs: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if inputs.dim() != 4:
            raise InvalidInputError(f"Grad-CAM explains images [N, C, H, W]; got inputs of shape {tuple(inputs.shape)}")
        method = captum.LayerGradCam(self.model, self.model.get_submodule(self.layer))
        cam = method.attribute(inputs.detach().requires_grad_(), target=target,
                               relu_attributions=self.relu_attributions)
        if cam.dim() != 4:
            raise UnsupportedError(f"Grad-CAM needs a layer with output [N, K, h, w]; layer {self.layer!r} gives a "
                                   f"map of shape {tuple(cam.shape)}")
        upsampled = captum.LayerAttribution.interpolate(cam, tuple(inputs.shape[2:]), interpolate_mode=self.interpolate_mode)
        return upsampled.expand_as(inputs).clone(), {"layer_attributions": cam.detach()}
