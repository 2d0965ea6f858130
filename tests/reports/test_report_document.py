"""certify.reports.document: the same Document rendered as Markdown and as self-contained HTML."""
import base64
import re

import pytest

from certify.reports.document import Document


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "img" / "fig.png"
    path.parent.mkdir()
    path.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return path


def _doc(png):
    doc = Document("Title <&>")
    doc.heading("Section", 3)
    doc.paragraph("a < b & c")
    doc.table(["name", "value"], [["x|y", 0.123456789], ["<b>", 2]])
    doc.image(png, "a figure")
    doc.preformatted("line 1\n<pre> & |")
    return doc


def test_markdown_renders_blocks_in_order_with_escaped_table_cells(png, tmp_path):
    md = _doc(png).to_markdown(tmp_path)
    lines = md.split("\n")
    assert lines[0] == "# Title <&>"
    assert "### Section" in lines and "a < b & c" in lines
    table = [line for line in lines if line.startswith("|")]
    assert table == ["| name | value |", "|---|---|", "| x\\|y | 0.1235 |", "| <b> | 2 |"]  # a pipe escaped, not replaced
    assert "![a figure](img/fig.png)" in lines and "*a figure*" in lines
    i = lines.index("```")
    assert lines[i:i + 4] == ["```", "line 1", "<pre> & |", "```"]
    assert md.index("### Section") < md.index("| name") < md.index("![a figure]") < md.index("```")


def test_markdown_image_outside_relative_to_is_an_error(png, tmp_path):
    with pytest.raises(ValueError):
        _doc(png).to_markdown(tmp_path / "elsewhere")


def test_html_escapes_text_and_embeds_the_image_bytes(png):
    page = _doc(png).to_html()
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</body></html>")
    assert "<title>Title &lt;&amp;&gt;</title>" in page and "<h1>Title &lt;&amp;&gt;</h1>" in page
    assert "<h3>Section</h3>" in page and "<p>a &lt; b &amp; c</p>" in page
    assert "<td>x|y</td><td>0.1235</td>" in page and "<td>&lt;b&gt;</td><td>2</td>" in page
    assert "<pre>line 1\n&lt;pre&gt; &amp; |</pre>" in page
    assert "<b>" not in page
    (data,) = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert base64.b64decode(data) == png.read_bytes()
    assert "<figcaption>a figure</figcaption>" in page


def test_write_puts_both_files_in_out_dir_with_image_paths_relative_to_it(png, tmp_path):
    doc = _doc(png)
    md, page = doc.write(tmp_path, stem="report")
    assert (md, page) == (tmp_path / "report.md", tmp_path / "report.html")
    assert page.read_text() == doc.to_html()
    assert md.read_text() == doc.to_markdown(tmp_path)
    assert "![a figure](img/fig.png)" in md.read_text()


def test_empty_document_is_just_the_title(tmp_path):
    doc = Document("T")
    assert doc.to_markdown(tmp_path) == "# T\n"
    assert doc.to_html().count("<h1>T</h1>") == 1
