"""A corpus of bad inputs: each bad sample is quarantined with its reason, its neighbours survive."""

from __future__ import annotations

import json
import os
import time

import pytest
from ingest_support import (
    check_invariants,
    make_image,
    png_header_only,
    reason_at,
    sample,
    source_dir,
    write_json,
    write_jsonl,
)

from mmssr_core.ingest import IngestError, ingest_source


def run(tmp_path, store, records, *, container="jsonl", **kw):
    root = source_dir(tmp_path)
    writer = write_jsonl if container == "jsonl" else write_json
    pool = writer(root / ("pool.jsonl" if container == "jsonl" else "pool.json"), records)
    result = ingest_source(pool, "bad", store, **kw)
    raw, q = check_invariants(result, store)
    return result, raw, q


def assert_single_bad(result, raw, q, position, reason, good_ids):
    assert reason_at(q, position) == reason
    assert result.reasons == {reason: 1}
    assert set(raw["id"]) == set(good_ids)
    msg = q["message"][0]
    assert msg and ("line" in msg or "element" in msg)  # names the sample


def test_non_utf8_line(tmp_path, store):
    bad = json.dumps(sample("b")).encode().replace(b"What", b"Wh\xff\xfet")
    result, raw, q = run(tmp_path, store, [sample("a"), bad, sample("c")])
    assert_single_bad(result, raw, q, 1, "bad_encoding", {"a", "c"})


def test_bad_json_line_and_blank_lines(tmp_path, store):
    records = [sample("a"), b"", b"   ", b'{"id": "b", "conversations": [', sample("c"), b"[1, 2]"]
    result, raw, q = run(tmp_path, store, records)
    assert result.read == 4  # blank lines are not records
    assert reason_at(q, 1) == "malformed_record" and "line 4" in q.filter(q["position"] == 1)["message"][0]
    assert reason_at(q, 3) == "malformed_record"  # a list, not an object
    assert set(raw["id"]) == {"a", "c"}


def test_non_utf8_in_json_list(tmp_path, store):
    root = source_dir(tmp_path)
    text = json.dumps([sample("a"), sample("b"), sample("c")]).encode().replace(b"A red square.", b"A r\xe9d", 1)
    pool = root / "pool.json"
    pool.write_bytes(text)
    result = ingest_source(pool, "bad", store)
    raw, q = check_invariants(result, store)
    assert reason_at(q, 0) == "bad_encoding"
    assert set(raw["id"]) == {"b", "c"}


@pytest.mark.parametrize("threshold", [None, 0])
def test_truncated_json_list(tmp_path, store, threshold):
    root = source_dir(tmp_path)
    records = [sample(f"s{i}") for i in range(6)]
    text = json.dumps(records, indent=1)
    cut = text.index('"s4"') + 2  # inside element 4
    pool = root / "pool.json"
    pool.write_text(text[:cut])
    kw = {} if threshold is None else {"json_stream_threshold": threshold}
    result = ingest_source(pool, "bad", store, **kw)
    raw, q = check_invariants(result, store)
    assert raw["id"].to_list() == ["s0", "s1", "s2", "s3"]  # everything before the break is kept
    assert reason_at(q, 4) == "truncated_input"
    assert "truncated" in q["message"][0] and "rest of the file" in q["message"][0]
    assert store.read_json("ingest_stats", "bad")["json_strategy"] == "incremental"


def test_syntax_error_mid_json_list(tmp_path, store):
    root = source_dir(tmp_path)
    good = [json.dumps(sample(f"s{i}")) for i in range(4)]
    pool = root / "pool.json"
    pool.write_text("[" + ",".join(good[:2]) + ', {"id": "x",, "y": 1}, ' + ",".join(good[2:]) + "]")
    result = ingest_source(pool, "bad", store)
    raw, q = check_invariants(result, store)
    assert raw["id"].to_list() == ["s0", "s1"]
    assert reason_at(q, 2) == "malformed_record" and "element 2" in q["message"][0]


