"""A self-contained HTML page per recipe: one file, CSS inline, images as base64 data URIs.

No external URL is ever referenced (no CDN, no web fonts, no links to image files), so the page opens
offline and can be mailed or attached as is. All text from the data is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from mmssr_core import report_tables as T
from mmssr_core.report_format import format_rows
from mmssr_core.report_metrics import passing_label, scorer_line

THUMB_PX = 128

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right;vertical-align:top}
th{background:#f4f4f4}td.l,th.l{text-align:left}
.plots img{max-width:100%;margin:.5em 0;border:1px solid #eee}
.ex{display:flex;gap:.8em;border:1px solid #e4e4e4;padding:.5em;margin:.4em 0;font-size:.85em}
.ex img{width:128px;height:auto;flex:none}.ex .noimg{width:128px;flex:none;color:#999;text-align:center}
.ex pre{white-space:pre-wrap;margin:.2em 0;font-size:.95em}
.muted{color:#777}.good{color:#1a7f37}.bad{color:#b42318}
"""


def esc(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def thumbnail_data_uri(path: str | Path, px: int = THUMB_PX) -> str | None:
    """A ~px-wide JPEG thumbnail of an image file as a data URI; None when it cannot be read."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.draft("RGB", (px * 2, px * 2))
            im = im.convert("RGB")
            im.thumbnail((px, px))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=70, optimize=True)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    except Exception:  # a missing or broken image must not break the report
        return None


def fmt(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x != x:
            return "–"
        return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.{digits}f}"
    return str(x)


def table(header, rows: list[list] | None = None, left_cols: int = 1, digits=None) -> str:
    """An HTML table with one number format per column (`report_format`); the first `left_cols` columns are
    left-aligned labels. Takes a `report_tables.Table` or (header, rows). Cells are escaped."""
    if rows is None:  # a Table
        t = header
        header, rows, left_cols, digits = t.header, t.rows, t.left_cols, t.digits
    h = "".join(f'<th class="l">{esc(c)}</th>' if i < left_cols else f"<th>{esc(c)}</th>" for i, c in enumerate(header))
    body = []
    for r in format_rows(rows, digits):
        cells = "".join(
            f'<td class="l">{esc(c)}</td>' if i < left_cols else f"<td>{esc(c)}</td>" for i, c in enumerate(r)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{h}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def section(title: str, t, intro: str = "") -> list[str]:
    """A titled table (a `report_tables.Table`, or None for nothing) with its intro and note."""
    if t is None:
        return []
    out = [f"<h2>{esc(title)}</h2>"]
    if intro:
        out.append(f'<p class="muted">{intro}</p>')
    out.append(table(t))
    if t.note:
        out.append(f'<p class="muted">{esc(t.note)}</p>')
    return out


def example_card(ex: dict) -> str:
    img = f'<img alt="{esc(ex["id"])}" src="{ex["thumb"]}">' if ex.get("thumb") else '<div class="noimg">no image</div>'
    scores = ", ".join(f"{esc(k)} {v:.2f}" for k, v in ex.get("top_scores", []))
    turns = "".join(f"<pre><b>{esc(r)}:</b> {esc(t)}</pre>" for r, t in ex.get("turns", []))
    return (
        f'<div class="ex">{img}<div><b>{esc(ex["id"])}</b> <span class="muted">{esc(ex["source"])} · '
        f"styles: {esc(', '.join(ex.get('styles') or []))} · picked by {esc(ex.get('picked_by'))} · "
        f"rank {esc(ex.get('rank'))}</span><div>top scores: {scores}</div>{turns}</div></div>"
    )


def _intro(s: dict) -> str:
    scorer = s.get("scorer") or {}
    who = f" Scores by {esc(scorer_line(scorer))}." if scorer else ""
    return (
        f'<p class="muted">{esc(fmt(s["size"]))} of {esc(fmt(s["pool_size"]))} scored samples '
        f"({esc(fmt(100 * s['fraction'], 2))}%), budget {esc(s.get('budget_label') or s.get('budget'))}, threshold "
        f"{esc(s['threshold']['threshold'])} (rank mode {esc(s['threshold'].get('rank', 'integer'))}), random "
        f"baseline seed {esc(s['seed'])}, capabilities: {esc(len(s['capabilities']))}.{who} "
        f"Generated {esc(s.get('generated_at'))}.</p>"
    )


def _plots(plots: dict[str, bytes]) -> list[str]:
    if not plots:
        return []
    out = ['<h2>Plots</h2><div class="plots">']
    for name, data in plots.items():
        out.append(
            f'<figure><img alt="{esc(name)}" src="{png_data_uri(data)}"><figcaption class="muted">'
            f"{esc(name)}</figcaption></figure>"
        )
    return out + ["</div>"]


def _overlap(s: dict) -> list[str]:
    out = section("Overlap", T.overlap(s))
    ov = s.get("overlap") or {}
    if "nesting" in ov:
        verdict = '<span class="good">yes</span>' if ov["nested"] else '<span class="bad">no</span>'
        out.append(f"<p>Smaller budgets nest in larger ones: {verdict}</p>")
        out.append(table(T.nesting(s)))
    return out


def _failures(fs: dict) -> list[str]:
    out = [
        "<h2>Scoring failures</h2>",
        f"<p>{esc(fmt(fs['samples']))} samples ({esc(fmt(100 * fs['share_of_pool'], 2))}% of the pool) had "
        f"{esc(fmt(fs['rows']))} failed scoring targets; {esc(fmt(fs['in_selection']))} of them are in the selection.</p>",
    ]
    if fs.get("by_reason"):
        out.append(table(["reason", "failures"], [[k, v] for k, v in fs["by_reason"].items()]))
    if fs.get("examples"):
        cols = list(fs["examples"][0].keys())
        out.append(table(cols, [[e.get(c) for c in cols] for e in fs["examples"]], left_cols=len(cols)))
    return out


def render(summary: dict, plots: dict[str, bytes], examples: dict[str, list[dict]]) -> str:
    """The whole page from the JSON summary, PNG bytes per plot and example cards per style."""
    from mmssr_core.dedup.report import dedup_html

    s = summary
    th = s["threshold"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>mmssr report: {esc(s['recipe'])}</title>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{CSS}</style></head><body>",
        f"<h1>Selection report: {esc(s['recipe'])}</h1>",
        _intro(s),
        *section("Headline", T.headline(s)),
        dedup_html(s.get("dedup")),
        *section(
            "Capabilities",
            T.capabilities(s),
            "Mean expected score and count of samples scoring at least 4, per subset; share of the selection "
            "picked by the capability's turn; samples of the pool that qualify under the selection's rule "
            f"({esc(passing_label(th))}).",
        ),
        *_plots(plots),
        *section("Interaction styles (share of labels, %)", T.style_shares(s)),
        *section("Sources (samples)", T.source_counts(s)),
        *section("Selection by style x source", T.style_source(s)),
        *section("Text", T.text_stats(s)),
        *section("Images", T.image_stats(s)),
        *_overlap(s),
        *section(
            "Threshold effects",
            T.threshold_sweep(s),
            "Samples of the scored pool eligible per capability under the selection's rule "
            f"({esc(' / '.join(th.get('bases') or ['score']))} &gt; t) at several thresholds.",
        ),
        *_failures(s["failures"]),
    ]
    if examples:
        parts.append("<h2>Examples per style (from the selection)</h2>")
        for style, cards in examples.items():
            parts.append(f"<h3>{esc(style)}</h3>")
            parts += [example_card(c) for c in cards]
    parts.append("</body></html>")
    return "\n".join(parts)
