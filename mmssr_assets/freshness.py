"""Dagster's stale status, read the way the UI reads it, for the sensors, schedules and tests.

Dagster marks a materialized asset partition STALE when its code version changed or one of its direct
inputs has a new data version since it was materialized, and MISSING when it never was. The UI computes
this with `CachingStaleStatusResolver` (GraphQL `staleStatusByPartition`); Dagster 1.13 has no public
Python entry point to it, so this module is the one place that touches it. Observations of the external
inputs (source folders, recipe definitions) are reported here too: an input's new data version is what
makes its downstream partitions stale.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._time import get_current_datetime

DATA_VERSION_TAG = "dagster/data_version"  # the tag an observation carries its data version in
NULL_EVENT_POINTER = "NULL"  # an input pointer of a materialization that read no event of that input
FRESH, STALE, MISSING = StaleStatus.FRESH.value, StaleStatus.STALE.value, StaleStatus.MISSING.value


def _key(key) -> dg.AssetKey:
    return key if isinstance(key, dg.AssetKey) else dg.AssetKey(key)


def latest_version(
    instance: dg.DagsterInstance, key, partition: str | None = None, *, observed: bool = False
) -> str | None:
    """The data version of the latest materialization (or, `observed`, observation), else None."""
    record = instance.get_latest_data_version_record(_key(key), is_source=observed, partition_key=partition)
    return (record.event_log_entry.tags or {}).get(DATA_VERSION_TAG) if record else None


@dataclass
class Freshness:
    """Stale status and data versions of asset partitions on one instance, at one moment (cached)."""

    instance: dg.DagsterInstance
    asset_graph: object  # dagster's BaseAssetGraph

    def __post_init__(self) -> None:
        view = AssetGraphView(
            temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
            instance=self.instance,
            asset_graph=self.asset_graph,
        )
        self._resolver = CachingStaleStatusResolver(self.instance, self.asset_graph, loading_context=view)

    @classmethod
    def of(cls, context) -> "Freshness":
        """From a sensor or schedule evaluation context (its instance and code location)."""
        return cls(context.instance, context.repository_def.asset_graph)

    def status(self, key, partition: str | None = None) -> str:
        """FRESH, STALE or MISSING."""
        return self._resolver.get_status(_key(key), partition).value

    def causes(self, key, partition: str | None = None) -> list[str]:
        """Why it is stale, root causes first: e.g. "source_folder[b]: has a new data version"."""
        out = []
        for cause in self._resolver.get_stale_root_causes(_key(key), partition):
            where = cause.asset_key.to_user_string() + (f"[{cause.partition_key}]" if cause.partition_key else "")
            out.append(f"{where}: {cause.reason}")
        return out

    def data_version(self, key, partition: str | None = None) -> str | None:
        """The current data version, or None when never materialized or observed."""
        return latest_version(self.instance, key, partition, observed=self.asset_graph.get(_key(key)).is_external)

    def unobserved_input(self, key, partition: str | None = None) -> str | None:
        """The observed input `key`'s latest materialization read no observation of (it was materialized
        before the input was ever observed), else None. Dagster cannot tell such a partition stale later:
        it compares the observations recorded after the one the materialization read."""
        record = self.instance.get_latest_data_version_record(_key(key), is_source=False, partition_key=partition)
        tags = (record.event_log_entry.tags or {}) if record else {}
        for parent in self.asset_graph.get(_key(key)).parent_keys:
            if (
                self.asset_graph.get(parent).is_observable
                and tags.get(f"dagster/input_event_pointer/{parent.to_user_string()}", NULL_EVENT_POINTER)
                == NULL_EVENT_POINTER
            ):
                return parent.to_user_string()
        return None

    def due(self, keys, partition: str | None = None) -> str | None:
        """The first reason any of `keys` (of one partition) needs a run, or None when all are fresh."""
        for key in keys:
            state = self.status(key, partition)
            if state == MISSING:
                return f"{_key(key).to_user_string()} missing"
            if state == STALE:
                causes = self.causes(key, partition)
                return causes[0] if causes else f"{_key(key).to_user_string()} stale"
            unobserved = self.unobserved_input(key, partition)
            if unobserved:
                return f"{_key(key).to_user_string()} was materialized before {unobserved} was observed"
        return None


def changed_observations(instance: dg.DagsterInstance, key: str, versions: dict[str, str]) -> list[dg.AssetObservation]:
    """Observations of `key`'s partitions whose version differs from the last one observed."""
    return [
        dg.AssetObservation(asset_key=key, partition=p, tags={DATA_VERSION_TAG: v}, metadata={"version": v})
        for p, v in sorted(versions.items())
        if latest_version(instance, key, p, observed=True) != v
    ]


def report(instance: dg.DagsterInstance, events: list[dg.AssetObservation]) -> None:
    """Record observations outside a run (a schedule cannot return asset events; a sensor can)."""
    for event in events:
        instance.report_runless_asset_event(event)
