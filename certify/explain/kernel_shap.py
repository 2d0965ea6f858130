"""Shapley values of the class score f_c by sampling, through Captum: KernelSHAP (Lundberg & Lee, "A Unified
Approach to Interpreting Model Predictions", NeurIPS 2017, Theorem 2) and Shapley value sampling (Castro, Gomez &
Tejada, "Polynomial calculation of the Shapley value based on sampling", Computers & OR 2009; Strumbelj &
Kononenko 2010).

Both explain the game v(S) = f_c(x on the features in S, baseline elsewhere) over M features (the input entries,
or the groups of `feature_mask`); a feature's attribution is spread to each of its entries unchanged (Captum's
`return_input_shape`), signed. The Shapley values sum to f_c(x) - f_c(baseline) (efficiency).

- `KernelShap`: `n_samples` coalitions drawn with probability proportional to the Shapley kernel (the full and
  the empty coalition always included) and a least-squares fit of a linear model on them
  (`captum.attr.KernelShap`); exact as n_samples grows, biased for small n_samples.
- `ShapleyValueSampling`: the average marginal contribution of each feature over `n_samples` random feature
  permutations (`captum.attr.ShapleyValueSampling`; M + 1 model calls per permutation); unbiased, and
  efficiency holds exactly for every n_samples.

Randomness: seeded by `seed` (see `certify.explain.captum_adapter`). KernelSHAP fits one linear model per example
of a batch (Captum's own loop), the examples drawing their coalitions one after the other from one stream; Shapley
value sampling applies each permutation to the whole batch.
"""
from __future__ import annotations

from types import ModuleType

from torch import Tensor, nn

from certify.explain.captum_adapter import CaptumExplainer, captum_baselines, checked_feature_mask
from certify.validation import positive_int


class _SampledShapley(CaptumExplainer):
    """Shared constructor and call of the two sampling estimators of Shapley values."""

    explain_options = ("baselines", "feature_mask")
    call_options = ("n_samples", "perturbations_per_eval", "seed")
    captum_name = ""

    def __init__(self, model: nn.Module, n_samples: int = 25, perturbations_per_eval: int = 1, seed: int | None = 0) -> None:
        super().__init__(model)
        positive_int(n_samples, "n_samples")
        positive_int(perturbations_per_eval, "perturbations_per_eval")
        if seed is not None:
            positive_int(seed, "seed", least=0)
        self.n_samples, self.perturbations_per_eval, self.seed = n_samples, perturbations_per_eval, seed

    def params(self) -> dict[str, object]:
        return {"n_samples": self.n_samples, "perturbations_per_eval": self.perturbations_per_eval, "seed": self.seed}

    def _attribute(self, captum: ModuleType, inputs: Tensor, target: Tensor, baselines: Tensor | float | None = None,
                   feature_mask: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        method = getattr(captum, self.captum_name)(self.model)
        attributions = method.attribute(inputs, baselines=captum_baselines(inputs, baselines), target=target,
                                        feature_mask=checked_feature_mask(inputs, feature_mask),
                                        n_samples=self.n_samples, perturbations_per_eval=self.perturbations_per_eval)
        return attributions, {}


class KernelShap(_SampledShapley):
    """`KernelShap(model, n_samples=25, perturbations_per_eval=1, seed=0)`: KernelSHAP through Captum;
    `explain`/`attribute` take `baselines` (tensor broadcastable to the inputs, number, or None for zeros) and
    `feature_mask` (integer ids 0..M-1, [1, ...] or [N, ...]; None: one feature per entry). Errors: UsageError
    for a count < 1 or a negative seed; InvalidInputError for bad baselines or masks."""

    method_name = "kernel-shap"
    captum_name = "KernelShap"
    notices = ("You are providing multiple inputs",)  # Captum fits one surrogate per example of a batch


class ShapleyValueSampling(_SampledShapley):
    """`ShapleyValueSampling(model, n_samples=25, perturbations_per_eval=1, seed=0)`: Shapley values averaged over
    `n_samples` random permutations, through Captum; options and errors as `KernelShap`."""

    method_name = "shapley-value-sampling"
    captum_name = "ShapleyValueSampling"
