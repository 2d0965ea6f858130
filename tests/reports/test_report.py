"""The report is one self-contained HTML file: every image is embedded and decodes; Markdown and JSON
carry the same sections."""
import base64
import io
import json
from html.parser import HTMLParser

import matplotlib.image as mpimg
import torch

from certify.reports.heatmaps import heatmap_grid
from certify.reports.report import write_report


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.headings, self._in_h = [], [], False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])
        self._in_h = tag in ("h1", "h2")

    def handle_data(self, data):
        if self._in_h:
            self.headings.append(data)
            self._in_h = False


def _row(eps, dist, topk, bound=None):
    stat = lambda v: {"mean": v, "std": 0.01, "min": v, "max": v, "median": v}  # noqa: E731
    sim = {"normalized_l2_distance": stat(dist), "topk_intersection": stat(topk), "ssim": stat(0.9)}
    return {"eps": eps, "random": sim, "adversarial": sim, "observed_change": stat(0.1),
            "certified_bound": None if bound is None else stat(bound), "certified_topk": None,
            "observed_over_certified": None if bound is None else stat(0.1 / bound)}


def test_report_embeds_decodable_images_and_all_sections(tmp_path):
    heatmap_grid(torch.rand(2, 64), {"gradient": torch.randn(2, 64)}, ["a", "b"], tmp_path / "heatmaps.png")
    (tmp_path / "summary.json").write_text(json.dumps({
        "description": "test model", "method_rows": [["gradient", "{}", "0.1", "2/2 verified", "0.3", "0.0"]],
        "certificate_note": "note", "claim_rows": [["gradient", "lipschitz", "certified", "<= 1", "statement"]],
        "environment": {"torch": torch.__version__},
    }))
    (tmp_path / "evaluation.json").write_text(json.dumps({
        "description": "study", "verdict": "REPRODUCED: numbers",
        "methods": {"gradient": [_row(0.1, 0.1, 0.9, 0.5), _row(0.5, 0.2, 0.8, 2.0)], "smoothgrad": [_row(0.1, 0.1, 0.9), _row(0.5, 0.3, 0.7)]},
    }))
    (tmp_path / "THEOREMS.json").write_text(json.dumps({"results": [
        {"id": "MG-C2", "source": "paper Cor 2", "verdict": "refuted", "cases": 3, "violations": 0, "worst_ratio": 1.0, "counterexample": "slope 5"}]}))
    md, page, js = write_report(tmp_path)
    parser = _Images()
    parser.feed(page.read_text())
    assert len(parser.sources) == 3  # heatmaps, robustness curves, certified vs empirical
    for src in parser.sources:
        assert src.startswith("data:image/png;base64,")
        image = mpimg.imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), format="png")
        assert image.ndim == 3 and image.shape[0] > 50
    for section in ("Explanations", "Certificates", "Robustness: certified vs empirical", "The paper's claim", "Theorem checks", "Timings and environment"):
        assert section in parser.headings and f"## {section}" in md.read_text()
    assert "MG-C2 refuted: slope 5" in page.read_text()
    assert json.loads(js.read_text())["evaluation"]["verdict"].startswith("REPRODUCED")


def test_model_level_claims_are_shown_once_and_method_claims_per_method():
    from certify.reports.report import split_model_level

    rows = [["gradient", "lipschitz", "certified", "<= 9 [8, 10]", "L of N_c"],
            ["gradient", "stability", "certified", "<= 1 [1, 2]", "grad"],
            ["moreaugrad", "lipschitz", "certified", "<= 9 [8, 10]", "L of N_c"],
            ["moreaugrad", "stability", "certified", "<= 0.5 [0.4, 0.6]", "MG"]]
    shared, per_method = split_model_level(rows)
    assert shared == [["lipschitz", "certified", "<= 9 [8, 10]", "L of N_c"]]
    assert [r[:2] for r in per_method] == [["gradient", "stability"], ["moreaugrad", "stability"]]
    assert split_model_level(rows[:2]) == ([], rows[:2])  # one method: nothing is "shared"


def test_every_method_keeps_its_colour_across_figures(tmp_path):
    from certify.reports.report import PALETTE, method_colour

    methods = ["gradient", "smoothgrad", "moreaugrad"]
    assert [method_colour(m, methods) for m in methods] == list(PALETTE[:3])
    assert method_colour("moreaugrad", methods) != method_colour("gradient", methods)
