"""What deduplication removed, for reports and the UI: groups, samples, per source, examples."""

from __future__ import annotations

import polars as pl

N_EXAMPLES = 5


def removal_summary(ranked: pl.DataFrame, n_examples: int = N_EXAMPLES) -> dict:
    """From ranked group members (`keep` marks the one kept): totals, a per-source table, examples."""
    if ranked.height == 0:
        return {"groups": 0, "exact_groups": 0, "near_groups": 0, "removed": 0, "per_source": [], "examples": []}
    by_group = (
        ranked.group_by("group", maintain_order=True)
        .agg(
            pl.len().alias("size"),
            (pl.col("kind") == "exact").all().alias("exact"),
            (pl.col("source") + "/" + pl.col("id")).filter(pl.col("keep")).first().alias("kept"),
            (pl.col("source") + "/" + pl.col("id")).filter(~pl.col("keep")).alias("removed"),
        )
        .filter(pl.col("size") > 1)
    )
    per_source = (
        ranked.filter(pl.col("group").is_in(by_group["group"].implode()))
        .group_by("source")
        .agg(
            pl.col("group").n_unique().alias("groups"),
            (~pl.col("keep")).sum().alias("removed"),
            pl.len().alias("in_groups"),
        )
        .sort("source")
    )
    examples = by_group.sort("size", "group", descending=[True, False]).head(n_examples)
    n_exact = int(by_group["exact"].sum())
    return {
        "groups": by_group.height,
        "exact_groups": n_exact,
        "near_groups": by_group.height - n_exact,
        "removed": int(by_group["size"].sum() - by_group.height),
        "per_source": per_source.to_dicts(),
        "examples": [
            {"group": r["group"], "kind": "exact" if r["exact"] else "near", "kept": r["kept"], "removed": r["removed"]}
            for r in examples.iter_rows(named=True)
        ],
    }


def repeated_groups(selection: pl.DataFrame, groups: pl.DataFrame) -> pl.DataFrame:
    """Duplicate groups with more than one member in `selection`: group, members (source/id list)."""
    hits = selection.select("source", "id").join(groups.select("source", "id", "group"), on=["source", "id"])
    return (
        hits.group_by("group")
        .agg((pl.col("source") + "/" + pl.col("id")).sort().alias("members"))
        .filter(pl.col("members").list.len() > 1)
        .sort("group")
    )


def pool_order_ranking(groups: pl.DataFrame) -> pl.DataFrame:
    """Group members with `keep` on the first in pool order: the summary to show before any scores exist."""
    first = pl.col("source") + "/" + pl.col("id") == pl.col("group")
    return groups.select("source", "id", "group", "kind", first.alias("keep"))
