"""The report's tables, built once from the JSON summary and written both as Markdown (the Dagster UI, the
CLI) and as HTML (the page).

Each table puts one quantity per column (the subsets we compare are rows), so that every column has one
number format (`mmssr_core.report_format`): a column of counts is never mixed with a column of means.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmssr_core.report_format import markdown_table
from mmssr_core.report_metrics import passing_label

PERCENT_DIGITS = 1


@dataclass
class Table:
    header: list[str]
    rows: list[list]
    digits: dict[int, int] = field(default_factory=dict)  # fixed decimals of some columns (by index)
    left_cols: int = 1
    note: str = ""  # what the columns mean, shown under the table on the page

    def markdown(self) -> str:
        return markdown_table(self.header, self.rows, self.digits, self.left_cols)


def subset_names(summary: dict) -> list[str]:
    return list(summary["profiles"])


def _get(d: dict, *path):
    for p in path:
        d = d.get(p) if isinstance(d, dict) else None
    return d


def _pct(x):
    return None if x is None else 100 * x


def _percent_columns(n: int) -> dict[int, int]:
    """Fixed decimals for the n value columns after the label column."""
    return {j + 1: PERCENT_DIGITS for j in range(n)}


# (header, path into a subset's profile, percent?) of the headline, in column order
HEADLINE_COLUMNS: list[tuple[str, tuple[str, ...], bool]] = [
    ("samples", ("size",), False),
    ("mean score", ("mean_score",), False),
    ("any ≥4 (%)", ("any_ge4_share",), True),
    ("capabilities with ≥4", ("capabilities_with_ge4",), False),
    ("style entropy", ("style_entropy",), False),
    ("source entropy", ("source_entropy",), False),
    ("style x source entropy", ("style_source_entropy",), False),
    ("bin coverage (%)", ("bin_coverage",), True),
]
OPTIONAL_HEADLINE: list[tuple[str, tuple[str, ...], bool]] = [
    ("text chars", ("text", "text_chars_mean"), False),
    ("human turns", ("text", "turns_mean"), False),
    ("image MP", ("images", "megapixels_mean"), False),
]
HEADLINE_NOTE = (
    "One row per subset. mean score: expected score averaged over the capabilities; any ≥4: share of samples "
    "scoring at least 4 in some capability; entropies: normalised to 0..1 (1 = spread evenly over all styles, "
    "sources or style x source bins of the pool); bin coverage: share of the pool's style x source bins the "
    "subset reaches; text chars, human turns, image MP: means per sample."
)


def headline(summary: dict) -> Table:
    prof = summary["profiles"]
    names = subset_names(summary)
    cols = HEADLINE_COLUMNS + [c for c in OPTIONAL_HEADLINE if any(_get(prof[n], *c[1]) is not None for n in names)]
    rows = []
    for n in names:
        rows.append([n] + [(_pct if pct else (lambda v: v))(_get(prof[n], *path)) for _, path, pct in cols])
    digits = {j + 1: PERCENT_DIGITS for j, c in enumerate(cols) if c[2]}
    return Table(["subset"] + [c[0] for c in cols], rows, digits, note=HEADLINE_NOTE)


def capabilities(summary: dict, names: list[str] | None = None) -> Table:
    """Per capability: mean and ≥4 count per subset, the share the capability's turn picked, pool passing."""
    prof = summary["profiles"]
    names = names or subset_names(summary)
    passing = passing_label(summary["threshold"])
    rows = []
    for k in summary["capabilities"]:
        pb = summary.get("picked_by", {}).get(k)
        rows.append(
            [k]
            + [prof[n]["capabilities"][k]["mean"] for n in names]
            + [prof[n]["capabilities"][k]["count_ge4"] for n in names]
            + [None if pb is None else 100 * pb["share"], summary["threshold"]["passing"].get(k)]
        )
    header = (
        ["capability"]
        + [f"mean {n}" for n in names]
        + [f"≥4 {n}" for n in names]
        + ["picked by (%)", f"pool passing ({passing})"]
    )
    return Table(header, rows, {1 + 2 * len(names): PERCENT_DIGITS})


