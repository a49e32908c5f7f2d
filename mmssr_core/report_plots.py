"""Report pictures as small PNGs (matplotlib, Agg), sized to embed inline in HTML and Dagster metadata.

matplotlib is imported inside the functions so `import mmssr_core.report` stays light. Each function
returns PNG bytes; `save_png` keeps a file under MAX_PNG_BYTES by lowering the resolution if needed.
"""

from __future__ import annotations

import io
import math

MAX_PNG_BYTES = 150_000
COLORS = {"selected": "#d62728", "random": "#1f77b4", "pool": "#7f7f7f"}
_EXTRA_COLORS = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#ff7f0e"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _color(name: str, i: int) -> str:
    return COLORS.get(name, _EXTRA_COLORS[i % len(_EXTRA_COLORS)])


def _png(fig, dpi: int = 90, fit: bool = True) -> bytes:
    """Render a figure to PNG, dropping resolution until it fits MAX_PNG_BYTES.

    `fit`: crop to the drawn content (bbox_inches="tight", a second layout pass). Figures laid out already
    (tight_layout or fixed margins) pass False: the extra pass cost about as much as drawing them."""
    plt = _plt()
    try:
        while True:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if fit else None,
                        pil_kwargs={"optimize": True})
            data = buf.getvalue()
            if len(data) <= MAX_PNG_BYTES or dpi <= 30:
                return data
            dpi = int(dpi * 0.8)
    finally:
        plt.close(fig)


def _short(key: str, width: int = 16) -> str:
    s = key.replace("_", " ")
    return s if len(s) <= width else s[: width - 1] + "…"


def score_distributions(series: dict[str, dict[str, list[float]]], keys: list[str], bins: int = 20) -> bytes:
    """Small multiples: per capability, the density of expected scores (0..5) of each subset.

    `series` maps subset name (selected, random, pool, ...) to {capability key: scores (array-like)}.
    """
    plt = _plt()
    import numpy as np

    n = max(len(keys), 1)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 1.9 * rows), squeeze=False, sharex=True)
    edges = [5 * i / bins for i in range(bins + 1)]
    for ax, key in zip(axes.flat, keys):
        for i, (name, per_key) in enumerate(series.items()):
            vals = np.asarray(per_key.get(key, []), dtype=float)
            vals = vals[~np.isnan(vals)]
            if vals.size:  # histogram in numpy, draw only the steps: cheap on millions of scores
                counts, _ = np.histogram(np.clip(vals, 0, 5), bins=edges, density=True)
                ax.stairs(counts, edges, linewidth=1.4, color=_color(name, i), label=name)
        ax.set_title(_short(key, 34), fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_xlim(0, 5)
        # fixed tick positions: tick placement and label measuring dominated the drawing time
        ax.set_xticks(range(6))
        ax.yaxis.set_major_locator(MaxNLocator(3))
    spare = list(axes.flat)[len(keys):]
    for ax in spare:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.suptitle("expected score per capability (density)", fontsize=9)
    # fixed margins sized for 8 pt titles and 6 pt tick labels (tight_layout measured every text twice)
    width, height = 2.6 * cols, 1.9 * rows
    fig.subplots_adjust(left=0.42 / width, right=1 - 0.1 / width, bottom=0.3 / height, top=1 - 0.5 / height,
                        wspace=0.22, hspace=0.45)
    if handles and spare:  # the legend goes into an empty panel
        spare[0].legend(handles, labels, loc="center", fontsize=8, frameon=False)
    elif handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, -0.04))
        return _png(fig)  # the legend sits below the figure: crop to it
    return _png(fig, fit=False)


def style_source_heatmap(styles: list[str], sources: list[str], selected: list[list[float]], pool: list[list[float]] | None) -> bytes:
    """Heat map of the selection's style x source label shares (left) and its lift over the pool (right)."""
    plt = _plt()
    import numpy as np

    sel = np.array(selected, dtype=float).reshape(len(styles), len(sources))
    panels = [("selected: share of labels (%)", sel * 100, "Reds", None)]
    if pool is not None:
        pl_ = np.array(pool, dtype=float).reshape(len(styles), len(sources))
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = np.where(pl_ > 0, sel / pl_, np.nan)
        panels.append(("lift over pool (selected share / pool share)", lift, "RdBu_r", (0.0, 2.0)))
    width = max(3.0, 0.7 * len(sources) + 2.2)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 0.32 * len(styles) + 1.4), squeeze=False)
    for ax, (title, mat, cmap, lim) in zip(axes.flat, panels):
        kw = {"vmin": lim[0], "vmax": lim[1]} if lim else {}
        im = ax.imshow(mat, cmap=cmap, aspect="auto", **kw)
        ax.set_xticks(range(len(sources)), [_short(s, 14) for s in sources], rotation=40, ha="right", fontsize=7)
        ax.set_yticks(range(len(styles)), [_short(s, 24) for s in styles], fontsize=7)
        ax.set_title(title, fontsize=8)
        if mat.size <= 120:
            for (i, j), v in np.ndenumerate(mat):
                if not np.isnan(v):
                    ax.text(j, i, f"{v:.1f}" if v < 10 else f"{v:.0f}", ha="center", va="center", fontsize=6)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
    fig.tight_layout()
    return _png(fig)


def capability_radar(keys: list[str], series: dict[str, list[float | None]]) -> bytes:
    """Radar of the mean expected score per capability, one polygon per subset (selected vs random...)."""
    plt = _plt()
    n = len(keys)
    angles = [2 * math.pi * i / n for i in range(n)] + [0.0]
    fig = plt.figure(figsize=(5.6, 5.6))
    ax = fig.add_subplot(111, polar=True)
    top = 0.0
    for i, (name, vals) in enumerate(series.items()):
        v = [0.0 if x is None else float(x) for x in vals]
        top = max([top] + v)
        ax.plot(angles, v + v[:1], color=_color(name, i), linewidth=1.5, label=name)
        ax.fill(angles, v + v[:1], color=_color(name, i), alpha=0.08)
    ax.set_xticks(angles[:-1], [_short(k, 30).replace(" ", "\n", 1) for k in keys], fontsize=6)
    ax.set_ylim(0, max(5.0 if top > 2.5 else top * 1.1, 0.5))
    ax.tick_params(axis="y", labelsize=6)
    ax.set_title("mean expected score per capability", fontsize=9, pad=14)
    ax.legend(loc="upper right", bbox_to_anchor=(1.25, 1.12), fontsize=7, frameon=False)
    return _png(fig)


def overlap_matrix(names: list[str], jaccard: dict[str, dict[str, float]]) -> bytes:
    """Jaccard similarity between subsets (budgets of the recipe, random, baselines)."""
    plt = _plt()
    import numpy as np

    mat = np.array([[jaccard[a][b] for b in names] for a in names], dtype=float)
    size = 0.55 * len(names) + 1.8
    fig, ax = plt.subplots(figsize=(size + 0.8, size))
    im = ax.imshow(mat, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), [_short(n, 16) for n in names], rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), [_short(n, 16) for n in names], fontsize=7)
    for (i, j), v in np.ndenumerate(mat):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
    ax.set_title("overlap (Jaccard)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
    fig.tight_layout()
    return _png(fig)
