"""The round-robin engine: the selection rule for one budget, over rankings shared by every budget.

The rule, in the engine's terms:
- Rounds: while fewer than N are chosen and capabilities remain, share = max((N - chosen) // #caps, 1);
  each capability in order takes up to min(share, N - chosen) with the balanced take from its ranking of
  the samples nobody has taken; capabilities that took nothing in a round are dropped after it (the rest
  keep their order). When none is left the selection is short and says why.
- Balanced take of k: bins with eligible samples left are visited from the smallest to the largest (equal
  sizes: label ascending); quota = max(k // #bins, 1); each bin gives its first min(quota + carry,
  available) samples not yet taken (never more than k in all) and carries over what it could not give.

Python loops run over rounds, capabilities, bins and label positions, never over samples: the bins' sizes
per capability are counts updated with one vectorised pass per take, and each (capability, bin, label
position) list is read through a cursor into its lazily ranked prefix (see ranking.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from mmssr_core.selection.bins import BinLayout
from mmssr_core.selection.ranking import NOT_ELIGIBLE, RankedPrefix, TieBreak, extend_prefix
from mmssr_core.selection.threads import parallel_map


@dataclass
class RunResult:
    """One budget's picks, in selection order (input rows), with who picked each and from which bin."""

    items: np.ndarray  # input rows
    caps: np.ndarray  # index into the engine's capability names
    bins: np.ndarray  # index into the layout's labels
    short: bool
    reason: str | None
    exhausted: list[str] = field(default_factory=list)  # capabilities dropped, in the order they ran dry


@dataclass
class _Walk:
    """The state of one budget's walk over the rounds."""

    free: np.ndarray  # (n,) not taken yet
    left: np.ndarray  # (C, B) eligible samples not yet taken, per capability and bin
    cursors: dict[int, list[list[int]]]  # capability -> [bin][label position] read position in the prefix
    items: list[np.ndarray] = field(default_factory=list)
    caps: list[int] = field(default_factory=list)
    bins: list[int] = field(default_factory=list)
    chosen: int = 0


