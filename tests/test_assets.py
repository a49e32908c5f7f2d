"""The whole graph materialized in-process through Dagster on real pools, with the rules backend."""

from __future__ import annotations

import json
import math

import dagster as dg
import polars as pl
import pytest
from dagster_support import link_source, slice_source

RECIPES_TOML = """
[[recipe]]
name = "ocr_10pct"
budget = "10%"
capabilities = ["optical_character_recognition"]
"""


@pytest.fixture(scope="module")
def graph(tmp_path_factory, shared_data):
    """Three real sources (one with a quarantined sample), default recipes plus an OCR-only recipe."""
    from mmssr_assets.materialize import materialize_all

    tmp = tmp_path_factory.mktemp("graph")
    root, store_root = tmp / "sources", tmp / "store"
    link_source(root, shared_data, "llava_bench")
    link_source(root, shared_data, "math_vision_testmini", "mathv")
    slice_source(root, shared_data, "tabmwp_dev1k", 120, "tabmwp", bad=True)
    store_root.mkdir()
    (store_root / "recipes.toml").write_text(RECIPES_TOML)
    instance = dg.DagsterInstance.ephemeral()
    messages: list[str] = []
    summary = materialize_all(sources_root=root, store_root=store_root, instance=instance, progress=messages.append)
    return {
        "summary": summary,
        "instance": instance,
        "root": root,
        "store_root": store_root,
        "messages": messages,
        "tmp": tmp,
    }


def _latest(instance, key: str, partition: str | None = None) -> dict:
    ev = instance.get_latest_materialization_event(dg.AssetKey(key)) if partition is None else None
    if partition is not None:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition]), limit=1
        ).records
        ev = records[0].event_log_entry if records else None
    assert ev is not None, f"{key}[{partition}] never materialized"
    return {k: getattr(v, "value", v) for k, v in ev.asset_materialization.metadata.items()}


def test_every_source_is_ingested_scored_and_checked(graph):
    s = graph["summary"]
    assert s.ok, (s.failures, {k: v for k, v in s.checks.items() if not v})
    assert set(s.sources) == {"llava_bench", "mathv", "tabmwp"}
    assert s.sources["llava_bench"]["accepted"] == 90 and s.sources["mathv"]["accepted"] == 304
    assert s.sources["tabmwp"] == {**s.sources["tabmwp"], "accepted": 120, "quarantined": 1, "read": 121}
    for name, r in s.sources.items():
        assert r["scored"] + r["cached"] + r["failed"] == r["accepted"], name
    # 3 source checks per source, 3 subset checks per recipe, all passed
    assert len(s.checks) == 3 * 3 + 3 * 4 and all(s.checks.values())
    assert graph["instance"].get_dynamic_partitions("sources") == ["llava_bench", "mathv", "tabmwp"]
    assert graph["instance"].get_dynamic_partitions("recipes") == [
        "mmssr_5pct",
        "mmssr_10pct",
        "mmssr_30pct",
        "ocr_10pct",
    ]
    assert any("[1/7] source llava_bench" in m for m in graph["messages"])


def test_subsets_have_their_budget_and_ids_from_the_pool(graph):
    from mmssr_core.store import Store

    st = Store(graph["store_root"])
    pool = st.scan("raw_pool").select("id", "source").collect()
    n = pool.height
    assert n == 90 + 304 + 120
    for name, frac in (("mmssr_5pct", 0.05), ("mmssr_10pct", 0.10), ("mmssr_30pct", 0.30), ("ocr_10pct", 0.10)):
        sub = graph["summary"].subsets[name]
        df = pl.read_parquet(sub["path"])
        assert "id" in df.columns
        assert sub["requested"] == math.floor(frac * n)
        assert df.height == sub["selected"] <= sub["requested"]
        if not sub["short"]:
            assert df.height == sub["requested"]
        assert df.join(pool, on=["id", "source"], how="anti").is_empty()
        assert df.select("id", "source").unique().height == df.height
    ocr = pl.read_parquet(graph["summary"].subsets["ocr_10pct"]["path"])
    assert set(ocr["picked_by"].unique().to_list()) == {"optical_character_recognition"}


def test_reports_are_written(graph):
    for name, rep in graph["summary"].reports.items():
        doc = json.loads(open(rep["json"]).read())
        assert doc, name
        assert open(rep["html"]).read().lstrip().lower().startswith("<!doctype html")


def _rows(value) -> list[dict]:
    """The records of a `MetadataValue.table`, after checking each matches its schema's columns."""
    assert isinstance(value, dg.TableMetadataValue), type(value)
    columns = [c.name for c in value.schema.columns]
    for r in value.records:
        assert set(r.data) == set(columns)
    return [r.data for r in value.records]


def test_metadata_shows_counts_quarantine_and_cache(graph):
    inst = graph["instance"]
    raw = _latest(inst, "raw_pool", "tabmwp")
    assert raw["read"] == 121 and raw["quarantined"] == 1 and raw["quarantined/image_missing"] == 1
    [reason] = _rows(raw["quarantine_by_reason"])
    assert reason["reason"] == "image_missing" and reason["count"] == 1 and reason["meaning"]
    assert [r["id"] for r in _rows(raw["quarantine_examples"])] == ["tabmwp_missing_image"]
    assert len(_rows(raw["preview"])) == 5
    assert raw["path"].endswith("raw_pool/tabmwp.parquet") and raw["unchanged"] is False
    caps = _latest(inst, "capability_scores", "mathv")
    assert caps["scored"] == 304 and caps["cached"] == 0 and caps["dagster/row_count"] == 304
    assert all(0 <= r["mean expected score"] <= 5 for r in _rows(caps["mean_scores"]))
    styles = _latest(inst, "style_labels", "mathv")
    assert styles["path"].endswith("style_labels/mathv.parquet")
    assert sum(r["samples"] for r in _rows(styles["primary_styles"])) == 304
    table = _latest(inst, "scores_table")
    assert table["dagster/row_count"] == 514 and table["sources"] == 3
    assert {r["source"]: r["samples"] for r in _rows(table["per_source"])} == {
        "llava_bench": 90,
        "mathv": 304,
        "tabmwp": 120,
    }
    sel = _latest(inst, "selected_subset", "mmssr_10pct")
    assert sel["selected"] == 51 and len(_rows(sel["preview"])) == 10


