"""`scores_table` (pool-wide) and `selected_subset` (one partition per recipe)."""


import dagster as dg
import polars as pl

from mmssr_assets.metadata import frame_md, md_table, path_md
from mmssr_assets.partitions import OWNERS, RECIPE_BACKFILL_POLICY, SOURCES, recipes_partitions
from mmssr_assets.resources import ScorerResource, StoreResource
from mmssr_core.recipes import Recipe
from mmssr_core.schema import CAPABILITY_TABLE, SCORES_PARTITION, SCORES_TABLE, STYLE_TABLE


def registered_scored_sources(instance: dg.DagsterInstance, st) -> list[str]:
    """Sources that are partitions of the instance and have both score tables in the store."""
    registered = instance.get_dynamic_partitions(SOURCES)
    return sorted(s for s in registered if st.exists(CAPABILITY_TABLE, s) and st.exists(STYLE_TABLE, s))


@dg.asset(
    deps=["capability_scores", "style_labels"],
    group_name="selection",
    kinds={"polars", "parquet"},
    owners=OWNERS,
    tags={"stage": "select"},
    description=(
        "The pool-wide scores table (id, source, styles, per capability the expected score and the integer "
        "score `<key>__argmax`): "
        "every scored source concatenated into `scores/pool.parquet`. What selection reads."
    ),
)
def scores_table(context: dg.AssetExecutionContext, store: StoreResource, scorer: ScorerResource) -> dg.MaterializeResult:
    from mmssr_core.scoring.runner import build_scores

    st = store.store()
    sources = registered_scored_sources(context.instance, st)
    if not sources:
        raise dg.Failure("no scored source yet: materialize raw_pool, capability_scores and style_labels first")
    taxonomy = scorer.taxonomy()
    built = build_scores(st, sources=sources, taxonomy=taxonomy)  # against the current raw pools
    df = built.table
    path = st.write(SCORES_TABLE, SCORES_PARTITION, df)
    per_source = df.group_by("source").len().sort("source")
    keys = [k for k in taxonomy.keys if k in df.columns]
    means = df.select([pl.col(k).mean() for k in keys]).row(0) if df.height else [None] * len(keys)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": df.height,
            "sources": len(sources),
            "stale_scores_dropped": built.summary()["stale_dropped"],
            "samples_without_scores": built.summary()["missing_scores"],
            "path": path_md(path),
            "per_source": dg.MetadataValue.md(md_table(["source", "samples"], per_source.rows())),
            "mean_scores": dg.MetadataValue.md(
                md_table(["capability", "mean"], [(k, "" if m is None else f"{m:.3f}") for k, m in zip(keys, means)])
            ),
            "preview": frame_md(df.select("id", "source", "styles", *keys[:3])),
        }
    )


def build_selected_subset(recipes: list[Recipe]) -> dg.AssetsDefinition:
    by_name = {r.name: r for r in recipes}
    table = md_table(["recipe", "what"], [(r.name, r.describe()) for r in recipes], 200)

    @dg.asset(
        partitions_def=recipes_partitions(recipes),
        backfill_policy=RECIPE_BACKFILL_POLICY,
        deps=[scores_table, "duplicates"],
        group_name="selection",
        kinds={"polars", "parquet"},
        owners=OWNERS,
        tags={"stage": "select"},
        metadata={"recipes": dg.MetadataValue.md(table)},
        description=(
            "The subset one recipe selects from the scores table (mmSSR: round-robin over capabilities, "
            "balanced over style x source bins; a sample qualifies when its integer score is above the "
            "threshold unless the recipe opts into rank = expected): `selections/<recipe>.parquet` with id, source, rank, "
            "picked_by, bin. At most one sample per duplicate group (the best-scored) is a candidate; a "
            "fractional budget counts the pool as ingested. Recipes: defaults mmssr_5pct/10pct/30pct plus the "
            "store's recipes.toml or $MMSSR_RECIPES."
        ),
    )
    def selected_subset(context: dg.AssetExecutionContext, store: StoreResource) -> dg.MaterializeResult:
        from mmssr_core.recipe_selection import select_recipe
        from mmssr_core.selection import SelectionInputError
        from mmssr_core.store import StoreBusy, StoreError

        recipe = by_name[context.partition_key]
        try:
            done = select_recipe(store.store(), recipe)
        except StoreBusy:
            raise
        except StoreError as exc:
            raise dg.Failure(str(exc)) from None
        except SelectionInputError as exc:
            raise dg.Failure(f"recipe {recipe.name}: {exc}") from None
        sel = done.selection
        context.log.info(f"selection {recipe.name}: {sel.selected}/{sel.requested} of {done.pool_size}")
        return dg.MaterializeResult(metadata=_selection_metadata(recipe, done))

    return selected_subset


def _selection_metadata(recipe: Recipe, done) -> dict:
    sel, summary, dedup = done.selection, done.summary, done.dedup
    meta = {
        "recipe": recipe.describe(),
        "requested": summary["requested"],
        "selected": summary["selected"],
        "pool_size": done.pool_size,
        "short": summary["short"],
        "reason": summary["reason"] or "-",
        "rank": sel.rank_mode,
        "rules": dg.MetadataValue.md(md_table(["capability", "qualifies when"], list(sel.rules.items()))),
        "dagster/row_count": sel.frame.height,
        "path": path_md(done.path),
        "preview": frame_md(sel.frame, 10),
        "per_capability": dg.MetadataValue.md(
            md_table(["capability", "picked"], [(k, _count(v)) for k, v in summary["per_capability"].items()])
        ),
    }
    if dedup is not None:
        meta["deduplicated_pool_size"] = dedup.deduplicated_size
        meta["duplicates_removed"] = dedup.summary["removed"]
        meta["duplicate_groups"] = dedup.summary["groups"]
    if sel.frame.height:
        by_source = sel.frame.group_by("source").len().sort("source")
        meta["per_source"] = dg.MetadataValue.md(md_table(["source", "selected"], by_source.rows()))
    return meta


def _count(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)
