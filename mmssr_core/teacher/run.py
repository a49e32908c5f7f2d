"""`label_sources`: sample, ask, validate, cache, then write each source's `teacher_labels` table."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

from mmssr_core.chunk_cache import Flusher
from mmssr_core.schema import TEACHER_TABLE, TEACHER_UNIT
from mmssr_core.store import Store
from mmssr_core.teacher.answer import VALIDATION_REASONS, TeacherAnswer, TeacherFailure
from mmssr_core.teacher.cache import TeacherCache
from mmssr_core.teacher.client import TeacherClient, TeacherRequest
from mmssr_core.teacher.sampling import plan_sample
from mmssr_core.teacher.table import build_teacher_table


@dataclass
class LabelProgress:
    done: int  # samples answered (or failed) so far in this run, cached ones included
    total: int  # samples in the stratified sample
    cached: int
    seconds: float


@dataclass
class LabelRunResult:
    sources: list[str]
    sampled: int  # distinct samples in the stratified sample
    labelled: int  # answered in this run (valid)
    cached: int  # valid in the cache before this run
    failed: int  # sampled samples without a valid label after this run
    asks: int  # chat completions that got an answer in this run (re-asks included)
    seconds: float
    teacher: str
    digest: str
    prompt_version: str
    strata: dict[str, int] = field(default_factory=dict)  # stratum -> sampled
    failures_by_reason: dict[str, int] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)  # source -> path

    def to_dict(self) -> dict:
        return asdict(self)


def label_sources(
    store: Store,
    sources: Sequence[str],
    size: int,
    client: TeacherClient,
    *,
    seed: int = 0,
    chunk_size: int = 32,
    retry_failures: bool = False,
    progress: Callable[[LabelProgress], None] | None = None,
    flush_seconds: float | None = None,
) -> LabelRunResult:
    """Label a stratified sample of `sources` with the teacher; resumable (see the package docstring).

    Answers go to the cache every `chunk_size` samples and at least every `flush_seconds` (default
    $MMSSR_FLUSH_SECONDS or 15 s)."""
    t0 = time.monotonic()
    taxonomy = client.taxonomy
    if size < 1:
        raise ValueError("size must be >= 1")
    sample = plan_sample(store, sources, size, seed, taxonomy)
    identity = client.identity()
    cache = TeacherCache(store, identity)
    todo, n_cached_ok = _still_to_ask(sample, cache.resolved(), retry_failures)
    cached = sample.height - len(todo)

    def report(done: int) -> None:
        if progress is not None:
            progress(LabelProgress(cached + done, sample.height, cached, time.monotonic() - t0))

    report(0)
    asks, labelled = _ask_all(client, cache, todo, chunk_size, Flusher(chunk_size, flush_seconds), report)
    resolved = cache.resolved()
    result = _summary(store, sources, sample, resolved, identity, labelled, n_cached_ok, asks, t0)
    _commit_tables(store, sources, resolved, identity, taxonomy, result, seed, size)
    report(len(todo))
    return result


def _still_to_ask(sample: pl.DataFrame, before: pl.DataFrame, retry_failures: bool) -> tuple[list[dict], int]:
    """The sampled rows the cache does not settle, and how many sampled rows it already answers validly.

    A validation failure is the teacher's answer (kept unless asked to retry); transport failures retry."""
    ok_before = set(before.filter(pl.col("answer").is_not_null())["content_hash"].to_list())
    settled = set(ok_before)
    if not retry_failures:
        settled |= set(before.filter(pl.col("reason").is_in(list(VALIDATION_REASONS)))["content_hash"].to_list())
    todo = [r for r in sample.iter_rows(named=True) if r["content_hash"] not in settled]
    return todo, sum(1 for h in sample["content_hash"].to_list() if h in ok_before)


