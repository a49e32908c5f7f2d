"""Benchmark of `mmssr_core.selection` against a straightforward pandas implementation of the same rule.

    .venv/bin/python benchmarks/selection.py                 # 2.6M rows, budgets 5%, 10%, 30%
    .venv/bin/python benchmarks/selection.py --rows 200000   # smaller
    .venv/bin/python benchmarks/selection.py --pandas-cap 120  # time cap of the pandas run on the full table

Synthetic scores table: 14 capabilities, 1-3 styles per sample, 20 sources of Zipf-like sizes. Three runs:
- `paper`: what the scorer writes, an expected score in [0, 5] and an integer score 0-5 (`<key>__argmax`)
  per capability, selected with the default rule (the integer decides, the expected score breaks ties);
- `expected`: the same table with the opt-in `rank="expected"` (continuous scores, few ties);
- `integer`: a float-only table of whole numbers 0-5 (an external scorer's integers: massive ties).
Every measurement runs in a fresh subprocess (`--phase ...`) so wall time, CPU time and peak RSS are its own.

The pandas implementation is what the reference code does: every capability, every round, it filters and
re-sorts all remaining candidates, then melts the style labels and groups them into bins. It is run on a
10% sample of the `paper` table (all budgets, the default rule) and on the full table under a time cap;
chosen sets are compared.
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

BUDGETS = ["5%", "10%", "30%"]


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def synth(n: int, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(paper, integer) scores tables with the same ids, sources and styles: the paper table has an expected
    score and an integer score (near the rounded expected score, as a scorer's argmax is) per capability."""
    from mmssr_core.taxonomy import Taxonomy

    tax = Taxonomy()
    caps, styles = tax.keys, list(tax.styles)
    rng = np.random.default_rng(seed)
    w = 1 / np.arange(1, 21)
    src = rng.choice(20, size=n, p=w / w.sum())
    length = rng.integers(1, 4, n)
    # the primary style leans on the source (as real sources favour a format), the rest are random
    s1 = (src + rng.choice([0, 0, 1, 2, 3, 4, 5, 6, 7, 8], n)) % 9
    s2 = (s1 + rng.integers(1, 9, n)) % 9
    s3 = (s2 + rng.integers(1, 8, n)) % 9
    s3 = np.where(s3 == s1, (s3 + 1) % 9, s3)
    base = pl.DataFrame({"src": src, "s1": s1, "s2": s2, "s3": s3, "len": length}).with_row_index("i")
    labels = pl.Series(styles)
    frame = base.select(
        pl.format("src{}/{}", pl.col("src"), pl.col("i")).alias("id"),
        pl.format("source_{}", pl.col("src")).alias("source"),
        pl.concat_list("s1", "s2", "s3")
        .list.head(pl.col("len"))
        .list.eval(pl.element().replace_strict(list(range(9)), labels.to_list()))
        .alias("styles"),
    )
    quality = rng.normal(2.6, 0.9, n)
    strength = rng.normal(0, 0.6, (20, len(caps)))
    paper, integ = {}, {}
    for j, k in enumerate(caps):
        v = np.clip(quality + strength[src, j] + rng.normal(0, 0.8, n), 0, 5)
        paper[k] = pl.Series(v)
        paper[f"{k}__argmax"] = pl.Series(np.clip(np.round(v + rng.normal(0, 0.4, n)), 0, 5).astype(np.int8))
        integ[k] = pl.Series(np.round(v))
    return frame.with_columns(**paper), frame.with_columns(**integ)


