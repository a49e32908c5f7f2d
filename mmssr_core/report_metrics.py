"""The numbers of an eval report: what a selection holds against the pool and a random subset.

Why a separate module: the same profile (capability scores, style x source mix, text and image
statistics) is computed for every subset we compare (the selection, a seeded random subset of the same
size, other baselines, the pool), so comparisons are like for like. Everything here is polars
expressions over the scores table (schema.scores_schema), the selection frame (id, source, rank, picked_by, bin)
and, optionally, the raw pool (schema.RAW_POOL_SCHEMA) and the score_failures table.
"""

from __future__ import annotations

import math
import re
from typing import Iterable

import polars as pl

from mmssr_core.selection.rules import DEFAULT_RANK, capability_rules, eligible_expr, rule_summary

KEY = ["id", "source"]  # ids are unique per source only
HIGH_SCORE = 4.0  # "scores at least 4": the paper's notion of a clearly helpful sample
THRESHOLD_SWEEP = (0.0, 1.0, 2.0, 3.0, 4.0)
NO_STYLE = "(none)"


class ReportError(ValueError):
    """Inputs a report cannot be built from (missing columns, unknown capabilities)."""


# -- inputs -------------------------------------------------------------------------------------
def require_columns(df: pl.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ReportError(f"{what} lacks columns {missing} (has {df.columns})")


def capability_keys(scores: pl.DataFrame, capabilities: list[str] | None = None, taxonomy=None) -> list[str]:
    """The capability columns to report: those asked for, else the taxonomy's keys present in `scores`."""
    if capabilities is not None:
        require_columns(scores, capabilities, "scores table")
        return list(capabilities)
    if taxonomy is None:
        from mmssr_core.taxonomy import load_taxonomy

        taxonomy = load_taxonomy()
    keys = [k for k in taxonomy.keys if k in scores.columns]
    if not keys:
        raise ReportError(f"scores table has none of the capability columns {taxonomy.keys}")
    return keys


def keys_of(df: pl.DataFrame) -> pl.DataFrame:
    return df.select(KEY).unique()


def subset_scores(scores: pl.DataFrame, subset: pl.DataFrame) -> pl.DataFrame:
    """Rows of `scores` for the samples of `subset` (extra subset columns such as picked_by kept)."""
    extra = [c for c in subset.columns if c not in scores.columns or c in KEY]
    return subset.select(extra).unique(subset=KEY, keep="first").join(scores, on=KEY, how="inner")


def random_subset(scores: pl.DataFrame, n: int, seed: int = 0) -> pl.DataFrame:
    """A seeded random subset of `n` scored samples; independent of row order (hash of source+id)."""
    n = max(0, min(int(n), scores.height))
    order = pl.concat_str([pl.col("source"), pl.col("id")], separator="\x1f").hash(seed=seed)
    return scores.with_columns(_order=order).sort(["_order", "source", "id"]).head(n).drop("_order")


# -- distributions -------------------------------------------------------------------------------
def normalised_entropy(counts: Iterable[float], k: int | None = None) -> float:
    """Shannon entropy of a count vector divided by log(k) (k = number of possible categories).

    1.0 means perfectly even over all k categories, 0.0 means everything in one; with k <= 1 there is
    nothing to spread over and the result is 0.0.
    """
    values = [float(c) for c in counts if c and c > 0]
    total = sum(values)
    k = len(values) if k is None else k
    if total <= 0 or k <= 1:
        return 0.0
    h = -sum((c / total) * math.log(c / total) for c in values)
    return max(0.0, float(h / math.log(k)))


def style_source_counts(frame: pl.DataFrame) -> pl.DataFrame:
    """Label counts per (style, source); multi-label samples count once per distinct label."""
    return (
        frame.select("source", pl.col("styles").list.unique(maintain_order=True).alias("style"))
        .explode("style")
        .with_columns(pl.col("style").fill_null(NO_STYLE))
        .group_by("style", "source")
        .len("count")
        .sort("style", "source")
    )


def _share_dict(df: pl.DataFrame, key: str) -> dict[str, dict[str, float]]:
    total = df["count"].sum() or 1
    return {
        str(r[key]): {"count": int(r["count"]), "share": r["count"] / total}
        for r in df.sort("count", key, descending=[True, False]).iter_rows(named=True)
    }


def capability_profile(frame: pl.DataFrame, keys: list[str]) -> dict[str, dict[str, float]]:
    """Per capability: mean expected score, samples scored, samples scoring >= 4 (and their share)."""
    n = frame.height
    exprs = []
    for k in keys:
        exprs += [
            pl.col(k).mean().alias(f"{k}\x1fmean"),
            pl.col(k).median().alias(f"{k}\x1fmedian"),
            pl.col(k).is_not_null().sum().alias(f"{k}\x1fscored"),
            (pl.col(k) >= HIGH_SCORE).sum().alias(f"{k}\x1fhigh"),
        ]
    row = frame.select(exprs).row(0, named=True) if exprs else {}
    out = {}
    for k in keys:
        high = int(row.get(f"{k}\x1fhigh") or 0)
        out[k] = {
            "mean": _f(row.get(f"{k}\x1fmean")),
            "median": _f(row.get(f"{k}\x1fmedian")),
            "scored": int(row.get(f"{k}\x1fscored") or 0),
            "count_ge4": high,
            "share_ge4": high / n if n else 0.0,
        }
    return out


def _f(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _quantiles(expr: pl.Expr, name: str) -> list[pl.Expr]:
    return [
        expr.mean().alias(f"{name}_mean"),
        expr.median().alias(f"{name}_median"),
        expr.quantile(0.9, "nearest").alias(f"{name}_p90"),
        expr.max().alias(f"{name}_max"),
    ]


def text_profile(pool_rows: pl.DataFrame) -> dict[str, float | None]:
    """Text length (characters over all turns) and turn count (human turns) of samples from the pool."""
    if pool_rows.height == 0:
        return {}
    conv = pl.col("conversations")
    turns = conv.list.eval((pl.element().struct.field("from") == "human").cast(pl.Int32)).list.sum()
    chars = conv.list.eval(pl.element().struct.field("value").str.len_chars()).list.sum()
    df = pool_rows.select(turns.alias("turns"), chars.alias("chars"))
    row = df.select(_quantiles(pl.col("turns"), "turns") + _quantiles(pl.col("chars"), "text_chars")).row(0, named=True)
    return {k: _f(v) for k, v in row.items()}


def image_profile(pool_rows: pl.DataFrame) -> dict[str, float | None]:
    """Image count per sample, width/height/megapixels over all images, share of text-only samples."""
    if pool_rows.height == 0:
        return {}
    per_sample = pool_rows.select(
        pl.col("image_widths").list.len().fill_null(0).alias("n_images"),
    )
    imgs = (
        pool_rows.select(pl.col("image_widths").alias("w"), pl.col("image_heights").alias("h"))
        .explode(["w", "h"])
        .drop_nulls()
    )
    out: dict[str, float | None] = {
        "images_per_sample_mean": _f(per_sample["n_images"].mean()),
        "text_only_share": _f((per_sample["n_images"] == 0).mean()),
        "images": float(imgs.height),
    }
    if imgs.height:
        mp = pl.col("w").cast(pl.Float64) * pl.col("h").cast(pl.Float64) / 1e6
        row = imgs.select(
            _quantiles(pl.col("w").cast(pl.Float64), "width")
            + _quantiles(pl.col("h").cast(pl.Float64), "height")
            + _quantiles(mp, "megapixels")
        ).row(0, named=True)
        out.update({k: _f(v) for k, v in row.items()})
    return out


def subset_profile(
    frame: pl.DataFrame,
    keys: list[str],
    *,
    pool: pl.DataFrame | None,
    n_styles: int,
    pool_sources: int,
    pool_bins: set[tuple[str, str]],
) -> dict:
    """Everything we compare across subsets, for one subset's rows of the scores table."""
    ss = style_source_counts(frame)
    style = ss.group_by("style").agg(pl.col("count").sum())
    source = frame.group_by("source").len("count")
    bins = {(r[0], r[1]) for r in ss.select("style", "source").iter_rows()}
    caps = capability_profile(frame, keys)
    means = [c["mean"] for c in caps.values() if c["mean"] is not None]
    any_high = (
        frame.select(pl.any_horizontal([pl.col(k) >= HIGH_SCORE for k in keys]).fill_null(False).sum()).item()
        if keys and frame.height
        else 0
    )
    prof = {
        "size": frame.height,
        "capabilities": caps,
        "mean_score": sum(means) / len(means) if means else None,
        "any_ge4": int(any_high),
        "any_ge4_share": any_high / frame.height if frame.height else 0.0,
        "style_mix": _share_dict(style, "style"),
        "source_mix": _share_dict(source, "source"),
        "style_source": [
            {"style": r["style"], "source": r["source"], "count": int(r["count"])} for r in ss.iter_rows(named=True)
        ],
        "style_entropy": normalised_entropy(style["count"].to_list(), n_styles),
        "source_entropy": normalised_entropy(source["count"].to_list(), pool_sources),
        "style_source_entropy": normalised_entropy(ss["count"].to_list(), len(pool_bins)),
        "bin_coverage": len(bins & pool_bins) / len(pool_bins) if pool_bins else 0.0,
        "capabilities_with_ge4": sum(1 for c in caps.values() if c["count_ge4"] > 0),
    }
    if pool is not None:
        rows = frame.select(KEY).join(pool, on=KEY, how="inner")
        prof["in_pool"] = rows.height
        prof["text"] = text_profile(rows) if "conversations" in pool.columns else {}
        prof["images"] = image_profile(rows) if "image_widths" in pool.columns else {}
    return prof


# -- selection specifics -------------------------------------------------------------------------
def picked_by_shares(selection: pl.DataFrame, keys: list[str]) -> dict[str, dict[str, float]]:
    """How many samples each capability's turn picked (selection column `picked_by`)."""
    n = selection.height
    if "picked_by" not in selection.columns:
        return {}
    counts = dict(
        selection.group_by("picked_by")
        .len("count")
        .select(pl.col("picked_by").fill_null(NO_STYLE), "count")
        .iter_rows()
    )
    out = {k: {"count": int(counts.pop(k, 0)), "share": 0.0} for k in keys}
    for k, c in counts.items():  # other labels (baselines, '(none)')
        out[str(k)] = {"count": int(c), "share": 0.0}
    for v in out.values():
        v["share"] = v["count"] / n if n else 0.0
    return out


def threshold_effects(scores: pl.DataFrame, keys: list[str], threshold: float, rank: str = DEFAULT_RANK) -> dict:
    """Samples per capability that qualify under the rule selection uses (rank mode `rank`: the integer score
    > t where the table has one, else the float), at t and a sweep of thresholds."""
    rules = capability_rules(scores, keys, rank)
    sweep = sorted(set(THRESHOLD_SWEEP) | {float(threshold)})
    exprs = [eligible_expr(r, t).sum().alias(f"{r.key}\x1f{t}") for r in rules for t in sweep]
    exprs += [pl.any_horizontal([eligible_expr(r, t) for r in rules]).sum().alias(f"\x00any\x1f{t}") for t in sweep]
    row = scores.select(exprs).row(0, named=True) if keys else {}
    return {
        "threshold": float(threshold),
        "rank": rank,
        "rules": rule_summary(rules, threshold),
        "bases": sorted({r.basis for r in rules}),
        "pool_size": scores.height,
        "passing": {k: int(row.get(f"{k}\x1f{float(threshold)}") or 0) for k in keys},
        "eligible_any": int(row.get(f"\x00any\x1f{float(threshold)}") or 0),
        "sweep": {
            str(t): {
                "eligible_any": int(row.get(f"\x00any\x1f{t}") or 0),
                **{k: int(row.get(f"{k}\x1f{t}") or 0) for k in keys},
            }
            for t in sweep
        },
    }


def passing_label(threshold_summary: dict) -> str:
    """The rule "pool passing" counts, for headers: "integer > 0", or the distinct rules when they differ."""
    rules = sorted(set(threshold_summary.get("rules", {}).values()))
    return " / ".join(rules) if rules else f"score > {threshold_summary['threshold']:g}"


def overlap(subsets: dict[str, pl.DataFrame], nested_order: list[str] | None = None) -> dict:
    """Pairwise Jaccard of named subsets, and whether the ones in `nested_order` (small to large) nest."""
    names = list(subsets)
    keyed = {n: keys_of(df) for n, df in subsets.items()}
    sizes = {n: df.height for n, df in keyed.items()}
    inter: dict[tuple[str, str], int] = {}
    for i, a in enumerate(names):
        for b in names[i:]:
            k = sizes[a] if a == b else keyed[a].join(keyed[b], on=KEY, how="inner").height
            inter[(a, b)] = inter[(b, a)] = k
    jac = {
        a: {
            b: (inter[(a, b)] / (sizes[a] + sizes[b] - inter[(a, b)]) if sizes[a] + sizes[b] - inter[(a, b)] else 1.0)
            for b in names
        }
        for a in names
    }
    out: dict = {
        "names": names,
        "sizes": sizes,
        "jaccard": jac,
        "intersection": {a: {b: inter[(a, b)] for b in names} for a in names},
    }
    if nested_order and len(nested_order) >= 2:
        order = sorted(nested_order, key=lambda n: sizes[n])
        pairs = []
        for small, large in zip(order, order[1:]):
            contained = inter[(small, large)] / sizes[small] if sizes[small] else 1.0
            pairs.append(
                {
                    "smaller": small,
                    "larger": large,
                    "contained": contained,
                    "nested": inter[(small, large)] == sizes[small],
                }
            )
        out["nesting"] = pairs
        out["nested"] = all(p["nested"] for p in pairs)
    return out


def failure_summary(failures: pl.DataFrame | None, selection: pl.DataFrame, pool_size: int) -> dict:
    """Scoring failures (score_failures table): how many, why, for which target, and in the selection."""
    if failures is None or failures.height == 0:
        return {"rows": 0, "samples": 0, "share_of_pool": 0.0, "by_reason": {}, "by_target": {}, "in_selection": 0}
    require_columns(failures, KEY, "score_failures table")
    samples = keys_of(failures)

    def by(c: str) -> dict:
        if c not in failures.columns:
            return {}
        return dict(failures.group_by(c).len("n").sort("n", c, descending=[True, False]).iter_rows())

    examples = failures.head(5).select(
        [c for c in ("id", "source", "target", "reason", "message") if c in failures.columns]
    )
    return {
        "rows": failures.height,
        "samples": samples.height,
        "share_of_pool": samples.height / pool_size if pool_size else 0.0,
        "by_reason": {str(k): int(v) for k, v in by("reason").items()},
        "by_target": {str(k): int(v) for k, v in by("target").items()},
        "in_selection": keys_of(selection).join(samples, on=KEY, how="inner").height,
        "examples": examples.to_dicts(),
    }


# -- who scored --------------------------------------------------------------------------------------
HEURISTIC_BACKENDS = {"rules": "rules: heuristic stand-in"}  # backends that are no trained scorer


def scorer_summary(scores: pl.DataFrame) -> dict | None:
    """Who made the scores: each scorer label of the table's `scorer` column (`backend:model@rev/prompts`)
    with its sample count, the backends, and a note when a heuristic stand-in rather than a model scored.
    None when the table does not say (an external scores file without the column)."""
    if "scorer" not in scores.columns or scores.height == 0:
        return None
    counts = scores.group_by("scorer").len("n").sort("n", "scorer", descending=[True, False], nulls_last=True)
    labels = {str(k) if k is not None else "(unknown)": int(n) for k, n in counts.iter_rows()}
    backends = sorted({re.split(r"[:/@]", k, maxsplit=1)[0] for k in labels})
    notes = [HEURISTIC_BACKENDS[b] for b in backends if b in HEURISTIC_BACKENDS]
    return {"labels": labels, "backends": backends, "heuristic": bool(notes), "note": "; ".join(notes) or None}


def scorer_line(scorer: dict | None) -> str:
    """One line for headers and metadata: the label(s), and the heuristic note when there is one."""
    if not scorer:
        return "unknown scorer"
    labels = list(scorer["labels"])
    text = labels[0] if len(labels) == 1 else f"{len(labels)} scorers: " + ", ".join(labels)
    return f"{text} ({scorer['note']})" if scorer.get("note") else text
