"""`duplicates`: exact and near duplicate groups of the scored pool, one partition per recipe setting."""

import dagster as dg
import polars as pl

from mmssr_assets.assets.selection import scores_table
from mmssr_assets.metadata import first_human_turn, path_md, table
from mmssr_assets.partitions import OWNERS
from mmssr_assets.resources import RecipesResource, StoreResource
from mmssr_assets.versions import source_code_version
from mmssr_core.recipes import Recipe
from mmssr_core.schema import RAW_POOL_TABLE, SCORES_PARTITION, SCORES_TABLE

_PER_SOURCE = [("setting", "string"), ("source", "string"), ("groups", "int"), ("in_groups", "int"), ("removed", "int")]
_SUMMARY = [
    ("setting", "string"),
    ("samples", "int"),
    ("groups", "int"),
    ("exact", "int"),
    ("near", "int"),
    ("removed", "int"),
    ("seconds", "float"),
]
_EXAMPLES = [("kind", "string"), ("kept", "string"), ("removed", "string"), ("kept sample asks", "string")]


def _settings(recipes: list[Recipe]) -> dict:
    return {r.dedup.key: r.dedup for r in recipes if r.dedup.enabled}


def _examples(st, summary: dict, limit: int = 5) -> dg.MetadataValue:
    """Example groups with the first human turn of the kept sample."""
    rows = []
    for ex in summary["examples"][:limit]:
        source, _, sid = ex["kept"].partition("/")
        text = ""
        if st.exists(RAW_POOL_TABLE, source):
            hit = st.scan(RAW_POOL_TABLE, [source]).filter(pl.col("id") == sid).select("conversations").collect()
            text = first_human_turn(hit["conversations"].to_list()[0]) if hit.height else ""
        rows.append((ex["kind"], ex["kept"], ", ".join(ex["removed"][:4]), text))
    return table(_EXAMPLES, rows)


@dg.asset(
    deps=[scores_table],  # recipes' dedup settings are read at run time; an edited recipe's run rebuilds it
    code_version=source_code_version("mmssr_core.dedup"),
    group_name="selection",
    kinds={"polars", "parquet"},
    owners=OWNERS,
    tags={"stage": "dedup"},
    description=(
        "Exact duplicates (same content hash: system prompt, turns and image bytes) and near duplicates "
        "(normalised-text MinHash with LSH bands, plus each image's perceptual hash from ingest) of the "
        "scored pool, across sources: `duplicates/<setting>.parquet`, one row per group member. "
        "Selection keeps the best-scored member of each group. One file per distinct deduplication setting "
        "of the recipes; recipes with `dedup = false` do not use it."
    ),
)
def duplicates(
    context: dg.AssetExecutionContext, store: StoreResource, recipes: RecipesResource
) -> dg.MaterializeResult:
    from mmssr_core.dedup.representatives import rank_members
    from mmssr_core.dedup.summary import removal_summary
    from mmssr_core.dedup.table import write_duplicates

    st = store.store()
    settings = _settings(recipes.load(st.root))
    if not st.exists(SCORES_TABLE, SCORES_PARTITION):
        raise dg.Failure("the scores table is missing: materialize scores_table first")
    scores = st.read(SCORES_TABLE, SCORES_PARTITION)
    sources = sorted(scores["source"].unique().to_list())
    meta: dict = {"settings": ", ".join(settings) or "none (every recipe has dedup = false)"}
    table_rows, lines = [], []
    for key, config in settings.items():
        result = write_duplicates(st, config, sources)
        summary = removal_summary(rank_members(result.groups, scores))
        s = result.stats
        lines.append(
            (
                key,
                s["samples"],
                summary["groups"],
                summary["exact_groups"],
                summary["near_groups"],
                summary["removed"],
                round(float(s["seconds"]), 1),
            )
        )
        table_rows += [[key, *(row[c] for c, _ in _PER_SOURCE[1:])] for row in summary["per_source"]]
        meta[f"{key}/path"] = path_md(s["path"])
        meta[f"{key}/removed"] = summary["removed"]
        meta[f"{key}/examples"] = _examples(st, summary)
        context.log.info(
            f"duplicates {key}: {summary['groups']} groups, {summary['removed']} removable of "
            f"{s['samples']} in {s['seconds']:.1f}s"
        )
    meta["summary"] = table(_SUMMARY, lines)
    meta["per_source"] = table(_PER_SOURCE, table_rows)
    return dg.MaterializeResult(metadata=meta)
