"""Greedy style generation that can only spell a comma-separated list of known labels.

The styler answers a list such as `yes/no, short description`; a free-running model could answer
anything. This automaton says, after any prefix of the answer, which next tokens keep it a valid prefix
of `label(, label)*` over the known labels (each label at most once), so decoding always ends with a
parseable answer and stops as soon as a complete list may end.
"""

from __future__ import annotations

from typing import Any, Sequence


class StyleConstraint:
    """Which next tokens keep an answer a valid prefix of `label(, label)*` over known labels.

    Character-level automaton: a state is the set of (label index, characters matched) still possible,
    plus the labels already emitted (no label twice, so generation ends after at most len(labels)).
    """

    SEP = ", "

    def __init__(self, labels: Sequence[str], token_strings: Sequence[str]):
        self.labels = list(labels)
        self.token_strings = list(token_strings)
        by_first: dict[str, list[int]] = {}
        for i, s in enumerate(self.token_strings):
            if s:
                by_first.setdefault(s[0], []).append(i)
        self.by_first = by_first

    # A state: (mode, payload, used). mode "label": payload = frozenset of (label_idx, pos);
    # mode "sep": payload = number of separator characters matched (0..len(SEP)).
    def initial(self):
        return ("label", frozenset((i, 0) for i in range(len(self.labels))), frozenset())

    def _step_char(self, state, ch):
        mode, payload, used = state
        if mode == "label":
            nxt = set()
            done_after: set[int] = set()
            for i, pos in payload:
                label = self.labels[i]
                if pos < len(label) and label[pos] == ch:
                    nxt.add((i, pos + 1))
            # A complete label may instead be followed by the separator.
            complete = [i for i, pos in payload if pos == len(self.labels[i])]
            if ch == self.SEP[0]:
                for i in complete:
                    done_after.add(i)
            if nxt and not done_after:
                return ("label", frozenset(nxt), used)
            if done_after and not nxt:
                return ("sep", 1, used | frozenset(done_after))
            if nxt and done_after:  # ambiguous (a label containing ", "): keep the label reading
                return ("label", frozenset(nxt), used)
            return None
        # separator
        if payload < len(self.SEP):
            if self.SEP[payload] != ch:
                return None
            if payload + 1 < len(self.SEP):
                return ("sep", payload + 1, used)
            remaining = frozenset((i, 0) for i in range(len(self.labels)) if i not in used)
            return ("label", remaining, used) if remaining else None
        return None

    def advance(self, state, text: str):
        for ch in text:
            state = self._step_char(state, ch)
            if state is None:
                return None
        if state[0] == "label" and not state[1]:
            return None
        return state

    def can_stop(self, state) -> bool:
        mode, payload, _ = state
        return mode == "label" and any(pos == len(self.labels[i]) for i, pos in payload)

    def next_chars(self, state) -> set[str]:
        mode, payload, _ = state
        if mode == "sep":
            return {self.SEP[payload]}
        chars = {self.labels[i][pos] for i, pos in payload if pos < len(self.labels[i])}
        if self.can_stop(state):
            chars.add(self.SEP[0])
        return chars

    def allowed(self, state) -> list[tuple[int, Any]]:
        """(token id, state after it) for every token that keeps the text valid."""
        out = []
        for ch in self.next_chars(state):
            for tid in self.by_first.get(ch, ()):
                nxt = self.advance(state, self.token_strings[tid])
                if nxt is not None:
                    out.append((tid, nxt))
        return out
