"""`scores_table` (pool-wide) and `selected_subset` (one partition per recipe).

`scores_table`'s data version combines the data versions of every source's scores it read, so it is
stale exactly when a source was rescored with a different result (at any number of sources: Dagster's own
check skips an edge of 100 or more upstream partitions, the refresh schedule compares this version).
`selected_subset`'s data version is the content of the subset, so an unchanged selection leaves its
report fresh.
"""

import dagster as dg
import polars as pl

from mmssr_assets.freshness import latest_version
from mmssr_assets.metadata import frame_table, means_table, path_md, scores_scorer_metadata, table
from mmssr_assets.partitions import OWNERS, RECIPE_BACKFILL_POLICY, SOURCES, recipes_partitions
from mmssr_assets.resources import RecipesResource, ScorerResource, StoreResource
from mmssr_assets.versions import combined_version, frame_version, source_code_version
from mmssr_core.schema import CAPABILITY_TABLE, SCORES_PARTITION, SCORES_TABLE, STYLE_TABLE

SCORE_ASSETS = ("capability_scores", "style_labels")


def registered_scored_sources(instance: dg.DagsterInstance, st) -> list[str]:
    """Sources that are partitions of the instance and have both score tables in the store."""
    registered = instance.get_dynamic_partitions(SOURCES)
    return sorted(s for s in registered if st.exists(CAPABILITY_TABLE, s) and st.exists(STYLE_TABLE, s))


def pool_scores_version(instance: dg.DagsterInstance, sources: list[str]) -> str:
    """One version over the current data versions of every given source's scores and styles."""
    return combined_version(
        {f"{key}[{s}]": latest_version(instance, key, s) or "none" for s in sources for key in SCORE_ASSETS}
    )


@dg.asset(
    deps=list(SCORE_ASSETS),
    code_version=source_code_version("mmssr_core.scoring.scores_table", "mmssr_core.schema"),
    group_name="selection",
    kinds={"polars", "parquet"},
    owners=OWNERS,
    tags={"stage": "select"},
    description=(
        "The pool-wide scores table (id, source, styles, per capability the expected score and the integer "
        "score `<key>__argmax`, the scorer): every scored source concatenated into `scores/pool.parquet`. "
        "What selection reads. Stale when a source's scores or styles have a new data version."
    ),
)
def scores_table(
    context: dg.AssetExecutionContext, store: StoreResource, scorer: ScorerResource
) -> dg.MaterializeResult:
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
        data_version=dg.DataVersion(pool_scores_version(context.instance, sources)),
        metadata={
            "dagster/row_count": df.height,
            "sources": len(sources),
            "stale_scores_dropped": built.summary()["stale_dropped"],
            "samples_without_scores": built.summary()["missing_scores"],
            "path": path_md(path),
            "per_source": table([("source", "string"), ("samples", "int")], per_source.rows()),
            "mean_scores": means_table(keys, means, "mean"),
            "preview": frame_table(df.select("id", "source", "styles", *keys[:3])),
            **scores_scorer_metadata(df["scorer"].unique().to_list() if "scorer" in df.columns else []),
        },
    )


@dg.asset(
    partitions_def=recipes_partitions,
    backfill_policy=RECIPE_BACKFILL_POLICY,
    deps=[scores_table, "duplicates", "recipe"],
    code_version=source_code_version("mmssr_core.selection", "mmssr_core.dedup", "mmssr_core.baselines"),
    group_name="selection",
    kinds={"polars", "parquet"},
    owners=OWNERS,
    tags={"stage": "select"},
    description=(
        "The subset one recipe selects from the scores table (mmSSR: round-robin over capabilities, "
        "balanced over style x source bins; a sample qualifies when its integer score is above the "
        "threshold unless the recipe opts into rank = expected): `selections/<recipe>.parquet` with id, source, rank, "
        "picked_by, bin. At most one sample per duplicate group (the best-scored) is a candidate; a "
        "fractional budget counts the pool as ingested. One partition per recipe (defaults mmssr_5pct/10pct/30pct "
        "plus the store's recipes.toml or $MMSSR_RECIPES), registered by the sensor, the refresh schedule or "
        "`mmssr materialize`. Stale when the scores table, the duplicate groups or the recipe changed."
    ),
)
def selected_subset(
    context: dg.AssetExecutionContext, store: StoreResource, recipes: RecipesResource
) -> dg.MaterializeResult:
    from mmssr_core.recipe_selection import select_recipe
    from mmssr_core.selection import SelectionInputError
    from mmssr_core.store import StoreBusy, StoreError

    st = store.store()
    recipe = recipes.get(context.partition_key, st.root)
    try:
        done = select_recipe(st, recipe)
    except StoreBusy:
        raise
    except StoreError as exc:
        raise dg.Failure(str(exc)) from None
    except SelectionInputError as exc:
        raise dg.Failure(f"recipe {recipe.name}: {exc}") from None
    sel = done.selection
    context.log.info(f"selection {recipe.name}: {sel.selected}/{sel.requested} of {done.pool_size}")
    return dg.MaterializeResult(
        metadata=_selection_metadata(recipe, done),
        data_version=dg.DataVersion(frame_version(sel.frame, ["id", "source", "rank"])),
    )


def _selection_metadata(recipe, done) -> dict:
    sel, summary, dedup = done.selection, done.summary, done.dedup
    meta = {
        "recipe": recipe.describe(),
        "requested": summary["requested"],
        "selected": summary["selected"],
        "pool_size": done.pool_size,
        "short": summary["short"],
        "reason": summary["reason"] or "-",
        "rank": sel.rank_mode,
        "rules": table([("capability", "string"), ("qualifies when", "string")], list(sel.rules.items())),
        "dagster/row_count": sel.frame.height,
        "path": path_md(done.path),
        "preview": frame_table(sel.frame, 10),
        "per_capability": table(
            [("capability", "string"), ("picked", "string")],
            [(k, _count(v)) for k, v in summary["per_capability"].items()],
        ),
    }
    if dedup is not None:
        meta["deduplicated_pool_size"] = dedup.deduplicated_size
        meta["duplicates_removed"] = dedup.summary["removed"]
        meta["duplicate_groups"] = dedup.summary["groups"]
    if sel.frame.height:
        by_source = sel.frame.group_by("source").len().sort("source")
        meta["per_source"] = table([("source", "string"), ("selected", "int")], by_source.rows())
    return meta


def _count(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)
