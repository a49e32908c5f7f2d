"""A slow, straightforward implementation of the mmSSR selection rule for the tests.

Written the way the rule reads: re-rank the remaining candidates of every capability in every round,
rebuild the bins from that ranking, walk them. Plain Python lists and dicts; no shared state with the
fast engine except the tie-key definition, re-implemented here one string at a time.
"""

from __future__ import annotations

import math

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix64(z: int) -> int:
    z &= MASK
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & MASK
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def tie_key(id_: str, seed: int) -> int:
    s1 = mix64(seed & MASK)
    s2 = mix64((seed * 0x632BE59BD9B4E019 + 1) & MASK)
    data = id_.encode("utf-8")
    words = [data[i : i + 8] for i in range(0, len(data), 8)] or [b""]
    acc = 0
    for j, w in enumerate(words):
        word = int.from_bytes(w.ljust(8, b"\0"), "little")
        acc = (acc + mix64(word ^ ((s1 + (j + 1) * GOLDEN) & MASK))) & MASK
    return mix64(acc ^ mix64((len(data) + s2) & MASK))


def bin_labels(styles, source) -> list[str]:
    labels: list[str] = []
    for s in styles or []:
        if s is None or not s.strip():
            continue
        lab = f"{s.strip()}+{source}"
        if lab not in labels:
            labels.append(lab)
    return labels or [f"unstyled+{source}"]


def balanced_take(ranking: list, labels: dict, k: int) -> list[tuple]:
    """Take up to k from `ranking` (sample keys); returns (key, bin) in the order taken."""
    bins: dict[str, list] = {}
    depth = max(len(labels[i]) for i in ranking)
    for p in range(depth):
        for i in ranking:
            if p < len(labels[i]):
                bins.setdefault(labels[i][p], []).append(i)
    order = sorted(bins, key=lambda L: (len(bins[L]), L))
    quota = max(k // len(order), 1)
    carry = 0
    taken: list[tuple] = []
    taken_set: set = set()
    for L in order:
        if len(taken) >= k:
            break
        available = [i for i in bins[L] if i not in taken_set]
        m = min(quota + carry, len(available), k - len(taken))
        carry = max(quota + carry - len(available), 0)
        for i in available[:m]:
            taken.append((i, L))
            taken_set.add(i)
    return taken


def _present(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def capability_basis(rows: list[dict], cap: str, rank: str = "integer") -> str:
    """integer | expected | float: the integer score decides when the table has it (a column with at least
    one value, or the only column there is) and the rank mode is "integer"."""
    integer_col = f"{cap}__argmax"
    has_col = any(integer_col in r for r in rows)
    has_values = any(_present(r.get(integer_col)) for r in rows)
    has_float = any(cap in r for r in rows)
    if rank == "integer" and has_col and (has_values or not has_float):
        return "integer"
    return "expected" if rank == "expected" else "float"


def reference_select(
    rows: list[dict],
    caps: list[str],
    N: int,
    threshold: float = 0.0,
    seed: int = 0,
    single_bin: bool = False,
    rank: str = "integer",
):
    """rows: dicts with id, source, styles, per capability `<cap>` (float, the expected score) and optionally
    `<cap>__argmax` (the integer score); None/NaN = missing.

    Eligibility for a capability: its integer score > threshold (missing never qualifies); ranking: integer
    descending, then expected descending (missing last), then the seeded hash of the id, then the source
    (ids are unique per source only; samples are identified by (source, id)). A capability without integer
    scores (or rank "expected") uses its float score for both.
    Returns (list of (id, picked_by, bin) in selection order, short).
    """
    uid = [(r["source"], r["id"]) for r in rows]
    key = {(r["source"], r["id"]): (tie_key(r["id"], seed), r["source"]) for r in rows}
    labels = {u: (["all"] if single_bin else bin_labels(r["styles"], r["source"])) for u, r in zip(uid, rows)}
    sort_key = {c: {} for c in caps}  # capability -> sample -> ranking tuple (smaller ranks first), eligible only
    for c in caps:
        basis = capability_basis(rows, c, rank)
        for u, r in zip(uid, rows):
            e = r.get(c)
            e = float(e) if _present(e) else None
            if basis == "integer":
                i = r.get(f"{c}__argmax")
                if _present(i) and i > threshold:
                    sort_key[c][u] = (-i, -e if e is not None else math.inf, key[u])
            elif e is not None and e > threshold:
                sort_key[c][u] = (-e, key[u])
    remaining = set(uid)
    chosen: list[tuple[str, str, str]] = []
    active = list(caps)
    while len(chosen) < N and active:
        share = max((N - len(chosen)) // len(active), 1)
        drop = []
        for c in active:
            share = min(share, N - len(chosen))
            ranking = sorted((u for u in remaining if u in sort_key[c]), key=lambda u: sort_key[c][u])
            got = balanced_take(ranking, labels, share) if ranking else []
            if not got:
                drop.append(c)
            for u, L in got:
                chosen.append((u[1], c, L))
                remaining.discard(u)
            if len(chosen) >= N:
                break
        active = [c for c in active if c not in drop]
    return chosen, len(chosen) < N
