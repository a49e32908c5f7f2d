"""Format coverage: Parquet with embedded bytes, ShareGPT system prompts, OpenAI parts, the incremental
JSON parser, idempotent re-ingest and the per-run image cache."""

from __future__ import annotations

import base64
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingest_support import check_invariants, image_bytes, reason_at, sample, source_dir, write_json, write_jsonl

from mmssr_core.ingest import ingest_source
from mmssr_core.ingest.readers import JsonListReader, iter_json_array


def _conv(q, a):
    return [{"from": "human", "value": "<image>\n" + q}, {"from": "gpt", "value": a}]


def write_embedded_parquet(path, struct_images=True):
    import pyarrow as pa
    import pyarrow.parquet as pq

    png = image_bytes("PNG", color=(1, 2, 3))
    jpg = image_bytes("JPEG", size=(40, 20))
    rows = [
        ("p0", {"bytes": png, "path": "0001.png"}, _conv("q0", "a0")),
        ("p1", {"bytes": jpg, "path": "photo.jpg"}, _conv("q1", "a1")),
        ("p2", None, [{"from": "human", "value": "text only?"}, {"from": "gpt", "value": "yes"}]),
        ("p3", {"bytes": b"\x89PNG broken", "path": "bad.png"}, _conv("q3", "a3")),
        ("p4", {"bytes": png, "path": "again.png"}, _conv("q4", "a4")),  # same bytes as p0
    ]
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    if not struct_images:
        image_type = pa.binary()
        rows = [(i, (img or {}).get("bytes"), c) for i, img, c in rows]
    table = pa.table(
        {
            "id": pa.array([r[0] for r in rows]),
            "image": pa.array([r[1] for r in rows], type=image_type),
            "conversations": pa.array(
                [r[2] for r in rows], type=pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))
            ),
            "data_source": pa.array(["onevision_demo"] * len(rows)),
        }
    )
    pq.write_table(table, path, row_group_size=2)
    return png, jpg


@pytest.mark.parametrize("struct_images", [True, False])
def test_parquet_embedded_images(tmp_path, store, struct_images):
    pool = tmp_path / "ov" / "data.parquet"
    pool.parent.mkdir()
    png, jpg = write_embedded_parquet(pool, struct_images)
    result = ingest_source(pool.parent, "ov", store)
    raw, q = check_invariants(result, store)
    assert (result.container, result.format) == ("parquet", "parquet")
    assert raw["id"].to_list() == ["p0", "p1", "p2", "p4"]
    assert reason_at(q, 3) == "image_undecodable"
    images_dir = store.root / "images" / "ov"
    files = sorted(p.name for p in images_dir.iterdir())
    assert len(files) == 2  # content-addressed: p0 and p4 share one file
    p0 = raw.row(0, named=True)
    assert p0["image_root"] == str(images_dir)
    assert (images_dir / p0["images"][0]).read_bytes() == png
    assert p0["image_files"] == [str(images_dir / p0["images"][0])]
    assert p0["images"][0].endswith(".png") and raw.row(1, named=True)["images"][0].endswith(".jpg")
    assert raw.row(1, named=True)["image_widths"] == [40]
    assert raw.row(2, named=True)["text_only"]
    assert raw.row(3, named=True)["duplicate_of"] is None  # p4 differs from p0 in text
    meta = json.loads(p0["metadata"])
    assert meta["data_source"] == "onevision_demo"
    if struct_images:
        assert meta["embedded_image_names"] == ["0001.png"]
    assert all(input_format == "parquet" for input_format in raw["input_format"])


def test_sharegpt_system_and_openai_parts(tmp_path, store):
    root = source_dir(tmp_path)
    data_uri = "data:image/png;base64," + base64.b64encode(image_bytes("PNG")).decode()
    records = [
        {
            "id": "sys",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "<image>What colour?"},
                {"role": "assistant", "content": "Red."},
            ],
            "images": ["img/a.png"],
        },
        {
            "id": "parts",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Left "},
                        {"type": "image_url", "image_url": {"url": "img/a.png"}},
                        {"type": "text", "text": " right "},
                        {"type": "image_url", "image_url": {"url": "img/b.jpg"}},
                    ],
                },
                {"role": "assistant", "content": [{"type": "text", "text": "Two squares."}]},
            ],
        },
        {
            "id": "uri",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": data_uri}},
                        {"type": "text", "text": "And this?"},
                    ],
                },
                {"role": "assistant", "content": "Green."},
            ],
        },
        {
            "id": "audio",
            "messages": [
                {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
                {"role": "assistant", "content": "?"},
            ],
        },
        {
            "id": "sys2",
            "system": "Top-level system.",
            "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}],
            "extra": {"k": [1, 2]},
        },
    ]
    pool = write_jsonl(root / "pool.jsonl", records)
    result = ingest_source(pool, "mixed", store)
    raw, q = check_invariants(result, store)
    rows = {r["id"]: r for r in raw.iter_rows(named=True)}
    assert rows["sys"]["system"] == "Be brief."
    assert rows["sys"]["conversations"] == [
        {"from": "human", "value": "<image>What colour?"},
        {"from": "gpt", "value": "Red."},
    ]
    assert rows["sys"]["input_format"] == "sharegpt"
    assert rows["parts"]["conversations"][0]["value"] == "Left <image> right <image>"
    assert rows["parts"]["images"] == ["img/a.png", "img/b.jpg"] and rows["parts"]["input_format"] == "openai"
    assert rows["uri"]["image_formats"] == ["PNG"]
    assert (store.root / "images" / "mixed" / rows["uri"]["images"][0]).exists()
    assert reason_at(q, 3) == "malformed_record" and "input_audio" in q["message"][0]
    assert rows["sys2"]["system"] == "Top-level system."
    assert json.loads(rows["sys2"]["metadata"]) == {"extra": {"k": [1, 2]}}


