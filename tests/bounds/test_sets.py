import math

import pytest
import torch

from certify.bounds.sets import InputSet, project_ball, project_simplex, sample_ball
from certify.errors import InvalidInputError, UsageError
from certify.vocabulary import NORMS, parse_norm


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
    with pytest.raises(UsageError, match="norm"):
        parse_norm(3)
    with pytest.raises(UsageError, match="norm"):
        InputSet.build(x, 0.1, 3)
    with pytest.raises(UsageError, match="eps"):
        InputSet.build(x, -1.0, 2)
    with pytest.raises(UsageError, match="eps"):
        InputSet.build(x, torch.ones(3), 2)
    with pytest.raises(InvalidInputError, match="domain"):
        InputSet.build(x - 1, 0.1, 2, (torch.zeros(3), torch.ones(3)))


@pytest.mark.parametrize("p", NORMS)
def test_sample_ball_stays_inside_and_spreads(p):
    centers = torch.tensor([[0.0, 1.0, -2.0], [3.0, 0.5, 0.0]], dtype=torch.float64)
    points = sample_ball(centers, 0.7, p, 500, torch.Generator().manual_seed(1))
    assert points.shape == (1000, 3)
    delta = points - centers.repeat_interleave(500, dim=0)
    norms = torch.linalg.vector_norm(delta, ord=p, dim=1)
    assert float(norms.max()) <= 0.7 * (1 + 1e-12)
    assert float(norms.max()) > 0.5 and float(norms.min()) < 0.7  # fills the ball, not only the surface


@pytest.mark.parametrize("p", NORMS)
def test_project_ball_is_the_nearest_point_of_the_ball(p):
    gen = torch.Generator().manual_seed(2)
    centers = torch.randn(64, 5, generator=gen, dtype=torch.float64)
    points = centers + 2 * torch.randn(64, 5, generator=gen, dtype=torch.float64)
    radius = torch.rand(64, generator=gen, dtype=torch.float64) + 0.1
    proj = project_ball(points, centers, radius, p)
    norms = torch.linalg.vector_norm(proj - centers, ord=p, dim=1)
    assert bool((norms <= radius * (1 + 1e-12)).all())
    assert torch.equal(project_ball(proj, centers, radius * (1 + 1e-9), p), proj)  # inside points stay
    # optimality: no sampled point of the ball is closer (in l2) to the original point
    others = sample_ball(centers, 1.0, p, 200, gen).reshape(64, 200, 5)
    others = centers[:, None] + (others - centers[:, None]) * radius[:, None, None]
    best = torch.linalg.vector_norm(points - proj, dim=1)
    dists = torch.linalg.vector_norm(points[:, None] - others, dim=2)
    assert bool((best[:, None] <= dists + 1e-12).all())


def test_project_simplex():
    v = torch.tensor([[0.5, 0.2, -0.1], [3.0, 0.0, 0.0]], dtype=torch.float64)
    w = project_simplex(v, 1.0)
    assert torch.allclose(w.sum(1), torch.ones(2, dtype=torch.float64)) and bool((w >= 0).all())
    assert torch.allclose(w[1], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
