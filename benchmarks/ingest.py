"""Ingestion benchmark: `mmssr ingest` against a minimal baseline loop, same pool, same run.

The pool (built deterministically in a temporary folder, not timed): N LLaVA JSONL records whose texts
cycle over the real LLaVA-Bench, MATH-V testmini and TabMWP samples in ../shared/data (new ids, a suffix
making every conversation unique). Their images are mostly distinct, as in a real pool:
- by default 85% of the samples with an image have an image file of their own: a copy of one of the
  1,358 real images (real formats, sizes and content) with a unique trailer after the image data, so
  every file has distinct bytes and is read, hashed and decoded on its own, as a distinct image is;
- 15% reuse the image of an earlier sample (several questions about one picture). For scale: the real
  pools here range from 0% (MATH-V testmini, TabMWP: one image per sample) to 40% (LLaVA-Bench: 90
  samples over 54 images); `--repeat-share` changes it;
- 2% are text-only (`--text-only-share`).
The page cache is warmed over every file first, so neither contender pays the first disk read (about
33 KB per distinct image on average: ~2.7 GB at N = 100,000; `--workdir` puts it elsewhere).

Then, each in its own subprocess with its peak memory read from its own /proc/self/status (VmHWM; a
child's ru_maxrss would carry its parent's peak): two baselines, `ingest_source` on the full pool, and on
its first N/4 records (memory must be flat in pool size). The baselines:
- header check: parse each line, open each image with Pillow and `verify()` it (no pixel decoded: less
  than ingestion checks, the floor of any validation);
- plain loop: the same image checks as ingestion written straightforwardly (verify, fully decode, sha256
  of the file), without its Parquet output, text hashing and perceptual hashes.
Printed: each rate, ingest against each baseline (wall and CPU ratios), the memory growth, and the
machine's load average at start and end.

    .venv/bin/python benchmarks/ingest.py            # N = 100,000
    .venv/bin/python benchmarks/ingest.py --n 20000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POOLS = ("llava_bench", "math_vision_testmini", "tabmwp_dev1k")
FILES_PER_DIR = 1000


def shared_data() -> Path:
    env = os.environ.get("MMSSR_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def real_samples(data: Path) -> list[tuple[dict, Path]]:
    """(record, image file) of every real sample with an image."""
    out = []
    for name in POOLS:
        for rec in json.loads((data / name / "pool.llava.json").read_text()):
            if rec.get("image"):
                out.append((rec, data / name / rec["image"]))
    return out


def build_pool(data: Path, n: int, work: Path, repeat_share: float, text_only_share: float, seed: int = 0) -> dict:
    """The N-record pool as `work/pool.jsonl`, images under `work/images/` (the image root is `work`)."""
    base = real_samples(data)
    image_bytes: dict[Path, bytes] = {}
    rng = random.Random(seed)
    own: list[str] = []  # image paths written so far (relative to work)
    counts = {"samples": n, "distinct_images": 0, "reused": 0, "text_only": 0, "bytes": 0}
    with open(work / "pool.jsonl", "w") as fh:
        for i in range(n):
            rec, img = base[i % len(base)]
            rec = dict(rec, id=f"bench_{i:07d}")
            conv = [dict(t) for t in rec["conversations"]]
            conv[-1]["value"] = f"{conv[-1]['value']} [{i}]"
            rec["conversations"] = conv
            u = rng.random()
            if u < text_only_share:
                rec.pop("image")
                for turn in conv:
                    turn["value"] = turn["value"].replace("<image>", "").strip()
                counts["text_only"] += 1
            elif u < text_only_share + repeat_share and own:
                rec["image"] = own[rng.randrange(len(own))]
                counts["reused"] += 1
            else:
                rel = f"images/{i // FILES_PER_DIR:04d}/{i:07d}{img.suffix}"
                if img not in image_bytes:
                    image_bytes[img] = img.read_bytes()
                data_bytes = image_bytes[img] + f"\0mmssr-bench-image {i}".encode()
                path = work / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data_bytes)
                own.append(rel)
                rec["image"] = rel
                counts["distinct_images"] += 1
                counts["bytes"] += len(data_bytes)
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return counts


def first_lines(src: Path, dst: Path, n: int) -> None:
    with open(src) as fin, open(dst, "w") as fout:
        for _, line in zip(range(n), fin):
            fout.write(line)


def warm(folder: Path) -> None:
    """Read every file once so that both contenders find them in the page cache."""
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                while fh.read(1 << 20):
                    pass


def _rss_mb() -> float:
    """Peak resident memory of this process so far: VmHWM, not ru_maxrss (Linux carries ru_maxrss over
    from the parent through fork and exec, so a child would report its parent's peak)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
            images = rec.get("image") or []
            for path in images if isinstance(images, list) else [images]:
                with Image.open(os.path.join(root, path)) as im:
                    im.verify()
            n += 1
    return {
        "n": n,
        "seconds": time.perf_counter() - t0,
        "cpu_s": _cpu_s() - c0,
        "peak_rss_mb": _rss_mb(),
        "rss_after_imports_mb": after_imports,
    }


def phase_plain(pool: Path, root: Path) -> dict:
    """The checks ingestion makes, written plainly: parse, verify, fully decode and hash every image."""
    import hashlib

    from PIL import Image

    after_imports = _rss_mb()
    t0, c0 = time.perf_counter(), _cpu_s()
    n = 0
    with open(pool, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = json.loads(line)
            images = rec.get("image") or []
            for path in images if isinstance(images, list) else [images]:
                full = os.path.join(root, path)
                with Image.open(full) as im:
                    im.verify()
                with Image.open(full) as im:
                    im.load()
                with open(full, "rb") as img:
                    hashlib.file_digest(img, "sha256")
            n += 1
    return {
        "n": n,
        "seconds": time.perf_counter() - t0,
        "cpu_s": _cpu_s() - c0,
        "peak_rss_mb": _rss_mb(),
        "rss_after_imports_mb": after_imports,
    }


def phase_ingest(pool: Path, root: Path, store_dir: Path) -> dict:
    from mmssr_core.ingest import ingest_source
    from mmssr_core.store import Store

    after_imports = _rss_mb()
    t0, c0 = time.perf_counter(), _cpu_s()
    result = ingest_source(pool, "bench", Store(store_dir), image_root=root)
    seconds, cpu = time.perf_counter() - t0, _cpu_s() - c0
    assert result.read == result.accepted + result.quarantined
    return {
        "n": result.read,
        "accepted": result.accepted,
        "quarantined": result.quarantined,
        "decoded": result.images["decoded"],
        "seconds": seconds,
        "cpu_s": cpu,
        "peak_rss_mb": _rss_mb(),
        "rss_after_imports_mb": after_imports,
    }


def run_phase(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--phase", *args], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f"phase {args[0]} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="pool size (default 100,000)")
    ap.add_argument(
        "--repeat-share",
        type=float,
        default=0.15,
        help="share of samples that reuse an earlier sample's image (default 0.15)",
    )
    ap.add_argument("--text-only-share", type=float, default=0.02, help="share of text-only samples (default 0.02)")
    ap.add_argument("--workdir", help="where pools and stores go (default: a temp dir, removed)")
    ap.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        kind, *rest = args.phase
        phases = {"baseline": phase_baseline, "plain": phase_plain, "ingest": phase_ingest}
        out = phases[kind](*map(Path, rest))
        print(json.dumps(out))
        return 0

    print(f"load average at start: {load()}", flush=True)
    data = shared_data()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="mmssr-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        small_n = max(1, args.n // 4)
        pool, small = work / "pool.jsonl", work / "pool_small.jsonl"
        t0 = time.perf_counter()
        built = build_pool(data, args.n, work, args.repeat_share, args.text_only_share)
        first_lines(pool, small, small_n)
        warm(work)
        with_image = built["samples"] - built["text_only"]
        print(
            f"pool: {args.n:,} samples ({pool.stat().st_size / 2**20:.0f} MiB JSONL), texts from {', '.join(POOLS)}; "
            f"{built['distinct_images']:,} distinct image files ({built['bytes'] / 2**20:,.0f} MiB), "
            f"{built['reused']:,} samples reusing an earlier image ({100 * built['reused'] / max(with_image, 1):.1f}% "
            f"of those with an image), {built['text_only']:,} text-only; built and cached in "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        base = run_phase("baseline", str(pool), str(work))
        plain = run_phase("plain", str(pool), str(work))
        full = run_phase("ingest", str(pool), str(work), str(work / "store"))
        part = run_phase("ingest", str(small), str(work), str(work / "store_small"))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    def line(label, r):
        rate = r["n"] / r["seconds"]
        print(
            f"{label:<38} {r['n']:>9,} {r['seconds']:>8.2f} s {rate:>9,.0f}/s {r['cpu_s']:>8.2f} s "
            f"{r['n'] / r['cpu_s']:>9,.0f}/s {r['peak_rss_mb']:>6.0f} MiB ({r['rss_after_imports_mb']:.0f} after imports)"
        )
        return rate

    print(f"{'':<38} {'samples':>9} {'wall':>10} {'rate':>10} {'cpu':>10} {'cpu rate':>10} {'peak RSS':>10}")
    b = line("baseline (json.loads + PIL verify)", base)
    p = line("plain loop (verify + decode + sha256)", plain)
    f = line("mmssr ingest", full)
    line(f"mmssr ingest (pool of {small_n:,})", part)
    speed = f / b
    cpu_speed = base["cpu_s"] / full["cpu_s"]
    growth = full["peak_rss_mb"] - part["peak_rss_mb"]
    plain_speed, plain_cpu = f / p, plain["cpu_s"] / full["cpu_s"]
    print(f"ingest / header-check baseline: {speed:.2f}x wall, {cpu_speed:.2f}x CPU (the baseline decodes no pixel)")
    print(
        f"ingest / plain loop of the same checks: {plain_speed:.2f}x wall, {plain_cpu:.2f}x CPU (ingest also writes "
        f"Parquet, perceptual hashes and content hashes of text + images)"
    )
    print(
        f"  {full['decoded']:,} images decoded by ingest, {built['distinct_images']:,} distinct files; "
        f"{full['accepted']:,} accepted, {full['quarantined']:,} quarantined"
    )
    print(
        f"peak RSS {small_n:,} -> {args.n:,} samples: {part['peak_rss_mb']:.0f} -> {full['peak_rss_mb']:.0f} MiB "
        f"({growth:+.0f} MiB for {args.n - small_n:,} more samples)"
    )
    print(f"load average at end: {load()}", flush=True)
    print(
        json.dumps(
            {
                "n": args.n,
                "pool": built,
                "baseline": base,
                "plain": plain,
                "ingest": full,
                "ingest_small": part,
                "speed_ratio": speed,
                "cpu_speed_ratio": cpu_speed,
                "plain_speed_ratio": plain_speed,
                "plain_cpu_speed_ratio": plain_cpu,
                "rss_growth_mb": growth,
                "load_end": os.getloadavg(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
