"""The mmSSR selection rule (DESIGN.md 1.5), exact and fast on millions of rows.

Why this shape: the reference re-sorts every remaining candidate for every capability in every round.
Here each capability's bin lists are ranked lazily (a partial sort of only the prefix a take consumes,
extended geometrically), shared by every budget of one call, and each take walks the bins with one cursor
per (capability, bin, label position). Loops run over capabilities, rounds and bins, never over samples.

The rule, restated (DESIGN.md 1.5 is authoritative):
1. Bin labels of a sample = its styles in order, each suffixed `+<source>`, duplicates dropped
   (a sample without styles gets the single label `unstyled+<source>`).
2. Rounds: while fewer than N are chosen and capabilities remain: share = max((N - chosen) // #caps, 1);
   for each capability in order: share = min(share, N - chosen); rank the remaining candidates with
   score > t by score descending, ties by the seeded hash of the id; take up to `share` with the balanced
   take; stop at N. After the round drop the capabilities that took nothing, keeping the order.
3. Balanced take of k: bin L lists, in ranking order, the samples whose first label is L, then those whose
   second label is L, ...; bins are visited from smallest to largest (equal sizes: label ascending);
   quota = max(k // #bins, 1), carry = 0; per bin while fewer than k are taken:
   take the first min(quota + carry, |available|) (never more than k in all), carry = max(quota + carry
   - |available|, 0).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import numpy as np
import polars as pl

from mmssr_core.taxonomy import Taxonomy, TaxonomyError, load_taxonomy

METHODS = ("mmssr", "random", "mean", "capability-only", "style-only")
UNSTYLED = "unstyled"

_GOLDEN = 0x9E3779B97F4A7C15

# Tables this large use a second thread for the independent whole-column passes (numpy and polars release
# the GIL there); below it the thread start-up costs more than it saves.
PARALLEL_MIN_ROWS = 200_000


def _cpus() -> int:
    """CPUs this process may run on (affinity / cgroup cpusets), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - platforms without affinity
        return os.cpu_count() or 1


def _workers(n_rows: int) -> int:
    return min(2, _cpus()) if n_rows >= PARALLEL_MIN_ROWS else 1


def _map(fn, items: list, n_rows: int) -> list:
    """`[fn(x) for x in items]`, over two threads for large tables (fn must touch disjoint outputs)."""
    workers = _workers(n_rows)
    if workers == 1 or len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


class SelectionInputError(ValueError):
    """A scores table, budget or option that selection cannot use; the message names the problem."""


@dataclass
class Selection:
    """One budget's result. `frame`: id, source, rank (1-based selection order), picked_by, bin."""

    method: str
    budget: str
    requested: int
    selected: int
    frame: pl.DataFrame
    short: bool = False
    reason: str | None = None
    per_capability: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "requested": self.requested,
            "selected": self.selected,
            "short": self.short,
            "reason": self.reason,
            "per_capability": dict(self.per_capability),
        }


OUTPUT_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.Utf8,
    "source": pl.Utf8,
    "rank": pl.Int64,
    "picked_by": pl.Utf8,
    "bin": pl.Utf8,
}


# --------------------------------------------------------------------------------------------------
# budgets
# --------------------------------------------------------------------------------------------------
def budget_key(b: float | int | str) -> str:
    """The key of a budget in results and file names: exactly as typed when a string."""
    return b if isinstance(b, str) else str(b)


def parse_budget(b: float | int | str, pool_size: int) -> int:
    """A budget as a sample count N.

    0 < r < 1 is a fraction: floor(r * pool), computed in decimal so `0.29` of 100 is 29, not 28.
    An integral value >= 1 is a count; "5%" is a percentage (a fraction of 0.05).
    Errors: not a number, <= 0, a non-integral count, 0 selected, more than the pool.
    """
    if isinstance(b, bool):
        raise SelectionInputError(f"budget {b!r} is not a number")
    text = b.strip() if isinstance(b, str) else repr(b)
    percent = text.endswith("%")
    try:
        value = Decimal(text[:-1].strip() if percent else text)
    except InvalidOperation:
        raise SelectionInputError(
            f"budget {b!r} is not a number: use a fraction (0.05), a percentage (5%) or a count (1000)"
        ) from None
    if not value.is_finite():
        raise SelectionInputError(f"budget {b!r} is not a finite number")
    if percent:
        value = value / 100
        if not 0 < value < 1:
            raise SelectionInputError(f"budget {b!r}: a percentage must be above 0% and below 100%")
    if value <= 0:
        raise SelectionInputError(f"budget {b!r} must be positive")
    if value < 1:
        n = int((value * pool_size).to_integral_value(rounding="ROUND_FLOOR"))
        if n == 0:
            raise SelectionInputError(f"budget {b!r} selects 0 of {pool_size} samples")
    else:
        if value != value.to_integral_value():
            raise SelectionInputError(
                f"budget {b!r} is neither a fraction (0 < r < 1) nor a whole count of samples"
            )
        n = int(value)
    if n > pool_size:
        raise SelectionInputError(f"budget {b!r} asks for {n} samples but the pool has only {pool_size}")
    return n


