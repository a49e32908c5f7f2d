"""Crash safety by exhaustion: kill an ingest and a scoring run before every one of their file operations.

For each kill point N (1, 2, ... until the command finishes untouched), a copy of a store holding the old
state runs the command in a subprocess that dies (os._exit, like kill -9) right before its N-th file
operation. The store must then read as exactly the old state or exactly the new one, never a mix, and a
rerun must complete, reach the new state and leave no orphan behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ingest_support import make_image, sample, write_jsonl

from mmssr_core.ingest import ingest_source
from mmssr_core.scoring.rules import RulesBackend
from mmssr_core.scoring.runner import score_source
from mmssr_core.store import Store

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
KILLED = 137


def _kill_at(n: int, store: Path, *args: str) -> int:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "mmssr_core.testing.faults", str(n), *args, "--store", str(store)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True).returncode


def _source(tmp_path: Path, name: str, ids: list[str]) -> Path:
    folder = tmp_path / name
    make_image(folder / "img" / "a.png")
    records = [sample(i, question=f"What is shown in {name}?") for i in ids] + [b"{broken"]
    return write_jsonl(folder / "pool.jsonl", records)


def _ingest_state(store: Store):
    if not store.exists("raw_pool", "s"):
        return None
    stats = store.read_json("ingest_stats", "s")
    return (
        tuple(sorted(store.read("raw_pool", "s")["id"])),
        store.read("quarantine", "s").height,
        stats["read"],
        stats["accepted"],
        stats["input"],
    )


def _score_state(store: Store):
    if not store.exists("capability_scores", "s"):
        return None
    caps, styles = store.read("capability_scores", "s"), store.read("style_labels", "s")
    fails = store.read("score_failures", "s")
    fp = {store.read_json(t, "s")["pool_fingerprint"] for t in ("capability_scores", "style_labels")}
    assert len(fp) == 1, "capability scores and style labels from different runs"
    return tuple(caps["content_hash"]), tuple(styles["content_hash"]), fails.height, fp.pop()


def _no_orphans(store: Store) -> None:
    leftovers = [p for p in store.root.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, leftovers
    for unit in (store.root / ".units").glob("*/*"):
        gens = [p.name for p in unit.iterdir() if p.name.startswith("g")]
        assert len(gens) <= 2, (unit, gens)  # the current generation and the one before it


def _exhaust(tmp_path: Path, base: Path, args: list[str], state, old, new, rerun) -> int:
    n = 0
    while True:
        n += 1
        work = tmp_path / f"kill{n}"
        shutil.copytree(base, work, symlinks=True)
        rc = _kill_at(n, work, *args)
        store = Store(work)
        if rc == 0:
            assert state(store) == new
            _no_orphans(store)
            return n - 1
        assert rc == KILLED, f"kill point {n}: exit {rc}"
        seen = state(store)
        assert seen in (old, new), f"kill point {n}: the store holds a mixed state {seen}"
        rerun(store)
        assert state(store) == new, f"kill point {n}: the rerun did not reach the new state"
        _no_orphans(store)
        shutil.rmtree(work)
        assert n < 500, "the command never finished"


def test_killing_an_ingest_before_any_file_operation_leaves_old_or_new(tmp_path):
    v1, v2 = _source(tmp_path, "v1", ["a", "b"]), _source(tmp_path, "v2", ["b", "c", "d"])
    base = tmp_path / "base"
    ingest_source(v1, "s", Store(base))
    old = _ingest_state(Store(base))
    ref = Store(tmp_path / "ref")
    ingest_source(v1, "s", ref)
    ingest_source(v2, "s", ref)
    new = _ingest_state(ref)
    assert old != new
    points = _exhaust(
        tmp_path,
        base,
        ["ingest", str(v2), "--source", "s"],
        _ingest_state,
        old,
        new,
        lambda st: ingest_source(v2, "s", st),
    )
    print(f"ingest: {points} kill points")
    assert points >= 10  # the commit protocol was really walked through


def test_killing_a_scoring_run_before_any_file_operation_leaves_old_or_new(tmp_path):
    v1, v2 = _source(tmp_path, "v1", ["a", "b"]), _source(tmp_path, "v2", ["b", "c", "d"])
    base = Store(tmp_path / "base")
    ingest_source(v1, "s", base)
    score_source(base, "s", RulesBackend())
    ingest_source(v2, "s", base)  # the pool changed since it was scored
    old = _score_state(base)
    ref = Store(tmp_path / "ref")
    shutil.copytree(base.root, ref.root, symlinks=True)
    score_source(ref, "s", RulesBackend())
    new = _score_state(ref)
    assert old != new

    def rerun(st: Store) -> None:
        res = score_source(st, "s", RulesBackend(), chunk_size=1)
        assert res.failed == 0

    points = _exhaust(
        tmp_path, base.root, ["score", "--source", "s", "--chunk-size", "1"], _score_state, old, new, rerun
    )
    print(f"scoring: {points} kill points")
    assert points >= 10
