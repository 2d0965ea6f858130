"""Solver layer: one module per explainer, all sharing `certify.explain.base.Explainer`; `NoiseTunnel` wraps any of
them (SmoothGrad-squared, VarGrad); the Captum and SALib baselines (`deeplift`, `kernel_shap`, `lime`,
`occlusion`, `gradcam`, `sobol`) import those packages only when called (the baselines extra)."""
from certify.explain.base import Explainer, Explanation
from certify.explain.deeplift import DeepLift
from certify.explain.gradcam import GradCam
from certify.explain.gradient import Gradient
from certify.explain.integrated_gradients import IntegratedGradients
from certify.explain.kernel_shap import KernelShap, ShapleyValueSampling
from certify.explain.lagrange_dual import LagrangeDual
from certify.explain.lime import Lime
from certify.explain.moreaugrad import MoreauGrad
from certify.explain.noise_tunnel import NoiseTunnel
from certify.explain.occlusion import Occlusion
from certify.explain.relex import RelEx
from certify.explain.smoothgrad import SmoothGrad
from certify.explain.sobol import SobolIndices
from certify.explain.sparsified_smoothgrad import SparsifiedSmoothGrad

__all__ = ["DeepLift", "Explainer", "Explanation", "GradCam", "Gradient", "IntegratedGradients", "KernelShap",
           "LagrangeDual", "Lime", "MoreauGrad", "NoiseTunnel", "Occlusion", "RelEx", "ShapleyValueSampling",
           "SmoothGrad", "SobolIndices", "SparsifiedSmoothGrad"]
