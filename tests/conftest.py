"""Shared fixtures: where the read-only real data lives, and a fresh store per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_SHARED_DATA = "MMSSR_SHARED_DATA"  # where the real pools are (default ../shared/data beside the checkout)
ENV_REQUIRE_SHARED_DATA = "MMSSR_REQUIRE_SHARED_DATA"  # CI sets it: missing real pools fail instead of skip


def _shared_data() -> Path:
    env = os.environ.get(ENV_SHARED_DATA)
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def require_shared_data(*parts: str) -> Path:
    """The real-data folder (or `parts` inside it); a test without it is skipped with the reason, or fails
    where $MMSSR_REQUIRE_SHARED_DATA is set (CI), so CI never silently skips the real-data tests."""
    root = _shared_data()
    path = root.joinpath(*parts)
    if path.exists():
        return path
    what = f"{'/'.join(parts)!r} under " if parts else ""
    reason = (
        f"needs the real pools: {what}{root} does not exist (a clone has none; set ${ENV_SHARED_DATA} to "
        "a folder holding them)"
    )
    if os.environ.get(ENV_REQUIRE_SHARED_DATA):
        pytest.fail(f"{reason}; ${ENV_REQUIRE_SHARED_DATA} is set, so this is an error", pytrace=False)
    pytest.skip(reason)


def pytest_configure(config):
    """The Dagster warnings the code location filters by class and message (mmssr_assets.known_warnings),
    filtered the same way inside tests (pytest restores the warning filters around each test and
    collection, so filters installed at import time would not hold there). Any other warning shows."""
    from mmssr_assets.known_warnings import KNOWN

    for category, message, _why in KNOWN:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:{category.__module__}.{category.__qualname__}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared_data()


@pytest.fixture
def store(tmp_path):
    from mmssr_core.store import Store

    return Store(tmp_path / "store")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(autouse=True)
def _forget_dagster_defs_state_storage():
    """A DagsterInstance that is never disposed leaves its defs-state storage in a ContextVar; once the
    instance is garbage-collected, a later test resolving definitions fails on a dead weakref. Reset it
    after every test so tests do not depend on each other's order."""
    yield
    import sys

    if "dagster" in sys.modules:
        from dagster._core.storage.defs_state.base import _current_storage

        _current_storage.set(None)
