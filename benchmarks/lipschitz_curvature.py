"""Times and values of every Lipschitz and curvature method on zoo models.

    python benchmarks/lipschitz_curvature.py [--quick]

Per model: the l2 / linf product bounds, LipSDP-Neuron and -Layer (MLPs with at most `--max-hidden`
hidden units; SCS), and the gradient-ascent estimate, for the logit vector (l2) and the worst margin
f_c - f_j (c = the first test example's class); the ratios estimate/LipSDP and LipSDP/product.
Softplus models: certified lambda and beta of the margins (global) against the Lanczos estimate around
test points, and the curvature certified radius of a few test examples against the distance to a
verified decision flip (attack). Runs single-threaded (torch.set_num_threads(1)): on a shared 2-core
machine OpenMP spin-waiting makes small-tensor work up to 100x slower with two threads.
"""
from __future__ import annotations

import argparse
import time

import torch

from certify.explain.minimal_perturbation import minimal_perturbation
from certify.bounds.crc import curvature_radius
from certify.bounds.curvature import curvature_bound, curvature_estimate, weak_convexity
from certify.bounds.lipschitz import lipschitz_estimate, lipschitz_product
from certify.bounds.lipsdp import lipsdp
from certify.bounds.network import from_module
from certify.models import zoo

MODELS = [
    "moons-softplus-mlp",
    "blobs-relu-mlp",
    "breast-cancer-relu-mlp",
    "breast-cancer-softplus-mlp",
    "digits-softplus-mlp",
    "digits-relu-mlp",
    "digits-softplus-mlp2",
    "digits-softplus-cnn",
]


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def margin_rows(target: int, classes: int) -> torch.Tensor:
    rows = torch.zeros(classes - 1, classes, dtype=torch.float64)
    others = [j for j in range(classes) if j != target]
    rows[:, target] = 1.0
    rows[torch.arange(classes - 1), others] = -1.0
    return rows


def fmt(value) -> str:
    if value is None:
        return "refused"
    return f"{float(torch.as_tensor(value).max()):.4g}"


def lipschitz_section(name, net, data, max_hidden: int) -> None:
    x = data.x_test[:4].reshape(4, -1).to(torch.float64)
    rows = margin_rows(int(data.y_test[0]), net.num_classes)
    hidden = sum(w.shape[0] for w in net.weights[:-1])
    for label, c in (("logits", None), (f"margins of class {int(data.y_test[0])}", rows)):
        product, t_prod = timed(lipschitz_product, net, 2, c)
        product_inf, t_inf = timed(lipschitz_product, net, "inf", c)
        estimate, t_est = timed(lipschitz_estimate, net, x, 2, c, radius=0.5, samples=32, steps=10)
        line = (f"  {label:22s} product l2 {fmt(product.value)} ({t_prod:.3f} s)  linf {fmt(product_inf.value)} ({t_inf:.3f} s)"
                f"  estimate l2 {fmt(estimate.value)} ({t_est:.2f} s)")
        print(line)
        if hidden <= max_hidden and (c is None or hidden <= max_hidden // 2):
            for variant in ("neuron", "layer"):
                sdp, t_sdp = timed(lipsdp, net, variant, c)
                value = None if sdp.refused else sdp.value
                ratios = ""
                if value is not None:
                    top = float(torch.as_tensor(value).max())
                    ratios = (f"  estimate/LipSDP {float(torch.as_tensor(estimate.value).max()) / top:.3f}"
                              f"  LipSDP/product {top / float(torch.as_tensor(product.value).max()):.3f}")
                print(f"    LipSDP-{variant:6s} {fmt(value)} ({t_sdp:.2f} s){ratios}")
        else:
            print(f"    LipSDP skipped ({hidden} hidden units > limit for this output)")


def curvature_section(net, model, data, examples: int) -> None:
    target = int(data.y_test[0])
    rows = margin_rows(target, net.num_classes)
    lam, t_lam = timed(weak_convexity, net, rows)
    beta, t_beta = timed(curvature_bound, net, rows)
    if lam.refused:
        print(f"  curvature: refused ({lam.reason[:60]}...)")
        return
    x = data.x_test[:examples]
    worst = int(torch.as_tensor(lam.value).argmax())
    estimate, t_est = timed(curvature_estimate, net, x, rows[worst], radius=0.5, samples=8)
    print(f"  lambda (margins of class {target}, max over j) {fmt(lam.value)} ({t_lam:.3f} s)  beta {fmt(beta.value)} ({t_beta:.3f} s)"
          f"  Lanczos lambda estimate {fmt(estimate.value)} ({t_est:.2f} s)"
          f"  estimate/certified {float(estimate.value.max()) / float(lam.value[worst]):.3f}")
    if len(net.weights) != 2:
        print("  curvature radius: skipped (deep net: the product-of-norms curvature bound makes it vacuous)")
        return
    keep = net.forward(x.reshape(examples, -1).to(torch.float64)).argmax(1) == data.y_test[:examples]
    x, y = x[keep], data.y_test[:examples][keep]
    radius, t_crc = timed(curvature_radius, net, x, y)
    attack, t_att = timed(minimal_perturbation, model, x, y, p=2, max_iter=300, restarts=2)
    ratio = radius.value / attack.norm
    print(f"  curvature radius ({len(y)} examples) mean {float(radius.value.mean()):.4g} ({t_crc / len(y):.2f} s/example)"
          f"  attack mean {float(attack.norm.mean()):.4g} ({t_att / len(y):.2f} s/example)"
          f"  certified/attack min {float(ratio.min()):.3f} median {float(ratio.median()):.3f}"
          f"  sound: {bool((radius.value <= attack.norm).all())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three small models only")
    parser.add_argument("--max-hidden", type=int, default=128, help="largest hidden-unit count for LipSDP")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in MODELS[:3] if args.quick else MODELS:
        model, data = zoo.load(name)
        net = from_module(model, data.input_shape)
        widths = [w.shape[0] for w in net.weights]
        print(f"{name}: widths {net.input_size} -> {widths}")
        lipschitz_section(name, net, data, args.max_hidden)
        curvature_section(net, model, data, examples=4 if args.quick else 8)


if __name__ == "__main__":
    main()
