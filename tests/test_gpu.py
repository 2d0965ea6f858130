"""The same code paths on CUDA: bounds, explainers and certificates computed on a GPU agree with the CPU and stay
sound (issue 18: "the same code path on GPU").

Marked `gpu` and left out of the default run, which has no GPU; run them with `python3 dev.py test-gpu` on a
machine with a CUDA device. Selected without one, they fail (they never pass vacuously).
"""
from __future__ import annotations

import pytest
import torch

from certify.bounds.crown import margin_lower_bounds
from certify.bounds.network import from_module
from certify.certificates.checker import verify_certificate
from certify.certificates.issuers import certify_explanations
from certify.explain import Gradient, IntegratedGradients, MoreauGrad, SmoothGrad
from certify.models import zoo

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda() -> torch.device:
    if not torch.cuda.is_available():
        pytest.fail("the gpu tests need a CUDA device, and torch sees none")
    return torch.device("cuda")


def _digits(name: str, n: int, device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    model, data = zoo.load(name)
    return model.to(device), data.x_test[:n].to(device)


def test_crown_margins_on_cuda_equal_cpu_and_hold_on_samples(cuda: torch.device) -> None:
    model, x = _digits("digits-relu-mlp", 16, torch.device("cpu"))
    target = model(x).argmax(1)
    net = from_module(model, tuple(x.shape[1:]))
    domain = (torch.zeros_like(x[0]), torch.ones_like(x[0]))
    eps = 0.02
    cpu = margin_lower_bounds(net, x, target, eps, "inf", domain).value
    gpu = margin_lower_bounds(net, x.to(cuda), target.to(cuda), eps, "inf",
                              tuple(d.to(cuda) for d in domain)).value
    finite = torch.isfinite(cpu)
    assert torch.equal(finite, torch.isfinite(gpu.cpu()))
    assert torch.allclose(cpu[finite], gpu.cpu()[finite], rtol=1e-9, atol=1e-9)
    # soundness on the GPU: no sampled point of the ball has a margin below its bound
    gen = torch.Generator(device=cuda).manual_seed(0)
    xs = x.to(cuda)
    deltas = (torch.rand((256, *xs.shape), generator=gen, device=cuda, dtype=xs.dtype) * 2 - 1) * eps
    points = (xs[None] + deltas).clamp(0, 1).reshape(-1, *xs.shape[1:])
    logits = model.to(cuda).double()(points.double()).reshape(256, xs.shape[0], -1)
    margins = logits.gather(2, target.to(cuda)[None, :, None].expand(256, -1, 1)) - logits
    assert bool((margins.min(0).values >= torch.where(torch.isfinite(gpu), gpu, -gpu)).all())


@pytest.mark.parametrize("make", [
    lambda m: Gradient(m),
    lambda m: IntegratedGradients(m, n_steps=32),
    lambda m: MoreauGrad(m, rho=0.5, max_iter=200),
    lambda m: MoreauGrad(m, rho=0.5, sparsity=0.05, max_iter=200),
], ids=["gradient", "integrated-gradients", "moreaugrad", "sparse-moreaugrad"])
def test_explainers_on_cuda_equal_cpu(cuda: torch.device, make) -> None:
    model, x = _digits("digits-softplus-mlp", 32, torch.device("cpu"))
    on_cpu = make(model).attribute(x)
    on_gpu = make(model.to(cuda)).attribute(x.to(cuda))
    assert on_gpu.device == x.to(cuda).device
    scale = on_cpu.abs().max()
    assert torch.allclose(on_gpu.cpu(), on_cpu, rtol=1e-4, atol=1e-4 * float(scale))


def test_smoothgrad_on_cuda_is_unbiased_like_cpu(cuda: torch.device) -> None:
    """SmoothGrad's noise differs between devices, so the two means agree only statistically: with 2,000 samples
    their difference is a few standard errors of the per-sample gradients at most."""
    model, x = _digits("digits-softplus-mlp", 4, torch.device("cpu"))
    spread = Gradient(model).attribute(x).abs().max()
    on_cpu = SmoothGrad(model, sigma=0.1, samples=2000).attribute(x)
    on_gpu = SmoothGrad(model.to(cuda), sigma=0.1, samples=2000).attribute(x.to(cuda)).cpu()
    assert float((on_gpu - on_cpu).abs().max()) < 0.2 * float(spread)


def test_moreaugrad_certificate_issued_on_cuda_verifies(cuda: torch.device) -> None:
    model, x = _digits("digits-softplus-mlp", 4, cuda)
    certificates = certify_explanations(MoreauGrad(model, rho=0.5, max_iter=300), x, eps=0.05,
                                        model_spec="zoo:digits-softplus-mlp")
    assert len(certificates) == 4
    for cert in certificates:
        report = verify_certificate(cert, model.cpu())
        assert report.valid, report.failures()
        model.to(cuda)
