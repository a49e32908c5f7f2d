"""`dg dev` and `dagster dev` as real servers: a new domain backfilled over GraphQL (a SQLite instance under
`dg dev`, a Postgres one under `dagster dev -w workspace.yaml`), the UI's stale status after a source
changes, and a browser smoke test of the UI (Debian's chromium driven headless by Playwright)."""

from __future__ import annotations

import math
import os
import shutil
import time

import polars as pl
import pytest
from dagster_support import (
    ADD_PARTITION,
    LAUNCH_BACKFILL,
    REPO_ROOT,
    REPO_SELECTOR,
    STALE_BY_PARTITION,
    START_SENSOR,
    DagsterDev,
    slice_source,
    wait_backfill,
)
from services import postgres_server

pytestmark = pytest.mark.slow

SOURCE_ASSETS = ["raw_pool", "capability_scores", "style_labels"]
RECIPE = "mmssr_10pct"
NEW_DOMAIN = ("tab_a", "tab_b")
PER_SOURCE = 40

LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } ... on InvalidSubsetError { message }
  }
}"""
RUN_STATUS = """query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"""

BACKFILL_RUNS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { runs(limit: 50) { id status tags { key value } assetSelection { path } } }
  }
}"""


def _domain(tmp, shared_data, ui: bool):
    """A sources root: a new two-source domain (tab_a, tab_b) and, `ui`, one more source for the UI test."""
    root = tmp / "sources"
    slice_source(root, shared_data, "tabmwp_dev1k", PER_SOURCE, "tab_a")
    slice_source(root, shared_data, "tabmwp_dev1k", PER_SOURCE, "tab_b", offset=200)
    if ui:
        slice_source(root, shared_data, "tabmwp_dev1k", 10, "tab_ui", offset=400)
    return root


def _env(tmp, root) -> dict:
    env = {
        "MMSSR_STORE": str(tmp / "store"),
        "MMSSR_SOURCES_ROOT": str(root),
        "MMSSR_RECIPES": "",
        "MMSSR_AUTOMATION": "",
        "MMSSR_BACKEND": "rules",
        # shorten the daemon's 30 s tick (tests/dagster_site/sitecustomize.py)
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "tests" / "dagster_site"), str(REPO_ROOT)]),
        "MMSSR_TEST_DAEMON_INTERVAL": "5",
    }
    return env


def _add_partition(dev: DagsterDev, partitions: str, key: str) -> None:
    out = dev.graphql(
        ADD_PARTITION, {"repositorySelector": REPO_SELECTOR, "partitionsDefName": partitions, "partitionKey": key}
    )["addDynamicPartition"]
    assert out == {"__typename": "AddDynamicPartitionSuccess", "partitionKey": key}, out


def observe_source_folders(dev: DagsterDev, timeout: float = 120) -> None:
    """What the UI's *Observe* button does: one run observing every registered source folder, so the
    backfill's materializations read an observation to be compared against later."""
    params = {"selector": {**REPO_SELECTOR, "jobName": "__ASSET_JOB", "assetSelection": [{"path": ["source_folder"]}]}}
    out = dev.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert out["__typename"] == "LaunchRunSuccess", out
    run_id, deadline = out["run"]["runId"], time.monotonic() + timeout
    while (status := dev.graphql(RUN_STATUS, {"id": run_id})["runOrError"]["status"]) != "SUCCESS":
        assert status not in ("FAILURE", "CANCELED") and time.monotonic() < deadline, f"{status}\n{dev.tail()}"
        time.sleep(1)


