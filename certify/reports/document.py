"""A small document model written out as Markdown and as one self-contained HTML file (images embedded
as base64), so the same report content is never written twice by hand."""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

from certify.runs import atomic_write


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[object]]


@dataclass
class Image:
    path: Path
    caption: str


@dataclass
class Preformatted:
    text: str


Block = Union[Heading, Paragraph, Table, Image, Preformatted]


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(Heading(text, level))

    def paragraph(self, text: str) -> None:
        self.blocks.append(Paragraph(text))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        self.blocks.append(Table(headers, rows))

    def image(self, path: Path, caption: str) -> None:
        self.blocks.append(Image(Path(path), caption))

    def preformatted(self, text: str) -> None:
        self.blocks.append(Preformatted(text))

    def to_markdown(self, relative_to: Path) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            if isinstance(b, Heading):
                out += ["#" * b.level + " " + b.text, ""]
            elif isinstance(b, Paragraph):
                out += [b.text, ""]
            elif isinstance(b, Table):
                out.append("| " + " | ".join(str(h).replace("|", "\\|") for h in b.headers) + " |")
                out.append("|" + "---|" * len(b.headers))
                out += ["| " + " | ".join(_cell(c).replace("|", "\\|") for c in row) + " |" for row in b.rows]
                out.append("")
            elif isinstance(b, Image):
                out += [f"![{b.caption}]({b.path.relative_to(relative_to).as_posix()})", "", f"*{b.caption}*", ""]
            else:
                out += ["```", b.text, "```", ""]
        return "\n".join(out)

    def to_html(self) -> str:
        esc = html.escape
        out = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{esc(self.title)}</title>",
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            "<style>body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;"
            "overflow-wrap:anywhere}.scroll{overflow-x:auto;max-width:100%}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
            "text-align:left;font-size:.9em;vertical-align:top}td{min-width:4em}pre{background:#f5f5f5;padding:.8em;"
            "overflow-x:auto}figure{margin:1em 0}img{max-width:100%;height:auto}figcaption{font-size:.85em;color:#555}"
            "</style></head><body>",
            f"<h1>{esc(self.title)}</h1>",
        ]
        for b in self.blocks:
            if isinstance(b, Heading):
                out.append(f"<h{b.level}>{esc(b.text)}</h{b.level}>")
            elif isinstance(b, Paragraph):
                out.append(f"<p>{esc(b.text)}</p>")
            elif isinstance(b, Table):
                out.append('<div class="scroll"><table><tr>' + "".join(f"<th>{esc(h)}</th>" for h in b.headers) + "</tr>")
                out += ["<tr>" + "".join(f"<td>{esc(_cell(c))}</td>" for c in row) + "</tr>" for row in b.rows]
                out.append("</table></div>")
            elif isinstance(b, Image):
                data = base64.b64encode(b.path.read_bytes()).decode()
                out.append(
                    f'<figure><img alt="{esc(b.caption)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{esc(b.caption)}</figcaption></figure>"
                )
            else:
                out.append(f"<pre>{esc(b.text)}</pre>")
        out.append("</body></html>")
        return "\n".join(out)

    def write(self, out_dir: Path, stem: str = "index") -> tuple[Path, Path]:
        """Write `stem`.md and `stem`.html into out_dir, each atomically (`certify.runs.atomic_write`); returns both
        paths."""
        out_dir.mkdir(parents=True, exist_ok=True)
        md = atomic_write(out_dir / f"{stem}.md", self.to_markdown(out_dir))
        page = atomic_write(out_dir / f"{stem}.html", self.to_html())
        return md, page
