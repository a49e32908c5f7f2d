"""How well a scorer agrees with teacher labels: the number a user checks before trusting a scorer.

Inputs: a scores table (docs/method.md: id, source, styles, one Float64 expected score per capability,
optionally `<key>__argmax` Int8) and the `teacher_labels` table (id, source, one Int8 per capability,
styles, failure). Rows are matched on (source, id); teacher failures and null scores are left out per
metric, and the counts say how many pairs each figure rests on.

Metrics per capability: Spearman rank correlation of the expected score with the teacher integer
(average ranks for ties, computed with polars ranks + numpy, no scipy), mean absolute error of the
expected score against the teacher integer, exact accuracy and the 6x6 confusion matrix of the integer
score (argmax; rounded expected score when the table has no argmax column) against the teacher.
Styles: micro-F1 over (sample, label) pairs, per-label F1, and primary-style (first label) accuracy.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from mmssr_core.prompts import DIGITS
from mmssr_core.schema import AGREEMENT_PARTITION, AGREEMENT_TABLE, argmax_column

N_LEVELS = len(DIGITS)
SUMMARY_FILE = "agreement.json"
SPEARMAN_PLOT = "spearman.png"
MAE_PLOT = "mae.png"
CONFUSION_PLOT = "confusion.png"


class AgreementError(ValueError):
    """Nothing to compare (no labels, no overlap, no shared capability)."""


def spearman(x: Sequence[float] | np.ndarray | pl.Series, y: Sequence[float] | np.ndarray | pl.Series) -> float | None:
    """Spearman's rho with average ranks for ties; None when fewer than 2 pairs or a side is constant."""
    xs = pl.Series("x", x, dtype=pl.Float64)
    ys = pl.Series("y", y, dtype=pl.Float64)
    if xs.len() != ys.len():
        raise ValueError("spearman needs two series of the same length")
    if xs.len() < 2:
        return None
    rx = xs.rank("average").to_numpy().astype(np.float64)
    ry = ys.rank("average").to_numpy().astype(np.float64)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = math.sqrt(float(np.dot(rx, rx)) * float(np.dot(ry, ry)))
    if denom == 0.0:
        return None
    return float(np.clip(np.dot(rx, ry) / denom, -1.0, 1.0))


def confusion(pred: Sequence[int], truth: Sequence[int], levels: int = N_LEVELS) -> np.ndarray:
    """levels x levels counts: rows = teacher integer, columns = scorer integer."""
    m = np.zeros((levels, levels), dtype=np.int64)
    p = np.asarray(pred, dtype=np.int64)
    t = np.asarray(truth, dtype=np.int64)
    if p.size:
        np.add.at(m, (np.clip(t, 0, levels - 1), np.clip(p, 0, levels - 1)), 1)
    return m


def style_metrics(pred: Sequence[Sequence[str]], truth: Sequence[Sequence[str]]) -> dict:
    """Micro-F1 over (sample, label) pairs, per-label precision/recall/F1, primary-label accuracy."""
    tp = fp = fn = 0
    per: dict[str, list[int]] = {}  # label -> [tp, fp, fn]
    primary_hits = 0
    n = 0
    for p, t in zip(pred, truth):
        p = list(dict.fromkeys(p or []))
        t = list(dict.fromkeys(t or []))
        if not t:
            continue
        n += 1
        ps, ts = set(p), set(t)
        for label in ps | ts:
            c = per.setdefault(label, [0, 0, 0])
            if label in ps and label in ts:
                c[0] += 1
            elif label in ps:
                c[1] += 1
            else:
                c[2] += 1
        tp += len(ps & ts)
        fp += len(ps - ts)
        fn += len(ts - ps)
        primary_hits += int(bool(p) and p[0] == t[0])

    def f1(a: int, b: int, c: int) -> float | None:
        return None if 2 * a + b + c == 0 else 2 * a / (2 * a + b + c)

    return {
        "n": n,
        "micro_f1": f1(tp, fp, fn),
        "micro_precision": None if tp + fp == 0 else tp / (tp + fp),
        "micro_recall": None if tp + fn == 0 else tp / (tp + fn),
        "primary_accuracy": None if n == 0 else primary_hits / n,
        "per_label": {label: {"tp": c[0], "fp": c[1], "fn": c[2], "f1": f1(*c)} for label, c in sorted(per.items())},
    }


