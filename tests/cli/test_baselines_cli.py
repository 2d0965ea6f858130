"""The baselines from the command line (issue 16; a fresh user's review): occlusion without a window, Sobol
indices on a tabular model with an unbounded domain (the training rows as the distribution), a top-k of 0 shown
as vacuous, and labels required by the accuracy under attack."""
import json

import pytest

from certify.cli import main
from certify.errors import EXIT_OK, EXIT_USAGE, UsageError


@pytest.mark.parametrize("model, method, extra", [
    ("digits-softplus-mlp", "occlusion", []),
    ("breast-cancer-softplus-mlp", "sobol", []),
    ("breast-cancer-softplus-mlp", "sobol", ["--param", "sample=test"]),
])
def test_a_baseline_runs_with_its_defaults_and_its_certificate_verifies(tmp_path, capsys, model, method, extra):
    out = tmp_path / "c.json"
    assert main(["explain", "--model", model, "--method", method, *extra, "--out", str(out)]) == EXIT_OK
    assert main(["verify", str(out)]) == EXIT_OK
    assert "not bound" in capsys.readouterr().out


def test_a_sample_that_names_no_split_is_a_usage_error(tmp_path, capsys):
    assert main(["explain", "--model", "breast-cancer-softplus-mlp", "--method", "sobol", "--param", "sample=all",
                 "--out", str(tmp_path / "c.json")]) == EXIT_USAGE
    assert "sample=train or sample=test" in capsys.readouterr().err


def test_a_certified_top_k_of_zero_is_labelled_vacuous(tmp_path, capsys):
    out = tmp_path / "c.json"
    assert main(["explain", "--model", "digits-softplus-mlp", "--method", "sparsified-smoothgrad", "--eps", "0.5",
                 "--topk", "3", "--out", str(out), "--json"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    claim = next(c for c in doc["claims"] if c["id"] == "topk-smoothed")
    assert claim["value"] == 0 and claim["vacuous"]


def test_accuracy_under_attack_requires_labels():
    from certify.attacks.accuracy import accuracy_under_attack
    from certify.models import zoo

    model, data = zoo.load("digits-softplus-mlp")
    with pytest.raises(UsageError, match="labels are required"):
        accuracy_under_attack(model, data.x_test[:2], None, 0.1)