def test_every_score_asset_and_report_names_its_scorer(graph):
    """The scorer's identity, and for the weight-free rules backend the words "rules: heuristic stand-in"."""
    inst = graph["instance"]
    for key, partition in (
        ("capability_scores", "mathv"),
        ("style_labels", "mathv"),
        ("scores_table", None),
        ("eval_report", "mmssr_10pct"),
    ):
        meta = _latest(inst, key, partition)
        assert meta["scorer"].startswith("rules:"), (key, meta["scorer"])
        assert meta["scorer_note"].startswith("rules: heuristic stand-in"), key
    headline = _rows(_latest(inst, "eval_report", "mmssr_10pct")["headline"])
    selected = next(r for r in headline if r["subset"] == "selected")  # one row per subset, one column per metric
    assert selected["samples"] == 51


def test_rematerializing_a_source_scores_nothing_new(graph):
    """Incremental: a second run over an unchanged source takes every score from the cache; a new
    source is scored alone and the other sources' score files are not rewritten."""
    from mmssr_assets.definitions import build_definitions
    from mmssr_core.store import Store

    st = Store(graph["store_root"])
    defs = build_definitions(store_root=graph["store_root"], sources_root=graph["root"])
    job = defs.resolve_job_def("ingest_and_score")
    inst = graph["instance"]
    res = job.execute_in_process(partition_key="mathv", instance=inst)
    assert res.success
    caps = _latest(inst, "capability_scores", "mathv")
    assert caps["cached"] == 304 and caps["scored"] == 0 and caps["computed"] == 0
    raw = _latest(inst, "raw_pool", "mathv")
    assert raw["unchanged"] is True and raw["accepted"] == 304  # folder unchanged: not re-ingested
    from dagster_support import stale_map

    assert stale_map(inst, defs) == {"scorer_agreement": "MISSING"}  # ... and nothing turned stale
    res = job.execute_in_process(
        partition_key="mathv", instance=inst, run_config={"ops": {"raw_pool": {"config": {"force": True}}}}
    )
    assert res.success and _latest(inst, "raw_pool", "mathv")["unchanged"] is False

    before = {s: st.path("capability_scores", s).stat().st_mtime_ns for s in ("llava_bench", "tabmwp")}
    slice_source(graph["root"], _shared(graph), "tabmwp_dev1k", 30, "tabmwp_new", offset=500)
    inst.add_dynamic_partitions("sources", ["tabmwp_new"])
    res = job.execute_in_process(partition_key="tabmwp_new", instance=inst)
    assert res.success
    new = _latest(inst, "capability_scores", "tabmwp_new")
    assert new["scored"] == 30 and new["cached"] == 0
    after = {s: st.path("capability_scores", s).stat().st_mtime_ns for s in ("llava_bench", "tabmwp")}
    assert after == before


def _shared(graph):
    from conftest import require_shared_data

    return require_shared_data()


def test_definitions_are_well_formed(monkeypatch):
    """Groups, owners, kinds, descriptions on every asset; code versions on every computed asset; one
    backfill policy over the per-source chain; scoring in the gpu pool; checks blocking."""
    from mmssr_assets.definitions import build_definitions
    from mmssr_assets.partitions import SOURCE_BACKFILL_POLICY

    monkeypatch.delenv("MMSSR_DOWNSTREAM", raising=False)
    defs = build_definitions()
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        "source_folder",
        "raw_pool",
        "capability_scores",
        "style_labels",
        "scores_table",
        "duplicates",
        "recipe",
        "selected_subset",
        "eval_report",
        "scorer_agreement",
    }
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name in ("ingestion", "scoring", "selection", "reports"), key
        assert node.owners and node.description and node.kinds, key
        assert node.is_observable if node.is_external else node.code_version, key
    for name in ("raw_pool", "capability_scores", "style_labels"):
        node = graph.get(dg.AssetKey(name))
        assert node.backfill_policy == SOURCE_BACKFILL_POLICY
        assert node.partitions_def.name == "sources"
    scoring = graph.assets_def_for_key(dg.AssetKey("capability_scores"))
    assert scoring is graph.assets_def_for_key(dg.AssetKey("style_labels"))
    assert scoring.node_def.pool == "gpu"
    checks = {c.name: c for c in graph.asset_check_keys}
    assert {
        "raw_pool_rows_conserved",
        "capability_scores_complete",
        "style_labels_in_label_set",
        "selected_subset_budget",
        "selected_subset_ids_in_pool",
        "selected_subset_one_per_duplicate_group",
    } <= set(checks)
    for key in graph.asset_check_keys:
        assert graph.get_check_spec(key).blocking, key
    for name in ("recipe", "selected_subset", "eval_report"):
        assert graph.get(dg.AssetKey(name)).partitions_def.name == "recipes"