# ------------------------------------------------------------------------------------------------
# the straightforward pandas implementation (the reference's approach)
# ------------------------------------------------------------------------------------------------
def pandas_prepare(path: str):
    """Parsed labels and tie keys, as the reference caches its parsed styles: not timed."""
    import pandas as pd

    from mmssr_core.selection import normalise_styles, parse_budget, tie_keys

    df = pl.read_parquet(path)
    tk = tie_keys(df["id"], 0)
    assert np.unique(tk).size == tk.size, "synthetic ids must have distinct tie keys"
    combos = {}
    rows = []
    for styles, source in zip(df["styles"].to_list(), df["source"].to_list()):
        key = (tuple(styles), source)
        if key not in combos:
            combos[key] = [f"{s}+{source}" for s in normalise_styles(styles)] or [f"unstyled+{source}"]
        rows.append(combos[key])
    width = max(len(r) for r in rows)
    pdf = df.drop("styles").to_pandas()
    caps = [c for c in df.columns if c not in ("id", "source", "styles") and not c.endswith("__argmax")]
    for p in range(width):
        pdf[f"sty_{p + 1}"] = [r[p] if p < len(r) else None for r in rows]
    pdf["tk"] = tk
    pdf.index = pd.RangeIndex(len(pdf), name="idx")
    return pdf, caps, lambda b, pool: parse_budget(b).size(pool)


