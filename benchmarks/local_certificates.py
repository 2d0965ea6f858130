"""Local against global constants (issue 13, DESIGN section 11): how often a MoreauGrad certificate says
something.

Per model, over the first N test inputs (default 64) at l2 eps (default 0.1):

* global: rho = 1/(2 lambda) with the global weak-convexity constant lambda (the best rho for Corollary 1),
  the certified bound (the smaller of Corollary 1 and beta eps / (1 - rho lambda), global lambda and beta:
  certify.bounds.stability.vanilla_stability) plus the solver terms, against ||MG(x)|| at that rho;
* local: the certificates `certify explain` issues with rho = "auto" (certify.certificates.issuers: local
  constants on B(x, eps + rho L), lemma MG-LOC), their stability and top-k claims as the checker sees them.

Columns: the fraction of inputs with a non-vacuous stability bound (bound < ||MG(x)||), the fraction with a
certified top-k ratio >= 0.5 at k = 10% of the features, the median bound / ||MG||, and seconds per
certificate (explanation and claims). The sigmoid MLP is trained here on digits (seeded, a few seconds).

ReLU: the fraction of inputs whose gradient explanation is certified constant on the l-infinity ball of
radius 0.01 (no unstable unit in the CROWN boxes, certify.bounds.crown.layer_bounds, nor in the interval
boxes of certify.bounds.local.region_boxes).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/local_certificates.py [--inputs 64] [--eps 0.1] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

from certify.bounds.crown import layer_bounds
from certify.bounds.curvature import curvature_bound, weak_convexity
from certify.bounds.local import region_boxes, unstable_units
from certify.bounds.network import from_module
from certify.bounds.sets import InputSet
from certify.bounds.stability import moreaugrad_stability, topk_kept
from certify.certificates.document import decode_array
from certify.certificates.issuers import certify_explanations
from certify.explain.moreaugrad import MoreauGrad
from certify.models import zoo
from certify.models.datasets import load_dataset
from certify.models.training import train_classifier

SOFTPLUS = ("digits-softplus-mlp", "digits-softplus-mlp2", "digits-softplus-cnn", "moons-softplus-mlp",
            "breast-cancer-softplus-mlp")
TOL = 1e-6


def sigmoid_digits() -> tuple[torch.nn.Module, object]:
    """A 64-64-10 sigmoid MLP trained on the flat digits (seed 0)."""
    data = load_dataset("digits-flat")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(data.x_train[0].numel(), 64), torch.nn.Sigmoid(),
                                torch.nn.Linear(64, data.num_classes))
    train_classifier(model, data, epochs=40, lr=3e-3, batch_size=64, weight_decay=1e-4, seed=0)
    return model.eval(), data


def _global_row(model, data, x: torch.Tensor, eps: float, k: int) -> dict:
    net = from_module(model, tuple(data.input_shape))
    with torch.no_grad():
        target = model(x).argmax(1)
    lams = {c: weak_convexity(net, torch.nn.functional.one_hot(torch.tensor(c), net.num_classes).double())
            for c in set(target.tolist())}
    if any(r.refused for r in lams.values()):  # e.g. sigmoid: no global curvature bound
        return {"nonvacuous": 0.0, "topk>=0.5": 0.0, "median bound/|MG|": math.inf, "rho": math.nan, "lambda": None}
    lam = max(float(r.value) for r in lams.values())
    beta = max(float(curvature_bound(net, torch.nn.functional.one_hot(torch.tensor(c), net.num_classes).double()).value)
               for c in lams)
    rho = 1.0 / (2.0 * lam)
    explanation = MoreauGrad(model, rho=rho, tol=TOL).explain(x, target)
    a = explanation.attributions.flatten(1).double()
    norms = a.norm(dim=1)
    ok, topk, ratios = 0, 0, []
    for i in range(x.shape[0]):
        err = float(explanation.diagnostics["residual_norm"][i]) / (1 - rho * lam)
        bound = moreaugrad_stability(eps, rho, TOL, lam, err, beta)
        ok += bound < float(norms[i])
        topk += topk_kept(a[i], k, bound) / k >= 0.5
        ratios.append(bound / float(norms[i]))
    return {"nonvacuous": ok / x.shape[0], "topk>=0.5": topk / x.shape[0], "median bound/|MG|": statistics.median(ratios),
            "rho": rho, "lambda": lam}


def _local_row(model, data, x: torch.Tensor, eps: float, k: int) -> dict:
    start = time.perf_counter()
    certificates = certify_explanations(MoreauGrad(model, rho="auto", eps=eps, tol=TOL), x, eps=eps, k=k)
    seconds = (time.perf_counter() - start) / x.shape[0]
    ok, topk, ratios, rhos, local = 0, 0, [], [], 0
    for cert in certificates:
        claims = {c.id: c for c in cert.claims}
        norm = float(torch.as_tensor(decode_array(cert.explanation, "explanation", None)).norm())
        stab = claims["stability"]
        if stab.value is not None:
            ok += stab.value < norm
            ratios.append(stab.value / norm)
            local += stab.params["region"] == "local"
            rhos.append(stab.params["rho"])
        else:
            ratios.append(math.inf)
        top = claims["topk"]
        topk += top.value is not None and top.value >= 0.5
    n = x.shape[0]
    return {"nonvacuous": ok / n, "topk>=0.5": topk / n, "median bound/|MG|": statistics.median(ratios),
            "median rho": statistics.median(rhos) if rhos else math.nan, "local claims": local / n,
            "seconds/cert": seconds}


def relu_row(name: str, x: torch.Tensor, radius: float) -> dict:
    model, data = zoo.load(name)
    net = from_module(model, tuple(data.input_shape))
    flat = x.flatten(1).double()
    boxes, _ = layer_bounds(net, InputSet.build(x, radius, "inf"), "crown")
    crown_stable = sum(((lo < 0) & (hi > 0)).sum(-1) for lo, hi in boxes) == 0
    interval = unstable_units(region_boxes(net, flat, torch.full((x.shape[0],), radius, dtype=torch.float64), "inf")) == 0
    return {"constant (crown)": float(crown_stable.double().mean()), "constant (interval)": float(interval.double().mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=64)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--models", nargs="*", default=list(SOFTPLUS) + ["digits-sigmoid-mlp"])
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    rows = {}
    print(f"l2 eps = {args.eps}, {args.inputs} test inputs per model; non-vacuous: stability bound < ||MG(x)||")
    print(f"{'model':28s} {'':7s} {'non-vac':>8s} {'top-k>=.5':>9s} {'bound/|MG|':>10s} {'rho':>8s} {'s/cert':>7s}")
    for name in args.models:
        model, data = sigmoid_digits() if name == "digits-sigmoid-mlp" else zoo.load(name)
        x = data.x_test[: args.inputs]
        k = max(1, x[0].numel() // 10)
        glob = _global_row(model, data, x, args.eps, k)
        loc = _local_row(model, data, x, args.eps, k)
        rows[name] = {"global": glob, "local": loc}
        print(f"{name:28s} {'global':7s} {glob['nonvacuous']:8.0%} {glob['topk>=0.5']:9.0%} "
              f"{glob['median bound/|MG|']:10.3g} {glob['rho']:8.3g} {'':>7s}")
        print(f"{'':28s} {'local':7s} {loc['nonvacuous']:8.0%} {loc['topk>=0.5']:9.0%} "
              f"{loc['median bound/|MG|']:10.3g} {loc['median rho']:8.3g} {loc['seconds/cert']:7.3f}")
    relu = relu_row("digits-relu-mlp", zoo.load("digits-relu-mlp")[1].x_test[: args.inputs], 0.01)
    rows["digits-relu-mlp"] = relu
    print(f"digits-relu-mlp: gradient certified constant on the l-inf ball of radius 0.01: "
          f"{relu['constant (crown)']:.0%} (CROWN boxes), {relu['constant (interval)']:.0%} (interval boxes)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
