"""A self-contained HTML page per recipe: one file, CSS inline, images as base64 data URIs.

No external URL is ever referenced (no CDN, no web fonts, no links to image files), so the page opens
offline and can be mailed or attached as is. All text from the data is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from mmssr_core.report_metrics import passing_label

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


def table(header: list[str], rows: list[list], left_cols: int = 1) -> str:
    """An HTML table; the first `left_cols` columns are left-aligned labels. Cells are escaped."""
    h = "".join(f'<th class="l">{esc(c)}</th>' if i < left_cols else f"<th>{esc(c)}</th>" for i, c in enumerate(header))
    body = []
    for r in rows:
        cells = "".join(
            f'<td class="l">{esc(fmt(c))}</td>' if i < left_cols else f"<td>{esc(fmt(c))}</td>" for i, c in enumerate(r)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{h}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def example_card(ex: dict) -> str:
    img = (
        f'<img alt="{esc(ex["id"])}" src="{ex["thumb"]}">'
        if ex.get("thumb")
        else '<div class="noimg">no image</div>'
    )
    scores = ", ".join(f"{esc(k)} {v:.2f}" for k, v in ex.get("top_scores", []))
    turns = "".join(f"<pre><b>{esc(r)}:</b> {esc(t)}</pre>" for r, t in ex.get("turns", []))
    return (
        f'<div class="ex">{img}<div><b>{esc(ex["id"])}</b> <span class="muted">{esc(ex["source"])} · '
        f'styles: {esc(", ".join(ex.get("styles") or []))} · picked by {esc(ex.get("picked_by"))} · '
        f'rank {esc(ex.get("rank"))}</span><div>top scores: {scores}</div>{turns}</div></div>'
    )


def render(summary: dict, plots: dict[str, bytes], examples: dict[str, list[dict]], headline_rows: list[list]) -> str:
    """The whole page from the JSON summary, PNG bytes per plot and example cards per style."""
    s = summary
    prof = s["profiles"]
    names = [n for n in prof]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>mmssr report: {esc(s['recipe'])}</title>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{CSS}</style></head><body>",
        f"<h1>Selection report: {esc(s['recipe'])}</h1>",
        f'<p class="muted">{esc(s["size"])} of {esc(s["pool_size"])} scored samples '
        f'({esc(fmt(100 * s["fraction"], 2))}%), budget {esc(s.get("budget"))}, threshold {esc(s["threshold"]["threshold"])} (rank mode {esc(s["threshold"].get("rank", "integer"))}), '
        f'random baseline seed {esc(s["seed"])}, capabilities: {esc(len(s["capabilities"]))}. '
        f"Generated {esc(s.get('generated_at'))}.</p>",
        "<h2>Headline</h2>",
        table(["metric"] + names, headline_rows),
    ]
    # capabilities
    caps = s["capabilities"]
    passing = passing_label(s["threshold"])
    rows = []
    for k in caps:
        row = [k]
        for n in names:
            row.append(prof[n]["capabilities"][k]["mean"])
        for n in names:
            row.append(prof[n]["capabilities"][k]["count_ge4"])
        pb = s.get("picked_by", {}).get(k)
        row.append(None if pb is None else round(100 * pb["share"], 2))
        row.append(s["threshold"]["passing"].get(k))
        rows.append(row)
    from mmssr_core.dedup.report import dedup_html

    parts.append(dedup_html(s.get("dedup")))
    parts += [
        "<h2>Capabilities</h2>",
        f'<p class="muted">Mean expected score and count of samples scoring at least 4, per subset; share of the '
        f"selection picked by the capability's turn; samples of the pool that qualify under the selection's "
        f"rule ({esc(passing)}).</p>",
        table(["capability"] + [f"mean {n}" for n in names] + [f"≥4 {n}" for n in names] + ["picked by (%)", f"pool passing ({passing})"], rows),
    ]
    if plots:
        parts.append('<h2>Plots</h2><div class="plots">')
        for name, data in plots.items():
            parts.append(f'<figure><img alt="{esc(name)}" src="{png_data_uri(data)}"><figcaption class="muted">{esc(name)}</figcaption></figure>')
        parts.append("</div>")
    # styles and sources
    sel = prof["selected"]
    style_rows = [
        [st] + [prof[n]["style_mix"].get(st, {}).get("share", 0.0) * 100 for n in names]
        for st in sorted(set().union(*[prof[n]["style_mix"] for n in names]))
    ]
    source_rows = [
        [src] + [prof[n]["source_mix"].get(src, {}).get("count", 0) for n in names]
        for src in sorted(set().union(*[prof[n]["source_mix"] for n in names]))
    ]
    parts += [
        "<h2>Interaction styles (share of labels, %)</h2>",
        table(["style"] + names, style_rows),
        "<h2>Sources (samples)</h2>",
        table(["source"] + names, source_rows),
    ]
    ss_rows = [[r["style"], r["source"], r["count"]] for r in sel["style_source"]]
    if ss_rows:
        parts += ["<h2>Selection by style x source</h2>", table(["style", "source", "labels"], ss_rows, left_cols=2)]
    # text and images
    for title, field in (("Text", "text"), ("Images", "images")):
        keys = sorted(set().union(*[prof[n].get(field, {}) for n in names]))
        if keys:
            parts += [f"<h2>{title}</h2>", table(["statistic"] + names, [[k] + [prof[n].get(field, {}).get(k) for n in names] for k in keys])]
    # overlap
    ov = s.get("overlap")
    if ov:
        parts += [
            "<h2>Overlap</h2>",
            table(["Jaccard"] + ov["names"], [[a] + [ov["jaccard"][a][b] for b in ov["names"]] for a in ov["names"]]),
        ]
        if "nesting" in ov:
            verdict = '<span class="good">yes</span>' if ov["nested"] else '<span class="bad">no</span>'
            parts.append(f"<p>Smaller budgets nest in larger ones: {verdict}</p>")
            parts.append(
                table(["smaller", "larger", "contained", "nested"], [[p["smaller"], p["larger"], p["contained"], p["nested"]] for p in ov["nesting"]], left_cols=2)
            )
    # threshold sweep
    th = s["threshold"]
    sweep_rows = [[k] + [th["sweep"][t].get(k) for t in th["sweep"]] for k in caps] + [
        ["any capability"] + [th["sweep"][t]["eligible_any"] for t in th["sweep"]]
    ]
    parts += [
        "<h2>Threshold effects</h2>",
        f'<p class="muted">Samples of the scored pool eligible per capability under the selection\'s rule '
        f"({esc(' / '.join(th.get('bases') or ['score']))} &gt; t) "
        "at several thresholds.</p>",
        table(["capability"] + [f"t={t}" for t in th["sweep"]], sweep_rows),
    ]
    # failures
    fs = s["failures"]
    parts += [
        "<h2>Scoring failures</h2>",
        f"<p>{esc(fs['samples'])} samples ({esc(fmt(100 * fs['share_of_pool'], 2))}% of the pool) had {esc(fs['rows'])} "
        f"failed scoring targets; {esc(fs['in_selection'])} of them are in the selection.</p>",
    ]
    if fs.get("by_reason"):
        parts.append(table(["reason", "failures"], [[k, v] for k, v in fs["by_reason"].items()]))
    if fs.get("examples"):
        cols = list(fs["examples"][0].keys())
        parts.append(table(cols, [[e.get(c) for c in cols] for e in fs["examples"]], left_cols=len(cols)))
    # examples
    if examples:
        parts.append("<h2>Examples per style (from the selection)</h2>")
        for style, cards in examples.items():
            parts.append(f"<h3>{esc(style)}</h3>")
            parts += [example_card(c) for c in cards]
    parts.append("</body></html>")
    return "\n".join(parts)
