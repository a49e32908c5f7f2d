"""Test-only: shorten the Dagster daemon's fixed 30 s tick in the `dagster dev` processes the
integration tests start (they put this folder on PYTHONPATH and set MMSSR_TEST_DAEMON_INTERVAL).

An asset backfill advances one daemon tick per level of the graph (sources -> scores_table -> recipe),
so with the default tick the test would mostly sleep. Nothing else changes.
"""

import os

if os.environ.get("MMSSR_TEST_DAEMON_INTERVAL"):
    import dagster._daemon.controller as _controller

    _controller.DEFAULT_DAEMON_INTERVAL_SECONDS = int(os.environ["MMSSR_TEST_DAEMON_INTERVAL"])
