"""Solver layer: one module per explainer, all sharing `certify.explain.base.Explainer`."""
from certify.explain.base import Explainer, Explanation

__all__ = ["Explainer", "Explanation"]