class Engine:
    """Rankings shared by every budget of one call; `run(N)` applies the rule for one budget.

    keys: (C, n) ranking keys in the layout's internal order (internal sample i is input row
    layout.input_row[i]), NOT_ELIGIBLE (-inf) where a sample does not qualify, never NaN;
    tie_keys: (n,) unique tie keys in input-row order; tie_scores: per capability None or a function from
    input rows to their exact tie scores (see ranking.TieBreak).
    """

    min_chunk = 256  # smallest partial sort of a bin list (tests lower it to exercise the extensions)

    def __init__(
        self,
        keys: np.ndarray,
        names: list[str],
        layout: BinLayout,
        tie_keys: np.ndarray,
        tie_scores: list[Callable[[np.ndarray], np.ndarray] | None] | None = None,
        qualifies: str = "samples that qualify",
    ):
        self.keys = keys
        self.qualifies = qualifies  # what a short selection's reason says ran out
        self.names = names
        self.layout = layout
        internal_tk = layout.to_internal(tie_keys)
        loaders = tie_scores or [None] * len(names)
        self.ties = [TieBreak(internal_tk, loaders[c], layout.input_row) for c in range(len(names))]
        self.n_caps, self.n = keys.shape
        self.eligible = np.empty((self.n, self.n_caps), bool)  # (n, C): one row per sample
        for c in range(self.n_caps):
            np.greater(keys[c], NOT_ELIGIBLE, out=self.eligible[:, c])
        later = layout.sample_bins[:, 1:].T.astype(np.int32) + 1  # bin + 1 per later position, 0 = none
        # row p: 2 * (bin + 1) of each sample's p-th label, so adding eligibility marks eligible samples odd
        self._later_bins2 = np.concatenate([np.zeros((1, self.n), np.int32), 2 * later])
        self._bins_plus_one = layout.sample_bins.astype(np.int32) + 1
        self._prefixes: dict[tuple[int, int, int], RankedPrefix] = {}
        self._list_eligible: dict[int, list[list[int]]] = {}  # c -> [bin][position] eligible members
        self._bin_eligible: dict[int, np.ndarray] = {}  # c -> eligible samples per bin

    # -- per capability, shared across budgets -------------------------------------------------------
    def _count_eligible(self, c: int) -> None:
        """Eligible members of every (bin, label position) list of capability c: a few passes over its keys."""
        layout = self.layout
        eligible = self.keys[c] > NOT_ELIGIBLE
        counts = np.zeros((layout.n_bins, layout.n_positions), np.int64)
        starts = layout.first_label_start[:-1]
        nonempty = layout.first_label_start[1:] > starts
        if nonempty.any():
            counts[nonempty, 0] = np.add.reduceat(eligible.view(np.uint8), starts[nonempty], dtype=np.int64)
        for p in range(1, layout.n_positions):
            counts[:, p] = np.bincount(self._later_bins2[p] + eligible, minlength=2 * (layout.n_bins + 1))[3::2]
        self._list_eligible[c] = counts.tolist()
        self._bin_eligible[c] = counts.sum(axis=1)

    # -- one budget ----------------------------------------------------------------------------------
    def run(self, budget: int, order: list[int] | None = None) -> RunResult:
        """Apply the rule for a budget of `budget` samples, capabilities in `order` (default: all, in order)."""
        caps = list(range(self.n_caps)) if order is None else list(order)
        parallel_map(self._count_eligible, [c for c in caps if c not in self._bin_eligible], self.n)
        walk = _Walk(
            free=np.ones(self.n, bool),
            left=np.zeros((self.n_caps, self.layout.n_bins), np.int64),
            cursors={c: [[0] * self.layout.n_positions for _ in range(self.layout.n_bins)] for c in caps},
        )
        for c in caps:
            walk.left[c] = self._bin_eligible[c]
        exhausted: list[int] = []
        while walk.chosen < budget and caps:
            ran_dry = self._round(walk, caps, budget)
            exhausted += ran_dry
            caps = [c for c in caps if c not in ran_dry]
        return self._result(walk, budget, exhausted)

    def _round(self, walk: _Walk, caps: list[int], budget: int) -> list[int]:
        """One round over the capabilities; returns those that took nothing."""
        share = max((budget - walk.chosen) // len(caps), 1)
        ran_dry = []
        for c in caps:
            share = min(share, budget - walk.chosen)
            got = self._balanced_take(walk, c, share, others=len(caps) > 1)
            if got == 0:
                ran_dry.append(c)
            walk.chosen += got
            if walk.chosen >= budget:
                break
        return ran_dry

    def _balanced_take(self, walk: _Walk, c: int, k: int, others: bool) -> int:
        """Take up to k of capability c's ranking, balanced over its bins; returns how many were taken."""
        left = walk.left[c]
        nonempty = np.flatnonzero(left)
        if nonempty.size == 0:
            return 0
        visit = nonempty[np.lexsort((nonempty, left[nonempty]))].tolist()  # smallest first, then label
        quota = max(k // len(visit), 1)
        carry = taken = 0
        took: list[np.ndarray] = []
        for b in visit:
            if taken >= k:
                break
            available = int(left[b])
            want = quota + carry
            m = min(want, available, k - taken)
            carry = max(want - available, 0)
            if m <= 0:
                continue
            got = self._first_available(walk, c, b, m)
            left -= np.bincount(self._bins_plus_one[got].ravel(), minlength=self.layout.n_bins + 1)[1:]
            walk.items.append(got)
            walk.caps.append(c)
            walk.bins.append(b)
            took.append(got)
            taken += m
        if taken and others:
            self._discount_others(walk, c, took[0] if len(took) == 1 else np.concatenate(took))
        return taken

    def _first_available(self, walk: _Walk, c: int, b: int, m: int) -> np.ndarray:
        """The first m samples of bin b (first labels, then second labels, ...) not taken yet; marks them taken."""
        got_all = []
        list_eligible = self._list_eligible[c][b]
        cursors = walk.cursors[c][b]
        for p in range(self.layout.n_positions):
            if not list_eligible[p]:
                continue
            got, cursors[p] = self._read_list(walk.free, c, b, p, cursors[p], m)
            if got.size:
                walk.free[got] = False
                got_all.append(got)
                m -= got.size
            if m == 0:
                break
        if m:  # pragma: no cover - bin sizes and lists disagree: a bug, never a silent short take
            raise AssertionError(f"bin {self.layout.labels[b]} of {self.names[c]} ran dry with {m} owed")
        return got_all[0] if len(got_all) == 1 else np.concatenate(got_all)

    def _read_list(self, free: np.ndarray, c: int, b: int, p: int, cursor: int, m: int) -> tuple[np.ndarray, int]:
        """Up to m free samples of list (c, b, p) from `cursor` on, ranking more of it as needed: (samples, cursor)."""
        prefix = self._prefixes.get((c, b, p))
        if prefix is None:
            prefix = self._prefixes[(c, b, p)] = RankedPrefix()
        window = max(2 * m, 64)
        found: list[np.ndarray] = []
        while m > 0:
            if cursor >= prefix.items.size:
                if prefix.complete:
                    break
                self._rank_more(c, b, p, prefix, max(4 * m, 2 * prefix.items.size, self.min_chunk))
                continue
            w = prefix.items[cursor : cursor + window]
            ok = free[w].nonzero()[0]
            if ok.size >= m:
                found.append(w[ok[:m]])
                return _joined(found), cursor + int(ok[m - 1]) + 1
            found.append(w[ok])
            cursor += w.size
            m -= ok.size
            window *= 2
        return _joined(found), cursor

    def _rank_more(self, c: int, b: int, p: int, prefix: RankedPrefix, m: int) -> None:
        left = self._list_eligible[c][b][p] - prefix.items.size
        extend_prefix(prefix, self.layout.members(b, p), self.keys[c], self.ties[c], left, m)

    def _discount_others(self, walk: _Walk, c: int, taken: np.ndarray) -> None:
        """The other capabilities' bins lose the samples capability c just took (where those were eligible)."""
        eligible = self.eligible[taken].view(np.uint8)  # (k, C)
        bins = self.layout.sample_bins[taken]
        delta = np.zeros((self.layout.n_bins, self.n_caps), np.int64)
        for p in range(self.layout.n_positions):
            col = bins[:, p]
            o = np.argsort(col, kind="stable")
            sorted_bins = col[o]
            first = np.flatnonzero(np.concatenate([[True], sorted_bins[1:] != sorted_bins[:-1]]))
            present = sorted_bins[first]
            sums = np.add.reduceat(eligible[o], first, axis=0, dtype=np.int64)
            real = present >= 0
            delta[present[real]] += sums[real]
        delta[:, c] = 0
        np.subtract(walk.left, delta.T, out=walk.left)

    def _result(self, walk: _Walk, budget: int, exhausted: list[int]) -> RunResult:
        dropped = [self.names[c] for c in exhausted]
        reason = None
        if walk.chosen < budget:
            reason = (
                f"only {walk.chosen} of {budget} samples could be selected: every capability ran out of "
                f"remaining {self.qualifies} (exhausted in order: {', '.join(dropped)})"
            )
        if walk.items:
            items = np.concatenate(walk.items)
            lens = [a.size for a in walk.items]
            caps = np.repeat(np.array(walk.caps, np.int64), lens)
            bins = np.repeat(np.array(walk.bins, np.int64), lens)
        else:
            items = caps = bins = np.zeros(0, np.int64)
        return RunResult(self.layout.input_row[items], caps, bins, walk.chosen < budget, reason, dropped)


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.zeros(0, np.int64)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
