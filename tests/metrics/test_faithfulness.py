"""Deletion / insertion curves against their closed form on a linear model, and infidelity against its closed
form and against Captum's `infidelity` on the same perturbations."""
import copy

import numpy as np
import pytest
import torch
from captum.metrics import infidelity as captum_infidelity
from torch import nn

from certify.errors import InvalidInputError, TargetError, UsageError
from certify.explain import Gradient
from certify.metrics import deletion, infidelity, insertion
from certify.metrics.faithfulness import gaussian, noisy_baseline, square_removal
from certify.models import zoo


def _two_class_linear(w: torch.Tensor) -> nn.Module:
    """Logits (0, w.x): the probability of class 1 is sigmoid(w.x)."""
    model = nn.Linear(w.numel(), 2, bias=False).double().eval()
    with torch.no_grad():
        model.weight.copy_(torch.stack([torch.zeros_like(w), w]))
    return model


@pytest.fixture(scope="module")
def linear_case():
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(8, generator=generator, dtype=torch.float64)
    x = torch.rand(5, 8, generator=generator, dtype=torch.float64) + 0.5
    return _two_class_linear(w), w, x


@pytest.mark.parametrize("steps", [8, 4, 3])
def test_deletion_and_insertion_curves_of_a_linear_model(linear_case, steps):
    """Attributions = contributions w_i x_i; after removing (baseline 0) the m largest, the logit of class 1
    is the sum of the others, so the curve is sigmoid(total - cumulative sum of the sorted contributions);
    insertion is sigmoid(cumulative sum). m = floor(k D / steps)."""
    model, w, x = linear_case
    contributions = w * x
    ranked = contributions.sort(dim=1, descending=True).values
    prefix = torch.cat([torch.zeros(5, 1, dtype=torch.float64), ranked.cumsum(dim=1)], dim=1)
    moved = [k * 8 // steps for k in range(steps + 1)]
    expected_deletion = torch.sigmoid(contributions.sum(dim=1, keepdim=True) - prefix[:, moved])
    expected_insertion = torch.sigmoid(prefix[:, moved])
    fractions = np.arange(steps + 1) / steps
    for curve, expected in (
        (deletion(model, x, contributions, target=1, steps=steps), expected_deletion),
        (insertion(model, x, contributions, target=1, steps=steps), expected_insertion),
    ):
        torch.testing.assert_close(curve.fractions, torch.as_tensor(fractions))
        torch.testing.assert_close(curve.probabilities, expected, rtol=1e-12, atol=1e-15)
        reference = np.trapezoid(expected.numpy(), fractions, axis=1)
        np.testing.assert_allclose(curve.auc.numpy(), reference, rtol=1e-12)


def test_contributions_give_the_lowest_deletion_and_highest_insertion_auc(linear_case):
    """On a linear model removing the largest contributions first minimises every point of the deletion
    curve (and maximises every point of the insertion curve), so no other ordering has a better AUC."""
    model, w, x = linear_case
    best_deletion = deletion(model, x, w * x, target=1).auc
    best_insertion = insertion(model, x, w * x, target=1).auc
    generator = torch.Generator().manual_seed(1)
    for _ in range(10):
        other = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        assert torch.all(best_deletion <= deletion(model, x, other, target=1).auc + 1e-15)
        assert torch.all(best_insertion >= insertion(model, x, other, target=1).auc - 1e-15)


def test_curves_on_a_zoo_model_do_not_depend_on_batching(cnn64):
    model, x, _, attributions = cnn64
    whole = deletion(model, x, attributions, steps=16)
    chunked = deletion(model, x, attributions, steps=16, batch_size=5)
    torch.testing.assert_close(whole.probabilities, chunked.probabilities, rtol=1e-12, atol=1e-15)
    with torch.no_grad():
        predicted = torch.softmax(model(x), dim=1).max(dim=1).values
    torch.testing.assert_close(whole.probabilities[:, 0], predicted, rtol=1e-12, atol=1e-15)  # k = 0: the input itself
    assert whole.probabilities.shape == (8, 17) and torch.all((whole.auc >= 0) & (whole.auc <= 1))


def test_infidelity_of_a_linear_model(linear_case):
    """f(x) - f(x - I) = w.I exactly for a linear logit, so the gradient w has infidelity 0 under every
    perturbation; 2w has E[(w.I)^2] > 0, and 0 again once normalised (beta = 1/2)."""
    model, w, x = linear_case
    gradient = w.expand_as(x)
    for perturbation in ("noisy-baseline", "gaussian"):
        assert torch.all(infidelity(model, x, gradient, 1, perturbation, n_samples=20) < 1e-24)
        doubled = infidelity(model, x, 2 * gradient, 1, perturbation, n_samples=20)
        assert torch.all(doubled > 1e-3)
        assert torch.all(infidelity(model, x, 2 * gradient, 1, perturbation, n_samples=20, normalize=True) < 1e-24)


@pytest.fixture(scope="module")
def cnn64():
    model, data = zoo.load("digits-softplus-cnn")
    model = copy.deepcopy(model).double()
    x = data.x_test[:8].double()
    target = model(x).argmax(dim=1)
    return model, x, target, Gradient(model).attribute(x, target)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("name", ["noisy-baseline", "square", "gaussian"])
def test_infidelity_equals_captum_on_the_same_perturbations(cnn64, name, normalize):
    model, x, target, attributions = cnn64
    make = {
        "noisy-baseline": lambda g: noisy_baseline(0.2, 0.0, (0.0, 1.0), g),
        "square": lambda g: square_removal(4, 0.0, g),
        "gaussian": lambda g: gaussian(0.2, g),
    }[name]
    ours = infidelity(model, x, attributions, target, name, n_samples=12, normalize=normalize, domain=(0.0, 1.0), seed=5)
    theirs = captum_infidelity(
        model, make(torch.Generator().manual_seed(5)), x, attributions, target=target, n_perturb_samples=12, normalize=normalize
    )
    assert torch.all(ours > 0)
    torch.testing.assert_close(ours, theirs.double(), rtol=1e-10, atol=1e-14)


def test_the_paper_perturbations(cnn64):
    _, x, _, _ = cnn64
    rows = x.repeat_interleave(50, dim=0)
    size, perturbed = noisy_baseline(0.2, 0.0, (0.0, 1.0), torch.Generator().manual_seed(0))(rows)
    torch.testing.assert_close(size, rows - perturbed)
    assert torch.all((perturbed >= 0) & (perturbed <= 1)) and 0.05 < perturbed.mean() < 0.15  # |N(0, 0.2)| clipped at 0
    size, perturbed = square_removal(3, 0.0, torch.Generator().manual_seed(0))(rows)
    changed = perturbed != rows
    assert torch.all(perturbed[changed] == 0)
    removed = (size != 0).flatten(1).sum(dim=1)
    assert torch.all(removed <= 9) and removed.max() >= 4  # sides 1..3, on nonzero pixels only


def test_bad_input_is_refused(linear_case):
    model, w, x = linear_case
    with pytest.raises(InvalidInputError, match="same shape"):
        deletion(model, x, w)
    with pytest.raises(UsageError, match="steps"):
        insertion(model, x, x, steps=9)
    with pytest.raises(TargetError, match="range"):
        deletion(model, x, x, target=2)
    with pytest.raises(UsageError, match="perturbation"):
        infidelity(model, x, x, perturbation="salt")
    with pytest.raises(InvalidInputError, match="images"):
        infidelity(model, x, x, perturbation="square")
    with pytest.raises(UsageError, match="sigma"):
        infidelity(model, x, x, sigma=0.0)
