"""RelEx (Lim, Lee & Kim, "Building Reliable Explanations of Unreliable Neural Networks: Locally Smoothing
Perspective of Model Interpretation", CVPR 2021, pp. 6464-6473; arXiv:2103.14332): a saliency mask m in [0, 1]
(the input's shape) learned on a batch of noisy copies of the input with an l1 penalty, so that the explanation
holds for the input and its neighbourhood (the paper's "locally smooth" explanation).

Objective, per example x and class c (s_c the softmax probability of class c, x_b = x + sigma Z_b, Z_b ~ N(0, I)):

    L(m) = (1/B) sum_b [ -log s_c(x_b * m) - lambda2 log(1 - s_c(x_b * (1 - m))) ] + lambda1 ||m||_1,

the foreground x_b * m must keep class c, the background x_b * (1 - m) must lose it, and the mask is sparse. It is
minimised by stochastic gradient steps with a fresh batch of B noisy copies per iteration: the gradient is
normalised to unit l2 norm, SGD with heavy-ball momentum (v <- momentum v + g, m <- m - lr v) takes the step, and
m is clipped to [0, 1] after each step, from m_0 ~ U(0, 0.01). sigma is relative to the example's value range
(sigma * (max x - min x)) by default.

Source of the definition: the abstract (noisy copies, l1 regularisation of the saliency map) and the authors'
public implementation (JBNU-VL/RelEx, models/saliency/optim_methods/relex.py; no licence, read, not copied), which
fixes the loss terms, the optimiser and the defaults used here (B = 50, 50 iterations, lr = 0.1, momentum = 0.99,
lambda1 = 1e-4, lambda2 = 1, relative sigma 0.1). The paper's full text was not available offline; where the code
adds 1e-7 inside the background logarithm, we evaluate log(1 - s_c) exactly as logsumexp_{j != c} z_j -
logsumexp_j z_j (no offset), and the code's batch-1 procedure runs here on a batch of examples (each example has
its own mask, noise and normalised gradient).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from certify.errors import UsageError
from certify.explain.base import Explainer, Explanation
from certify.validation import nonnegative_number, positive_int, positive_number


def relex_loss(logits_fore: Tensor, logits_back: Tensor, target: Tensor, lambda2: float) -> Tensor:
    """Per-row -log s_c(foreground) - lambda2 log(1 - s_c(background)) for logits [R, C] and classes [R]:
    shape [R]. Both logarithms are evaluated with log-sum-exp (finite for any finite logits)."""
    fore = -torch.log_softmax(logits_fore, dim=1).gather(1, target.view(-1, 1)).squeeze(1)
    others = logits_back.scatter(1, target.view(-1, 1), float("-inf"))
    back = torch.logsumexp(logits_back, dim=1) - torch.logsumexp(others, dim=1)  # -log(1 - s_c)
    return fore + lambda2 * back


class RelEx(Explainer):
    """`RelEx(model, sigma=0.1, samples=50, iterations=50, lr=0.1, momentum=0.99, lambda1=1e-4, lambda2=1.0,
    relative=True, seed=0)`.

    sigma >= 0 (a fraction of each example's value range with `relative=True`, else absolute); samples: B noisy
    copies per iteration; seed: int >= 0 for the mask initialisation and the noise. Every constructor parameter
    may be given per call (`call_options`). Attributions: the mask
    [N, ...] in [0, 1]. Diagnostics [N]: `loss` (the objective of the final mask on the last batch),
    `foreground_probability` and `background_probability` (mean s_c of x_b * m and x_b * (1 - m) on that
    batch), `noise_std`. UsageError for bad parameters."""

    method_name = "relex"
    call_options = ("sigma", "samples", "iterations", "lr", "momentum", "lambda1", "lambda2", "relative", "seed")

    def __init__(
        self,
        model: nn.Module,
        sigma: float = 0.1,
        samples: int = 50,
        iterations: int = 50,
        lr: float = 0.1,
        momentum: float = 0.99,
        lambda1: float = 1e-4,
        lambda2: float = 1.0,
        relative: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(model)
        nonnegative_number(sigma, "sigma")
        positive_int(samples, "samples")
        positive_int(iterations, "iterations")
        positive_number(lr, "lr")
        if not nonnegative_number(momentum, "momentum") < 1:
            raise UsageError(f"momentum must lie in [0, 1), got {momentum!r}")
        nonnegative_number(lambda1, "lambda1")
        nonnegative_number(lambda2, "lambda2")
        positive_int(seed, "seed", least=0)
        self.sigma, self.samples, self.iterations, self.lr, self.momentum = sigma, samples, iterations, lr, momentum
        self.lambda1, self.lambda2, self.relative, self.seed = lambda1, lambda2, bool(relative), seed

    def params(self) -> dict[str, object]:
        return {
            "sigma": self.sigma, "samples": self.samples, "iterations": self.iterations, "lr": self.lr,
            "momentum": self.momentum, "lambda1": self.lambda1, "lambda2": self.lambda2,
            "relative": self.relative, "seed": self.seed,
        }

    def _objective(self, mask: Tensor, noisy: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(L [N], mean s_c of the foregrounds [N], of the backgrounds [N]) on noisy copies [N, B, ...]."""
        n, b = noisy.shape[:2]
        fore, back = (noisy * mask.unsqueeze(1)).flatten(0, 1), (noisy * (1 - mask).unsqueeze(1)).flatten(0, 1)
        logits = self.model(torch.cat([fore, back]))
        repeated = target.repeat_interleave(b)
        per_copy = relex_loss(logits[: n * b], logits[n * b :], repeated, self.lambda2).view(n, b)
        probs = torch.softmax(logits, dim=1).gather(1, torch.cat([repeated, repeated]).view(-1, 1)).view(2, n, b)
        loss = per_copy.mean(1) + self.lambda1 * mask.flatten(1).abs().sum(1)
        return loss, probs[0].mean(1).detach(), probs[1].mean(1).detach()

    def _explain(self, inputs: Tensor, target: Tensor) -> Explanation:
        n, shape = inputs.shape[0], tuple(inputs.shape[1:])
        generator = torch.Generator(device=inputs.device).manual_seed(self.seed)
        flat = inputs.detach().flatten(1)
        scale = self.sigma * (flat.max(1).values - flat.min(1).values) if self.relative else torch.full((n,), float(self.sigma), dtype=inputs.dtype, device=inputs.device)
        scale_view = scale.view(n, 1, *([1] * len(shape)))
        mask = torch.rand(inputs.shape, generator=generator, dtype=inputs.dtype, device=inputs.device) / 100
        velocity = torch.zeros_like(mask)
        x = inputs.detach().unsqueeze(1)
        for _ in range(self.iterations):
            noise = torch.randn((n, self.samples, *shape), generator=generator, dtype=inputs.dtype, device=inputs.device)
            with torch.enable_grad():
                mask.requires_grad_(True)
                loss, _, _ = self._objective(mask, x + scale_view * noise, target)
                (grad,) = torch.autograd.grad(loss.sum(), mask)  # examples are independent: per-example gradients
            norms = grad.flatten(1).norm(dim=1).clamp_min(torch.finfo(grad.dtype).tiny)
            velocity = self.momentum * velocity + grad / norms.view(n, *([1] * len(shape)))
            mask = (mask.detach() - self.lr * velocity).clamp(0.0, 1.0)
        with torch.no_grad():
            loss, fore, back = self._objective(mask, x + scale_view * noise, target)
        diagnostics = {"loss": loss.detach(), "foreground_probability": fore, "background_probability": back, "noise_std": scale}
        return Explanation(mask.detach(), target, self.method_name, self.params(), diagnostics)
