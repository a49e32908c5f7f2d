"""Single-tile image features for a transformers LLaVA-OneVision model, as the reference computes them.

Transformers' LLaVA-OneVision always packs AnyRes features (a base view plus tiles: 1,485 features for
a 384 px image at 7B dimensions). The reference inference shows the model one 384 px tile and gives it
the SigLIP grid plus one `image_newline` (730). `use_single_tile_features` swaps the model's
`get_image_features` for that computation; everything else (vision tower, layer choice, projector,
placeholder scatter) stays the model's own code.
"""

from __future__ import annotations

import types


def single_tile_image_features(
    self,
    pixel_values,
    image_sizes=None,
    vision_feature_layer=None,
    vision_feature_select_strategy=None,
    **_: object,
):
    """pixel_values (n_images, 3, H, W) -> pooler_output: one (grid + 1, hidden) tensor per image."""
    import torch
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    config = self.config
    layer = config.vision_feature_layer if vision_feature_layer is None else vision_feature_layer
    strategy = vision_feature_select_strategy or config.vision_feature_select_strategy
    if pixel_values.dim() == 5:  # (n, patches, 3, H, W) from a processor: keep the first view only
        pixel_values = pixel_values[:, 0]
    out = self.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
    if isinstance(layer, int):
        selected = out.hidden_states[layer]
    else:
        selected = torch.cat([out.hidden_states[i] for i in layer], dim=-1)
    if strategy == "default":
        selected = selected[:, 1:]
    features = self.multi_modal_projector(selected)
    newline = self.image_newline[None, None, :].to(features.dtype).expand(features.shape[0], 1, -1)
    packed = torch.cat([features, newline], dim=1)
    return BaseModelOutputWithPooling(last_hidden_state=selected, pooler_output=list(packed.unbind(0)))


def use_single_tile_features(model) -> None:
    """Make a loaded LlavaOnevisionForConditionalGeneration compute single-tile features."""
    inner = getattr(model, "model", model)
    if not all(hasattr(inner, a) for a in ("vision_tower", "multi_modal_projector", "image_newline")):
        raise ValueError(
            f"{type(model).__name__} is not a LLaVA-OneVision model: the reference/clean input profiles "
            "need one (vision tower, projector, image_newline); use --profile native for other checkpoints"
        )
    inner.get_image_features = types.MethodType(single_tile_image_features, inner)
