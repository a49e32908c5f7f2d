"""Score with any local image-text-to-text checkpoint through transformers (CPU or GPU).

Why it is cheaper than the reference (15 `generate` calls per sample, batch 1):
- one forward pass per query reads the next-token distribution over the digits 0..5 (no generation);
- the common prefix (system + image + serialised conversation) is prefilled once per sample (batched
  across samples with left padding on a GPU; one at a time on CPU, where the causal fast path beats
  batching), and its KV cache is reused by the 14 capability queries and the style query;
- the capability queries' shared opening words run once per sample too, and their distinct tails are
  packed into one sequence per sample behind a block-diagonal 4D mask (no copy of the cache per query);
- the styler's answer is generated greedily but constrained to comma-separated known labels, so it is
  always parseable and stops as soon as a complete list may end.

A plain path (full prompt per query, left-padded batches) is kept behind `shared_prefix=False`: tests
compare the two, and it is the fallback when a tokenizer would merge tokens across the prefix/query seam.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmssr_core.prompts import DIGITS, IMAGE_TOKEN, PromptSet, chatml, load_scorer_image, parse_styles
from mmssr_core.scoring.base import Failure, ScoreRequest, ScorerIdentity

# chatml(user) == _HEAD + user + _TAIL
_HEAD, _TAIL = chatml("\x00").split("\x00")


def checkpoint_revision(directory: str | Path) -> str:
    """A cheap fingerprint of a local checkpoint: the commit when it is a hub snapshot, else a hash of
    config.json and of each weight file's name, size and first/last 64 KiB (never the whole file)."""
    directory = Path(directory).resolve()
    m = re.search(r"snapshots/([0-9a-f]{40})(/|$)", directory.as_posix())
    if m:
        return m.group(1)[:12]
    h = hashlib.sha256()
    config = directory / "config.json"
    if config.is_file():
        h.update(config.read_bytes())
    for f in sorted(directory.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".pt") and f.is_file():
            size = f.stat().st_size
            h.update(f"{f.name}:{size}".encode())
            with f.open("rb") as fh:
                h.update(fh.read(65536))
                if size > 65536:
                    fh.seek(max(size - 65536, 65536))
                    h.update(fh.read(65536))
    return h.hexdigest()[:12]


def _common_prefix(seqs: list[list[int]]) -> list[int]:
    """Longest common token prefix, leaving at least one token of each sequence to run on its own."""
    limit = min(len(s) for s in seqs) - 1
    n = 0
    while n < limit and all(s[n] == seqs[0][n] for s in seqs):
        n += 1
    return list(seqs[0][:n])


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


@dataclass
class _Prefix:
    """One sample's prefilled prefix: per-layer keys/values (1, heads, length, head_dim)."""

    keys: list
    values: list
    length: int


@dataclass
class _Item:
    index: int  # position in the caller's request list
    text: str  # ChatML prefix text (system + user turn up to the query), image placeholder unexpanded
    user: str  # user-turn prefix (serialised conversation, image placeholder placed)
    image: Any  # PIL image or None
    key: tuple


