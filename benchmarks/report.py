"""Report benchmark: `build_report` on a synthetic scored pool (14 capabilities, 9 styles, 8 sources).

Times the numbers alone (no plots, no HTML) and the full report (plots + HTML), same pool, same run, and
prints the size of each PNG (they must stay under 150 KB to embed in Dagster metadata and the HTML page).

    .venv/bin/python benchmarks/report.py              # N = 1,000,000 scored, 10% selected
    .venv/bin/python benchmarks/report.py --n 200000
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import polars as pl


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--fraction", type=float, default=0.1)
    args = ap.parse_args()

    from mmssr_core.report import build_report
    from mmssr_core.taxonomy import DEFAULT_STYLES, Taxonomy

    tax, n, rng = Taxonomy(), args.n, np.random.default_rng(0)
    styles = list(DEFAULT_STYLES)
    idx = np.arange(n)
    df = pl.DataFrame({"id": pl.Series(idx).cast(pl.Utf8), "source": pl.Series(idx % 8).cast(pl.Utf8)})
    df = df.with_columns(pl.concat_list(pl.Series(np.array(styles)[idx % 9]), pl.Series(np.array(styles)[(idx * 7) % 9])).alias("styles"))
    df = df.with_columns([pl.Series(k, np.clip(rng.normal(2.5, 1.2, n), 0, 5)) for k in tax.keys])
    k = int(n * args.fraction)
    sel = df.sort(tax.keys[0], descending=True).head(k).select("id", "source").with_columns(pl.lit(tax.keys[0]).alias("picked_by"))
    budgets = {"half": sel.head(k // 2), "full": sel}
    for plots in (False, True):
        t = time.perf_counter()
        r = build_report(tempfile.mkdtemp(), "bench", sel, df, taxonomy=tax, budget=args.fraction,
                         budget_selections=budgets, make_plots=plots, make_html=plots)
        dt = time.perf_counter() - t
        what = "numbers + plots + HTML" if plots else "numbers only"
        print(f"build_report, {n:,} scored, {k:,} selected, {what}: {dt:.1f} s")
    print("PNG sizes (bytes):", {name: p.stat().st_size for name, p in r.plots.items()})
    print(f"HTML: {r.html_path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
