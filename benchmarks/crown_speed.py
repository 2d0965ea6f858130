"""CROWN against convex_adversarial's dual network (Wong & Kolter 2018; convex_adversarial 0.4.4), and the CROWN
radius bisection on a VNN-COMP 2021 mnistfc net (issue 18, item 1).

For each model: the lower bounds of all margins f_c - f_j over the Linf ball of radius eps around a batch of
inputs (no domain box: the dual network has none), by certify's CROWN (`margin_lower_bounds`, float64 with
outward rounding) and by `DualNetwork(model, x, eps)(C)` (float32, no rounding control). The two sides run
interleaved in one process on one thread, for --rounds rounds; printed: median (min-max) seconds of each (on
the CPU the process's CPU seconds, which a shared, loaded machine inflates far less than wall time; on CUDA
wall time after synchronising), the ratio CROWN / dual network (target <= 1.0), and how many margins CROWN
bounds more loosely (target 0) and by how much at most than the dual network evaluated in float64 (once,
untimed: its relaxation's value without float32's rounding, which can move its bounds either way by ~1e-6;
the count against its float32 run is printed too). Where both use the same lines CROWN is lower by its
outward rounding (~1e-11, the price of a rigorous float64 bound), so margins looser by more than
1e-9 (1 + |bound|) are counted separately: those would be a looser relaxation (target 0).

Models: digits-relu-mlp (the zoo, 64-64-64-10 on 8x8 digits) and mnist-net_256x2 (784-256-256-10, ONNX from
../shared/data/vnncomp2021-mnistfc, inputs the centres of its 0.03 property boxes). Then the CROWN radius
bisection (`certified_radius`, pixel domain [0, 1], tol 1e-4) on that net: seconds per input (target <= 0.5).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/crown_speed.py [--rounds 5] [--batch 16] [--eps 0.01 0.02]
        [--radius-inputs 4] [--device cuda]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

from _timing import spread

from certify.bounds.crown import margin_lower_bounds, margin_spec
from certify.bounds.network import from_module
from certify.bounds.radius import certified_radius
from certify.models import zoo
from certify.models.spec import load_model
from certify.models.vnnlib import parse_vnnlib

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vnncomp2021-mnistfc"


def digits_case(batch: int) -> tuple[torch.nn.Module, torch.Tensor]:
    model, data = zoo.load("digits-relu-mlp")
    x = torch.as_tensor(data.x_test[:batch], dtype=torch.float32)
    return model.eval(), x.reshape(x.shape[0], -1)


def as_sequential(model: torch.nn.Module, input_shape: tuple[int, ...]) -> torch.nn.Sequential:
    """The ReLU chain of `model` (as traced by certify) as nn.Sequential of Linear and ReLU, float32: the form
    convex_adversarial's DualNetwork accepts."""
    net = from_module(model, input_shape)
    layers: list[torch.nn.Module] = []
    for k, (w, b) in enumerate(zip(net.weights, net.biases)):
        linear = torch.nn.Linear(w.shape[1], w.shape[0])
        linear.weight.data, linear.bias.data = w.to(torch.float32).clone(), b.to(torch.float32).clone()
        layers += [linear] + ([torch.nn.ReLU()] if k < len(net.activations) else [])
    return torch.nn.Sequential(*layers).eval()


def mnistfc_case(batch: int, data: Path) -> tuple[torch.nn.Module, torch.Tensor]:
    model, _ = load_model(str(data / "mnist-net_256x2.onnx"))
    props = sorted(data.glob("prop_*_0.03.vnnlib"))[:batch]
    centres = [torch.as_tensor((p.lower + p.upper) / 2) for p in map(parse_vnnlib, props)]
    return as_sequential(model.eval(), model.certify_input_shape), torch.stack(centres).to(torch.float32)


def clock(device: str) -> float:
    if device == "cpu":
        return time.process_time()
    torch.cuda.synchronize()
    return time.perf_counter()


