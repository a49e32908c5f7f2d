"""Lazy ranking of one bin list: only the prefix a take consumes is ever sorted.

Why: the reference re-sorts every remaining candidate of a capability in every round. A take needs only
the first few available samples of each bin list, so each (capability, bin, label position) list keeps a
ranked prefix and extends it with a partial sort (partition, then sort of the slice) of what ranks after
its last item, in chunks that grow geometrically. Every budget of one call shares these prefixes.

Rank order: ranking key descending, then the tie score descending (the exact expected score, where the key
is the integer rule's packed key), then the seeded tie key ascending. Keys are -inf for samples that do
not qualify.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

NOT_ELIGIBLE = -np.inf


class TieBreak:
    """Orders samples whose ranking keys are equal: the tie score (when the rule has one), then the tie key.

    tie_keys: per internal sample. tie_scores: None, or a function from input rows (samples sharing a key)
    to their tie scores, or to None when those are known to be equal; it is asked only for the few samples
    in runs of equal keys, read through `input_row` (internal sample -> input row).
    """

    def __init__(
        self,
        tie_keys: np.ndarray,
        tie_scores: Callable[[np.ndarray], np.ndarray | None] | None = None,
        input_row: np.ndarray | None = None,
    ):
        self.tie_keys = tie_keys
        self._scores_at = tie_scores
        self._input_row = input_row

    def scores(self, rows: np.ndarray) -> np.ndarray | None:
        if self._scores_at is None:
            return None
        return self._scores_at(rows if self._input_row is None else self._input_row[rows])

    def best(self, rows: np.ndarray, need: int) -> np.ndarray:
        """Positions (into rows) of the `need` best of rows, which all have the same key."""
        s = self.scores(rows)
        if s is None or s.min() == s.max():
            return np.argpartition(self.tie_keys[rows], need - 1)[:need]
        v = np.partition(s, s.size - need)[s.size - need]  # the need-th largest tie score
        above = np.flatnonzero(s > v)
        equal = np.flatnonzero(s == v)
        want = need - above.size
        if want == 0:
            return above
        if equal.size > want:
            equal = equal[np.argpartition(self.tie_keys[rows[equal]], want - 1)[:want]]
        return np.concatenate([above, equal])

    def after(self, rows: np.ndarray, last: int) -> np.ndarray:
        """Mask of rows (with the same key as sample `last`) that rank after `last`."""
        tk = self.tie_keys[rows]
        s = self.scores(np.append(rows, last))
        if s is None:
            return tk > self.tie_keys[last]
        s, s_last = s[:-1], s[-1]
        return (s < s_last) | ((s == s_last) & (tk > self.tie_keys[last]))

    def order(self, keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The permutation that puts rows (with their keys) in rank order.

        One sort by key, then only the runs of equal keys are re-sorted by (tie score, tie key): with
        integer-valued or clipped scores those runs are a minority of a chunk.
        """
        order = np.argsort(-keys)
        sorted_keys = keys[order]
        equal_next = sorted_keys[1:] == sorted_keys[:-1]
        if not equal_next.any():
            return order
        tied = np.flatnonzero(np.concatenate([equal_next, [False]]) | np.concatenate([[False], equal_next]))
        run = np.cumsum(np.concatenate([[True], ~equal_next]))[tied]  # increases with the key's rank
        members = order[tied]
        r = rows[members]
        s = self.scores(r)
        sort_keys = (self.tie_keys[r], run) if s is None else (self.tie_keys[r], -s, run)
        order[tied] = members[np.lexsort(sort_keys)]
        return order


class RankedPrefix:
    """The ranked prefix of one (capability, bin, label position) list, extended on demand."""

    __slots__ = ("items", "last_key", "complete")

    def __init__(self) -> None:
        self.items = np.zeros(0, np.int64)  # internal sample indices, in rank order
        self.last_key: float | None = None
        self.complete = False  # every eligible member is in `items`


def extend_prefix(
    prefix: RankedPrefix, members: np.ndarray | slice, keys: np.ndarray, ties: TieBreak, eligible_left: int, m: int
) -> None:
    """Append the next `m` (or all remaining) eligible members of a list to its ranked prefix.

    members: the list (a slice of the internal order or an index array); keys: the capability's ranking
    keys in internal order; eligible_left: eligible members not yet in the prefix.
    """
    x = keys[members]
    if prefix.last_key is not None:  # only what ranks after the last ranked item
        x = _after(x, members, prefix, keys, ties)
    if eligible_left <= m:
        pos = np.flatnonzero(x > NOT_ELIGIBLE)
        prefix.complete = True
    else:
        pos = _top(x, members, m, ties)
    chosen = _rows(members, pos)
    out = chosen[ties.order(x[pos], chosen)]
    if out.size:
        prefix.last_key = float(keys[out[-1]])
        prefix.items = np.concatenate([prefix.items, out]) if prefix.items.size else out


def _rows(members: np.ndarray | slice, pos: np.ndarray) -> np.ndarray:
    """Internal sample indices of positions within a list."""
    return pos + members.start if isinstance(members, slice) else members[pos]


def _after(x: np.ndarray, members, prefix: RankedPrefix, keys: np.ndarray, ties: TieBreak) -> np.ndarray:
    """x with every item ranking at or before the prefix's last item set to NOT_ELIGIBLE."""
    last_key = prefix.last_key
    equal = np.flatnonzero(x == last_key)
    out = np.where(x < last_key, x, NOT_ELIGIBLE)
    if equal.size:
        later = ties.after(_rows(members, equal), int(prefix.items[-1]))
        out[equal[later]] = last_key
    return out


def _top(x: np.ndarray, members, m: int, ties: TieBreak) -> np.ndarray:
    """Positions of the m best items of x (more than m are eligible)."""
    kth = x.size - m
    v = np.partition(x, kth)[kth]  # the m-th largest key (eligible: more than m remain)
    above = np.flatnonzero(x > v)
    need = m - above.size
    equal = np.flatnonzero(x == v)
    if equal.size > need:
        equal = equal[ties.best(_rows(members, equal), need)]
    return np.concatenate([above, equal])
