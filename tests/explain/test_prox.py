"""Soft thresholds, group soft thresholds and minimal-norm subgradients (certify.explain.prox)."""
import cvxpy as cp
import numpy as np
import pytest
import torch

from certify.errors import UsageError
from certify.explain.prox import Penalty, check_groups, group_norms, group_soft_threshold, soft_threshold


def test_soft_threshold_closed_form():
    v = torch.tensor([[-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.5]], dtype=torch.float64)
    expected = torch.tensor([[-2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5]], dtype=torch.float64)
    assert torch.equal(soft_threshold(v, 1.0), expected)


def test_soft_threshold_per_example_thresholds():
    v = torch.tensor([[2.0, -2.0], [2.0, -2.0]], dtype=torch.float64)
    out = soft_threshold(v, torch.tensor([0.5, 3.0], dtype=torch.float64))
    assert torch.equal(out, torch.tensor([[1.5, -1.5], [0.0, 0.0]], dtype=torch.float64))


def _gst_reference_image(v: torch.Tensor, a: float, g: int) -> torch.Tensor:
    out = torch.zeros_like(v)
    for n in range(v.shape[0]):
        for i in range(0, v.shape[2], g):
            for j in range(0, v.shape[3], g):
                block = v[n, :, i : i + g, j : j + g]
                norm = block.norm()
                out[n, :, i : i + g, j : j + g] = 0 if norm <= a else (1 - a / norm) * block
    return out


def test_group_soft_threshold_images_use_patches_across_channels():
    v = torch.randn(3, 2, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for a in (0.1, 1.0, 2.5):
        assert torch.allclose(group_soft_threshold(v, a, 2), _gst_reference_image(v, a, 2), atol=1e-12)


def test_group_soft_threshold_flat_inputs_use_contiguous_blocks():
    v = torch.tensor([[3.0, 4.0, 0.1, 0.1, -6.0, 8.0]], dtype=torch.float64)
    out = group_soft_threshold(v, 1.0, 2)
    expected = torch.tensor([[3.0 * 0.8, 4.0 * 0.8, 0.0, 0.0, -6.0 * 0.9, 8.0 * 0.9]], dtype=torch.float64)
    assert torch.allclose(out, expected, atol=1e-15)
    assert torch.allclose(group_norms(v, 2).flatten(), torch.tensor([5.0, 0.02**0.5, 10.0], dtype=torch.float64))


def test_groups_of_size_one_reduce_to_soft_threshold():
    v = torch.randn(4, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(group_soft_threshold(v, 0.3, 1), soft_threshold(v, 0.3), atol=1e-15)


@pytest.mark.parametrize("shape, size", [((2, 7), 2), ((1, 1, 8, 8), 3), ((1, 3, 6, 4), 4)])
def test_groups_not_dividing_the_input_are_refused(shape, size):
    with pytest.raises(UsageError, match="does not divide"):
        check_groups(shape, size)
    with pytest.raises(UsageError):
        group_soft_threshold(torch.zeros(shape), 0.1, size)


@pytest.mark.parametrize("size", [0, -2, 1.5, True])
def test_bad_group_size_is_refused(size):
    with pytest.raises(UsageError, match="positive integer"):
        check_groups((2, 8), size)


def _min_norm_reference(g: np.ndarray, u: np.ndarray, eta: float, kind: str, group: int) -> float:
    """min ||g + eta xi|| over xi in dP(u), solved by CVXPY."""
    xi = cp.Variable(g.size)
    constraints = []
    if kind == "l1":
        for i in range(g.size):
            constraints.append(xi[i] == np.sign(u[i])) if u[i] != 0 else constraints.append(cp.abs(xi[i]) <= 1)
    else:
        for s in range(0, g.size, group):
            block = u[s : s + group]
            norm = np.linalg.norm(block)
            if norm > 0:
                constraints.append(xi[s : s + group] == block / norm)
            else:
                constraints.append(cp.norm(xi[s : s + group]) <= 1)
    problem = cp.Problem(cp.Minimize(cp.norm(g + eta * xi)), constraints)
    problem.solve(solver=cp.CLARABEL)
    assert problem.status == cp.OPTIMAL
    return problem.value


@pytest.mark.parametrize("kind", ["l1", "group"])
def test_minimal_subgradient_is_the_minimal_norm_element(kind):
    gen = torch.Generator().manual_seed(2)
    penalty = Penalty(kind, 2 if kind == "group" else None)
    for _ in range(10):
        g = torch.randn(1, 8, generator=gen, dtype=torch.float64)
        u = torch.randn(1, 8, generator=gen, dtype=torch.float64)
        u[0, :4] = 0.0  # two zero groups, and zero coordinates
        eta = 0.7
        r = penalty.minimal_subgradient(g, u, eta)
        reference = _min_norm_reference(g[0].numpy(), u[0].numpy(), eta, kind, 2)
        assert abs(float(r.norm()) - reference) <= 1e-6


def test_vanilla_residual_is_the_gradient_and_values_are_the_penalties():
    g = torch.randn(2, 6, dtype=torch.float64)
    u = torch.tensor([[3.0, 4.0, 0.0, 0.0, 1.0, 0.0], [0.0] * 6], dtype=torch.float64)
    assert torch.equal(Penalty().minimal_subgradient(g, u, 1.0), g)
    assert torch.allclose(Penalty("l1").value(u), torch.tensor([8.0, 0.0], dtype=torch.float64))
    assert torch.allclose(Penalty("group", 2).value(u), torch.tensor([6.0, 0.0], dtype=torch.float64))
    with pytest.raises(UsageError):
        Penalty("group")


def test_dtype_and_device_follow_the_input():
    v = torch.randn(2, 1, 4, 4, dtype=torch.float32)
    for out in (soft_threshold(v, 0.1), group_soft_threshold(v, 0.1, 2), Penalty("group", 2).minimal_subgradient(v, v, 0.1)):
        assert out.dtype == v.dtype and out.device == v.device and out.shape == v.shape