@dataclass
class AgreementResult:
    """Every figure of one scorer-vs-teacher comparison; `to_dict` is the JSON summary."""

    scorer: str
    teacher: str
    n_scored: int
    n_labelled: int
    n_matched: int
    capabilities: list[dict] = field(default_factory=list)  # key, n, spearman, mae, accuracy, confusion
    confusion_total: list[list[int]] = field(default_factory=list)
    styles: dict = field(default_factory=dict)
    missing_capabilities: list[str] = field(default_factory=list)  # labelled but absent from the scores

    @property
    def mean_spearman(self) -> float | None:
        vals = [c["spearman"] for c in self.capabilities if c["spearman"] is not None]
        return float(np.mean(vals)) if vals else None

    @property
    def mean_mae(self) -> float | None:
        vals = [c["mae"] for c in self.capabilities if c["mae"] is not None]
        return float(np.mean(vals)) if vals else None

    @property
    def accuracy(self) -> float | None:
        m = np.asarray(self.confusion_total)
        return float(np.trace(m) / m.sum()) if m.size and m.sum() else None

    def to_dict(self) -> dict:
        return {
            "scorer": self.scorer,
            "teacher": self.teacher,
            "n_scored": self.n_scored,
            "n_labelled": self.n_labelled,
            "n_matched": self.n_matched,
            "mean_spearman": self.mean_spearman,
            "mean_mae": self.mean_mae,
            "integer_accuracy": self.accuracy,
            "capabilities": self.capabilities,
            "confusion_total": self.confusion_total,
            "styles": self.styles,
            "missing_capabilities": self.missing_capabilities,
        }

    def markdown(self) -> str:
        """The per-capability table shown in the UI and the docs."""

        def fmt(v, nd=3):
            return "" if v is None else f"{v:.{nd}f}"

        lines = ["| capability | n | Spearman | MAE | exact |", "|---|---|---|---|---|"]
        for c in self.capabilities:
            lines.append(f"| {c['key']} | {c['n']} | {fmt(c['spearman'])} | {fmt(c['mae'])} | {fmt(c['accuracy'])} |")
        lines.append(
            f"| **mean** | {self.n_matched} | {fmt(self.mean_spearman)} | {fmt(self.mean_mae)} | {fmt(self.accuracy)} |"
        )
        s = self.styles
        if s:
            lines.append("")
            lines.append(
                f"Styles (n={s.get('n', 0)}): micro-F1 {fmt(s.get('micro_f1'))}, "
                f"primary-style accuracy {fmt(s.get('primary_accuracy'))}"
            )
        return "\n".join(lines)


def _label(df: pl.DataFrame, col: str) -> str:
    if col not in df.columns or df.is_empty():
        return ""
    vals = df[col].drop_nulls().unique().sort().to_list()
    return " | ".join(str(v) for v in vals)


def compute_agreement(
    scores: pl.DataFrame,
    teacher: pl.DataFrame,
    keys: Sequence[str] | None = None,
) -> AgreementResult:
    """Compare a scores table with teacher labels; keys default to the capabilities both tables have."""
    for col in ("id", "source"):
        if col not in scores.columns or col not in teacher.columns:
            raise AgreementError(f"both tables need an {col!r} column")
    if "failure" in teacher.columns:
        good = teacher.filter(pl.col("failure").is_null())
    else:
        good = teacher
    if good.is_empty():
        raise AgreementError("no successful teacher label to compare with (run `mmssr label` first)")
    if keys is None:
        keys = [
            c for c in good.columns if c in scores.columns and good.schema[c].is_integer() and c not in ("id", "source")
        ]
        # keep the teacher table's column order (the taxonomy order)
    keys = list(keys)
    missing = [k for k in keys if k not in scores.columns]
    if keys and len(missing) == len(keys) and not ("styles" in scores.columns and "styles" in good.columns):
        raise AgreementError(f"the scores table has none of the labelled capabilities {keys}")
    keys = [k for k in keys if k not in missing]

    joined = _paired(scores, good, keys)
    caps: list[dict] = []
    total = np.zeros((N_LEVELS, N_LEVELS), dtype=np.int64)
    for k in keys:
        row, m = _capability_agreement(joined, k)
        total += m
        caps.append(row)
    styles: dict = {}
    if "s::styles" in joined.columns and "t::styles" in joined.columns:
        st = joined.filter(pl.col("s::styles").is_not_null() & pl.col("t::styles").is_not_null())
        styles = style_metrics(st["s::styles"].to_list(), st["t::styles"].to_list())
    return AgreementResult(
        scorer=_label(scores, "scorer"),
        teacher=_label(good, "teacher"),
        n_scored=scores.height,
        n_labelled=good.height,
        n_matched=joined.height,
        capabilities=caps,
        confusion_total=total.tolist(),
        styles=styles,
        missing_capabilities=missing,
    )


