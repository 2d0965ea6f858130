"""h-Shap vs Captum's KernelSHAP and Shapley value sampling: support recovery on the composite-digit task.

Measured: on the composite test images that contain the target digit (certify.models.composite; zoo model
`composite-relu-cnn`, f = softmax probability of "present", reference = the training mean image for every
method), each method's tile attributions (the per-pixel attributions summed over each 8x8 tile) give a
predicted support: the tiles whose attribution exceeds DELTA * (f(x) - f(ref)) (DELTA = 0.1, the same rule
for every method). Against the true tiles (those holding the target): support precision and recall, and the
model calls per image (rows evaluated, counted by a wrapper around the model, ref and x included).

Granularities: "tiles" (h-Shap min_size 8: 4 leaves; KernelSHAP / sampling with the 4 tiles as players),
"4x4" (min_size 4: 16 leaves / 16 superpixel players), "2x2" (min_size 2: 64 leaves / 64 players). The
baselines run at several sample sizes; the table marks the run at about h-Shap's calls ("equal calls") and
the cheapest run reaching h-Shap's precision and recall (both, "same accuracy") and the cheapest run with
precision and recall >= 0.9 (the acceptance level), with their calls divided by h-Shap's.

Run: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/hshap_support.py [--n 100] [--quick]`
(--quick: 40 images and fewer sample sizes, about half a minute).
"""
from __future__ import annotations

import argparse
import time

import torch
from captum.attr import KernelShap, ShapleyValueSampling
from torch import nn

from certify.explain.hshap import HShap
from certify.models import zoo
from certify.models.composite import tile_scores

DELTA = 0.1
GRANULARITIES = {"tiles": 8, "4x4": 4, "2x2": 2}


class Counted(nn.Module):
    """softmax(model) with a count of the rows evaluated."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.rows += z.shape[0]
        return self.model(z).softmax(dim=1)


class CountedLogits(Counted):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.rows += z.shape[0]
        return self.model(z)


def superpixels(side: int, block: int) -> torch.Tensor:
    """Feature mask [1, 1, side, side] numbering the block x block superpixels."""
    per_row = side // block
    r = torch.arange(side)[:, None] // block
    c = torch.arange(side)[None, :] // block
    return (r * per_row + c)[None, None]


def support_metrics(attr: torch.Tensor, gap: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    found = tile_scores(attr.float(), truth.shape[1]) > DELTA * gap.view(-1, 1, 1)
    tp = float((found & truth).sum())
    return tp / max(1.0, float(found.sum())), tp / float(truth.sum())


def run_hshap(model, x, ref, truth, min_size):
    counter = CountedLogits(model).eval()
    t = time.perf_counter()
    e = HShap(counter, min_size=min_size, reference=ref).explain(x, target=1)
    elapsed = time.perf_counter() - t
    gap = e.diagnostics["f_x"] - e.diagnostics["f_ref"]
    p, r = support_metrics(e.attributions, gap, truth)
    return {"calls": float(e.diagnostics["calls"].double().mean()), "precision": p, "recall": r, "seconds": elapsed,
            "counted": (counter.rows - x.shape[0]) / x.shape[0]}  # explain() runs one extra forward for the target


def run_captum(kind, model, x, ref, truth, block, samples):
    counter = Counted(model).eval()
    mask = superpixels(x.shape[-1], block)
    with torch.no_grad():
        gap = counter(x)[:, 1] - counter(ref.unsqueeze(0))[0, 1]
    counter.rows = 0
    t = time.perf_counter()
    attrs = []
    if kind == "KernelSHAP":
        method = KernelShap(counter)
        for i in range(x.shape[0]):  # Captum's KernelSHAP explains one example per call
            torch.manual_seed(i)  # Captum samples from the global generator
            attrs.append(method.attribute(x[i : i + 1], baselines=ref.unsqueeze(0), target=1, feature_mask=mask,
                                          n_samples=samples, perturbations_per_eval=samples))
        attr = torch.cat(attrs)
    else:
        torch.manual_seed(0)
        attr = ShapleyValueSampling(counter).attribute(x, baselines=ref.unsqueeze(0), target=1, feature_mask=mask,
                                                       n_samples=samples, perturbations_per_eval=64)
    elapsed = time.perf_counter() - t
    # Captum writes each player's value on every pixel of its superpixel: per pixel, value / block^2
    p, r = support_metrics(attr.detach() / (block * block), gap, truth)
    return {"calls": counter.rows / x.shape[0], "precision": p, "recall": r, "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100, help="test images with the target present")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 40 if args.quick else args.n
    model, data = zoo.load("composite-relu-cnn")
    pos = data.y_test == 1
    x, truth = data.x_test[pos][:n], data.support_test[pos][:n]
    ref = data.x_train.mean(dim=0)
    rng_state = torch.get_rng_state()
    kernel_samples = [8, 16, 32, 64, 128, 256] if args.quick else [8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512]
    svs_samples = [1, 2, 4, 8] if args.quick else [1, 2, 3, 4, 6, 8, 16]
    print(f"composite-relu-cnn, {n} test images with a 0 present ({int(truth.sum())} true tiles of {truth.numel()}); "
          f"support = tiles with attribution > {DELTA} (f(x) - f(ref))")
    header = f"{'granularity':11s} {'method':22s} {'calls/img':>9s} {'precision':>9s} {'recall':>7s} {'time s':>7s}  note"
    print(header)
    print("-" * len(header))
    for label, block in GRANULARITIES.items():
        h = run_hshap(model, x, ref, truth, block)
        print(f"{label:11s} {'h-Shap':22s} {h['calls']:9.1f} {h['precision']:9.3f} {h['recall']:7.3f} {h['seconds']:7.2f}")
        assert abs(h["counted"] - h["calls"]) < 1e-6, "h-Shap's call diagnostic disagrees with the counter"
        for kind, grid in (("KernelSHAP", kernel_samples), ("ShapleyValueSampling", svs_samples)):
            rows = [(s, run_captum(kind, model, x, ref, truth, block, s)) for s in grid]
            equal = min(rows, key=lambda r: abs(r[1]["calls"] - h["calls"]))
            same = next((r for r in rows if r[1]["precision"] >= h["precision"] - 1e-9 and r[1]["recall"] >= h["recall"] - 1e-9), None)
            floor = next((r for _, r in rows if r["precision"] >= 0.9 and r["recall"] >= 0.9), None)
            for s, r in rows:
                note = []
                if r is floor:
                    note.append(f"first with precision, recall >= 0.9: {r['calls'] / h['calls']:.1f}x h-Shap's calls")
                if r is equal[1]:
                    note.append("equal calls")
                if same is not None and r is same[1]:
                    note.append(f"same accuracy: {r['calls'] / h['calls']:.1f}x h-Shap's calls")
                print(f"{'':11s} {kind + f' n={s}':22s} {r['calls']:9.1f} {r['precision']:9.3f} {r['recall']:7.3f} "
                      f"{r['seconds']:7.2f}  {', '.join(note)}")
            if same is None:
                print(f"{'':11s} {kind:22s} never reached h-Shap's precision and recall up to n={grid[-1]} "
                      f"({rows[-1][1]['calls']:.0f} calls, {rows[-1][1]['calls'] / h['calls']:.1f}x h-Shap's)")
    torch.set_rng_state(rng_state)


if __name__ == "__main__":
    main()
