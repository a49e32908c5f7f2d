"""Shared fixtures: where the read-only real data lives, and a fresh store per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _shared_data() -> Path:
    env = os.environ.get("MMSSR_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = _shared_data()
    if not path.is_dir():
        pytest.fail(f"shared data not found at {path} (set MMSSR_SHARED_DATA)")
    return path


@pytest.fixture
def store(tmp_path):
    from mmssr_core.store import Store

    return Store(tmp_path / "store")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
