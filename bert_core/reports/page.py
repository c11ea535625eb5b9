"""One standalone HTML page: headings, tables, notes and figures whose PNGs are embedded (base64), so
the file opens alone from a disk, object storage or the KFP UI's HTML viewer.

    html = render("pretrain", [heading("Training"), figures([...]), table(["metric", "value"], rows)])

Each figure is `<figure class="plot" data-title data-xlabel data-ylabel>` holding one `<img>` (alt:
what it shows) and a `<figcaption>`; the tests find the plots by that class.
"""

from __future__ import annotations

import base64
import datetime
import html
from typing import Sequence

from bert_core.reports.plots import Figure

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; max-width: 1180px; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ddd;
padding-bottom: 4px; margin-top: 1.6em; } h3 { font-size: 1.05em; margin-top: 1.2em; }
.sub { color: #666; margin-top: 0; } .note { color: #555; font-size: 0.92em; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
figure.plot { margin: 0; border: 1px solid #e3e3e3; border-radius: 4px; padding: 6px; background: #fff; }
figure.plot img { display: block; } figcaption { font-size: 0.85em; color: #444; max-width: 520px; margin-top: 4px; }
table { border-collapse: collapse; font-size: 0.9em; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; } td.num { text-align: right;
font-variant-numeric: tabular-nums; } th { background: #f5f5f5; } tr.differs td { background: #fff6d6; }
code { font-size: 0.92em; }
"""


def render(title: str, blocks: Sequence[str], subtitle: str = "") -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sub = f"{html.escape(subtitle)} &middot; " if subtitle else ""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f"<p class=\"sub\">{sub}written {when}</p>\n" + "\n".join(b for b in blocks if b) + "\n</body></html>\n")


def heading(text: str, level: int = 2, anchor: str = "") -> str:
    ident = f' id="{html.escape(anchor)}"' if anchor else ""
    return f"<h{level}{ident}>{html.escape(text)}</h{level}>"


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def figure(fig: Figure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    alt = f"{fig.title}: {fig.ylabel} by {fig.xlabel}"
    caption = html.escape(fig.title) + (f" &mdash; {html.escape(fig.caption)}" if fig.caption else "")
    return (f'<figure class="plot" data-title="{html.escape(fig.title)}" data-xlabel="{html.escape(fig.xlabel)}" '
            f'data-ylabel="{html.escape(fig.ylabel)}"><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(alt)}"><figcaption>{caption}</figcaption></figure>')


def figures(figs: Sequence[Figure]) -> str:
    return f'<div class="plots">{"".join(figure(f) for f in figs)}</div>' if figs else ""


def table(headers: Sequence[str], rows: Sequence[Sequence], highlight: Sequence[bool] = ()) -> str:
    """A table; numbers right-aligned; rows whose `highlight` is true are marked (class "differs")."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = ' class="differs"' if i < len(highlight) and highlight[i] else ""
        cells = "".join(f'<td class="num">{html.escape(cell(v))}</td>' if _is_number(v)
                        else f"<td>{html.escape(cell(v))}</td>" for v in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def cell(v) -> str:
    """A value as the tables show it (bert_core.artifacts' terminal tables say it the same way)."""
    from bert_core.artifacts import _cell

    return _cell(v)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
