"""Self-contained reports: one HTML file with every figure embedded, plus Markdown.

A report is a :class:`Report` of sections holding paragraphs, tables and figures. The HTML
inlines each PNG as a base64 data URI and uses no external resources, so it opens offline
in any browser; the Markdown links the PNG files next to it.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Paragraph",
    "Table",
    "Figure",
    "Section",
    "Report",
    "render_html",
    "render_markdown",
]


@dataclass
class Paragraph:
    text: str
    kind: str = "text"  # "text" | "good" | "bad" | "note" | "pre"


@dataclass
class Table:
    columns: list[str]
    rows: list[list[object]]
    caption: str = ""

    def formatted_rows(self) -> list[list[str]]:
        return [[_fmt(v) for v in row] for row in self.rows]


@dataclass
class Figure:
    path: Path
    caption: str


@dataclass
class Section:
    title: str
    blocks: list[Paragraph | Table | Figure] = field(default_factory=list)


@dataclass
class Report:
    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:  # NaN
            return "n/a"
        return f"{v:+.4f}" if abs(v) < 1 and v < 0 else f"{v:.4f}"
    return str(v)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:2em}.subtitle{color:#666}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}
.good{border-left:4px solid #2a8a2a;padding-left:.6em}.bad{border-left:4px solid #b22;
padding-left:.6em}.note{border-left:4px solid #888;padding-left:.6em;color:#444}
nav ul{columns:2}
"""


def _figure_html(fig: Figure) -> str:
    data = base64.b64encode(Path(fig.path).read_bytes()).decode("ascii")
    cap = html.escape(fig.caption)
    return (
        f'<figure><img alt="{cap}" src="data:image/png;base64,{data}">'
        f"<figcaption>{cap}</figcaption></figure>"
    )


def _table_html(t: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
        for row in t.formatted_rows()
    )
    cap = f"<caption>{html.escape(t.caption)}</caption>" if t.caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: Report) -> str:
    """The whole report as one self-contained HTML page (figures inlined as data URIs)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
    ]
    if report.subtitle:
        parts.append(f'<p class="subtitle">{html.escape(report.subtitle)}</p>')
    toc = "".join(
        f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>'
        for i, s in enumerate(report.sections)
    )
    parts.append(f"<nav><ul>{toc}</ul></nav>")
    for i, section in enumerate(report.sections):
        parts.append(f'<section id="s{i}"><h2>{html.escape(section.title)}</h2>')
        for block in section.blocks:
            if isinstance(block, Paragraph):
                if block.kind == "pre":
                    parts.append(f"<pre>{html.escape(block.text)}</pre>")
                else:
                    parts.append(f'<p class="{block.kind}">{html.escape(block.text)}</p>')
            elif isinstance(block, Table):
                parts.append(_table_html(block))
            else:
                parts.append(_figure_html(block))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(report: Report, relative_to: Path) -> str:
    """The report as Markdown; figures are linked relative to ``relative_to``."""
    out = [f"# {report.title}", ""]
    if report.subtitle:
        out += [f"_{report.subtitle}_", ""]
    for section in report.sections:
        out += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Paragraph):
                if block.kind == "pre":
                    out += ["```", block.text, "```", ""]
                else:
                    out += [f"> {block.text}" if block.kind != "text" else block.text, ""]
            elif isinstance(block, Table):
                if block.caption:
                    out += [f"**{block.caption}**", ""]
                out.append("| " + " | ".join(block.columns) + " |")
                out.append("|" + "---|" * len(block.columns))
                out += ["| " + " | ".join(r) + " |" for r in block.formatted_rows()]
                out.append("")
            else:
                rel = os.path.relpath(block.path, relative_to)
                out += [f"![{block.caption}]({rel})", "", f"*{block.caption}*", ""]
    return "\n".join(out)
