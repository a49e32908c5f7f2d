"""Export a selection as LLaVA / ShareGPT (LLaMA-Factory) training data from the store's raw_pool."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from mmssr_core.cli import main
from mmssr_core.export import ExportError, export_selection, llamafactory_dataset_info
from mmssr_core.schema import RAW_POOL_SCHEMA


def make_pool(store, root: Path) -> None:
    """Two sources written the way ingestion writes raw_pool (one Parquet per source), real tiny images."""
    for source, specs in {
        "coco": [("a", 1, None), ("b", 0, "Be brief."), ("c", 2, None)],
        "ocr": [("a", 1, None), ("z", 1, None)],
    }.items():
        img_root = root / "images" / source
        rows = []
        for pos, (sid, n_img, system) in enumerate(specs):
            rel = [f"sub/{sid}_{k}.png" for k in range(n_img)]
            files = []
            for r in rel:
                p = img_root / r
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (4, 3), (pos * 40, 10, 10)).save(p)
                files.append(str(p.resolve()))
            conv = [
                {"from": "human", "value": "<image>\n" * n_img + f"What is {sid}?"},
                {"from": "gpt", "value": f"It is {sid} from {source}."},
                {"from": "human", "value": "Sure?"},
                {"from": "gpt", "value": "Yes."},
            ]
            rows.append({
                "id": sid, "source": source, "position": pos, "images": rel, "image_files": files,
                "image_formats": ["PNG"] * n_img, "image_widths": [4] * n_img, "image_heights": [3] * n_img,
                "image_root": str(img_root.resolve()), "conversations": conv, "system": system,
                "text_only": n_img == 0, "content_hash": f"h-{source}-{sid}", "duplicate_of": None,
                "input_format": "llava", "metadata": "{}",
            })
        store.write("raw_pool", source, pl.DataFrame(rows, schema=RAW_POOL_SCHEMA))


def selection(pairs):
    return pl.DataFrame({"id": [i for _, i in pairs], "source": [s for s, _ in pairs],
                         "rank": list(range(1, len(pairs) + 1))})


def resolve(out: Path, rel: str) -> Path:
    return (out.parent / rel).resolve()


def test_llava_export_order_paths_and_conversations(store, tmp_path):
    make_pool(store, tmp_path)
    out = tmp_path / "train" / "nested" / "llava.json"
    sel = selection([("coco", "c"), ("ocr", "a"), ("coco", "b"), ("coco", "a")])
    summary = export_selection(sel, store, "llava", out)
    assert summary["samples"] == 4 and summary["images"] == 4 and summary["format"] == "llava"
    data = json.loads(out.read_text())
    assert [d["id"] for d in data] == ["c", "a", "b", "a"]
    c, oa, b, ca = data
    assert isinstance(c["image"], list) and len(c["image"]) == 2
    assert isinstance(oa["image"], str) and "image" not in b
    for rel in c["image"] + [oa["image"], ca["image"]]:
        assert not os.path.isabs(rel) and resolve(out, rel).is_file()
        Image.open(resolve(out, rel)).verify()
    assert resolve(out, oa["image"]) == (tmp_path / "images" / "ocr" / "sub" / "a_0.png").resolve()
    assert oa["conversations"][1] == {"from": "gpt", "value": "It is a from ocr."}
    assert c["conversations"][0]["value"].count("<image>") == 2
    assert b["system"] == "Be brief." and "system" not in c


def test_sharegpt_export_jsonl_matches_llamafactory_layout(store, tmp_path):
    make_pool(store, tmp_path)
    out = tmp_path / "lf" / "data.jsonl"
    export_selection(selection([("coco", "b"), ("ocr", "z")]), store, "sharegpt", out)
    lines = out.read_text().splitlines()
    assert len(lines) == 2
    b, z = (json.loads(x) for x in lines)
    assert b["messages"][0] == {"role": "system", "content": "Be brief."}
    assert [m["role"] for m in b["messages"][1:]] == ["user", "assistant", "user", "assistant"]
    assert b["images"] == []
    assert z["messages"][0]["content"].startswith("<image>\n") and len(z["images"]) == 1
    assert resolve(out, z["images"][0]).is_file()
    n_tokens = sum(m["content"].count("<image>") for m in z["messages"])
    assert n_tokens == len(z["images"])
    info = llamafactory_dataset_info("mmssr_10", "data.jsonl", "sharegpt")
    entry = info["mmssr_10"]
    assert entry["file_name"] == "data.jsonl" and entry["formatting"] == "sharegpt"
    assert entry["columns"] == {"messages": "messages", "images": "images"}
    assert entry["tags"]["user_tag"] == "user" and entry["tags"]["system_tag"] == "system"
    assert llamafactory_dataset_info("x", "f.json", "llava")["x"]["tags"]["role_tag"] == "from"


def test_unknown_ids_are_refused_and_named(store, tmp_path):
    make_pool(store, tmp_path)
    pairs = [("coco", "a")] + [("coco", f"ghost{i}") for i in range(12)] + [("ocr", "c")]
    with pytest.raises(ExportError) as exc:
        export_selection(selection(pairs), store, "llava", tmp_path / "x.json")
    msg = str(exc.value)
    assert "13 selected id(s) are not in the store" in msg
    assert "'ghost0' (source 'coco')" in msg and "'ghost9'" in msg and "and 3 more" in msg
    assert not (tmp_path / "x.json").exists()


def test_ids_without_source(store, tmp_path):
    make_pool(store, tmp_path)
    out = tmp_path / "o.json"
    export_selection(pl.DataFrame({"id": ["z", "c"]}), store, "llava", out)
    assert [d["id"] for d in json.loads(out.read_text())] == ["z", "c"]
    with pytest.raises(ExportError, match="several sources"):
        export_selection(pl.DataFrame({"id": ["a"]}), store, "llava", out)


def test_export_cli(store, tmp_path, capsys):
    make_pool(store, tmp_path)
    sel_path = tmp_path / "mmssr_5.parquet"
    selection([("ocr", "z"), ("coco", "c")]).with_columns(
        pl.lit(None, pl.Utf8).alias("picked_by"), pl.lit(None, pl.Utf8).alias("bin")).write_parquet(sel_path)
    out = tmp_path / "export" / "train.json"
    rc = main(["export", "--selection", str(sel_path), "--store", str(store.root), "--format", "sharegpt",
               "--out", str(out), "--dataset-name", "mmssr_5", "--json"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["samples"] == 2 and summary["images"] == 3
    info = json.loads((out.parent / "dataset_info.json").read_text())
    assert info["mmssr_5"]["file_name"] == "train.json"
    data = json.loads(out.read_text())
    assert all(resolve(out, p).is_file() for d in data for p in d["images"])

    bad = tmp_path / "bad.parquet"
    selection([("ocr", "nope")]).write_parquet(bad)
    rc = main(["export", "--selection", str(bad), "--store", str(store.root), "--format", "llava",
               "--out", str(tmp_path / "y.json")])
    _, err = capsys.readouterr()
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "'nope'" in err
    rc = main(["export", "--selection", str(sel_path), "--store", str(tmp_path / "nostore"), "--out",
               str(tmp_path / "y.json")])
    _, err = capsys.readouterr()
    assert rc == 2 and "does not exist" in err
