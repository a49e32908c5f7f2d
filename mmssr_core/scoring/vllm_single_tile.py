"""LLaVA-OneVision in vLLM with the reference's single-tile image features (imported by vLLM, not by mmssr).

vLLM's LLaVA-OneVision packs AnyRes features (base view + tiles). Given exactly one 384 px view per image,
its own merge step already yields what the reference computes: the SigLIP grid plus one `image_newline`
(730 features at SigLIP-384/14). So this variant changes only the multimodal processor: pixels are the
shared scorer image (squashed to the tower's size, normalised with the checkpoint's mean/std) as one view,
and each image placeholder is expanded to grid + 1 tokens. No Hugging Face processor (and no torchvision)
is involved. Registered by `vllm_plugin.register` under `SINGLE_TILE_ARCHITECTURE`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from transformers import BatchFeature
from vllm.model_executor.models.llava_onevision import (
    LlavaOnevisionDummyInputsBuilder,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionMultiModalProcessor,
    LlavaOnevisionProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.parse import ImageSize

from mmssr_core.image_prep import to_rgb
from mmssr_core.prompts import IMAGE_TOKEN
from mmssr_core.scoring.hf_inputs import image_normalisation, normalised_pixels
from mmssr_core.scoring.reference_stream import single_tile_features


class SingleTileProcessingInfo(LlavaOnevisionProcessingInfo):
    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None}

    def _tile_size(self) -> int:
        return int(self.get_hf_config().vision_config.image_size)

    def get_num_image_tokens(self, *, image_width: int, image_height: int, **_: object) -> int:
        vision = self.get_hf_config().vision_config
        return single_tile_features(vision.image_size, vision.patch_size)

    def get_image_size_with_most_features(self) -> ImageSize:
        size = self._tile_size()
        return ImageSize(width=size, height=size)


class SingleTileDummyInputsBuilder(LlavaOnevisionDummyInputsBuilder):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return IMAGE_TOKEN * mm_counts.get("image", 0)

    def get_dummy_mm_data(self, seq_len, mm_counts, mm_options):
        size = self.info._tile_size()
        return {
            "image": self._get_dummy_images(
                width=size, height=size, num_images=mm_counts.get("image", 0), overrides=mm_options.get("image")
            )
        }


def _as_pil(image):
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # CHW -> HWC
    return Image.fromarray(array.astype(np.uint8))


class SingleTileMultiModalProcessor(LlavaOnevisionMultiModalProcessor):
    def _normalisation(self):
        if not hasattr(self, "_norm"):
            self._norm = image_normalisation(Path(self.info.ctx.model_config.model))
        return self._norm

    def _apply_hf_processor_main(self, mm_items, hf_kwargs) -> BatchFeature:
        from PIL import Image

        hf_data, hf_kwargs, passthrough = self._get_hf_mm_inputs(mm_items, hf_kwargs)
        images = hf_data.get("images") or []
        processed = None
        if images:
            size = self.info._tile_size()
            mean, std, rescale = self._normalisation()
            views = []
            for image in images:
                rgb = to_rgb(_as_pil(image))
                if rgb.size != (size, size):
                    rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
                views.append(normalised_pixels(rgb, mean, std, rescale))
            pixels = torch.from_numpy(np.stack(views))[:, None]  # (n, 1 view, 3, H, W)
            processed = BatchFeature({"pixel_values": pixels, "image_sizes": torch.tensor([[size, size]] * len(views))})
        return self._finalize_hf_mm_data(hf_data, hf_kwargs, passthrough, processed)


@MULTIMODAL_REGISTRY.register_processor(
    SingleTileMultiModalProcessor, info=SingleTileProcessingInfo, dummy_inputs=SingleTileDummyInputsBuilder
)
class SingleTileLlavaOnevision(LlavaOnevisionForConditionalGeneration):
    """LLaVA-OneVision fed one view per image: its merge step yields grid + image_newline features."""
