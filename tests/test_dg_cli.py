"""`dg check defs` loads the code location the way `dg dev` does (pyproject's [tool.dg]); the instance file
lives where the documented UI command points DAGSTER_HOME, so `dagster dev` finds no stray one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from dagster_support import REPO_ROOT


def _dg_check_defs(tmp_path, **env_extra) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    shutil.copyfile(REPO_ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "VIRTUAL_ENV": sys.prefix,
        "MMSSR_STORE": str(tmp_path / "store"),
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p),
        **env_extra,
    }
    dg = Path(sys.executable).parent / "dg"
    return subprocess.run(
        [str(dg), "check", "defs"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_dg_check_defs_loads_the_code_location(tmp_path):
    proc = _dg_check_defs(tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "All definitions loaded successfully" in out
    assert "Warning" not in out and "superseded" not in out, out[-3000:]


def test_dg_check_defs_fails_on_a_broken_code_location(tmp_path):
    proc = _dg_check_defs(tmp_path, MMSSR_EXECUTOR="bogus")
    out = proc.stdout + proc.stderr
    assert "$MMSSR_EXECUTOR='bogus': choose one of" in out and "All definitions loaded successfully" not in out


def test_instance_and_workspace_files_agree():
    """The documented `DAGSTER_HOME=$PWD/.dagster_home dagster dev` finds its instance file there and none in
    the repository root (which `dagster dev` would warn "will not be used"); workspace.yaml, [tool.dagster]
    and [tool.dg] name the same module and code location."""
    assert not (REPO_ROOT / "dagster.yaml").exists() and not (REPO_ROOT / "dagster.yml").exists()
    instance = yaml.safe_load((REPO_ROOT / ".dagster_home" / "dagster.yaml").read_text())
    assert instance["telemetry"]["enabled"] is False and instance["run_monitoring"]["enabled"] is True
    [location] = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())["load_from"]
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    dg_project = pyproject["tool"]["dg"]["project"]
    assert pyproject["tool"]["dg"]["directory_type"] == "project"
    assert (
        location["python_module"]["module_name"]
        == pyproject["tool"]["dagster"]["module_name"]
        == dg_project["code_location_target_module"]
        == "mmssr_assets.definitions"
    )
    assert (
        location["python_module"]["location_name"]
        == pyproject["tool"]["dagster"]["code_location_name"]
        == dg_project["code_location_name"]
        == "mmssr"
    )
    ignored = subprocess.run(["git", "check-ignore", "-q", ".dagster_home/history/runs.db"], cwd=REPO_ROOT)
    tracked = subprocess.run(["git", "check-ignore", "-q", ".dagster_home/dagster.yaml"], cwd=REPO_ROOT)
    assert ignored.returncode == 0 and tracked.returncode == 1  # history stays local, the settings are tracked
