"""Integrated Gradients (Sundararajan, Taly & Yan, ICML 2017, eq. 1):

    IG_i(x) = (x_i - x'_i) * int_0^1 d f_c(x' + a (x - x')) / d x_i  da,

with the integral replaced by a quadrature rule sum_k w_k g(a_k): Gauss-Legendre on [0, 1] (default,
exact for polynomials of degree 2n - 1) or a Riemann rule (left, right, middle, trapezoid), as in Captum.
The trapezoid rule here has weights 1/(n-1) with halved ends (they sum to 1); Captum's weights are 1/n
with halved ends (sum (n-1)/n), so its trapezoid attributions are ours times (n-1)/n.
Completeness (Sundararajan et al., Prop. 1) says sum_i IG_i = f_c(x) - f_c(x'); the per-example
`completeness_delta` = sum_i IG_i - (f_c(x) - f_c(x')) measures the quadrature error.

Gradients at all (example, node) pairs are evaluated in chunks of at most `internal_batch_size` points
(default: `base.points_per_chunk`: 2^17 input entries, and at least the batch size), so memory stays
bounded for any n_steps (Captum's default evaluates all N * n_steps points at once). The scores at the inputs
for the completeness delta are those of the validation's forward pass (`EvaluatedForward.input_scores`). Calls
follow Captum's `IntegratedGradients.attribute` (keywords `baselines`, `additional_forward_args`, `n_steps`,
`method`, `internal_batch_size`, `return_convergence_delta`; tuple inputs with one baseline each; index-tuple
targets); only the position of `target` differs: it is the second positional argument here, `baselines` is a
keyword.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from certify.errors import InvalidInputError, UsageError
from certify.explain.base import EvaluatedForward, Explainer, Explanation, points_per_chunk
from certify.validation import baseline_tensor, positive_int

QUADRATURES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def quadrature(method: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes a_k in [0, 1] and weights w_k (sum w_k = 1) of rule `method` (one of `QUADRATURES`) with `n_steps`
    nodes, float64 arrays [n_steps]. UsageError for an unknown rule or the trapezoid rule with n_steps < 2."""
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
    """Integrated Gradients, `IntegratedGradients(model, n_steps=50, method="gausslegendre",
    internal_batch_size=None)` (Sundararajan, Taly & Yan, ICML 2017, eq. 1; the module docstring gives the rule).

    Parameters (each also a per-call option of `attribute`/`explain`, the constructor's value being the
    default): `n_steps` (>= 1; >= 2 for the trapezoid rule) quadrature nodes, `method` one of `QUADRATURES`,
    `internal_batch_size` the most points per forward/backward pass (None: `points_per_chunk(inputs)`, max(N,
    2^17 // input entries per example), which bounds peak memory whatever n_steps; a larger value trades memory
    for fewer passes).
    Per-call option `baselines`: None (zeros), a number, or a tensor broadcastable to the inputs; for tuple
    inputs a tuple with one such baseline per input tensor (a number or None applies to every input).

    `attribute(inputs, target=None, *, additional_forward_args=None, return_convergence_delta=False, **options)`
    returns attributions with the inputs' shape (a tuple for tuple inputs), and with `return_convergence_delta`
    the pair (attributions, delta [N]), delta = sum of all attributions - (f_c(x) - f_c(x')) as in Captum;
    `explain` reports that delta as the diagnostic `completeness_delta`. Errors: UsageError for a bad
    parameter (n_steps < 1, an unknown method, internal_batch_size < 1), InvalidInputError for baselines that
    are not finite or do not broadcast to the inputs; see also `Explainer.explain`."""

    method_name = "integrated-gradients"
    explain_options = ("baselines",)
    call_options = ("n_steps", "method", "internal_batch_size")
    forward_interface = True

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
        """The constructor parameters: n_steps, method, internal_batch_size."""
        return {"n_steps": self.n_steps, "method": self.method, "internal_batch_size": self.internal_batch_size}

    def attribute(
        self, inputs: Tensor | tuple[Tensor, ...], target: object = None, *, additional_forward_args: object = None,
        return_convergence_delta: bool = False, **options: object,
    ) -> Tensor | tuple[Tensor, ...] | tuple[Tensor | tuple[Tensor, ...], Tensor]:
        """The attributions of `explain(...)`; with `return_convergence_delta=True` the pair (attributions,
        completeness delta [N]) like Captum. UsageError when `return_convergence_delta` is not a bool."""
        if not isinstance(return_convergence_delta, bool):
            raise UsageError(f"return_convergence_delta must be True or False, got {return_convergence_delta!r}")
        explanation = self.explain(inputs, target, additional_forward_args=additional_forward_args, **options)
        if return_convergence_delta:
            return explanation.attributions, explanation.diagnostics["completeness_delta"]
        return explanation.attributions

    def _explain(
        self, inputs: tuple[Tensor, ...], target: Tensor, forward: EvaluatedForward, baselines: object = None
    ) -> Explanation:
        bases = self._baselines(inputs, baselines)
        nodes, weights = quadrature(self.method, self.n_steps)
        alphas = torch.as_tensor(nodes, dtype=inputs[0].dtype, device=inputs[0].device)
        w = torch.as_tensor(weights, dtype=inputs[0].dtype, device=inputs[0].device)
        n, steps = inputs[0].shape[0], self.n_steps
        diffs = tuple(x - b for x, b in zip(inputs, bases))
        # all (node, example) points, node-major: point k*n + i is baseline_i + a_k * diff_i
        totals = [torch.zeros_like(x) for x in inputs]
        chunk = self.internal_batch_size or points_per_chunk(inputs)
        for start in range(0, n * steps, chunk):
            idx = torch.arange(start, min(start + chunk, n * steps), device=inputs[0].device)
            k, i = idx // n, idx % n
            views = [(-1,) + (1,) * (x.dim() - 1) for x in inputs]
            points = tuple(b[i] + alphas[k].view(v) * d[i] for b, d, v in zip(bases, diffs, views))
            _, grads = forward.gradients(points, target[i], i)
            for total, g, v in zip(totals, grads, views):
                total.index_add_(0, i, g * w[k].view(v))
        attributions = tuple(d * total for d, total in zip(diffs, totals))
        with torch.no_grad():
            gap = forward.input_scores(target) - forward.scores(bases, target)
        delta = sum(a.flatten(1).sum(dim=1) for a in attributions) - gap
        params = self.params()
        if baselines is not None:
            params["baselines"] = _describe(baselines)
        return Explanation(attributions, target, self.method_name, params, {"completeness_delta": delta})

    @classmethod
    def _baselines(cls, inputs: tuple[Tensor, ...], baselines: object) -> tuple[Tensor, ...]:
        """One baseline tensor per input tensor (see the class docstring)."""
        given = baselines if isinstance(baselines, tuple) else (baselines,) * len(inputs)
        if len(given) != len(inputs):
            raise InvalidInputError(f"baselines must give one baseline per input tensor: {len(inputs)} inputs, {len(given)} baselines")
        return tuple(cls._baseline(x, b) for x, b in zip(inputs, given))

    _baseline = staticmethod(baseline_tensor)


def _describe(baselines: object) -> object:
    """What `Explanation.params` records of per-call baselines: a number, "tensor [shape]", or a list of these."""
    if isinstance(baselines, tuple):
        return [_describe(b) for b in baselines]
    if isinstance(baselines, Tensor):
        return f"tensor {list(baselines.shape)}"
    return baselines