def _paired(scores: pl.DataFrame, good: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Scorer (`s::`, `a::` argmax) and teacher (`t::`) columns of every sample both tables have."""
    left = scores.select(
        "id",
        "source",
        *[pl.col(k).cast(pl.Float64).alias(f"s::{k}") for k in keys],
        *[pl.col(argmax_column(k)).cast(pl.Int64).alias(f"a::{k}") for k in keys if argmax_column(k) in scores.columns],
        *([pl.col("styles").alias("s::styles")] if "styles" in scores.columns else []),
    )
    right = good.select(
        "id",
        "source",
        *[pl.col(k).cast(pl.Int64).alias(f"t::{k}") for k in keys],
        *([pl.col("styles").alias("t::styles")] if "styles" in good.columns else []),
    )
    joined = left.join(right.unique(["source", "id"], keep="last"), on=["source", "id"], how="inner")
    if joined.is_empty():
        raise AgreementError(
            f"no sample is both scored ({scores.height} rows) and teacher-labelled ({good.height} rows): "
            "are they from the same sources and ids?"
        )
    return joined


def _capability_agreement(joined: pl.DataFrame, k: str) -> tuple[dict, np.ndarray]:
    """One capability's row (n, Spearman, MAE, accuracy, means, confusion) and its confusion matrix; the
    scorer's level is its argmax where stored, else the rounded expected score."""
    sub = joined.filter(pl.col(f"s::{k}").is_not_null() & pl.col(f"t::{k}").is_not_null())
    s = sub[f"s::{k}"].to_numpy().astype(np.float64)
    t = sub[f"t::{k}"].to_numpy().astype(np.int64)
    if f"a::{k}" in sub.columns and sub[f"a::{k}"].null_count() == 0:
        p = sub[f"a::{k}"].to_numpy().astype(np.int64)
    else:
        p = np.clip(np.floor(s + 0.5), 0, N_LEVELS - 1).astype(np.int64)
    m = confusion(p, t)
    row = {
        "key": k,
        "n": int(sub.height),
        "spearman": spearman(s, t) if sub.height else None,
        "mae": float(np.mean(np.abs(s - t))) if sub.height else None,
        "accuracy": float(np.mean(p == t)) if sub.height else None,
        "teacher_mean": float(t.mean()) if sub.height else None,
        "scorer_mean": float(s.mean()) if sub.height else None,
        "confusion": m.tolist(),
    }
    return row, m


# -- plots -----------------------------------------------------------------------------------
def plot_agreement(result: AgreementResult, out_dir: str | Path) -> dict[str, Path]:
    """Per-capability Spearman and MAE bars and the pooled confusion heatmap, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    keys = [c["key"] for c in result.capabilities]
    h = max(3.0, 0.32 * len(keys) + 1.2)
    for name, metric, xlabel, lim in (
        ("spearman", "spearman", "Spearman rho (scorer expected score vs teacher)", (-1.0, 1.0)),
        ("mae", "mae", "mean absolute error (0..5 scale)", (0.0, 5.0)),
    ):
        vals = [c[metric] if c[metric] is not None else np.nan for c in result.capabilities]
        fig, ax = plt.subplots(figsize=(7.5, h))
        colors = ["#c0392b" if (metric == "spearman" and v < 0) else "#2e86c1" for v in np.nan_to_num(vals)]
        ax.barh(range(len(keys)), np.nan_to_num(vals), color=colors)
        ax.set_yticks(range(len(keys)), keys, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(*lim)
        ax.axvline(0, color="black", lw=0.6)
        ax.set_xlabel(xlabel)
        for i, v in enumerate(vals):
            ax.text(0 if np.isnan(v) else v, i, " n/a" if np.isnan(v) else f" {v:.2f}", va="center", fontsize=7)
        ax.set_title(f"{result.scorer or 'scorer'} vs teacher (n={result.n_matched})", fontsize=9)
        fig.tight_layout()
        p = out / (SPEARMAN_PLOT if name == "spearman" else MAE_PLOT)
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths[name] = p
    m = np.asarray(result.confusion_total, dtype=np.int64)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    im = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(N_LEVELS), DIGITS)
    ax.set_yticks(range(N_LEVELS), DIGITS)
    ax.set_xlabel("scorer integer score (argmax)")
    ax.set_ylabel("teacher score")
    peak = m.max() if m.size else 0
    for i in range(N_LEVELS):
        for j in range(N_LEVELS):
            ax.text(
                j,
                i,
                str(m[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if peak and m[i, j] > peak / 2 else "black",
            )
    acc = result.accuracy
    ax.set_title(f"all capabilities, exact {acc:.2f}" if acc is not None else "all capabilities", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    p = out / CONFUSION_PLOT
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths["confusion"] = p
    return paths


def write_agreement(result: AgreementResult, out_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
    """The JSON summary (plus the Markdown table and plots) in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if plots:
        paths.update(plot_agreement(result, out))
    summary = result.to_dict()
    summary["plots"] = {k: v.name for k, v in paths.items()}
    from mmssr_core.store import atomic_write_bytes

    p = out / SUMMARY_FILE
    atomic_write_bytes(p, json.dumps(summary, indent=2, sort_keys=True).encode())
    paths["summary"] = p
    md = out / "agreement.md"
    atomic_write_bytes(md, (result.markdown() + "\n").encode())
    paths["markdown"] = md
    return paths


def read_teacher_labels(store, sources: Sequence[str] | None = None) -> pl.DataFrame:
    """All teacher label partitions as one frame (columns unioned: the taxonomy may have grown)."""
    from mmssr_core.schema import TEACHER_TABLE
    from mmssr_core.store import StoreError

    parts = list(sources) if sources else store.partitions(TEACHER_TABLE)
    if not parts:
        raise StoreError(f"no teacher labels under {store.root} (run `mmssr label` first)")
    frames = [store.read(TEACHER_TABLE, p) for p in parts]
    return pl.concat(frames, how="diagonal_relaxed")


# -- the store's copy (what the `scorer_agreement` asset writes and the eval report can read) ----
def agreement_frame(result: AgreementResult) -> pl.DataFrame:
    """One row per capability: key, n, spearman, mae, accuracy, teacher_mean, scorer_mean."""
    cols = ("key", "n", "spearman", "mae", "accuracy", "teacher_mean", "scorer_mean")
    schema = {
        "key": pl.Utf8,
        "n": pl.Int64,
        "spearman": pl.Float64,
        "mae": pl.Float64,
        "accuracy": pl.Float64,
        "teacher_mean": pl.Float64,
        "scorer_mean": pl.Float64,
    }
    return pl.DataFrame([{c: cap[c] for c in cols} for cap in result.capabilities], schema=schema)


def save_agreement(store, result: AgreementResult, *, plots: bool = True) -> dict[str, Path]:
    """`agreement/pool.parquet` (per capability), `agreement/pool.json` (the summary), plots in
    `agreement/pool_plots/`."""
    path = store.write(AGREEMENT_TABLE, AGREEMENT_PARTITION, agreement_frame(result))
    plot_dir = store.table_dir(AGREEMENT_TABLE) / f"{AGREEMENT_PARTITION}_plots"
    paths = write_agreement(result, plot_dir, plots=plots)
    summary = json.loads(paths["summary"].read_text())
    summary["plots"] = {k: str(plot_dir / v) for k, v in summary.get("plots", {}).items()}
    paths["json"] = store.write_json(AGREEMENT_TABLE, AGREEMENT_PARTITION, summary)
    paths["table"] = path
    return paths


def load_agreement(store) -> dict | None:
    """The latest saved agreement summary (None when never computed): for reports."""
    try:
        return store.read_json(AGREEMENT_TABLE, AGREEMENT_PARTITION)
    except Exception:  # noqa: BLE001 - missing or unreadable: no agreement section
        return None