def pandas_balanced_take(ranked, k: int) -> list[int]:
    sty = [c for c in ranked.columns if c.startswith("sty_")]
    melted = ranked[sty].melt(ignore_index=False, var_name="pos", value_name="style").dropna(subset=["style"])
    melted = melted.reset_index()
    grouped = melted.groupby("style", sort=True)["idx"].apply(list)
    order = sorted(grouped.index, key=lambda label: (len(grouped[label]), label))
    quota = max(k // len(order), 1)
    carry = 0
    taken: list[int] = []
    seen: set[int] = set()
    for label in order:
        if len(taken) >= k:
            break
        available = [i for i in grouped[label] if i not in seen]
        m = min(quota + carry, len(available), k - len(taken))
        carry = max(quota + carry - len(available), 0)
        taken.extend(available[:m])
        seen.update(available[:m])
    return taken


def pandas_select(pdf, caps: list[str], N: int, deadline: float, threshold: float = 0.0) -> list[int] | None:
    remaining = pdf
    chosen: list[int] = []
    active = list(caps)
    while len(chosen) < N and active:
        share = max((N - len(chosen)) // len(active), 1)
        drop = []
        for c in active:
            if time.perf_counter() > deadline:
                return None
            share = min(share, N - len(chosen))
            integer = f"{c}__argmax"
            if integer in remaining.columns:  # the default rule: integer > t, integer then expected then tie key
                ranked = remaining[remaining[integer] > threshold].sort_values(
                    [integer, c, "tk"], ascending=[False, False, True]
                )
            else:
                ranked = remaining[remaining[c] > threshold].sort_values([c, "tk"], ascending=[False, True])
            got = pandas_balanced_take(ranked, share) if len(ranked) else []
            if not got:
                drop.append(c)
            else:
                chosen.extend(got)
                remaining = remaining.drop(index=got)
            if len(chosen) >= N:
                break
        active = [c for c in active if c not in drop]
    return chosen


# ------------------------------------------------------------------------------------------------
# phases (each in its own process)
# ------------------------------------------------------------------------------------------------
def rss_mb() -> float:
    """Peak resident memory of this process. VmHWM (per address space) rather than ru_maxrss, which on
    Linux keeps the parent's peak across fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_gen(rows: int, work: Path) -> dict:
    t = time.perf_counter()
    cont, integ = synth(rows)
    cont.write_parquet(work / "paper.parquet")
    integ.write_parquet(work / "integer.parquet")
    cont.sample(fraction=0.1, seed=1).write_parquet(work / "sample.parquet")
    return {"rows": rows, "seconds": time.perf_counter() - t}


def phase_fast(scores: str, out: str, rank: str) -> dict:
    from mmssr_core.selection import select

    w0, c0 = time.perf_counter(), time.process_time()
    df = pl.read_parquet(scores)
    read_s = time.perf_counter() - w0
    rss_read = rss_mb()
    w1, c1 = time.perf_counter(), time.process_time()
    res = select(df, BUDGETS, rank=rank)
    sel_wall, sel_cpu = time.perf_counter() - w1, time.process_time() - c1
    pl.DataFrame(
        {
            "budget": [k for k, s in res.items() for _ in range(s.selected)],
            "row": pl.concat([s.frame["id"].str.split("/").list.get(1).cast(pl.Int64) for s in res.values()]),
        }
    ).write_parquet(out)
    return {
        "rows": df.height,
        "read_s": read_s,
        "select_wall_s": sel_wall,
        "select_cpu_s": sel_cpu,
        "total_wall_s": time.perf_counter() - w0,
        "total_cpu_s": time.process_time() - c0,
        "rss_after_read_mb": rss_read,
        "peak_rss_mb": rss_mb(),
        "selected": {k: s.selected for k, s in res.items()},
        "short": any(s.short for s in res.values()),
    }


def phase_pandas(scores: str, out: str, cap: float) -> dict:
    pdf, caps, parse_budget = pandas_prepare(scores)
    result: dict = {"rows": len(pdf), "budgets": {}, "finished": True}
    rows, budgets = [], []
    w0, c0 = time.perf_counter(), time.process_time()
    deadline = w0 + cap
    for b in BUDGETS:
        t = time.perf_counter()
        got = pandas_select(pdf, caps, parse_budget(b, len(pdf)), deadline)
        if got is None:
            result["finished"] = False
            break
        result["budgets"][b] = time.perf_counter() - t
        rows += got
        budgets += [b] * len(got)
    result["wall_s"] = time.perf_counter() - w0
    result["cpu_s"] = time.process_time() - c0
    result["peak_rss_mb"] = rss_mb()
    pl.DataFrame(
        {"budget": budgets, "row": pdf["id"].str.split("/").str[1].astype("int64").to_numpy()[rows] if rows else []},
        schema={"budget": pl.Utf8, "row": pl.Int64},
    ).write_parquet(out)
    return result


def sub(args: list[str], timeout: float | None = None) -> dict:
    cmd = [sys.executable, __file__, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"phase failed: {' '.join(args)}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same(a: str, b: str) -> dict:
    x, y = pl.read_parquet(a), pl.read_parquet(b)
    out = {}
    for bud in BUDGETS:
        rx = x.filter(pl.col("budget") == bud)["row"]
        ry = y.filter(pl.col("budget") == bud)["row"]
        if ry.len() == 0:
            continue
        out[bud] = {"same_set": set(rx.to_list()) == set(ry.to_list()), "same_order": rx.equals(ry)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_600_000)
    ap.add_argument("--pandas-cap", type=float, default=300.0, help="seconds the pandas run may take on the full table")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--phase", choices=["gen", "fast", "pandas"], help=argparse.SUPPRESS)
    ap.add_argument("--scores", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--rank", default="integer", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase == "gen":
        print(json.dumps(phase_gen(args.rows, Path(args.workdir))))
        return
    if args.phase == "fast":
        print(json.dumps(phase_fast(args.scores, args.out, args.rank)))
        return
    if args.phase == "pandas":
        print(json.dumps(phase_pandas(args.scores, args.out, args.pandas_cap)))
        return

    work = Path(args.workdir or tempfile.mkdtemp(prefix="mmssr_bench_sel_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {os.getloadavg()} on {os.cpu_count()} cores", flush=True)
    paths = tables(work, args.rows)
    report: dict = {"rows": args.rows, "budgets": BUDGETS}
    report.update(run_fast(paths, work))
    report.update(run_pandas(paths, work, report, args.pandas_cap))
    print(f"load average at end: {os.getloadavg()}", flush=True)
    print(json.dumps(report, default=str))


def tables(work: Path, rows: int) -> dict[str, Path]:
    """The synthetic tables in `work` (reused when they have the right size)."""
    paths = {k: work / f"{k}.parquet" for k in ("paper", "integer", "sample")}
    if (
        all(p.exists() for p in paths.values())
        and pl.scan_parquet(paths["paper"]).select(pl.len()).collect().item() == rows
    ):
        print(f"reusing the synthetic tables in {work}", flush=True)
    else:
        g = sub(["--phase", "gen", "--rows", str(rows), "--workdir", str(work)])
        print(f"synthetic tables ({rows:,} rows) written to {work} in {g['seconds']:.1f} s", flush=True)
    return paths


def run_fast(paths: dict[str, Path], work: Path) -> dict:
    report = {}
    runs = {
        "paper": ("paper", "integer"),
        "expected": ("paper", "expected"),
        "integer": ("integer", "integer"),
        "sample": ("sample", "integer"),
    }
    for kind, (table, rank) in runs.items():
        r = sub(
            [
                "--phase",
                "fast",
                "--scores",
                str(paths[table]),
                "--rank",
                rank,
                "--out",
                str(work / f"fast_{kind}.parquet"),
            ]
        )
        report[f"fast_{kind}"] = r
        print(
            f"mmssr_core {kind:10s} {r['rows']:>9,} rows: select (3 budgets) {r['select_wall_s']:.2f} s wall, "
            f"{r['select_cpu_s']:.2f} s CPU; with Parquet read {r['total_wall_s']:.2f} s; "
            f"peak RSS {r['peak_rss_mb']:.0f} MB (after read {r['rss_after_read_mb']:.0f} MB)",
            flush=True,
        )
    return report


def run_pandas(paths: dict[str, Path], work: Path, fast: dict, cap: float) -> dict:
    """The pandas re-sort on the 10% sample (to the end) and on the full table (under `cap` seconds)."""
    report = {}
    r = sub(
        [
            "--phase",
            "pandas",
            "--scores",
            str(paths["sample"]),
            "--out",
            str(work / "pandas_sample.parquet"),
            "--pandas-cap",
            "100000",
        ]
    )
    report["pandas_sample"] = r
    fs = fast["fast_sample"]
    report["ratio_sample_wall"] = r["wall_s"] / fs["select_wall_s"]
    report["ratio_sample_cpu"] = r["cpu_s"] / fs["select_cpu_s"]
    report["check_sample"] = same(str(work / "fast_sample.parquet"), str(work / "pandas_sample.parquet"))
    print(
        f"pandas re-sort  sample     {r['rows']:>9,} rows: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, "
        f"peak RSS {r['peak_rss_mb']:.0f} MB -> mmssr_core is {report['ratio_sample_wall']:.0f}x faster (wall), "
        f"{report['ratio_sample_cpu']:.0f}x (CPU); same chosen sets: {report['check_sample']}",
        flush=True,
    )
    r = sub(
        [
            "--phase",
            "pandas",
            "--scores",
            str(paths["paper"]),
            "--out",
            str(work / "pandas_paper.parquet"),
            "--pandas-cap",
            str(cap),
        ],
        timeout=cap * 3 + 600,
    )
    report["pandas_full"] = r
    ff = fast["fast_paper"]
    report["check_full"] = same(str(work / "fast_paper.parquet"), str(work / "pandas_paper.parquet"))
    if r["finished"]:
        report["ratio_full_wall"] = r["wall_s"] / ff["select_wall_s"]
        print(
            f"pandas re-sort  full       {r['rows']:>9,} rows: {r['wall_s']:.1f} s wall -> "
            f"{report['ratio_full_wall']:.0f}x; same chosen sets: {report['check_full']}",
            flush=True,
        )
    else:
        done = ", ".join(f"{b} in {s:.0f} s" for b, s in r["budgets"].items()) or "no budget"
        print(
            f"pandas re-sort  full       {r['rows']:>9,} rows: stopped at the {cap:.0f} s cap "
            f"({done} finished) -> mmssr_core is more than {cap / ff['select_wall_s']:.0f}x faster",
            flush=True,
        )
        if report["check_full"]:
            print(f"  budgets it finished, same chosen sets: {report['check_full']}", flush=True)
    return report


if __name__ == "__main__":
    main()
