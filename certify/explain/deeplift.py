"""DeepLIFT (Shrikumar, Greenside & Kundaje, "Learning Important Features Through Propagating Activation
Differences", ICML 2017), Rescale rule, through `captum.attr.DeepLift`:

    a_i = (x_i - x'_i) * m_i,   m = the multipliers back-propagated with each nonlinearity's gradient replaced by
                                   (act(z) - act(z')) / (z - z') (the Rescale rule, eq. 3; the plain gradient where
                                   |z - z'| < eps),

for the baseline x' (`baselines`, zeros by default). Summation-to-delta (the paper's eq. 1): sum_i a_i =
f_c(x) - f_c(x') for piecewise-linear networks of ReLUs; the per-example `convergence_delta` diagnostic is
sum_i a_i - (f_c(x) - f_c(x')) (Captum's convergence delta; reported with multiply_by_inputs=True only, where it
means that). Captum applies the Rescale rule to activation MODULES (nn.ReLU, nn.Softplus, nn.Sigmoid, ...; each
instance used once in the forward pass); an activation called as a function (torch.relu in forward) is
differentiated as usual, so on such models the result is not DeepLIFT. With `multiply_by_inputs=False` the
attributions are the multipliers m (Ancona et al.'s "local" variant).
"""
from __future__ import annotations

from types import ModuleType

from torch import Tensor, nn

from certify.explain.captum_adapter import CaptumExplainer, captum_baselines
from certify.validation import positive_number


class DeepLift(CaptumExplainer):
    """`DeepLift(model, multiply_by_inputs=True, eps=1e-10)`; `explain`/`attribute` take `baselines` (a tensor
    broadcastable to the inputs, a number, or None for zeros). Diagnostics: `convergence_delta` [N] (with
    multiply_by_inputs=True). Errors: UsageError for eps <= 0; InvalidInputError for bad baselines."""

    method_name = "deeplift"
    call_options = ("multiply_by_inputs", "eps")
    notices = ("Setting forward, backward hooks",)  # Captum hooks the activation modules for the call

    def __init__(self, model: nn.Module, multiply_by_inputs: bool = True, eps: float = 1e-10) -> None:
        super().__init__(model)
        positive_number(eps, "eps")
        self.multiply_by_inputs, self.eps = bool(multiply_by_inputs), eps

    def params(self) -> dict[str, object]:
        return {"multiply_by_inputs": self.multiply_by_inputs, "eps": self.eps}

    def _attribute(self, captum: ModuleType, inputs: Tensor, target: Tensor, baselines: Tensor | float | None = None
                   ) -> tuple[Tensor, dict[str, Tensor]]:
        method = captum.DeepLift(self.model, multiply_by_inputs=self.multiply_by_inputs, eps=self.eps)
        attributions, delta = method.attribute(inputs.detach().requires_grad_(), target=target,
                                               baselines=captum_baselines(inputs, baselines), return_convergence_delta=True)
        return attributions, ({"convergence_delta": delta.detach()} if self.multiply_by_inputs else {})
