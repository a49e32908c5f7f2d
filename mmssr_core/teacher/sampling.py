"""Which samples the teacher labels: distinct content of the chosen sources, stratified by (source, primary
style), every stratum represented where the size allows, the rest proportional; seeded, so a larger size
with the same seed extends a smaller one."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import polars as pl

from mmssr_core.prompts import PromptSet
from mmssr_core.schema import RAW_POOL_TABLE, STYLE_TABLE
from mmssr_core.store import Store, StoreError
from mmssr_core.taxonomy import Taxonomy


def _seeded_key(values: Sequence[str], seed: int) -> list[str]:
    s = f"{seed}\0".encode()
    return [hashlib.sha256(s + (v or "").encode()).hexdigest() for v in values]


def allocate(counts: dict[str, int], size: int, seed: int = 0) -> dict[str, int]:
    """Per-stratum quotas summing to min(size, total): proportional to stratum size (largest remainders),
    at least one per stratum where the size allows; ties broken by a seeded hash of the stratum name."""
    total = sum(counts.values())
    size = max(0, min(int(size), total))
    strata = sorted(counts)
    tie = dict(zip(strata, _seeded_key(strata, seed)))
    if size == 0:
        return {s: 0 for s in strata}
    if size < len(strata):  # not enough for one each: the largest strata get one
        ranked = sorted(strata, key=lambda s: (-counts[s], tie[s]))
        return {s: (1 if s in ranked[:size] else 0) for s in strata}
    exact = {s: size * counts[s] / total for s in strata}
    quota = {s: min(counts[s], max(1, int(exact[s]))) for s in strata}
    diff = size - sum(quota.values())
    if diff > 0:  # hand out the rest by largest remainder
        order = sorted(strata, key=lambda s: (-(exact[s] - quota[s]), tie[s]))
        while diff > 0:
            for s in order:
                if diff > 0 and quota[s] < counts[s]:
                    quota[s] += 1
                    diff -= 1
    elif diff < 0:  # the forced ones overshot: take back where the quota exceeds its share most
        order = sorted(strata, key=lambda s: (-(quota[s] - exact[s]), tie[s]))
        while diff < 0:
            for s in order:
                if diff < 0 and quota[s] > 1:
                    quota[s] -= 1
                    diff += 1
    return quota


def stratified_sample(frame: pl.DataFrame, size: int, seed: int = 0, stratum: str = "stratum") -> pl.DataFrame:
    """`size` rows of `frame` (distinct content_hash), allocated over `stratum` by `allocate`."""
    if frame.is_empty() or size <= 0:
        return frame.head(0)
    counts = dict(frame.group_by(stratum).len().iter_rows())
    quota = allocate(counts, size, seed)
    keyed = frame.with_columns(_k=pl.Series(_seeded_key(frame["content_hash"].to_list(), seed), dtype=pl.Utf8))
    keyed = keyed.sort([stratum, "_k"]).with_columns(_r=pl.int_range(pl.len()).over(stratum))
    q = pl.DataFrame({stratum: list(quota), "_q": list(quota.values())}, schema={stratum: pl.Utf8, "_q": pl.Int64})
    out = keyed.join(q, on=stratum, how="left").filter(pl.col("_r") < pl.col("_q"))
    return out.drop("_k", "_r", "_q").sort([stratum, "content_hash"])


def primary_styles(store: Store, pool: pl.DataFrame, taxonomy: Taxonomy) -> pl.Series:
    """The first style label of each pool row: from `style_labels` where present, else the rules styler."""
    prim = pl.Series("primary", [None] * pool.height, dtype=pl.Utf8)
    known = pool.select("source", "id").with_row_index("_i")
    parts = []
    for source in pool["source"].unique().to_list():
        if store.exists(STYLE_TABLE, source):
            st = store.read(STYLE_TABLE, source)
            if "styles" in st.columns:
                parts.append(st.select("source", "id", pl.col("styles").list.first().alias("primary")))
    if parts:
        lab = known.join(
            pl.concat(parts, how="vertical_relaxed").unique(["source", "id"]), on=["source", "id"], how="left"
        )
        prim = lab.sort("_i")["primary"].cast(pl.Utf8)
    missing = [i for i, v in enumerate(prim.to_list()) if v is None]
    if missing:
        from mmssr_core.scoring.base import ScoreRequest
        from mmssr_core.scoring.rules import RulesBackend

        rules = RulesBackend()
        prompts = PromptSet.from_taxonomy(taxonomy)
        rows = pool[missing]
        reqs = [
            ScoreRequest(
                key=r["content_hash"],
                sample_id=r["id"],
                prefix="",
                image_file=None,
                conversations=tuple({"from": t["from"], "value": t["value"]} for t in (r["conversations"] or [])),
            )
            for r in rows.iter_rows(named=True)
        ]
        guessed = rules.styles(reqs, prompts)
        vals = prim.to_list()
        for i, g in zip(missing, guessed):
            vals[i] = g[0] if isinstance(g, list) and g else "unlabelled"
        prim = pl.Series("primary", vals, dtype=pl.Utf8)
    return prim


def read_pools(store: Store, sources: Sequence[str]) -> pl.DataFrame:
    """The columns labelling needs from the raw pools of `sources` (a missing content hash made unique)."""
    cols = ["id", "source", "content_hash", "image_files", "conversations"]
    frames = []
    for s in sources:
        try:
            df = store.read(RAW_POOL_TABLE, s)
        except StoreError:
            raise StoreError(f"source {s!r} has not been ingested (no raw_pool/{s} under {store.root})") from None
        lacking = [c for c in cols if c not in df.columns]
        if lacking:
            raise StoreError(f"raw_pool/{s} lacks columns {lacking}")
        df = df.select(cols)
        if df["content_hash"].null_count():
            df = df.with_columns(
                pl.when(pl.col("content_hash").is_null())
                .then(pl.lit("nohash-") + pl.col("source") + pl.lit("/") + pl.col("id"))
                .otherwise(pl.col("content_hash"))
                .alias("content_hash")
            )
        frames.append(df)
    if not frames:
        raise StoreError("no source to label")
    return pl.concat(frames, how="vertical_relaxed")


def plan_sample(store: Store, sources: Sequence[str], size: int, seed: int, taxonomy: Taxonomy) -> pl.DataFrame:
    """The stratified sample: distinct content of the sources, with its `stratum` (source+primary style)."""
    pool = read_pools(store, sources)
    uniq = pool.unique("content_hash", keep="first", maintain_order=True)
    prim = primary_styles(store, uniq, taxonomy)
    uniq = uniq.with_columns(prim.alias("primary_style")).with_columns(
        (pl.col("source") + pl.lit("+") + pl.col("primary_style")).alias("stratum")
    )
    return stratified_sample(uniq, size, seed)
