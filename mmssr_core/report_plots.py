"""Report pictures as small PNGs (matplotlib, Agg), sized to embed inline in HTML and Dagster metadata.

matplotlib is imported inside the functions so `import mmssr_core.report` stays light. Each function
returns PNG bytes; `save_png` keeps a file under MAX_PNG_BYTES by lowering the resolution if needed.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

from mmssr_core.report_format import short_labels, text_color_on, wrap_label

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
            fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if fit else None, pil_kwargs={"optimize": True})
            data = buf.getvalue()
            if len(data) <= MAX_PNG_BYTES or dpi <= 30:
                return data
            dpi = int(dpi * 0.8)
    finally:
        plt.close(fig)


def _short(key: str, width: int = 16) -> str:
    return short_labels([key], width)[0]


def plots_worth_drawing(n_capabilities: int, n_styles: int, n_sources: int, n_compared: int) -> list[str]:
    """The plots that say something for these inputs, in page order.

    - score distributions: whenever there is a capability;
    - style x source heat map: when the grid has at least two cells;
    - capability radar: from three capabilities (fewer make a line, not a shape);
    - overlap matrix: from three compared subsets; with only the selection and its random subset, the
      2x2 matrix carries one number (their Jaccard), which the overlap table already states.
    """
    out = []
    if n_capabilities >= 1:
        out.append("score_distributions")
    if n_styles >= 1 and n_sources >= 1 and n_styles * n_sources >= 2:
        out.append("style_source_heatmap")
    if n_capabilities >= 3:
        out.append("capability_radar")
    if n_compared >= 3:
        out.append("overlap")
    return out


def _annotate(ax, im, mat, fmt: Callable[[float], str], fontsize: float) -> None:
    """Write each cell's value in black or white, whichever reads better on the cell's colour."""
    import numpy as np

    for (i, j), v in np.ndenumerate(mat):
        if np.isnan(v):
            continue
        color = text_color_on(im.cmap(im.norm(v)))
        ax.text(j, i, fmt(v), ha="center", va="center", fontsize=fontsize, color=color)


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
    spare = list(axes.flat)[len(keys) :]
    for i, ax in enumerate(axes.flat):
        if i >= len(keys):
            ax.axis("off")
        elif i + cols >= len(keys):  # the lowest panel of its column: it carries the score axis
            ax.tick_params(labelbottom=True)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.suptitle("expected score per capability (density)", fontsize=9)
    # fixed margins sized for 8 pt titles and 6 pt tick labels (tight_layout measured every text twice)
    width, height = 2.6 * cols, 1.9 * rows
    fig.subplots_adjust(
        left=0.42 / width, right=1 - 0.1 / width, bottom=0.3 / height, top=1 - 0.5 / height, wspace=0.22, hspace=0.45
    )
    if handles and spare:  # the legend goes into an empty panel
        spare[0].legend(handles, labels, loc="center", fontsize=8, frameon=False)
    elif handles:
        fig.legend(
            handles,
            labels,
            loc="lower center",
            ncol=len(labels),
            fontsize=8,
            frameon=False,
            bbox_to_anchor=(0.5, -0.04),
        )
        return _png(fig)  # the legend sits below the figure: crop to it
    return _png(fig, fit=False)


def style_source_heatmap(
    styles: list[str], sources: list[str], selected: list[list[float]], pool: list[list[float]] | None
) -> bytes:
    """Heat map of the selection's style x source label shares (left) and its lift over the pool (right).

    Source and style labels are shortened so that they stay distinct; a cell's number is written in the
    colour that contrasts with it; cells absent from the pool are grey."""
    plt = _plt()
    import numpy as np

    sel = np.array(selected, dtype=float).reshape(len(styles), len(sources))
    panels = [("selected: share of labels (%)", sel * 100, "Reds", None)]
    if pool is not None:
        pl_ = np.array(pool, dtype=float).reshape(len(styles), len(sources))
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = np.where(pl_ > 0, sel / pl_, np.nan)
        panels.append(("lift over pool (selected / pool share; grey: not in pool)", lift, "RdBu_r", (0.0, 2.0)))
    xlabels, ylabels = short_labels(sources, 24), short_labels(styles, 32)
    width = max(3.4, 0.75 * len(sources) + 2.6)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 0.34 * len(styles) + 1.8), squeeze=False)
    for ax, (title, mat, cmap, lim) in zip(axes.flat, panels):
        kw = {"vmin": lim[0], "vmax": lim[1]} if lim else {}
        cm = plt.get_cmap(cmap).with_extremes(bad="#e6e6e6")
        im = ax.imshow(np.ma.masked_invalid(mat), cmap=cm, aspect="auto", **kw)
        ax.set_xticks(range(len(sources)), xlabels, rotation=35, ha="right", rotation_mode="anchor", fontsize=7)
        ax.set_yticks(range(len(styles)), ylabels, fontsize=7)
        ax.set_title(title, fontsize=8)
        if mat.size <= 120:
            _annotate(ax, im, mat, lambda v: f"{v:.1f}" if v < 10 else f"{v:.0f}", 6.5)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
    fig.tight_layout()
    return _png(fig)


def capability_radar(keys: list[str], series: dict[str, list[float | None]]) -> bytes:
    """Radar of the mean expected score per capability, one polygon per subset (selected vs random...).

    Axis labels are wrapped onto short lines and the radial scale sits between two axes, so no label is
    cut or overdrawn; the legend goes below the chart."""
    plt = _plt()
    n = len(keys)
    angles = [2 * math.pi * i / n for i in range(n)] + [0.0]
    fig = plt.figure(figsize=(6.0, 6.4))
    ax = fig.add_subplot(111, polar=True)
    top = 0.0
    for i, (name, vals) in enumerate(series.items()):
        v = [0.0 if x is None else float(x) for x in vals]
        top = max([top] + v)
        ax.plot(angles, v + v[:1], color=_color(name, i), linewidth=1.5, label=name)
        ax.fill(angles, v + v[:1], color=_color(name, i), alpha=0.08)
    ax.set_xticks(angles[:-1], [wrap_label(k, 14) for k in keys], fontsize=7)
    ax.tick_params(axis="x", pad=10)
    ax.set_ylim(0, max(5.0 if top > 2.5 else top * 1.1, 0.5))
    ax.set_rlabel_position(180 / n)  # the scale between the first two axes, clear of their labels
    ax.tick_params(axis="y", labelsize=6, labelcolor="#666666")
    ax.set_title("mean expected score per capability", fontsize=9, pad=24)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=max(len(series), 1), fontsize=7, frameon=False)
    return _png(fig)


def overlap_matrix(names: list[str], jaccard: dict[str, dict[str, float]]) -> bytes:
    """Jaccard similarity between subsets (budgets of the recipe, random, baselines); drawn only for three
    or more subsets (see `plots_worth_drawing`)."""
    plt = _plt()
    import numpy as np

    mat = np.array([[jaccard[a][b] for b in names] for a in names], dtype=float)
    size = 0.6 * len(names) + 2.0
    labels = short_labels(names, 20)
    fig, ax = plt.subplots(figsize=(size + 0.9, size))
    im = ax.imshow(mat, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), labels, rotation=35, ha="right", rotation_mode="anchor", fontsize=7)
    ax.set_yticks(range(len(names)), labels, fontsize=7)
    _annotate(ax, im, mat, lambda v: f"{v:.2f}", 7)
    ax.set_title("overlap (Jaccard)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
    fig.tight_layout()
    return _png(fig)
