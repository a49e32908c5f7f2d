"""The package works from a wheel, not only from this checkout: build one (offline, from a copy of the
sources), unpack it into a temp folder, and run the command line from a folder outside the repository
with only the unpacked wheel on PYTHONPATH. A repository-root lookup or package data left out of the wheel
(the chat template, the entry points) fails here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "mmssr_core", "mmssr_assets")


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (so the checkout gets no build/ or egg-info), unpacked."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    # --no-build-isolation: build with this environment's setuptools, no download (tests never reach out)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-v",
            "-w",
            str(base / "dist"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "adding license file 'LICENSE'" in log
    assert "deprecated" not in log.lower() and "BuildBackendWarning" not in log, log[-4000:]
    (wheel,) = (base / "dist").glob("mmssr-*.whl")
    site = base / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return site


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSSR_")}
    env["PYTHONPATH"] = str(site)  # the unpacked wheel only: not the checkout
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _cli(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return _run(site, cwd, "-m", "mmssr_core.cli", *args)


def test_the_wheel_holds_the_package_data(unpacked):
    names = {p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*") if p.is_file()}
    assert "mmssr_core/scoring/qwen2_chatml.jinja" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    text = (unpacked / meta).read_text()
    assert "License-Expression: Apache-2.0" in text
    assert not any(n.startswith(("tests/", "examples/", "benchmarks/")) for n in names)


def test_the_command_line_runs_from_the_wheel_outside_the_checkout(unpacked, tmp_path):
    where = _run(
        unpacked,
        tmp_path,
        "-c",
        "import mmssr_core, mmssr_assets; print(mmssr_core.__file__); print(mmssr_assets.__file__)",
    )
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(unpacked)) for line in where.stdout.split()), where.stdout
    helped = _cli(unpacked, tmp_path, "--help")
    assert helped.returncode == 0 and "ingest" in helped.stdout
    assert "materialize" in helped.stdout  # the asset layer's command, found through the wheel's entry points
    version = _cli(unpacked, tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.strip() == "mmssr 0.1.0"
    template = _run(
        unpacked,
        tmp_path,
        "-c",
        "from mmssr_core.scoring.chat_template import CHAT_TEMPLATE; print(len(CHAT_TEMPLATE))",
    )
    assert template.returncode == 0 and int(template.stdout) > 100, template.stderr


def test_ingest_score_select_round_trip_from_the_wheel(unpacked, tmp_path):
    from PIL import Image

    data = tmp_path / "pool"
    data.mkdir()
    rows = []
    for i in range(8):
        Image.new("RGB", (24, 16), (30 * i, 90, 200 - 20 * i)).save(data / f"img{i}.png")
        rows.append(
            {
                "id": f"s{i}",
                "image": f"img{i}.png",
                "conversations": [
                    {"from": "human", "value": f"<image>\nWhat colour is shape {i}?"},
                    {"from": "gpt", "value": "It is blue. " * (i + 1)},
                ],
            }
        )
    (data / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    work = tmp_path / "work"
    work.mkdir()

    def ok(*args: str) -> dict:
        proc = _cli(unpacked, work, *args, "--json")
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    assert ok("ingest", str(data / "pool.jsonl"), "--source", "demo")["accepted"] == 8
    assert (work / "store" / "raw_pool" / "demo.parquet").is_file()  # ./store: the default store
    assert ok("score", "--backend", "rules")["scored"] == 8
    assert ok("scores", "--out", "scores.parquet")["rows"] == 8
    picked = ok("select", "--scores", "scores.parquet", "--budget", "4", "--out", "subsets")
    assert picked["budgets"]["4"]["selected"] == 4
    assert (work / "subsets" / "mmssr_4.parquet").is_file()