def test_idempotent_reingest(tmp_path, store):
    root = source_dir(tmp_path)
    records = [sample(f"s{i}", image="img/a.png" if i % 2 else "img/b.jpg", answer=f"a{i}") for i in range(50)]
    records[7] = sample("s7", image="img/missing.png")
    pool = write_json(root / "pool.json", records)
    first = ingest_source(pool, "idem", store)
    raw1 = store.path("raw_pool", "idem").read_bytes()
    q1 = store.path("quarantine", "idem").read_bytes()
    stats1 = store.read_json("ingest_stats", "idem")
    second = ingest_source(pool, "idem", store)
    assert store.path("raw_pool", "idem").read_bytes() == raw1
    assert store.path("quarantine", "idem").read_bytes() == q1
    stats2 = store.read_json("ingest_stats", "idem")
    stats1.pop("seconds"), stats2.pop("seconds")
    assert stats1 == stats2
    assert first.to_dict() | {"seconds": 0} == second.to_dict() | {"seconds": 0}
    # a changed input replaces the partition (no stale rows)
    write_json(root / "pool.json", records[:10])
    ingest_source(pool, "idem", store)
    assert store.read("raw_pool", "idem").height == 9
    assert sorted(p.name for p in store.table_dir("raw_pool").iterdir()) == ["idem.parquet"]


def test_shared_images_checked_once(tmp_path, store):
    root = source_dir(tmp_path)
    records = [sample(f"s{i}", image=["img/a.png", "img/b.jpg"][i % 2], answer=f"a{i}") for i in range(3000)]
    pool = write_jsonl(root / "pool.jsonl", records)
    result = ingest_source(pool, "shared", store, batch_rows=500)
    raw, _ = check_invariants(result, store)
    assert result.accepted == 3000
    assert result.images["decoded"] == 2
    assert raw["position"].to_list() == list(range(3000))


def test_forced_format(tmp_path, store):
    root = source_dir(tmp_path)
    sharegpt = {"id": "m", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    pool = write_jsonl(root / "pool.jsonl", [sample("a"), sharegpt])
    result = ingest_source(pool, "forced", store, fmt="llava")
    _, q = check_invariants(result, store)
    assert reason_at(q, 1) == "missing_conversations"
    result = ingest_source(pool, "forced", store, fmt="sharegpt")
    assert result.accepted == 2


def test_large_json_list_uses_incremental_parser(tmp_path, store):
    root = source_dir(tmp_path)
    records = [sample(f"s{i}", answer="é" * (i % 50) + f" {i}") for i in range(2000)]
    pool = write_json(root / "pool.json", records)
    assert pool.stat().st_size > 200_000
    result = ingest_source(pool, "big", store, json_stream_threshold=100_000)
    raw, _ = check_invariants(result, store)
    assert store.read_json("ingest_stats", "big")["json_strategy"] == "incremental"
    assert raw["id"].to_list() == [f"s{i}" for i in range(2000)]
    assert raw["conversations"].to_list() == [r["conversations"] for r in records]
    # and the same file under the threshold is loaded at once, with the same result
    ingest_source(pool, "small", store)
    assert store.read_json("ingest_stats", "small")["json_strategy"] == "load"
    assert store.read("raw_pool", "small").drop("source").equals(raw.drop("source"))


def test_incremental_reader_tiny_chunks(tmp_path):
    items = [{"a": i, "s": 'x\\"y' * i, "n": [1.5, None, True]} for i in range(40)] + [12345, "tail"]
    path = tmp_path / "p.json"
    path.write_text(" \n" + json.dumps(items, indent=2) + "\n ")
    reader = JsonListReader(path, json_stream_threshold=0, chunk_chars=7)
    got = [r.data for r in reader]
    assert reader.strategy == "incremental" and got == items


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(json_values, max_size=8),
    chunk=st.integers(1, 64),
    indent=st.sampled_from([None, 1]),
    cut=st.floats(0, 1),
)
def test_iter_json_array_matches_json(items, chunk, indent, cut):
    text = json.dumps(items, indent=indent)
    parsed = list(iter_json_array(io.StringIO(text), chunk))
    assert [p[1] for p in parsed] == items and all(p[3] is None for p in parsed)
    # any truncation keeps a prefix of the elements and ends with exactly one error
    short = text[: int(len(text) * cut)]
    if short != text:
        parsed = list(iter_json_array(io.StringIO(short), chunk))
        good = [p[1] for p in parsed if p[3] is None]
        assert good[:-1] == items[: max(0, len(good) - 1)]
        if good and good[-1] != items[len(good) - 1]:
            # only a bare number cut at the end of the file is indistinguishable from a shorter one
            assert isinstance(items[len(good) - 1], (int, float)) and not isinstance(items[len(good) - 1], bool)
        assert parsed[-1][3] is not None and parsed[-1][3][0] in ("truncated_input", "malformed_record")