# --------------------------------------------------------------------------------------------------
# the tie key
# --------------------------------------------------------------------------------------------------
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)


def _mix64(z: np.ndarray, tmp: np.ndarray | None = None) -> np.ndarray:
    """splitmix64's finaliser, in place on a uint64 array (wrapping arithmetic); returns z."""
    if tmp is None or tmp.shape != z.shape:
        tmp = np.empty_like(z)
    with np.errstate(over="ignore"):
        np.right_shift(z, np.uint64(30), out=tmp)
        z ^= tmp
        z *= _C1
        np.right_shift(z, np.uint64(27), out=tmp)
        z ^= tmp
        z *= _C2
        np.right_shift(z, np.uint64(31), out=tmp)
        z ^= tmp
    return z


def _seed_words(seed: int) -> tuple[np.uint64, np.uint64]:
    s = np.array([seed & 0xFFFFFFFFFFFFFFFF, (seed * 0x632BE59BD9B4E019 + 1) & 0xFFFFFFFFFFFFFFFF], np.uint64)
    _mix64(s)
    return s[0], s[1]


def tie_keys(ids: pl.Series | list[str], seed: int = 0) -> np.ndarray:
    """A seeded 64-bit hash of each id's UTF-8 bytes, the same on every platform and library version.

    Definition (also written out one string at a time in tests/selection_reference.py): split the
    bytes into little-endian 8-byte words w_1..w_m (the last zero-padded; an empty id is one zero word);
    h = mix(sum_j mix(w_j ^ (s1 + j * GOLDEN)) ^ mix(len + s2)) in wrapping uint64 arithmetic, mix being
    splitmix64's finaliser and (s1, s2) derived from the seed.
    """
    import pyarrow as pa

    if not isinstance(ids, pl.Series):
        ids = pl.Series(ids, dtype=pl.Utf8)
    s1, s2 = _seed_words(int(seed))
    arr = ids.cast(pl.Utf8).to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type != pa.large_string():
        arr = arr.cast(pa.large_string())
    n = len(arr)
    if n == 0:
        return np.zeros(0, np.uint64)
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, np.int64)[arr.offset : arr.offset + n + 1]
    base, end = int(offsets[0]), int(offsets[-1])
    buf = np.zeros(end - base + 8, np.uint8)
    if end > base:
        buf[: end - base] = np.frombuffer(data_buf, np.uint8)[base:end]
    # every byte position seen as the start of a little-endian uint64 (unaligned, zero-padded at the end)
    words = np.ndarray(shape=(len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
    start = offsets[:-1] - base
    length = offsets[1:] - offsets[:-1]
    masks = np.array([(1 << (8 * r)) - 1 for r in range(8)], np.uint64)
    acc = np.zeros(n, np.uint64)
    with np.errstate(over="ignore"):
        j = 0
        rows = None  # None: all rows
        while True:
            q = start + 8 * j if rows is None else start[rows] + 8 * j
            rem = length - 8 * j if rows is None else length[rows] - 8 * j
            w = words[q]
            part = np.flatnonzero(rem < 8)
            if part.size:
                w[part] &= masks[rem[part]]
            w ^= s1 + np.uint64(j + 1) * np.uint64(_GOLDEN)
            _mix64(w)
            if rows is None:
                acc += w
            else:
                acc[rows] += w
            j += 1
            rows = np.flatnonzero(length > 8 * j)
            if rows.size == 0:
                break
        lw = length.astype(np.uint64)
        lw += s2
        acc ^= _mix64(lw)
        return _mix64(acc)


def _codes_of(key: np.ndarray, mixed: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes of a uint64 array with (usually) few distinct values: (codes, one row per code).

    Finds the distinct values from a sample (adding whatever the sample missed), then maps every key
    through a small table indexed by its low bits (`mixed`: the keys are hashes, their low bits random);
    every mapping is checked for equality, so the codes are exact.
    """
    n = key.size
    if not mixed:
        key = _mix64(key.copy())
    u = np.unique(key[:: max(1, n // 65536)])
    while True:
        codes = None
        for bits in range(max(int(u.size).bit_length() + 1, 4), 23):
            mask = np.uint64((1 << bits) - 1)
            low = (u & mask).astype(np.int64)
            if np.unique(low).size == u.size:
                lut = np.zeros(1 << bits, np.int32)
                lut[low] = np.arange(u.size, dtype=np.int32)
                codes = lut[(key & mask).astype(np.intp)]
                break
        if codes is None:  # pragma: no cover - many distinct values: binary search
            codes = np.searchsorted(u, key)
            codes[codes == u.size] = 0
        miss = u[codes] != key
        if not miss.any():
            break
        u = np.union1d(u, np.unique(key[miss]))
    rep = np.empty(u.size, np.int64)
    rep[codes] = np.arange(n)
    return codes.astype(np.int64), rep


def _row_hash(flat_hash: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Combine per-element hashes into one hash per list (order-sensitive)."""
    n = lengths.size
    first = np.cumsum(lengths) - lengths
    acc = np.zeros(n, np.uint64)
    if flat_hash.size:
        pos = np.arange(flat_hash.size) - np.repeat(first, lengths)
        with np.errstate(over="ignore"):
            x = flat_hash ^ ((pos.astype(np.uint64) + np.uint64(1)) * np.uint64(_GOLDEN))
        _mix64(x)
        nonempty = lengths > 0
        acc[nonempty] = np.add.reduceat(x, first[nonempty])
    lw = lengths.astype(np.uint64)
    acc ^= _mix64(lw)
    return _mix64(acc)


def _encode(s: pl.Series) -> tuple[np.ndarray, list]:
    """(codes, values) with values[codes[i]] == s[i], for a utf8 or list[utf8] Series of few values.

    Strings: a 64-bit hash, checked by a second independent hash (an exact path takes over on a
    collision). Lists: their elements are encoded so, then each list is keyed exactly by its element
    codes (a base-(#values + 1) number; a hash when that would overflow 64 bits).
    """
    if len(s) == 0:
        return np.zeros(0, np.int64), []
    if isinstance(s.dtype, pl.List):
        lengths = s.list.len().fill_null(0).to_numpy().astype(np.int64)
        flat = s.explode(empty_as_null=False, keep_nulls=False)
        fcodes, fvalues = _encode(flat)
        base = len(fvalues) + 1
        width = int(lengths.max())
        if width * math.log2(base) < 63:
            first = np.cumsum(lengths) - lengths
            pos = np.arange(fcodes.size) - np.repeat(first, lengths)
            x = (fcodes + 1) * np.power(base, pos, dtype=np.int64)
            key = np.zeros(lengths.size, np.int64)
            nonempty = lengths > 0
            if fcodes.size:
                key[nonempty] = np.add.reduceat(x, first[nonempty])
            codes, rep = _codes_of(key.view(np.uint64), mixed=False)
        else:  # pragma: no cover - very long style lists
            codes, rep = _codes_of(_row_hash(_mix64(fcodes.astype(np.uint64) + np.uint64(1)), lengths))
        return codes, s.gather(pl.Series(rep)).to_list()
    h = s.hash(0x5EED).to_numpy()
    codes, rep = _codes_of(h)
    h2 = s.hash(0xB0B).to_numpy()
    if not np.array_equal(h2, h2[rep][codes]):  # pragma: no cover - a 64-bit hash collision
        frame = pl.DataFrame({"v": s}).with_row_index("row")
        uniq = frame.unique("v", keep="first", maintain_order=True)
        lut = uniq.with_row_index("code").select("v", "code")
        codes = frame.join(lut, on="v", how="left", nulls_equal=True, maintain_order="left")["code"].to_numpy()
        return codes.astype(np.int64), uniq["v"].to_list()
    return codes, s.gather(pl.Series(rep)).to_list()


def _tie_order(tk: np.ndarray, ids: pl.Series, sources: pl.Series) -> tuple[np.ndarray, pl.DataFrame]:
    """Make tie keys unique and find duplicate (source, id) pairs, with one sort of the keys.

    Equal hashes come from the same id in two sources (ids are unique per source only) or from a
    64-bit collision; then the keys are replaced by ranks of (hash, source, id), which orders those
    rows by source and keeps every other pair of rows in hash order. Returns (keys, duplicate pairs).
    """
    s = np.sort(tk)
    eq = s[1:] == s[:-1]
    if not eq.any():
        return tk, pl.DataFrame(schema={"source": pl.Utf8, "id": pl.Utf8})
    rows = np.flatnonzero(np.isin(tk, s[1:][eq]))
    sub = pl.DataFrame({"source": sources.gather(pl.Series(rows)), "id": ids.gather(pl.Series(rows))})
    dup = sub.filter(pl.struct("source", "id").is_duplicated()).unique(maintain_order=True)
    if dup.height:
        return tk, dup
    order = (
        pl.DataFrame({"h": tk, "source": sources, "id": ids}).with_row_index("row").sort(["h", "source", "id"])
    )["row"].to_numpy()
    ranks = np.empty(tk.size, np.uint64)
    ranks[order] = np.arange(tk.size, dtype=np.uint64)
    return ranks, dup


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------
@dataclass
class _Aux:
    """What validation computed that selection reuses (so nothing is done twice)."""

    combo_codes: np.ndarray  # (n,) index into combos
    combos: list[tuple[str, ...]]  # normalised style lists (stripped, no empty, no repeats)
    source_codes: np.ndarray  # (n,) index into source_names (sorted)
    source_names: list[str]
    tk: np.ndarray  # (n,) unique tie keys for the seed


def normalise_styles(styles: list | None) -> tuple[str, ...]:
    """Strip each style, drop empty and null entries and repeats (the first occurrence is kept)."""
    out: list[str] = []
    for s in styles or ():
        if s is None:
            continue
        s = s.strip()
        if s and s not in out:
            out.append(s)
    return tuple(out)


def validate_scores(
    scores: pl.DataFrame,
    taxonomy: Taxonomy | None = None,
    capabilities: list[str] | None = None,
) -> tuple[pl.DataFrame, dict]:
    """Check a scores table (DESIGN.md 2.2) and return (clean frame, report).

    The clean frame has `id`, `source` (utf8), `styles` (list[utf8] as given; a utf8 column is split on
    commas) and one Float64 column per used capability, NaN and +-inf turned to null.
    Errors (SelectionInputError): missing id/source/styles, null ids or sources, unknown capability,
    a capability without a column, a non-numeric capability column, duplicate (source, id) pairs.
    Warnings (in the report; the rows are kept): non-finite scores (counted), styles outside the
    taxonomy (counted), taxonomy capabilities absent from the table when no explicit list is given.
    """
    clean, report, _ = _validate(scores, taxonomy, capabilities)
    return clean, report


def _validate(scores, taxonomy, capabilities, seed: int = 0) -> tuple[pl.DataFrame, dict, _Aux]:
    taxonomy = taxonomy or load_taxonomy()
    if not isinstance(scores, pl.DataFrame):
        raise SelectionInputError(f"scores must be a polars DataFrame, got {type(scores).__name__}")
    missing = [c for c in ("id", "source", "styles") if c not in scores.columns]
    if missing:
        raise SelectionInputError(
            f"scores table lacks column(s) {', '.join(missing)}; it needs id, source, styles and one column "
            "per capability"
        )
    warnings: list[str] = []
    if capabilities is None:
        caps = [k for k in taxonomy.keys if k in scores.columns]
        absent = [k for k in taxonomy.keys if k not in scores.columns]
        if not caps:
            raise SelectionInputError(
                f"scores table has no capability column; expected some of: {', '.join(taxonomy.keys)}"
            )
        if absent:
            warnings.append(f"capabilities without a score column, not used: {', '.join(absent)}")
    else:
        try:
            caps = taxonomy.resolve(list(capabilities))
        except TaxonomyError as exc:
            raise SelectionInputError(str(exc)) from None
        if not caps:
            raise SelectionInputError("no capability given")
        absent = [k for k in caps if k not in scores.columns]
        if absent:
            raise SelectionInputError(f"scores table has no column for capability {', '.join(absent)}")
    for k in caps:
        dtype = scores.schema[k]
        if not dtype.is_numeric():
            raise SelectionInputError(f"capability column {k!r} is {dtype}, not numeric")
    for col in ("id", "source"):
        dtype = scores.schema[col]
        if dtype not in (pl.Utf8, pl.Categorical) and not dtype.is_integer():
            raise SelectionInputError(f"column {col!r} is {dtype}, expected utf8")
    sdt = scores.schema["styles"]
    if sdt == pl.Utf8:
        styles_expr = pl.col("styles").str.split(",")
    elif (isinstance(sdt, pl.List) and sdt.inner in (pl.Utf8, pl.Null)) or sdt == pl.Null:
        styles_expr = pl.col("styles").cast(pl.List(pl.Utf8))
    else:
        raise SelectionInputError(f"column 'styles' is {sdt}, expected list[utf8]")

    float_caps = [k for k in caps if scores.schema[k].is_float()]
    stats = scores.select(
        [(pl.col(k).is_nan() | pl.col(k).is_infinite()).sum().alias(k) for k in float_caps]
        + [pl.col(k).null_count().alias(f"{k}__null") for k in caps]
    ).row(0, named=True)
    nonfinite = {k: int(stats[k]) for k in float_caps if stats[k]}
    exprs = [pl.col("id").cast(pl.Utf8), pl.col("source").cast(pl.Utf8), styles_expr.alias("styles")]
    for k in caps:
        c = pl.col(k).cast(pl.Float64)
        exprs.append((pl.when(c.is_finite()).then(c).otherwise(None) if k in nonfinite else c).alias(k))
    clean = scores.select(exprs)
    for col in ("id", "source"):
        nulls = clean[col].null_count()
        if nulls:
            raise SelectionInputError(f"{nulls} row(s) have a null {col}")
    if nonfinite:
        detail = ", ".join(f"{k}: {v}" for k, v in nonfinite.items())
        warnings.append(f"{sum(nonfinite.values())} NaN/infinite score(s) treated as missing ({detail})")
    missing_scores = {k: int(stats[f"{k}__null"]) + nonfinite.get(k, 0) for k in caps}

    # the tie keys (a pass over every id's bytes) are hashed in a second thread while the sources and
    # style lists are encoded
    with ThreadPoolExecutor(1) if _workers(clean.height) > 1 else nullcontext() as pool:
        keys = pool.submit(tie_keys, clean["id"], seed) if pool else None
        src_codes, src_values = _encode(clean["source"])
        raw_codes, raw_lists = _encode(clean["styles"])
        raw_tk = keys.result() if keys else tie_keys(clean["id"], seed)
    tk, dup = _tie_order(raw_tk, clean["id"], clean["source"])
    if dup.height:
        shown = ", ".join(f"{r['id']!r} (source {r['source']!r})" for r in dup.head(5).iter_rows(named=True))
        more = f" and {dup.height - 5} more" if dup.height > 5 else ""
        raise SelectionInputError(f"duplicate ids in the scores table: {shown}{more}")

    order = sorted(range(len(src_values)), key=src_values.__getitem__)
    remap = np.empty(len(order), np.int64)
    remap[np.array(order, np.int64)] = np.arange(len(order))
    source_codes = remap[src_codes] if src_codes.size else src_codes
    source_names = [src_values[i] for i in order]

    normal = [normalise_styles(x) for x in raw_lists]
    combos = sorted(set(normal))
    cindex = {c: i for i, c in enumerate(combos)}
    combo_codes = np.array([cindex[c] for c in normal] or [0], np.int64)[raw_codes] if raw_codes.size else raw_codes
    per_combo = np.bincount(combo_codes, minlength=len(combos)) if combos else np.zeros(0, np.int64)
    known = set(taxonomy.styles)
    unknown = sorted({s for c in combos for s in c if s not in known})
    unknown_rows = int(sum(int(per_combo[i]) for i, c in enumerate(combos) if any(s not in known for s in c)))
    if unknown:
        shown = ", ".join(repr(s) for s in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        warnings.append(
            f"{unknown_rows} sample(s) carry styles outside the configured style set (kept as bins): {shown}"
        )
    unstyled = int(sum(int(per_combo[i]) for i, c in enumerate(combos) if not c))
    report = {
        "rows": clean.height,
        "capabilities": caps,
        "nonfinite": nonfinite,
        "missing_scores": missing_scores,
        "unknown_style_rows": unknown_rows,
        "unknown_styles": unknown,
        "unstyled_rows": unstyled,
        "sources": len(source_names),
        "warnings": warnings,
    }
    return clean, report, _Aux(combo_codes, combos, source_codes, source_names, tk)


# --------------------------------------------------------------------------------------------------
# bins
# --------------------------------------------------------------------------------------------------
def bin_labels(styles: tuple[str, ...], source: str) -> list[str]:
    """Bin labels of one sample: each (normalised) style suffixed `+source`; `unstyled+source` if none."""
    return [f"{s}+{source}" for s in styles] or [f"{UNSTYLED}+{source}"]


@dataclass
class Layout:
    """Bin labels as integer ids (ordered like the label strings), samples regrouped for fast access.

    Internal sample order `perm` (internal -> input row) groups samples by their first label, so the
    (bin, label position 0) list of every bin is the contiguous range start0[b]:start0[b+1].
    lab[i, p] = bin of internal sample i's p-th label (-1 past its last). For p >= 1 the samples
    carrying bin b at position p are seg_idx[p][seg_start[p][b]:seg_start[p][b+1]], in internal order.
    """

    names: list[str]
    perm: np.ndarray
    lab: np.ndarray
    start0: np.ndarray
    seg_idx: list[np.ndarray | None]
    seg_start: list[np.ndarray | None]
    inv: np.ndarray | None = None  # input row -> internal index (None: identity)

    @property
    def B(self) -> int:
        return len(self.names)

    @property
    def P(self) -> int:
        return self.lab.shape[1]

    @classmethod
    def single(cls, n: int, name: str = "all") -> "Layout":
        ident = np.arange(n, dtype=np.int64)
        return cls([name], ident, np.zeros((n, 1), np.int16), np.array([0, n]), [None], [None], None)

    def to_internal(self, x: np.ndarray) -> np.ndarray:
        """Reorder a per-input-row array into internal order (a scatter)."""
        if self.inv is None:
            return x
        out = np.empty_like(x)
        out[self.inv] = x
        return out

    @classmethod
    def from_aux(cls, aux: _Aux) -> "Layout":
        R = max(len(aux.source_names), 1)
        pair = aux.combo_codes * R + aux.source_codes
        space = len(aux.combos) * R
        if space <= 50_000_000:
            present = np.flatnonzero(np.bincount(pair, minlength=space))
            lut = np.full(space, -1, np.int64)
            lut[present] = np.arange(present.size)
            pair_idx = lut[pair]
        else:  # pragma: no cover - absurdly many style lists x sources
            present, pair_idx = np.unique(pair, return_inverse=True)
        per_pair = [
            bin_labels(aux.combos[k // R], aux.source_names[k % R]) for k in present.tolist()
        ]
        names = sorted({label for labels in per_pair for label in labels})
        index = {name: i for i, name in enumerate(names)}
        P = max(len(x) for x in per_pair)
        table = np.full((len(per_pair), P), -1, np.int64)
        for i, labels in enumerate(per_pair):
            table[i, : len(labels)] = [index[x] for x in labels]
        B = len(names)
        small = B < 32767
        table = table.astype(np.int16 if small else np.int32)
        perm = np.argsort(table[:, 0][pair_idx], kind="stable").astype(np.int64)
        inv = np.empty_like(perm)
        inv[perm] = np.arange(perm.size)
        internal = np.empty_like(pair_idx)
        internal[inv] = pair_idx  # a scatter: far cheaper than the gather pair_idx[perm]
        lab = table[internal]
        start0 = np.concatenate([[0], np.cumsum(np.bincount(lab[:, 0], minlength=B))]).astype(np.int64)
        seg_idx: list[np.ndarray | None] = [None]
        seg_start: list[np.ndarray | None] = [None]
        for p in range(1, P):
            col = lab[:, p]
            valid = np.flatnonzero(col >= 0)
            cv = col[valid]
            seg_idx.append(valid[np.argsort(cv, kind="stable")])
            seg_start.append(np.concatenate([[0], np.cumsum(np.bincount(cv, minlength=B))]).astype(np.int64))
        return cls(names, perm, lab, start0, seg_idx, seg_start, inv)

# --------------------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------------------
class _Ranked:
    """The ranked prefix of one (capability, bin, label position) list, extended on demand."""

    __slots__ = ("arr", "bscore", "btk", "done")

    def __init__(self) -> None:
        self.arr = np.zeros(0, np.int64)
        self.bscore: float | None = None
        self.btk: int | None = None
        self.done = False


@dataclass
class RunResult:
    items: np.ndarray  # input rows in selection order
    caps: np.ndarray  # capability index (into Engine.cap_names) per item
    bins: np.ndarray  # bin index per item
    short: bool
    reason: str | None


class Engine:
    """Rankings shared by every budget of one call; `run(N)` applies the rule for one budget.

    scores: (C, n) float64 in the layout's internal order (input row layout.perm[i] at column i),
    -inf = missing (NaN is not allowed: it would break the partial sorts); tk: (n,) uint64 unique tie keys in input-row order.
    """

    min_chunk = 256  # smallest partial sort of a bin list (tests lower it to exercise the extensions)

    def __init__(self, scores: np.ndarray, cap_names: list[str], layout: Layout, tk: np.ndarray,
                 threshold: float = 0.0):
        self.S = scores
        self.cap_names = cap_names
        self.L = layout
        self.tk = layout.to_internal(tk)
        self.t = float(threshold)
        self.C, self.n = self.S.shape
        self.E = np.empty((self.n, self.C), bool)  # (n, C) eligibility, one row per sample
        for c in range(self.C):
            np.greater(self.S[c], self.t, out=self.E[:, c])
        self.lab1 = (layout.lab.astype(np.int32) + 1)  # (n, P) bin + 1, 0 = no label
        self.lab2T = 2 * np.ascontiguousarray(self.lab1[:, 1:].T) if layout.P > 1 else None
        if self.lab2T is not None:
            self.lab2T = np.concatenate([np.zeros((1, self.n), np.int32), self.lab2T])  # row p = position p
        self._ranked: dict[tuple[int, int, int], _Ranked] = {}
        self._seg_elig: dict[int, list[list[int]]] = {}  # c -> [bin][p] eligible count
        self._counts: dict[int, np.ndarray] = {}  # c -> eligible count per bin

    # -- per capability, shared across budgets --------------------------------------------------
    def _prepare(self, c: int) -> None:
        """Eligible counts of capability c per (bin, label position): a few passes over its scores."""
        if c in self._counts:
            return
        L = self.L
        el = self.S[c] > self.t
        segs = np.zeros((L.B, L.P), np.int64)
        starts = L.start0[:-1]
        nonempty = L.start0[1:] > starts
        if nonempty.any():
            segs[nonempty, 0] = np.add.reduceat(el.view(np.uint8), starts[nonempty], dtype=np.int64)
        for p in range(1, L.P):
            # lab2T = 2 * (bin + 1), 0 = no label: odd slots of this count are the eligible samples
            segs[:, p] = np.bincount(self.lab2T[p] + el, minlength=2 * (L.B + 1))[3::2]
        self._seg_elig[c] = segs.tolist()
        self._counts[c] = segs.sum(axis=1)

    def _extend(self, c: int, b: int, p: int, r: _Ranked, m: int) -> None:
        """Append the next `m` (or all remaining) eligible items of list (b, p) in (-score, tie) order."""
        L = self.L
        if p == 0:
            lo = int(L.start0[b])
            x = self.S[c, lo : int(L.start0[b + 1])]
            idx = None
        else:
            st = L.seg_start[p]
            idx = L.seg_idx[p][st[b] : st[b + 1]]
            x = self.S[c][idx]
        if r.bscore is not None:  # only what ranks after the last extracted item
            eq = np.flatnonzero(x == r.bscore)
            x = np.where(x < r.bscore, x, -np.inf)
            if eq.size:
                later = eq + lo if idx is None else idx[eq]
                x[eq[self.tk[later] > r.btk]] = r.bscore
        remaining = self._seg_elig[c][b][p] - r.arr.size
        if remaining <= m:
            pos = np.flatnonzero(x > self.t)
            r.done = True
        else:
            kth = x.size - m
            v = np.partition(x, kth)[kth]  # the m-th largest score (> t: more than m remain)
            pos = np.flatnonzero(x > v)
            need = m - pos.size
            eq = np.flatnonzero(x == v)
            if eq.size > need:
                later = eq + lo if idx is None else idx[eq]
                eq = eq[np.argpartition(self.tk[later], need - 1)[:need]]
            pos = np.concatenate([pos, eq])
        csc = x[pos]
        cand = pos + lo if idx is None else idx[pos]
        order = np.argsort(-csc)
        ss = csc[order]
        if ss.size > 1 and (ss[1:] == ss[:-1]).any():  # equal scores: order them by the tie key
            order = np.lexsort((self.tk[cand], -csc))
        out = cand[order]
        if out.size:
            r.bscore = float(csc[order[-1]])
            r.btk = int(self.tk[out[-1]])
            r.arr = np.concatenate([r.arr, out]) if r.arr.size else out

    # -- one budget -----------------------------------------------------------------------------
    def run(self, N: int, order: list[int] | None = None) -> RunResult:
        caps = list(range(self.C)) if order is None else list(order)
        _map(self._prepare, [c for c in caps if c not in self._counts], self.n)
        L = self.L
        B, P = L.B, L.P
        lab = L.lab
        lab1 = self.lab1
        free = np.ones(self.n, bool)  # not taken yet
        counts = np.zeros((self.C, B), np.int64)  # remaining eligible samples per (capability, bin)
        for c in caps:
            counts[c] = self._counts[c]
        cursors = {c: [[0] * P for _ in range(B)] for c in caps}
        ranked = self._ranked
        out_items: list[np.ndarray] = []
        out_caps: list[int] = []
        out_bins: list[int] = []
        dropped: list[str] = []

        def first_available(c: int, b: int, m: int) -> np.ndarray:
            got_all = []
            seg_elig = self._seg_elig[c][b]
            curs = cursors[c][b]
            for p in range(P):
                if not seg_elig[p]:
                    continue
                key = (c, b, p)
                r = ranked.get(key)
                if r is None:
                    r = ranked[key] = _Ranked()
                cur = curs[p]
                win = max(2 * m, 64)
                while m > 0:
                    if cur >= r.arr.size:
                        if r.done:
                            break
                        self._extend(c, b, p, r, max(4 * m, 2 * r.arr.size, self.min_chunk))
                        continue
                    w = r.arr[cur : cur + win]
                    ok = free[w].nonzero()[0]
                    if ok.size >= m:
                        got = w[ok[:m]]
                        cur += int(ok[m - 1]) + 1
                        m = 0
                    else:
                        got = w[ok]
                        cur += w.size
                        m -= ok.size
                        win *= 2
                    if got.size:
                        free[got] = False
                        got_all.append(got)
                curs[p] = cur
                if m == 0:
                    break
            if m:  # pragma: no cover - bin sizes and lists disagree: a bug, never a silent short take
                raise AssertionError(f"bin {L.names[b]} of {self.cap_names[c]} ran dry with {m} owed")
            return got_all[0] if len(got_all) == 1 else np.concatenate(got_all)

        def take(c: int, k: int) -> int:
            cnt = counts[c]
            nz = np.flatnonzero(cnt)
            if nz.size == 0:
                return 0
            visit = nz[np.lexsort((nz, cnt[nz]))].tolist()
            quota = max(k // len(visit), 1)
            carry = 0
            got_n = 0
            took: list[np.ndarray] = []
            for b in visit:
                if got_n >= k:
                    break
                avail = int(cnt[b])
                want = quota + carry
                m = min(want, avail, k - got_n)
                carry = max(want - avail, 0)
                if m <= 0:
                    continue
                got = first_available(c, b, m)
                cnt -= np.bincount(lab1[got].ravel(), minlength=B + 1)[1:]  # later bins see what this one took
                out_items.append(got)
                out_caps.append(c)
                out_bins.append(b)
                took.append(got)
                got_n += m
            if got_n and len(caps) > 1:  # the other capabilities' bins lose what was taken
                T = took[0] if len(took) == 1 else np.concatenate(took)
                el = self.E[T].view(np.uint8)  # (k, C)
                labs = lab[T]
                delta = np.zeros((B, self.C), np.int64)
                for p in range(P):
                    col = labs[:, p]
                    o = np.argsort(col, kind="stable")
                    cs = col[o]
                    first = np.flatnonzero(np.concatenate([[True], cs[1:] != cs[:-1]]))
                    bins_ = cs[first]
                    sums = np.add.reduceat(el[o], first, axis=0, dtype=np.int64)
                    ok = bins_ >= 0
                    delta[bins_[ok]] += sums[ok]
                delta[:, c] = 0
                np.subtract(counts, delta.T, out=counts)
            return got_n

        chosen = 0
        while chosen < N and caps:
            share = max((N - chosen) // len(caps), 1)
            drop = []
            for c in caps:
                share = min(share, N - chosen)
                got = take(c, share)
                if got == 0:
                    drop.append(c)
                chosen += got
                if chosen >= N:
                    break
            if drop:
                dropped.extend(self.cap_names[c] for c in drop)
                caps = [c for c in caps if c not in drop]

        short = chosen < N
        reason = None
        if short:
            reason = (
                f"only {chosen} of {N} samples could be selected: every capability ran out of remaining "
                f"samples scoring above {self.t:g} (exhausted in order: {', '.join(dropped)})"
            )
        if out_items:
            items = np.concatenate(out_items)
            lens = [a.size for a in out_items]
            cap_arr = np.repeat(np.array(out_caps, np.int64), lens)
            bin_arr = np.repeat(np.array(out_bins, np.int64), lens)
        else:
            items = cap_arr = bin_arr = np.zeros(0, np.int64)
        return RunResult(L.perm[items], cap_arr, bin_arr, short, reason)


# --------------------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------------------
def score_matrix(clean: pl.DataFrame, caps: list[str], layout: "Layout | None" = None) -> np.ndarray:
    """(C, n) float64, -inf for missing scores (never above a threshold), in the layout's internal order."""
    S = np.empty((len(caps), clean.height), np.float64)

    def fill(i: int) -> None:
        series = clean[caps[i]]
        col = (series.fill_null(-np.inf) if series.null_count() else series).to_numpy()
        if layout is None or layout.inv is None:
            S[i] = col
        else:
            S[i][layout.inv] = col  # a scatter: far cheaper than gathering col[perm]

    _map(fill, list(range(len(caps))), clean.height)
    return S


def result_frame(ids: pl.Series, res: RunResult, source_codes: np.ndarray, source_names: list[str],
                 cap_names: list[str] | None, bin_names: list[str] | None) -> pl.DataFrame:
    """The output frame; `ids` must be a single chunk (gathers from chunked strings are ~20x slower)."""
    n = res.items.size

    def names(values: list[str] | None, codes: np.ndarray) -> pl.Series:
        if values is None:
            return pl.Series([None] * n, dtype=pl.Utf8)
        return pl.Series(values, dtype=pl.Utf8).gather(pl.Series(codes, dtype=pl.Int64))

    data = {
        "id": ids.gather(pl.Series(res.items, dtype=pl.Int64)),
        "source": names(source_names, source_codes[res.items]),
        "rank": pl.Series(np.arange(1, n + 1, dtype=np.int64)),
        "picked_by": names(cap_names, res.caps),
        "bin": names(bin_names, res.bins),
    }
    return pl.DataFrame(data, schema=OUTPUT_SCHEMA)


def select(
    scores: pl.DataFrame,
    budgets: list[float | int | str],
    *,
    method: str = "mmssr",
    capabilities: list[str] | None = None,
    threshold: float = 0.0,
    seed: int = 0,
    taxonomy: Taxonomy | None = None,
) -> dict[str, Selection]:
    """Select one subset per budget from a scores table; results keyed by `budget_key(b)`.

    `method`: mmssr (the rule) or a baseline: random, mean, capability-only, style-only
    (see mmssr_core.baselines). All budgets of one call share the validation, bins and rankings.
    """
    if method not in METHODS:
        raise SelectionInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if isinstance(budgets, (str, int, float)):
        budgets = [budgets]
    if not budgets:
        raise SelectionInputError("no budget given")
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise SelectionInputError(f"threshold {threshold!r} is not a number") from None
    if not math.isfinite(t):
        raise SelectionInputError(f"threshold {threshold!r} must be finite")
    clean, report, aux = _validate(scores, taxonomy, capabilities, int(seed))
    caps = report["capabilities"]
    pool = clean.height
    if pool == 0:
        raise SelectionInputError("the scores table is empty")
    keyed: dict[str, int] = {}
    for b in budgets:
        keyed[budget_key(b)] = parse_budget(b, pool)

    from mmssr_core import baselines

    engine, cap_out, bin_out = baselines.engine_for(method, clean, caps, t, aux)
    results: dict[str, Selection] = {}
    ids = clean["id"].rechunk()
    runs: dict[int, RunResult] = {}
    for key, N in sorted(keyed.items(), key=lambda kv: -kv[1]):  # largest first: it grows the rankings
        res = runs[N] = runs[N] if N in runs else engine.run(N)
        frame = result_frame(ids, res, aux.source_codes, aux.source_names, cap_out, bin_out)
        per_cap: dict[str, int] = {}
        if cap_out is not None:
            per_cap = {name: int(v) for name, v in zip(cap_out, np.bincount(res.caps, minlength=len(cap_out)))}
        warnings = list(report["warnings"])
        if res.reason:
            warnings.append(f"budget {key}: {res.reason}")
        results[key] = Selection(
            method=method, budget=key, requested=N, selected=int(res.items.size), frame=frame,
            short=res.short, reason=res.reason, per_capability=per_cap, warnings=warnings,
        )
    return {key: results[key] for key in keyed}
