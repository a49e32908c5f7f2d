"""Style x source bins: the labels of each sample and a sample order that makes bin lists cheap to read.

A sample's bin labels are its styles in order, each suffixed `+<source>`, duplicates dropped (a sample
without styles gets the single label `unstyled+<source>`). The balanced take reads, per bin, the samples
whose first label is that bin, then those whose second label is, and so on; the layout stores those lists
so that reading one never touches the rest of the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNSTYLED = "unstyled"


def bin_labels(styles: tuple[str, ...], source: str) -> list[str]:
    """Bin labels of one sample: each (normalised) style suffixed `+source`; `unstyled+source` if none."""
    return [f"{s}+{source}" for s in styles] or [f"{UNSTYLED}+{source}"]


@dataclass
class BinLayout:
    """Bin labels as integer ids (ordered like the label strings), samples regrouped for fast access.

    The internal sample order groups samples by their first label, so the first-label list of bin b is the
    contiguous range first_label_start[b]:first_label_start[b + 1]. input_row[i] is the input row of
    internal sample i (internal_index is the inverse; None when they are the same).
    sample_bins[i, p] is the bin of internal sample i's p-th label (-1 past its last). For p >= 1 the
    samples carrying bin b at position p are later_members[p][later_start[p][b]:later_start[p][b + 1]],
    in internal order.
    """

    labels: list[str]
    input_row: np.ndarray
    sample_bins: np.ndarray
    first_label_start: np.ndarray
    later_members: list[np.ndarray | None]
    later_start: list[np.ndarray | None]
    internal_index: np.ndarray | None = None

    @property
    def n_bins(self) -> int:
        return len(self.labels)

    @property
    def n_positions(self) -> int:
        return self.sample_bins.shape[1]

    @classmethod
    def single(cls, n: int, label: str = "all") -> "BinLayout":
        """Every sample in one bin, in input order (methods without style balancing)."""
        ident = np.arange(n, dtype=np.int64)
        return cls([label], ident, np.zeros((n, 1), np.int16), np.array([0, n]), [None], [None], None)

    def to_internal(self, x: np.ndarray) -> np.ndarray:
        """Reorder a per-input-row array into internal order (a scatter)."""
        if self.internal_index is None:
            return x
        out = np.empty_like(x)
        out[self.internal_index] = x
        return out

    def members(self, b: int, p: int) -> np.ndarray | slice:
        """The internal samples carrying bin b at label position p: a slice for p = 0, else an index array."""
        if p == 0:
            return slice(int(self.first_label_start[b]), int(self.first_label_start[b + 1]))
        start = self.later_start[p]
        return self.later_members[p][start[b] : start[b + 1]]

    @classmethod
    def from_table(
        cls, combo_codes: np.ndarray, combos: list[tuple[str, ...]], source_codes: np.ndarray, source_names: list[str]
    ) -> "BinLayout":
        """The layout of a validated table (style list and source code per row)."""
        pair_idx, pair_labels = _distinct_pairs(combo_codes, combos, source_codes, source_names)
        labels = sorted({label for labels in pair_labels for label in labels})
        index = {name: i for i, name in enumerate(labels)}
        width = max(len(x) for x in pair_labels)
        table = np.full((len(pair_labels), width), -1, np.int64)
        for i, row in enumerate(pair_labels):
            table[i, : len(row)] = [index[x] for x in row]
        table = table.astype(np.int16 if len(labels) < 32767 else np.int32)
        input_row = np.argsort(table[:, 0][pair_idx], kind="stable").astype(np.int64)
        internal_index = np.empty_like(input_row)
        internal_index[input_row] = np.arange(input_row.size)
        internal = np.empty_like(pair_idx)
        internal[internal_index] = pair_idx  # a scatter: far cheaper than the gather pair_idx[input_row]
        sample_bins = table[internal]
        n_bins = len(labels)
        first_start = _offsets(np.bincount(sample_bins[:, 0], minlength=n_bins))
        later_members: list[np.ndarray | None] = [None]
        later_start: list[np.ndarray | None] = [None]
        for p in range(1, width):
            col = sample_bins[:, p]
            valid = np.flatnonzero(col >= 0)
            cv = col[valid]
            later_members.append(valid[np.argsort(cv, kind="stable")])
            later_start.append(_offsets(np.bincount(cv, minlength=n_bins)))
        return cls(labels, input_row, sample_bins, first_start, later_members, later_start, internal_index)


def _offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _distinct_pairs(combo_codes, combos, source_codes, source_names) -> tuple[np.ndarray, list[list[str]]]:
    """(index of each row's (style list, source) pair among the distinct pairs, bin labels of each pair)."""
    n_sources = max(len(source_names), 1)
    pair = combo_codes * n_sources + source_codes
    space = len(combos) * n_sources
    if space <= 50_000_000:
        present = np.flatnonzero(np.bincount(pair, minlength=space))
        lut = np.full(space, -1, np.int64)
        lut[present] = np.arange(present.size)
        pair_idx = lut[pair]
    else:  # pragma: no cover - absurdly many style lists x sources
        present, pair_idx = np.unique(pair, return_inverse=True)
    labels = [bin_labels(combos[k // n_sources], source_names[k % n_sources]) for k in present.tolist()]
    return pair_idx, labels
