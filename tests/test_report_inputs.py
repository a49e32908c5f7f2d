"""Report inputs gathered in one place: the Dagster asset and `mmssr report` give the same report for one store."""

from __future__ import annotations

import json

import polars as pl
import pytest
from test_report import CAPS, TAX, make_pool, selection_of

from mmssr_core.recipes import Recipe
from mmssr_core.report_inputs import ReportInputsError, gather_report_inputs
from mmssr_core.store import Store

RECIPE = Recipe("ocr_q", budget=10, capabilities=("ocr", "spatial"), threshold=1.0, seed=7, rank="expected")
# what differs between two builds of the same report: when and where it was written
VOLATILE = ("generated_at", "html_path", "plots")


@pytest.fixture
def filled(tmp_path):
    """A store as the graph leaves it: scores, raw pools, failures of one source, a selection with its record
    (including a duplicates summary), and a stray failures partition of a source that is not scored."""
    scores, raw = make_pool(tmp_path)
    st = Store(tmp_path / "store")
    st.write("scores", "pool", scores)
    for src in ("a", "b"):
        st.write("raw_pool", src, raw.filter(pl.col("source") == src))
    fail = pl.DataFrame(
        {
            "id": ["s21"],
            "source": ["b"],
            "content_hash": ["h21"],
            "target": ["ocr"],
            "reason": ["timeout"],
            "message": ["slow"],
            "scorer": ["test"],
        }
    )
    st.write("score_failures", "b", fail)
    st.write("score_failures", "gone", fail.with_columns(pl.lit("gone").alias("source")))
    sel = selection_of(scores, [f"s{i:02d}" for i in range(10)])
    dedup = {
        "deduplicated_pool_size": 38,
        "groups": 1,
        "exact_groups": 1,
        "near_groups": 0,
        "removed": 2,
        "per_source": [{"source": "a", "groups": 1, "in_groups": 3, "removed": 2}],
        "examples": [],
    }
    with st.transaction("selection", RECIPE.name) as tx:
        tx.write("selections", sel)
        tx.write_json("selections", {"recipe": RECIPE.to_dict(), "rank": RECIPE.rank, "dedup": dedup})
    tax = tmp_path / "tax.json"
    tax.write_text(
        json.dumps({"extend": False, "capabilities": [{"key": k} for k in CAPS], "styles": list(TAX.styles)})
    )
    return st, tax


def _stable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in VOLATILE}


def test_gathered_inputs_follow_the_recorded_recipe(filled):
    st, _ = filled
    inputs = gather_report_inputs(st, RECIPE.name)
    assert (inputs.seed, inputs.budget, inputs.threshold, inputs.rank) == (7, 10, 1.0, "expected")
    assert inputs.capabilities == ["ocr", "spatial"] and inputs.recipe == RECIPE.to_dict()
    assert inputs.dedup["removed"] == 2 and inputs.pool.height == 40
    assert inputs.failures["source"].to_list() == ["b"]  # the unscored source's failures are not counted
    # an explicit recipe wins over the record; options given later win over both
    other = gather_report_inputs(st, RECIPE.name, recipe=Recipe("ocr_q", budget=10, seed=3))
    assert other.seed == 3 and other.rank == "integer" and other.capabilities is None
    assert other.with_options(seed=None, rank="expected").rank == "expected"
    with pytest.raises(ReportInputsError, match="no selection for recipe 'nope'"):
        gather_report_inputs(st, "nope")


def test_asset_and_cli_build_the_same_report(filled, tmp_path, capsys):
    import dagster as dg

    from mmssr_assets.assets.reports import eval_report
    from mmssr_assets.partitions import RECIPES
    from mmssr_assets.resources import RecipesResource, ScorerResource, StoreResource
    from mmssr_core.cli import main

    st, tax = filled
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(RECIPES, [RECIPE.name])
    res = dg.materialize(
        [eval_report],
        partition_key=RECIPE.name,
        instance=instance,
        resources={
            "store": StoreResource(root=str(st.root)),
            "scorer": ScorerResource(taxonomy_path=str(tax)),
            "recipes": RecipesResource.of([RECIPE]),
        },
    )
    assert res.success
    from_asset = json.loads((st.root / "reports" / f"{RECIPE.name}.json").read_text())
    meta = res.asset_materializations_for_node("eval_report")[0].metadata
    assert meta["scorer"].value == "test"

    out = tmp_path / "cli_out"
    rc = main(["report", "--store", str(st.root), "--recipe", RECIPE.name, "--taxonomy", str(tax), "--out", str(out)])
    assert rc == 0
    capsys.readouterr()
    from_cli = json.loads((out / "reports" / f"{RECIPE.name}.json").read_text())

    assert _stable(from_cli) == _stable(from_asset)
    assert set(from_cli["plots"]) == set(from_asset["plots"])
    # and the report used what the store recorded: the recipe's rank mode, seed, capabilities, duplicates
    assert (
        from_asset["rank"] == "expected"
        and from_asset["seed"] == 7
        and from_asset["capabilities"] == ["ocr", "spatial"]
    )
    assert from_asset["dedup"]["removed"] == 2 and from_asset["failures"]["rows"] == 1
    assert from_asset["scorer"] == {"labels": {"test": 40}, "backends": ["test"], "heuristic": False, "note": None}
