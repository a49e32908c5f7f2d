"""Ingestion of the real pools in ../shared/data and the vendored demo sources."""

from __future__ import annotations

import json

import polars as pl
import pytest
from ingest_support import check_invariants

from mmssr_core.ingest import discover_sources, ingest_source
from mmssr_core.schema import QUARANTINE_SCHEMA, RAW_POOL_SCHEMA


@pytest.mark.parametrize("name,expected", [("llava_bench", 90), ("math_vision_testmini", 304), ("tabmwp_dev1k", 1000)])
def test_llava_pools(shared_data, store, name, expected):
    folder = shared_data / name
    result = ingest_source(folder, name.replace("_", "-"), store)
    raw, q = check_invariants(result, store)
    assert result.input.endswith("pool.llava.json")  # preferred over the other *.json/*.jsonl files there
    assert (result.read, result.accepted, result.quarantined) == (expected, expected, 0)
    assert result.format == "llava" and result.container == "json"
    assert raw.schema == pl.Schema(RAW_POOL_SCHEMA)
    assert q.schema == pl.Schema(QUARANTINE_SCHEMA)
    original = json.loads((folder / "pool.llava.json").read_text())
    assert raw["id"].to_list() == [r["id"] for r in original]
    assert raw["images"].to_list() == [[r["image"]] for r in original]
    assert raw["conversations"].to_list() == [r["conversations"] for r in original]
    # every image was opened for real: positive sizes, files exist under the root
    assert raw["image_widths"].list.min().min() > 0 and raw["image_heights"].list.min().min() > 0
    for files in raw["image_files"].to_list()[:20]:
        assert all(f.startswith(str(folder.resolve())) for f in files)  # resolved: the root may be a symlink
    meta = json.loads(raw["metadata"][0])
    assert meta["data_source"] == original[0]["data_source"] and "conversations" not in meta
    assert not raw["text_only"].any()


def test_llava_bench_real_formats_sniffed(shared_data, store):
    result = ingest_source(shared_data / "llava_bench", "llava_bench", store)
    raw, _ = check_invariants(result, store)
    by_image = {
        r["images"][0]: (r["image_formats"][0], r["image_widths"][0], r["image_heights"][0])
        for r in raw.iter_rows(named=True)
    }
    # the .jpg names lie: 001 and 023 are WebP, 014 is PNG (1080 x 1277)
    assert by_image["wild_imgs/001.jpg"][0] == "WEBP"
    assert by_image["wild_imgs/023.jpg"][0] == "WEBP"
    assert by_image["wild_imgs/014.jpg"] == ("PNG", 1080, 1277)
    assert by_image["wild_imgs/002.jpg"][0] == "JPEG"
    assert result.images["extension_mismatch"] == 3
    # 90 samples over 54 distinct images: each decoded once
    assert result.images["decoded"] == len(by_image) == 54


def test_llamafactory_sharegpt(shared_data, store):
    result = ingest_source(shared_data / "llamafactory_mllm_demo/data/mllm_demo.json", "lf", store)
    raw, _ = check_invariants(result, store)
    assert (result.read, result.accepted, result.format) == (6, 6, "sharegpt")
    first = raw.row(0, named=True)
    assert first["conversations"][0] == {"from": "human", "value": "<image>Who are they?"}
    assert first["conversations"][1]["from"] == "gpt"
    assert first["images"] == ["mllm_demo_data/1.jpg", "mllm_demo_data/1.jpg"]  # same image twice
    assert first["image_widths"][0] == 300
    assert all(i.startswith("sha256:") for i in raw["id"])  # no ids in the input: derived from content
    # derived ids are stable across runs
    again = ingest_source(shared_data / "llamafactory_mllm_demo/data/mllm_demo.json", "lf2", store)
    assert store.read("raw_pool", "lf2")["id"].to_list() == raw["id"].to_list()
    assert again.accepted == 6


def test_llamafactory_openai_parts(shared_data, store):
    base = shared_data / "llamafactory_mllm_demo"
    result = ingest_source(base / "data/v1_multimodal_demo.jsonl", "lfo", store, image_root=base)
    raw, _ = check_invariants(result, store)
    assert result.read == 24  # the blank line is not a record
    assert (result.accepted, result.format, result.container) == (24, "openai", "jsonl")
    # six distinct conversations repeated four times
    assert result.duplicate_content == 18
    assert raw["duplicate_of"].null_count() == 6
    assert raw["id"].n_unique() == 24
    first = raw.row(0, named=True)
    assert first["conversations"][0]["value"] == "<image>Who are they?"
    assert first["conversations"][2]["value"] == "What are they doing?<image>"  # placeholder kept in place
    assert first["images"] == ["data/mllm_demo_data/1.jpg"] * 2
    dup = raw.filter(pl.col("duplicate_of").is_not_null()).row(0, named=True)
    assert dup["duplicate_of"] in set(raw["id"])
    # the same sample in the ShareGPT file has the same content hash (text + image bytes, not paths)
    ingest_source(base / "data/mllm_demo.json", "lf", store)
    sharegpt = store.read("raw_pool", "lf")
    assert set(sharegpt["content_hash"]) == set(raw["content_hash"])


def test_demo_sources_discovered_and_ingest(repo_root, store):
    sources = discover_sources(repo_root / "examples" / "sources")
    assert set(sources) >= {"mathv_testmini", "llamafactory_demo", "llamafactory_openai"}
    for name in ("mathv_testmini", "llamafactory_demo", "llamafactory_openai"):
        result = ingest_source(sources[name], name, store)
        check_invariants(result, store)
        assert result.quarantined == 0, (name, result.reasons)
    assert store.read("raw_pool", "mathv_testmini").height == 304
    assert store.read_json("ingest_stats", "llamafactory_openai")["duplicate_content"] == 18
    # the non-commercial sets are never vendored
    names = {p.name for p in (repo_root / "examples" / "sources").iterdir()}
    assert not any("llava_bench" in n or "tabmwp" in n for n in names)


def test_discover_sources_rules(tmp_path):
    from ingest_support import sample, write_jsonl

    write_jsonl(tmp_path / "good" / "pool.jsonl", [sample("a")])
    write_jsonl(tmp_path / "bad name!" / "pool.jsonl", [sample("a")])
    (tmp_path / "no_pool").mkdir()
    (tmp_path / "no_pool" / "README.md").write_text("x")
    write_jsonl(tmp_path / ".hidden" / "pool.jsonl", [sample("a")])
    (tmp_path / "loose.jsonl").write_text("{}\n")
    found = discover_sources(tmp_path)
    assert found == {"good": (tmp_path / "good").resolve()}
    from mmssr_core.ingest import IngestError

    with pytest.raises(IngestError):
        discover_sources(tmp_path, strict=True)
