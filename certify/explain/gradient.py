"""Simple gradient (signed saliency): a_i = d f_c / d x_i at the input (Simonyan, Vedaldi & Zisserman,
"Deep inside convolutional networks", ICLR workshop 2014, eq. 2).

Signed, as every explanation of the package (DESIGN section 3); equals Captum's `Saliency(abs=False)`."""
from __future__ import annotations

from torch import Tensor

from certify.explain.base import EvaluatedForward, Explainer, Explanation


class Gradient(Explainer):
    """The signed input gradient of the score, `Gradient(model)`; no parameters.

    `attribute(inputs, target=None, *, additional_forward_args=None)` returns grad_x f_c(x) with the inputs'
    shape and dtype: `inputs` [N, ...] (or a tuple of tensors for `model(x1, x2, ...)`, giving a tuple of
    gradients), `target` None (the predicted class), an int, one class per example, or index tuples for
    outputs with more than two dimensions; `additional_forward_args` are passed to the model after the inputs.
    `explain` adds the score f_c(x) per example (diagnostic `score`). One forward and one backward pass for the
    whole batch, the forward pass being the one that validates the outputs and resolves the target. Errors: see
    `Explainer.explain`."""

    method_name = "gradient"
    forward_interface = True
    gradient_at_inputs = True

    def _explain(self, inputs: tuple[Tensor, ...], target: Tensor, forward: EvaluatedForward) -> Explanation:
        scores, grads = forward.input_gradients(target)
        return Explanation(grads, target, self.method_name, self.params(), {"score": scores})
