"""Export a selection as LLaVA / ShareGPT (LLaMA-Factory) training data from the store's raw_pool."""

from __future__ import annotations

import json
import os
import shutil
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
            for k, r in enumerate(rel):
                p = img_root / r
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (4, 3), (pos * 40, 10, 10 + k)).save(p)
                files.append(str(p.resolve()))
            conv = [
                {"from": "human", "value": "<image>\n" * n_img + f"What is {sid}?"},
                {"from": "gpt", "value": f"It is {sid} from {source}."},
                {"from": "human", "value": "Sure?"},
                {"from": "gpt", "value": "Yes."},
            ]
            rows.append(
                {
                    "id": sid,
                    "source": source,
                    "position": pos,
                    "images": rel,
                    "image_files": files,
                    "image_formats": ["PNG"] * n_img,
                    "image_widths": [4] * n_img,
                    "image_heights": [3] * n_img,
                    "image_phashes": [None] * n_img,
                    "image_root": str(img_root.resolve()),
                    "conversations": conv,
                    "system": system,
                    "text_only": n_img == 0,
                    "content_hash": f"h-{source}-{sid}",
                    "duplicate_of": None,
                    "input_format": "llava",
                    "metadata": "{}",
                }
            )
        store.write("raw_pool", source, pl.DataFrame(rows, schema=RAW_POOL_SCHEMA))


def selection(pairs):
    return pl.DataFrame(
        {"id": [i for _, i in pairs], "source": [s for s, _ in pairs], "rank": list(range(1, len(pairs) + 1))}
    )


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
        assert not os.path.isabs(rel) and rel.startswith("images/")
        assert resolve(out, rel).is_file() and out.parent in resolve(out, rel).parents
        Image.open(resolve(out, rel)).verify()
    src = (tmp_path / "images" / "ocr" / "sub" / "a_0.png").read_bytes()
    assert resolve(out, oa["image"]).read_bytes() == src
    # coco/a and ocr/a hold the same pixels written the same way: one file in the folder
    assert oa["image"] == ca["image"] and summary["image_files"] == 3
    assert oa["conversations"][1] == {"from": "gpt", "value": "It is a from ocr."}
    assert c["conversations"][0]["value"].count("<image>") == 2
    assert b["system"] == "Be brief." and "system" not in c
    lf = json.loads(Path(summary["llamafactory_file"]).read_text())
    assert Path(summary["llamafactory_file"]).name == "llava.llamafactory.json"
    assert [len(r["images"]) for r in lf] == [2, 1, 0, 1] and lf[2]["messages"][0]["role"] == "system"
    info = json.loads((out.parent / "dataset_info.json").read_text())
    assert info == llamafactory_dataset_info("llava", "llava.llamafactory.json")


def test_sharegpt_export_jsonl_matches_llamafactory_layout(store, tmp_path):
    make_pool(store, tmp_path)
    out = tmp_path / "lf" / "data.jsonl"
    export_selection(selection([("coco", "b"), ("ocr", "z")]), store, "sharegpt", out, name="mmssr_10")
    lines = out.read_text().splitlines()
    assert len(lines) == 2
    b, z = (json.loads(x) for x in lines)
    assert b["messages"][0] == {"role": "system", "content": "Be brief."}
    assert [m["role"] for m in b["messages"][1:]] == ["user", "assistant", "user", "assistant"]
    assert b["images"] == []
    assert z["messages"][0]["content"].startswith("<image>\n") and len(z["images"]) == 1
    assert resolve(out, z["images"][0]).is_file()
    assert sum(m["content"].count("<image>") for m in z["messages"]) == len(z["images"])
    entry = json.loads((out.parent / "dataset_info.json").read_text())["mmssr_10"]
    assert entry["file_name"] == "data.jsonl" and entry["formatting"] == "sharegpt"
    assert entry["columns"] == {"messages": "messages", "images": "images"}
    assert entry["tags"]["user_tag"] == "user" and entry["tags"]["system_tag"] == "system"
    assert not list(out.parent.glob("*.llamafactory.*"))  # the ShareGPT file is LLaMA-Factory's own


@pytest.mark.parametrize("mode", ["copy", "hardlink", "symlink"])
def test_folder_modes_survive_moving_the_folder(store, tmp_path, mode):
    make_pool(store, tmp_path)
    out = tmp_path / "exp" / "train.json"
    summary = export_selection(selection([("coco", "c"), ("ocr", "z")]), store, "llava", out, images=mode)
    assert summary["image_files"] == 3 and summary["image_mode"] == mode
    files = sorted((tmp_path / "exp" / "images").rglob("*.png"))
    assert len(files) == 3
    if mode == "symlink":
        assert all(f.is_symlink() for f in files)
    elif mode == "hardlink":
        assert all(f.stat().st_nlink == 2 for f in files) and summary["hardlink_fallback_copies"] == 0
    else:
        assert all(f.stat().st_nlink == 1 and not f.is_symlink() for f in files)
    shutil.move(str(tmp_path / "exp"), str(tmp_path / "moved"))
    moved = tmp_path / "moved" / "train.json"
    for rec in json.loads(moved.read_text()):
        refs = rec["image"] if isinstance(rec["image"], list) else [rec["image"]]
        assert all((moved.parent / r).is_file() for r in refs)