def launch_new_domain_backfill(dev: DagsterDev) -> str:
    """Add the domain's partitions (and the recipe's: recipes are dynamic partitions too) and backfill the
    whole chain for them in ONE backfill."""
    for key in NEW_DOMAIN:
        _add_partition(dev, "sources", key)
    _add_partition(dev, "recipes", RECIPE)
    observe_source_folders(dev)
    rng = {"range": {"start": NEW_DOMAIN[0], "end": NEW_DOMAIN[-1]}}
    params = {
        "title": "new domain",
        "partitionsByAssets": (
            [{"assetKey": {"path": [a]}, "partitions": rng} for a in SOURCE_ASSETS]
            + [{"assetKey": {"path": [a]}, "partitions": None} for a in ("scores_table", "duplicates")]
            + [
                {"assetKey": {"path": [a]}, "partitions": {"range": {"start": RECIPE, "end": RECIPE}}}
                for a in ("selected_subset", "eval_report")
            ]
        ),
    }
    out = dev.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert out["__typename"] == "LaunchBackfillSuccess", out
    return out["backfillId"]


def verify_new_domain_backfill(dev: DagsterDev, backfill_id: str, store_root) -> None:
    """Wait for the backfill, check its runs kept each source's chain whole, read the subset."""
    status = wait_backfill(dev, backfill_id, timeout=420)
    assert status["status"] == "COMPLETED_SUCCESS", f"{status}\n{dev.tail()}"
    runs = dev.graphql(BACKFILL_RUNS, {"id": backfill_id})["partitionBackfillOrError"]["runs"]
    assert all(r["status"] == "SUCCESS" for r in runs), runs
    by_partition: dict = {}
    for r in runs:
        tags = {t["key"]: t["value"] for t in r["tags"]}
        start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
        assert start == end, tags  # multi_run(1): one partition per run
        by_partition.setdefault(start, []).append(sorted(a["path"][0] for a in (r["assetSelection"] or [])))
    # the same BackfillPolicy on every per-source asset: one run per source carrying the whole chain
    for key in NEW_DOMAIN:
        assert by_partition[key] == [sorted(SOURCE_ASSETS)], by_partition
    assert by_partition[RECIPE] == [["eval_report", "selected_subset"]], by_partition
    assert sorted(a for run in by_partition[None] for a in run) == ["duplicates", "scores_table"], by_partition

    sel = pl.read_parquet(store_root / "selections" / f"{RECIPE}.parquet")
    pool = pl.concat(
        [pl.read_parquet(store_root / "raw_pool" / f"{k}.parquet").select("id", "source") for k in NEW_DOMAIN]
    )
    assert pool.height == PER_SOURCE * len(NEW_DOMAIN)
    assert sel.height == math.floor(0.1 * pool.height)
    assert sel.join(pool, on=["id", "source"], how="anti").is_empty()
    assert (store_root / "reports" / f"{RECIPE}.html").is_file()


@pytest.fixture(scope="module")
def servers(tmp_path_factory, shared_data):
    """Two servers started side by side (their backfills mostly wait on the daemon's ticks, so running
    both at once halves the wall time): `dg dev` on SQLite (the repo's .dagster_home/dagster.yaml), and
    `dagster dev -w workspace.yaml` on a throwaway Postgres cluster (deploy/dagster.postgres.yaml). Both
    get the new-domain backfill at once; both are stopped with SIGINT at the end."""
    devs: dict[str, DagsterDev] = {}
    with postgres_server(user="dagster", password="dagster-test-pw") as pg:
        try:
            for kind, yaml in (
                ("sqlite", REPO_ROOT / ".dagster_home" / "dagster.yaml"),
                ("postgres", REPO_ROOT / "deploy" / "dagster.postgres.yaml"),
            ):
                tmp = tmp_path_factory.mktemp(f"dev_{kind}")
                root = _domain(tmp, shared_data, ui=kind == "sqlite")
                home = tmp / "home"
                home.mkdir()
                shutil.copyfile(yaml, home / "dagster.yaml")
                env = _env(tmp, root) | (pg.env() if kind == "postgres" else {})
                dev = DagsterDev(home, env, dg=kind == "sqlite")
                dev.tmp, dev.pg = tmp, pg
                devs[kind] = dev
                dev.launch()
            for dev in devs.values():
                dev.wait_ready()
            for dev in devs.values():
                dev.backfill_id = launch_new_domain_backfill(dev)
            yield devs
        finally:
            codes = {kind: dev.stop() for kind, dev in devs.items()}
    for kind, dev in devs.items():
        assert codes[kind] == 0, f"dagster dev ({kind}) did not stop cleanly on SIGINT (rc {codes[kind]})\n{dev.tail()}"
        assert dev.proc.poll() is not None
        log = dev.log.read_text(errors="replace")
        # no instance-file mismatch, no warning of a Dagster feature the code location uses on purpose (and
        # under `dg dev`, not even Dagster's notice that `dagster dev` is superseded by it)
        for unwanted in ("will not be used", "BetaWarning", "PreviewWarning", *(["superseded"] if dev.dg else [])):
            assert unwanted not in log, f"{kind}: {unwanted!r} in the server log\n{dev.tail()}"


