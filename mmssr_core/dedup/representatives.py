"""One sample per duplicate group reaches selection: the member the scorer rated best.

Order within a group: highest mean integer score (`<key>__argmax`, the paper's score), then highest
mean expected score, then the seeded id hash selection uses for ties (so the choice is reproducible
and favours no source), then source name.
"""

from __future__ import annotations

import polars as pl

from mmssr_core.schema import SCORER_COLUMN, argmax_column

KEY = ["source", "id"]
_NOT_SCORES = {"id", "source", "styles", SCORER_COLUMN}


def capability_columns(scores: pl.DataFrame, capabilities: list[str] | None = None) -> list[str]:
    """The expected-score columns to average: the given capabilities, else every numeric score column."""
    if capabilities:
        return [c for c in capabilities if c in scores.columns]
    return [
        c for c, t in scores.schema.items() if c not in _NOT_SCORES and not c.endswith("__argmax") and t.is_numeric()
    ]


def rank_members(
    groups: pl.DataFrame, scores: pl.DataFrame, capabilities: list[str] | None = None, seed: int = 0
) -> pl.DataFrame:
    """The scored members of each group (source, id, group, kind), best first, with `keep` on the first."""
    from mmssr_core.selection import tie_keys

    caps = capability_columns(scores, capabilities)
    ints = [argmax_column(c) for c in caps if argmax_column(c) in scores.columns]
    mean_int = pl.mean_horizontal([pl.col(c).cast(pl.Float64) for c in ints]) if ints else pl.lit(None, pl.Float64)
    mean_exp = pl.mean_horizontal([pl.col(c).cast(pl.Float64) for c in caps]) if caps else pl.lit(None, pl.Float64)
    scored = scores.select(*KEY, mean_int.alias("mean_int"), mean_exp.alias("mean_expected"))
    members = groups.select(*KEY, "group", "kind").join(scored, on=KEY, how="inner")
    members = members.with_columns(pl.Series("tie", tie_keys(members["id"], seed), dtype=pl.UInt64))
    members = members.sort(
        ["group", "mean_int", "mean_expected", "tie", "source"],
        descending=[False, True, True, False, False],
        nulls_last=True,
    )
    return members.with_columns((pl.int_range(pl.len()).over("group") == 0).alias("keep"))


def deduplicate_scores(
    scores: pl.DataFrame, groups: pl.DataFrame, capabilities: list[str] | None = None, seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(scores without the members that lost in their group, the ranked members of every group)."""
    ranked = rank_members(groups, scores, capabilities, seed)
    dropped = ranked.filter(~pl.col("keep")).select(KEY)
    return scores.join(dropped, on=KEY, how="anti"), ranked