def test_hardlink_falls_back_to_a_copy_for_private_files(store, tmp_path):
    make_pool(store, tmp_path)
    private = tmp_path / "images" / "ocr" / "sub" / "z_0.png"
    os.chmod(private, 0o600)
    out = tmp_path / "exp" / "train.json"
    summary = export_selection(selection([("ocr", "z")]), store, "sharegpt", out, images="hardlink")
    assert summary["hardlink_fallback_copies"] == 1
    placed = out.parent / json.loads(out.read_text())[0]["images"][0]
    assert placed.stat().st_nlink == 1 and placed.stat().st_mode & 0o777 == 0o644
    assert private.stat().st_mode & 0o777 == 0o600  # the source keeps its permissions


def test_absolute_and_prefix_paths(store, tmp_path):
    make_pool(store, tmp_path)
    sel = selection([("coco", "c")])
    out = tmp_path / "abs" / "train.json"
    export_selection(sel, store, "llava", out, images="absolute")
    refs = json.loads(out.read_text())[0]["image"]
    assert all(os.path.isabs(r) and os.path.isfile(r) for r in refs) and not (out.parent / "images").exists()
    out = tmp_path / "pre" / "train.json"
    export_selection(sel, store, "sharegpt", out, images="prefix", image_prefix="/mnt/data/")
    assert json.loads(out.read_text())[0]["images"] == ["/mnt/data/coco/sub/c_0.png", "/mnt/data/coco/sub/c_1.png"]
    with pytest.raises(ExportError, match="prefix"):
        export_selection(sel, store, "llava", out, images="copy", image_prefix="/x")
    with pytest.raises(ExportError, match="unknown image mode"):
        export_selection(sel, store, "llava", out, images="rsync")


def test_repeated_content_is_exported_once(store, tmp_path):
    make_pool(store, tmp_path)
    rows = store.read("raw_pool", "ocr").with_columns(
        pl.when(pl.col("id") == "z").then(pl.lit("h-coco-c")).otherwise(pl.col("content_hash")).alias("content_hash")
    )
    store.write("raw_pool", "ocr", rows)  # ocr/z now holds the same content as coco/c
    out = tmp_path / "o.json"
    summary = export_selection(selection([("coco", "c"), ("ocr", "a"), ("ocr", "z")]), store, "llava", out)
    assert summary["repeats_dropped"] == 1 and summary["samples"] == 2
    assert [(d["id"]) for d in json.loads(out.read_text())] == ["c", "a"]


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
    sel_path = tmp_path / "mmssr_5%.parquet"
    selection([("ocr", "z"), ("coco", "c")]).with_columns(
        pl.lit(None, pl.Utf8).alias("picked_by"), pl.lit(None, pl.Utf8).alias("bin")
    ).write_parquet(sel_path)
    rc = main(
        [
            "export",
            "--selection",
            str(sel_path),
            "--store",
            str(store.root),
            "--format",
            "sharegpt",
            "--to",
            str(tmp_path / "bundle"),
            "--jsonl",
            "--json",
        ]
    )
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["samples"] == 2 and summary["images"] == 3 and summary["dataset_name"] == "mmssr_5pct"
    out = tmp_path / "bundle" / "mmssr_5pct.jsonl"
    assert summary["path"] == str(out) and "dataset_dir: " + str(tmp_path / "bundle") in stdout
    info = json.loads((out.parent / "dataset_info.json").read_text())
    assert info["mmssr_5pct"]["file_name"] == "mmssr_5pct.jsonl"

    rc = main(
        [
            "export",
            "--selection",
            str(sel_path),
            "--store",
            str(store.root),
            "--out",
            str(tmp_path / "f" / "t.json"),
            "--dataset-name",
            "mine",
            "--image-prefix",
            "/data",
        ]
    )
    assert rc == 0
    assert json.loads((tmp_path / "f" / "dataset_info.json").read_text())["mine"]["file_name"] == "t.llamafactory.json"
    assert json.loads((tmp_path / "f" / "t.json").read_text())[0]["image"] == "/data/ocr/sub/z_0.png"
    capsys.readouterr()

    bad = tmp_path / "bad.parquet"
    selection([("ocr", "nope")]).write_parquet(bad)
    rc = main(
        [
            "export",
            "--selection",
            str(bad),
            "--store",
            str(store.root),
            "--format",
            "llava",
            "--out",
            str(tmp_path / "y.json"),
        ]
    )
    _, err = capsys.readouterr()
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "'nope'" in err
    rc = main(
        [
            "export",
            "--selection",
            str(sel_path),
            "--store",
            str(tmp_path / "nostore"),
            "--out",
            str(tmp_path / "y.json"),
        ]
    )
    _, err = capsys.readouterr()
    assert rc == 2 and "does not exist" in err
    rc = main(
        [
            "export",
            "--selection",
            str(sel_path),
            "--store",
            str(store.root),
            "--out",
            str(tmp_path / "y.json"),
            "--jsonl",
        ]
    )
    _, err = capsys.readouterr()
    assert rc == 2 and "--jsonl go with --to" in err
