"""Certified sufficient subsets (issue 15, item 6; VeriX, Wu, Wu & Barrett, NeurIPS 2023): per attribution order,
the size of the greedy certified sufficient subset (certify.attacks.sufficient), every subset's property
certificate written and re-checked by the independent checker as `certify verify` does.

Inputs: the first N digits test images on `digits-relu-mlp` (l-inf eps 0.1 for the free features, and their whole
domain [0, 1]), and the 15 real MNIST images of shared/data/vnncomp2021-mnistfc on mnist-net_256x2.onnx (eps 0.05,
the competition's larger radius). Orders (least important freed first): |gradient|, |MoreauGrad| (rho 0.1),
|Integrated Gradients|, h-Shap (leaf scores, mean training image as the reference; digits only) and a seeded
random order (the control); MNIST runs gradient, MoreauGrad and random (about 30 s per subset on 2 cores). Columns: median and mean subset size (features
held), bound calls and seconds per subset, certificates verified / written.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sufficient_subsets.py [--images 32] [--out DIR] [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from certify.attacks.sufficient import predicted_class, sufficient_subset
from certify.bounds.network import from_module
from certify.certificates.checker import verify_file
from certify.certificates.issuers.property import sufficient_subset_certificate
from certify.explain import Gradient, IntegratedGradients
from certify.explain.hshap import HShap
from certify.explain.moreaugrad import MoreauGrad
from certify.models import zoo
from certify.models.spec import load_model

ROOT = Path(__file__).resolve().parents[1]
DIGITS_ORDERS = ("gradient", "moreaugrad", "integrated-gradients", "h-shap", "random")
MNIST_ORDERS = ("gradient", "moreaugrad", "random")  # 784 features: about 30 s per subset
MNIST = ROOT.parent / "shared" / "data" / "vnncomp2021-mnistfc"


def _hshap_digits(model, x: torch.Tensor, target: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """h-Shap on the 8x8 image view of flat digits inputs (quadrants down to single pixels), ties among its
    zero leaves broken by 1e-6 |gradient|."""
    image_model = torch.nn.Sequential(torch.nn.Flatten(), model).eval()
    scores = HShap(image_model, reference=reference, min_size=1).attribute(x.reshape(-1, 1, 8, 8), target=target)
    return scores.flatten(1) + 1e-6 * Gradient(model).attribute(x, target=target).abs().flatten(1)


def rankings(model, x: torch.Tensor, target: torch.Tensor, seed: int, reference: torch.Tensor,
             orders: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """|attribution| per order, [N, n] (h-Shap's leaf scores, ties broken by |gradient|)."""
    make = {
        "gradient": lambda: Gradient(model).attribute(x, target=target),
        "moreaugrad": lambda: MoreauGrad(model, rho=0.1, tol=1e-5).attribute(x, target=target),
        "integrated-gradients": lambda: IntegratedGradients(model, n_steps=32).attribute(x, target=target),
        "h-shap": lambda: _hshap_digits(model, x, target, reference),
    }
    out = {k: make[k]() for k in orders if k != "random"}
    out = {k: v.detach().flatten(1).abs() for k, v in out.items()}
    if "random" in orders:
        out["random"] = torch.rand(x.shape[0], x[0].numel(), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return out


def run(name: str, model, spec: str, x: torch.Tensor, eps: float | None, out: Path, shape: tuple[int, ...],
        reference: torch.Tensor, orders: tuple[str, ...]) -> list[list]:
    net = from_module(model, shape)
    lo, hi = torch.zeros(x[0].numel(), dtype=torch.float64), torch.ones(x[0].numel(), dtype=torch.float64)
    target = torch.tensor([predicted_class(model, x[i : i + 1]) for i in range(x.shape[0])])
    rows = []
    for order, scores in rankings(model, x, target, 0, reference, orders).items():
        sizes, calls, seconds, verified, written = [], [], [], 0, 0
        for i in range(x.shape[0]):
            subset = sufficient_subset(net, x[i], int(target[i]), scores[i], eps, (lo, hi))
            sizes.append(subset.size)
            calls.append(subset.calls)
            seconds.append(subset.seconds)
            if subset.property is None:
                continue
            path = out / f"{name}-{order}-{'dom' if eps is None else eps}-{i}.json"
            cert, problems = sufficient_subset_certificate(model, subset, shape, "crown", spec, path)
            cert.write(path)
            written += 1
            verified += verify_file(path).valid and cert.answer == "holds"
        rows.append([name, "domain" if eps is None else eps, order, statistics.median(sizes), f"{statistics.mean(sizes):.1f}",
                     f"{statistics.mean(calls):.0f}", f"{statistics.mean(seconds):.2f}", f"{verified}/{written}"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--out", help="directory for the certificates (default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="4 digits images, 3 MNIST images")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="sufficient-"))
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    model, data = zoo.load("digits-relu-mlp")
    x = data.x_test[: 4 if args.quick else args.images]
    for eps in (0.1, None):
        rows += run("digits", model, "digits-relu-mlp", x, eps, out, tuple(data.input_shape),
                    data.x_train.mean(0).reshape(1, 8, 8), DIGITS_ORDERS)
    spec = str(MNIST / "mnist-net_256x2.onnx")
    mnist_model, _ = load_model(spec)
    from certify.models.vnnlib import parse_vnnlib

    images = torch.stack([torch.as_tensor(parse_vnnlib(MNIST / f"prop_{i}_0.05.vnnlib").ball()[0], dtype=torch.float32)
                          for i in range(3 if args.quick else 15)])
    shape = tuple(getattr(mnist_model, "certify_input_shape", (784,)))
    rows += run("mnist 256x2", mnist_model, spec, images.reshape(-1, *shape), 0.05, out, shape, images.mean(0),
                MNIST_ORDERS)
    head = ["data", "eps", "order", "median size", "mean size", "calls", "s/subset", "certificates verified"]
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(str(c) for c in r))
    print(f"certificates in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
