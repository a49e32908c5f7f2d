"""The issue's end-to-end promise on the bundled demo: every subset the graph produces exports to a
folder that LLaVA's reader and LLaMA-Factory load after a move, and no conversation repeats.

The demo sources hold LLaMA-Factory's six demo conversations five times over (two formats, copies): the
30% subset used to carry each of them five times.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import dagster as dg
import pytest

from mmssr_core.testing.llava_readers import read_llava_next

REPO = Path(__file__).resolve().parent.parent
LF_PYTHON = Path(os.environ.get("MMSSR_LLAMAFACTORY_PYTHON") or REPO / ".venv-llamafactory" / "bin" / "python")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from mmssr_assets.materialize import materialize_all
    from mmssr_core.export import export_selection
    from mmssr_core.store import Store

    tmp = tmp_path_factory.mktemp("demo")
    summary = materialize_all(
        sources_root=REPO / "examples" / "sources", store_root=tmp / "store", instance=dg.DagsterInstance.ephemeral()
    )
    assert summary.ok, summary.failures
    st = Store(tmp / "store")
    for recipe in summary.subsets:
        export_selection(
            st.read("selections", recipe), st, "llava", tmp / "exports" / recipe / f"{recipe}.json", name=recipe
        )
    shutil.move(str(tmp / "exports"), str(tmp / "moved"))
    return {"summary": summary, "store": st, "moved": tmp / "moved", "tmp": tmp}


def _text(rec: dict) -> str:
    return " ".join(" ".join(t["value"].lower().split()) for t in rec["conversations"])


def test_every_subset_exports_without_repeats(demo):
    pool = demo["store"].scan("raw_pool").select("id", "source").collect()
    assert set(demo["summary"].subsets) == {"mmssr_5pct", "mmssr_10pct", "mmssr_30pct"}
    for recipe, sub in demo["summary"].subsets.items():
        folder = demo["moved"] / recipe
        records = json.loads((folder / f"{recipe}.json").read_text())
        assert len(records) == sub["selected"] == sub["requested"] == int(pool.height * int(recipe[6:-3]) / 100)
        texts = [_text(r) for r in records]
        assert len(set(texts)) == len(texts), recipe  # no conversation twice, in any source's wording
        assert read_llava_next(folder / f"{recipe}.json", folder) == len(records)


def test_every_subset_loads_in_llamafactory_after_the_move(demo):
    from mmssr_core.testing.llamafactory_probe import run_probe

    if not LF_PYTHON.is_file():
        pytest.skip(f"no LLaMA-Factory environment at {LF_PYTHON} (scripts/install.sh builds it; CI has it)")
    recipes = sorted(demo["summary"].subsets)
    answers = run_probe(
        str(LF_PYTHON), [{"dataset_dir": str(demo["moved"] / r), "dataset": r} for r in recipes], str(demo["tmp"])
    )
    for recipe, ans in zip(recipes, answers):
        assert "error" not in ans, ans.get("trace")
        rows = ans["rows"]
        assert len(rows) == demo["summary"].subsets[recipe]["selected"]
        assert all(r["roles"] and r["placeholders"] == len(r["images"]) and all(r["images_exist"]) for r in rows)


def test_the_report_says_what_was_left_out(demo):
    rep = demo["store"].read_json("reports", "mmssr_30pct")
    assert rep["dedup"]["removed"] == 24 and rep["dedup"]["groups"] == 6
    per_source = {r["source"]: r for r in rep["dedup"]["per_source"]}
    assert sum(r["removed"] for r in per_source.values()) == 24
    assert rep["dedup"]["deduplicated_pool_size"] == rep["pool_size"] - 24
