"""The shared explainer contract (certify.explain.base), for every explainer: works inside
torch.inference_mode() and torch.no_grad(), works for bfloat16 / float16 models, refuses non-finite
attributions (a model whose gradient is NaN or Inf where its logits are finite) with an error naming the
examples, and names only public calls and accepted options when given unknown keyword options."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from certify.errors import InvalidInputError, UsageError
from certify.explain import Gradient, IntegratedGradients, LagrangeDual, MoreauGrad, SmoothGrad
from certify.explain.noise_tunnel import NoiseTunnel
from certify.explain.registry import make_explainer

MAKERS = {
    "gradient": Gradient,
    "integrated-gradients": lambda m: IntegratedGradients(m, n_steps=8),
    "smoothgrad": lambda m: SmoothGrad(m, samples=8),
    "moreaugrad": lambda m: MoreauGrad(m, rho=0.5, max_iter=50),
    "sparse-moreaugrad": lambda m: MoreauGrad(m, rho=0.5, sparsity=0.05, max_iter=50),
    "lagrange-dual": lambda m: LagrangeDual(m, max_iter=50, restarts=1),
    "noise-tunnel": lambda m: NoiseTunnel(IntegratedGradients(m, n_steps=4), nt_samples=3, stdevs=0.1),
}


@pytest.fixture(scope="module")
def net() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 16), nn.Softplus(), nn.Linear(16, 3)).eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(4, 6, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_every_explainer_works_inside_inference_mode_and_no_grad(name, net, x) -> None:
    explainer = MAKERS[name](net)
    expected = explainer.attribute(x)
    with torch.inference_mode():
        inside = x.clone()  # an inference tensor
        got = explainer.attribute(inside)
        target = torch.tensor([0, 1, 2, 0])  # an inference tensor too
        with_target = explainer.attribute(inside, target=target)
    assert not got.is_inference() and not with_target.is_inference()
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(with_target, explainer.attribute(x, target=[0, 1, 2, 0]))
    with torch.no_grad():
        torch.testing.assert_close(explainer.attribute(x), expected)


def test_a_model_created_under_inference_mode_is_a_clear_error(x) -> None:
    with torch.inference_mode():
        frozen = nn.Sequential(nn.Linear(6, 3)).eval()
    with pytest.raises(UsageError, match="inference_mode"):
        Gradient(frozen).attribute(x)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", sorted(MAKERS))
def test_every_explainer_works_for_low_precision_models(name, dtype, net, x) -> None:
    model = copy.deepcopy(net).to(dtype)
    explanation = MAKERS[name](model).explain(x.to(dtype))
    assert explanation.attributions.dtype == dtype and explanation.attributions.shape == x.shape
    assert bool(torch.isfinite(explanation.attributions).all())
    if name == "gradient":  # close to the float32 gradient, up to the low precision
        reference = Gradient(net).attribute(x)
        assert float((explanation.attributions.float() - reference).abs().max()) <= 0.05 * float(reference.abs().max())


class SqrtModel(nn.Module):
    """Finite logits everywhere on x_0 >= 0, infinite gradient at x_0 = 0 (d sqrt(t)/dt = inf at 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        root = torch.sqrt(x[:, 0])
        return torch.stack([root + x[:, 1], 2.0 - root - x[:, 1]], dim=1)


@pytest.mark.parametrize("name", ["gradient", "integrated-gradients", "moreaugrad", "sparse-moreaugrad"])
def test_a_nan_or_inf_gradient_with_finite_logits_is_refused_naming_the_examples(name) -> None:
    x = torch.tensor([[0.25, 0.5], [0.0, 0.5], [1.0, 0.2]], dtype=torch.float64)
    model = SqrtModel().eval()
    with torch.no_grad():
        assert bool(torch.isfinite(model(x)).all())
    with pytest.raises(InvalidInputError, match=r"examples \[1\]") as info:
        MAKERS[name](model).attribute(x, target=0)
    assert "NaN or Inf" in str(info.value) and "finite" in str(info.value)
    MAKERS[name](model).attribute(x[[0, 2]], target=0)  # the other examples are explained


def test_smoothgrad_refuses_nan_gradients_at_its_samples() -> None:
    x = torch.tensor([[0.0, 0.5], [4.0, 0.5]], dtype=torch.float64)  # noise around x_0 = 0 hits sqrt(< 0)
    with pytest.raises(InvalidInputError, match=r"smoothgrad: non-finite attributions for examples \[0\]"):
        SmoothGrad(SqrtModel().eval(), sigma=0.1, samples=16).attribute(x, target=0)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_unknown_options_name_the_public_call_and_the_accepted_options(name, net, x) -> None:
    explainer = MAKERS[name](net)
    for call in (explainer.explain, explainer.attribute):
        with pytest.raises(UsageError) as info:
            call(x, bogus=1)
        message = str(info.value)
        assert "_explain" not in message and "bogus" in message
        assert f"{type(explainer).__name__}.explain() and .attribute()" in message
    accepted = {"integrated-gradients": "baselines", "smoothgrad": "noise", "noise-tunnel": "nt_noise"}.get(name, "none")
    assert accepted in message


def test_accepted_options_still_work(net, x) -> None:
    ig = IntegratedGradients(net, n_steps=8)
    torch.testing.assert_close(ig.attribute(x, baselines=0.0), ig.attribute(x))
    noise = torch.randn(4, 8, 6, generator=torch.Generator().manual_seed(0))
    sg = SmoothGrad(net, samples=8)
    torch.testing.assert_close(sg.attribute(x, noise=noise), sg.attribute(x, noise=noise))


def test_unknown_constructor_parameters_are_usage_errors_naming_the_accepted_ones(net) -> None:
    with pytest.raises(UsageError, match=r"unknown parameters \['foo'\] for method 'moreaugrad'; accepted: rho, "):
        make_explainer("moreaugrad", net, foo=1)
    with pytest.raises(UsageError, match="accepted: none"):
        make_explainer("gradient", net, rho=1.0)
    for build in (lambda: LagrangeDual(net, foo=1), lambda: make_explainer("lagrange-dual", net, foo=1)):
        with pytest.raises(UsageError, match=r"unknown options \['foo'\].*step_init") as info:
            build()
        assert "solve_fmn" not in str(info.value)
    assert make_explainer("lagrange-dual", net, method="gda", step_size=0.5).solver_options == {"step_size": 0.5}
