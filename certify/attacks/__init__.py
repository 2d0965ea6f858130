"""Minimal-perturbation attacks: witnesses (upper bounds on the minimal flipping radius) and the primal-dual
core of the Lagrange-dual explainer."""
from certify.attacks.minimal_perturbation import MinimalPerturbation, minimal_perturbation

__all__ = ["MinimalPerturbation", "minimal_perturbation"]
