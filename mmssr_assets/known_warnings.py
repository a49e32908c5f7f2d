"""The Dagster warnings this code location triggers on purpose, filtered by class and message.

Each entry names a Dagster feature marked beta or preview in 1.13 that the graph relies on deliberately;
any other warning (a new deprecation, a misuse) still shows. `install()` runs when `mmssr_assets.partitions`
is imported (every module that defines assets, checks or observations imports it), before any definition
is built.
"""

from __future__ import annotations

import warnings

import dagster as dg

KNOWN: list[tuple[type[Warning], str, str]] = [
    # one run per source / recipe in a backfill (BackfillPolicy.multi_run(1) on every partitioned asset)
    (dg.BetaWarning, r"Parameter `backfill_policy`", "backfill_policy"),
    # one check result per source / recipe
    (dg.PreviewWarning, r"Specifying a partitions_def on an AssetCheckSpec", "partitioned asset checks"),
    # source folders and recipe definitions are observed: their data versions drive staleness
    (dg.BetaWarning, r"Function `multi_observable_source_asset`", "observable source assets"),
]


_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    for category, message, _why in KNOWN:
        warnings.filterwarnings("ignore", message=message, category=category)