def style_shares(summary: dict) -> Table:
    prof, names = summary["profiles"], subset_names(summary)
    styles = sorted(set().union(*[prof[n]["style_mix"] for n in names]))
    rows = [[s] + [prof[n]["style_mix"].get(s, {}).get("share", 0.0) * 100 for n in names] for s in styles]
    return Table(["style"] + names, rows, _percent_columns(len(names)))


def source_counts(summary: dict) -> Table:
    prof, names = summary["profiles"], subset_names(summary)
    sources = sorted(set().union(*[prof[n]["source_mix"] for n in names]))
    return Table(
        ["source"] + names, [[s] + [prof[n]["source_mix"].get(s, {}).get("count", 0) for n in names] for s in sources]
    )


TEXT_COLUMNS = [("human turns", "turns"), ("characters", "text_chars")]
STATS = ("mean", "median", "p90", "max")


def text_stats(summary: dict) -> Table | None:
    prof, names = summary["profiles"], subset_names(summary)
    if not any(prof[n].get("text") for n in names):
        return None
    header = ["subset"] + [f"{label}: {s}" for label, _ in TEXT_COLUMNS for s in STATS]
    rows = [[n] + [_get(prof[n], "text", f"{key}_{s}") for _, key in TEXT_COLUMNS for s in STATS] for n in names]
    return Table(header, rows, note="Per sample: human turns, and characters over all turns.")


IMAGE_COLUMNS = [
    ("images", "images", False),
    ("per sample", "images_per_sample_mean", False),
    ("text-only (%)", "text_only_share", True),
    ("width median (px)", "width_median", False),
    ("height median (px)", "height_median", False),
    ("megapixels: mean", "megapixels_mean", False),
    ("megapixels: median", "megapixels_median", False),
    ("megapixels: p90", "megapixels_p90", False),
    ("megapixels: max", "megapixels_max", False),
]


def image_stats(summary: dict) -> Table | None:
    prof, names = summary["profiles"], subset_names(summary)
    if not any(prof[n].get("images") for n in names):
        return None
    rows = [
        [n] + [(_pct if pct else (lambda v: v))(_get(prof[n], "images", key)) for _, key, pct in IMAGE_COLUMNS]
        for n in names
    ]
    digits = {j + 1: PERCENT_DIGITS for j, c in enumerate(IMAGE_COLUMNS) if c[2]}
    return Table(
        ["subset"] + [c[0] for c in IMAGE_COLUMNS],
        rows,
        digits,
        note="Images of the subset's samples; the JSON summary also has the mean, p90 and maximum of "
        "widths and heights.",
    )


def overlap(summary: dict) -> Table | None:
    ov = summary.get("overlap")
    if not ov:
        return None
    names = ov["names"]
    return Table(["Jaccard"] + names, [[a] + [ov["jaccard"][a][b] for b in names] for a in names], {})


def nesting(summary: dict) -> Table | None:
    ov = summary.get("overlap") or {}
    if "nesting" not in ov:
        return None
    rows = [[p["smaller"], p["larger"], 100 * p["contained"], p["nested"]] for p in ov["nesting"]]
    return Table(["smaller", "larger", "contained (%)", "nested"], rows, {2: PERCENT_DIGITS}, left_cols=2)


def threshold_sweep(summary: dict) -> Table:
    th, caps = summary["threshold"], summary["capabilities"]
    rows = [[k] + [th["sweep"][t].get(k) for t in th["sweep"]] for k in caps]
    rows.append(["any capability"] + [th["sweep"][t]["eligible_any"] for t in th["sweep"]])
    return Table(["capability"] + [f"t={t}" for t in th["sweep"]], rows)


def style_source(summary: dict) -> Table | None:
    rows = [[r["style"], r["source"], r["count"]] for r in summary["profiles"]["selected"]["style_source"]]
    return Table(["style", "source", "labels"], rows, left_cols=2) if rows else None
