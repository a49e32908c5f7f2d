"""Every format x pool shape loads in LLaMA-Factory's own code and LLaVA's readers, after the export
folder is moved elsewhere.

LLaMA-Factory 0.9.5 (PyPI) lives in its own environment, `.venv-llamafactory` (built by
scripts/install.sh; it pins another transformers than ours); the test runs its parser, loader and
converter there through a subprocess. Without that environment the LLaMA-Factory part is skipped.
"""

from __future__ import annotations

import os
import shutil
from itertools import product
from pathlib import Path

import polars as pl
import pytest

from mmssr_core.export import export_selection
from mmssr_core.ingest import ingest_source
from mmssr_core.testing.export_pools import SHAPES, SYSTEM, write_shape_source
from mmssr_core.testing.llava_readers import LlavaReadError, read_llava15, read_llava_next

REPO = Path(__file__).resolve().parent.parent
LF_PYTHON = Path(os.environ.get("MMSSR_LLAMAFACTORY_PYTHON") or REPO / ".venv-llamafactory" / "bin" / "python")
COMBOS = [
    (shape, system, fmt, suffix)
    for shape, system, fmt, suffix in product(SHAPES, (False, True), ("llava", "sharegpt"), (".json", ".jsonl"))
]


def _name(shape, system, fmt, suffix) -> str:
    return f"{shape}_{'sys' if system else 'nosys'}_{fmt}_{suffix[1:]}"


@pytest.fixture(scope="module")
def moved_exports(tmp_path_factory):
    """All combinations exported into one tree, which is then moved to another folder."""
    from mmssr_core.store import Store

    base = tmp_path_factory.mktemp("consumers")
    store = Store(base / "store")
    for shape, system in product(SHAPES, (False, True)):
        src = f"{shape}_{'sys' if system else 'nosys'}"
        ingest_source(write_shape_source(base / "sources" / src, shape, system), src, store)
    for shape, system, fmt, suffix in COMBOS:
        src = f"{shape}_{'sys' if system else 'nosys'}"
        selection = store.read("raw_pool", src).select("id", "source").with_row_index("rank", 1)
        name = _name(shape, system, fmt, suffix)
        export_selection(selection, store, fmt, base / "exports" / name / f"train{suffix}", name=name)
    moved = base / "elsewhere" / "exports"
    moved.parent.mkdir()
    shutil.move(str(base / "exports"), str(moved))
    shutil.rmtree(base / "sources")  # nothing may still point at the sources
    shutil.rmtree(base / "store")
    return moved


@pytest.mark.parametrize("shape", SHAPES)
def test_llava_readers_after_move(moved_exports, shape):
    for system, suffix in product((False, True), (".json", ".jsonl")):
        folder = moved_exports / _name(shape, system, "llava", suffix)
        train = folder / f"train{suffix}"
        assert read_llava_next(train, folder) == 4
        if suffix == ".json" and shape in ("text", "single"):
            assert read_llava15(train, folder) == 4
        elif suffix == ".json":
            with pytest.raises(LlavaReadError, match="one image per sample"):
                read_llava15(train, folder)


def test_llamafactory_loads_every_format_and_shape_after_move(moved_exports, tmp_path):
    from mmssr_core.testing.llamafactory_probe import run_probe

    if not LF_PYTHON.is_file():
        pytest.skip(f"no LLaMA-Factory environment at {LF_PYTHON} (scripts/install.sh builds it; CI has it)")
    requests = [{"dataset_dir": str(moved_exports / _name(*c)), "dataset": _name(*c)} for c in COMBOS]
    answers = run_probe(str(LF_PYTHON), requests, str(tmp_path))
    failures = [f"{a['dataset']}: {a['error']}" for a in answers if "error" in a]
    assert not failures, "\n".join(failures) + "\n" + next(a["trace"] for a in answers if "error" in a)
    for (shape, system, fmt, suffix), ans in zip(COMBOS, answers):
        name, rows = ans["dataset"], ans["rows"]
        assert len(rows) == 4, name
        for i, row in enumerate(rows):
            assert row["roles"] == ["user", "assistant", "user", "assistant"], (name, row)
            assert row["placeholders"] == len(row["images"]), (name, row)
            assert all(row["images_exist"]), (name, row)
            assert all(p.startswith(str(moved_exports)) for p in row["images"]), (name, row)
            assert row["system"] == (SYSTEM if system and i % 2 == 0 else ""), (name, row)
        n_images = [len(r["images"]) for r in rows]
        assert n_images == {"text": [0] * 4, "single": [1] * 4, "multi": [2, 3, 2, 2], "mixed": [0, 1, 3, 1]}[shape]


