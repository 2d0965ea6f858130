import math

import pytest
import torch

from certify.bounds.sets import InputSet, norm_order
from certify.errors import InvalidInputError, UnsupportedError, UsageError


def _samples(input_set: InputSet, count: int) -> torch.Tensor:
    """Random points of the set (on the ball's surface and inside, then clipped into the domain)."""
    n, size = input_set.center.shape
    d = torch.randn(count, n, size, dtype=torch.float64)
    if input_set.p == math.inf:
        d = d.sign() * torch.rand_like(d).pow(0.2)
    else:
        d = d / torch.linalg.vector_norm(d, ord=input_set.p, dim=-1, keepdim=True)
    d = d * input_set.eps[None, :, None] * torch.rand(count, n, 1, dtype=torch.float64).pow(0.1)
    points = input_set.center + d
    return points.clamp(input_set.lo, input_set.hi) if input_set.lo is not None else points


@pytest.mark.parametrize("p", [1, 2, math.inf])
@pytest.mark.parametrize("with_domain", [False, True])
def test_lower_support_is_below_every_point_and_tight_without_domain(p, with_domain):
    torch.manual_seed(0)
    x = torch.rand(3, 5, dtype=torch.float64)
    domain = (torch.zeros(5), torch.ones(5)) if with_domain else None
    s = InputSet.build(x, torch.tensor([0.1, 0.3, 0.0]), p, domain)
    a = torch.randn(3, 4, 5, dtype=torch.float64)
    low = s.lower_support(a)
    points = _samples(s, 4000)
    assert all(s.contains(points[k], atol=1e-12).all() for k in range(0, 4000, 97))
    values = torch.einsum("kni,nmi->knm", points, a)
    assert (values.min(0).values >= low).all()
    if p == 2 and not with_domain:
        # the L2 ball's support is attained at x0 - eps a / ||a||
        best = s.center[:, None, :] - s.eps[:, None, None] * a / a.norm(dim=-1, keepdim=True)
        assert torch.allclose((best * a).sum(-1), low, atol=1e-12)


def test_box_of_linf_set_is_the_set_clipped_to_the_domain():
    x = torch.tensor([[0.05, 0.5]], dtype=torch.float64)
    lo, hi = InputSet.build(x, 0.1, "inf", (torch.zeros(2), torch.ones(2))).box()
    assert torch.allclose(lo, torch.tensor([[0.0, 0.4]], dtype=torch.float64))
    assert torch.allclose(hi, torch.tensor([[0.15, 0.6]], dtype=torch.float64))


def test_bad_parameters_are_refused_with_errors_naming_them():
    x = torch.zeros(2, 3)
    with pytest.raises(UnsupportedError, match="norm"):
        norm_order(3)
    with pytest.raises(UsageError, match="eps"):
        InputSet.build(x, -1.0, 2)
    with pytest.raises(UsageError, match="eps"):
        InputSet.build(x, torch.ones(3), 2)
    with pytest.raises(InvalidInputError, match="domain"):
        InputSet.build(x - 1, 0.1, 2, (torch.zeros(3), torch.ones(3)))