def compare(name: str, model: torch.nn.Module, x: torch.Tensor, eps: float, rounds: int, device: str) -> float:
    """Interleaved timing of CROWN and the dual network; prints the line of this case and returns the ratio."""
    from convex_adversarial import DualNetwork

    model = model.to(device)
    x = x.to(device)
    net = from_module(model, tuple(x.shape[1:])).to(device)
    with torch.no_grad():
        target = model(x).argmax(-1)
    spec32 = margin_spec(target, net.num_classes).to(torch.float32)
    ours_t, theirs_t = [], []
    for _ in range(rounds):
        start = clock(device)
        ours = margin_lower_bounds(net, x.to(torch.float64), target, eps, "inf").value
        ours_t.append(clock(device) - start)
        start = clock(device)
        with torch.no_grad():
            theirs = DualNetwork(model, x, eps)(spec32)
        theirs_t.append(clock(device) - start)
    with torch.no_grad():
        exact = DualNetwork(copy.deepcopy(model).double(), x.double(), eps)(spec32.double())
    off_target = spec32.abs().sum(-1) > 0
    gap = (exact - ours)[off_target]
    gap32 = (theirs.to(torch.float64) - ours)[off_target]
    beyond = gap > 1e-9 * (1 + exact[off_target].abs())
    ratio = statistics.median(ours_t) / statistics.median(theirs_t)
    print(f"{name:16s} eps {eps:<6g} n {x.shape[0]:3d}  crown {spread(ours_t, digits=4)} s  dual network {spread(theirs_t, digits=4)} s  "
          f"ratio {ratio:.3f}  looser margins {int(beyond.sum())}/{gap.numel()} beyond rounding, "
          f"{int((gap > 0).sum())} at all (by <= {float(gap.max().clamp(min=0)):.2g}; "
          f"{int((gap32 > 0).sum())} against its float32 run, by <= "
          f"{float(gap32.max().clamp(min=0)):.2g})  mean bound crown {float(ours[off_target].mean()):+.4f} "
          f"dual {float(exact[off_target].mean()):+.4f}", flush=True)
    return ratio


def radius(model: torch.nn.Module, x: torch.Tensor, device: str) -> None:
    net = from_module(model, tuple(x.shape[1:])).to(device)
    x = x.to(device, torch.float64)
    with torch.no_grad():
        target = net.forward(x).argmax(-1)
    domain = (torch.zeros(x.shape[1], dtype=torch.float64), torch.ones(x.shape[1], dtype=torch.float64))
    start, wall = clock(device), time.perf_counter()
    result = certified_radius(net, x, target, "inf", "crown", domain=domain)
    seconds = (clock(device) - start) / x.shape[0]
    wall = (time.perf_counter() - wall) / x.shape[0]
    radii = ", ".join(f"{float(r):.4f}" for r in result.value)
    print(f"radius bisection mnist-net_256x2 (tol 1e-4): {seconds:.3f} s per input (target <= 0.5; "
          f"wall {wall:.3f} s) over "
          f"{x.shape[0]} inputs; radii {radii}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--eps", type=float, nargs="*", default=[0.01, 0.02])
    parser.add_argument("--radius-inputs", type=int, default=4)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.device != "cpu" and not torch.cuda.is_available():
        print(f"--device {args.device}: torch sees no CUDA device", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    data = Path(args.data)
    cases = [("digits-relu-mlp", *digits_case(args.batch))]
    if data.is_dir():
        cases.append(("mnist-net_256x2", *mnistfc_case(args.batch, data)))
    else:
        print(f"missing {data}: mnistfc cases skipped", file=sys.stderr)
    ratios = [compare(name, model, x, eps, args.rounds, args.device) for name, model, x in cases for eps in args.eps]
    print(f"worst ratio crown / dual network: {max(ratios):.3f} (target <= 1.0)")
    if data.is_dir() and args.radius_inputs > 0:
        name, model, x = cases[-1]
        radius(model.to(args.device), x[: args.radius_inputs], args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
