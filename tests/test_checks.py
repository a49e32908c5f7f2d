"""Asset checks fail on purpose-made bad data, pass on good data, and block downstream steps."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from mmssr_assets import checks as C
from mmssr_core.store import Store

KEYS = ["ocr", "stem"]
LABELS = ["multi-choice", "yes/no"]


@pytest.fixture
def st(tmp_path):
    st = Store(tmp_path / "store")
    st.write("raw_pool", "s", pl.DataFrame({"id": ["a", "b", "c"], "source": ["s"] * 3}))
    st.write(
        "quarantine",
        "s",
        pl.DataFrame(
            {"source": ["s"], "position": [3], "id": ["d"], "reason": ["image_missing"], "message": ["d: no image"]}
        ),
    )
    st.write_json("ingest_stats", "s", {"read": 4, "accepted": 3, "quarantined": 1})
    return st


def _caps(st, values):
    st.write(
        "capability_scores",
        "s",
        pl.DataFrame(
            {"id": ["a", "b", "c"], "source": ["s"] * 3, "ocr": values, "stem": [1.0, 2.0, 3.0]},
            schema_overrides={"ocr": pl.Float64},
        ),
    )


def test_rows_conserved(st):
    assert C.rows_conserved(st, "s").passed
    st.write_json("ingest_stats", "s", {"read": 5, "accepted": 3, "quarantined": 1})
    res = C.rows_conserved(st, "s")
    assert not res.passed and "read 5 != accepted 3 + quarantined 1" in res.description
    assert res.severity == dg.AssetCheckSeverity.ERROR
    st.write_json("ingest_stats", "s", {"read": 5, "accepted": 4, "quarantined": 1})  # stats agree, file does not
    res = C.rows_conserved(st, "s")
    assert not res.passed and "holds 3 rows" in res.description
    assert not C.rows_conserved(st, "missing").passed


def test_scores_complete_needs_a_score_or_a_failure(st):
    _caps(st, [1.0, 2.0, 3.0])
    assert C.scores_complete(st, "s", KEYS).passed
    _caps(st, [1.0, None, 3.0])
    res = C.scores_complete(st, "s", KEYS)
    assert not res.passed and "1 accepted samples lack scores" in res.description and "b" in res.description
    st.write(
        "score_failures",
        "s",
        pl.DataFrame(
            {"id": ["b"], "source": ["s"], "target": ["ocr"], "reason": ["timeout"], "message": ["b: timed out"]}
        ),
    )
    res = C.scores_complete(st, "s", KEYS)
    assert res.passed and res.metadata["with_failure"].value == 1
    res = C.scores_complete(st, "s", KEYS + ["humanities"])  # taxonomy grew: column missing
    assert not res.passed and "humanities" in res.description


def test_scored_ids_outside_the_pool_fail(st):
    st.write(
        "capability_scores",
        "s",
        pl.DataFrame({"id": ["a", "b", "c", "zzz"], "source": ["s"] * 4, "ocr": [1.0] * 4, "stem": [1.0] * 4}),
    )
    res = C.scores_complete(st, "s", KEYS)
    assert not res.passed and "1 scored ids are not in the pool" in res.description


def test_styles_within_label_set(st):
    good = pl.DataFrame({"id": ["a", "b", "c"], "styles": [["yes/no"], ["multi-choice", "yes/no"], None]})
    st.write("style_labels", "s", good)
    assert C.styles_in_label_set(st, "s", LABELS).passed
    st.write("style_labels", "s", good.with_columns(pl.Series("styles", [["yes/no"], ["poetry"], None])))
    res = C.styles_in_label_set(st, "s", LABELS)
    assert not res.passed and "1 style labels outside the label set" in res.description
    assert "poetry" in [r.data["label"] for r in res.metadata["examples"].value.records]
    st.write("style_labels", "s", good.head(2))
    assert not C.styles_in_label_set(st, "s", LABELS).passed  # a sample without a row


def _selection(st, ids, requested, selected=None, reason=""):
    st.write(
        "selections",
        "r",
        pl.DataFrame({"id": ids, "source": ["s"] * len(ids)}, schema={"id": pl.Utf8, "source": pl.Utf8}),
    )
    st.write_json(
        "selections",
        "r",
        {"requested": requested, "selected": len(ids) if selected is None else selected, "reason": reason},
    )


def test_budget_exact_short_with_reason_or_fail(st):
    _selection(st, ["a", "b"], 2)
    assert C.budget_met(st, "r").passed
    _selection(st, ["a"], 2, reason="every capability ran out of samples above the threshold")
    res = C.budget_met(st, "r")
    assert res.passed and "short by 1" in res.description
    _selection(st, ["a"], 2)
    res = C.budget_met(st, "r")
    assert not res.passed and "no reason given" in res.description
    _selection(st, ["a", "b", "c"], 2)
    assert not C.budget_met(st, "r").passed
    _selection(st, ["a", "b"], 2, selected=3)
    assert not C.budget_met(st, "r").passed  # summary and file disagree


def test_ids_in_pool(st):
    _selection(st, ["a", "c"], 2)
    assert C.ids_in_pool(st, "r").passed
    _selection(st, ["a", "nope"], 2)
    res = C.ids_in_pool(st, "r")
    assert not res.passed and res.metadata["missing"].value == 1
    assert [r.data for r in res.metadata["examples"].value.records] == [{"id": "nope", "source": "s"}]
    _selection(st, ["a", "a"], 2)
    assert not C.ids_in_pool(st, "r").passed  # duplicate
    st.write("selections", "r", pl.DataFrame({"id": ["a"], "source": ["other"]}))
    assert not C.ids_in_pool(st, "r").passed  # a source without a pool


def test_blocking_check_stops_scoring(tmp_path, shared_data, monkeypatch):
    """A failed rows-conserved check (ingestion that lost a row) keeps the source from being scored."""
    from dagster_support import slice_source

    import mmssr_core.ingest as ingest
    from mmssr_assets.definitions import build_definitions

    real = ingest.ingest_source

    def lossy(path, source, store, *a, **kw):
        result = real(path, source, store, *a, **kw)
        stats = store.read_json("ingest_stats", source)
        stats["read"] += 1  # one row vanished between reading and writing
        store.write_json("ingest_stats", source, stats)
        return result

    monkeypatch.setattr(ingest, "ingest_source", lossy)
    root, store_root = tmp_path / "sources", tmp_path / "store"
    slice_source(root, shared_data, "tabmwp_dev1k", 5, "t")
    defs = build_definitions(store_root=store_root, sources_root=root)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("sources", ["t"])
    res = defs.resolve_job_def("ingest_and_score").execute_in_process(
        partition_key="t", instance=instance, raise_on_error=False
    )
    assert not res.success
    evals = {e.check_name: e.passed for e in res.get_asset_check_evaluations()}
    assert evals == {"raw_pool_rows_conserved": False}
    mats = {e.asset_key.to_user_string() for e in res.get_asset_materialization_events()}
    assert mats == {"raw_pool"}
    assert not Store(store_root).exists("capability_scores", "t")
