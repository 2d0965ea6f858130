"""The command line: version, usage errors, check and demo outputs and their exit codes."""
import json

import pytest

from certify import __version__
from certify.cli import main
from certify.errors import EXIT_USAGE


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and __version__ in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["check", "--bogus"]])
def test_usage_errors_exit_64(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == EXIT_USAGE


def test_check_unknown_theorem_is_a_usage_error(tmp_path, capsys):
    assert main(["check", "--only", "NOPE", "--out", str(tmp_path)]) == EXIT_USAGE
    assert "unknown theorem id" in capsys.readouterr().err
    assert not (tmp_path / "THEOREMS.md").exists()


def test_check_writes_the_table(tmp_path, capsys):
    assert main(["check", "--quick", "--only", "MG-T2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| MG-T2 |" in out and "holds" in out
    table = json.loads((tmp_path / "THEOREMS.json").read_text())
    assert table["results"][0]["id"] == "MG-T2" and table["results"][0]["violations"] == 0
    assert "MG-T2" in (tmp_path / "THEOREMS.md").read_text()


def test_demo_writes_outputs_and_keeps_existing_files(tmp_path, monkeypatch, capsys):
    import certify.demo as demo

    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    small = demo.DemoConfig(
        examples=2,
        methods=(("gradient", {}), ("smoothgrad", {"samples": 4})),
        study=demo.StudyConfig(n=2, eps=(0.5,), steps=2, restarts=1),
        inverse=False,  # the inverse-problems and importance steps have their own tests (tests/test_demo.py)
        importance=False,
    )
    monkeypatch.setattr(demo.DemoConfig, "quick", classmethod(lambda cls: small))
    monkeypatch.setattr("proofs_checks.runner.ordered_ids", lambda registry: ["MG-T2"])
    assert main(["demo", "--quick", "--out", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert list(summary["certificates"]) == ["gradient", "smoothgrad"] and summary["theorems"] == {"MG-T2": "holds"}
    assert summary["certificates"]["gradient"] == "2/2 verified"
    html = (tmp_path / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and keep.read_text() == "mine"  # heatmaps, 2 study plots, 2 panels
    assert "Robustness: certified vs empirical" in html and "The paper&#x27;s claim" in html
    assert main(["report", str(tmp_path)]) == 0  # the report rebuilds from the artefacts


def test_report_rebuilds_from_artefacts_or_refuses(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == EXIT_USAGE
    assert "no summary.json" in capsys.readouterr().err


def test_default_moreaugrad_explain_chooses_rho_and_certifies_solver_error_stability_and_topk(tmp_path, capsys):
    """Issue 13: `certify explain --method moreaugrad` with default settings on the default model picks rho itself
    (never a refused default) and issues certified solver-error, stability and top-k claims."""
    out = tmp_path / "mg.json"
    assert main(["explain", "--model", "digits-softplus-mlp", "--method", "moreaugrad", "--index", "0",
                 "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    claims = {c["id"]: c for c in doc["claims"]}
    for cid in ("solver-error", "stability", "topk"):
        assert claims[cid]["kind"] == "certified", (cid, claims[cid].get("reason"))
    assert claims["topk"]["value"] > 0 and claims["stability"]["value"] < 1.0
    assert doc["provenance"]["explainer"]["params"]["rho"] == "auto"
    assert main(["verify", str(out), "--model", "digits-softplus-mlp"]) == 0


def test_auto_rho_on_a_relu_model_says_no_rho_is_admissible(tmp_path, capsys):
    """The fallback rho of a model without certified curvature is not announced as a minimiser."""
    assert main(["explain", "--model", "digits-relu-mlp", "--method", "moreaugrad", "--index", "0",
                 "--out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "no rho is admissible" in out and "chosen to minimise" not in out


def test_h_shap_explain_writes_a_certificate_that_verifies_and_binds_nothing(tmp_path, capsys):
    """Issue 15: `certify explain --method h-shap` on the composite task; its certificate states nothing about the
    explanation (stability refused), and `certify verify` says the map is not bound; a stability claim added to it
    is refused by the checker."""
    out = tmp_path / "hs.json"
    assert main(["explain", "--model", "composite-relu-cnn", "--method", "h-shap", "--param", "reference=digits-composite",
                 "--param", "min_size=4", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["verify", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] and report["explanation"].startswith("not bound: the h-Shap leaf scores")
    doc = json.loads(out.read_text())
    stability = next(c for c in doc["claims"] if c["id"] == "stability")
    assert stability["kind"] == "refused"
    stability.update(kind="certified", value=1.0, reason=None)
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(doc))
    assert main(["verify", str(forged)]) != 0


def test_evaluate_prints_every_table_and_writes_the_study(tmp_path, capsys):
    """`certify evaluate` with a random-search baseline, the metrics and the sweep: the text tables carry n and
    CIs, Sparsified SmoothGrad's certified top-k sits next to MoreauGrad's, and evaluation.json holds it all."""
    argv = ["evaluate", "--model", "zoo:digits-softplus-mlp", "--n", "2", "--eps", "0.5", "--steps", "2", "--restarts", "1",
            "--search-draws", "1", "--methods", "moreaugrad", "sparsified-smoothgrad", "--metrics", "--sweep", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "n = 2 test inputs" in out and "certified bound on ||da||_2" in out and "deletion AUC" in out
    assert "sparsified-smoothgrad (probabilistic" in out and "rule of thumb" in out and "NOT RUN" in out
    result = json.loads((tmp_path / "evaluation.json").read_text())
    assert set(result["methods"]) == {"moreaugrad", "sparsified-smoothgrad"} and result["sweep"]["n"] == 2
    assert main(["evaluate", "--model", "zoo:digits-softplus-mlp", "--methods", "nope", "--out", str(tmp_path)]) == EXIT_USAGE
