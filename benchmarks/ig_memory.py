"""Peak memory of Integrated Gradients by default (issue 18, part 4): n_steps 200 on 2,000 digits inputs, against
the model-and-import baseline (target: ratio <= 1.2).

Each measurement runs in its own subprocess, so that one does not inherit another's peak: the baseline imports
torch and certify, loads the model and the 2,000 inputs (the 1,797 digits, repeated) and computes their
predicted classes; the others do the same and then one IntegratedGradients attribution (n_steps 200, Gauss-
Legendre) by default and, on request (--runs), with every point in one pass (`internal_batch_size` =
N * n_steps, what the default was before issue 18) and Captum's IntegratedGradients (its default: one pass);
those two take about 4.7 GB each on the CNN. Printed: the peak resident set size of each (`getrusage`
ru_maxrss), its ratio to the baseline's, and the seconds of the attribution. One thread.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ig_memory.py [--model digits-softplus-cnn] [--inputs 2000]
        [--n-steps 200] [--runs default whole captum]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

RUNS = ("baseline", "default", "whole", "captum")


def child(run: str, model_name: str, count: int, n_steps: int) -> None:
    """Measures one run in this process and prints {"peak_mib": ..., "seconds": ...} as JSON."""
    import torch

    from certify.explain import IntegratedGradients
    from certify.models import zoo

    torch.set_num_threads(1)
    model, data = zoo.load(model_name)
    digits = torch.cat([data.x_train, data.x_test])
    x = digits.repeat(-(-count // digits.shape[0]), *([1] * (digits.dim() - 1)))[:count].clone()
    with torch.no_grad():
        target = model(x).argmax(1)
    start = time.perf_counter()
    if run == "default":
        IntegratedGradients(model, n_steps=n_steps).attribute(x, target)
    elif run == "whole":
        IntegratedGradients(model, n_steps=n_steps, internal_batch_size=count * n_steps).attribute(x, target)
    elif run == "captum":
        from captum.attr import IntegratedGradients as CaptumIG

        CaptumIG(model).attribute(x, target=target, n_steps=n_steps)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"peak_mib": peak_mib, "seconds": seconds}))


def measure(run: str, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", run, "--model", args.model, "--inputs", str(args.inputs),
               "--n-steps", str(args.n_steps)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="digits-softplus-cnn")
    parser.add_argument("--inputs", type=int, default=2000)
    parser.add_argument("--n-steps", type=int, default=200)
    parser.add_argument("--runs", nargs="+", choices=RUNS[1:], default=["default"])
    parser.add_argument("--child", choices=RUNS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.model, args.inputs, args.n_steps)
        return
    from certify.models import zoo

    zoo.load(args.model)  # trained and cached here, so that no subprocess trains it
    print(f"{args.model}: Integrated Gradients, n_steps {args.n_steps}, {args.inputs} inputs, one thread, peak RSS")
    baseline = measure("baseline", args)
    print(f"  {'baseline (imports, model, inputs)':<36} {baseline['peak_mib']:8.1f} MiB")
    for run in args.runs:
        if run == "captum":
            try:
                import captum  # noqa: F401
            except ImportError:
                print("  captum: not installed, skipped")
                continue
        got = measure(run, args)
        ratio = got["peak_mib"] / baseline["peak_mib"]
        verdict = f" (target <= 1.2: {'met' if ratio <= 1.2 else 'MISSED'})" if run == "default" else ""
        label = {"default": "certify, default chunks", "whole": "certify, all points in one pass",
                 "captum": "captum (its default)"}[run]
        print(f"  {label:<36} {got['peak_mib']:8.1f} MiB  ratio {ratio:.3f}{verdict}  {got['seconds']:.2f} s")


if __name__ == "__main__":
    main()
