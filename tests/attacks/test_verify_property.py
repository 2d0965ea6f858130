"""Deciding a VNN-LIB property (certify.attacks.property): "holds" only with a certified margin, "violated"
only with a counterexample inside the file's box that violates the formula in the model's dtype and in
float64, "unknown" otherwise; the representable box and the counterexample check; and the real mnistfc net."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mnistfc_data as M  # noqa: E402
from property_grid import classification  # noqa: E402

from certify.attacks.property import (  # noqa: E402
    check_counterexample, pgd_counterexample, representable_box, verify_property,
)
from certify.bounds.network import from_module  # noqa: E402
from certify.bounds.property import property_bounds  # noqa: E402
from certify.errors import UnsupportedError  # noqa: E402
from certify.models.vnnlib import Property, violates  # noqa: E402


def _net(dtype=torch.float32):
    """y = (relu(x0) - relu(-x0), 0.2, -5 + x1): class 0 wins where x0 > 0.2, class 1 where x0 < 0.2."""
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 3))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        model[0].bias.zero_()
        model[2].weight.copy_(torch.tensor([[1.0, -1.0], [0.0, 0.0], [0.0, 0.0]]))
        model[2].bias.copy_(torch.tensor([0.0, 0.2, -5.0]))
    return model.to(dtype).eval()


def test_an_easy_box_holds_with_a_certified_margin_and_no_counterexample():
    prop = classification([1.0, 0.0], 0.1, 0)  # y0 - y1 >= 0.9 - 0.2 on the box, y0 - y2 >= 5.9
    result = verify_property(_net(), prop, timeout=5.0)
    assert result.status == "holds" and result.method == "crown"
    assert result.margin == pytest.approx(0.7, abs=1e-6)
    assert result.counterexample is None and result.outputs == {}
    assert json.loads(json.dumps(result.to_json()))["status"] == "holds"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_violated_box_gives_a_counterexample_inside_it_violating_in_both_dtypes(dtype):
    model = _net(dtype)
    prop = classification([0.3, 0.0], 0.2, 0)  # x0 in [0.1, 0.5]: class 1 wins for x0 <= 0.2
    result = verify_property(model, prop, timeout=5.0)
    assert result.status == "violated" and result.method == "pgd"
    x = result.counterexample
    assert x.dtype == np.float64 and x.shape == (2,)
    assert (x >= prop.lower).all() and (x <= prop.upper).all()
    assert violates(prop, np.array(result.outputs["model dtype"])) and violates(prop, np.array(result.outputs["float64"]))
    with torch.no_grad():
        y = model(torch.as_tensor(x, dtype=dtype)[None])[0].double().numpy()
        y64 = _net(torch.float64)(torch.as_tensor(x)[None])[0].numpy()
    assert violates(prop, y) and violates(prop, y64)
    assert np.allclose(y, result.outputs["model dtype"]) and np.allclose(y64, result.outputs["float64"])
    assert torch.as_tensor(x, dtype=dtype).double().numpy().tolist() == x.tolist(), "not a value of the model's dtype"


def test_without_bound_methods_a_true_property_is_unknown():
    result = verify_property(_net(), classification([1.0, 0.0], 0.1, 0), timeout=1.0, methods=())
    assert result.status == "unknown" and result.margin is None and result.counterexample is None
    assert any(note.startswith("PGD: no counterexample") for note in result.notes)


def test_representable_box_lies_inside_the_file_box():
    prop = Property(np.array([0.1, -0.3]), np.array([0.7, 1 / 3]), 3, [])
    lo, hi = representable_box(prop, torch.float32)
    assert lo.dtype == hi.dtype == torch.float32
    assert (lo.double().numpy() >= prop.lower).all() and (hi.double().numpy() <= prop.upper).all()
    assert np.allclose(lo.double().numpy(), prop.lower, atol=1e-7) and np.allclose(hi.double().numpy(), prop.upper, atol=1e-7)
    lo64, hi64 = representable_box(prop, torch.float64)
    assert lo64.numpy().tolist() == prop.lower.tolist() and hi64.numpy().tolist() == prop.upper.tolist()


def test_representable_box_refuses_a_box_thinner_than_the_dtype_spacing():
    lower = np.array([0.1])  # float32 has no value in [0.1, 0.1 + 1e-12]
    prop = Property(lower, lower + 1e-12, 1, [])
    with pytest.raises(UnsupportedError, match="no value representable"):
        representable_box(prop, torch.float32)


def test_check_counterexample_rejects_a_point_outside_the_box_and_a_non_violating_point():
    model = _net()
    prop = classification([0.3, 0.0], 0.2, 0)
    ok, info = check_counterexample(model, prop, torch.tensor([0.15, 0.0]), (2,))
    assert ok and info["inside"]
    ok, info = check_counterexample(model, prop, torch.tensor([0.05, 0.0]), (2,))  # violates, but x0 < 0.1
    assert not ok and not info["inside"]
    ok, info = check_counterexample(model, prop, torch.tensor([0.4, 0.0]), (2,))  # inside, class 0 wins
    assert not ok and info["inside"]


def test_mnistfc_crown_proves_and_pgd_refutes_and_never_both():
    model = M.model("mnist-net_256x2.onnx")
    net = from_module(model, model.certify_input_shape)
    holds = M.prop("prop_2_0.03.vnnlib")
    bound = property_bounds(net, holds, "crown")
    assert bound.holds and bound.margin > 0.5
    point, _ = pgd_counterexample(model, holds, (784, 1), seconds=1.0)
    assert point is None
    violated = M.prop("prop_7_0.03.vnnlib")
    point, info = pgd_counterexample(model, violated, (784, 1), seconds=5.0)
    assert point is not None and point.dtype == torch.float32
    ok, evaluation = check_counterexample(model, violated, point, (784, 1))
    assert ok and evaluation["inside"]
    assert not property_bounds(net, violated, "crown").holds
    result = verify_property(model, violated, timeout=10.0, net=net)
    assert result.status == "violated" and result.counterexample is not None
    assert (result.counterexample >= violated.lower).all() and (result.counterexample <= violated.upper).all()


def test_mnistfc_branch_and_bound_answers_with_a_witness_or_a_checked_counterexample():
    """256x2 prop_9_0.03 needs splitting and holds: the answer carries the witness; 256x2 prop_0_0.05 has a
    counterexample that a short PGD misses and branch and bound's search proposes: it is re-evaluated like a
    PGD point (inside the file's box, violating in the model's dtype and in float64)."""
    model = M.model("mnist-net_256x2.onnx")
    net = from_module(model, model.certify_input_shape)
    holds = M.prop("prop_9_0.03.vnnlib")
    result = verify_property(model, holds, timeout=60.0, net=net)
    assert result.status == "holds" and result.method == "bab" and result.margin > 0
    assert result.witness["format"] == "certify.relu-split-witness/1"  # two hidden layers: the root's boxes (REFINE_FROM)
    assert len(result.witness["conjunctions"]) == len(holds.disjuncts)
    violated = M.prop("prop_0_0.05.vnnlib")
    result = verify_property(model, violated, timeout=60.0, net=net, attack_seconds=0.2)
    assert result.status == "violated" and result.method == "bab" and result.witness is None
    x = result.counterexample
    assert (x >= violated.lower).all() and (x <= violated.upper).all()
    assert violates(violated, np.array(result.outputs["model dtype"])) and violates(violated, np.array(result.outputs["float64"]))


def test_an_unfinished_branch_and_bound_says_how_far_it_got_and_that_its_bound_is_not_certified():
    """256x4 prop_1_0.03 holds but is not proven in 10 s: the answer is unknown, its margin is the root's certified
    bound (<= 0), and a note gives the search's subdomains and its least float32 bound, marked not certified."""
    model = M.model("mnist-net_256x4.onnx")
    result = verify_property(model, M.prop("prop_1_0.03.vnnlib"), timeout=10.0, attack_seconds=0.2)
    assert result.status == "unknown" and result.method == "bab" and result.margin <= 0
    note = [n for n in result.notes if n.startswith("branch and bound:")]
    assert len(note) == 1 and "not certified" in note[0]
    words = note[0].split()
    assert int(words[3]) > 0 and int(words[9]) > 0  # subdomains bounded, subdomains left open


