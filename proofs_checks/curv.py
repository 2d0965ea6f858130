"""CURV. Certified curvature bounds of softplus networks (verification layer; DESIGN section 5; Singla &
Feizi, ICML 2020, Lemma 1 and Theorems 3-4; ANCHORS 4.7).

For f = a margin f_0 - f_1 of a random small softplus MLP, with m <= lambda_min(Hess f) and
lambda_max(Hess f) <= M certified (globally, or over an l2 ball around a point):

    -lambda_min(Hess f(x)) <= lambda = max(0, -m)    and    ||Hess f(x)||_2 <= beta = max(M, -m)

at every sampled point x of the region (exact Hessians by double backward, eigvalsh), at points found by an
adversarial ascent on -lambda_min and on lambda_max, and for the Lanczos estimate. ReLU networks are
refused (not weakly convex in general). The curvature certified radius (Singla & Feizi Theorem 1) is
checked against the distance to a verified decision flip found by an attack: radius <= that distance.
"""
from __future__ import annotations

import torch
from hypothesis import strategies as st

from certify.explain.minimal_perturbation import minimal_perturbation
from certify.bounds.crc import curvature_radius
from certify.bounds.curvature import curvature_bound, curvature_estimate, weak_convexity
from certify.bounds.network import from_module
from certify.bounds.sets import InputSet
from proofs_checks.framework import CheckContext, Report, run_property, theorem
from proofs_checks.nets import net_specs

RTOL = 1e-9  # observed eigenvalues are themselves computed in float64


def _hessian_eigs(model, c_row, points):
    """Eigenvalues of the exact Hessian of c_row . model at each point (double backward, one row per input
    coordinate; differentiable in the points)."""
    x = points if points.requires_grad else points.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((model(x) @ c_row).sum(), x, create_graph=True)
    rows = [torch.autograd.grad(grad[:, i].sum(), x, create_graph=True)[0] for i in range(x.shape[1])]
    hess = torch.stack(rows, dim=1)
    return torch.linalg.eigvalsh(0.5 * (hess + hess.transpose(1, 2)))


def _adversarial(model, c_row, starts, center, radius, steps=10, lr=0.05):
    """Projected ascent on -lambda_min and on lambda_max of the Hessian (eigvalsh is differentiable)."""
    found = []
    for sign in (-1.0, 1.0):
        x = starts.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            eig = _hessian_eigs(model, c_row, x)
            objective = -(sign * eig[:, -1 if sign > 0 else 0]).sum()
            optimiser.zero_grad()
            objective.backward()
            optimiser.step()
            with torch.no_grad():
                if radius is not None:
                    delta = x - center
                    x.copy_(center + delta * (radius / delta.norm(dim=-1, keepdim=True).clamp_min(radius)))
        found.append(x.detach())
    return torch.cat(found)


@theorem("CURV", "certified lambda >= observed negative curvature; ||Hess|| <= beta", "Singla & Feizi 2020; DESIGN section 5")
def check(ctx: CheckContext, report: Report) -> None:
    lam_global = report.tally("-lambda_min(Hess f) at sampled and adversarial points <= certified global lambda")
    beta_global = report.tally("||Hess f|| at sampled and adversarial points <= certified global beta")
    lam_region = report.tally("-lambda_min(Hess f) in an l2 ball <= certified region lambda")
    beta_region = report.tally("||Hess f|| in an l2 ball <= certified region beta")
    lanczos = report.tally("Lanczos estimate of lambda <= certified global lambda")
    relu = report.tally("ReLU networks: weak convexity refused", kind="property")
    crc = report.tally("curvature certified radius <= distance to a verified flip (attack)")
    tight = report.tally("observed -lambda_min / certified lambda (global)", role="evidence", kind="measurement")
    gap = report.tally("certified radius / attack distance", role="evidence", kind="measurement")

    def case(args) -> None:
        spec, seed, radius = args
        model = spec.build()
        net = from_module(model, (spec.inputs,))
        c_row = torch.zeros(spec.classes, dtype=torch.float64)
        c_row[0], c_row[1] = 1.0, -1.0
        if spec.act == "relu":
            relu.record_true(weak_convexity(net, c_row).refused and curvature_bound(net, c_row).refused, str(spec))
            return
        if spec.beta == 2.0 and seed % 2:  # a few ReLU twins of the softplus cases
            relu_twin = from_module(type(spec)(**{**spec.__dict__, "act": "relu"}).build(), (spec.inputs,))
            relu.record_true(weak_convexity(relu_twin, c_row).refused and curvature_bound(relu_twin, c_row).refused, str(spec))
        g = torch.Generator().manual_seed(seed)
        center = torch.randn(1, spec.inputs, generator=g, dtype=torch.float64)
        points = center + 2.0 * torch.randn(64, spec.inputs, generator=g, dtype=torch.float64)
        points = torch.cat([points, _adversarial(model, c_row, points[:8], None, None)])
        eig = _hessian_eigs(model, c_row, points).detach()
        lam, beta = weak_convexity(net, c_row), curvature_bound(net, c_row)
        case_id = str(spec)
        lam_global.record(float(-eig[:, 0].min()), float(lam.value), case_id, rtol=RTOL, atol=1e-12)
        beta_global.record(float(eig.abs().max()), float(beta.value), case_id, rtol=RTOL, atol=1e-12)
        if float(lam.value) > 0:
            tight.observe(float((-eig[:, 0].min()).clamp_min(0)) / float(lam.value))
        estimate = curvature_estimate(net, center, c_row, radius=2.0, samples=16, seed=seed)
        lanczos.record(float(estimate.value[0]), float(lam.value), case_id, rtol=RTOL, atol=1e-12)
        region = InputSet.build(center, radius, 2)
        inside = center + radius * torch.nn.functional.normalize(torch.randn(64, spec.inputs, generator=g, dtype=torch.float64), dim=-1) * torch.rand(64, 1, generator=g, dtype=torch.float64)
        inside = torch.cat([inside, _adversarial(model, c_row, inside[:8], center, radius)])
        eig = _hessian_eigs(model, c_row, inside).detach()
        lam_r, beta_r = weak_convexity(net, c_row, region), curvature_bound(net, c_row, region)
        lam_region.record(float(-eig[:, 0].min()), float(lam_r.value[0]), f"{case_id}, radius {radius:.3g}", rtol=RTOL, atol=1e-12)
        beta_region.record(float(eig.abs().max()), float(beta_r.value[0]), f"{case_id}, radius {radius:.3g}", rtol=RTOL, atol=1e-12)
        if len(spec.hidden) == 1:  # the certificate is useful (and cheap) on two-layer nets
            target = net.forward(center).argmax(1)
            radius_cert = curvature_radius(net, center, target, grid=8, iterations=150)
            attack = minimal_perturbation(model, center, target, p=2, max_iter=200, restarts=2, seed=seed)
            if bool(attack.flipped[0]):
                crc.record(float(radius_cert.value[0]), float(attack.norm[0]), case_id, rtol=RTOL)
                gap.observe(float(radius_cert.value[0]) / float(attack.norm[0]))

    strategy = st.tuples(net_specs(act="softplus", max_width=16, max_inputs=6), st.integers(0, 2**31 - 1), st.floats(0.05, 1.0))
    run_property(strategy, case, ctx.examples(8, 60))
