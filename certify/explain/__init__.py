"""Solver layer: one module per explainer, all sharing `certify.explain.base.Explainer`."""
from certify.explain.base import Explainer, Explanation
from certify.explain.gradient import Gradient
from certify.explain.integrated_gradients import IntegratedGradients
from certify.explain.lagrange_dual import LagrangeDual
from certify.explain.moreaugrad import MoreauGrad
from certify.explain.smoothgrad import SmoothGrad

__all__ = ["Explainer", "Explanation", "Gradient", "IntegratedGradients", "LagrangeDual", "MoreauGrad", "SmoothGrad"]