class TransformersBackend:
    """Next-token digit distributions and constrained styles from a local checkpoint directory."""

    name = "transformers"

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        dtype: str = "auto",
        batch_size: int = 8,
        revision: str = "",
        *,
        shared_prefix: bool = True,
        pack_queries: bool = True,
        prefill_batch_size: int | None = None,
        suffix_batch: int = 64,
        max_style_tokens: int = 64,
        prefix_cache_size: int | None = None,
        model_name: str | None = None,
        attn_implementation: str | None = "sdpa",
    ):
        self.model_path = Path(model)
        if not self.model_path.is_dir():
            raise ValueError(
                f"transformers backend: {model!r} is not a local checkpoint directory "
                "(download it first, or convert a released checkpoint with `mmssr convert-checkpoint`)"
            )
        self.device = device
        self.dtype_name = dtype
        self.batch_size = max(1, int(batch_size))
        self.revision = revision
        self.shared_prefix = shared_prefix
        self.pack_queries = pack_queries
        # Padded batches force explicit attention masks, which on CPU cost more than batching saves (the
        # causal fast path is lost, caches are copied); on a GPU batching wins. So on CPU every model call
        # (prefill, packed queries, style decoding) takes one sample at a time.
        if prefill_batch_size is None:
            prefill_batch_size = self.batch_size if str(device).startswith("cuda") else 1
        self.prefill_batch_size = max(1, int(prefill_batch_size))
        self.suffix_batch = max(1, int(suffix_batch))
        self.max_style_tokens = max_style_tokens
        # Prefixes stay cached between digit_distributions() and styles() of the same batch: the cache
        # holds at least the last call's samples (KV memory grows with the runner's batch size).
        self.prefix_cache_size = prefix_cache_size or 2 * self.batch_size
        self._lru_floor = 0
        self.default_batch_size = self.batch_size  # what the runner asks for per call
        self.model_name = model_name or self.model_path.name
        self.attn_implementation = attn_implementation
        self._model = None
        self._prefix_lru: OrderedDict[tuple, _Prefix] = OrderedDict()
        self._constraint: StyleConstraint | None = None
        self._constraint_labels: tuple[str, ...] = ()
        self.stats = {"prefills": 0, "suffix_rows": 0, "plain_rows": 0, "seam_fallbacks": 0}

    # ------------------------------------------------------------------ loading
    def _torch_dtype(self):
        import torch

        if self.dtype_name == "auto":
            if str(self.device).startswith("cuda"):
                return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.float32
        return getattr(torch, self.dtype_name)

    def _load(self):
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        kwargs = {"local_files_only": True}
        self.processor = AutoProcessor.from_pretrained(self.model_path, **kwargs)
        model_kwargs = dict(kwargs, dtype=self._torch_dtype())
        if self.attn_implementation:
            model_kwargs["attn_implementation"] = self.attn_implementation
        model = AutoModelForImageTextToText.from_pretrained(self.model_path, **model_kwargs)
        self._model = model.to(self.device).eval()
        self.torch = torch
        tok = self.processor.tokenizer
        self.tokenizer = tok
        self.image_token = getattr(self.processor, "image_token", IMAGE_TOKEN)
        ids = []
        for d in DIGITS:
            enc = tok.encode(d, add_special_tokens=False)
            if len(enc) != 1:
                raise ValueError(
                    f"tokenizer of {self.model_path} encodes digit {d!r} as {len(enc)} tokens {enc}; "
                    "the scorer reads one next-token distribution, so each digit must be a single token"
                )
            ids.append(enc[0])
        self.digit_ids = ids
        stops = {tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id}
        gen_eos = getattr(self._model.generation_config, "eos_token_id", None)
        if isinstance(gen_eos, int):
            stops.add(gen_eos)
        elif gen_eos:
            stops.update(gen_eos)
        self.stop_ids = sorted(i for i in stops if isinstance(i, int) and i >= 0)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.stop_ids[0]

    @property
    def model(self):
        self._load()
        return self._model

    def identity(self, prompts: PromptSet) -> ScorerIdentity:
        return ScorerIdentity(
            backend=self.name,
            model=self.model_name,
            revision=self.revision or checkpoint_revision(self.model_path),
            prompt_version=prompts.version,
            extra=(("dtype", str(self._torch_dtype()).replace("torch.", "")), ("image", "anyres-384")),
        )

    def close(self) -> None:
        self._model = None
        self._prefix_lru.clear()

    # ------------------------------------------------------------------ inputs
    def _items(self, requests: Sequence[ScoreRequest]) -> tuple[list[_Item], dict[int, Failure]]:
        items, failures = [], {}
        for i, req in enumerate(requests):
            try:
                image = load_scorer_image(req.image_file)
            except Exception as exc:  # one unreadable image fails that sample only
                failures[i] = Failure("image_error", f"{req.sample_id}: {type(exc).__name__}: {exc}")
                continue
            user = req.prefix
            if image is not None and self.image_token not in user:
                user = f"{self.image_token}\n{user}"  # LLaVA convention: the image leads the first turn
            elif image is None and self.image_token in user:
                user = user.replace(f"{self.image_token}\n", "").replace(self.image_token, "")
            key = (req.key, hashlib.sha256(user.encode()).hexdigest(), req.image_file or "")
            items.append(_Item(i, _HEAD + user, user, image, key))
        return items, failures

    def _encode(self, texts: list[str], images: list) -> dict:
        """Processor call with left padding; images in order of their placeholders."""
        kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True}
        imgs = [im for im in images if im is not None]
        if imgs:
            kwargs["images"] = imgs
        self.tokenizer.padding_side = "left"
        enc = self.processor(**kwargs)
        return {k: v.to(self.device) for k, v in enc.items()}

    @staticmethod
    def _positions(mask):
        pos = mask.long().cumsum(-1) - 1
        return pos.clamp(min=0)

    # ------------------------------------------------------------------ prefix cache
    def _prefill(self, items: list[_Item]) -> list[_Prefix]:
        """Prefill prefixes (cached ones reused), batched with left padding, return one _Prefix each."""
        todo = [it for it in items if it.key not in self._prefix_lru]
        todo.sort(key=lambda it: (it.image is not None, len(it.text)))
        step = self.prefill_batch_size
        for start in range(0, len(todo), step):
            chunk = todo[start : start + step]
            enc = self._encode([it.text for it in chunk], [it.image for it in chunk])
            mask = enc["attention_mask"]
            if bool(mask.all()):  # no padding: let attention take its causal fast path (no mask tensor)
                extra = {}
            else:
                extra = {"position_ids": self._positions(mask)}
            with self.torch.inference_mode():
                out = self.model(**enc, **extra, use_cache=True, logits_to_keep=1)
            self.stats["prefills"] += len(chunk)
            cache = out.cache
            layers = [(layer.keys, layer.values) for layer in cache.layers]
            width = mask.shape[1]
            for b, it in enumerate(chunk):
                n = int(mask[b].sum())
                pad = width - n
                self._remember(
                    it.key,
                    _Prefix(
                        keys=[k[b : b + 1, :, pad:, :] for k, _ in layers],  # views: no copy
                        values=[v[b : b + 1, :, pad:, :] for _, v in layers],
                        length=n,
                    ),
                )
        return [self._prefix_lru[it.key] for it in items]

    def _remember(self, key, prefix: _Prefix) -> None:
        self._prefix_lru[key] = prefix
        self._prefix_lru.move_to_end(key)
        while len(self._prefix_lru) > max(self.prefix_cache_size, self._lru_floor):
            self._prefix_lru.popitem(last=False)

    def _assemble(self, prefixes: list[_Prefix]):
        """A DynamicCache holding these prefixes left-padded to one length, plus mask and lengths."""
        import torch
        from transformers import DynamicCache

        width = max(p.length for p in prefixes)
        rows = len(prefixes)
        n_layers = len(prefixes[0].keys)
        data = []
        if rows == 1:  # nothing to pad: hand the tensors over as they are
            data = list(zip(prefixes[0].keys, prefixes[0].values))
        for layer in range(n_layers if rows > 1 else 0):
            k0 = prefixes[0].keys[layer]
            v0 = prefixes[0].values[layer]
            ks = k0.new_zeros((rows, k0.shape[1], width, k0.shape[3]))
            vs = v0.new_zeros((rows, v0.shape[1], width, v0.shape[3]))
            for r, p in enumerate(prefixes):
                ks[r, :, width - p.length :, :] = p.keys[layer][0]
                vs[r, :, width - p.length :, :] = p.values[layer][0]
            data.append((ks, vs))
        mask = torch.zeros((rows, width), dtype=torch.long, device=self.device)
        for r, p in enumerate(prefixes):
            mask[r, width - p.length :] = 1
        lengths = torch.tensor([p.length for p in prefixes], device=self.device)
        cache = DynamicCache(ddp_cache_data=data, config=self.model.config)
        return cache, mask, lengths

    def _extend(self, prefixes: list[_Prefix], suffixes: list[list[int]]):
        """Run suffix token ids (one per prefix row) against the prefixes; return last-position logits,
        the cache and the full attention mask/lengths (for further decoding)."""
        import torch

        cache, pmask, lengths = self._assemble(prefixes)
        width = max(len(s) for s in suffixes)
        ids = torch.full((len(suffixes), width), self.pad_id, dtype=torch.long, device=self.device)
        smask = torch.zeros((len(suffixes), width), dtype=torch.long, device=self.device)
        for r, s in enumerate(suffixes):  # left-pad the suffix: pads sit between prefix and suffix
            ids[r, width - len(s) :] = torch.tensor(s, device=self.device)
            smask[r, width - len(s) :] = 1
        pos = lengths[:, None] + (smask.cumsum(-1) - 1).clamp(min=0)
        mask = torch.cat([pmask, smask], dim=1)
        with torch.inference_mode():
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=pos,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[:, -1, :], out.cache, mask, lengths + smask.sum(-1)

    def _packed_supported(self) -> bool:
        return getattr(self.model.config, "_attn_implementation", "sdpa") in ("sdpa", "eager")

    def _extend_packed(self, prefixes: list[_Prefix], tails: list[list[list[int]]]):
        """All query tails of a sample packed into ONE sequence after its prefix (no copy of the prefix
        cache per query): a 4D mask lets each tail see the prefix and its own earlier tokens only, and
        each tail's positions restart at the prefix length. Returns, per row, the logits at the last
        token of each of its tails."""
        import torch

        cache, pmask, lengths = self._assemble(prefixes)
        rows, width = len(tails), pmask.shape[1]
        q = max(sum(len(t) for t in row) for row in tails)
        ids = torch.full((rows, q), self.pad_id, dtype=torch.long, device=self.device)
        pos = torch.zeros((rows, q), dtype=torch.long, device=self.device)
        tail_of = torch.full((rows, q), -1, dtype=torch.long, device=self.device)  # -1: padding
        last = []
        for r, row in enumerate(tails):
            at, ends = 0, []
            for t, tail in enumerate(row):
                n = len(tail)
                ids[r, at : at + n] = torch.tensor(tail, device=self.device)
                pos[r, at : at + n] = lengths[r] + torch.arange(n, device=self.device)
                tail_of[r, at : at + n] = t
                ends.append(at + n - 1)
                at += n
            pos[r, at:] = lengths[r]
            last.append(ends)
        idx = torch.arange(q, device=self.device)
        causal = idx[None, :] <= idx[:, None]  # (q, q): key j <= query i
        same = (tail_of[:, :, None] == tail_of[:, None, :]) & (tail_of[:, None, :] >= 0)
        own = (idx[:, None] == idx[None, :])[None]  # a padding query sees itself (never an empty row)
        packed = (causal[None] & same) | own
        prefix = pmask.bool()[:, None, :].expand(rows, q, width)
        mask = torch.cat([prefix, packed], dim=2)[:, None]  # (rows, 1, q, width + q), True = attend
        if getattr(self.model.config, "_attn_implementation", "sdpa") == "eager":
            dtype = self.model.dtype
            mask = torch.zeros(mask.shape, dtype=dtype, device=self.device).masked_fill(~mask, torch.finfo(dtype).min)
        with torch.inference_mode():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True)
        logits = out.logits
        return [logits[r, ends, :] for r, ends in enumerate(last)]

    def _extend_prefixes(self, prefixes: list[_Prefix], ids: list[int]) -> list[_Prefix]:
        """New prefixes = old ones followed by the same token ids (one batched pass, not cached)."""
        _, cache, mask, _ = self._extend(prefixes, [ids] * len(prefixes))
        width = mask.shape[1]
        out = []
        for r, p in enumerate(prefixes):
            n = p.length + len(ids)
            out.append(
                _Prefix(
                    keys=[layer.keys[r : r + 1, :, width - n :, :] for layer in cache.layers],
                    values=[layer.values[r : r + 1, :, width - n :, :] for layer in cache.layers],
                    length=n,
                )
            )
        return out

    def _digits(self, logits) -> list[np.ndarray]:
        """Softmax over the digit logits = the next-token distribution renormalised over 0..5."""
        sub = logits[:, self.digit_ids].float()
        probs = self.torch.softmax(sub, dim=-1).double().cpu().numpy()
        return [p / p.sum() for p in probs]

    def _suffix_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _seam_ok(self, item: _Item, query: str, suffix_ids: list[int], head: list[int] | None = None) -> bool:
        """The shared path tokenises prefix and query separately; valid only if that equals the joint
        tokenisation (true for Qwen2's pre-tokenizer at a newline/letter seam, checked anyway)."""
        if head is None:
            head = self.tokenizer.encode(item.text, add_special_tokens=False)
        joint = self.tokenizer.encode(item.text + query + _TAIL, add_special_tokens=False)
        return joint == head + suffix_ids

    # ------------------------------------------------------------------ protocol
    def digit_distributions(
        self, requests: Sequence[ScoreRequest], queries: Sequence[str], prompts: PromptSet
    ) -> list[list[Any]]:
        self._load()
        self._lru_floor = len(requests)
        results: list[list[Any]] = [[None] * len(queries) for _ in requests]
        items, failures = self._items(requests)
        for i, f in failures.items():
            results[i] = [f] * len(queries)
        if not items or not queries:
            return results
        plain: list[tuple[_Item, int]] = []
        if self.shared_prefix:
            q_ids = [self._suffix_ids(q + _TAIL) for q in queries]
            step = self.prefill_batch_size
            for start in range(0, len(items), step):
                chunk = items[start : start + step]
                try:
                    prefixes = self._prefill(chunk)
                except Exception as exc:
                    self._fail_chunk(results, chunk, range(len(queries)), exc)
                    continue
                # The capability queries share their opening words ("On a scale of 0 to 5, ... for"):
                # run those tokens once per sample too, so each query only adds its own few tokens.
                common = _common_prefix(q_ids) if len(q_ids) > 1 else []
                extended = self._extend_prefixes(prefixes, common) if common else prefixes
                rows = []
                for it, pre in zip(chunk, extended):
                    head = self.tokenizer.encode(it.text, add_special_tokens=False)
                    for j, qid in enumerate(q_ids):
                        if self._seam_ok(it, queries[j], qid, head):
                            rows.append((it, j, pre, qid[len(common):]))
                        else:
                            self.stats["seam_fallbacks"] += 1
                            plain.append((it, j))
                if self.pack_queries and self._packed_supported():
                    self._score_packed(rows, results)
                    continue
                for rs in range(0, len(rows), self.suffix_batch):
                    part = rows[rs : rs + self.suffix_batch]
                    logits, *_ = self._extend([p for _, _, p, _ in part], [q for *_, q in part])
                    self.stats["suffix_rows"] += len(part)
                    for (it, j, _, _), dist in zip(part, self._digits(logits)):
                        results[it.index][j] = dist
        else:
            plain = [(it, j) for it in items for j in range(len(queries))]
        self._plain(plain, queries, results)
        return results

    def _score_packed(self, rows, results) -> None:
        """One packed sequence per sample holding all its query tails (see `_extend_packed`)."""
        by_item: dict[int, list] = {}
        order: list[int] = []
        for it, j, pre, tail in rows:
            if it.index not in by_item:
                by_item[it.index] = []
                order.append(it.index)
            by_item[it.index].append((it, j, pre, tail))
        groups = [by_item[i] for i in order]
        for start in range(0, len(groups), self.prefill_batch_size):
            part = groups[start : start + self.prefill_batch_size]
            logits = self._extend_packed([g[0][2] for g in part], [[tail for *_, tail in g] for g in part])
            for g, lg in zip(part, logits):
                self.stats["suffix_rows"] += len(g)
                for (it, j, _, _), dist in zip(g, self._digits(lg)):
                    results[it.index][j] = dist

    def _fail_chunk(self, results, chunk, query_range, exc) -> None:
        for it in chunk:
            for j in query_range:
                results[it.index][j] = Failure("model_error", f"{type(exc).__name__}: {exc}")

    def _plain(self, pairs: list[tuple[_Item, int]], queries: Sequence[str], results) -> None:
        """Full prompt per (sample, query), left-padded batches, last-position logits."""
        for start in range(0, len(pairs), self.batch_size):
            part = pairs[start : start + self.batch_size]
            texts = [it.text + queries[j] + _TAIL for it, j in part]
            enc = self._encode(texts, [it.image for it, _ in part])
            with self.torch.inference_mode():
                out = self.model(
                    **enc, position_ids=self._positions(enc["attention_mask"]), logits_to_keep=1
                )
            self.stats["plain_rows"] += len(part)
            for (it, j), dist in zip(part, self._digits(out.logits[:, -1, :])):
                results[it.index][j] = dist

    def _style_constraint(self, labels: Sequence[str]) -> StyleConstraint:
        if self._constraint is None or self._constraint_labels != tuple(labels):
            vocab = len(self.tokenizer)
            special = set(self.tokenizer.all_special_ids)
            strings = self.tokenizer.batch_decode([[i] for i in range(vocab)])
            strings = ["" if i in special else s for i, s in enumerate(strings)]
            self._constraint = StyleConstraint(labels, strings)
            self._constraint_labels = tuple(labels)
        return self._constraint

    def styles(self, requests: Sequence[ScoreRequest], prompts: PromptSet) -> list[Any]:
        self._load()
        results: list[Any] = [None] * len(requests)
        items, failures = self._items(requests)
        for i, f in failures.items():
            results[i] = f
        constraint = self._style_constraint(prompts.styles)
        suffix = self._suffix_ids(prompts.style_query + _TAIL)
        for start in range(0, len(items), self.prefill_batch_size):
            chunk = items[start : start + self.prefill_batch_size]
            try:
                texts = self._constrained_decode(chunk, suffix, prompts.style_query, constraint)
            except Exception as exc:
                for it in chunk:
                    results[it.index] = Failure("model_error", f"{type(exc).__name__}: {exc}")
                continue
            for it, text in zip(chunk, texts):
                try:
                    results[it.index] = parse_styles(text, prompts.styles)
                except ValueError as exc:
                    results[it.index] = Failure("malformed_answer", f"{requests[it.index].sample_id}: {exc}")
        return results

    def _constrained_decode(self, chunk: list[_Item], suffix: list[int], query: str, constraint) -> list[str]:
        """Greedy decoding restricted to valid label lists, all samples of the chunk in one batch."""
        import torch

        if self.shared_prefix and all(self._seam_ok(it, query, suffix) for it in chunk):
            prefixes = self._prefill(chunk)
            logits, cache, mask, lengths = self._extend(prefixes, [suffix] * len(chunk))
        else:
            enc = self._encode([it.text + query + _TAIL for it in chunk], [it.image for it in chunk])
            mask = enc["attention_mask"]
            with torch.inference_mode():
                out = self.model(**enc, position_ids=self._positions(mask), use_cache=True, logits_to_keep=1)
            logits, cache, lengths = out.logits[:, -1, :], out.cache, mask.sum(-1)
        states = [constraint.initial() for _ in chunk]
        texts = ["" for _ in chunk]
        done = [False] * len(chunk)
        for _ in range(self.max_style_tokens):
            next_ids = []
            for r in range(len(chunk)):
                if done[r]:
                    next_ids.append(self.pad_id)
                    continue
                options = constraint.allowed(states[r])
                cand = {tid: st for tid, st in options}
                if constraint.can_stop(states[r]):
                    for s in self.stop_ids:
                        cand[s] = None
                if not cand:
                    done[r] = True
                    next_ids.append(self.pad_id)
                    continue
                ids = torch.tensor(list(cand), device=logits.device)
                best = int(ids[int(torch.argmax(logits[r, ids]))])
                if cand[best] is None:
                    done[r] = True
                else:
                    states[r] = cand[best]
                    texts[r] += constraint.token_strings[best]
                    if not constraint.allowed(states[r]):  # every label used: the list is complete
                        done[r] = True
                next_ids.append(best)
            if all(done):
                break
            step = torch.tensor(next_ids, device=self.device)[:, None]
            mask = torch.cat([mask, torch.ones_like(step)], dim=1)
            with torch.inference_mode():
                out = self.model(
                    input_ids=step,
                    attention_mask=mask,
                    position_ids=lengths[:, None],
                    cache=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
            logits, cache = out.logits[:, -1, :], out.cache
            lengths = lengths + 1
        return texts
