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

What the model is fed follows the input profile carried by the PromptSet (`mmssr_core.profiles`): the
reference token stream and single-tile image features by default (`hf_inputs.SingleTileInputs` plus
`hf_single_tile`), or the checkpoint's own processor (`native`).

A plain path (full prompt per query, left-padded batches) is kept behind `shared_prefix=False`: tests
compare the two, and it is the fallback when a tokenizer would merge tokens across the prefix/query seam.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmssr_core.profiles import InputProfile
from mmssr_core.prompts import DIGITS, IMAGE_SIZE, IMAGE_TOKEN, PromptSet, load_scorer_image, parse_styles
from mmssr_core.scoring.base import Failure, ScoreRequest, ScorerIdentity
from mmssr_core.scoring.checkpoints import checkpoint_revision
from mmssr_core.scoring.hf_kv import CacheApi, Prefix, PrefixRunner, prefixes_from_cache
from mmssr_core.scoring.style_constraint import StyleConstraint

__all__ = ["TransformersBackend", "StyleConstraint", "checkpoint_revision"]


def _common_prefix(seqs: list[list[int]]) -> list[int]:
    """Longest common token prefix, leaving at least one token of each sequence to run on its own."""
    limit = min(len(s) for s in seqs) - 1
    n = 0
    while n < limit and all(s[n] == seqs[0][n] for s in seqs):
        n += 1
    return list(seqs[0][:n])


