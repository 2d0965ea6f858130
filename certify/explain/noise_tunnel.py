"""NoiseTunnel: any explainer's attributions averaged over Gaussian copies of the input (Captum's
`NoiseTunnel`, Kokhlikyan et al., arXiv 2009.07896):

    smoothgrad:    mean_k a(x + eps_k)                  (Smilkov et al. 2017, eq. 3, for any method a)
    smoothgrad_sq: mean_k a(x + eps_k)^2                (Hooker, Erhan, Kindermans & Kim, NeurIPS 2019, "SG-SQ")
    vargrad:       mean_k a(x + eps_k)^2 - (mean_k a(x + eps_k))^2   (Adebayo et al. 2018; the population
                   variance, as Captum),

eps_k ~ N(0, stdev^2 I), nt_samples copies per example. The copies of all examples are made by
`smoothgrad.gaussian_copies` (seeded, example-major, Captum's layout; drawn in one call, so the result does not
depend on the chunking) in chunks of `nt_samples_batch_size` copies per example (default:
`base.points_per_chunk(inputs) // N`, at least 1, which bounds the memory of each call), and each chunk is
explained by one call of the wrapped explainer's `explain`, with the target, the additional forward arguments
and every per-example tensor option (e.g. `baselines` [N, ...]) repeated for the copies of its example. The
moments are combined chunk by chunk with the pairwise update of Chan, Golub & LeVeque (1983), not as a
difference of raw sums, so vargrad does not cancel catastrophically.
Captum's `draw_baseline_from_distrib` and its `return_convergence_delta` (one delta per noisy copy) are not
offered.
"""
from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor

from certify.errors import UsageError
from certify.explain.base import Explainer, Explanation, points_per_chunk
from certify.explain.smoothgrad import gaussian_copies
from certify.scores import Forward, take_rows
from certify.validation import nonnegative_number, positive_int

NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")
NT_OPTIONS = ("nt_type", "nt_samples", "stdevs", "nt_samples_batch_size", "seed")


