"""How a report writes numbers and labels so that they read at a glance.

Three rules, kept as pure functions so tests can pin them down:
- one number format per table column: a column of counts reads `2,520`, a column of means reads `870.8`,
  never a mix of both (the decimals are chosen once, from the column's largest value);
- short labels stay distinct: two long names with a common start (`llamafactory_demo`,
  `llamafactory_openai`) are shortened in the middle, keeping the part that tells them apart;
- an annotation on a coloured cell is black or white, whichever contrasts more with the cell.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Sequence

MISSING = "–"
ELLIPSIS = "…"
MAX_DECIMALS = 3


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def decimals_for(values: Sequence) -> int | None:
    """Decimals of a column's one number format; None when the column holds no number.

    Whole numbers only (counts, maxima of pixel sizes): 0 decimals. Otherwise about four significant digits
    of the column's largest magnitude, at most MAX_DECIMALS: 2.245 -> 3, 22.54 -> 2, 870.8 -> 1, 2,520 -> 0.
    """
    nums = [float(v) for v in values if _is_number(v) and not _is_missing(v) and math.isfinite(v)]
    if not nums:
        return None
    if all(v.is_integer() for v in nums):
        return 0
    top = max(abs(v) for v in nums)
    if top == 0:
        return 0
    return max(0, min(MAX_DECIMALS, 3 - math.floor(math.log10(top))))


def format_number(x, decimals: int) -> str:
    """One cell with a column's format: thousands separators, fixed decimals, "–" for a missing value."""
    if _is_missing(x):
        return MISSING
    if isinstance(x, bool):
        return "yes" if x else "no"
    if _is_number(x):
        return f"{x:,.{decimals}f}"
    return str(x)


def column_formatters(rows: Sequence[Sequence], digits: dict[int, int] | int | None = None) -> list[Callable]:
    """Per column a function that formats its cells alike. `digits` fixes the decimals of some columns
    (by index, or all numeric columns when an int); the others get `decimals_for` their values."""
    width = max((len(r) for r in rows), default=0)
    out = []
    for j in range(width):
        column = [r[j] for r in rows if j < len(r)]
        fixed = digits if isinstance(digits, int) else (digits or {}).get(j)
        d = decimals_for(column)
        if fixed is not None and d:  # a column of whole numbers keeps 0 decimals
            d = fixed
        out.append(lambda x, d=d: format_number(x, d if d is not None else 0))
    return out


def format_rows(rows: Sequence[Sequence], digits: dict[int, int] | int | None = None) -> list[list[str]]:
    """Every cell of a table as text, one number format per column."""
    fmts = column_formatters(rows, digits)
    return [[fmts[j](c) for j, c in enumerate(r)] for r in rows]


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence], digits: dict[int, int] | int | None = None, left_cols: int = 1
) -> str:
    """A Markdown table with labels left-aligned and numbers right-aligned, one format per column."""
    align = "|" + "".join("---|" if j < left_cols else "---:|" for j in range(len(header)))
    lines = ["| " + " | ".join(header) + " |", align]
    lines += ["| " + " | ".join(cells) + " |" for cells in format_rows(rows, digits)]
    return "\n".join(lines)


def short_labels(names: Sequence[str], width: int) -> list[str]:
    """Labels of at most `width` characters (underscores read as spaces) that stay distinct.

    A name that fits is kept. A longer one is cut in the middle ("llamafa…demo"), keeping its start and its
    end; when two cut names would read the same, more of the end is kept, since names that share a prefix
    differ at the end. Only if no cut keeps them apart are the full names returned.
    """
    clean = [str(n).replace("_", " ") for n in names]
    if width < 3:
        raise ValueError("width must be at least 3")
    room = width - 1  # characters around the ellipsis
    for head in range((room + 1) // 2, -1, -1):
        out = [s if len(s) <= width else _cut(s, head, room - head) for s in clean]
        if len(set(out)) == len(set(clean)) and not _tail_hides_a_word(out):
            return out
    return clean


def _tail_hides_a_word(labels: list[str]) -> bool:
    """True when one cut label's end is a proper suffix of another's ("…captions" beside "…sam captions"):
    the first lost the word that tells it apart."""
    tails = [x.split(ELLIPSIS, 1)[1] for x in labels if ELLIPSIS in x]
    return any(a != b and b.endswith(a) for a in tails for b in tails)


def _cut(s: str, head: int, tail: int) -> str:
    """s[:head] + "…" + the last `tail` characters, the end starting at a word when it can."""
    end = s[len(s) - tail :] if tail else ""
    if end and s[len(s) - tail - 1] != " " and " " in end[:-1]:
        end = end[end.index(" ") + 1 :]  # "…y demo" reads worse than "…demo"
    return s[:head].rstrip() + ELLIPSIS + end


def wrap_label(name: str, width: int = 14, max_lines: int = 3) -> str:
    """A label broken into balanced lines of about `width` characters (radar axes, narrow columns)."""
    text = str(name).replace("_", " ")
    lines = textwrap.wrap(text, width=width, break_long_words=True, break_on_hyphens=True)
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [short_labels([" ".join(lines[max_lines - 1 :])], width)[0]]
    return "\n".join(lines)


def _linear(c: float) -> float:
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def relative_luminance(rgb: Sequence[float]) -> float:
    """WCAG relative luminance of an sRGB colour given as floats in [0, 1]."""
    r, g, b = (_linear(float(c)) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def text_color_on(rgb: Sequence[float]) -> str:
    """ "black" or "white": the text colour with the higher WCAG contrast ratio on a cell of colour `rgb`."""
    lum = relative_luminance(rgb)
    on_black = (lum + 0.05) / 0.05
    on_white = 1.05 / (lum + 0.05)
    return "black" if on_black >= on_white else "white"
