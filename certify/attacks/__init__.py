"""Minimal-perturbation attacks: witnesses (upper bounds on the minimal flipping radius) and the primal-dual
core of the Lagrange-dual explainer (`certify.attacks.minimal_perturbation.minimal_perturbation`; the
function is not re-exported here, so that the package attribute keeps naming the module)."""
