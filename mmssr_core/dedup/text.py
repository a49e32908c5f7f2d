"""Normalised conversation text and its word shingles: the text half of near-duplicate detection.

Two samples that ask the same thing with other spacing, case or punctuation normalise to the same
words. The system prompt is left out on purpose: a long prompt shared by many samples would otherwise
make unrelated conversations look alike (exact deduplication still covers it).
"""

from __future__ import annotations

import polars as pl

SHINGLE_WORDS = 3


def normalised_text() -> pl.Expr:
    """Every turn's text, lower-cased, `<image>` placeholders and punctuation removed, spaces collapsed."""
    turns = pl.col("conversations").list.eval(pl.element().struct.field("value")).list.join(" ")
    return (
        turns.str.to_lowercase()
        .str.replace_all("<image>", " ", literal=True)
        .str.replace_all(r"[\W_]+", " ")
        .str.strip_chars()
        .fill_null("")
        .alias("_text")
    )


def shingles(text: str, n: int = SHINGLE_WORDS) -> list[bytes]:
    """The distinct word n-grams of a normalised text (the whole text when it is shorter than n words)."""
    words = text.split()
    if not words:
        return []
    if len(words) <= n:
        return [" ".join(words).encode()]
    return list({" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)})


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)
