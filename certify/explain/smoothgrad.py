"""SmoothGrad (Smilkov et al., 2017, eq. 3): the gradient averaged over Gaussian perturbations,

    SG(x) = (1/m) sum_{k=1}^m grad f_c(x + sigma eps_k),   eps_k ~ N(0, I),

a Monte Carlo estimate of grad h(x) for the smoothed score h = E f_c(. + sigma Z) (MoreauGrad paper,
Proposition 1). `sigma` is absolute, or relative to each example's input range (sigma * (max x - min x))
with `relative=True` as in Smilkov et al. and the public MoreauGrad code. Samples are drawn from a seeded
generator in chunks of `samples_per_chunk` (memory bounded), and equal Captum's
`NoiseTunnel(Saliency(abs=False), "smoothgrad")` for the same noise.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from certify.errors import InvalidInputError
from certify.explain.base import Explainer, Explanation
from certify.scores import score_gradients
from certify.validation import nonnegative_number, positive_int


class SmoothGrad(Explainer):
    """`SmoothGrad(model, sigma=0.15, samples=50, relative=False, samples_per_chunk=None, seed=0)`; `explain` and
    `attribute` take `noise` (standard-normal draws [N, samples, ...] to use instead of the generator)."""

    method_name = "smoothgrad"
    explain_options = ("noise",)

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
        return {
            "sigma": self.sigma,
            "samples": self.samples,
            "relative": self.relative,
            "samples_per_chunk": self.samples_per_chunk,
            "seed": self.seed,
        }

    def noise_scale(self, inputs: Tensor) -> Tensor:
        """Per-example standard deviation [N]: sigma, or sigma times the example's value range."""
        if not self.relative:
            return torch.full((inputs.shape[0],), self.sigma, dtype=inputs.dtype, device=inputs.device)
        flat = inputs.flatten(1)
        return self.sigma * (flat.max(dim=1).values - flat.min(dim=1).values)

    def _explain(self, inputs: Tensor, target: Tensor, noise: Tensor | None = None) -> Explanation:
        """`noise` (optional): standard-normal draws [N, samples, *input_shape] to use instead of the
        generator (common random numbers across methods or runs)."""
        n, m = inputs.shape[0], self.samples
        if noise is not None and tuple(noise.shape) != (n, m, *inputs.shape[1:]):
            raise InvalidInputError(f"noise must have shape {(n, m, *inputs.shape[1:])}, got {tuple(noise.shape)}")
        generator = None
        if noise is None:
            generator = torch.Generator(device=inputs.device)
            generator.manual_seed(self.seed if self.seed is not None else int(torch.seed()))
        scale = self.noise_scale(inputs).view(n, 1, *([1] * (inputs.dim() - 1)))
        total = torch.zeros_like(inputs)
        chunk = self.samples_per_chunk or m
        for start in range(0, m, chunk):
            size = min(chunk, m - start)
            if noise is None:
                eps = torch.randn((n, size, *inputs.shape[1:]), generator=generator, dtype=inputs.dtype, device=inputs.device)
            else:
                eps = noise[:, start : start + size].to(inputs)
            points = (inputs.unsqueeze(1) + scale * eps).flatten(0, 1)  # example-major: [n * size, ...]
            _, grads = score_gradients(self.model, points, target.repeat_interleave(size))
            total += grads.view(n, size, *inputs.shape[1:]).sum(dim=1)
        return Explanation(total / m, target, self.method_name, self.params(), {"noise_std": scale.flatten()})
