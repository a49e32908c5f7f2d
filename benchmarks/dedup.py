"""Benchmark of duplicate detection (`mmssr_core.dedup`) on a synthetic 2.6M-sample pool.

    .venv/bin/python benchmarks/dedup.py                  # 2.6M samples (a few minutes on 2 cores)
    .venv/bin/python benchmarks/dedup.py --rows 200000    # smaller
    .venv/bin/python benchmarks/dedup.py --pairwise 4000  # size of the sample compared all-pairs

Synthetic raw pool, written as the store writes it (one Parquet per source, 20 sources of Zipf-like
sizes): a question of 8-20 words and an answer of 10-40 words from a 20k-word vocabulary, one image
perceptual hash per sample (10% text-only); 5% exact copies placed in other sources, 5% near copies
(one word changed, 0-3 hash bits flipped). Every measurement runs in a fresh subprocess (`--phase`), so
wall time, CPU time and peak RSS are its own. Printed, each as a ratio against ours:
1. ours (exact + near: MinHash/LSH bands + image hash chunks) on the whole pool, and on a tenth of it
   (peak memory should barely move: it holds a batch plus fixed-size keys, never pairs);
2. exact-only (content hash) on the whole pool: what near detection costs on top;
3. plain pairwise (every pair of a sample compared on MinHash-estimated Jaccard and image distance, the
   same signatures, numpy-vectorised) against ours on the same sample, with the pairs each finds;
   the pairwise time at the full size is extrapolated (pairs grow with the square).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

N_SOURCES = 20
VOCAB = 20_000


def _texts(rng, n: int, lo: int, hi: int, vocab: pl.Series) -> pl.Series:
    width = hi
    idx = rng.integers(0, len(vocab), (n, width))
    words = vocab.gather(idx.reshape(-1)).reshape((n, width))
    lengths = pl.Series(rng.integers(lo, hi + 1, n))
    return pl.DataFrame({"w": words, "k": lengths}).select(
        pl.col("w").arr.to_list().list.head(pl.col("k")).list.join(" ")
    )["w"]


def write_pool(root: Path, n: int, sample_root: Path, sample: int, seed: int = 0) -> None:
    """The synthetic pool under root/raw_pool/source_XX.parquet, and under sample_root a sample of it
    (a quarter planted copies with their originals, the rest random rows) for the all-pairs comparison."""
    from mmssr_core.store import Store

    rng = np.random.default_rng(seed)
    vocab = pl.Series([f"w{i}" for i in range(VOCAB)])
    base_n = int(n * 0.9)
    q, a = _texts(rng, base_n, 8, 20, vocab), _texts(rng, base_n, 10, 40, vocab)
    ph = rng.integers(0, 2**63, base_n, dtype=np.uint64) * np.uint64(2)
    has_img = rng.random(base_n) >= 0.1
    df = pl.DataFrame({"q": q, "a": a, "ph": ph, "img": has_img, "h": np.arange(base_n)})
    k = n - base_n
    pick = rng.integers(0, base_n, k)
    copies = df[pick.tolist()]
    near = np.arange(k) % 2 == 1  # half exact copies, half near copies
    flips = np.zeros(k, np.uint64)
    for _ in range(3):
        bit = rng.integers(0, 64, k).astype(np.uint64)
        flips |= np.where(rng.random(k) < 0.6, np.uint64(1) << bit, np.uint64(0))
    swapped = vocab.gather(rng.integers(0, VOCAB, k))
    copies = copies.with_columns(
        pl.when(pl.Series(near)).then(pl.col("a") + " " + swapped).otherwise(pl.col("a")).alias("a"),
        pl.when(pl.Series(near)).then(pl.col("ph") ^ pl.Series(flips)).otherwise(pl.col("ph")).alias("ph"),
        pl.when(pl.Series(near)).then(pl.col("h") + base_n * 10).otherwise(pl.col("h")).alias("h"),
    )
    df = pl.concat([df, copies]).with_row_index("i")
    w = 1 / np.arange(1, N_SOURCES + 1)
    df = df.with_columns(pl.Series("src", rng.choice(N_SOURCES, size=n, p=w / w.sum())))
    m = min(sample // 4, k)
    chosen = np.unique(np.concatenate([pick[:m], base_n + np.arange(m), rng.integers(0, base_n, sample - 2 * m)]))
    _write(Store(root), df, range(N_SOURCES))
    _write(Store(sample_root), df[chosen.tolist()].with_columns(pl.lit(0).alias("src")), [0])


def _write(st, df: pl.DataFrame, sources) -> None:
    for s in sources:
        part = df.filter(pl.col("src") == s).select(
            pl.format("s{}", pl.col("i")).alias("id"),
            pl.lit(f"source_{s:02d}").alias("source"),
            pl.col("h").cast(pl.Utf8).alias("content_hash"),
            pl.lit(None, pl.Utf8).alias("duplicate_of"),
            pl.concat_list(
                pl.struct(pl.lit("human").alias("from"), ("<image>\n" + pl.col("q")).alias("value")),
                pl.struct(pl.lit("gpt").alias("from"), pl.col("a").alias("value")),
            ).alias("conversations"),
            pl.when(pl.col("img")).then(pl.lit(["x.jpg"])).otherwise(pl.lit([], pl.List(pl.Utf8))).alias("images"),
            pl.when(pl.col("img"))
            .then(pl.concat_list(pl.col("ph")))
            .otherwise(pl.lit([], pl.List(pl.UInt64)))
            .alias("image_phashes"),
        )
        st.write("raw_pool", f"source_{s:02d}", part)


def _usage() -> dict:
    """CPU time and peak RSS of this process. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the
    parent through fork and exec, so a child of a big parent would report the parent's peak."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    with open("/proc/self/status") as fh:
        hwm_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    return {"cpu": ru.ru_utime + ru.ru_stime, "rss_mb": hwm_kb / 1024}


