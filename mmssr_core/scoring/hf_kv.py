"""Running query suffixes against cached prefixes with a transformers causal LM.

A sample's 15 prompts share everything up to the query (system, image, serialised conversation). The
backend prefills that prefix once and keeps its keys/values; this module runs suffixes against such
prefixes: left-padded batches of one suffix per prefix (`extend`), or all of a sample's query tails
packed into one sequence behind a block-diagonal 4D mask (`extend_packed`), so the prefix cache is
never copied per query.

Transformers renamed the cache argument and output (`past_key_values` -> `cache`, 5.2x); `CacheApi`
hides which one the installed version speaks.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any


@dataclass
class Prefix:
    """One sample's prefilled prefix: per-layer keys/values (1, heads, length, head_dim)."""

    keys: list
    values: list
    length: int


class CacheApi:
    """The cache keyword the model's forward takes, and how to read the cache back from its output."""

    def __init__(self, model):
        params = inspect.signature(model.forward).parameters
        self.kwarg = "cache" if "cache" in params else "past_key_values"

    def kwargs(self, cache) -> dict:
        return {self.kwarg: cache}

    @staticmethod
    def of(output):
        cache = getattr(output, "cache", None)
        return cache if cache is not None else output.past_key_values


def prefixes_from_cache(cache, mask) -> list[Prefix]:
    """Split a left-padded batch's cache into one Prefix per row (views: no copy)."""
    layers = [(layer.keys, layer.values) for layer in cache.layers]
    width = mask.shape[1]
    out = []
    for b in range(mask.shape[0]):
        n = int(mask[b].sum())
        pad = width - n
        out.append(
            Prefix(
                keys=[k[b : b + 1, :, pad:, :] for k, _ in layers],
                values=[v[b : b + 1, :, pad:, :] for _, v in layers],
                length=n,
            )
        )
    return out


class PrefixRunner:
    """Suffix passes against cached prefixes for one loaded model."""

    def __init__(self, model, device, pad_id: int):
        self.model = model
        self.device = device
        self.pad_id = pad_id
        self.cache_api = CacheApi(model)

    def forward(self, **kwargs):
        import torch

        cache = kwargs.pop("cache", None)
        if cache is not None:
            kwargs.update(self.cache_api.kwargs(cache))
        with torch.inference_mode():
            return self.model(**kwargs)

    def assemble(self, prefixes: list[Prefix]):
        """A DynamicCache holding these prefixes left-padded to one length, plus mask and lengths."""
        import torch
        from transformers import DynamicCache

        width = max(p.length for p in prefixes)
        rows = len(prefixes)
        if rows == 1:  # nothing to pad: hand the tensors over as they are
            data = list(zip(prefixes[0].keys, prefixes[0].values))
        else:
            data = [self._padded_layer(prefixes, layer, width) for layer in range(len(prefixes[0].keys))]
        mask = torch.zeros((rows, width), dtype=torch.long, device=self.device)
        for r, p in enumerate(prefixes):
            mask[r, width - p.length :] = 1
        lengths = torch.tensor([p.length for p in prefixes], device=self.device)
        return DynamicCache(ddp_cache_data=data, config=self.model.config), mask, lengths

    @staticmethod
    def _padded_layer(prefixes: list[Prefix], layer: int, width: int):
        k0, v0 = prefixes[0].keys[layer], prefixes[0].values[layer]
        ks = k0.new_zeros((len(prefixes), k0.shape[1], width, k0.shape[3]))
        vs = v0.new_zeros((len(prefixes), v0.shape[1], width, v0.shape[3]))
        for r, p in enumerate(prefixes):
            ks[r, :, width - p.length :, :] = p.keys[layer][0]
            vs[r, :, width - p.length :, :] = p.values[layer][0]
        return ks, vs

    def extend(self, prefixes: list[Prefix], suffixes: list[list[int]]):
        """One suffix per prefix row -> (last-position logits, cache, full mask, new lengths)."""
        import torch

        cache, pmask, lengths = self.assemble(prefixes)
        width = max(len(s) for s in suffixes)
        ids = torch.full((len(suffixes), width), self.pad_id, dtype=torch.long, device=self.device)
        smask = torch.zeros((len(suffixes), width), dtype=torch.long, device=self.device)
        for r, s in enumerate(suffixes):  # left-pad the suffix: pads sit between prefix and suffix
            ids[r, width - len(s) :] = torch.tensor(s, device=self.device)
            smask[r, width - len(s) :] = 1
        pos = lengths[:, None] + (smask.cumsum(-1) - 1).clamp(min=0)
        mask = torch.cat([pmask, smask], dim=1)
        out = self.forward(
            input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1
        )
        return out.logits[:, -1, :], CacheApi.of(out), mask, lengths + smask.sum(-1)

    def extend_prefixes(self, prefixes: list[Prefix], ids: list[int]) -> list[Prefix]:
        """New prefixes = old ones followed by the same token ids (one batched pass, not cached)."""
        _, cache, mask, _ = self.extend(prefixes, [ids] * len(prefixes))
        width = mask.shape[1]
        out = []
        for r, p in enumerate(prefixes):
            n = p.length + len(ids)
            out.append(
                Prefix(
                    keys=[layer.keys[r : r + 1, :, width - n :, :] for layer in cache.layers],
                    values=[layer.values[r : r + 1, :, width - n :, :] for layer in cache.layers],
                    length=n,
                )
            )
        return out

    def packed_supported(self) -> bool:
        return getattr(self.model.config, "_attn_implementation", "sdpa") in ("sdpa", "eager")

    def extend_packed(self, prefixes: list[Prefix], tails: list[list[list[int]]]) -> list[Any]:
        """All query tails of a sample packed into ONE sequence after its prefix: a 4D mask lets each tail
        see the prefix and its own earlier tokens only, and each tail's positions restart at the prefix
        length. Returns, per row, the logits at the last token of each of its tails."""

        cache, pmask, lengths = self.assemble(prefixes)
        ids, pos, tail_of, last = self._pack(tails, lengths)
        mask = self._packed_mask(pmask, tail_of)
        out = self.forward(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True)
        return [out.logits[r, ends, :] for r, ends in enumerate(last)]

    def _pack(self, tails: list[list[list[int]]], lengths):
        import torch

        rows = len(tails)
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
        return ids, pos, tail_of, last

    def _packed_mask(self, pmask, tail_of):
        import torch

        rows, q = tail_of.shape
        width = pmask.shape[1]
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
        return mask