def test_files_are_world_readable_whatever_the_umask(tmp_path, store):
    old = os.umask(0o077)
    try:
        ingest_source(write_shape_source(tmp_path / "src", "mixed", True), "mixed", store)
        sel = store.read("raw_pool", "mixed").select("id", "source")
        for fmt in ("llava", "sharegpt"):
            export_selection(sel, store, fmt, tmp_path / "out" / "deep" / fmt / "train.json")
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(files) >= 2 * 3 + 1
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o644)}
    dirs = [p for p in (tmp_path / "out").rglob("*") if p.is_dir()] + [tmp_path / "out"]
    assert {oct(p.stat().st_mode & 0o777) for p in dirs} == {oct(0o755)}


def test_demo_pools_from_the_shared_data(tmp_path, store):
    """Real pools (LLaMA-Factory's demo + LLaVA-Bench): exported, moved, loaded by LLaVA-NeXT's reader."""
    from conftest import require_shared_data

    pools = [
        require_shared_data("llava_bench"),
        require_shared_data("llamafactory_mllm_demo", "data", "mllm_demo.json"),
    ]
    ingest_source(pools[0], "llava_bench", store)
    ingest_source(pools[1], "lf_demo", store, image_root=pools[1].parent)
    sel = store.scan("raw_pool").select("id", "source").collect()
    export_selection(sel, store, "llava", tmp_path / "exp" / "train.json")
    shutil.move(str(tmp_path / "exp"), str(tmp_path / "moved"))
    assert read_llava_next(tmp_path / "moved" / "train.json", tmp_path / "moved") == sel.height
    files = list((tmp_path / "moved" / "images").rglob("*.*"))
    distinct = store.scan("raw_pool").select(pl.col("image_files").explode()).collect().drop_nulls().n_unique()
    assert 0 < len(files) <= distinct  # one file per distinct content


def test_the_demo_training_yaml_reads_the_demo_export(tmp_path, store):
    """The committed LLaMA-Factory YAML parses with LLaMA-Factory's own argument classes and its dataset
    (the name the demo exports) loads from an export folder given as `dataset_dir=...`."""
    from mmssr_core.testing.llamafactory_probe import run_probe

    if not LF_PYTHON.is_file():
        pytest.skip(f"no LLaMA-Factory environment at {LF_PYTHON} (scripts/install.sh builds it; CI has it)")
    yaml_path = REPO / "examples" / "llamafactory" / "mmssr_10pct_qwen2vl_lora_sft.yaml"
    demo = (REPO / "scripts" / "demo.sh").read_text()
    assert "recipe=mmssr_10pct" in demo and yaml_path.relative_to(REPO).as_posix() in demo
    ingest_source(write_shape_source(tmp_path / "src", "mixed", True), "mixed", store)
    sel = store.read("raw_pool", "mixed").select("id", "source")
    export_selection(sel, store, "llava", tmp_path / "exports" / "mmssr_10pct" / "mmssr_10pct.json", name="mmssr_10pct")
    folder = tmp_path / "moved" / "mmssr_10pct"
    folder.parent.mkdir()
    shutil.move(str(tmp_path / "exports" / "mmssr_10pct"), str(folder))
    overrides = {"dataset_dir": str(folder), "bf16": False, "output_dir": str(tmp_path / "saves")}  # CPU here
    [ans] = run_probe(str(LF_PYTHON), [{"train_yaml": str(yaml_path), "overrides": overrides}], str(tmp_path))
    assert "error" not in ans, ans.get("trace")
    assert ans["template"] == "qwen2_vl" and ans["stage"] == "sft" and len(ans["rows"]) == 4
    assert all(all(r["images_exist"]) and r["placeholders"] == len(r["images"]) for r in ans["rows"])
