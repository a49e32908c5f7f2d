"""The eval report of a selection recipe: what was selected, against the pool and a random subset.

`build_report` computes one profile per subset (the selection, a seeded random subset of the same size,
any baselines given, the whole scored pool), the selection's own facts (which capability's turn picked
what, overlap between budgets, threshold effects, scoring failures), draws the plots and writes
`reports/<recipe>.json` (machine-readable summary), `reports/<recipe>.html` (one self-contained page)
and `reports/<recipe>.<plot>.png` under the store. The Dagster asset turns `ReportResult` into metadata
with `metadata_entries()`; this module never imports Dagster. `mmssr_core.report_inputs` gathers the
inputs from a store, for the asset and the CLI alike.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from mmssr_core import report_metrics as M
from mmssr_core.dedup.report import dedup_markdown, dedup_metrics, dedup_section
from mmssr_core.schema import REPORTS_TABLE, SELECTIONS_TABLE
from mmssr_core.store import Store, atomic_write_bytes, check_name

PLOT_NAMES = ("score_distributions", "style_source_heatmap", "capability_radar", "overlap")


@dataclass
class ReportResult:
    summary: dict
    json_path: Path
    html_path: Path | None
    markdown: str  # the headline table (+ per-capability table), Markdown
    plots: dict[str, Path] = field(default_factory=dict)  # name -> PNG file
    metrics: dict[str, float] = field(default_factory=dict)  # flat numbers, for Dagster's plots over time

    def plots_markdown(self, names: list[str] | None = None) -> dict[str, str]:
        """Per plot a Markdown image with a base64 data URI (Dagster's Markdown renderer shows them)."""
        from mmssr_core.report_html import png_data_uri

        return {
            n: f"![{n}]({png_data_uri(Path(p).read_bytes())})"
            for n, p in self.plots.items()
            if names is None or n in names
        }

    def metadata_entries(self) -> list[tuple[str, str, object]]:
        """(name, kind, value) for Dagster metadata; kind is md | path | float | int | json.

        Kept Dagster-free: the asset maps kinds to `MetadataValue.md/path/float/int/json`.
        """
        out: list[tuple[str, str, object]] = [("report", "md", self.markdown)]
        if self.summary.get("scorer"):
            out.append(("scorer", "md", M.scorer_line(self.summary["scorer"])))
        for name, md in self.plots_markdown().items():
            out.append((f"plot_{name}", "md", md))
        out.append(("report_json", "path", str(self.json_path)))
        if self.html_path is not None:
            out.append(("report_html", "path", str(self.html_path)))
        for name, p in self.plots.items():
            out.append((f"plot_{name}_png", "path", str(p)))
        for k, v in self.metrics.items():
            out.append((k, "float", float(v)))
        return out


def _store(store) -> Store:
    return store if isinstance(store, Store) else Store(store)


def _budget_label(budget) -> str | None:
    if budget is None:
        return None
    if isinstance(budget, float) and 0 < budget < 1:
        return f"{budget:.4g} ({budget * 100:g}%)"
    return str(budget)


def _metrics(summary: dict) -> dict[str, float]:
    prof = summary["profiles"]
    sel, rnd, pool = prof["selected"], prof["random"], prof["pool"]
    f = lambda v: float(v) if v is not None else float("nan")  # noqa: E731  (NaN entries are dropped below)
    m = {
        "size": f(sel["size"]),
        "pool_size": f(summary["pool_size"]),
        "fraction": f(summary["fraction"]),
        "mean_score": f(sel["mean_score"]),
        "mean_score_random": f(rnd["mean_score"]),
        "mean_score_pool": f(pool["mean_score"]),
        "mean_score_gain_vs_random": f(sel["mean_score"]) - f(rnd["mean_score"]),
        "any_ge4_share": f(sel["any_ge4_share"]),
        "any_ge4_share_random": f(rnd["any_ge4_share"]),
        "style_entropy": f(sel["style_entropy"]),
        "style_entropy_random": f(rnd["style_entropy"]),
        "source_entropy": f(sel["source_entropy"]),
        "style_source_entropy": f(sel["style_source_entropy"]),
        "bin_coverage": f(sel["bin_coverage"]),
        "bin_coverage_random": f(rnd["bin_coverage"]),
        "capability_coverage": f(sel["capabilities_with_ge4"]) / max(len(summary["capabilities"]), 1),
        "eligible_any": f(summary["threshold"]["eligible_any"]),
        "failed_samples": f(summary["failures"]["samples"]),
        "failed_in_selection": f(summary["failures"]["in_selection"]),
        "jaccard_vs_random": f(summary["overlap"]["jaccard"]["selected"]["random"]),
    }
    if "nested" in summary["overlap"]:
        m["budgets_nested"] = 1.0 if summary["overlap"]["nested"] else 0.0
    for k in summary["capabilities"]:
        m[f"mean_score/{k}"] = f(sel["capabilities"][k]["mean"])
    # undefined numbers (an empty subset has no mean) are left out: JSON has no NaN, Dagster plots gaps
    return {k: v for k, v in m.items() if v == v}


def _examples(
    sel_rows: pl.DataFrame, pool: pl.DataFrame | None, keys: list[str], styles_order: list[str], k: int
) -> dict[str, list[dict]]:
    """Up to k selected samples per primary style, best rank first, with thumbnail, top scores and turns."""
    from mmssr_core.report_html import thumbnail_data_uri

    if k <= 0 or sel_rows.height == 0:
        return {}
    df = sel_rows.with_columns(pl.col("styles").list.first().fill_null(M.NO_STYLE).alias("_primary"))
    sort_cols = ["rank"] if "rank" in df.columns else []
    df = df.sort(sort_cols + ["source", "id"])
    picked = df.group_by("_primary", maintain_order=True).head(k)
    if pool is not None:
        cols = [c for c in ("image_files", "conversations") if c in pool.columns]
        picked = picked.join(pool.select(M.KEY + cols), on=M.KEY, how="left")
    order = {s: i for i, s in enumerate(styles_order)}
    out: dict[str, list[dict]] = {}
    for row in sorted(
        picked.iter_rows(named=True), key=lambda r: (order.get(r["_primary"], len(order)), r["_primary"])
    ):
        scores = sorted(((c, row[c]) for c in keys if row.get(c) is not None), key=lambda kv: -kv[1])[:3]
        files = row.get("image_files") or []
        turns = [
            (t["from"], (t["value"] or "")[:300] + ("…" if len(t["value"] or "") > 300 else ""))
            for t in (row.get("conversations") or [])[:2]
        ]
        out.setdefault(row["_primary"], []).append(
            {
                "id": row["id"],
                "source": row["source"],
                "styles": row.get("styles") or [],
                "picked_by": row.get("picked_by"),
                "rank": row.get("rank"),
                "top_scores": scores,
                "turns": turns,
                "thumb": thumbnail_data_uri(files[0]) if files else None,
            }
        )
    return out


def build_report(
    store,
    recipe_name: str,
    selection: pl.DataFrame,
    scores: pl.DataFrame,
    *,
    pool: pl.DataFrame | None = None,
    seed: int = 0,
    budget: float | int | str | None = None,
    threshold: float = 0.0,
    rank: str = "integer",
    capabilities: list[str] | None = None,
    taxonomy=None,
    failures: pl.DataFrame | None = None,
    baselines: dict[str, pl.DataFrame] | None = None,
    budget_selections: dict[str, pl.DataFrame] | None = None,
    recipe: dict | None = None,
    dedup: dict | None = None,
    examples_per_style: int = 3,
    make_plots: bool = True,
    make_html: bool = True,
) -> ReportResult:
    """Build and write the report of one recipe's selection.

    selection: id, source (+ rank, picked_by, bin) of the selected samples; scores: the scored pool
    (schema.scores_schema). pool: the raw_pool rows (for text, turns, image sizes and example thumbnails).
    baselines: other subsets at the same budget by name (e.g. {"mean": ..., "style_only": ...}); a
    seeded random subset of the same size is always drawn here (seed). budget_selections: this
    recipe's selections at several budgets by label (overlap matrix and nesting check). failures:
    the score_failures table. threshold and rank: the selection's rule, so "pool passing" counts what the
    selection could pick (rank "integer": the integer score where the table has one). dedup: the
    selection's duplicates summary (what `selections/<recipe>.json` holds under "dedup"). Returns a
    ReportResult; files land under `<store>/reports/`. To build from a store, see
    `mmssr_core.report_inputs.gather_report_inputs`.
    """
    st = _store(store)
    check_name(recipe_name, "recipe")
    if taxonomy is None:
        from mmssr_core.taxonomy import load_taxonomy

        taxonomy = load_taxonomy()
    keys = _check_inputs(selection, scores, pool, capabilities, taxonomy)
    subsets = _subsets(selection, scores, seed, baselines)
    summary = {
        "recipe": recipe_name,
        "recipe_config": recipe,
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "budget": budget if budget is not None else subsets["selected"].height,
        "budget_label": _budget_label(budget),
        **_facts(selection, scores, subsets, keys, pool, taxonomy, threshold, rank, failures, budget_selections),
        "dedup": dedup_section(dedup, scores.height, subsets["selected"].height),
        "scorer": M.scorer_summary(scores),
    }
    if pool is not None:
        summary["unscored_in_pool"] = M.keys_of(pool).join(scores.select(M.KEY), on=M.KEY, how="anti").height
    summary["metrics"] = metrics = {**_metrics(summary), **dedup_metrics(summary["dedup"])}
    plot_bytes = _draw(summary, subsets, keys, taxonomy) if make_plots else {}
    plot_paths = _write_plots(st, recipe_name, plot_bytes)
    summary["plots"] = {n: str(p) for n, p in plot_paths.items()}
    html_path = None
    if make_html:
        examples = _examples(subsets["selected"], pool, keys, list(taxonomy.styles), examples_per_style)
        html_path = _write_html(st, recipe_name, summary, plot_bytes, examples)
    summary["html_path"] = str(html_path) if html_path else None
    json_path = st.write_json(REPORTS_TABLE, recipe_name, summary)
    return ReportResult(summary, json_path, html_path, _markdown(summary), plot_paths, metrics)


def _check_inputs(selection, scores, pool, capabilities, taxonomy) -> list[str]:
    """The capability keys to report, after checking that every input has the columns it needs and every
    selected sample has scores."""
    M.require_columns(selection, M.KEY, "selection")
    M.require_columns(scores, M.KEY + ["styles"], "scores table")
    keys = M.capability_keys(scores, capabilities, taxonomy)
    if pool is not None:
        M.require_columns(pool, M.KEY, "pool")
    missing = M.keys_of(selection).join(scores.select(M.KEY), on=M.KEY, how="anti")
    if missing.height:
        raise M.ReportError(
            f"{missing.height} selected samples are not in the scores table, e.g. {missing.head(3).to_dicts()}"
        )
    return keys


def _subsets(selection, scores, seed, baselines) -> dict[str, pl.DataFrame]:
    """Scores rows of every subset compared: selected, its seeded random twin, baselines, the pool (last)."""
    sel_rows = M.subset_scores(scores, selection)
    subsets = {"selected": sel_rows, "random": M.random_subset(scores, sel_rows.height, seed)}
    for name, df in (baselines or {}).items():
        if name in ("selected", "random", "pool"):
            name = f"baseline_{name}"
        M.require_columns(df, M.KEY, f"baseline {name!r}")
        subsets[name] = M.subset_scores(scores, df)
    subsets["pool"] = scores
    return subsets


def _facts(selection, scores, subsets, keys, pool, taxonomy, threshold, rank, failures, budget_selections) -> dict:
    """The numbers of the summary: sizes, per-subset profiles, picks, threshold effects, overlap, failures."""
    pool_bins = {(a, b) for a, b in M.style_source_counts(scores).select("style", "source").iter_rows()}
    n_sources = scores["source"].n_unique()
    profiles = {
        name: M.subset_profile(
            df, keys, pool=pool, n_styles=len(taxonomy.styles), pool_sources=n_sources, pool_bins=pool_bins
        )
        for name, df in subsets.items()
    }
    overlap_sets = {n: df for n, df in subsets.items() if n != "pool"}
    nested_order = None
    if budget_selections:
        for label, df in budget_selections.items():
            M.require_columns(df, M.KEY, f"budget selection {label!r}")
            overlap_sets[f"budget {label}"] = df
        nested_order = [f"budget {label}" for label in budget_selections]
    size, pool_size = subsets["selected"].height, scores.height
    return {
        "size": size,
        "pool_size": pool_size,
        "raw_pool_size": pool.height if pool is not None else None,
        "fraction": size / pool_size if pool_size else 0.0,
        "capabilities": keys,
        "profiles": profiles,
        "picked_by": M.picked_by_shares(selection, keys),
        "rank": rank,
        "threshold": M.threshold_effects(scores, keys, threshold, rank),
        "overlap": M.overlap(overlap_sets, nested_order),
        "failures": M.failure_summary(failures, selection, pool_size),
    }


def _markdown(summary: dict) -> str:
    """The headline and per-capability tables for the Dagster UI and the CLI."""
    from mmssr_core import report_tables as T

    scorer = f"; scores by {M.scorer_line(summary.get('scorer'))}" if summary.get("scorer") else ""
    return (
        f"**{summary['recipe']}**: {summary['size']:,} of {summary['pool_size']:,} samples{scorer}\n\n"
        f"{T.headline(summary).markdown()}\n\n{T.capabilities(summary).markdown()}\n\n"
        f"{dedup_markdown(summary['dedup'])}"
    )


def _write_plots(st: Store, recipe_name: str, plot_bytes: dict[str, bytes]) -> dict[str, Path]:
    """Write this report's PNGs, and remove the PNGs of plots it no longer draws (a dropped plot must not
    linger beside the new report)."""
    paths: dict[str, Path] = {}
    for name in PLOT_NAMES:
        p = st.path(REPORTS_TABLE, recipe_name, f".{name}.png")
        if name in plot_bytes:
            atomic_write_bytes(p, plot_bytes[name])
            paths[name] = p
        else:
            p.unlink(missing_ok=True)
    return paths


def _write_html(st: Store, recipe_name: str, summary: dict, plot_bytes: dict[str, bytes], examples) -> Path:
    from mmssr_core import report_html

    path = st.path(REPORTS_TABLE, recipe_name, ".html")
    atomic_write_bytes(path, report_html.render(summary, plot_bytes, examples).encode("utf-8"))
    return path


def _draw(summary: dict, subsets: dict[str, pl.DataFrame], keys: list[str], taxonomy) -> dict[str, bytes]:
    """PNG bytes of every plot worth drawing for this summary (`report_plots.plots_worth_drawing`)."""
    from mmssr_core import report_plots as P

    prof = summary["profiles"]
    dist_names = [n for n in ("selected", "random", "pool") if n in subsets]
    pool_ss = _style_source_frame(prof["pool"])
    present = set(pool_ss["style"].to_list())
    styles = [s for s in taxonomy.styles if s in present] + sorted(present - set(taxonomy.styles))
    sources = sorted(set(pool_ss["source"].to_list()))
    ov = summary["overlap"]
    wanted = P.plots_worth_drawing(len(keys), len(styles), len(sources), len(ov["names"]))
    out: dict[str, bytes] = {}
    if "score_distributions" in wanted:
        series = {n: {k: subsets[n][k].drop_nulls().to_numpy() for k in keys} for n in dist_names}
        out["score_distributions"] = P.score_distributions(series, keys)
    if "style_source_heatmap" in wanted:

        def grid(df: pl.DataFrame) -> list[list[float]]:
            total = df["count"].sum() or 1
            cell = {(r["style"], r["source"]): r["count"] / total for r in df.iter_rows(named=True)}
            return [[cell.get((s, src), 0.0) for src in sources] for s in styles]

        sel_ss = _style_source_frame(prof["selected"])
        out["style_source_heatmap"] = P.style_source_heatmap(styles, sources, grid(sel_ss), grid(pool_ss))
    if "capability_radar" in wanted:
        radar = {n: [prof[n]["capabilities"][k]["mean"] for k in keys] for n in dist_names}
        out["capability_radar"] = P.capability_radar(keys, radar)
    if "overlap" in wanted:
        out["overlap"] = P.overlap_matrix(ov["names"], ov["jaccard"])
    return out


def _style_source_frame(profile: dict) -> pl.DataFrame:
    return pl.DataFrame(profile["style_source"], schema={"style": pl.Utf8, "source": pl.Utf8, "count": pl.Int64})


def read_report(store, recipe_name: str) -> dict:
    """The JSON summary written by `build_report`."""
    return _store(store).read_json(REPORTS_TABLE, recipe_name)


def report_files(store, recipe_name: str) -> list[Path]:
    st = _store(store)
    d = st.table_dir(REPORTS_TABLE)
    return sorted(p for p in d.glob(f"{recipe_name}.*") if not p.name.startswith(".")) if d.is_dir() else []


def related_selections(store, recipe, recipes, selections_table: str = SELECTIONS_TABLE) -> tuple[dict, dict]:
    """(baselines, budget_selections) for `recipe` from the selections already in the store.

    baselines: recipes with another method (random, mean, ...) or capability set at the same budget;
    budget_selections: recipes of the same method, capabilities, threshold and seed at any budget
    (the recipe itself included), for the overlap matrix and the nesting check. Recipes are
    `mmssr_core.recipes.Recipe` objects; those without a stored selection are skipped.
    """
    st = _store(store)

    def family(r):
        return (r.method, r.capabilities, r.threshold, r.seed, r.rank)

    baselines: dict[str, pl.DataFrame] = {}
    budgets: dict[str, pl.DataFrame] = {}
    for r in recipes:
        if not st.exists(selections_table, r.name):
            continue
        if family(r) == family(recipe):
            budgets[r.name] = st.read(selections_table, r.name)
        elif r.budget == recipe.budget and r.name != recipe.name:
            baselines[r.name] = st.read(selections_table, r.name)
    if len(budgets) < 2:
        budgets = {}
    return baselines, budgets


__all__ = [
    "ReportResult",
    "build_report",
    "related_selections",
    "read_report",
    "report_files",
    "REPORTS_TABLE",
    "PLOT_NAMES",
]
