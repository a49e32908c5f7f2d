"""Schedules: rescore what changed, then refresh selections and reports.

`rescore_changed_sources` compares, per source, the fingerprint of its folder (file names, sizes,
mtimes) and of the scorer (backend, model, options, taxonomy, prompt version) with what the last run
recorded in `<store>/fingerprints/<source>.json`; only stale sources get a run, keyed by both
fingerprints so the same change is never scored twice. The score cache then sends only new or changed
samples to the backend. `refresh_selections` re-selects and re-reports every recipe whose selection
is older than the newest scores (or whose recipe changed), once per day at most (run key holds the date).
"""


import dagster as dg

from mmssr_assets.jobs import ingest_and_score_job
from mmssr_assets.partitions import SOURCES
from mmssr_assets.resources import ScorerResource, SourcesResource, StoreResource
from mmssr_assets.sensors import default_status
from mmssr_core.recipes import Recipe
from mmssr_core.schema import FINGERPRINT_TABLE, SELECTIONS_TABLE
from mmssr_core.store import StoreError

RESCORE_CRON = "0 2 * * *"
REFRESH_CRON = "0 4 * * *"


def stale_sources(st, sources: SourcesResource, known: list[str], scorer_fp: str) -> dict[str, str]:
    """Registered sources whose data or scorer changed since they were scored: name -> why."""
    found = sources.discover() if sources.path().is_dir() else {}
    stale: dict[str, str] = {}
    for s in sorted(known):
        if s not in found:
            continue  # folder gone: nothing to rescore
        try:
            rec = st.read_json(FINGERPRINT_TABLE, s)
        except (StoreError, ValueError):
            rec = {}
        data_fp = sources.fingerprint(s)
        if not rec:
            stale[s] = "never scored"
        elif rec.get("data") != data_fp:
            stale[s] = "data changed"
        elif rec.get("scorer") != scorer_fp:
            stale[s] = "scorer changed" if rec.get("scorer") else "never scored"
    return stale


def _status() -> dg.DefaultScheduleStatus:
    return dg.DefaultScheduleStatus(default_status().value)


@dg.schedule(
    cron_schedule=RESCORE_CRON,
    job=ingest_and_score_job,
    default_status=_status(),
    description="Re-ingests and rescores sources whose files or scorer identity changed since their last run.",
)
def rescore_changed_sources(
    context: dg.ScheduleEvaluationContext, store: StoreResource, sources: SourcesResource, scorer: ScorerResource
):
    st = store.store()
    scorer_fp = scorer.fingerprint()
    known = context.instance.get_dynamic_partitions(SOURCES)
    stale = stale_sources(st, sources, known, scorer_fp)
    if not stale:
        return dg.SkipReason(f"all {len(known)} sources are up to date")
    return [
        dg.RunRequest(
            partition_key=s,
            run_key=f"rescore:{s}:{sources.fingerprint(s)}:{scorer_fp}",
            tags={"mmssr/trigger": "rescore", "mmssr/reason": why},
        )
        for s, why in stale.items()
    ]


def _newest_scores_mtime(st, known: list[str]) -> float:
    times = [
        st.path(table, s).stat().st_mtime
        for s in known
        for table in ("capability_scores", "style_labels")
        if st.exists(table, s)
    ]
    return max(times, default=0.0)


def stale_recipes(st, recipes: list[Recipe], known: list[str]) -> dict[str, str]:
    newest = _newest_scores_mtime(st, known)
    if newest == 0.0:
        return {}
    stale: dict[str, str] = {}
    for r in recipes:
        path = st.path(SELECTIONS_TABLE, r.name, ".json")
        if not path.exists():
            stale[r.name] = "never selected"
            continue
        try:
            summary = st.read_json(SELECTIONS_TABLE, r.name)
        except (StoreError, ValueError):
            summary = {}
        if summary.get("recipe") != r.to_dict():
            stale[r.name] = "recipe changed"
        elif path.stat().st_mtime < newest:
            stale[r.name] = "scores changed"
    return stale


def build_refresh_schedule(recipes: list[Recipe], job) -> dg.ScheduleDefinition:
    @dg.schedule(
        cron_schedule=REFRESH_CRON,
        job=job,
        default_status=_status(),
        description="Re-selects and re-reports every recipe whose selection is older than the newest scores.",
    )
    def refresh_selections(context: dg.ScheduleEvaluationContext, store: StoreResource):
        st = store.store()
        known = context.instance.get_dynamic_partitions(SOURCES)
        stale = stale_recipes(st, recipes, known)
        if not stale:
            return dg.SkipReason("no scores yet, or every selection is newer than the scores")
        day = context.scheduled_execution_time.strftime("%Y-%m-%d") if context.scheduled_execution_time else "now"
        return [
            dg.RunRequest(partition_key=name, run_key=f"refresh:{name}:{day}",
                          tags={"mmssr/trigger": "refresh", "mmssr/reason": why})
            for name, why in stale.items()
        ]

    return refresh_selections
