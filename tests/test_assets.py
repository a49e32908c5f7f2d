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
    summary = materialize_all(sources_root=root, store_root=store_root, instance=instance,
                              progress=messages.append)
    return {"summary": summary, "instance": instance, "root": root, "store_root": store_root,
            "messages": messages, "tmp": tmp}


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


def test_metadata_shows_counts_quarantine_and_cache(graph):
    inst = graph["instance"]
    raw = _latest(inst, "raw_pool", "tabmwp")
    assert raw["read"] == 121 and raw["quarantined"] == 1 and raw["quarantined/image_missing"] == 1
    assert "image_missing" in raw["quarantine_by_reason"] and "tabmwp_missing_image" in raw["quarantine_examples"]
    assert raw["path"].endswith("raw_pool/tabmwp.parquet") and raw["unchanged"] is False
    caps = _latest(inst, "capability_scores", "mathv")
    assert caps["scored"] == 304 and caps["cached"] == 0 and caps["dagster/row_count"] == 304
    styles = _latest(inst, "style_labels", "mathv")
    assert styles["path"].endswith("style_labels/mathv.parquet")
    table = _latest(inst, "scores_table")
    assert table["dagster/row_count"] == 514 and table["sources"] == 3
    sel = _latest(inst, "selected_subset", "mmssr_10pct")
    assert sel["selected"] == 51 and "| id |" in sel["preview"]


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
    res = job.execute_in_process(partition_key="mathv", instance=inst,
                                 run_config={"ops": {"raw_pool": {"config": {"force": True}}}})
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


def test_definitions_are_well_formed():
    """Groups, owners, kinds, descriptions on every asset; one backfill policy over the per-source
    chain; scoring in the gpu pool; checks blocking."""
    from mmssr_assets.definitions import build_definitions
    from mmssr_assets.partitions import SOURCE_BACKFILL_POLICY

    defs = build_definitions()
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"raw_pool", "capability_scores", "style_labels", "scores_table", "duplicates", "selected_subset", "eval_report",
                    "scorer_agreement", "downstream_run", "downstream_full_run", "downstream_eval"}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name in ("ingestion", "scoring", "selection", "reports", "downstream"), key
        assert node.owners and node.description and node.kinds, key
    for name in ("raw_pool", "capability_scores", "style_labels"):
        node = graph.get(dg.AssetKey(name))
        assert node.backfill_policy == SOURCE_BACKFILL_POLICY
        assert node.partitions_def.name == "sources"
    scoring = graph.assets_def_for_key(dg.AssetKey("capability_scores"))
    assert scoring is graph.assets_def_for_key(dg.AssetKey("style_labels"))
    assert scoring.node_def.pool == "gpu"
    checks = {c.name: c for c in graph.asset_check_keys}
    assert {"raw_pool_rows_conserved", "capability_scores_complete", "style_labels_in_label_set",
            "selected_subset_budget", "selected_subset_ids_in_pool", "selected_subset_one_per_duplicate_group"} <= set(checks)
    for key in graph.asset_check_keys:
        assert graph.get_check_spec(key).blocking, key
    partitions = graph.get(dg.AssetKey("selected_subset")).partitions_def.get_partition_keys()
    assert partitions[:3] == ["mmssr_5pct", "mmssr_10pct", "mmssr_30pct"]
