"""The report in a real browser (issue 16, acceptance): Debian's headless chromium renders the HTML report (rebuilt
by the current code from the kept example run's artefacts) at 700 and 1400 px; the page is no wider than the
window (no horizontal overflow: wide tables scroll inside their own box), every image decodes, and the screenshot
has the window's size. `python3 dev.py test` installs chromium with apt-get when it runs as root."""
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from certify.reports.report import write_report

EXAMPLE = Path(__file__).resolve().parents[2] / "reports" / "example"
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000"]
PROBE = ("<script>window.addEventListener('load', () => { const images = [...document.images]; "
         "document.body.setAttribute('data-probe', JSON.stringify({scroll: document.documentElement.scrollWidth, "
         "inner: window.innerWidth, images: images.length, "
         "decoded: images.filter(i => i.complete && i.naturalWidth > 0).length})); });</script>")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    assert BROWSER, "Debian's chromium is needed (apt-get install chromium; python3 dev.py test installs it as root)"
    out = tmp_path_factory.mktemp("report") / "example"
    shutil.copytree(EXAMPLE, out)  # the whole run folder: its manifest lists every file the report checks
    _, index, _ = write_report(out)
    return index


def _run(args, timeout=120):
    return subprocess.run([BROWSER, *FLAGS, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("width", [700, 1400])
def test_the_report_fits_the_window_and_every_image_decodes(page, tmp_path, width):
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    result = _run([f"--window-size={width},1200", "--dump-dom", probe.as_uri()])
    found = re.search(r'data-probe="([^"]*)"', result.stdout)
    assert found, f"the page did not load: {result.stderr[-500:]}"
    facts = json.loads(html.unescape(found.group(1)))
    assert facts["inner"] == width
    assert facts["scroll"] <= facts["inner"], f"the page is {facts['scroll']} px wide in a {width} px window"
    assert facts["images"] >= 3 and facts["decoded"] == facts["images"], facts


@pytest.mark.parametrize("width", [700, 1400])
def test_the_screenshot_has_the_windows_size(page, tmp_path, width):
    shot = tmp_path / "shot.png"
    _run([f"--window-size={width},1200", f"--screenshot={shot}", page.as_uri()])
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (1200, width)
    assert float(pixels[..., :3].std()) > 0.05, "the screenshot is blank"
