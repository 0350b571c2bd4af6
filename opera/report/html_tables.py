"""The result tables as HTML pages, so that Snakemake's report shows them as tables (it embeds HTML
and offers any other file only as a download).

A table that has a Markdown form (results, avg_rank, paper, claims) is rendered from it, with its
note, bold best cells and display names as written there; the others from their CSV's frame, with
numbers to four significant digits. Every page is self-contained (inline style, no script).
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd

from opera.io import write_text

# stem -> title of every table the report shows (written by opera.report.aggregate.write_html_pages)
REPORT_TABLES = {
    "results": "Final-checkpoint retrieval quality",
    "avg_rank": "Average rank",
    "paper": "The paper's table",
    "claims": "The paper's claims",
    "comparisons": "Comparisons with basic and the controls",
    "time_to_quality": "Time to quality",
    "budgets": "Quality by training budget",
    "sampler_diagnostics": "Sampler diagnostics",
}

_STYLE = """
body { font-family: system-ui, sans-serif; font-size: 14px; margin: 1em; }
p { max-width: 70em; color: #333; }
table { border-collapse: collapse; }
th, td { padding: 3px 9px; border-bottom: 1px solid #ddd; white-space: nowrap; }
th { background: #f3f3f3; border-bottom: 2px solid #999; }
td.r { text-align: right; font-variant-numeric: tabular-nums; }
"""


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>\n<h3>{html.escape(title)}</h3>\n{body}\n</body></html>\n"
    )


def _cell(text: str) -> str:
    """A Markdown cell's text as HTML: escaped, **bold** kept as bold."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text.strip()))


def markdown_page(markdown: str, title: str) -> str:
    """One page from a Markdown text of paragraphs and pipe tables (opera.report.aggregate's ``.md`` files):
    paragraphs become ``<p>``, tables ``<table>`` with the alignment of their rule line."""
    blocks, table = [], []

    def flush_table():
        if not table:
            return
        header, rule, *rows = table
        # a right-aligned column's rule ends in ':' only (`---:`); its cells are numbers
        opening = [
            '<td class="r">' if c.strip().endswith(":") and not c.strip().startswith(":") else "<td>" for c in rule
        ]
        head = "".join(f"<th>{_cell(cell)}</th>" for cell in header)
        body = "".join(
            "<tr>" + "".join(f"{td}{_cell(c)}</td>" for c, td in zip(row, opening, strict=True)) + "</tr>"
            for row in rows
        )
        blocks.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line.strip().strip("|").split("|"))
        else:
            flush_table()
            if line.strip():
                blocks.append(f"<p>{_cell(line)}</p>")
    flush_table()
    return _page(title, "\n".join(blocks))


def frame_page(frame: pd.DataFrame, title: str) -> str:
    """One page from a table's frame: every column, numbers to four significant digits."""
    table = frame.to_html(index=False, na_rep="–", float_format=lambda x: f"{x:.4g}", border=0, escape=True)
    return _page(title, f"<p>{len(frame)} rows; the CSV of the same name holds full precision.</p>\n{table}")


def write_markdown_page(markdown_path: Path, title: str) -> Path:
    """``<stem>.html`` beside ``markdown_path``, from it."""
    target = markdown_path.with_suffix(".html")
    write_text(target, markdown_page(markdown_path.read_text(encoding="utf-8"), title))
    return target


def write_frame_page(frame: pd.DataFrame, path: Path, title: str) -> Path:
    write_text(path, frame_page(frame, title))
    return path
