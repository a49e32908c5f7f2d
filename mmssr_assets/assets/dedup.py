"""`duplicates`: exact and near duplicate groups of the scored pool, one partition per recipe setting."""


import dagster as dg
import polars as pl

from mmssr_assets.assets.selection import scores_table
from mmssr_core.schema import SCORES_PARTITION, SCORES_TABLE
from mmssr_assets.metadata import first_human_turn, md_table, path_md
from mmssr_assets.partitions import OWNERS
from mmssr_assets.resources import StoreResource
from mmssr_core.recipes import Recipe

_PER_SOURCE = dg.TableSchema(columns=[
    dg.TableColumn("setting", "string"), dg.TableColumn("source", "string"), dg.TableColumn("groups", "int"),
    dg.TableColumn("in_groups", "int"), dg.TableColumn("removed", "int"),
])


def _settings(recipes: list[Recipe]) -> dict:
    return {r.dedup.key: r.dedup for r in recipes if r.dedup.enabled}


def _examples_md(st, summary: dict, limit: int = 5) -> str:
    """Example groups with the first human turn of the kept sample."""
    from mmssr_core.schema import RAW_POOL_TABLE

    rows = []
    for ex in summary["examples"][:limit]:
        source, _, sid = ex["kept"].partition("/")
        text = ""
        if st.exists(RAW_POOL_TABLE, source):
            hit = st.scan(RAW_POOL_TABLE, [source]).filter(pl.col("id") == sid).select("conversations").collect()
            text = first_human_turn(hit["conversations"].to_list()[0]) if hit.height else ""
        rows.append((ex["kind"], ex["kept"], ", ".join(ex["removed"][:4]), text))
    return md_table(["kind", "kept", "removed", "kept sample asks"], rows, 70)


def build_duplicates(recipes: list[Recipe]) -> dg.AssetsDefinition:
    settings = _settings(recipes)

    @dg.asset(
        deps=[scores_table],
        group_name="selection",
        kinds={"polars", "parquet"},
        owners=OWNERS,
        tags={"stage": "dedup"},
        description=(
            "Exact duplicates (same content hash: system prompt, turns and image bytes) and near duplicates "
            "(normalised-text MinHash with LSH bands, plus each image's perceptual hash from ingest) of the "
            "scored pool, across sources: `duplicates/<setting>.parquet`, one row per group member. "
            "Selection keeps the best-scored member of each group. One partition per distinct recipe setting; "
            "recipes with `dedup = false` do not use it."
        ),
    )
    def duplicates(context: dg.AssetExecutionContext, store: StoreResource) -> dg.MaterializeResult:
        from mmssr_core.dedup.representatives import rank_members
        from mmssr_core.dedup.summary import removal_summary
        from mmssr_core.dedup.table import write_duplicates

        st = store.store()
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
            lines.append((key, s["samples"], summary["groups"], summary["exact_groups"], summary["near_groups"],
                          summary["removed"], f"{s['seconds']:.1f}"))
            table_rows += [dg.TableRecord({"setting": key, **row}) for row in summary["per_source"]]
            meta[f"{key}/path"] = path_md(s["path"])
            meta[f"{key}/removed"] = summary["removed"]
            meta[f"{key}/examples"] = dg.MetadataValue.md(_examples_md(st, summary))
            context.log.info(f"duplicates {key}: {summary['groups']} groups, {summary['removed']} removable of "
                             f"{s['samples']} in {s['seconds']:.1f}s")
        meta["summary"] = dg.MetadataValue.md(md_table(
            ["setting", "samples", "groups", "exact", "near", "removed", "seconds"], lines))
        meta["per_source"] = dg.MetadataValue.table(table_rows, schema=_PER_SOURCE)
        return dg.MaterializeResult(metadata=meta)

    return duplicates