def test_backfill_new_domain_over_graphql_sqlite(servers):
    dev = servers["sqlite"]
    verify_new_domain_backfill(dev, dev.backfill_id, dev.tmp / "store")
    assert (dev.home / "history" / "runs.db").is_file()  # the SQLite instance under DAGSTER_HOME


def test_backfill_new_domain_over_graphql_postgres(servers):
    import psycopg2

    dev = servers["postgres"]
    verify_new_domain_backfill(dev, dev.backfill_id, dev.tmp / "store")
    e = dev.pg.env()
    with psycopg2.connect(
        host=e["DAGSTER_PG_HOST"],
        port=e["DAGSTER_PG_PORT"],
        user=e["DAGSTER_PG_USER"],
        password=e["DAGSTER_PG_PASSWORD"],
        dbname=e["DAGSTER_PG_DB"],
    ) as con:
        cur = con.cursor()
        cur.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
        assert cur.fetchone()[0] == 1 + len(NEW_DOMAIN) + 2  # observe, one per source, pool tables, the recipe
        cur.execute("SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'sources' ORDER BY id")
        assert [r[0] for r in cur.fetchall()] == list(NEW_DOMAIN)
    assert not (dev.home / "history").exists()  # nothing went to SQLite


def test_the_ui_marks_a_changed_source_stale(servers):
    """After the backfill every partition is fresh; a source folder changes, the sensor observes it, and
    the UI's stale status (GraphQL staleStatusByPartition) marks exactly that source's raw_pool stale."""
    dev = servers["postgres"]
    wait_backfill(dev, dev.backfill_id, timeout=420)
    key, parts = {"path": ["raw_pool"]}, list(NEW_DOMAIN)

    def stale():
        node = dev.graphql(STALE_BY_PARTITION, {"key": key, "partitions": parts})["assetNodeOrError"]
        return node["staleStatusByPartition"], node["staleCausesByPartition"]

    assert stale()[0] == ["FRESH", "FRESH"]
    pool = dev.tmp / "sources" / NEW_DOMAIN[0] / "pool.llava.json"
    pool.write_text(pool.read_text().replace("table", "Table", 1))
    selector = {**REPO_SELECTOR, "sensorName": "new_sources_sensor"}
    out = dev.graphql(START_SENSOR, {"selector": selector})["startSensor"]
    assert out["__typename"] == "Sensor", out
    deadline = time.monotonic() + 120
    while stale()[0] != ["STALE", "FRESH"]:
        assert time.monotonic() < deadline, f"raw_pool not marked stale: {stale()}\n{dev.tail()}"
        time.sleep(2)
    [cause] = stale()[1][0]  # the root cause the UI shows: the observed folder's new version
    assert cause["key"]["path"] == ["source_folder"] and cause["partitionKey"] == NEW_DOMAIN[0]
    assert cause["reason"] == "has a new data version"


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def test_browser_materialize_a_partition_by_clicking(servers, tmp_path):
    """Open the asset graph, materialize one source partition of raw_pool by clicking, see it succeed."""
    import re

    from playwright.sync_api import expect, sync_playwright

    dev = servers["sqlite"]
    wait_backfill(dev, dev.backfill_id, timeout=420)  # let the backfill finish first
    out = dev.graphql(
        ADD_PARTITION, {"repositorySelector": REPO_SELECTOR, "partitionsDefName": "sources", "partitionKey": "tab_ui"}
    )["addDynamicPartition"]
    assert out["__typename"] == "AddDynamicPartitionSuccess", out
    errors: list[str] = []
    expect.set_options(timeout=60_000)  # a loaded CI machine renders slowly
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=os.environ.get("MMSSR_CHROMIUM", "/usr/bin/chromium"), args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.set_default_timeout(60_000)
            # the global asset graph shows the four groups; a group's graph shows its assets
            page.goto(f"{dev.url}/asset-groups", wait_until="domcontentloaded")
            _dismiss_nux(page)
            for group in ("ingestion", "scoring", "selection", "reports"):
                expect(page.get_by_text(group, exact=True).first).to_be_visible()
            page.screenshot(path=str(tmp_path / "graph.png"))
            page.goto(f"{dev.url}/locations/mmssr/asset-groups/scoring", wait_until="domcontentloaded")
            for name in ("capability_scores", "style_labels"):
                expect(page.get_by_text(name, exact=True).first).to_be_visible()
            page.screenshot(path=str(tmp_path / "scoring.png"))
            page.goto(f"{dev.url}/assets", wait_until="domcontentloaded")  # the catalog lists all six
            for name in (
                "raw_pool",
                "capability_scores",
                "style_labels",
                "scores_table",
                "selected_subset",
                "eval_report",
            ):
                expect(page.locator(f'a[href="/assets/{name}"]').first).to_be_visible()

            # materialize raw_pool for the tab_ui partition from its asset page
            page.goto(f"{dev.url}/assets/raw_pool", wait_until="domcontentloaded")
            _dismiss_nux(page)
            page.get_by_role("button", name=re.compile(r"Materialize(…|\.\.\.)?$")).first.click()
            dialog = page.get_by_role("dialog")
            expect(dialog).to_be_visible()
            _choose_partition(page, dialog, "tab_ui")
            page.screenshot(path=str(tmp_path / "dialog.png"))
            dialog.get_by_role("button", name="Launch 1 run").click()
            # the run shows up and succeeds
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                run_id = _partition_materialized(dev, "raw_pool", "tab_ui")
                if run_id:
                    break
                time.sleep(2)
            else:
                page.screenshot(path=str(tmp_path / "timeout.png"))
                raise AssertionError(f"raw_pool[tab_ui] not materialized\n{dev.tail()}")
            # ... and the UI says so on the run's page
            page.goto(f"{dev.url}/runs/{run_id}", wait_until="domcontentloaded")
            expect(page.get_by_text("Success", exact=True).first).to_be_visible()
            expect(page.get_by_text("tab_ui").first).to_be_visible()
            page.screenshot(path=str(tmp_path / "runs.png"))
        finally:
            browser.close()
    unexpected = [
        e
        for e in errors
        if "telemetry" not in e.lower()
        and "segment" not in e.lower()
        and "ERR_NAME_NOT_RESOLVED" not in e
        and "ERR_CONNECTION" not in e
    ]
    assert not unexpected, unexpected


def _dismiss_nux(page) -> None:
    """The "Join the Dagster community" popup blocks clicks on a first visit."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.click(timeout=3000)
    except Exception:
        pass


def _choose_partition(page, dialog, key: str) -> None:
    """Select exactly one partition in the launch dialog's partition picker (its rows are menuitems)."""
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_role("menuitem", name=key).first.click()
    expect_text = dialog.get_by_role("button", name="Launch 1 run")
    expect_text.wait_for(state="visible")


PARTITION_MATERIALIZED = """
query($key: AssetKeyInput!, $p: [String!]) {
  assetNodeOrError(assetKey: $key) { ... on AssetNode { assetMaterializations(partitions: $p) { partition runId } } }
}"""


def _partition_materialized(dev, asset: str, partition: str) -> str | None:
    """The id of the run that materialized asset[partition], or None."""
    out = dev.graphql(PARTITION_MATERIALIZED, {"key": {"path": [asset]}, "p": [partition]})
    mats = out["assetNodeOrError"]["assetMaterializations"]
    return next((m["runId"] for m in mats if m["partition"] == partition), None)
