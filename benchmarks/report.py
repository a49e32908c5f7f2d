"""Report benchmark: `build_report` on a synthetic scored pool (14 capabilities, 9 styles, 8 sources).

Three timings on the same pool, in the same run:
- a plain pandas computation of the report's core numbers (per subset: capability means, medians and
  counts scoring >= 4, the share scoring >= 4 anywhere, style x source label counts, source counts; the
  threshold sweep; the selected/random overlap), from a pandas frame converted before timing: the
  comparison for the numbers;
- `build_report` without plots and HTML (the numbers alone, with their JSON), which computes more than the
  pandas version (entropies, bin coverage, picks, nesting of two budgets);
- `build_report` with plots and HTML: what the pictures and the page cost on top of the numbers.
Printed: each time, the ratios, each PNG's size (under 150 KB to embed in Dagster metadata and the page),
and the machine's load average at start and end.

    .venv/bin/python benchmarks/report.py              # N = 1,000,000 scored, 10% selected
    .venv/bin/python benchmarks/report.py --n 200000
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import polars as pl


def synth(n: int, fraction: float):
    from mmssr_core.taxonomy import DEFAULT_STYLES, Taxonomy

    tax, rng = Taxonomy(), np.random.default_rng(0)
    styles = list(DEFAULT_STYLES)
    idx = np.arange(n)
    df = pl.DataFrame({"id": pl.Series(idx).cast(pl.Utf8), "source": pl.Series(idx % 8).cast(pl.Utf8)})
    df = df.with_columns(
        pl.concat_list(pl.Series(np.array(styles)[idx % 9]), pl.Series(np.array(styles)[(idx * 7) % 9])).alias("styles")
    )
    df = df.with_columns([pl.Series(k, np.clip(rng.normal(2.5, 1.2, n), 0, 5)) for k in tax.keys])
    k = int(n * fraction)
    sel = (
        df.sort(tax.keys[0], descending=True)
        .head(k)
        .select("id", "source")
        .with_columns(pl.lit(tax.keys[0]).alias("picked_by"))
    )
    return tax, df, sel


def pandas_numbers(pdf, sel_ids, keys: list[str]) -> dict:
    """The report's core numbers, written plainly in pandas."""
    chosen = pdf[pdf["id"].isin(sel_ids)]
    subsets = {"selected": chosen, "random": pdf.sample(n=len(chosen), random_state=0), "pool": pdf}
    out = {}
    for name, d in subsets.items():
        caps = {k: (d[k].mean(), d[k].median(), int((d[k] >= 4).sum())) for k in keys}
        labels = d[["source", "styles"]].explode("styles")
        out[name] = {
            "capabilities": caps,
            "any_ge4_share": float((d[keys] >= 4).any(axis=1).mean()),
            "style_source": labels.groupby(["styles", "source"]).size().to_dict(),
            "sources": d.groupby("source").size().to_dict(),
        }
    out["sweep"] = {t: {k: int((pdf[k] > t).sum()) for k in keys} for t in (0.0, 1.0, 2.0, 3.0, 4.0)}
    a, b = set(subsets["selected"]["id"]), set(subsets["random"]["id"])
    out["jaccard"] = len(a & b) / max(len(a | b), 1)
    return out


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--fraction", type=float, default=0.1)
    args = ap.parse_args()
    print(f"load average at start: {load()}", flush=True)

    from mmssr_core.report import build_report

    tax, df, sel = synth(args.n, args.fraction)
    k = sel.height
    budgets = {"half": sel.head(k // 2), "full": sel}
    pdf, sel_ids = df.to_pandas(), sel["id"].to_list()
    t = time.perf_counter()
    pandas_numbers(pdf, sel_ids, list(tax.keys))
    pandas_s = time.perf_counter() - t
    del pdf
    times, work = {}, tempfile.mkdtemp(prefix="mmssr-bench-report-")
    try:
        for plots in (False, True):
            t = time.perf_counter()
            r = build_report(
                work,
                "bench",
                sel,
                df,
                taxonomy=tax,
                budget=args.fraction,
                budget_selections=budgets,
                make_plots=plots,
                make_html=plots,
            )
            times[plots] = time.perf_counter() - t
        sizes = {name: p.stat().st_size for name, p in r.plots.items()}
        html = r.html_path.stat().st_size
    finally:
        shutil.rmtree(work, ignore_errors=True)
    numbers, full = times[False], times[True]
    print(f"{args.n:,} scored, {k:,} selected, two budgets")
    print(f"{'plain pandas, core numbers':<38} {pandas_s:7.2f} s")
    print(
        f"{'build_report, numbers only':<38} {numbers:7.2f} s  -> {pandas_s / numbers:.1f}x faster than pandas "
        f"(and computes more)"
    )
    print(f"{'build_report, numbers + plots + HTML':<38} {full:7.2f} s  -> {full / numbers:.1f}x the numbers alone")
    print("PNG sizes (bytes):", sizes)
    print(f"HTML: {html:,} bytes")
    print(f"load average at end: {load()}", flush=True)


if __name__ == "__main__":
    main()
