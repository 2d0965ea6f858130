"""Regression test (helper G): certified_radius with max_radius = inf crashed with OverflowError in the
bisection's step count (math.ceil(inf)), an internal error (exit 70) instead of a named usage error."""
import math

import pytest
import torch

from certify.bounds.network import from_module
from certify.bounds.radius import certified_radius
from certify.errors import UsageError


def test_infinite_max_radius_is_a_usage_error():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).double().eval()
    net = from_module(model, (3,))
    x = torch.rand(2, 3, dtype=torch.float64)
    with pytest.raises(UsageError, match="max_radius"):
        certified_radius(net, x, net.forward(x).argmax(1), "inf", max_radius=math.inf)
