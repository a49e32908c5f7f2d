"""Eval report: numbers on hand-made pools with known answers, plots, self-contained valid HTML."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser

import polars as pl
import pytest

from mmssr_core.report import build_report, read_report
from mmssr_core.report_metrics import normalised_entropy, random_subset
from mmssr_core.schema import RAW_POOL_SCHEMA, scores_schema
from mmssr_core.taxonomy import Capability, Taxonomy

CAPS = ["ocr", "spatial", "humanities"]
TAX = Taxonomy(tuple(Capability(k, k) for k in CAPS), ("multi-choice", "yes/no", "detailed description"))
PNG_SIG = b"\x89PNG\r\n\x1a\n"


def make_pool(tmp_path, n=40, with_images=True):
    """n samples over sources a/b. The first 10 (ids s00..s09, source a) are OCR-heavy: ocr 5, rest 1."""
    from PIL import Image

    img_dir = tmp_path / "imgs"
    img_dir.mkdir(exist_ok=True)
    rows, pool = [], []
    for i in range(n):
        sid, src = f"s{i:02d}", "a" if i < 20 else "b"
        ocr_heavy = i < 10
        style = ["multi-choice"] if i % 2 == 0 else ["yes/no", "multi-choice"]
        rows.append(
            {
                "id": sid,
                "source": src,
                "styles": style,
                "ocr": 5.0 if ocr_heavy else 1.0,
                "spatial": 1.0 if ocr_heavy else 2.0 + (i % 3) * 0.5,
                "humanities": None if i == 39 else 0.5,
                "ocr__argmax": 5 if ocr_heavy else 1,
                "spatial__argmax": 1,
                "humanities__argmax": None if i == 39 else 0,
                "scorer": "test",
            }
        )
        w, h = (64 + i, 32)
        path = img_dir / f"{sid}.png"
        if with_images:
            Image.new("RGB", (w, h), (i * 5 % 255, 100, 150)).save(path)
        text_only = i % 10 == 9
        pool.append(
            {
                "id": sid,
                "source": src,
                "position": i,
                "images": [] if text_only else [f"{sid}.png"],
                "image_files": [] if text_only else [str(path)],
                "image_formats": [] if text_only else ["PNG"],
                "image_widths": [] if text_only else [w],
                "image_heights": [] if text_only else [h],
                "image_root": str(img_dir),
                # 2 human turns, answer texts of known length: 'q' * 10 and 'a' * (i + 1)
                "conversations": [
                    {"from": "human", "value": "q" * 10},
                    {"from": "gpt", "value": "a" * (i + 1)},
                    {"from": "human", "value": "q" * 10},
                    {"from": "gpt", "value": "b" * 5},
                ],
                "system": None,
                "text_only": text_only,
                "content_hash": f"h{i}",
                "duplicate_of": None,
                "input_format": "llava",
                "metadata": "{}",
            }
        )
    scores = pl.DataFrame(rows, schema=scores_schema(CAPS))
    return scores, pl.DataFrame(pool, schema=RAW_POOL_SCHEMA)


def selection_of(scores: pl.DataFrame, ids: list[str], picked_by: str | None = "ocr") -> pl.DataFrame:
    df = scores.filter(pl.col("id").is_in(ids)).select("id", "source")
    return df.with_columns(
        pl.int_range(0, df.height).alias("rank"),
        pl.lit(picked_by, dtype=pl.Utf8).alias("picked_by"),
        pl.lit("multi-choice+a").alias("bin"),
    )


@pytest.fixture
def pool(tmp_path):
    return make_pool(tmp_path)


def test_dominant_capability(store, pool):
    scores, raw = pool
    ids = [f"s{i:02d}" for i in range(10)]
    failures = pl.DataFrame(
        {
            "id": ["s39", "s39", "s03"],
            "source": ["b", "b", "a"],
            "content_hash": ["h39", "h39", "h3"],
            "target": ["humanities", "style", "spatial"],
            "reason": ["timeout", "timeout", "parse_error"],
            "message": ["x", "y", "z"],
        }
    )
    r = build_report(
        store,
        "ocr10",
        selection_of(scores, ids),
        scores,
        pool=raw,
        taxonomy=TAX,
        failures=failures,
        threshold=1.0,
        budget=10,
    )
    s = r.summary
    sel, pool_p = s["profiles"]["selected"], s["profiles"]["pool"]
    assert s["size"] == 10 and s["pool_size"] == 40 and s["fraction"] == pytest.approx(0.25)
    assert sel["capabilities"]["ocr"]["mean"] == pytest.approx(5.0)
    assert sel["capabilities"]["ocr"]["count_ge4"] == 10 and pool_p["capabilities"]["ocr"]["count_ge4"] == 10
    assert pool_p["capabilities"]["ocr"]["mean"] == pytest.approx((10 * 5 + 30 * 1) / 40)
    assert sel["capabilities"]["spatial"]["count_ge4"] == 0
    assert s["picked_by"]["ocr"] == {"count": 10, "share": 1.0}
    assert s["picked_by"]["spatial"]["share"] == 0.0
    # random subset has the same size, and a lower OCR mean unless it drew exactly the OCR samples
    rnd = s["profiles"]["random"]
    assert rnd["size"] == 10
    assert rnd["capabilities"]["ocr"]["mean"] <= 5.0
    assert r.metrics["mean_score_gain_vs_random"] == pytest.approx(sel["mean_score"] - rnd["mean_score"])
    # pool passing under the selection's rule: the integer score > 1 -> ocr 10 (integer 5), spatial 0 (integer 1
    # everywhere although its expected scores reach 3.0), humanities 0 (integer 0)
    th = s["threshold"]
    assert th["rank"] == "integer" and th["rules"] == {k: "integer > 1" for k in CAPS}
    assert th["passing"] == {"ocr": 10, "spatial": 0, "humanities": 0}
    assert th["eligible_any"] == 10
    assert th["sweep"]["0.0"] == {"eligible_any": 40, "ocr": 40, "spatial": 40, "humanities": 0}
    assert "pool passing (integer > 1)" in r.markdown
    # the opt-in rank on the expected score counts with that rule: score > 1 -> ocr 10, spatial 30, humanities 0
    r2 = build_report(
        store,
        "ocr10e",
        selection_of(scores, ids),
        scores,
        taxonomy=TAX,
        threshold=1.0,
        rank="expected",
        make_html=False,
        make_plots=False,
    )
    th = r2.summary["threshold"]
    assert th["passing"] == {"ocr": 10, "spatial": 30, "humanities": 0} and th["eligible_any"] == 40
    assert th["sweep"]["4.0"]["ocr"] == 10 and th["sweep"]["4.0"]["spatial"] == 0
    assert th["sweep"]["0.0"]["humanities"] == 39  # the missing score never qualifies
    assert "pool passing (expected > 1)" in r2.markdown and r2.summary["rank"] == "expected"
    # a table without integer scores (an external scorer) counts on its float
    r3 = build_report(
        store,
        "ocr10f",
        selection_of(scores, ids),
        scores.drop([f"{k}__argmax" for k in CAPS]),
        taxonomy=TAX,
        threshold=1.0,
        make_html=False,
        make_plots=False,
    )
    assert r3.summary["threshold"]["passing"] == {"ocr": 10, "spatial": 30, "humanities": 0}
    assert "pool passing (float > 1)" in r3.markdown
    # failures
    f = s["failures"]
    assert f["rows"] == 3 and f["samples"] == 2 and f["in_selection"] == 1
    assert f["by_reason"] == {"timeout": 2, "parse_error": 1}
    # sources: all selected from a
    assert sel["source_mix"] == {"a": {"count": 10, "share": 1.0}}
    assert sel["source_entropy"] == 0.0 and pool_p["source_entropy"] == pytest.approx(1.0)
    # styles: 10 multi-choice labels + 5 yes/no labels, over 3 styles in the taxonomy
    assert sel["style_mix"]["multi-choice"]["count"] == 10 and sel["style_mix"]["yes/no"]["count"] == 5
    assert sel["style_entropy"] == pytest.approx(normalised_entropy([10, 5], 3))
    # bins: pool has (mc,a) (mc,b) (yn,a) (yn,b); the selection covers the two of source a
    assert sel["bin_coverage"] == pytest.approx(0.5) and pool_p["bin_coverage"] == 1.0
    # text: 2 human turns; chars = 10 + (i+1) + 10 + 5 for i in 0..9
    assert sel["text"]["turns_mean"] == 2.0
    assert sel["text"]["text_chars_mean"] == pytest.approx(sum(25 + i + 1 for i in range(10)) / 10)
    # images: s09 is text-only; widths 64..72
    assert sel["images"]["text_only_share"] == pytest.approx(0.1)
    assert sel["images"]["images"] == 9
    assert sel["images"]["width_mean"] == pytest.approx(sum(64 + i for i in range(9)) / 9)
    assert sel["images"]["height_median"] == 32
    # JSON on disk is what was returned, and is valid JSON
    on_disk = json.loads(r.json_path.read_text())
    assert on_disk["profiles"]["selected"]["capabilities"]["ocr"]["count_ge4"] == 10
    assert read_report(store, "ocr10")["size"] == 10
    assert r.json_path == store.root / "reports" / "ocr10.json"
    assert all(isinstance(v, float) for v in r.metrics.values())
    assert "| samples |" in r.markdown and "ocr" in r.markdown


def test_selection_equal_to_pool(store, pool):
    scores, raw = pool
    full = selection_of(scores, scores["id"].to_list())
    half = selection_of(scores, [f"s{i:02d}" for i in range(20)])
    r = build_report(store, "all", full, scores, pool=raw, taxonomy=TAX, budget_selections={"50%": half, "100%": full})
    s = r.summary
    sel, pool_p, rnd = (s["profiles"][n] for n in ("selected", "pool", "random"))
    for key in (
        "capabilities",
        "style_mix",
        "source_mix",
        "style_entropy",
        "source_entropy",
        "style_source_entropy",
        "bin_coverage",
        "mean_score",
        "text",
        "images",
    ):
        assert sel[key] == pool_p[key], key
        assert rnd[key] == pool_p[key], key
    ov = s["overlap"]
    assert ov["jaccard"]["selected"]["random"] == 1.0
    assert ov["jaccard"]["selected"]["budget 100%"] == 1.0
    assert ov["jaccard"]["budget 50%"]["budget 100%"] == pytest.approx(0.5)
    assert ov["nested"] is True and ov["nesting"][0]["smaller"] == "budget 50%"
    assert r.metrics["budgets_nested"] == 1.0 and r.metrics["jaccard_vs_random"] == 1.0


def test_budgets_that_do_not_nest(store, pool):
    scores, _ = pool
    a = selection_of(scores, ["s00", "s01", "s02"])
    b = selection_of(scores, ["s01", "s02", "s03", "s04", "s05"])
    r = build_report(
        store,
        "nn",
        a,
        scores,
        taxonomy=TAX,
        budget_selections={"small": a, "large": b},
        make_html=False,
        make_plots=False,
    )
    ov = r.summary["overlap"]
    assert ov["nested"] is False
    assert ov["nesting"][0]["contained"] == pytest.approx(2 / 3)
    assert ov["jaccard"]["budget small"]["budget large"] == pytest.approx(2 / 6)
    assert r.html_path is None and r.plots == {}


def test_baselines_and_random_seed(store, pool):
    scores, _ = pool
    sel = selection_of(scores, [f"s{i:02d}" for i in range(10)])
    base = selection_of(scores, [f"s{i:02d}" for i in range(30, 40)], picked_by=None)
    r = build_report(
        store, "b", sel, scores, taxonomy=TAX, baselines={"mean": base}, seed=3, make_html=False, make_plots=False
    )
    assert r.summary["profiles"]["mean"]["size"] == 10
    assert r.summary["overlap"]["jaccard"]["selected"]["mean"] == 0.0
    # the random subset is seeded and independent of row order
    a = random_subset(scores, 10, seed=3)
    b = random_subset(scores.reverse(), 10, seed=3)
    c = random_subset(scores, 10, seed=4)
    assert a["id"].to_list() == b["id"].to_list()
    assert set(a["id"]) != set(c["id"])


def test_entropy_known_values():
    assert normalised_entropy([5, 5], 2) == pytest.approx(1.0)
    assert normalised_entropy([5, 5], 4) == pytest.approx(0.5)
    assert normalised_entropy([7], 9) == 0.0
    assert normalised_entropy([], 9) == 0.0
    assert normalised_entropy([1, 2, 3], 3) == pytest.approx(
        -sum(p * math.log(p) for p in (1 / 6, 2 / 6, 3 / 6)) / math.log(3)
    )


def test_missing_selected_sample_is_an_error(store, pool):
    scores, _ = pool
    sel = pl.DataFrame({"id": ["nope"], "source": ["a"]})
    with pytest.raises(ValueError, match="not in the scores table"):
        build_report(store, "x", sel, scores, taxonomy=TAX)


class TagBalance(HTMLParser):
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.urls, self.imgs = [], [], [], []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href") and v:
                self.urls.append(v)
        if tag == "img":
            self.imgs.append(dict(attrs).get("src", ""))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


def test_plots_and_html(store, pool):
    scores, raw = pool
    sel = selection_of(scores, [f"s{i:02d}" for i in range(10)])
    r = build_report(store, "html", sel, scores, pool=raw, taxonomy=TAX)
    # selected vs random only: the 2x2 overlap matrix would carry one number, so it is not drawn
    assert set(r.plots) == {"score_distributions", "style_source_heatmap", "capability_radar"}
    for name, path in r.plots.items():
        data = path.read_bytes()
        assert data[:8] == PNG_SIG, name
        assert 1000 < len(data) < 150_000, (name, len(data))
    page = r.html_path.read_text()
    assert r.html_path == store.root / "reports" / "html.html"
    p = TagBalance()
    p.feed(page)
    p.close()
    assert not p.errors and not p.stack, (p.errors, p.stack)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "http://" not in page and "https://" not in page
    assert all(u.startswith("data:image/") for u in p.urls)
    pngs = [u for u in p.imgs if u.startswith("data:image/png;base64,")]
    jpegs = [u for u in p.imgs if u.startswith("data:image/jpeg;base64,")]
    assert len(pngs) == 3
    # examples: up to 3 per primary style from the selection (multi-choice: even ids; yes/no: odd ids);
    # s09 is text-only, so 5 thumbnails (3 + 2)... both styles have >= 3 samples with images
    assert len(jpegs) == 6
    assert "s00" in page and "&lt;" not in page.split("<body>")[0]
    # markdown image entries for Dagster are data URIs
    md = r.plots_markdown()
    assert all(v.startswith(f"![{k}](data:image/png;base64,") for k, v in md.items())
    kinds = {k: kind for k, kind, _ in r.metadata_entries()}
    assert kinds["report"] == "md" and kinds["report_html"] == "path" and kinds["style_entropy"] == "float"


def test_html_escapes_data(store, tmp_path):
    scores, raw = make_pool(tmp_path, n=6, with_images=False)
    raw = raw.with_columns(
        pl.col("conversations").list.eval(
            pl.struct(
                pl.element().struct.field("from"),
                pl.lit('<script>alert("x")</script> see http://evil.example').alias("value"),
            )
        )
    )
    sel = selection_of(scores, ["s00", "s01"])
    r = build_report(store, "esc", sel, scores, pool=raw, taxonomy=TAX, make_plots=False)
    page = r.html_path.read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "no image" in page  # the image files do not exist: placeholder, no crash
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", page)


def test_default_taxonomy_plot_size(store, tmp_path):
    """14 capabilities, 9 styles, several sources: every PNG stays under 150 KB."""
    import random

    from mmssr_core.taxonomy import DEFAULT_STYLES
    from mmssr_core.taxonomy import Taxonomy as T

    tax = T()
    rng = random.Random(0)
    n = 3000
    data = {"id": [f"x{i}" for i in range(n)], "source": [f"src{i % 6}" for i in range(n)]}
    data["styles"] = [rng.sample(list(DEFAULT_STYLES), rng.randint(1, 3)) for _ in range(n)]
    for k in tax.keys:
        data[k] = [rng.uniform(0, 5) for _ in range(n)]
    scores = pl.DataFrame(data)
    sel = (
        scores.sort(tax.keys[0], descending=True)
        .head(300)
        .select("id", "source")
        .with_columns(pl.lit(tax.keys[0]).alias("picked_by"))
    )
    r = build_report(
        store, "big", sel, scores, taxonomy=tax, budget=0.1, budget_selections={"5%": sel.head(150), "10%": sel}
    )
    for name, path in r.plots.items():
        assert 1000 < path.stat().st_size < 150_000, (name, path.stat().st_size)
    assert r.summary["overlap"]["nested"] is True
    assert r.html_path.stat().st_size < 1_500_000


def test_cli_report_from_files(tmp_path, capsys):
    from mmssr_core.cli import main

    scores, raw = make_pool(tmp_path)
    sc, po, se, half = (
        tmp_path / "scores.parquet",
        tmp_path / "pool.parquet",
        tmp_path / "ocr10.parquet",
        tmp_path / "half.parquet",
    )
    scores.write_parquet(sc)
    raw.write_parquet(po)
    selection_of(scores, [f"s{i:02d}" for i in range(10)]).write_parquet(se)
    selection_of(scores, [f"s{i:02d}" for i in range(5)]).write_parquet(half)
    tax = tmp_path / "tax.json"
    tax.write_text(
        json.dumps({"extend": False, "capabilities": [{"key": k} for k in CAPS], "styles": list(TAX.styles)})
    )
    out = tmp_path / "out"
    rc = main(
        [
            "report",
            "--scores",
            str(sc),
            "--selection",
            str(se),
            "--pool",
            str(po),
            "--taxonomy",
            str(tax),
            "--out",
            str(out),
            "--budget",
            "25%",
            "--budget-selection",
            f"5={half}",
            "--budget-selection",
            f"10={se}",
            "--store",
            str(tmp_path / "empty"),
            "--json",
        ]
    )
    assert rc == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["recipe"] == "ocr10" and last["html"] == str(out / "reports" / "ocr10.html")
    assert (out / "reports" / "ocr10.html").is_file() and len(last["plots"]) == 4
    summary = json.loads((out / "reports" / "ocr10.json").read_text())
    assert summary["budget"] == 0.25 and summary["overlap"]["nested"] is True
    assert summary["profiles"]["selected"]["capabilities"]["ocr"]["mean"] == 5.0
    # a bad input is one clear line, exit status 2
    rc = main(["report", "--scores", str(sc), "--selection", str(tmp_path / "missing.parquet"), "--out", str(out)])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_cli_report_from_store(tmp_path, capsys):
    from mmssr_core.cli import main
    from mmssr_core.store import Store

    scores, raw = make_pool(tmp_path)
    st = Store(tmp_path / "store")
    st.write("scores", "pool", scores)
    for src in ("a", "b"):
        st.write("raw_pool", src, raw.filter(pl.col("source") == src))
    st.write("selections", "r1", selection_of(scores, ["s00", "s25"]))
    tax = tmp_path / "tax.json"
    tax.write_text(
        json.dumps({"extend": False, "capabilities": [{"key": k} for k in CAPS], "styles": list(TAX.styles)})
    )
    rc = main(["report", "--store", str(st.root), "--recipe", "r1", "--taxonomy", str(tax), "--no-plots"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| subset | samples |" in out and "| pool | 40 |" in out and "| selected | 2 |" in out
    assert str(st.root / "reports" / "r1.html") in out
    s = json.loads((st.root / "reports" / "r1.json").read_text())
    assert s["profiles"]["selected"]["text"]["turns_mean"] == 2.0 and s["plots"] == {}


def test_related_selections(store, pool):
    from mmssr_core.recipes import Recipe
    from mmssr_core.report import related_selections

    scores, _ = pool
    recipes = [
        Recipe("m5", budget=5),
        Recipe("m10", budget=10),
        Recipe("m20", budget=20),  # m20 never selected
        Recipe("rand5", method="random", budget=5),
        Recipe("ocr5", budget=5, capabilities=["ocr"]),
    ]
    for name, n in (("m5", 5), ("m10", 10), ("rand5", 5), ("ocr5", 5)):
        store.write("selections", name, selection_of(scores, [f"s{i:02d}" for i in range(n)]))
    baselines, budgets = related_selections(store, recipes[0], recipes)
    assert set(baselines) == {"rand5", "ocr5"} and set(budgets) == {"m5", "m10"}
    r = build_report(
        store,
        "m5",
        budgets["m5"],
        scores,
        taxonomy=TAX,
        baselines=baselines,
        budget_selections=budgets,
        make_html=False,
        make_plots=False,
    )
    assert r.summary["overlap"]["nested"] is True and "rand5" in r.summary["profiles"]


def test_empty_selection(store, pool):
    """A short selection can be empty (nothing eligible): the report still builds, with zeros."""
    scores, raw = pool
    sel = selection_of(scores, [])
    r = build_report(store, "empty", sel, scores, pool=raw, taxonomy=TAX)
    s = r.summary
    assert s["size"] == 0 and s["profiles"]["random"]["size"] == 0
    assert s["profiles"]["selected"]["capabilities"]["ocr"]["mean"] is None
    assert s["profiles"]["selected"]["style_entropy"] == 0.0
    assert r.html_path.is_file() and len(r.plots) == 3
    assert "mean_score" not in r.metrics and r.metrics["size"] == 0.0
    assert "NaN" not in r.json_path.read_text()
