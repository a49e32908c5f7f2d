"""`new_sources_sensor`: a new source folder under the sources root becomes a partition and a run.

Folders already registered as partitions are left alone (their rescoring is the schedule's job), so
adding the 11th domain never touches the other ten.
"""


import os

import dagster as dg

from mmssr_assets.jobs import ingest_and_score_job
from mmssr_assets.partitions import SOURCES, sources_partitions
from mmssr_assets.resources import SourcesResource

ENV_AUTOMATION = "MMSSR_AUTOMATION"  # "on": sensors and schedules start running with the code location


def default_status() -> dg.DefaultSensorStatus:
    on = os.environ.get(ENV_AUTOMATION, "").lower() in ("1", "on", "true", "yes")
    return dg.DefaultSensorStatus.RUNNING if on else dg.DefaultSensorStatus.STOPPED


def new_sources(found: dict, known: set[str]) -> list[str]:
    return sorted(s for s in found if s not in known)


@dg.sensor(
    job=ingest_and_score_job,
    minimum_interval_seconds=30,
    default_status=default_status(),
    description="Adds a `sources` partition and requests an ingest_and_score run for each new source folder.",
)
def new_sources_sensor(context: dg.SensorEvaluationContext, sources: SourcesResource):
    root = sources.path()
    if not root.is_dir():
        return dg.SkipReason(f"sources root {root} does not exist")
    found = sources.discover()
    known = set(context.instance.get_dynamic_partitions(SOURCES))
    new = new_sources(found, known)
    if not new:
        return dg.SkipReason(f"no new source folder under {root} ({len(found)} known)")
    context.log.info(f"new sources under {root}: {', '.join(new)}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                partition_key=s,
                run_key=f"new-source:{s}:{sources.fingerprint(s)}",
                tags={"mmssr/trigger": "new_source"},
            )
            for s in new
        ],
        dynamic_partitions_requests=[sources_partitions.build_add_request(new)],
    )
