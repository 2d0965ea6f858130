"""Sparsified SmoothGrad (Levine, Singla & Feizi, "Certifiably Robust Interpretation in Deep Learning", arXiv
2019, Sec. 3): the probability that each feature is among the l0 largest gradient magnitudes under Gaussian
noise,

    b_i(x) = 1[i is among the top-l0 entries of |grad f_c(x)|],   p_i(x) = E b_i(x + sigma Z),   Z ~ N(0, I),

estimated by the mean of b over m seeded draws: p_hat_i = (1/m) sum_t b_i(x + sigma Z_t), a map with values
in {0, 1/m, ..., 1}. The top-l0 set is `certify.metrics.similarity.topk_mask` (ties to the lower index), so b
is a fixed function of the point, as the smoothing bound requires. Because b takes values in [0, 1], the true
map p has a certified top-k overlap under l2 perturbations (`certify.bounds.topk_smoothing.certified_topk`,
with sigma, m and a confidence); sigma is therefore absolute (the same at every point), never relative to the
input's range.

Draws come from a `torch.Generator` seeded with `seed`, drawn in ONE call of shape [samples, N, *input_shape]
(sample-major; torch's CPU generator fills blocks of 16, so chunked calls would draw other numbers); chunking
(`samples_per_chunk`; default `base.points_per_chunk(inputs) // N`, at least 1) bounds the gradients' memory to
chunk * N points, the draws take samples * N * features numbers. The explanation is a function of (model,
inputs batch, target, sigma, samples, l0, seed) alone.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from certify.errors import InvalidInputError
from certify.explain.base import Explainer, Explanation, points_per_chunk
from certify.metrics.similarity import topk_count, topk_mask
from certify.scores import score_gradients
from certify.validation import positive_int, positive_number


class SparsifiedSmoothGrad(Explainer):
    """`SparsifiedSmoothGrad(model, sigma=0.15, samples=256, l0=0.1, samples_per_chunk=None, seed=0)`.

    sigma: absolute noise standard deviation (> 0, input units); samples: m >= 1; l0: the number of features
    each draw marks (an int count, or a fraction in (0, 1) of the features, rounded up); seed: int >= 0.
    `explain`/`attribute` take `noise` (standard-normal draws [N, samples, ...] to use instead of the
    generator) and, per call, any constructor parameter (`call_options`). Attributions [N, ...] in [0, 1]; diagnostics: `noise_std` [N] (sigma) and `l0` [N] (the count).
    UsageError for bad parameters (also l0 larger than the number of features, at the first call)."""

    method_name = "sparsified-smoothgrad"
    explain_options = ("noise",)
    call_options = ("sigma", "samples", "l0", "samples_per_chunk", "seed")

    def __init__(
        self,
        model: nn.Module,
        sigma: float = 0.15,
        samples: int = 256,
        l0: int | float = 0.1,
        samples_per_chunk: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(model)
        positive_number(sigma, "sigma")
        positive_int(samples, "samples")
        topk_count(l0, 2**62)  # type and range of l0; the feature count is checked at the first call
        if samples_per_chunk is not None:
            positive_int(samples_per_chunk, "samples_per_chunk")
        positive_int(seed, "seed", least=0)
        self.sigma, self.samples, self.l0 = float(sigma), samples, l0
        self.samples_per_chunk, self.seed = samples_per_chunk, seed

    def params(self) -> dict[str, object]:
        return {
            "sigma": self.sigma,
            "samples": self.samples,
            "l0": self.l0,
            "samples_per_chunk": self.samples_per_chunk,
            "seed": self.seed,
        }

    def _explain(self, inputs: Tensor, target: Tensor, noise: Tensor | None = None) -> Explanation:
        """`noise` (optional): standard-normal draws [N, samples, *input_shape] instead of the generator."""
        n, m, shape = inputs.shape[0], self.samples, tuple(inputs.shape[1:])
        if noise is not None and tuple(noise.shape) != (n, m, *shape):
            raise InvalidInputError(f"noise must have shape {(n, m, *shape)}, got {tuple(noise.shape)}")
        count = topk_count(self.l0, inputs[0].numel())
        if not self.sigma * 8 + float(inputs.detach().abs().max()) < torch.finfo(inputs.dtype).max:
            raise InvalidInputError(f"sigma = {self.sigma} overflows {inputs.dtype}: the noisy inputs are not finite")
        if noise is None:  # one call: torch's CPU randn fills blocks of 16, so chunked calls would draw other numbers
            generator = torch.Generator(device=inputs.device).manual_seed(self.seed)
            noise = torch.randn((m, n, *shape), generator=generator, dtype=inputs.dtype, device=inputs.device).transpose(0, 1)
        total = torch.zeros((n, inputs[0].numel()), dtype=inputs.dtype, device=inputs.device)
        chunk = self.samples_per_chunk or max(1, points_per_chunk(inputs) // n)
        for start in range(0, m, chunk):
            size = min(chunk, m - start)
            draws = noise[:, start : start + size].to(inputs)
            points = (inputs.unsqueeze(1) + self.sigma * draws).flatten(0, 1)  # example-major [n * size, ...]
            _, grads = score_gradients(self.model, points, target.repeat_interleave(size))
            total += topk_mask(grads, count).view(n, size, -1).sum(dim=1).to(total.dtype)
        diagnostics = {
            "noise_std": torch.full((n,), self.sigma, dtype=torch.float64, device=inputs.device),
            "l0": torch.full((n,), count, dtype=torch.long, device=inputs.device),
        }
        return Explanation((total / m).view_as(inputs), target, self.method_name, self.params(), diagnostics)
