"""Ingestion benchmark: `mmssr ingest` against a minimal baseline loop, same pool, same run.

Builds an N-sample LLaVA JSONL pool from the real LLaVA pools in ../shared/data (new ids, a suffix making
each conversation unique, images shared), then runs in separate subprocesses (so peak-RSS figures do not
mix): the baseline (parse each line, open each image with Pillow and verify it), `ingest_source` on the
full pool, and `ingest_source` on a pool N/4 long (memory must be flat in pool size).

    .venv/bin/python benchmarks/ingest.py            # N = 100,000
    .venv/bin/python benchmarks/ingest.py --n 20000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POOLS = ("llava_bench", "math_vision_testmini", "tabmwp_dev1k")


def shared_data() -> Path:
    env = os.environ.get("MMSSR_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def build_pool(data: Path, n: int, out: Path) -> int:
    """N samples cycling over the real ones; images referenced relative to `data` (the image root)."""
    base = []
    for name in POOLS:
        for rec in json.loads((data / name / "pool.llava.json").read_text()):
            rec = dict(rec)
            rec["image"] = f"{name}/{rec['image']}"
            base.append(rec)
    with open(out, "w") as fh:
        for i in range(n):
            rec = dict(base[i % len(base)])
            rec["id"] = f"bench_{i:07d}"
            conv = [dict(t) for t in rec["conversations"]]
            conv[-1]["value"] = f"{conv[-1]['value']} [{i}]"
            rec["conversations"] = conv
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return len(base)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def phase_baseline(pool: Path, root: Path) -> dict:
    from PIL import Image

    after_imports = _rss_mb()
    t0, c0 = time.perf_counter(), _cpu_s()
    n = 0
    with open(pool, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = json.loads(line)
            images = rec.get("image")
            for path in images if isinstance(images, list) else [images]:
                with Image.open(os.path.join(root, path)) as im:
                    im.verify()
            n += 1
    return {"n": n, "seconds": time.perf_counter() - t0, "cpu_s": _cpu_s() - c0, "peak_rss_mb": _rss_mb(),
            "rss_after_imports_mb": after_imports}


def phase_ingest(pool: Path, root: Path, store_dir: Path) -> dict:
    from mmssr_core.ingest import ingest_source
    from mmssr_core.store import Store

    after_imports = _rss_mb()
    t0, c0 = time.perf_counter(), _cpu_s()
    result = ingest_source(pool, "bench", Store(store_dir), image_root=root)
    seconds, cpu = time.perf_counter() - t0, _cpu_s() - c0
    assert result.read == result.accepted + result.quarantined
    return {"n": result.read, "accepted": result.accepted, "quarantined": result.quarantined,
            "decoded": result.images["decoded"], "seconds": seconds, "cpu_s": cpu, "peak_rss_mb": _rss_mb(),
            "rss_after_imports_mb": after_imports}


def run_phase(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--phase", *args], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f"phase {args[0]} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="pool size (default 100,000)")
    ap.add_argument("--workdir", help="where pools and stores go (default: a temp dir, removed)")
    ap.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        kind, *rest = args.phase
        out = phase_baseline(Path(rest[0]), Path(rest[1])) if kind == "baseline" else \
            phase_ingest(Path(rest[0]), Path(rest[1]), Path(rest[2]))
        print(json.dumps(out))
        return 0

    data = shared_data()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="mmssr-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        small_n = max(1, args.n // 4)
        pool, small = work / "pool.jsonl", work / "pool_small.jsonl"
        distinct = build_pool(data, args.n, pool)
        build_pool(data, small_n, small)
        # warm the page cache so neither contender pays the first disk read
        for name in POOLS:
            for p in (data / name).rglob("*"):
                if p.is_file():
                    p.read_bytes()
        print(f"pool: {args.n:,} samples ({pool.stat().st_size / 2**20:.0f} MiB JSONL) cycling over {distinct:,} "
              f"real samples from {', '.join(POOLS)}", flush=True)
        base = run_phase("baseline", str(pool), str(data))
        full = run_phase("ingest", str(pool), str(data), str(work / "store"))
        part = run_phase("ingest", str(small), str(data), str(work / "store_small"))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    def line(label, r):
        rate = r["n"] / r["seconds"]
        print(f"{label:<34} {r['n']:>9,} {r['seconds']:>8.2f} s {rate:>9,.0f}/s {r['cpu_s']:>8.2f} s "
              f"{r['n'] / r['cpu_s']:>9,.0f}/s {r['peak_rss_mb']:>6.0f} MiB ({r['rss_after_imports_mb']:.0f} after imports)")
        return rate

    print(f"{'':<34} {'samples':>9} {'wall':>10} {'rate':>10} {'cpu':>10} {'cpu rate':>10} {'peak RSS':>10}")
    b = line("baseline (json.loads + PIL verify)", base)
    f = line("mmssr ingest", full)
    line(f"mmssr ingest (pool of {small_n:,})", part)
    speed = f / b
    cpu_speed = base["cpu_s"] / full["cpu_s"]
    growth = full["peak_rss_mb"] - part["peak_rss_mb"]
    print(f"ingest / baseline speed: {speed:.2f}x wall, {cpu_speed:.2f}x CPU ({full['decoded']:,} distinct images decoded once each; "
          f"{full['accepted']:,} accepted, {full['quarantined']:,} quarantined)")
    print(f"peak RSS {small_n:,} -> {args.n:,} samples: {part['peak_rss_mb']:.0f} -> {full['peak_rss_mb']:.0f} MiB "
          f"({growth:+.0f} MiB for {args.n - small_n:,} more samples)")
    print(json.dumps({"n": args.n, "baseline": base, "ingest": full, "ingest_small": part, "speed_ratio": speed, "cpu_speed_ratio": cpu_speed,
                      "rss_growth_mb": growth}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
