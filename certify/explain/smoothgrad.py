"""SmoothGrad (Smilkov, Thorat, Kim, Viegas & Wattenberg, "SmoothGrad: removing noise by adding noise", 2017,
eq. 3): the gradient averaged over Gaussian perturbations,

    SG(x) = (1/m) sum_{k=1}^m grad f_c(x + sigma eps_k),   eps_k ~ N(0, I),

a Monte Carlo estimate of grad h(x) for the smoothed score h = E f_c(. + sigma Z) (MoreauGrad paper,
Proposition 1). `sigma` is absolute, or relative to each example's input range (sigma * (max x - min x))
with `relative=True` as in Smilkov et al. and the public MoreauGrad code. The noise is drawn from a seeded
generator in one call (so the result does not depend on the chunking) and the noisy copies are evaluated in
chunks of `samples_per_chunk` copies per example (default: `base.points_per_chunk`, so the autograd graph's
memory stays bounded) by `gaussian_copies`, which `NoiseTunnel` shares; they equal Captum's
`NoiseTunnel(Saliency(abs=False), "smoothgrad")` for the same noise.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor, nn

from certify.errors import InvalidInputError
from certify.explain.base import Explainer, Explanation, points_per_chunk
from certify.scores import Forward
from certify.validation import nonnegative_number, positive_int


def gaussian_copies(
    inputs: tuple[Tensor, ...],
    stds: tuple[Tensor, ...],
    samples: int,
    chunk: int | None,
    seed: int | None,
    noise: Tensor | tuple[Tensor, ...] | None = None,
) -> Iterator[tuple[Tensor, tuple[Tensor, ...]]]:
    """Noisy copies x_j[i] + stds_j[i] * eps of every example i of every input tensor x_j, `samples` per
    example, made chunk by chunk (at most `chunk` samples of every example at a time; None: all at once).

    Yields (rows, points): rows [N * size] the example of each copy, points_j [N * size, ...] example-major
    (copy k of example i at row i * size + k, Captum's layout). eps ~ N(0, I) [N, samples, ...] is drawn for
    each input tensor in turn, in one call each (the copies do not depend on `chunk`; the draws take
    N * samples * features numbers, the chunks bound the rest), from a generator on the inputs' device seeded
    with `seed` (None: a fresh seed), or taken from `noise`: such draws (a tuple, one per input tensor, for
    tuple inputs; InvalidInputError for another shape)."""
    n = inputs[0].shape[0]
    if noise is not None:
        noise = noise if isinstance(noise, tuple) else (noise,)
        expected = [(n, samples, *x.shape[1:]) for x in inputs]
        got = [tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__ for e in noise]
        if got != expected:
            raise InvalidInputError(f"noise must be standard-normal draws of shapes {expected}, got {got}")
    else:
        generator = torch.Generator(device=inputs[0].device)
        generator.manual_seed(seed if seed is not None else int(torch.seed()))
        noise = tuple(
            torch.randn((n, samples, *x.shape[1:]), generator=generator, dtype=x.dtype, device=x.device) for x in inputs
        )
    step = chunk or samples
    for start in range(0, samples, step):
        size = min(step, samples - start)
        points = []
        for x, std, draws in zip(inputs, stds, noise):
            eps = draws[:, start : start + size].to(x)
            scale = std.view(n, 1, *([1] * (x.dim() - 1)))
            points.append((x.unsqueeze(1) + scale * eps).flatten(0, 1))
        yield torch.arange(n, device=inputs[0].device).repeat_interleave(size), tuple(points)


class SmoothGrad(Explainer):
    """SmoothGrad, `SmoothGrad(model, sigma=0.15, samples=50, relative=False, samples_per_chunk=None, seed=0)`
    (Smilkov et al. 2017, eq. 3; the module docstring gives the estimator).

    Parameters (each also a per-call option of `attribute`/`explain`, the constructor's value being the
    default): `sigma` (>= 0) the noise standard deviation, absolute or, with `relative`, a fraction of each
    example's value range (of each input tensor for tuple inputs); `samples` (>= 1) noisy copies per example;
    `samples_per_chunk` the most copies per example in one forward/backward pass (None: `points_per_chunk(inputs)
    // N`, at least 1, which bounds the autograd graph's memory; the result does not depend on it); `seed` of the
    generator (None: a fresh seed per call). Per-call option `noise`: standard-normal draws [N, samples, ...]
    (a tuple for tuple inputs) to use instead of the generator (common random numbers across methods or runs).

    `attribute(inputs, target=None, *, additional_forward_args=None, **options)` returns the average gradient
    with the inputs' shape (a tuple for tuple inputs); `explain` reports the noise standard deviation used per
    example (diagnostic `noise_std`: [N], or [N, J] for J input tensors). Errors: UsageError for sigma < 0,
    samples < 1 or samples_per_chunk < 1, InvalidInputError for noise of the wrong shape; see also
    `Explainer.explain`."""

    method_name = "smoothgrad"
    explain_options = ("noise",)
    call_options = ("sigma", "samples", "relative", "samples_per_chunk", "seed")
    forward_interface = True

    def __init__(
        self,
        model: nn.Module,
        sigma: float = 0.15,
        samples: int = 50,
        relative: bool = False,
        samples_per_chunk: int | None = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__(model)
        nonnegative_number(sigma, "sigma")
        positive_int(samples, "samples")
        if samples_per_chunk is not None:
            positive_int(samples_per_chunk, "samples_per_chunk")
        self.sigma, self.samples, self.relative = sigma, samples, relative
        self.samples_per_chunk, self.seed = samples_per_chunk, seed

    def params(self) -> dict[str, object]:
        """The constructor parameters: sigma, samples, relative, samples_per_chunk, seed."""
        return {
            "sigma": self.sigma,
            "samples": self.samples,
            "relative": self.relative,
            "samples_per_chunk": self.samples_per_chunk,
            "seed": self.seed,
        }

    def noise_scale(self, inputs: Tensor) -> Tensor:
        """Per-example standard deviation [N] for one input tensor [N, ...]: sigma, or sigma times the
        example's value range."""
        if not self.relative:
            return torch.full((inputs.shape[0],), self.sigma, dtype=inputs.dtype, device=inputs.device)
        flat = inputs.flatten(1)
        return self.sigma * (flat.max(dim=1).values - flat.min(dim=1).values)

    def _explain(
        self, inputs: tuple[Tensor, ...], target: Tensor, forward: Forward, noise: Tensor | tuple[Tensor, ...] | None = None
    ) -> Explanation:
        n, m = inputs[0].shape[0], self.samples
        stds = tuple(self.noise_scale(x) for x in inputs)
        totals = [torch.zeros_like(x) for x in inputs]
        chunk = self.samples_per_chunk or max(1, points_per_chunk(inputs) // n)
        for rows, points in gaussian_copies(inputs, stds, m, chunk, self.seed, noise):
            _, grads = forward.gradients(points, target[rows], rows)
            for total, g in zip(totals, grads):
                total += g.view(n, -1, *g.shape[1:]).sum(dim=1)
        params = self.params()
        if noise is not None:
            params["noise"] = "given"
        std = stds[0] if len(stds) == 1 else torch.stack(stds, dim=1)
        return Explanation(tuple(t / m for t in totals), target, self.method_name, params, {"noise_std": std})