def phase_ours(root: str, near: bool, limit: int | None) -> dict:
    from mmssr_core.dedup import DedupConfig, find_duplicates, pool_batches
    from mmssr_core.store import Store

    st = Store(root)

    def batches():
        left = limit
        for b in pool_batches(st):
            if left is not None:
                if left <= 0:
                    return
                b, left = b.head(left), left - b.height
            yield b

    t0 = time.perf_counter()
    res = find_duplicates(batches, DedupConfig(near=near))
    wall = time.perf_counter() - t0
    pairs = res.groups.select("group", "id")
    return {
        "wall": wall,
        **_usage(),
        "stats": {k: v for k, v in res.stats.items() if k != "config"},
        "grouped_ids": pairs.to_dict(as_series=False) if limit and limit <= 20_000 else None,
    }


def phase_pairwise(root: str, n: int) -> dict:
    """Every pair of the first n samples: MinHash-estimated Jaccard and image distance, vectorised."""
    from mmssr_core.dedup import DedupConfig, pool_batches
    from mmssr_core.dedup.minhash import signatures
    from mmssr_core.dedup.text import normalised_text, shingles
    from mmssr_core.store import Store

    cfg = DedupConfig()
    t0 = time.perf_counter()
    df = pl.concat(list(pool_batches(Store(root)))).head(n)
    n = df.height
    texts = df.select(normalised_text())["_text"].to_list()
    sig = signatures([shingles(t) for t in texts]).astype(np.uint32)
    ph = df["image_phashes"].list.first().fill_null(0).to_numpy().astype(np.uint64)
    n_img = df["images"].list.len().to_numpy()
    exact = df["content_hash"].to_numpy()
    t_linear = time.perf_counter() - t0  # reading and signatures: grows with n, not n^2
    found = []
    for i in range(n - 1):  # row i against every later row
        same = (sig[i + 1 :] == sig[i]).mean(axis=1) >= cfg.text_threshold
        dist = np.unpackbits((ph[i + 1 :] ^ ph[i]).view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
        hit = (same & (dist <= cfg.image_distance) & (n_img[i + 1 :] == n_img[i])) | (exact[i + 1 :] == exact[i])
        found += [(i, int(j) + i + 1) for j in np.flatnonzero(hit)]
    wall = time.perf_counter() - t0
    ids = df["id"].to_list()
    return {"wall": wall, "linear": t_linear, **_usage(), "pairs": [(ids[i], ids[j]) for i, j in found]}


def _run(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _faster(ratio: float) -> str:
    return f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"


def _line(name: str, r: dict, n: int) -> str:
    return (
        f"{name:<34} {n:>10,} samples: {r['wall']:7.1f} s wall, {r['cpu']:7.1f} s CPU, peak RSS {r['rss_mb']:6.0f} MB"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=2_600_000)
    p.add_argument("--pairwise", type=int, default=4000, help="sample size of the all-pairs comparison")
    p.add_argument("--phase", help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    p.add_argument("--sample", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.phase:
        phases = {
            "ours": lambda: phase_ours(a.root, True, a.limit),
            "exact": lambda: phase_ours(a.root, False, a.limit),
            "pairwise": lambda: phase_pairwise(a.root, a.limit),
            "write": lambda: write_pool(Path(a.root) / "pool", a.limit, Path(a.root) / "sample", a.sample) or {},
        }
        result = phases[a.phase]()
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(prefix="mmssr-bench-dedup-") as tmp:
        t0 = time.perf_counter()
        sample_root = str(Path(tmp) / "sample")
        _run(["--phase", "write", "--root", tmp, "--limit", str(a.rows), "--sample", str(a.pairwise)])
        tmp = str(Path(tmp) / "pool")
        took = time.perf_counter() - t0
        print(f"synthetic pool: {a.rows:,} samples in {N_SOURCES} sources, written in {took:.1f} s")
        print(f"machine: {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}")
        tenth = max(a.rows // 10, 1)
        ours = _run(["--phase", "ours", "--root", tmp])
        ours_tenth = _run(["--phase", "ours", "--root", tmp, "--limit", str(tenth)])
        exact = _run(["--phase", "exact", "--root", tmp])
        small = _run(["--phase", "ours", "--root", sample_root, "--limit", str(a.pairwise)])
        pair = _run(["--phase", "pairwise", "--root", sample_root, "--limit", str(a.pairwise)])
        n_sample = small["stats"]["samples"]
    s = ours["stats"]
    print(_line("ours, exact + near", ours, a.rows))
    print(
        f"  {s['groups']:,} groups ({s['exact_groups']:,} exact, {s['near_groups']:,} near), "
        f"{s['removable']:,} removable; {s['near_candidates']:,} near candidates, {s['near_comparisons']:,} "
        f"comparisons; keys {s['seconds_keys']:.1f} s, near {s['seconds_near']:.1f} s"
    )
    print(
        _line("ours, exact + near (a tenth)", ours_tenth, tenth)
        + f" -> memory x{ours['rss_mb'] / ours_tenth['rss_mb']:.2f} for x{a.rows / tenth:.0f} samples"
    )
    print(
        _line("exact only (content hash)", exact, a.rows)
        + f" -> near detection costs x{ours['wall'] / exact['wall']:.1f} the exact-only time"
    )
    print(_line("ours on the pairwise sample", small, n_sample))
    scale = a.rows / n_sample
    extrapolated = pair["linear"] * scale + (pair["wall"] - pair["linear"]) * scale**2
    print(
        _line("plain pairwise on the same sample", pair, n_sample)
        + f" -> ours is {_faster(pair['wall'] / small['wall'])} here (a small sample: fixed costs dominate)"
    )
    print(
        f"  pairwise at {a.rows:,} samples (its pair loop grows with the square): ~{extrapolated / 3600:,.1f} h "
        f"-> ours is ~{extrapolated / ours['wall']:,.0f}x faster at full size (extrapolated)"
    )
    grouped = {}
    for g, i in zip(small["grouped_ids"]["group"], small["grouped_ids"]["id"]):
        grouped[i] = g
    truth = pair["pairs"]
    same = sum(1 for x, y in truth if x in grouped and grouped.get(x) == grouped.get(y))
    sizes = pl.Series(list(grouped.values())).value_counts()["count"] if grouped else []
    ours_pairs = sum(n * (n - 1) // 2 for n in sizes)
    print(
        f"  pairs found by pairwise: {len(truth):,}; grouped together by ours: {same:,} "
        f"({100 * same / max(len(truth), 1):.1f}% recall); pairs inside our groups: {ours_pairs:,}"
    )
    print(f"machine: load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
