"""Score one source of the pool with any backend, through the cache, into the store.

Flow: read `raw_pool/<source>`, build one `ScoreRequest` per distinct content hash (duplicates are scored
once), look the hashes up in the cache of the backend's identity, send only missing (hash, target) pairs
to the backend in batches, flush results to the cache every `chunk_size` samples, then derive the output
tables from the cache: `capability_scores/<source>`, `style_labels/<source>` (exactly one row per
accepted sample, null where scoring failed) and `score_failures/<source>` (one row per failed target).

Results are flushed every `chunk_size` samples and at least every `flush_seconds` (a batch that alone
takes longer makes the next batches smaller), so a kill loses at most seconds of work; the next run
resumes from the cache. The three per-source tables are committed together (one store transaction).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import polars as pl

from mmssr_core.chunk_cache import Flusher
from mmssr_core.prompts import DIGITS, PromptSet
from mmssr_core.redact import redact
from mmssr_core.schema import (
    CAPABILITY_TABLE,
    FAILURE_TABLE,
    RAW_POOL_TABLE,
    SCORER_COLUMN,
    SCORES_UNIT,
    STYLE_TABLE,
    argmax_column,
)
from mmssr_core.scoring.base import BackendUnavailable, Failure, ScoreRequest, ScorerIdentity, ScoringBackend
from mmssr_core.scoring.cache import STYLES_TARGET, ChunkBuffer, ScoreCache
from mmssr_core.scoring.scores_table import ScoresBuild, build_scores, build_scores_table  # noqa: F401 - importable here
from mmssr_core.store import Store, StoreError
from mmssr_core.taxonomy import Taxonomy, load_taxonomy

TARGET_GROUPS = ("capabilities", "styles")


def capability_scores_schema(keys: Sequence[str]) -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {"id": pl.Utf8, "source": pl.Utf8, "content_hash": pl.Utf8}
    schema.update({k: pl.Float64 for k in keys})
    schema.update({argmax_column(k): pl.Int8 for k in keys})
    schema[SCORER_COLUMN] = pl.Utf8
    return schema


STYLE_LABELS_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.Utf8,
    "source": pl.Utf8,
    "content_hash": pl.Utf8,
    "styles": pl.List(pl.Utf8),
    SCORER_COLUMN: pl.Utf8,
}

SCORE_FAILURES_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.Utf8,
    "source": pl.Utf8,
    "content_hash": pl.Utf8,
    "target": pl.Utf8,  # capability key or "styles"
    "reason": pl.Utf8,  # timeout, http_5xx, malformed_answer, image_error, backend_error, ...
    "message": pl.Utf8,
    SCORER_COLUMN: pl.Utf8,
}


@dataclass
class ScoreProgress:
    """Passed to the `progress` callback after every batch (and once at the start and end)."""

    source: str
    done: int  # distinct samples (content hashes) handled so far in this run, cached ones included
    total: int  # distinct samples of the source
    cached: int  # distinct samples complete in the cache before this run
    seconds: float


@dataclass
class ScoreRunResult:
    """What one `score_source` call did. Counts are samples (rows of raw_pool).

    scored + cached + failed == total: `cached` rows were complete before the run, `scored` rows were
    (at least partly) computed now and are complete, `failed` rows still miss at least one target.
    `computed` counts distinct content hashes sent to the backend.
    """

    source: str
    scored: int
    cached: int
    failed: int
    seconds: float
    identity: str  # ScorerIdentity.label()
    total: int = 0
    computed: int = 0
    digest: str = ""
    targets: tuple[str, ...] = TARGET_GROUPS
    failures_by_reason: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["targets"] = list(self.targets)
        return d


# -- helpers ---------------------------------------------------------------------------------
def _target_list(keys: Sequence[str], targets: Sequence[str]) -> list[str]:
    unknown = [t for t in targets if t not in TARGET_GROUPS]
    if unknown or not targets:
        raise ValueError(f"targets must be a non-empty subset of {TARGET_GROUPS}, got {list(targets)}")
    out: list[str] = []
    if "capabilities" in targets:
        out.extend(keys)
    if "styles" in targets:
        out.append(STYLES_TARGET)
    return out


def _fallback_hash(row: dict) -> str:
    blob = json.dumps([row.get("conversations"), row.get("image_files")], sort_keys=True, default=str)
    return "nohash-" + hashlib.sha256(blob.encode()).hexdigest()


def _read_pool(store: Store, source: str) -> pl.DataFrame:
    try:
        df = store.read(RAW_POOL_TABLE, source)
    except StoreError as exc:
        raise StoreError(f"source {source!r} has not been ingested: {exc}") from None
    cols = ["id", "source", "content_hash", "image_files", "conversations"]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise StoreError(f"raw_pool/{source} lacks columns {missing}")
    df = df.select(cols)
    if df["content_hash"].null_count():
        hashes = [
            h if h is not None else _fallback_hash(r) for h, r in zip(df["content_hash"], df.iter_rows(named=True))
        ]
        df = df.with_columns(content_hash=pl.Series(hashes, dtype=pl.Utf8))
    return df


def _request(row: dict, prompts: PromptSet) -> ScoreRequest:
    convs = tuple({"from": t["from"], "value": t["value"]} for t in (row["conversations"] or []))
    files = row["image_files"] or []
    return ScoreRequest(
        key=row["content_hash"],
        sample_id=row["id"],
        prefix=prompts.prefix(convs),
        image_file=files[0] if files else None,
        conversations=convs,
        metadata={"source": row["source"]},
    )


def _check_dist(x: Any) -> np.ndarray | Failure:
    if isinstance(x, Failure):
        return x
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        return Failure("invalid_distribution", f"not a numeric vector: {exc}")
    if arr.shape != (len(DIGITS),):
        return Failure("invalid_distribution", f"expected {len(DIGITS)} probabilities, got shape {arr.shape}")
    total = float(arr.sum())
    # one sum + one min decide validity: NaN/inf make the sum non-finite, negatives show in the min
    if not (abs(total - 1.0) < 1e-4) or arr.min() < 0:
        return Failure("invalid_distribution", f"not a probability vector: {arr.tolist()}")
    return arr / total


def _check_styles(x: Any, labels: Sequence[str]) -> list[str] | Failure:
    if isinstance(x, Failure):
        return x
    if not isinstance(x, (list, tuple)) or not x:
        return Failure("invalid_styles", f"expected a non-empty label list, got {x!r:.80}")
    bad = [s for s in x if s not in labels]
    if bad or len(set(x)) != len(x):
        return Failure("invalid_styles", f"unknown or repeated labels {list(x)!r:.120}")
    return [str(s) for s in x]


def _exc_failure(exc: BaseException) -> Failure:
    return Failure("backend_error", redact(f"{type(exc).__name__}: {exc}")[:500])


def _call_backend(
    backend: ScoringBackend,
    requests: list[ScoreRequest],
    queries: list[str],
    want_styles: bool,
    prompts: PromptSet,
) -> tuple[list[list[Any]], list[Any]]:
    """One batch. An exception for the whole batch is retried sample by sample, so one poisoned sample
    cannot take its neighbours down; an exception for a single sample becomes its Failure."""

    def run(reqs: list[ScoreRequest]) -> tuple[list[list[Any]], list[Any]]:
        combined = getattr(backend, "score_all", None)
        if combined is not None and queries and want_styles:
            dists, styles = combined(reqs, queries, prompts, with_styles=True)
        else:
            dists = backend.digit_distributions(reqs, queries, prompts) if queries else [[] for _ in reqs]
            styles = backend.styles(reqs, prompts) if want_styles else [None for _ in reqs]
        if len(dists) != len(reqs) or len(styles) != len(reqs) or any(len(d) != len(queries) for d in dists):
            raise RuntimeError("backend returned a result of the wrong shape")
        return list(dists), list(styles)

    try:
        return run(requests)
    except BackendUnavailable:
        raise  # the engine cannot run at all: stop the run once, with the root cause
    except Exception as exc:  # noqa: BLE001 - isolate the failing sample below
        if len(requests) == 1:
            f = _exc_failure(exc)
            return [[f] * len(queries)], [f if want_styles else None]
    dists_out: list[list[Any]] = []
    styles_out: list[Any] = []
    for req in requests:
        d, s = _call_backend(backend, [req], queries, want_styles, prompts)
        dists_out.extend(d)
        styles_out.extend(s)
    return dists_out, styles_out


# -- the runner ------------------------------------------------------------------------------
def score_source(
    store: Store,
    source: str,
    backend: ScoringBackend,
    *,
    taxonomy: Taxonomy | None = None,
    targets: Sequence[str] = TARGET_GROUPS,
    batch_size: int | None = 8,
    chunk_size: int = 256,
    progress: Callable[[ScoreProgress], None] | None = None,
    profile: str | None = None,
    flush_seconds: float | None = None,
) -> ScoreRunResult:
    """Score every accepted sample of `source` not yet in the cache; write the per-source tables.

    `targets`: "capabilities", "styles" or both (styles and scores may come from different backends).
    `batch_size`: samples per backend call (None: the backend's `default_batch_size`, else 8).
    `chunk_size` and `flush_seconds` (default $MMSSR_FLUSH_SECONDS or 15 s): results go to the cache every
    `chunk_size` samples and at least every `flush_seconds`, i.e. the most work a kill can lose.
    """
    t0 = time.monotonic()
    taxonomy = taxonomy or load_taxonomy()
    prompts = PromptSet.from_taxonomy(taxonomy, profile=profile)
    wanted = _target_list(prompts.capability_keys, targets)
    targets = tuple(t for t in TARGET_GROUPS if t in targets)
    batch_size = int(
        batch_size or getattr(backend, "default_batch_size", None) or getattr(backend, "batch_size", None) or 8
    )
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    flusher = Flusher(chunk_size, flush_seconds)
    identity = backend.identity(prompts)

    pool = _read_pool(store, source)
    cache = ScoreCache(store, identity)
    uniq = pool.unique("content_hash", keep="first", maintain_order=True)
    keys = uniq.select("content_hash")

    # what the cache already holds: complete hashes are skipped, partial ones redo their missing targets
    done = cache.done(keys, wanted)
    per_hash = done.group_by("content_hash").agg(pl.col("target"))
    complete = per_hash.filter(pl.col("target").list.len() == len(wanted)).select("content_hash")
    todo = uniq.join(complete, on="content_hash", how="anti", maintain_order="left")
    partial = {
        h: set(t) for h, t in per_hash.join(todo.select("content_hash"), on="content_hash", how="semi").iter_rows()
    }
    cached_hashes = uniq.height - todo.height

    def report(handled: int) -> None:
        if progress is not None:
            progress(ScoreProgress(source, cached_hashes + handled, uniq.height, cached_hashes, time.monotonic() - t0))

    report(0)
    _score_missing(backend, todo, partial, wanted, prompts, cache, flusher, batch_size, report)
    result = _commit_outputs(store, source, pool, cache, keys, todo, wanted, targets, prompts, identity, t0)
    report(todo.height)
    return result


def _score_missing(
    backend,
    todo: pl.DataFrame,
    partial: dict,
    wanted: list[str],
    prompts: PromptSet,
    cache: ScoreCache,
    flusher: Flusher,
    batch_size: int,
    report: Callable[[int], None],
) -> None:
    """Send the missing (sample, target) pairs in batches, flushing results to the cache by count and time.

    A batch that alone takes longer than the flush interval shrinks the batches after it, so the work a
    kill can lose stays near the interval whatever the backend's speed (down to one sample per batch).
    """
    query_of = dict(zip(prompts.capability_keys, prompts.capability_queries))
    pending = ChunkBuffer()
    handled = 0
    samples_pending = 0
    try:
        for chunk in todo.iter_slices(flusher.every):
            groups: dict[tuple[str, ...], list[dict]] = {}  # by the exact set of missing targets
            for row in chunk.iter_rows(named=True):
                have = partial.get(row["content_hash"], ())
                groups.setdefault(tuple(t for t in wanted if t not in have), []).append(row)
            for missing, rows in groups.items():
                start = 0
                while start < len(rows):
                    batch_rows = rows[start : start + batch_size]
                    began = time.monotonic()
                    _score_batch(backend, batch_rows, missing, prompts, query_of, pending)
                    took = time.monotonic() - began
                    start += len(batch_rows)
                    handled += len(batch_rows)
                    samples_pending += len(batch_rows)
                    if took > flusher.seconds and batch_size > 1:
                        batch_size = max(1, int(batch_size * flusher.seconds / took))
                    if flusher.due(samples_pending):
                        cache.append(pending)
                        pending.clear()
                        samples_pending = 0
                        flusher.flushed()
                    report(handled)
    finally:
        # an interrupt (Ctrl-C) keeps the finished batches
        if len(pending):
            cache.append(pending)


def _commit_outputs(
    store: Store,
    source: str,
    pool: pl.DataFrame,
    cache: ScoreCache,
    keys: pl.DataFrame,
    todo: pl.DataFrame,
    wanted: list[str],
    targets: tuple[str, ...],
    prompts: PromptSet,
    identity: ScorerIdentity,
    t0: float,
) -> ScoreRunResult:
    """Derive the per-source tables from the cache and commit them (and their summaries) as one unit."""
    label = identity.label()
    ok, bad = cache.results(keys, wanted)
    ok_count = ok.group_by("content_hash").len()
    complete_now = ok_count.filter(pl.col("len") == len(wanted)).select("content_hash")
    status = (
        pool.select("content_hash")
        .join(complete_now.with_columns(_c=pl.lit(True)), on="content_hash", how="left", maintain_order="left")
        .join(
            todo.select("content_hash").with_columns(_t=pl.lit(True)),
            on="content_hash",
            how="left",
            maintain_order="left",
        )
        .select(
            pl.when(pl.col("_c").is_null())
            .then(pl.lit("failed"))
            .when(pl.col("_t").is_not_null())
            .then(pl.lit("scored"))
            .otherwise(pl.lit("cached"))
            .alias("status")
        )["status"]
    )
    count = dict(status.value_counts().iter_rows())
    fail_df = _failure_table(pool, ok, bad, wanted, complete_now, label)
    with store.transaction(SCORES_UNIT, source) as tx:
        if _fingerprint(_read_pool(store, source)) != _fingerprint(pool):  # a re-ingest landed meanwhile
            raise StoreError(
                f"the raw pool of {source!r} changed while it was being scored; its results are "
                f"in the cache: run the scoring again to score the current pool"
            )
        if "capabilities" in targets:
            tx.write(CAPABILITY_TABLE, _capability_table(pool, ok, prompts.capability_keys, label))
        if "styles" in targets:
            tx.write(STYLE_TABLE, _style_table(pool, ok, label))
        old = tx.read(FAILURE_TABLE)
        if old is not None:  # keep the other target group's failures (written by another backend's run)
            if SCORER_COLUMN not in old.columns:
                old = old.with_columns(pl.lit(None, dtype=pl.Utf8).alias(SCORER_COLUMN))
            keep = old.filter(~pl.col("target").is_in(wanted)).select(list(SCORE_FAILURES_SCHEMA))
            fail_df = pl.concat([keep.cast(SCORE_FAILURES_SCHEMA), fail_df], how="vertical")
        tx.write(FAILURE_TABLE, fail_df)
        mine = fail_df.filter(pl.col("target").is_in(wanted))
        result = ScoreRunResult(
            source=source,
            scored=int(count.get("scored", 0)),
            cached=int(count.get("cached", 0)),
            failed=int(count.get("failed", 0)),
            seconds=round(time.monotonic() - t0, 3),
            identity=label,
            total=pool.height,
            computed=todo.height,
            digest=identity.digest,
            targets=targets,
            failures_by_reason={r: int(n) for r, n in mine["reason"].value_counts().iter_rows()} if mine.height else {},
        )
        meta = {
            "identity": asdict(identity),
            "label": label,
            "digest": identity.digest,
            "pool_fingerprint": _fingerprint(pool),
            "result": result.to_dict(),
        }
        for group, table in (("capabilities", CAPABILITY_TABLE), ("styles", STYLE_TABLE)):
            if group in targets:
                tx.write_json(table, meta)
    return result


def _score_batch(
    backend: ScoringBackend,
    rows: list[dict],
    missing: tuple[str, ...],
    prompts: PromptSet,
    query_of: dict[str, str],
    out: ChunkBuffer,
) -> None:
    """Score one batch of samples on their missing targets, adding successes and failures to `out`."""
    keys = [t for t in missing if t != STYLES_TARGET]
    queries = [query_of[k] for k in keys]
    want_styles = STYLES_TARGET in missing
    reqs = []
    for r in rows:
        try:
            reqs.append(_request(r, prompts))
        except Exception as exc:  # noqa: BLE001 - a sample whose prompt cannot be built
            msg = f"sample {r['id']!r}: {type(exc).__name__}: {exc}"[:500]
            for t in missing:
                out.add_failure(r["content_hash"], t, "bad_sample", msg)
    if not reqs:
        return
    dists, styles = _call_backend(backend, reqs, queries, want_styles, prompts)
    for req, dist_row, style in zip(reqs, dists, styles):
        for key, d in zip(keys, dist_row):
            d = _check_dist(d)
            if isinstance(d, Failure):
                out.add_failure(req.key, key, d.reason, d.message)
            else:
                out.add_dist(req.key, key, d)
        if want_styles:
            s = _check_styles(style, prompts.styles)
            if isinstance(s, Failure):
                out.add_failure(req.key, STYLES_TARGET, s.reason, s.message)
            else:
                out.add_labels(req.key, s)


def _fingerprint(pool: pl.DataFrame) -> str:
    h = hashlib.sha256()
    for i, c in zip(pool["id"].to_list(), pool["content_hash"].to_list()):
        h.update(f"{i}\0{c}\n".encode())
    return h.hexdigest()[:16]


def _capability_table(pool: pl.DataFrame, ok: pl.DataFrame, keys: Sequence[str], label: str) -> pl.DataFrame:
    base = pool.select("id", "source", "content_hash")
    schema = capability_scores_schema(keys)
    caps = ok.filter(pl.col("target") != STYLES_TARGET).select(
        "content_hash",
        "target",
        expected=pl.col("dist").list.eval(pl.element() * pl.int_range(pl.len()).cast(pl.Float64)).list.sum(),
        argmax=pl.col("dist").list.arg_max().cast(pl.Int8),
    )
    out = base
    if not caps.is_empty():
        wide_e = caps.pivot(on="target", index="content_hash", values="expected")
        wide_a = caps.pivot(on="target", index="content_hash", values="argmax")
        wide_a = wide_a.rename({c: argmax_column(c) for c in wide_a.columns if c != "content_hash"})
        out = out.join(wide_e, on="content_hash", how="left", maintain_order="left")
        out = out.join(wide_a, on="content_hash", how="left", maintain_order="left")
    out = out.with_columns(
        [pl.lit(None, dtype=pl.Float64).alias(k) for k in keys if k not in out.columns]
        + [pl.lit(None, dtype=pl.Int8).alias(argmax_column(k)) for k in keys if argmax_column(k) not in out.columns]
    ).with_columns(pl.lit(label).alias(SCORER_COLUMN))
    return out.select(list(schema)).cast(schema)


def _style_table(pool: pl.DataFrame, ok: pl.DataFrame, label: str) -> pl.DataFrame:
    st = ok.filter(pl.col("target") == STYLES_TARGET).select("content_hash", pl.col("labels").alias("styles"))
    out = pool.select("id", "source", "content_hash").join(st, on="content_hash", how="left", maintain_order="left")
    out = out.with_columns(pl.lit(label).alias(SCORER_COLUMN))
    return out.select(list(STYLE_LABELS_SCHEMA)).cast(STYLE_LABELS_SCHEMA)


def _failure_table(
    pool: pl.DataFrame,
    ok: pl.DataFrame,
    bad: pl.DataFrame,
    wanted: Sequence[str],
    complete: pl.DataFrame,
    label: str,
) -> pl.DataFrame:
    """One row per (sample, target) still without a success, with the latest failure's reason."""
    base = pool.select("id", "source", "content_hash").join(
        complete, on="content_hash", how="anti", maintain_order="left"
    )
    if base.is_empty():
        return pl.DataFrame(schema=SCORE_FAILURES_SCHEMA)
    grid = base.join(pl.DataFrame({"target": list(wanted)}, schema={"target": pl.Utf8}), how="cross")
    grid = grid.join(
        ok.select("content_hash", "target"), on=["content_hash", "target"], how="anti", maintain_order="left"
    )
    out = grid.join(bad, on=["content_hash", "target"], how="left", maintain_order="left").with_columns(
        pl.col("reason").fill_null("not_scored"),
        pl.col("message")
        .fill_null("no result in the cache (interrupted run?)")
        .map_elements(redact, return_dtype=pl.Utf8),  # caches written before redaction existed, too
        pl.lit(label).alias(SCORER_COLUMN),
    )
    return out.select(list(SCORE_FAILURES_SCHEMA)).cast(SCORE_FAILURES_SCHEMA)


# -- queries over finished work --------------------------------------------------------------
def score_targets_done(
    store: Store,
    source: str,
    identity: ScorerIdentity,
    targets: Sequence[str] = TARGET_GROUPS,
) -> bool:
    """True when the per-source tables of `targets` were written by `identity` for the current raw_pool
    content (same ids and hashes). Failed samples still count as done here: check `score_failures`."""
    tables = {"capabilities": CAPABILITY_TABLE, "styles": STYLE_TABLE}
    try:
        pool = _read_pool(store, source)
    except StoreError:
        return False
    fp = _fingerprint(pool)
    for t in targets:
        table = tables[t]
        if not store.exists(table, source):
            return False
        try:
            meta = store.read_json(table, source)
        except (StoreError, ValueError):
            return False
        if meta.get("digest") != identity.digest or meta.get("pool_fingerprint") != fp:
            return False
    return True
