"""Materialize the whole graph headlessly, through Dagster itself.

Same `Definitions` (assets, checks, resources) the UI loads, executed in-process against a real
`DagsterInstance` ($DAGSTER_HOME when set, so the UI later shows these runs; else an ephemeral one):
1. every source folder under the sources root becomes a `sources` partition and every recipe a `recipes`
   partition (missing ones are added);
2. one `ingest_and_score` run per source (source_folder observed -> raw_pool -> capability_scores +
   style_labels + checks);
3. one `select_and_report` run per recipe (scores_table and duplicates once, then recipe observed ->
   selected_subset -> eval_report + checks).
A failing source or recipe is reported and the rest go on; the exit status says whether all passed.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import dagster as dg

from mmssr_assets.assets.observed import RECIPE, SOURCE_FOLDER
from mmssr_assets.definitions import build_definitions
from mmssr_assets.freshness import changed_observations, report
from mmssr_assets.jobs import INGEST_AND_SCORE, SELECT_AND_REPORT
from mmssr_assets.partitions import RECIPES, SOURCES
from mmssr_assets.resources import ScorerResource, SourcesResource, default_scorer
from mmssr_assets.versions import recipe_version
from mmssr_core.recipes import Recipe, load_recipes
from mmssr_core.schema import SELECTIONS_TABLE
from mmssr_core.store import Store

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class MaterializeSummary:
    sources: dict[str, dict] = field(default_factory=dict)
    subsets: dict[str, dict] = field(default_factory=dict)
    reports: dict[str, dict] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    store: str = ""
    sources_root: str = ""
    dagster_home: str | None = None
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)  # sources / recipes

    @property
    def ok(self) -> bool:
        return not self.failures and all(self.checks.values())

    def to_dict(self) -> dict:
        return {
            "sources": self.sources,
            "subsets": self.subsets,
            "reports": self.reports,
            "checks": self.checks,
            "failures": self.failures,
            "ok": self.ok,
            "store": self.store,
            "sources_root": self.sources_root,
            "dagster_home": self.dagster_home,
            "seconds": round(self.seconds, 3),
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
        }


def _value(v):
    return getattr(v, "value", v)


def _materializations(result) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for ev in result.get_asset_materialization_events():
        mat = ev.step_materialization_data.materialization
        out[mat.asset_key.to_user_string()] = {k: _value(v) for k, v in mat.metadata.items()}
    return out


def _checks(result) -> list:
    return list(result.get_asset_check_evaluations())


def _run_error(result) -> str:
    for ev in result.all_events:
        if ev.is_step_failure or ev.is_failure:
            data = ev.event_specific_data
            err = getattr(data, "error", None)
            if err is not None:
                return err.message.strip().splitlines()[0]
    return "run failed"


def get_instance() -> dg.DagsterInstance:
    """$DAGSTER_HOME's instance when set (runs show up in the UI), else an ephemeral one.

    An empty $DAGSTER_HOME gets the instance settings of the current folder (the repository's
    `.dagster_home/dagster.yaml`, or a `dagster.yaml` there), so its concurrency pools and retries apply;
    none there means Dagster's defaults. Nothing is looked up inside the installed package."""
    if os.environ.get("DAGSTER_HOME"):
        home = Path(os.environ["DAGSTER_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        if not (home / "dagster.yaml").exists():
            for candidate in (Path.cwd() / ".dagster_home" / "dagster.yaml", Path.cwd() / "dagster.yaml"):
                if candidate.is_file() and candidate.parent.resolve() != home.resolve():
                    shutil.copyfile(candidate, home / "dagster.yaml")
                    break
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def materialize_all(
    *,
    sources_root: str | os.PathLike,
    store_root: str | os.PathLike,
    scorer: ScorerResource | None = None,
    recipes: list[Recipe] | None = None,
    instance: dg.DagsterInstance | None = None,
    batch_size: int = 8,
    only: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> MaterializeSummary:
    """One run per source, then one per recipe; `progress` gets a line per step and outcome, `on_step`
    (done, total) after every step."""
    from mmssr_core.ingest import discover_sources

    t0 = time.monotonic()
    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    sources_root = Path(sources_root).resolve()
    store_root = Path(store_root).resolve()
    recipes = recipes if recipes is not None else load_recipes(store_root=store_root)
    defs = build_definitions(
        store_root=store_root, sources_root=sources_root, scorer=scorer or default_scorer(), recipes=recipes
    )
    instance = instance or get_instance()
    summary = MaterializeSummary(
        store=str(store_root), sources_root=str(sources_root), dagster_home=os.environ.get("DAGSTER_HOME")
    )
    names = [s for s in discover_sources(sources_root) if only is None or s in only]
    _register(instance, {SOURCES: names, RECIPES: [r.name for r in recipes]}, say)
    sources = SourcesResource(root=str(sources_root))
    report(instance, changed_observations(instance, SOURCE_FOLDER, {s: sources.fingerprint(s) for s in names}))
    steps = _Steps(len(names) + len(recipes), say, on_step)
    for name in names:
        _run_source(defs, instance, name, batch_size, summary, steps)
    summary.stage_seconds["sources"] = time.monotonic() - t0
    t_recipes = time.monotonic()
    # every recipe observed before the first run rebuilds the pool-wide tables, so the later recipes' runs
    # (which observe their recipe again, unchanged) leave the duplicate groups fresh
    report(instance, changed_observations(instance, RECIPE, {r.name: recipe_version(r) for r in recipes}))
    for i, recipe in enumerate(recipes):
        _run_recipe(defs, instance, recipe, Store(store_root), summary, steps, pool_tables=i == 0)
    summary.stage_seconds["recipes"] = time.monotonic() - t_recipes
    summary.seconds = time.monotonic() - t0
    return summary


class _Steps:
    """Numbers the steps (`[n/total] ...` lines) and reports each one done."""

    def __init__(self, total: int, say: Callable[[str], None], on_step: Callable[[int, int], None] | None):
        self.total, self.say, self.on_step, self.n = total, say, on_step, 0
        self.t = time.monotonic()
        if on_step is not None:
            on_step(0, total)

    def start(self, what: str) -> None:
        self.n += 1
        self.t = time.monotonic()
        self.say(f"[{self.n}/{self.total}] {what} ...")

    def end(self, outcome: str) -> None:
        self.say(f"      {outcome}")
        if self.on_step is not None:
            self.on_step(self.n, self.total)

    def seconds(self) -> float:
        return time.monotonic() - self.t


def _register(instance: dg.DagsterInstance, keys_by_partitions: dict[str, list[str]], say) -> None:
    """Add the missing dynamic partitions (sources, recipes)."""
    for kind, keys in keys_by_partitions.items():
        known = set(instance.get_dynamic_partitions(kind))
        missing = [k for k in keys if k not in known]
        if missing:
            instance.add_dynamic_partitions(kind, missing)
            say(f"added {len(missing)} {kind} partition(s): {', '.join(missing)}")


def _run_source(defs, instance, name: str, batch_size: int, summary: MaterializeSummary, steps: _Steps) -> None:
    steps.start(f"source {name}: ingest + score")
    result = defs.resolve_job_def(INGEST_AND_SCORE).execute_in_process(
        partition_key=name,
        instance=instance,
        run_config={**QUIET, "ops": {"score_source": {"config": {"batch_size": batch_size}}}},
        raise_on_error=False,
        tags={"mmssr/trigger": "materialize"},
    )
    mats = _materializations(result)
    raw, caps = mats.get("raw_pool", {}), mats.get("capability_scores", {})
    summary.sources[name] = {
        "accepted": raw.get("accepted"),
        "quarantined": raw.get("quarantined"),
        "read": raw.get("read"),
        "scored": caps.get("scored"),
        "cached": caps.get("cached"),
        "failed": caps.get("failed"),
        "computed": caps.get("computed"),
        "run_id": result.run_id,
        "success": result.success,
    }
    for ev in _checks(result):
        summary.checks[f"{ev.check_name}[{name}]"] = bool(ev.passed)
    if not result.success:
        summary.failures.append(f"source {name}: {_run_error(result)}")
        steps.end(f"FAILED: {summary.failures[-1]}")
    else:
        steps.end(
            f"{raw.get('accepted')} accepted, {raw.get('quarantined')} quarantined; "
            f"{caps.get('scored')} scored, {caps.get('cached')} cached, {caps.get('failed')} failed "
            f"({steps.seconds():.1f}s)"
        )


def _run_recipe(
    defs, instance, recipe: Recipe, st: Store, summary: MaterializeSummary, steps: _Steps, *, pool_tables: bool
) -> None:
    """One recipe's run; the pool-wide scores table and duplicate groups only when `pool_tables` (the first)."""
    steps.start(f"recipe {recipe.name}: {recipe.describe()}")
    result = defs.resolve_job_def(SELECT_AND_REPORT).execute_in_process(
        partition_key=recipe.name,
        instance=instance,
        run_config=QUIET,
        raise_on_error=False,
        asset_selection=None if pool_tables else [dg.AssetKey(k) for k in ("recipe", "selected_subset", "eval_report")],
        tags={"mmssr/trigger": "materialize"},
    )
    mats = _materializations(result)
    sel = mats.get("selected_subset", {})
    for ev in _checks(result):
        summary.checks[f"{ev.check_name}[{recipe.name}]"] = bool(ev.passed)
    if "selected_subset" in mats:
        summary.subsets[recipe.name] = {
            "requested": sel.get("requested"),
            "selected": sel.get("selected"),
            "short": sel.get("short"),
            "reason": None if sel.get("reason") in (None, "-") else sel.get("reason"),
            "path": str(st.path(SELECTIONS_TABLE, recipe.name)),
        }
    if "eval_report" in mats:
        rep = mats["eval_report"]
        summary.reports[recipe.name] = {"html": rep.get("report_html"), "json": rep.get("report_json")}
    if not result.success:
        summary.failures.append(f"recipe {recipe.name}: {_run_error(result)}")
        steps.end(f"FAILED: {summary.failures[-1]}")
    else:
        steps.end(f"{sel.get('selected')}/{sel.get('requested')} selected ({steps.seconds():.1f}s)")
