"""Integrated Gradients (certify/explain/integrated_gradients.py): equal to Captum for every quadrature rule
(trapezoid weights differ by a known factor), chunking-invariant, completeness improving with steps,
batched equal to per-example, bad parameters refused."""
import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIG

from certify.errors import UsageError
from certify.explain import IntegratedGradients
from conftest import assert_close_rel


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"])
def test_integrated_gradients_equals_captum(zoo_case, method):
    _, model, x, y = zoo_case
    baseline = torch.full_like(x, 0.1)
    ours = IntegratedGradients(model, n_steps=16, method=method).explain(x, target=y, baselines=baseline)
    theirs, delta = CaptumIG(model).attribute(
        x, baselines=baseline, target=y, n_steps=16, method=method, return_convergence_delta=True
    )
    if method == "riemann_trapezoid":
        # Captum's trapezoid weights are 1/n with halved ends (they sum to (n-1)/n); ours are the
        # trapezoid rule's 1/(n-1): the attributions differ exactly by that factor.
        assert_close_rel(ours.attributions, theirs * 16 / 15)
    else:
        assert_close_rel(ours.attributions, theirs)
        assert torch.allclose(ours.diagnostics["completeness_delta"], delta.to(x.dtype), atol=1e-4)


def test_integrated_gradients_chunking_does_not_change_result(digits_mlp):
    model, data = digits_mlp
    x = data.x_test[:5]
    whole = IntegratedGradients(model, n_steps=20).attribute(x)
    chunked = IntegratedGradients(model, n_steps=20, internal_batch_size=7).attribute(x)
    assert_close_rel(chunked, whole, 1e-6)


def test_integrated_gradients_completeness_improves_with_steps(digits_mlp):
    """Gauss-Legendre converges fast on a smooth softplus net: the completeness gap must shrink."""
    model, data = digits_mlp
    x = data.x_test[:8].double()
    model64 = model.double()
    try:
        coarse = IntegratedGradients(model64, n_steps=2).explain(x).diagnostics["completeness_delta"].abs().max()
        fine = IntegratedGradients(model64, n_steps=64).explain(x).diagnostics["completeness_delta"].abs().max()
    finally:
        model.float()
    assert fine < 1e-8 < coarse


@pytest.mark.parametrize(
    "make",
    [
        lambda m: IntegratedGradients(m, n_steps=8),
        lambda m: IntegratedGradients(m, n_steps=8, method="riemann_trapezoid", internal_batch_size=5),
    ],
)
def test_batched_equals_per_example(zoo_case, make):
    _, model, x, y = zoo_case
    explainer = make(model)
    batched = explainer.attribute(x, target=y)
    single = torch.cat([explainer.attribute(x[i : i + 1], target=int(y[i])) for i in range(x.shape[0])])
    assert_close_rel(batched, single, 1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: IntegratedGradients(m, n_steps=0),
        lambda m: IntegratedGradients(m, method="simpson"),
        lambda m: IntegratedGradients(m, internal_batch_size=0),
    ],
)
def test_bad_parameters_are_refused(digits_mlp, make):
    with pytest.raises(UsageError):
        make(digits_mlp[0])