def _ask_one(client: TeacherClient, row: dict) -> tuple[dict, Any, int]:
    """(row, answer or failure, asks) for one sampled row; an unexpected error fails only this sample."""
    files = row["image_files"] or []
    req = TeacherRequest(
        content_hash=row["content_hash"],
        sample_id=row["id"],
        source=row["source"],
        conversations=tuple({"from": t["from"], "value": t["value"]} for t in (row["conversations"] or [])),
        image_file=files[0] if files else None,
    )
    try:
        out, n = client.label(req)
    except Exception as exc:  # noqa: BLE001 - one sample never stops the run
        out, n = TeacherFailure("teacher_error", f"sample {row['id']!r}: {type(exc).__name__}: {exc}"[:500]), 0
    return row, out, n


def _cache_row(row: dict, out: Any, n: int) -> dict:
    if isinstance(out, TeacherAnswer):
        return {
            "content_hash": row["content_hash"],
            "asks": n,
            "answer": json.dumps({"scores": out.scores, "styles": out.styles}),
        }
    return {
        "content_hash": row["content_hash"],
        "asks": n,
        "reason": out.reason,
        "message": f"sample {row['id']!r}: {out.message}"[:500],
    }


def _ask_all(
    client: TeacherClient,
    cache: TeacherCache,
    todo: list[dict],
    chunk_size: int,
    flusher: Flusher,
    report: Callable[[int], None],
) -> tuple[int, int]:
    """Ask the teacher about every row of `todo` (the client's concurrency in threads), flushing answers to
    the cache by count and by time; returns (asks, valid answers)."""
    asks = labelled = done = 0
    pending: list[dict] = []
    with ThreadPoolExecutor(max_workers=max(1, client.concurrency), thread_name_prefix="mmssr-teacher") as pool:
        try:
            for c0 in range(0, len(todo), chunk_size):
                chunk = todo[c0 : c0 + chunk_size]
                for row, out, n in pool.map(lambda r: _ask_one(client, r), chunk):
                    asks += n
                    labelled += isinstance(out, TeacherAnswer)
                    pending.append(_cache_row(row, out, n))
                    if flusher.due(len(pending)):  # by count or by time: a kill loses seconds, not a chunk
                        cache.append(pending)
                        pending.clear()
                        flusher.flushed()
                done += len(chunk)
                report(done)
        finally:
            cache.append(pending)  # an interrupt keeps what was answered
    return asks, labelled


def _summary(
    store: Store,
    sources: Sequence[str],
    sample: pl.DataFrame,
    resolved: pl.DataFrame,
    identity,
    labelled: int,
    n_cached_ok: int,
    asks: int,
    t0: float,
) -> LabelRunResult:
    sampled = sample.select("content_hash").join(resolved, on="content_hash", how="left")
    failed = sampled.filter(pl.col("answer").is_null())
    reasons = failed["reason"].fill_null("not_labelled").value_counts()
    return LabelRunResult(
        sources=list(sources),
        sampled=sample.height,
        labelled=labelled,
        cached=n_cached_ok,
        failed=failed.height,
        asks=asks,
        seconds=round(time.monotonic() - t0, 3),
        teacher=identity.label(),
        digest=identity.digest,
        prompt_version=identity.prompt_version,
        strata=dict(sorted(sample.group_by("stratum").len().iter_rows())),
        failures_by_reason={r["reason"]: int(r["count"]) for r in reasons.iter_rows(named=True)},
        tables={source: str(store.path(TEACHER_TABLE, source)) for source in sources},
    )


def _commit_tables(
    store: Store,
    sources: Sequence[str],
    resolved: pl.DataFrame,
    identity,
    taxonomy,
    result: LabelRunResult,
    seed: int,
    size: int,
) -> None:
    """Each source's table and its summary, committed together."""
    frames = {source: build_teacher_table(store, source, resolved, identity, taxonomy) for source in sources}
    meta = {
        "identity": asdict(identity),
        "label": identity.label(),
        "digest": identity.digest,
        "seed": seed,
        "size": size,
        "result": result.to_dict(),
    }
    for source in sources:
        with store.transaction(TEACHER_UNIT, source) as tx:
            tx.write(TEACHER_TABLE, frames[source])
            tx.write_json(TEACHER_TABLE, meta)
