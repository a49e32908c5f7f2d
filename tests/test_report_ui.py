"""The report's Dagster metadata in a real browser: Markdown plots with data-URI PNGs render as images.

Starts dagster-webserver (no daemon) on 127.0.0.1 over a one-asset code location whose metadata is
`ReportResult.metadata_entries()`, opens the asset page in headless Chromium and clicks "Show Markdown".
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

CHROMIUM = "/usr/bin/chromium"
ARGS = [
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

DEFS = """
import sys
sys.path.insert(0, {tests!r})
import dagster as dg


@dg.asset
def report_probe() -> dg.MaterializeResult:
    from pathlib import Path

    from test_report import TAX, make_pool, selection_of
    from mmssr_core.report import build_report

    d = Path({tmp!r})
    scores, raw = make_pool(d)
    r = build_report(d / "store", "probe", selection_of(scores, [f"s{{i:02d}}" for i in range(10)]), scores,
                     pool=raw, taxonomy=TAX)
    kinds = {{"md": dg.MetadataValue.md, "path": dg.MetadataValue.path, "float": dg.MetadataValue.float}}
    return dg.MaterializeResult(metadata={{n: kinds[k](v) for n, k, v in r.metadata_entries()}})


defs = dg.Definitions(assets=[report_probe])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian chromium at /usr/bin/chromium")
def test_plots_render_inline_in_dagster_ui(tmp_path, repo_root):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    defs = tmp_path / "defs.py"
    defs.write_text(textwrap.dedent(DEFS.format(tests=str(repo_root / "tests"), tmp=str(tmp_path / "data"))))
    (tmp_path / "data").mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    # materialize in a subprocess against the same instance the webserver reads
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import dagster as dg; from defs import report_probe; "
        "assert dg.materialize([report_probe], instance=dg.DagsterInstance.get()).success"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300, capture_output=True)
    port = _free_port()
    log = open(tmp_path / "webserver.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-f", str(defs), "-p", str(port), "-h", "127.0.0.1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except Exception:
                assert proc.poll() is None, (tmp_path / "webserver.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "webserver did not start"
                time.sleep(1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.evaluate("localStorage.setItem('communityNux', '1')")
            page.goto(f"http://127.0.0.1:{port}/assets/report_probe")
            links = page.get_by_text("[Show Markdown]")
            links.first.wait_for(timeout=60_000)
            # the report tables + 3 plots (selected vs random only: the 2x2 overlap is not drawn); the one-line
            # scorer entry shows inline
            assert links.count() == 4
            page.locator("td").filter(has_text=re.compile(r"^\s*scorer\s*$")).locator("xpath=..").get_by_text(
                "test", exact=True
            ).wait_for(timeout=30_000)
            page.locator("td").filter(has_text=re.compile(r"^\s*plot_capability_radar\s*$")).locator(
                "xpath=.."
            ).get_by_text("[Show Markdown]").click()
            img = page.locator("img[src^='data:image/png;base64,']").first
            img.wait_for(timeout=30_000)
            size = img.evaluate("i => [i.naturalWidth, i.naturalHeight]")
            assert size[0] > 100 and size[1] > 100, size
            page.get_by_role("button", name="Close").click()
            # the headline table renders as an HTML table
            page.locator("td").filter(has_text=re.compile(r"^\s*report\s*$")).locator("xpath=..").get_by_text(
                "[Show Markdown]"
            ).click()
            page.locator("table", has_text="mean score").first.wait_for(timeout=30_000)
            browser.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
