"""Certify's gradient explainers against Captum's (issue 18, parts 4 and 5): Gradient vs Saliency(abs=False) at
batch 1, 32 and 256 (target: ratio <= 1.05), IntegratedGradients vs Captum's (n_steps 50, each side's default
chunking) and SmoothGrad vs NoiseTunnel(Saliency, "smoothgrad") (50 samples) at batch 32 (target: ratio < 1).

Each pair runs interleaved in one process (ours, then Captum's, every round, after one untimed call each), on
one CPU thread unless --threads says otherwise; printed per pair: median (min-max) milliseconds of each side,
the median (min-max) of the per-round ratios ours / Captum's, and the largest difference of the attributions
relative to Captum's largest entry. Models: the zoo's digits-softplus-cnn and digits-softplus-mlp (8x8 digits).
`benchmarks/gpu.py` runs the same pairs on CUDA.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/explainers.py [--rounds 30] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import warnings
from typing import Callable

import torch

from _timing import interleaved, spread

from certify.explain import Gradient, IntegratedGradients, SmoothGrad

BATCHES = (1, 32, 256)
TARGET = {"gradient": 1.05, "integrated-gradients": 1.0, "smoothgrad": 1.0}


def captum_available() -> bool:
    try:
        import captum.attr  # noqa: F401
    except ImportError:
        return False
    return True


def relative_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """max |ours - theirs| / max |theirs|."""
    scale = float(theirs.detach().abs().max()) or 1.0
    return float((ours.detach() - theirs.detach()).abs().max()) / scale


def pairs(
    model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, method: str, samples: int = 50
) -> dict[str, Callable[[], torch.Tensor]]:
    """The two sides of one comparison, `method` one of TARGET's keys: {"certify": ..., "captum": ...}."""
    from captum.attr import IntegratedGradients as CaptumIG
    from captum.attr import NoiseTunnel, Saliency

    if method == "gradient":
        ours, saliency = Gradient(model), Saliency(model)
        return {"certify": lambda: ours.attribute(x, target), "captum": lambda: saliency.attribute(x, target, abs=False)}
    if method == "integrated-gradients":
        ig, captum_ig = IntegratedGradients(model, n_steps=samples, method="riemann_middle"), CaptumIG(model)
        return {"certify": lambda: ig.attribute(x, target),
                "captum": lambda: captum_ig.attribute(x, target=target, n_steps=samples, method="riemann_middle")}
    sg, tunnel = SmoothGrad(model, sigma=0.15, samples=samples, seed=0), NoiseTunnel(Saliency(model))
    return {"certify": lambda: sg.attribute(x, target),
            "captum": lambda: tunnel.attribute(x, nt_type="smoothgrad", nt_samples=samples, stdevs=0.15, target=target, abs=False)}


def compare(label: str, model: torch.nn.Module, x: torch.Tensor, method: str, rounds: int) -> float:
    """Times one pair interleaved and prints its line; returns the median per-round ratio certify / Captum."""
    with torch.no_grad():
        target = model(x).argmax(1)
    sides = pairs(model, x, target, method)
    times = interleaved(sides, rounds, x.device)
    ratios = [a / b for a, b in zip(times["certify"], times["captum"])]
    ratio = statistics.median(ratios)
    agree = "" if method == "smoothgrad" else f", difference {relative_difference(sides['certify'](), sides['captum']()):.1e}"
    print(f"  {label:<34} certify {spread(times['certify'], 1e3)} ms  captum {spread(times['captum'], 1e3)} ms  "
          f"ratio {spread(ratios)} (target {'<=' if method == 'gradient' else '<'} {TARGET[method]}: "
          f"{'met' if ratio <= TARGET[method] else 'MISSED'}){agree}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds per pair (IG and SmoothGrad: a fifth)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")  # Saliency's, every call
    from certify.models import zoo

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, CPU, {args.rounds} rounds")
    model, data = zoo.load("digits-softplus-cnn")
    print("digits-softplus-cnn: Gradient vs Saliency(abs=False)")
    for batch in BATCHES:
        compare(f"batch {batch}", model, torch.cat([data.x_test, data.x_train])[:batch], "gradient", args.rounds)
    for name in ("digits-softplus-cnn", "digits-softplus-mlp"):
        model, data = zoo.load(name)
        print(f"{name}, batch 32: IG (n_steps 50) vs Captum IG; SmoothGrad vs NoiseTunnel (50 samples)")
        for method in ("integrated-gradients", "smoothgrad"):
            compare(method, model, data.x_test[:32], method, max(3, args.rounds // 5))


if __name__ == "__main__":
    main()
