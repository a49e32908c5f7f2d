"""Ingest at the edges: one record never costs the run, image files cost bounded memory, data: URLs and
misspelt placeholders get clear answers, every stored file is readable by others (0644 under umask 022)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import time
from urllib.parse import quote_from_bytes

import pytest
from ingest_support import (
    check_invariants,
    image_bytes,
    make_image,
    reason_at,
    sample,
    source_dir,
    write_jsonl,
)

from mmssr_core.ingest import ingest_source

DEEP = 100_000


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def _pool_text(records: list) -> list:
    return [r if isinstance(r, (bytes, str)) else json.dumps(r) for r in records]


def _write_list(path, parts: list) -> None:
    path.write_text("[\n" + ",\n".join(p if isinstance(p, str) else p.decode() for p in _pool_text(parts)) + "\n]")


def _deep_record(sid: str) -> str:
    good = json.dumps(sample(sid))
    return good[:-1] + ', "extra": ' + _deep(DEEP) + "}"


@pytest.mark.parametrize("container", ["jsonl", "json-load", "json-stream"])
def test_a_record_nested_100k_levels_is_quarantined_and_the_rest_ingested(tmp_path, store, container):
    root = source_dir(tmp_path)
    parts = [sample("a"), _deep_record("deep"), sample("c")]
    if container == "jsonl":
        pool = write_jsonl(root / "pool.jsonl", [p.encode() if isinstance(p, str) else p for p in parts])
    else:
        pool = root / "pool.json"
        _write_list(pool, parts)
    threshold = 1 if container == "json-stream" else 1 << 30
    result = ingest_source(pool, "deep", store, json_stream_threshold=threshold)
    raw, q = check_invariants(result, store)
    assert set(raw["id"]) == {"a", "c"}
    assert reason_at(q, 1) == "record_too_deep"


def test_deep_metadata_that_python_can_parse_is_still_bounded(tmp_path, store):
    root = source_dir(tmp_path)
    rec = sample("deepish")
    rec["extra"] = json.loads(_deep(200))
    pool = write_jsonl(root / "pool.jsonl", [sample("a"), rec])
    result = ingest_source(pool, "d", store)
    _, q = check_invariants(result, store)
    assert reason_at(q, 1) == "record_too_deep"


def test_huge_ids_and_huge_numbers_are_quarantined(tmp_path, store):
    root = source_dir(tmp_path)
    records = [sample("a"), sample("x" * 10_000_000), b'{"id": ' + b"9" * 5000 + b', "conversations": []}', sample("c")]
    pool = write_jsonl(root / "pool.jsonl", records)
    result = ingest_source(pool, "ids", store)
    raw, q = check_invariants(result, store)
    assert set(raw["id"]) == {"a", "c"}
    assert reason_at(q, 1) == "id_too_long"
    row = q.filter(q["position"] == 1).row(0, named=True)
    assert len(row["id"] or "") + len(row["message"]) < 2000  # the quarantine row does not carry 10 MB
    assert reason_at(q, 2) == "malformed_record"


@pytest.mark.parametrize("container", ["jsonl", "json-stream"])
def test_records_over_the_size_limit_are_skipped_unread(tmp_path, store, container):
    root = source_dir(tmp_path)
    big = sample("big", answer="y" * 50_000)
    parts = [sample("a"), big, sample("c")]
    if container == "jsonl":
        pool = write_jsonl(root / "pool.jsonl", parts)
    else:
        pool = root / "pool.json"
        _write_list(pool, parts)
    result = ingest_source(pool, "s", store, max_record_bytes=10_000, json_stream_threshold=1)
    raw, q = check_invariants(result, store)
    assert set(raw["id"]) == {"a", "c"}
    assert reason_at(q, 1) == "record_too_large"


def test_nan_and_infinity_in_metadata_are_stored_as_valid_json(tmp_path, store):
    root = source_dir(tmp_path)
    pool = root / "pool.jsonl"
    pool.write_text(json.dumps(sample("a"))[:-1] + ', "score": NaN, "more": [Infinity, 1.5, -Infinity]}\n')
    result = ingest_source(pool, "nan", store)
    raw, _ = check_invariants(result, store)

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    meta = json.loads(raw["metadata"][0], parse_constant=refuse)
    assert meta == {"score": None, "more": [None, 1.5, None]}
    assert store.read_json("ingest_stats", "nan")["metadata_non_finite_numbers"] == 3


def test_non_finite_numeric_ids_are_quarantined(tmp_path, store):
    root = source_dir(tmp_path)
    pool = root / "pool.jsonl"
    pool.write_text(
        json.dumps(sample("a")) + "\n" + json.dumps(sample("b"))[:-1].replace('"id": "b"', '"id": NaN') + "}\n"
    )
    result = ingest_source(pool, "nanid", store)
    raw, q = check_invariants(result, store)
    assert reason_at(q, 1) == "malformed_record" and "finite" in q["message"][0]


def test_a_3gb_image_file_is_refused_by_size_before_it_is_read(tmp_path, store):
    root = source_dir(tmp_path)
    huge = root / "img" / "huge.png"
    with open(huge, "wb") as fh:  # sparse: costs no disk, but reading it would cost 3 GB of memory
        fh.write(image_bytes("PNG"))
        fh.truncate(3 * 1024**3)
    pool = write_jsonl(root / "pool.jsonl", [sample("a"), sample("huge", image="img/huge.png")])
    t0 = time.perf_counter()
    result = ingest_source(pool, "big", store)
    assert time.perf_counter() - t0 < 20
    _, q = check_invariants(result, store)
    assert reason_at(q, 1) == "image_too_large"
    assert "3,221,225,472-byte file" in q["message"][0]


def test_the_streamed_hash_is_the_hash_of_the_file(tmp_path, store):
    from mmssr_core.ingest.hashing import canonical_text, content_hash

    root = tmp_path / "src"
    make_image(root / "img" / "a.png", "PNG", size=(300, 200), noise=True)
    pool = write_jsonl(root / "pool.jsonl", [sample("a")])
    result = ingest_source(pool, "h", store)
    raw, _ = check_invariants(result, store)
    digest = hashlib.sha256((root / "img" / "a.png").read_bytes()).hexdigest()
    convs = raw["conversations"][0].to_list()
    assert raw["content_hash"][0] == content_hash(canonical_text(None, convs), [digest])


def test_data_urls_are_decoded_in_every_spelling_never_taken_as_paths(tmp_path, store):
    root = source_dir(tmp_path)
    png = image_bytes("PNG", color=(1, 2, 3))
    records = [
        sample("upper", image="DATA:image/png;base64," + base64.b64encode(png).decode()),
        sample(
            "wrapped",
            image="data:image/png;base64,"
            + "\n".join(base64.b64encode(png).decode()[i : i + 60] for i in range(0, 400, 60)),
        ),
        sample("percent", image="data:image/png," + quote_from_bytes(png)),
        sample("text", image="data:text/plain,hello"),
        sample("nocomma", image="data:image/png;base64"),
    ]
    pool = write_jsonl(root / "pool.jsonl", records)
    result = ingest_source(pool, "urls", store)
    raw, q = check_invariants(result, store)
    by_id = {r["id"]: r for r in raw.iter_rows(named=True)}
    assert by_id["upper"]["image_formats"] == ["PNG"] and by_id["percent"]["image_formats"] == ["PNG"]
    assert by_id["upper"]["image_files"][0].startswith(str(store.root / "images" / "urls"))
    assert dict(zip(q["position"], q["reason"])) == {3: "image_unresolvable", 4: "image_unresolvable"}
    assert "not an image" in q.filter(q["position"] == 3)["message"][0]


@pytest.mark.parametrize("variant", ["<image >", "<IMAGE>", "< image/>", "<Image>\n"])
def test_misspelt_placeholders_are_quarantined_not_taken_as_text(tmp_path, store, variant):
    root = source_dir(tmp_path)
    bad = sample("bad", image="img/a.png")
    bad["conversations"][0]["value"] = variant + "What is shown?"
    text_only = sample("t", image=None, question="Explain the <IMAGE> tag.")
    pool = write_jsonl(root / "pool.jsonl", [sample("a"), bad, text_only])
    result = ingest_source(pool, "ph", store)
    raw, q = check_invariants(result, store)
    assert set(raw["id"]) == {"a"}
    assert reason_at(q, 1) == reason_at(q, 2) == "image_placeholder_variant"
    assert variant.strip() in q.filter(q["position"] == 1)["message"][0]
    assert not any("<image>\n" + variant in t for t in raw["conversations"].to_list().__repr__().split("'"))


def test_every_file_the_store_writes_is_0644(tmp_path, store):
    old = os.umask(0o022)
    try:
        root = source_dir(tmp_path)
        emb = sample("emb", image="data:image/png;base64," + base64.b64encode(image_bytes("PNG")).decode())
        pool = write_jsonl(root / "pool.jsonl", [sample("a"), emb, b"{bad"])
        ingest_source(pool, "modes", store)
        ingest_source(pool, "modes", store)  # a second generation, carrying nothing over
        store.write_json("fingerprints", "modes", {"x": 1})
    finally:
        os.umask(old)
    files = [p for p in store.root.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(files) >= 5
    modes = {str(p.relative_to(store.root)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {"0o644"}, modes
