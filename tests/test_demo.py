"""certify.demo: one quick run of `run_demo` (module-scoped, it takes tens of seconds) and its report
parameters column (`_params_text`)."""
import json

import pytest
import torch

from certify.certificates.checker import verify_file
from certify.demo import DemoConfig, _params_text, run_demo
from certify.explain.registry import PRESETS


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    config = DemoConfig.quick()
    return out, config, run_demo(out, config)


def test_summary_json_has_every_section_and_matches_the_returned_summary(demo):
    out, config, summary = demo
    written = json.loads((out / "summary.json").read_text())
    assert set(written) == {"model", "description", "method_rows", "certificate_note", "claim_rows",
                            "certificates", "robustness_verdict", "skipped_methods", "prox", "theorems", "environment"}
    assert written["skipped_methods"] == []  # the test environment has the baselines extra
    assert summary["files"] == {"markdown": str(out / "index.md"), "html": str(out / "index.html")}
    assert {k: v for k, v in summary.items() if k != "files"} == written
    assert written["model"] == config.model
    assert [row[0] for row in written["method_rows"]] == [label for label, _ in config.methods] == list(PRESETS)
    assert all(len(row) == 6 for row in written["method_rows"])
    assert all(len(row) == 5 for row in written["claim_rows"])
    assert set(written["certificates"]) == set(PRESETS)
    assert written["theorems"], "the quick theorem suite ran no check"


def test_every_certificate_written_verifies_with_the_independent_checker(demo):
    out, config, summary = demo
    files = sorted((out / "certificates").glob("*.json"))
    importance = json.loads((out / "importance.json").read_text())
    others = (2 + 1 + importance["xrt"]["images"]  # the two prox certificates, h-Shap's, one SHAP-XRT per image
              + len(importance["sufficient"]["rows"]) * importance["sufficient"]["images"])  # sufficient subsets
    assert len(files) == config.examples * len(config.methods) + others
    for path in files:
        report = verify_file(path)
        assert report.valid, (path.name, report)
    for label in PRESETS:
        assert summary["certificates"][label].startswith(f"{config.examples}/{config.examples} verified")


def test_report_files_exist_and_name_the_domain_briefly(demo):
    out, _, summary = demo
    for name in ("index.html", "index.md", "heatmaps.png", "evaluation.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    page = (out / "index.html").read_text()
    assert "data:image/png;base64," in page
    params = [json.loads(row[1]) for row in summary["method_rows"]]
    lagrange = [p for row, p in zip(summary["method_rows"], params) if row[0] == "lagrange-dual"]
    assert lagrange and lagrange[0]["domain"] == "[0, 1] per feature"
    assert all(len(row[1]) < 400 for row in summary["method_rows"]), "a parameter column lists the domain's values"


def test_params_text_names_a_uniform_box_by_its_bounds():
    text = _params_text({"rho": 0.5, "domain": {"lower": torch.zeros(64), "upper": torch.ones(64)}})
    assert json.loads(text) == {"rho": 0.5, "domain": "[0, 1] per feature"}


def test_params_text_per_feature_and_half_unbounded_boxes():
    lower = torch.zeros(4)
    upper = torch.tensor([1.0, 2.0, 1.0, 1.0])
    assert json.loads(_params_text({"domain": {"lower": lower, "upper": upper}}))["domain"] == "per-feature box"
    assert json.loads(_params_text({"domain": {"lower": [-1.5] * 3, "upper": None}}))["domain"] == "[-1.5, inf] per feature"
    assert json.loads(_params_text({"domain": {"lower": None, "upper": 2.0}}))["domain"] == "[-inf, 2] per feature"


def test_params_text_leaves_other_parameters_and_a_non_dict_domain_alone():
    params = {"domain": None, "k": 3, "name": "x"}
    assert json.loads(_params_text(params)) == params
    original = {"domain": {"lower": [0.0], "upper": [1.0]}}
    _params_text(original)
    assert original == {"domain": {"lower": [0.0], "upper": [1.0]}}, "_params_text must not mutate its input"


def test_the_inverse_problems_step(demo):
    """Issue 14's demo step: the LPN is certified a prox and the MLP denoiser certified not one, both re-checked;
    the regulariser's certified interval holds its estimate and |x| is compared; the PnP table has an LPN and a
    wavelet row per task; the report shows the section with both figures."""
    out, _, summary = demo
    assert summary["prox"] == {"lpn-digits-0.1": "prox", "mlp-digits-0.1": "not-a-prox"}
    inverse = json.loads((out / "inverse.json").read_text())
    assert all(e["verified"] for e in inverse["prox"])
    reg = inverse["regulariser"]
    assert all(lo <= v <= hi for lo, v, hi in zip(reg["lower"], reg["value"], reg["upper"]))
    assert reg["max_error"] == pytest.approx(max(abs(v - abs(x)) for x, v in zip(reg["x"], reg["value"])))
    rows = inverse["pnp"]["rows"]
    assert {(r[0], r[1]) for r in rows} >= {("digits", t) for t in ("denoising", "deblurring", "inpainting")}
    assert {r[3].split()[0] for r in rows} == {"LPN", "wavelet"}
    page = (out / "index.html").read_text()
    assert "Inverse problems: learned proximal networks" in page and (out / "pnp.png").is_file()
    assert (out / "regulariser.png").is_file()


def test_the_importance_step(demo):
    """Issue 15's demo step: h-Shap finds the tiles holding a 0, SHAP-XRT rejects for them and its certificates
    verify, SKIT rejects the concepts and not the nulls, every sufficient subset's certificate verifies; the
    report shows the section and its figure."""
    out, _, summary = demo
    data = json.loads((out / "importance.json").read_text())
    assert data["hshap"]["recall"] >= 0.9 and data["hshap"]["precision"] >= 0.8 and data["hshap"]["certificate"]["verified"]
    t = data["xrt"]
    assert t["certificates"]["verified"] == t["certificates"]["written"] == t["images"]
    assert t["rate_target"] >= 0.9 and t["rate_other"] <= 0.25
    rows = {(r[0], r[1]): r for r in data["skit"]["rows"]}
    assert rows[("synthetic", "Z2")][3] <= 0.2 and rows[("synthetic", "Z1")][3] == 1.0
    assert rows[("digits-softplus-mlp, P(class 0)", "permuted control (loop)")][3] <= 0.2
    f = data["sufficient"]
    assert [r[0] for r in f["rows"]] == ["gradient", "moreaugrad", "random"]
    assert all(r[2] == f"{f['images']}/{f['images']}" for r in f["rows"])
    page = (out / "index.html").read_text()
    assert "Which parts of the input matter" in page and (out / "importance.png").is_file()
