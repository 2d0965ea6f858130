"""Integrated Gradients (Sundararajan, Taly & Yan, ICML 2017, eq. 1):

    IG_i(x) = (x_i - x'_i) * int_0^1 d f_c(x' + a (x - x')) / d x_i  da,

with the integral replaced by a quadrature rule sum_k w_k g(a_k): Gauss-Legendre on [0, 1] (default,
exact for polynomials of degree 2n - 1) or a Riemann rule (left, right, middle, trapezoid), as in Captum.
The trapezoid rule here has weights 1/(n-1) with halved ends (they sum to 1); Captum's weights are 1/n
with halved ends (sum (n-1)/n), so its trapezoid attributions are ours times (n-1)/n.
Completeness (Sundararajan et al., Prop. 1) says sum_i IG_i = f_c(x) - f_c(x'); the per-example
`completeness_delta` = sum_i IG_i - (f_c(x) - f_c(x')) measures the quadrature error.

Gradients at all (example, node) pairs are evaluated in chunks of at most `internal_batch_size` points,
so memory stays bounded for any n_steps.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from certify.errors import InvalidInputError, UsageError
from certify.explain.base import Explainer, Explanation
from certify.scores import class_scores, score_gradients
from certify.validation import positive_int

QUADRATURES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def quadrature(method: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes a_k in [0, 1] and weights w_k of the rule (sum w_k = 1)."""
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return 0.5 * (nodes + 1.0), 0.5 * weights
    if method == "riemann_trapezoid":
        if n_steps < 2:
            raise UsageError("the trapezoid rule needs n_steps >= 2")
        weights = np.full(n_steps, 1.0 / (n_steps - 1))
        weights[[0, -1]] *= 0.5
        return np.linspace(0.0, 1.0, n_steps), weights
    offsets = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}
    if method not in offsets:
        raise UsageError(f"unknown quadrature {method!r}; choose one of {QUADRATURES}")
    return (np.arange(n_steps) + offsets[method]) / n_steps, np.full(n_steps, 1.0 / n_steps)


class IntegratedGradients(Explainer):
    """`IntegratedGradients(model, n_steps=50, method="gausslegendre", internal_batch_size=None)`; `explain` and
    `attribute` take `baselines` (a tensor broadcastable to the inputs, a number, or None for zeros)."""

    method_name = "integrated-gradients"
    explain_options = ("baselines",)

    def __init__(
        self,
        model: nn.Module,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
    ) -> None:
        super().__init__(model)
        positive_int(n_steps, "n_steps")
        if internal_batch_size is not None:
            positive_int(internal_batch_size, "internal_batch_size")
        quadrature(method, n_steps)  # validates the method name now rather than at the first call
        self.n_steps, self.method, self.internal_batch_size = n_steps, method, internal_batch_size

    def params(self) -> dict[str, object]:
        return {"n_steps": self.n_steps, "method": self.method, "internal_batch_size": self.internal_batch_size}

    def _explain(self, inputs: Tensor, target: Tensor, baselines: Tensor | float | None = None) -> Explanation:
        baseline = self._baseline(inputs, baselines)
        nodes, weights = quadrature(self.method, self.n_steps)
        alphas = torch.as_tensor(nodes, dtype=inputs.dtype, device=inputs.device)
        w = torch.as_tensor(weights, dtype=inputs.dtype, device=inputs.device)
        n, steps = inputs.shape[0], self.n_steps
        diff = inputs - baseline
        # all (node, example) points, node-major: point k*n + i is baseline_i + a_k * diff_i
        total = torch.zeros_like(inputs)
        chunk = self.internal_batch_size or n * steps
        flat_target = target.repeat(steps)
        for start in range(0, n * steps, chunk):
            idx = torch.arange(start, min(start + chunk, n * steps), device=inputs.device)
            k, i = idx // n, idx % n
            view = (-1,) + (1,) * (inputs.dim() - 1)
            points = baseline[i] + alphas[k].view(view) * diff[i]
            _, grads = score_gradients(self.model, points, flat_target[idx])
            total.index_add_(0, i, grads * w[k].view(view))
        attributions = diff * total
        with torch.no_grad():
            gap = class_scores(self.model, inputs, target) - class_scores(self.model, baseline, target)
        delta = attributions.flatten(1).sum(dim=1) - gap
        return Explanation(
            attributions, target, self.method_name, self.params(), {"completeness_delta": delta}
        )

    @staticmethod
    def _baseline(inputs: Tensor, baselines: Tensor | float | None) -> Tensor:
        if baselines is None:
            return torch.zeros_like(inputs)
        if isinstance(baselines, (int, float)):
            return torch.full_like(inputs, float(baselines))
        if not isinstance(baselines, Tensor):
            raise InvalidInputError(f"baselines must be a tensor, a number or None, got {type(baselines).__name__}")
        try:
            baseline = torch.broadcast_to(baselines.to(inputs), inputs.shape)
        except RuntimeError as exc:
            raise InvalidInputError(
                f"baselines of shape {tuple(baselines.shape)} do not broadcast to inputs {tuple(inputs.shape)}"
            ) from exc
        if not bool(torch.isfinite(baseline).all()):
            raise InvalidInputError("baselines contain NaN or Inf")
        return baseline
