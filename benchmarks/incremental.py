"""Incremental cost of a new source: materialize 10 sources, add an 11th of the same size, run again.

    .venv/bin/python benchmarks/incremental.py [--per-source 200] [--sources 10] [--shared-data DIR]

Sources are built from the real TabMWP pool in ../shared/data (images copied, question text tagged with the
source name so every sample's content hash is new: nothing is reused by accident). Both runs go through
Dagster (`mmssr_assets.materialize.materialize_all`, same definitions and checks as the UI) with the
weight-free `rules` backend on one DagsterInstance:

  first run  : all 10 sources ingested and scored, then every recipe selected and reported;
  second run : what the sensor + refresh schedule do when an 11th folder appears: ingest and score the
               new source only, then select and report every recipe again over the 11-source pool.

Printed: wall time of each stage side by side, the ratio, how many samples were sent to the scorer, and
the machine's load average at start and end.
The per-source stage is what grows with data; selection + reports is a per-refresh cost over the whole
pool (seconds here; with a GPU scorer the scoring stage dominates by orders of magnitude).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_source(shared: Path, dst: Path, name: str, start: int, n: int) -> int:
    src = shared / "tabmwp_dev1k"
    pool = json.loads((src / "pool.llava.json").read_text())
    rows = [dict(pool[(start + i) % len(pool)]) for i in range(n)]
    dst.mkdir(parents=True)
    for i, r in enumerate(rows):
        r["id"] = f"{name}_{i}"
        conv = [dict(t) for t in r["conversations"]]
        conv[0]["value"] = conv[0]["value"] + f"\n(source {name}, item {i})"
        r["conversations"] = conv
        img = dst / r["image"]
        img.parent.mkdir(parents=True, exist_ok=True)
        if not img.exists():
            shutil.copyfile(src / r["image"], img)
    (dst / "pool.llava.json").write_text(json.dumps(rows))
    return len(rows)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sources", type=int, default=10)
    ap.add_argument("--per-source", type=int, default=200)
    ap.add_argument("--shared-data", default=os.environ.get("MMSSR_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()

    print(f"load average at start: {load()}", flush=True)
    import dagster as dg

    from mmssr_assets.materialize import materialize_all

    tmp = Path(tempfile.mkdtemp(prefix="mmssr-incr-"))
    root, store = tmp / "sources", tmp / "store"
    shared = Path(args.shared_data)
    names = [f"src{i:02d}" for i in range(args.sources)]
    for i, name in enumerate(names):
        make_source(shared, root / name, name, i * args.per_source, args.per_source)
    instance = dg.DagsterInstance.ephemeral()
    quiet = lambda msg: None  # noqa: E731

    t = time.monotonic()
    first = materialize_all(sources_root=root, store_root=store, instance=instance, progress=quiet)
    first_total = time.monotonic() - t
    assert first.ok, first.failures

    new = f"src{args.sources:02d}"
    make_source(shared, root / new, new, args.sources * args.per_source, args.per_source)
    t = time.monotonic()
    second = materialize_all(sources_root=root, store_root=store, instance=instance, only=[new], progress=quiet)
    second_total = time.monotonic() - t
    assert second.ok, second.failures

    sent1 = sum(s["computed"] or 0 for s in first.sources.values())
    sent2 = sum(s["computed"] or 0 for s in second.sources.values())
    n1 = sum(s["accepted"] or 0 for s in first.sources.values())
    pool2 = n1 + second.sources[new]["accepted"]
    s1, s2 = first.stage_seconds, second.stage_seconds
    print(
        f"pool: {args.sources} sources x {args.per_source} samples = {n1}; then +1 source -> {pool2} "
        f"(rules backend, {len(first.subsets)} recipes, DagsterInstance ephemeral)"
    )
    print(f"{'stage':<34} {'first run':>10} {'second run':>11} {'ratio':>7}")
    rows = [
        ("ingest + score (per-source runs)", s1["sources"], s2["sources"]),
        ("select + report (all recipes)", s1["recipes"], s2["recipes"]),
        ("total", first_total, second_total),
    ]
    for label, a, b in rows:
        print(f"{label:<34} {a:>9.1f}s {b:>10.1f}s {b / a:>6.1%}")
    print(f"{'samples sent to the scorer':<34} {sent1:>10} {sent2:>11} {sent2 / max(sent1, 1):>6.1%}")
    print(f"load average at end: {load()}", flush=True)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
