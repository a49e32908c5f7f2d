"""Legibility rules of the report: one number format per column, distinct short labels, readable annotations,
and plots that say nothing are not drawn."""

from __future__ import annotations

import re

import pytest
from test_report import TAX, make_pool, selection_of

from mmssr_core.report_format import (
    decimals_for,
    format_rows,
    markdown_table,
    relative_luminance,
    short_labels,
    text_color_on,
    wrap_label,
)
from mmssr_core.report_plots import plots_worth_drawing


def _decimals(cell: str) -> int:
    return len(cell.split(".")[1]) if "." in cell else 0


def test_one_number_format_per_column():
    # the report's old mix: a column of pixel sizes read "2,520" beside "300.000"
    rows = [["max", 2520.0, 3, 0.25], ["mean", 300.0, 12, 0.5], ["p90", 870.829, 1_234_567, None]]
    cells = format_rows(rows)
    assert [r[1] for r in cells] == ["2,520", "300", "871"]  # four significant digits of the largest
    assert [r[0] for r in format_rows([[543.0], [311.03], [300.464]])] == ["543.0", "311.0", "300.5"]
    assert [r[2] for r in cells] == ["3", "12", "1,234,567"]
    assert [r[3] for r in cells] == ["0.250", "0.500", "–"]
    for j in (1, 2, 3):
        assert len({_decimals(r[j]) for r in cells if r[j] != "–"}) == 1, j
    # whole numbers stay whole even when stored as floats (maxima, medians of counts)
    assert [r[0] for r in format_rows([[2520.0], [1590.0]])] == ["2,520", "1,590"]
    # fixed decimals for a column (percentages), labels and booleans untouched
    assert format_rows([["x", 9.0909, True], ["y", 22.535, False]], {1: 1}) == [
        ["x", "9.1", "yes"],
        ["y", "22.5", "no"],
    ]


@pytest.mark.parametrize(
    "values,expected",
    [
        ([2.245, 1.0], 3),
        ([22.54, 3.1], 2),
        ([870.8, 2.5], 1),
        ([2520.4], 0),
        ([1.0, 2.0], 0),
        ([None, float("nan")], None),
        (["text"], None),
        ([0.0, 0.0], 0),
    ],
)
def test_decimals_follow_the_largest_value(values, expected):
    assert decimals_for(values) == expected


def test_markdown_table_aligns_numbers_right():
    md = markdown_table(["subset", "samples", "mean"], [["selected", 33, 1.7384], ["pool", 334, 1.2]])
    lines = md.splitlines()
    assert lines[1] == "|---|---:|---:|"
    assert lines[2] == "| selected | 33 | 1.738 |" and lines[3] == "| pool | 334 | 1.200 |"


def test_short_labels_stay_distinct():
    names = ["llamafactory_demo", "llamafactory_openai", "mathv_testmini"]
    short = short_labels(names, 14)
    assert len(set(short)) == 3 and all(len(s) <= 14 for s in short)
    assert short[2] == "mathv testmini"  # fits: kept whole
    assert short[0].startswith("llama") and short[0].endswith("demo") and short[1].endswith("openai")
    # names that differ only in their last characters, at a tight width
    tight = short_labels(["abcdefghijkl_1", "abcdefghijkl_2", "abcdefghijkl_3"], 6)
    assert len(set(tight)) == 3 and all(len(s) <= 6 for s in tight)
    # a cut at the head alone would read the same for both: the end is kept
    assert short_labels(["source_alpha_one", "source_alpha_two"], 10) == ["sourc…one", "sourc…two"]
    # a cut must not drop the one word that tells two names apart
    assert short_labels(["sharegpt4v_coco_captions", "sharegpt4v_sam_captions"], 20) == [
        "shareg…coco captions",
        "shareg…sam captions",
    ]
    assert short_labels(["x", "x"], 5) == ["x", "x"]  # duplicates in, duplicates out
    with pytest.raises(ValueError):
        short_labels(["abc"], 2)


def test_wrapped_labels_keep_every_word():
    assert wrap_label("object_spatial_understanding", 14) == "object spatial\nunderstanding"
    assert wrap_label("optical_character_recognition", 14).split("\n") == ["optical", "character", "recognition"]
    assert max(len(line) for line in wrap_label("a_" * 40, 14, max_lines=3).split("\n")) <= 14


def test_annotation_colour_contrasts_with_the_cell():
    import matplotlib

    assert relative_luminance((0, 0, 0)) == 0 and relative_luminance((1, 1, 1)) == pytest.approx(1)
    assert text_color_on((1, 1, 1)) == "black" and text_color_on((0, 0, 0)) == "white"
    reds, viridis = matplotlib.colormaps["Reds"], matplotlib.colormaps["viridis"]
    assert text_color_on(reds(1.0)) == "white" and text_color_on(reds(0.0)) == "black"  # the heat map's ends
    assert text_color_on(viridis(0.0)) == "white" and text_color_on(viridis(1.0)) == "black"
    assert text_color_on(matplotlib.colormaps["RdBu_r"](0.0)) == "white"  # the dark blue end of the lift panel


def test_plots_that_say_nothing_are_not_drawn():
    assert plots_worth_drawing(14, 9, 3, 2) == ["score_distributions", "style_source_heatmap", "capability_radar"]
    assert "overlap" in plots_worth_drawing(14, 9, 3, 3)
    assert plots_worth_drawing(2, 1, 1, 2) == ["score_distributions"]  # no radar of 2 axes, no 1x1 heat map
    assert plots_worth_drawing(0, 0, 0, 0) == []


def test_dropped_plots_stay_dropped(store, tmp_path):
    """A 2x2 overlap is not drawn, its old PNG is removed, and the page and metadata carry no trace of it."""
    from mmssr_core.report import build_report, report_files

    scores, raw = make_pool(tmp_path, with_images=False)
    sel = selection_of(scores, [f"s{i:02d}" for i in range(10)])
    half = selection_of(scores, [f"s{i:02d}" for i in range(5)])
    with_budgets = build_report(store, "r", sel, scores, taxonomy=TAX, budget_selections={"5": half, "10": sel})
    assert "overlap" in with_budgets.plots and with_budgets.plots["overlap"].is_file()
    alone = build_report(store, "r", sel, scores, pool=raw, taxonomy=TAX)
    assert "overlap" not in alone.plots and "overlap" not in alone.summary["plots"]
    assert not (store.root / "reports" / "r.overlap.png").exists()
    assert not any(p.name.endswith(".overlap.png") for p in report_files(store, "r"))
    page = alone.html_path.read_text()
    assert 'alt="overlap"' not in page and len(re.findall(r'src="data:image/png', page)) == 3
    assert not any(name.startswith("plot_overlap") for name, _, _ in alone.metadata_entries())
    # the number the matrix carried is still stated
    assert alone.summary["overlap"]["jaccard"]["selected"]["random"] == alone.metrics["jaccard_vs_random"]
