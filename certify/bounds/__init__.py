"""Verification layer: bound propagation, LP/MILP/SDP relaxations, Lipschitz and curvature bounds."""
