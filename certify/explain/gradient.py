"""Simple gradient (signed saliency): a_i = d f_c / d x_i at the input (Simonyan et al., 2014).

Signed, as every explanation of the package (DESIGN section 3); equals Captum's `Saliency(abs=False)`."""
from __future__ import annotations

from torch import Tensor

from certify.explain.base import Explainer, Explanation
from certify.scores import score_gradients


class Gradient(Explainer):
    method_name = "gradient"

    def _explain(self, inputs: Tensor, target: Tensor) -> Explanation:
        scores, grads = score_gradients(self.model, inputs, target)
        return Explanation(grads, target, self.method_name, self.params(), {"score": scores})
