"""Model inputs for the transformers backend, one class per input profile family.

- `SingleTileInputs` (profiles `reference`, `clean`): the reference token stream (every chat piece
  tokenized alone, an extra newline after the image) and one 384 px tile whose placeholder is expanded to
  the grid plus one image_newline (730 features for SigLIP-384/14). Pixels are prepared here from the one
  shared scorer image, with the checkpoint's normalisation, so no processor (and no torchvision) is needed.
- `NativeInputs` (profile `native`): the checkpoint's own processor and chat template (AnyRes for
  LLaVA-OneVision), for any image-text-to-text checkpoint.

Both give the backend the same three things: token ids of a sample's shared prefix, token ids of each
query's suffix, and a batch of model inputs, so prefix caching works the same way for every profile.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmssr_core.prompts import IMAGE_TOKEN, chatml
from mmssr_core.scoring.reference_stream import (
    IM_END,
    IM_START,
    expand_images,
    reference_token_ids,
    render_reference_chat,
    single_tile_features,
)

_HEAD, _TAIL = chatml("\x00").split("\x00")  # chatml(user) == _HEAD + user + _TAIL


def image_normalisation(model_dir: str | Path) -> tuple[list[float], list[float], float]:
    """(mean, std, rescale factor) from the checkpoint's image processor config (SigLIP's 0.5 by default)."""
    model_dir = Path(model_dir)
    for name in ("preprocessor_config.json", "processor_config.json"):
        path = model_dir / name
        if path.is_file():
            cfg = json.loads(path.read_text())
            cfg = cfg.get("image_processor", cfg)
            if "image_mean" in cfg:
                return list(cfg["image_mean"]), list(cfg["image_std"]), float(cfg.get("rescale_factor", 1 / 255))
    return [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], 1 / 255


def normalised_pixels(image, mean: Sequence[float], std: Sequence[float], rescale: float) -> np.ndarray:
    """(3, H, W) float32 as the reference's SigLIP processor makes them: rescale, then normalise."""
    x = (np.asarray(image, dtype=np.float64) * rescale).astype(np.float32)
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def _left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[Any, Any]:
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[r, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


class SingleTileInputs:
    """Reference token stream + single-tile image features (profiles `reference` and `clean`)."""

    def __init__(self, model_dir: str | Path, tokenizer, config, pad_id: int):
        self.tokenizer = tokenizer
        self.pad_id = pad_id
        self.image_id = int(config.image_token_id)
        vision = config.vision_config
        self.image_size = int(vision.image_size)
        self.features = single_tile_features(vision.image_size, vision.patch_size)
        self.mean, self.std, self.rescale = image_normalisation(model_dir)
        self._ids = dict(
            im_start=tokenizer.convert_tokens_to_ids(IM_START),
            im_end=tokenizer.convert_tokens_to_ids(IM_END),
            image=self.image_id,
        )

    def _encode_piece(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def token_ids(self, text: str) -> list[int]:
        """Rendered ChatML -> the reference stream with each image placeholder expanded."""
        ids = reference_token_ids(text, self._encode_piece, **self._ids)
        return expand_images(ids, self.image_id, self.features)

    def prefix_ids(self, user: str) -> list[int]:
        return self.token_ids(render_reference_chat(user, end=False))

    def full_ids(self, user: str, query: str) -> list[int]:
        return self.token_ids(render_reference_chat(user + query))

    def suffix_ids(self, query: str) -> list[int]:
        return self.token_ids(query + _TAIL)

    def seam_prefix(self, user: str) -> list[int]:
        return self.prefix_ids(user)

    def seam_ok(self, user: str, query: str, prefix: list[int], suffix: list[int]) -> bool:
        """Prefix + suffix must equal the whole prompt's ids (a BPE merge across the seam would break it)."""
        return self.full_ids(user, query) == prefix + suffix

    def prefix_batch(self, users: list[str], images: list, device) -> dict:
        return self._batch([self.prefix_ids(u) for u in users], images, device)

    def full_batch(self, users: list[str], queries: list[str], images: list, device) -> dict:
        return self._batch([self.full_ids(u, q) for u, q in zip(users, queries)], images, device)

    def _batch(self, seqs: list[list[int]], images: list, device) -> dict:
        import torch

        ids, mask = _left_pad(seqs, self.pad_id, device)
        enc: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        imgs = [im for im in images if im is not None]
        if imgs:
            pixels = np.stack([normalised_pixels(im, self.mean, self.std, self.rescale) for im in imgs])
            enc["pixel_values"] = torch.from_numpy(pixels).to(device)
            enc["image_sizes"] = torch.tensor([[self.image_size, self.image_size]] * len(imgs), device=device)
        return enc


class NativeInputs:
    """The checkpoint's own processor and chat template (profile `native`)."""

    def __init__(self, processor, pad_id: int):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.pad_id = pad_id
        self.image_token = getattr(processor, "image_token", IMAGE_TOKEN)
        self.image_size = 384

    def suffix_ids(self, query: str) -> list[int]:
        return self.tokenizer.encode(query + _TAIL, add_special_tokens=False)

    def seam_ok(self, user: str, query: str, prefix_text_ids: list[int], suffix: list[int]) -> bool:
        joint = self.tokenizer.encode(_HEAD + user + query + _TAIL, add_special_tokens=False)
        return joint == prefix_text_ids + suffix

    def seam_prefix(self, user: str) -> list[int]:
        """Ids of the prefix text with placeholders unexpanded (for the seam check only)."""
        return self.tokenizer.encode(_HEAD + user, add_special_tokens=False)

    def prefix_batch(self, users: list[str], images: list, device) -> dict:
        return self._batch([_HEAD + u for u in users], images, device)

    def full_batch(self, users: list[str], queries: list[str], images: list, device) -> dict:
        return self._batch([_HEAD + u + q + _TAIL for u, q in zip(users, queries)], images, device)

    def _batch(self, texts: list[str], images: list, device) -> dict:
        kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True}
        imgs = [im for im in images if im is not None]
        if imgs:
            kwargs["images"] = imgs
        self.tokenizer.padding_side = "left"
        enc = self.processor(**kwargs)
        return {k: v.to(device) for k, v in enc.items()}