class NoiseTunnel(Explainer):
    """`NoiseTunnel(explainer, nt_type="smoothgrad", nt_samples=5, stdevs=1.0, nt_samples_batch_size=None,
    seed=0)`: the attributions of any certify `explainer` smoothed over Gaussian copies of the input (the module
    docstring gives the three estimators).

    Parameters (each also a per-call option, the constructor's value being the default): `nt_type` one of
    `NT_TYPES`; `nt_samples` (>= 1) copies per example; `stdevs` (>= 0) the noise standard deviation, one
    number for every input tensor or a tuple with one per input tensor (absolute, as Captum's);
    `nt_samples_batch_size` the most copies per example in one call of the wrapped explainer (None:
    `points_per_chunk(inputs) // N`, at least 1; Captum's None means all at once);
    `seed` of the noise generator (None: a fresh seed per call). Per-call option `nt_noise`: standard-normal
    draws [N, nt_samples, ...] (a tuple for tuple inputs) to use instead of the generator. The wrapped
    explainer's own per-call options and constructor overrides are accepted too and passed on (a name also
    in `NT_OPTIONS`, such as `seed`, means NoiseTunnel's; set the wrapped one on the wrapped explainer).

    Tuple inputs and `additional_forward_args` work when the wrapped explainer takes them (`Gradient`,
    `IntegratedGradients`, `SmoothGrad`); otherwise they are a UsageError naming the wrapped explainer.
    `explain` records NoiseTunnel's parameters with the wrapped method's name and the parameters its calls used
    (`explainer`, `explainer_params`) and the noise standard deviation per example (`noise_std`). Errors:
    UsageError for a bad parameter; see also `Explainer.explain`."""

    method_name = "noise-tunnel"
    forward_interface = True

    def __init__(
        self,
        explainer: Explainer,
        nt_type: str = "smoothgrad",
        nt_samples: int = 5,
        stdevs: float | tuple[float, ...] = 1.0,
        nt_samples_batch_size: int | None = None,
        seed: int | None = 0,
    ) -> None:
        if not isinstance(explainer, Explainer):
            raise UsageError(f"NoiseTunnel wraps a certify explainer, got {type(explainer).__name__}")
        super().__init__(explainer.model)
        if nt_type not in NT_TYPES:
            raise UsageError(f"nt_type must be one of {NT_TYPES}, got {nt_type!r}")
        positive_int(nt_samples, "nt_samples")
        if nt_samples_batch_size is not None:
            positive_int(nt_samples_batch_size, "nt_samples_batch_size")
        for stdev in stdevs if isinstance(stdevs, tuple) else (stdevs,):
            nonnegative_number(stdev, "stdevs")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise UsageError(f"seed must be an integer or None, got {seed!r}")
        self.explainer, self.nt_type, self.nt_samples, self.stdevs = explainer, nt_type, nt_samples, stdevs
        self.nt_samples_batch_size, self.seed = nt_samples_batch_size, seed
        self.explain_options = ("nt_noise",) + explainer.explain_options
        self.call_options = NT_OPTIONS + tuple(o for o in explainer.call_options if o not in NT_OPTIONS)

    def params(self) -> dict[str, Any]:
        """NoiseTunnel's parameters, the wrapped method's name (`explainer`) and parameters (`explainer_params`)."""
        return {**self._own_params(), "explainer": self.explainer.method_name, "explainer_params": self.explainer.params()}

    def _own_params(self) -> dict[str, Any]:
        return {"nt_type": self.nt_type, "nt_samples": self.nt_samples, "stdevs": self.stdevs,
                "nt_samples_batch_size": self.nt_samples_batch_size, "seed": self.seed}

    def configured(self, **overrides: Any) -> NoiseTunnel:
        """This NoiseTunnel with its own parameters and the wrapped explainer's overridden (see the class)."""
        if not overrides:
            return self
        own = {k: v for k, v in overrides.items() if k in NT_OPTIONS}
        inner = self.explainer.configured(**{k: v for k, v in overrides.items() if k not in NT_OPTIONS})
        return NoiseTunnel(inner, **{**self._own_params(), **own})

    def explain(
        self, inputs: Tensor | tuple[Tensor, ...], target: Any = None, *, additional_forward_args: Any = None,
        **options: Any,
    ) -> Explanation:
        """See `Explainer.explain`; UsageError for tuple inputs or additional_forward_args when the wrapped
        explainer does not take them."""
        wrapped = type(self.explainer).__name__
        if not self.explainer.forward_interface and (isinstance(inputs, tuple) or additional_forward_args is not None):
            raise UsageError(
                f"NoiseTunnel({wrapped}) cannot pass tuple inputs or additional_forward_args: {wrapped} takes one "
                "input tensor and calls model(inputs) itself"
            )
        return super().explain(inputs, target, additional_forward_args=additional_forward_args, **options)

    def _explain(
        self, inputs: tuple[Tensor, ...], target: Tensor, forward: Forward, nt_noise: Tensor | tuple[Tensor, ...] | None = None,
        **options: Any,
    ) -> Explanation:
        wrapped, n = self.explainer, inputs[0].shape[0]
        stdevs = self.stdevs if isinstance(self.stdevs, tuple) else (self.stdevs,) * len(inputs)
        if len(stdevs) != len(inputs):
            raise UsageError(f"stdevs has {len(stdevs)} values for {len(inputs)} input tensors")
        stds = tuple(torch.full((n,), float(s), dtype=x.dtype, device=x.device) for s, x in zip(stdevs, inputs))
        count, mean, m2, used = 0, [torch.zeros_like(x) for x in inputs], [torch.zeros_like(x) for x in inputs], None
        chunk = self.nt_samples_batch_size or max(1, points_per_chunk(inputs) // n)
        for rows, points in gaussian_copies(inputs, stds, self.nt_samples, chunk, self.seed, nt_noise):
            extra = {"additional_forward_args": take_rows(forward.args, rows, n)} if forward.args else {}
            explanation = wrapped.explain(
                points if wrapped.forward_interface else points[0], target[rows], **extra, **take_rows(options, rows, n)
            )
            used = used or explanation.params
            parts = explanation.attributions if isinstance(explanation.attributions, tuple) else (explanation.attributions,)
            size = rows.shape[0] // n
            for j, a in enumerate(parts):  # pairwise update of the mean and the sum of squared deviations
                a = a.view(n, size, *a.shape[1:])
                chunk_mean = a.mean(dim=1)
                delta = chunk_mean - mean[j]
                m2[j] = m2[j] + ((a - chunk_mean.unsqueeze(1)) ** 2).sum(dim=1) + delta**2 * (count * size / (count + size))
                mean[j] = mean[j] + delta * (size / (count + size))
            count += size
        if self.nt_type == "smoothgrad":
            result = tuple(mean)
        elif self.nt_type == "vargrad":
            result = tuple(s / count for s in m2)
        else:
            result = tuple(s / count + mu**2 for s, mu in zip(m2, mean))
        params = {**self._own_params(), "explainer": wrapped.method_name, "explainer_params": used}
        std = stds[0] if len(stds) == 1 else torch.stack(stds, dim=1)
        return Explanation(result, target, self.method_name, params, {"noise_std": std})
