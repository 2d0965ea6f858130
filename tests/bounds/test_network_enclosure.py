import torch

from certify.bounds.activations import Activation


def test_softplus_enclosure_contains_torch_and_the_exact_value():
    z = torch.linspace(-60, 60, 20001, dtype=torch.float64)
    for beta in (1.0, 2.0, 10.0):
        act = Activation("softplus", beta)
        lo, hi = act.enclosure(z)
        torch_value = torch.nn.functional.softplus(z, beta=beta)
        exact = torch.logaddexp(torch.zeros_like(z), beta * z) / beta
        assert (lo <= torch_value).all() and (torch_value <= hi).all()
        assert (lo <= exact).all() and (exact <= hi).all()
        assert (hi - lo).max() < 1e-8


def test_relu_enclosure_is_exact():
    z = torch.randn(100, dtype=torch.float64)
    lo, hi = Activation("relu").enclosure(z)
    assert torch.equal(lo, torch.relu(z)) and torch.equal(hi, torch.relu(z))
