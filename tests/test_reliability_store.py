"""Races and partial commits: one writer per source, a source's files switch together, orphans go away."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import polars as pl
import pytest
from ingest_support import check_invariants, sample, source_dir, write_jsonl

from mmssr_core.ingest import IngestError, ingest_source
from mmssr_core.store import Store, StoreBusy, remove_orphan_temps, temp_path


def _pool(tmp_path, ids):
    root = source_dir(tmp_path)
    return write_jsonl(root / "pool.jsonl", [sample(i) for i in ids])


def test_a_second_ingest_of_a_busy_source_fails_fast_naming_the_holder(tmp_path, store):
    pool = _pool(tmp_path, ["a", "b"])
    ingest_source(pool, "s", store)
    with store.transaction("source", "s", wait=0):
        t0 = time.monotonic()
        with pytest.raises(IngestError, match=r"being written by another process \(pid \d+ on "):
            ingest_source(pool, "s", store)
        assert time.monotonic() - t0 < 2
    assert store.read("raw_pool", "s").height == 2  # the holder's state is untouched
    ingest_source(pool, "other", store)  # other sources are not blocked


def test_a_waiting_ingest_runs_after_the_holder_commits(tmp_path, store):
    pool = _pool(tmp_path, ["a", "b", "c"])
    tx = store.transaction("source", "s", wait=0).__enter__()
    threading.Timer(0.5, lambda: tx.__exit__(None, None, None)).start()
    result = ingest_source(pool, "s", store, lock_wait=10)
    assert result.accepted == 3
    check_invariants(result, store)


def test_the_lock_holds_across_processes_and_dies_with_its_holder(tmp_path, store):
    script = (
        f"import time; from mmssr_core.store import Store; "
        f"t = Store({str(store.root)!r}).transaction('source', 's', wait=0).__enter__(); "
        f"print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"held"
        with pytest.raises(StoreBusy, match=f"pid {proc.pid}"):
            store.transaction("source", "s", wait=0).__enter__()
    finally:
        proc.kill()
        proc.wait()
    with store.transaction("source", "s", wait=0) as tx:  # kill -9 released it; its new generation is gone
        tx.write("raw_pool", pl.DataFrame({"id": ["x"]}))
    gens = sorted(p.name for p in (store.root / ".units" / "source" / "s").iterdir() if p.name.startswith("g"))
    assert gens == ["g00000001"] and store.read("raw_pool", "s")["id"].to_list() == ["x"]


def test_readers_see_the_old_set_until_the_commit_then_the_new_one(store):
    with store.transaction("source", "s") as tx:
        tx.write("raw_pool", pl.DataFrame({"id": ["old"]}))
        tx.write("quarantine", pl.DataFrame({"id": ["oldq"]}))
        tx.write_json("ingest_stats", {"gen": "old"})
    with store.transaction("source", "s") as tx:
        tx.write("raw_pool", pl.DataFrame({"id": ["new"]}))
        tx.write("quarantine", pl.DataFrame({"id": ["newq"]}))
        assert store.read("raw_pool", "s")["id"].to_list() == ["old"]
        assert tx.read("quarantine")["id"].to_list() == ["oldq"]
        snapshot = store.resolve("quarantine", "s")
        tx.write_json("ingest_stats", {"gen": "new"})
    assert (
        store.read("raw_pool", "s")["id"][0],
        store.read("quarantine", "s")["id"][0],
        store.read_json("ingest_stats", "s")["gen"],
    ) == ("new", "newq", "new")
    assert pl.read_parquet(snapshot)["id"].to_list() == ["oldq"]  # a reader that resolved before still reads
    # the familiar paths stay: plain symlinks any tool can open
    assert (store.root / "raw_pool" / "s.parquet").is_symlink()
    assert pl.read_parquet(store.root / "raw_pool" / "s.parquet")["id"].to_list() == ["new"]


def test_a_failed_transaction_changes_nothing_and_unwritten_tables_carry_over(store):
    with store.transaction("scores", "s") as tx:
        tx.write("capability_scores", pl.DataFrame({"id": ["1"]}))
        tx.write("style_labels", pl.DataFrame({"id": ["1"]}))
    with pytest.raises(RuntimeError):
        with store.transaction("scores", "s") as tx:
            tx.write("capability_scores", pl.DataFrame({"id": ["2"]}))
            raise RuntimeError("boom")
    assert store.read("capability_scores", "s")["id"].to_list() == ["1"]
    store.write("capability_scores", "s", pl.DataFrame({"id": ["3"]}))  # a plain write is a one-table commit
    assert store.read("style_labels", "s")["id"].to_list() == ["1"]
    store.delete("style_labels", "s")
    assert not store.exists("style_labels", "s") and store.partitions("style_labels") == []
    assert store.read("capability_scores", "s")["id"].to_list() == ["3"]


def test_orphans_of_killed_writers_are_removed_by_the_next_writer(tmp_path, store):
    pool = _pool(tmp_path, ["a"])
    ingest_source(pool, "s", store)
    unit = store.root / ".units" / "source" / "s"
    (unit / "g00000099").mkdir()  # a generation that was never switched in
    (unit / "g00000099" / "raw_pool").mkdir()
    stray = [temp_path(store.root / "raw_pool" / "s.parquet"), temp_path(store.root / "images" / "s" / "x.png")]
    for p in stray:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
    ingest_source(pool, "s", store)
    assert not (unit / "g00000099").exists()
    assert not any(p.exists() for p in stray)
    assert not [p for p in store.root.rglob("*") if p.name.endswith(".tmp")]


def test_shared_folders_keep_temps_of_live_writers_and_drop_dead_ones(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    mine = temp_path(folder / "a.parquet")
    mine.write_bytes(b"x")
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(proc.stdout)
    dead = folder / mine.name.replace(f".{os.getpid()}.", f".{dead_pid}.")
    dead.write_bytes(b"x")
    other_host = folder / ".b.parquet.otherhost.1.abcd.tmp"
    other_host.write_bytes(b"x")
    old = folder / ".c.parquet.otherhost.2.abcd.tmp"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 3 * 86400, time.time() - 3 * 86400))
    removed = remove_orphan_temps(folder)
    assert sorted(p.name for p in removed) == sorted([dead.name, old.name])
    assert mine.exists() and other_host.exists()


def test_a_store_written_before_generations_is_adopted_without_mixing(tmp_path):
    root = tmp_path / "legacy"
    for table, df in (("raw_pool", pl.DataFrame({"id": ["a"]})), ("quarantine", pl.DataFrame({"id": ["q"]}))):
        (root / table).mkdir(parents=True)
        df.write_parquet(root / table / "s.parquet")
    (root / "ingest_stats").mkdir()
    (root / "ingest_stats" / "s.json").write_text('{"read": 2}')
    store = Store(root)
    with store.transaction("source", "s") as tx:
        tx.write("raw_pool", pl.DataFrame({"id": ["b"]}))
    assert store.read("raw_pool", "s")["id"].to_list() == ["b"]
    assert store.read("quarantine", "s")["id"].to_list() == ["q"]
    assert store.read_json("ingest_stats", "s") == {"read": 2}
    assert all(
        (root / t).joinpath(f"s{x}").is_symlink()
        for t, x in (("raw_pool", ".parquet"), ("quarantine", ".parquet"), ("ingest_stats", ".json"))
    )
