"""LIME (Ribeiro, Singh & Guestrin, "'Why Should I Trust You?': Explaining the Predictions of Any Classifier",
KDD 2016, eq. 1) through `captum.attr.Lime`:

    a = argmin_w  sum_k pi(x, z_k) (f_c(z_k) - w . s_k)^2 + alpha ||w||_1,

over `n_samples` binary coalitions s_k ~ Bernoulli(1/2)^M of the M features (input entries, or the groups of
`feature_mask`), z_k = x on the features of s_k and the baseline elsewhere, weighted by the exponential kernel
pi = exp(-d(x, z_k)^2 / kernel_width^2) of the cosine or Euclidean distance d (Captum's
`get_exp_kernel_similarity_function`); the Lasso (sklearn, through Captum's `SkLearnLasso`) for alpha > 0,
ordinary least squares for alpha = 0. A feature's coefficient is spread to each of its entries (signed).
The coefficients are a local surrogate's, not Shapley values: they need not sum to f_c(x) - f_c(baseline).

Randomness: seeded by `seed` (see `certify.explain.captum_adapter`); Captum fits one surrogate per example.
"""
from __future__ import annotations

from types import ModuleType

from torch import Tensor, nn

from certify.errors import UsageError
from certify.explain.captum_adapter import CaptumExplainer, captum_baselines, checked_feature_mask, import_extra
from certify.validation import nonnegative_number, positive_int, positive_number

DISTANCES = ("cosine", "euclidean")


class Lime(CaptumExplainer):
    """`Lime(model, n_samples=50, alpha=0.01, distance_mode="cosine", kernel_width=1.0, perturbations_per_eval=1,
    seed=0)`; `explain`/`attribute` take `baselines` (tensor broadcastable to the inputs, number, or None for
    zeros) and `feature_mask` (integer ids 0..M-1, [1, ...] or [N, ...]; None: one feature per entry). Errors:
    UsageError for a bad count, alpha < 0, kernel_width <= 0, an unknown distance or a negative seed;
    InvalidInputError for bad baselines or masks."""

    method_name = "lime"
    explain_options = ("baselines", "feature_mask")
    call_options = ("n_samples", "alpha", "distance_mode", "kernel_width", "perturbations_per_eval", "seed")
    notices = ("You are providing multiple inputs",)  # Captum fits one surrogate per example of a batch

    def __init__(
        self,
        model: nn.Module,
        n_samples: int = 50,
        alpha: float = 0.01,
        distance_mode: str = "cosine",
        kernel_width: float = 1.0,
        perturbations_per_eval: int = 1,
        seed: int | None = 0,
    ) -> None:
        super().__init__(model)
        positive_int(n_samples, "n_samples")
        positive_int(perturbations_per_eval, "perturbations_per_eval")
        nonnegative_number(alpha, "alpha")
        positive_number(kernel_width, "kernel_width")
        if distance_mode not in DISTANCES:
            raise UsageError(f"unknown distance_mode {distance_mode!r}; choose one of {DISTANCES}")
        if seed is not None:
            positive_int(seed, "seed", least=0)
        self.n_samples, self.alpha, self.distance_mode, self.kernel_width = n_samples, alpha, distance_mode, kernel_width
        self.perturbations_per_eval, self.seed = perturbations_per_eval, seed

    def params(self) -> dict[str, object]:
        return {"n_samples": self.n_samples, "alpha": self.alpha, "distance_mode": self.distance_mode,
                "kernel_width": self.kernel_width, "perturbations_per_eval": self.perturbations_per_eval,
                "seed": self.seed}

    def _attribute(self, captum: ModuleType, inputs: Tensor, target: Tensor, baselines: Tensor | float | None = None,
                   feature_mask: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        linear = import_extra("captum._utils.models.linear_model")
        surrogate = linear.SkLearnLasso(alpha=self.alpha) if self.alpha > 0 else linear.SkLearnLinearRegression()
        similarity = import_extra("captum.attr._core.lime").get_exp_kernel_similarity_function(
            self.distance_mode, self.kernel_width)
        method = captum.Lime(self.model, interpretable_model=surrogate, similarity_func=similarity)
        attributions = method.attribute(inputs, baselines=captum_baselines(inputs, baselines), target=target,
                                        feature_mask=checked_feature_mask(inputs, feature_mask),
                                        n_samples=self.n_samples, perturbations_per_eval=self.perturbations_per_eval)
        return attributions, {}