def test_missing_and_zero_byte_images(tmp_path, store):
    root = source_dir(tmp_path)
    (root / "img" / "empty.png").write_bytes(b"")
    records = [
        sample("a"),
        sample("m", image="img/nope.png"),
        sample("b", image="img/b.jpg"),
        sample("z", image="img/empty.png"),
        sample("c"),
    ]
    result, raw, q = run(tmp_path, store, records)
    assert reason_at(q, 1) == "image_missing" and "img/nope.png" in q["message"][0]
    assert reason_at(q, 3) == "image_empty"
    assert set(raw["id"]) == {"a", "b", "c"}
    assert q.filter(q["position"] == 1)["id"][0] == "m"  # the id is kept in the quarantine


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image(tmp_path, store, fmt):
    root = source_dir(tmp_path)
    full = make_image(root / "img" / f"full.{fmt.lower()}", fmt, size=(128, 96), noise=True)
    data = full.read_bytes()
    (root / "img" / f"cut.{fmt.lower()}").write_bytes(data[: len(data) * 2 // 3])
    (root / "img" / "junk.png").write_bytes(b"this is not an image at all")
    records = [
        sample("a"),
        sample("t", image=f"img/cut.{fmt.lower()}"),
        sample("f", image=f"img/full.{fmt.lower()}"),
        sample("j", image="img/junk.png"),
    ]
    result, raw, q = run(tmp_path, store, records)
    assert reason_at(q, 1) == "image_undecodable"
    assert reason_at(q, 3) == "image_undecodable"
    assert set(raw["id"]) == {"a", "f"}
    assert raw.filter(raw["id"] == "f")["image_widths"][0].to_list() == [128]


def test_huge_declared_dimensions_rejected_from_header(tmp_path, store):
    root = source_dir(tmp_path)
    (root / "img" / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    records = [sample("a"), sample("bomb", image="img/bomb.png"), sample("c")]
    t0 = time.perf_counter()
    result, raw, q = run(tmp_path, store, records)
    assert time.perf_counter() - t0 < 10
    assert_single_bad(result, raw, q, 1, "image_too_large", {"a", "c"})


def test_pixel_bound_checked_before_decoding(tmp_path, store):
    root = source_dir(tmp_path)
    # 5000 x 5000 declared, no pixel data at all: only a header check can call it "too large"
    (root / "img" / "big.png").write_bytes(png_header_only(5000, 5000))
    records = [sample("a"), sample("big", image="img/big.png")]
    result, raw, q = run(tmp_path, store, records, max_pixels=1_000_000)
    assert reason_at(q, 1) == "image_too_large" and "5000x5000" in q["message"][0]
    # with the default bound the same file is judged on its (missing) pixel data instead
    result, raw, q = run(tmp_path, store, records)
    assert reason_at(q, 1) == "image_undecodable"


def test_paths_escaping_the_root(tmp_path, store):
    root = source_dir(tmp_path)
    outside = make_image(tmp_path / "outside" / "secret.png")
    os.symlink(outside, root / "img" / "link.png")
    os.symlink(tmp_path / "outside", root / "img" / "linkdir")
    records = [
        sample("a"),
        sample("dotdot", image="../outside/secret.png"),
        sample("abs", image=str(outside)),
        sample("sym", image="img/link.png"),
        sample("symdir", image="img/linkdir/secret.png"),
        sample("sneaky", image="img/../../outside/secret.png"),
        sample("absin", image=str(root / "img" / "b.jpg")),  # absolute but inside: fine
        sample("url", image="https://example.com/x.png"),
        sample("c"),
    ]
    result, raw, q = run(tmp_path, store, records)
    for pos in (1, 2, 3, 4, 5):
        assert reason_at(q, pos) == "image_path_escapes_root", q.row(pos - 1)
    assert reason_at(q, 7) == "image_unresolvable"
    assert set(raw["id"]) == {"a", "absin", "c"}


def test_duplicate_ids_and_duplicate_content(tmp_path, store):
    records = [sample("a"), sample("a", answer="Different."), sample("b"), sample(7), sample("7", answer="x")]
    result, raw, q = run(tmp_path, store, records)
    assert reason_at(q, 1) == "duplicate_id" and "position 0" in q["message"][0]
    assert reason_at(q, 4) == "duplicate_id"  # 7 and "7" are the same id once stringified
    assert raw["id"].to_list() == ["a", "b", "7"]
    # b and 7 repeat a's content: accepted, pointing at the first
    assert raw["duplicate_of"].to_list() == [None, "a", "a"]
    assert result.duplicate_content == 2


def test_conversation_problems(tmp_path, store):
    records = [
        sample("a"),
        {"id": "empty", "image": "img/a.png", "conversations": []},
        {"id": "none", "image": "img/a.png"},
        {"id": "role", "conversations": [{"from": "human", "value": "hi"}, {"from": "tool", "value": "x"}]},
        {"id": "order", "conversations": [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "x"}]},
        {"id": "blank", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "  "}]},
        {"id": "unanswered", "conversations": [{"from": "human", "value": "hi"}]},
        {"id": "types", "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "x"}]},
        sample("c"),
    ]
    result, raw, q = run(tmp_path, store, records)
    assert [reason_at(q, p) for p in range(1, 8)] == [
        "missing_conversations",
        "missing_conversations",
        "unknown_role",
        "bad_turn_order",
        "empty_turn",
        "bad_turn_order",
        "malformed_record",
    ]
    assert set(raw["id"]) == {"a", "c"}
    assert "'tool'" in q.filter(q["id"] == "role")["message"][0]


def test_placeholder_mismatch_and_text_only(tmp_path, store):
    two_imgs_one_tag = sample("two", image=["img/a.png", "img/b.jpg"])
    tag_no_image = sample("tag", image=None, question="<image>\nWhat?")
    no_tag = {
        "id": "notag",
        "image": ["img/a.png", "img/b.jpg"],
        "conversations": [{"from": "human", "value": "Compare."}, {"from": "gpt", "value": "Same."}],
    }
    text = sample("text", image=None)
    records = [sample("a"), two_imgs_one_tag, tag_no_image, no_tag, text]
    result, raw, q = run(tmp_path, store, records)
    assert reason_at(q, 1) == "image_placeholder_mismatch" and "1 <image> placeholder(s) for 2" in q["message"][0]
    assert reason_at(q, 2) == "image_placeholder_mismatch"
    notag = raw.filter(raw["id"] == "notag").row(0, named=True)
    assert notag["conversations"][0]["value"] == "<image>\n<image>\nCompare."  # LLaVA convention
    assert notag["image_formats"] == ["PNG", "JPEG"]
    t = raw.filter(raw["id"] == "text").row(0, named=True)
    assert t["text_only"] and t["images"] == [] and result.text_only == 1


def test_five_megabyte_turn(tmp_path, store):
    big = sample("big", answer="x" * 5_000_000)
    result, raw, q = run(tmp_path, store, [sample("a"), big, sample("c", answer="fine")])
    assert_single_bad(result, raw, q, 1, "turn_too_long", {"a", "c"})
    assert "5,000,000 characters" in q["message"][0]
    # a raised limit accepts it (the limit is configuration, not a crash)
    result, raw, q = run(tmp_path, store, [sample("a"), big], max_turn_chars=6_000_000)
    assert result.accepted == 2 and len(raw.filter(raw["id"] == "big")["conversations"][0][1]["value"]) == 5_000_000


def test_five_megabyte_turn_streamed_json(tmp_path, store):
    """A huge element straddles many parser chunks of the incremental JSON path."""
    big = sample("big", answer="y" * 5_000_000)
    result, raw, q = run(
        tmp_path,
        store,
        [sample("a"), big, sample("c", answer="ok")],
        container="json",
        json_stream_threshold=0,
        max_turn_chars=10_000_000,
    )
    assert raw["id"].to_list() == ["a", "big", "c"]


def test_unusable_inputs_raise(tmp_path, store):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "text.json").write_text("hello")
    (tmp_path / "obj.json").write_text('{\n "data": []\n}')
    (tmp_path / "fake.parquet").write_bytes(b"PAR1 not really")
    for name in ("empty.jsonl", "text.json", "obj.json", "fake.parquet", "missing.json"):
        with pytest.raises(IngestError):
            ingest_source(tmp_path / name, "x", store)
    folder = tmp_path / "two"
    write_jsonl(folder / "a.jsonl", [sample("a")])
    write_jsonl(folder / "b.jsonl", [sample("b")])
    with pytest.raises(IngestError, match="a.jsonl, b.jsonl"):
        ingest_source(folder, "x", store)
    with pytest.raises(IngestError, match="invalid source name"):
        ingest_source(folder / "a.jsonl", "../x", store)
    # a failed run leaves no partition and no temp file behind
    assert store.partitions("raw_pool") == []
    assert not any(p.name.endswith(".tmp") for p in store.root.rglob("*"))
