"""Bound methods on the digits ReLU MLP (64-64-64-10): per input, all 9 margins f_c - f_j over an Linf
ball (intersected with the pixel domain [0, 1]): time and bound of IBP, CROWN, the triangle LP (CROWN
boxes, and LP-tightened boxes) and the exact MILP; certified radii by bisection; Lipschitz constants.

Prints the time ratio LP/CROWN (target >= 100: CROWN is the cheap method) and the tightness CROWN/LP
(mean margin bound ratio; 1 means CROWN is as tight as the LP).

    .venv/bin/python benchmarks/bounds.py [--inputs 3] [--eps 0.01]
"""
from __future__ import annotations

import argparse
import time

import torch

from certify.bounds.crown import margin_lower_bounds
from certify.bounds.lp import lp_margin_lower_bounds
from certify.bounds.milp import exact_margin_lower_bounds
from certify.bounds.network import from_module
from certify.bounds.radius import certified_radius
from certify.models import zoo


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def margins_section(net, x, target, domain, eps: float) -> None:
    print(f"\n== margins over the Linf ball eps={eps} (per input, 9 margins) ==")
    print(f"{'input':>5} {'method':>13} {'time s':>9} {'mean bound':>11} {'min bound':>10}")
    totals: dict[str, list[float]] = {}
    for i in range(x.shape[0]):
        xi, ti = x[i : i + 1], target[i : i + 1]
        runs = {
            "ibp": lambda: margin_lower_bounds(net, xi, ti, eps, "inf", domain, "ibp"),
            "crown": lambda: margin_lower_bounds(net, xi, ti, eps, "inf", domain, "crown"),
            "lp": lambda: lp_margin_lower_bounds(net, xi, ti, eps, "inf", domain, tighten=False),
            "lp-tightened": lambda: lp_margin_lower_bounds(net, xi, ti, eps, "inf", domain, tighten=True),
            "milp (exact)": lambda: exact_margin_lower_bounds(net, xi, ti, eps, "inf", domain),
        }
        for name, run in runs.items():
            result, seconds = timed(run)
            if result.value is None or not torch.isfinite(result.value).any():
                print(f"{i:>5} {name:>13} {seconds:>9.4f}   no value: {result.reason or result.details.get('status')}")
                continue
            values = result.value[torch.isfinite(result.value)]
            totals.setdefault(name, []).extend([seconds, float(values.mean())])
            print(f"{i:>5} {name:>13} {seconds:>9.4f} {float(values.mean()):>11.5f} {float(values.min()):>10.5f}")
    mean = lambda name, k: sum(totals[name][k::2]) / len(totals[name][k::2])  # noqa: E731
    print(f"time ratio LP/CROWN: {mean('lp', 0) / mean('crown', 0):.1f} (target >= 100); "
          f"LP-tightened/CROWN: {mean('lp-tightened', 0) / mean('crown', 0):.1f}")
    print(f"tightness CROWN/LP (mean bound): {mean('crown', 1) / mean('lp', 1):.4f}; "
          f"CROWN/LP-tightened: {mean('crown', 1) / mean('lp-tightened', 1):.4f}; "
          f"CROWN/MILP: {mean('crown', 1) / mean('milp (exact)', 1):.4f}")


def radius_section(net, x, target, domain) -> None:
    print("\n== certified Linf radius by bisection (tol 1e-4) ==")
    for method in ("ibp", "crown"):
        result, seconds = timed(certified_radius, net, x, target, "inf", method, domain, 1e-4)
        print(f"{method:>6}: {[round(v, 5) for v in result.value.tolist()]}  {seconds:.2f} s for {x.shape[0]} inputs")
    result, seconds = timed(certified_radius, net, x[:1], target[:1], "inf", "lp", domain, 1e-3)
    print(f"    lp: {[round(v, 5) for v in result.value.tolist()]}  {seconds:.2f} s for 1 input (tol 1e-3)")


def lipschitz_section(net) -> None:
    print("\n== Lipschitz constants of the logits ==")
    from certify.bounds.lipschitz import lipschitz_product
    from certify.bounds.lipsdp import lipsdp

    for label, run in (
        ("product l2", lambda: lipschitz_product(net, 2)),
        ("product linf", lambda: lipschitz_product(net, "inf")),
        ("LipSDP-neuron l2", lambda: lipsdp(net, "neuron")),
        ("LipSDP-layer l2", lambda: lipsdp(net, "layer")),
    ):
        result, seconds = timed(run)
        value = "refused: " + str(result.reason) if result.value is None else f"{float(result.value):.4f}"
        print(f"{label:>18}: {value}  ({result.kind.value}, {seconds:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=3)
    parser.add_argument("--eps", type=float, default=0.01)
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny matrices: thread start-up dominates on a shared CPU
    model, data = zoo.load("digits-relu-mlp")
    net = from_module(model, data.input_shape)
    x = data.x_test.double()
    correct = net.forward(x.reshape(x.shape[0], -1)).argmax(1) == data.y_test
    x, target = x[correct][: args.inputs], data.y_test[correct][: args.inputs]
    domain = (data.domain_lo, data.domain_hi)
    print(f"digits-relu-mlp: {[w.shape[0] for w in net.weights]} units, {x.shape[0]} correctly classified test inputs")
    margins_section(net, x, target, domain, args.eps)
    radius_section(net, x, target, domain)
    lipschitz_section(net)


if __name__ == "__main__":
    main()
