import os
import signal
import subprocess
import sys
import textwrap

import polars as pl
import pytest

from mmssr_core.store import Store, StoreError, check_name


def test_write_read_scan_and_partitions(store):
    store.write("raw_pool", "a", pl.DataFrame({"id": ["1", "2"]}))
    store.write("raw_pool", "b", pl.DataFrame({"id": ["3"]}))
    assert store.partitions("raw_pool") == ["a", "b"]
    assert store.read("raw_pool", "a")["id"].to_list() == ["1", "2"]
    assert store.scan("raw_pool").collect().height == 3
    store.write("raw_pool", "a", pl.DataFrame({"id": ["9"]}))  # replace, not append
    assert store.scan("raw_pool").collect()["id"].sort().to_list() == ["3", "9"]


def test_missing_partition_is_a_clear_error(store):
    with pytest.raises(StoreError, match="no partition 'x' in table 'raw_pool'"):
        store.read("raw_pool", "x")


@pytest.mark.parametrize("name", ["../escape", "", ".hidden", "a/b", "-x"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(StoreError):
        check_name(name)


def test_duckdb_views_are_read_only_over_parquet(store):
    store.write("raw_pool", "a", pl.DataFrame({"id": ["1", "2"], "source": ["a", "a"]}))
    store.write("raw_pool", "b", pl.DataFrame({"id": ["3"], "source": ["b"]}))
    con = store.duckdb()
    assert con.execute("select source, count(*) from raw_pool group by 1 order by 1").fetchall() == [
        ("a", 2),
        ("b", 1),
    ]
    with pytest.raises(Exception):
        con.execute("insert into raw_pool values ('4', 'c')")


def test_json_sidecars_roundtrip(store):
    store.write_json("ingest_stats", "a", {"read": 3})
    assert store.read_json("ingest_stats", "a") == {"read": 3}


def test_a_killed_writer_never_leaves_a_partial_partition(tmp_path):
    """SIGKILL in the middle of writes: the partition is either the old or the new file, never broken."""
    root = tmp_path / "s"
    Store(root).write("t", "p", pl.DataFrame({"x": list(range(10))}))
    script = textwrap.dedent(
        f"""
        import polars as pl
        from mmssr_core.store import Store
        s = Store({str(root)!r})
        df = pl.DataFrame({{"x": list(range(2_000_000))}})
        print("ready", flush=True)
        while True:
            s.write("t", "p", df)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    import time

    time.sleep(0.8)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    df = Store(root).read("t", "p")
    assert df.height in (10, 2_000_000)
    assert Store(root).partitions("t") == ["p"]  # temp files are hidden, not partitions


def test_partitions_are_readable_by_others_like_plain_files(store):
    import stat

    p = store.write("t", "p", pl.DataFrame({"x": [1]}))
    j = store.write_json("t", "p", {"a": 1})
    for path in (p, j):
        assert os.stat(path).st_mode & stat.S_IRGRP, f"{path} is not group-readable"