@dataclass
class _Item:
    index: int  # position in the caller's request list
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
        self._inputs_by_profile: dict[str, Any] = {}
        self._image_mode: str | None = None
        self._prefix_lru: OrderedDict[tuple, Prefix] = OrderedDict()
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
        from transformers import AutoModelForImageTextToText, AutoTokenizer

        kwargs = {"local_files_only": True}
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, **kwargs)
        model_kwargs = dict(kwargs, dtype=self._torch_dtype())
        if self.attn_implementation:
            model_kwargs["attn_implementation"] = self.attn_implementation
        model = AutoModelForImageTextToText.from_pretrained(self.model_path, **model_kwargs)
        self._model = model.to(self.device).eval()
        self._native_image_features = getattr(getattr(model, "model", model), "get_image_features", None)
        self.torch = torch
        self.digit_ids = self._digit_ids(self.tokenizer)
        self.stop_ids = self._stop_ids(self.tokenizer, model)
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.stop_ids[0]
        self.runner = PrefixRunner(self._model, self.device, self.pad_id)

    def _digit_ids(self, tok) -> list[int]:
        ids = []
        for d in DIGITS:
            enc = tok.encode(d, add_special_tokens=False)
            if len(enc) != 1:
                raise ValueError(
                    f"tokenizer of {self.model_path} encodes digit {d!r} as {len(enc)} tokens {enc}; "
                    "the scorer reads one next-token distribution, so each digit must be a single token"
                )
            ids.append(enc[0])
        return ids

    @staticmethod
    def _stop_ids(tok, model) -> list[int]:
        stops = {tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id}
        gen_eos = getattr(model.generation_config, "eos_token_id", None)
        if isinstance(gen_eos, int):
            stops.add(gen_eos)
        elif gen_eos:
            stops.update(gen_eos)
        return sorted(i for i in stops if isinstance(i, int) and i >= 0)

    @property
    def model(self):
        self._load()
        return self._model

    def _inputs(self, profile: InputProfile):
        """The input builder for a profile (created once), with the model's image features set to match."""
        self._load()
        if profile.name not in self._inputs_by_profile:
            if profile.single_tile:
                from mmssr_core.scoring.hf_inputs import SingleTileInputs

                inputs = SingleTileInputs(self.model_path, self.tokenizer, self._model.config, self.pad_id)
            else:
                from transformers import AutoProcessor

                from mmssr_core.scoring.hf_inputs import NativeInputs

                processor = AutoProcessor.from_pretrained(self.model_path, local_files_only=True)
                inputs = NativeInputs(processor, self.pad_id)
            self._inputs_by_profile[profile.name] = inputs
        self._set_image_features(profile.image_features)
        return self._inputs_by_profile[profile.name]

    def _set_image_features(self, mode: str) -> None:
        if mode == self._image_mode:
            return
        inner = getattr(self._model, "model", self._model)
        if mode == "single-tile":
            from mmssr_core.scoring.hf_single_tile import use_single_tile_features

            use_single_tile_features(self._model)
        elif self._native_image_features is not None:
            inner.get_image_features = self._native_image_features
        self._prefix_lru.clear()  # cached prefixes were computed with the other features
        self._image_mode = mode

    def identity(self, prompts: PromptSet) -> ScorerIdentity:
        return ScorerIdentity(
            backend=self.name,
            model=self.model_name,
            revision=self.revision or checkpoint_revision(self.model_path),
            prompt_version=prompts.version,
            extra=(("dtype", str(self._torch_dtype()).replace("torch.", "")), ("input", prompts.profile.name)),
        )

    def close(self) -> None:
        self._model = None
        self._inputs_by_profile.clear()
        self._image_mode = None
        self._prefix_lru.clear()

    # ------------------------------------------------------------------ inputs
    def _items(self, requests: Sequence[ScoreRequest], inputs) -> tuple[list[_Item], dict[int, Failure]]:
        items, failures = [], {}
        size = getattr(inputs, "image_size", IMAGE_SIZE)
        image_token = getattr(inputs, "image_token", IMAGE_TOKEN)
        for i, req in enumerate(requests):
            try:
                image = load_scorer_image(req.image_file, size)
            except Exception as exc:  # one unreadable image fails that sample only
                failures[i] = Failure("image_error", f"{req.sample_id}: {type(exc).__name__}: {exc}")
                continue
            user = req.prefix
            if image is not None and image_token not in user:
                user = f"{image_token}\n{user}"  # LLaVA convention: the image leads the first turn
            elif image is None and image_token in user:
                user = user.replace(f"{image_token}\n", "").replace(image_token, "")
            key = (req.key, hashlib.sha256(user.encode()).hexdigest(), req.image_file or "", type(inputs).__name__)
            items.append(_Item(i, user, image, key))
        return items, failures

    # ------------------------------------------------------------------ prefix cache
    def _prefill(self, items: list[_Item], inputs) -> list[Prefix]:
        """Prefill prefixes (cached ones reused), batched with left padding, return one Prefix each."""
        todo = [it for it in items if it.key not in self._prefix_lru]
        todo.sort(key=lambda it: (it.image is not None, len(it.user)))
        for start in range(0, len(todo), self.prefill_batch_size):
            chunk = todo[start : start + self.prefill_batch_size]
            enc = inputs.prefix_batch([it.user for it in chunk], [it.image for it in chunk], self.device)
            mask = enc["attention_mask"]
            # no padding: let attention take its causal fast path (no position ids needed)
            extra = {} if bool(mask.all()) else {"position_ids": self._positions(mask)}
            out = self.runner.forward(**enc, **extra, use_cache=True, logits_to_keep=1)
            self.stats["prefills"] += len(chunk)
            for it, prefix in zip(chunk, prefixes_from_cache(CacheApi.of(out), mask)):
                self._remember(it.key, prefix)
        return [self._prefix_lru[it.key] for it in items]

    @staticmethod
    def _positions(mask):
        return (mask.long().cumsum(-1) - 1).clamp(min=0)

    def _remember(self, key, prefix: Prefix) -> None:
        self._prefix_lru[key] = prefix
        self._prefix_lru.move_to_end(key)
        while len(self._prefix_lru) > max(self.prefix_cache_size, self._lru_floor):
            self._prefix_lru.popitem(last=False)

    def _digits(self, logits) -> list[np.ndarray]:
        """Softmax over the digit logits = the next-token distribution renormalised over 0..5."""
        sub = logits[:, self.digit_ids].float()
        probs = self.torch.softmax(sub, dim=-1).double().cpu().numpy()
        return [p / p.sum() for p in probs]

    def _seam_ok(self, inputs, item: _Item, query: str, suffix: list[int], head: list[int]) -> bool:
        """The shared path encodes prefix and query apart; valid only if that equals the whole prompt."""
        return inputs.seam_ok(item.user, query, head, suffix)

    # ------------------------------------------------------------------ protocol
    def digit_distributions(
        self, requests: Sequence[ScoreRequest], queries: Sequence[str], prompts: PromptSet
    ) -> list[list[Any]]:
        inputs = self._inputs(prompts.profile)
        self._lru_floor = len(requests)
        results: list[list[Any]] = [[None] * len(queries) for _ in requests]
        items, failures = self._items(requests, inputs)
        for i, f in failures.items():
            results[i] = [f] * len(queries)
        if not items or not queries:
            return results
        if not self.shared_prefix:
            self._plain([(it, j) for it in items for j in range(len(queries))], queries, results, inputs)
            return results
        plain: list[tuple[_Item, int]] = []
        q_ids = [inputs.suffix_ids(q) for q in queries]
        for start in range(0, len(items), self.prefill_batch_size):
            chunk = items[start : start + self.prefill_batch_size]
            try:
                prefixes = self._prefill(chunk, inputs)
                rows = self._suffix_rows(chunk, prefixes, queries, q_ids, inputs, plain)
                self._score_rows(rows, results)
            except Exception as exc:
                self._fail_chunk(results, chunk, range(len(queries)), exc)
        self._plain(plain, queries, results, inputs)
        return results

    def _suffix_rows(self, chunk, prefixes, queries, q_ids, inputs, plain) -> list[tuple]:
        """(item, query index, prefix, tail ids) for every seam-safe pair; the others go to `plain`.

        The capability queries share their opening words ("On a scale of 0 to 5, ... for"): those tokens
        run once per sample too, so each query only adds its own few tokens.
        """
        common = _common_prefix(q_ids) if len(q_ids) > 1 else []
        extended = self.runner.extend_prefixes(prefixes, common) if common else prefixes
        rows = []
        for it, pre in zip(chunk, extended):
            head = inputs.seam_prefix(it.user)
            for j, qid in enumerate(q_ids):
                if self._seam_ok(inputs, it, queries[j], qid, head):
                    rows.append((it, j, pre, qid[len(common) :]))
                else:
                    self.stats["seam_fallbacks"] += 1
                    plain.append((it, j))
        return rows

    def _score_rows(self, rows: list[tuple], results) -> None:
        if self.pack_queries and self.runner.packed_supported():
            self._score_packed(rows, results)
            return
        for rs in range(0, len(rows), self.suffix_batch):
            part = rows[rs : rs + self.suffix_batch]
            logits, *_ = self.runner.extend([p for _, _, p, _ in part], [q for *_, q in part])
            self.stats["suffix_rows"] += len(part)
            for (it, j, _, _), dist in zip(part, self._digits(logits)):
                results[it.index][j] = dist

    def _score_packed(self, rows, results) -> None:
        """One packed sequence per sample holding all its query tails (see `PrefixRunner.extend_packed`)."""
        by_item: dict[int, list] = {}
        for row in rows:
            by_item.setdefault(row[0].index, []).append(row)
        groups = list(by_item.values())
        for start in range(0, len(groups), self.prefill_batch_size):
            part = groups[start : start + self.prefill_batch_size]
            logits = self.runner.extend_packed([g[0][2] for g in part], [[tail for *_, tail in g] for g in part])
            for g, lg in zip(part, logits):
                self.stats["suffix_rows"] += len(g)
                for (it, j, _, _), dist in zip(g, self._digits(lg)):
                    results[it.index][j] = dist

    def _fail_chunk(self, results, chunk, query_range, exc) -> None:
        for it in chunk:
            for j in query_range:
                results[it.index][j] = Failure("model_error", f"{type(exc).__name__}: {exc}")

    def _plain(self, pairs: list[tuple[_Item, int]], queries: Sequence[str], results, inputs) -> None:
        """Full prompt per (sample, query), left-padded batches, last-position logits."""
        for start in range(0, len(pairs), self.batch_size):
            part = pairs[start : start + self.batch_size]
            enc = inputs.full_batch(
                [it.user for it, _ in part], [queries[j] for _, j in part], [it.image for it, _ in part], self.device
            )
            out = self.runner.forward(**enc, position_ids=self._positions(enc["attention_mask"]), logits_to_keep=1)
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
        inputs = self._inputs(prompts.profile)
        results: list[Any] = [None] * len(requests)
        items, failures = self._items(requests, inputs)
        for i, f in failures.items():
            results[i] = f
        constraint = self._style_constraint(prompts.styles)
        suffix = inputs.suffix_ids(prompts.style_query)
        for start in range(0, len(items), self.prefill_batch_size):
            chunk = items[start : start + self.prefill_batch_size]
            try:
                texts = self._constrained_decode(chunk, suffix, prompts.style_query, constraint, inputs)
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

    def _style_start(self, chunk: list[_Item], suffix: list[int], query: str, inputs):
        """Logits after the style query, with the cache to decode from (shared prefix when seam-safe)."""
        shared = self.shared_prefix and all(
            self._seam_ok(inputs, it, query, suffix, inputs.seam_prefix(it.user)) for it in chunk
        )
        if shared:
            logits, cache, mask, lengths = self.runner.extend(self._prefill(chunk, inputs), [suffix] * len(chunk))
            return logits, cache, mask, lengths
        enc = inputs.full_batch(
            [it.user for it in chunk], [query] * len(chunk), [it.image for it in chunk], self.device
        )
        mask = enc["attention_mask"]
        out = self.runner.forward(**enc, position_ids=self._positions(mask), use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :], CacheApi.of(out), mask, mask.sum(-1)

    def _next_token(self, logits_row, state, constraint) -> tuple[int, Any, bool]:
        """(token, next state, done) for one row of constrained greedy decoding."""
        cand = {tid: st for tid, st in constraint.allowed(state)}
        if constraint.can_stop(state):
            for s in self.stop_ids:
                cand[s] = None
        if not cand:
            return self.pad_id, state, True
        ids = self.torch.tensor(list(cand), device=logits_row.device)
        best = int(ids[int(self.torch.argmax(logits_row[ids]))])
        if cand[best] is None:
            return best, state, True
        # every label used: the list is complete
        return best, cand[best], not constraint.allowed(cand[best])

    def _constrained_decode(self, chunk: list[_Item], suffix: list[int], query: str, constraint, inputs) -> list[str]:
        """Greedy decoding restricted to valid label lists, all samples of the chunk in one batch."""
        import torch

        logits, cache, mask, lengths = self._style_start(chunk, suffix, query, inputs)
        states = [constraint.initial() for _ in chunk]
        texts = ["" for _ in chunk]
        done = [False] * len(chunk)
        for _ in range(self.max_style_tokens):
            next_ids = []
            for r in range(len(chunk)):
                if done[r]:
                    next_ids.append(self.pad_id)
                    continue
                tid, new_state, finished = self._next_token(logits[r], states[r], constraint)
                if new_state is not states[r]:
                    texts[r] += constraint.token_strings[tid]
                states[r], done[r] = new_state, finished
                next_ids.append(tid)
            if all(done):
                break
            step = torch.tensor(next_ids, device=self.device)[:, None]
            mask = torch.cat([mask, torch.ones_like(step)], dim=1)
            out = self.runner.forward(
                input_ids=step,
                attention_mask=mask,
                position_ids=lengths[:, None],
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            logits, cache = out.logits[:, -1, :], CacheApi.of(out)
            lengths = lengths + 1
        return texts