def test_a_softmax_head_gets_no_bound_on_its_outputs() -> None:
    """The property constrains the model's probabilities; N is the logits before the dropped softmax, so a
    bound on N says nothing about them (the attacker's softmax_head got 'holds' for a reachable region).
    Here the region Y_0 >= 2 is unreachable for both, so only the refusal tells the fixed code apart."""
    import numpy as np
    from torch import nn

    from certify.models.vnnlib import Property

    model = nn.Sequential(nn.Linear(2, 2), nn.Softmax(dim=1)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0]]))
        model[0].bias.zero_()
    prop = Property(np.array([-0.5, -0.5]), np.array([0.5, 0.5]), 2, [(np.array([[-1.0, 0.0]]), np.array([-2.0]))])
    result = verify_property(model, prop, timeout=5.0, attack_seconds=0.0)
    assert result.status == "unknown"
    assert any("softmax" in note for note in result.notes)


def test_a_network_without_hidden_layer_is_bounded_exactly() -> None:
    import numpy as np
    from torch import nn

    from certify.models.vnnlib import Property

    model = nn.Sequential(nn.Linear(2, 2)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))
        model[0].bias.copy_(torch.tensor([0.0, 5.0]))
    # unsafe: Y_1 <= Y_0, i.e. y_0 - y_1 >= 0; y_0 - y_1 = x_0 - x_1 - 5 <= -4 on the box: holds
    prop = Property(np.array([-0.5, -0.5]), np.array([0.5, 0.5]), 2, [(np.array([[-1.0, 1.0]]), np.array([0.0]))])
    result = verify_property(model, prop, timeout=5.0, attack_seconds=0.0)
    assert result.status == "holds"
