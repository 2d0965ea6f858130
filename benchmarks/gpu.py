"""The benchmarks of issue 18 on CUDA (part 5): the same code paths on the GPU and on the CPU, timed interleaved.

Cases (random models, seeded, so that nothing beyond torch, numpy and certify is needed; Captum when installed):
  * Gradient (batch 1, 32, 256), IntegratedGradients (n_steps 50, batch 32), SmoothGrad (50 samples, batch 32,
    one fixed draw of noise for both devices) on a 1x28x28 softplus CNN (conv 8, conv 16 stride 2, linear 10);
  * CROWN margin lower bounds (`certify.bounds.crown.margin_lower_bounds`, float64, Linf eps 0.01, batch 16)
    on a 784-256-256-10 ReLU MLP;
  * MoreauGrad (`certify.explain.MoreauGrad`, rho 0.5, 100 iterations, batch 32) on a 784-256-256-10 softplus MLP.

Per case: median (min-max) milliseconds on the CPU and on CUDA (interleaved rounds, after one untimed call each),
their ratio CPU / CUDA, whether the CUDA result agrees with the CPU's (largest difference relative to the CPU
result's largest entry <= 1e-3 in float32, <= 1e-9 for CROWN's float64 bounds), and the peak CUDA memory of one
call. With Captum, Gradient / IG / SmoothGrad are also timed against Captum's on CUDA (benchmarks/explainers.py's
pairs: ratio certify / Captum). Without a CUDA device it prints "no CUDA device: skipped" and exits 0. It takes
well under 3 minutes on one GPU.

    python benchmarks/gpu.py [--rounds 10]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved, spread  # noqa: E402
from explainers import captum_available, pairs, relative_difference  # noqa: E402

from certify.bounds.crown import margin_lower_bounds  # noqa: E402
from certify.bounds.network import from_module  # noqa: E402
from certify.explain import Gradient, IntegratedGradients, MoreauGrad, SmoothGrad  # noqa: E402

CPU = torch.device("cpu")


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.Softplus(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.Softplus(),
        nn.Flatten(), nn.Linear(16 * 14 * 14, 10),
    ).eval()


def mlp(activation: type[nn.Module]) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(784, 256), activation(), nn.Linear(256, 256), activation(), nn.Linear(256, 10)).eval()


def inputs(batch: int, shape: tuple[int, ...]) -> Tensor:
    return torch.rand((batch, *shape), generator=torch.Generator().manual_seed(2))


def on_devices(label: str, make: Callable[[torch.device], Callable[[], Tensor]], cuda: torch.device, rounds: int,
               tolerance: float = 1e-3) -> bool:
    """Times make(CPU)() and make(cuda)() interleaved; prints the line of this case; True when the results agree."""
    on_cpu, on_cuda = make(CPU), make(cuda)
    expected = on_cpu()
    torch.cuda.synchronize(cuda)
    torch.cuda.reset_peak_memory_stats(cuda)
    got = on_cuda()
    torch.cuda.synchronize(cuda)
    peak = torch.cuda.max_memory_allocated(cuda) / 2**20
    difference = relative_difference(got.cpu(), expected)
    agree = difference <= tolerance
    times = interleaved({"cpu": on_cpu, "cuda": on_cuda}, rounds, cuda)
    speedup = [a / b for a, b in zip(times["cpu"], times["cuda"])]
    print(f"  {label:<30} cpu {spread(times['cpu'], 1e3)} ms  cuda {spread(times['cuda'], 1e3)} ms  cpu/cuda "
          f"{spread(speedup, digits=2)}  difference {difference:.1e} ({'agree' if agree else 'DISAGREE'}, tolerance "
          f"{tolerance:g})  peak CUDA {peak:.1f} MiB")
    return agree


def explainer_case(model: nn.Module, x: Tensor, method: str) -> Callable[[torch.device], Callable[[], Tensor]]:
    noise = torch.randn((x.shape[0], 50, *x.shape[1:]), generator=torch.Generator().manual_seed(3))

    def make(device: torch.device) -> Callable[[], Tensor]:
        m, xd = copy.deepcopy(model).to(device), x.to(device)
        with torch.no_grad():
            target = m(xd).argmax(1)
        if method == "gradient":
            explainer = Gradient(m)
            return lambda: explainer.attribute(xd, target)
        if method == "integrated-gradients":
            explainer = IntegratedGradients(m, n_steps=50, method="riemann_middle")
            return lambda: explainer.attribute(xd, target)
        explainer, nd = SmoothGrad(m, sigma=0.15, samples=50), noise.to(device)
        return lambda: explainer.attribute(xd, target, noise=nd)

    return make


def crown_case(model: nn.Module, x: Tensor) -> Callable[[torch.device], Callable[[], Tensor]]:
    net = from_module(model, tuple(x.shape[1:]))
    with torch.no_grad():
        target = model(x).argmax(1)

    def make(device: torch.device) -> Callable[[], Tensor]:
        nd, xd, td = net.to(device), x.to(device, torch.float64), target.to(device)
        return lambda: margin_lower_bounds(nd, xd, td, 0.01, "inf").value.nan_to_num(posinf=0.0)  # column c is +inf

    return make


def moreaugrad_case(model: nn.Module, x: Tensor) -> Callable[[torch.device], Callable[[], Tensor]]:
    def make(device: torch.device) -> Callable[[], Tensor]:
        m, xd = copy.deepcopy(model).to(device), x.to(device)
        with torch.no_grad():
            target = m(xd).argmax(1)
        explainer = MoreauGrad(m, rho=0.5, tol=1e-300, max_iter=100)  # tol below reach: 100 iterations on both
        return lambda: explainer.attribute(xd, target)

    return make


def captum_on_cuda(model: nn.Module, x: Tensor, method: str, cuda: torch.device, rounds: int) -> None:
    m, xd = copy.deepcopy(model).to(cuda), x.to(cuda)
    with torch.no_grad():
        target = m(xd).argmax(1)
    times = interleaved(pairs(m, xd, target, method), rounds, cuda)
    ratios = [a / b for a, b in zip(times["certify"], times["captum"])]
    print(f"  {'  vs captum on cuda':<30} certify {spread(times['certify'], 1e3)} ms  captum "
          f"{spread(times['captum'], 1e3)} ms  ratio {spread(ratios)} (median {statistics.median(ratios):.3f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: skipped")
        return 0
    cuda = torch.device("cuda")
    with_captum = captum_available()
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(cuda)}, CPU threads {torch.get_num_threads()}, "
          f"{args.rounds} rounds, captum {'installed' if with_captum else 'not installed: its comparisons skipped'}")
    agree = []
    conv = cnn()
    print("softplus CNN on 1x28x28")
    for method, batch in (("gradient", 1), ("gradient", 32), ("gradient", 256), ("integrated-gradients", 32),
                          ("smoothgrad", 32)):
        x = inputs(batch, (1, 28, 28))
        agree.append(on_devices(f"{method}, batch {batch}", explainer_case(conv, x, method), cuda, args.rounds))
        if with_captum:
            captum_on_cuda(conv, x, method, cuda, args.rounds)
    print("784-256-256-10 MLPs")
    agree.append(on_devices("CROWN margins (ReLU), batch 16", crown_case(mlp(nn.ReLU), inputs(16, (784,))), cuda,
                            max(3, args.rounds // 2), tolerance=1e-9))
    agree.append(on_devices("MoreauGrad (softplus), batch 32", moreaugrad_case(mlp(nn.Softplus), inputs(32, (784,))),
                            cuda, max(3, args.rounds // 2)))
    print(f"{sum(agree)} of {len(agree)} cases agree between CUDA and CPU")
    return 0 if all(agree) else 1


if __name__ == "__main__":
    sys.exit(main())
