"""Certified top-k of Sparsified SmoothGrad (a probabilistic certificate from randomised smoothing,
certify.bounds.topk_smoothing) next to MoreauGrad's (a deterministic one, the "moreaugrad" preset through
certify.certificates.issuers.certify_explanations), on the same 32 digits test inputs, the same k and eps.

The two statements differ in kind: Sparsified SmoothGrad's holds with probability >= the confidence over its
Monte Carlo draws and speaks of its own (smoothed) map; MoreauGrad's is certified and speaks of MoreauGrad's map.
Both compare the map reported at x with the exact map at any x + delta, ||delta||_2 <= eps.

Usage: python benchmarks/sparsified_topk.py [--sigma 0.5] [--samples 2048] [--confidence 0.999]
"""
from __future__ import annotations

import argparse

import torch

from certify.bounds.topk_smoothing import certified_topk
from certify.certificates.issuers import certify_explanations
from certify.explain.registry import make_preset
from certify.explain.sparsified_smoothgrad import SparsifiedSmoothGrad
from certify.models import zoo

EXAMPLES, K, EPSILONS = 32, 6, (0.1, 0.25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--confidence", type=float, default=0.999)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, data = zoo.load("digits-softplus-mlp")
    x = data.x_test[:EXAMPLES]
    target = model(x).argmax(1)
    p_hat = SparsifiedSmoothGrad(model, sigma=args.sigma, samples=args.samples, l0=0.1, samples_per_chunk=512).attribute(x, target=target)
    print(f"digits-softplus-mlp, {EXAMPLES} test inputs, k = {K}; Sparsified SmoothGrad: sigma = {args.sigma}, "
          f"l0 = 10%, {args.samples} draws, confidence {args.confidence}")
    print(f"{'eps':>6} {'sparsified-smoothgrad':>22} {'moreaugrad':>12}   (mean certified top-k fraction, [min, max])")
    for eps in EPSILONS:
        ours = certified_topk(p_hat, K, eps, args.sigma, args.samples, args.confidence).double() / K
        certificates = certify_explanations(make_preset("moreaugrad", model), x, target.tolist(), eps=eps, k=K)
        values = [c.claim("topk").value for c in certificates]
        theirs = torch.tensor([v if v is not None else 0.0 for v in values], dtype=torch.float64)
        print(f"{eps:>6} {ours.mean():>10.3f} [{ours.min():.2f}, {ours.max():.2f}] {theirs.mean():>6.3f} "
              f"[{theirs.min():.2f}, {theirs.max():.2f}]  (refused: {sum(v is None for v in values)})")


if __name__ == "__main__":
    main()
