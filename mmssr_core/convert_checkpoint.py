"""Convert a released mmSSR scorer/styler checkpoint (LLaVA-NeXT "llava_qwen" layout) to the Hugging Face
LLaVA-OneVision layout that transformers and vLLM load.

The released `mmssr-7b-scorer` / `mmssr-7b-styler` are LLaVA-OneVision-7B fine-tunes saved by the
LLaVA-NeXT code: `config.json` says `LlavaQwenForCausalLM` (model_type qwen2) plus `mm_*` fields, weights
are named `model.layers.N...`, `model.vision_tower.vision_tower.vision_model...`, `model.mm_projector.0/2`,
`model.image_newline`, `lm_head`, and the tokenizer has no `<image>` token (the code inserted an index).
Transformers' own `convert_llava_onevision_weights_to_hf.py` maps those names to the HF layout; this
module applies the same mapping, writing the layout the llava-hf hub checkpoints use
(`language_model.model.*`, `language_model.lm_head`, `vision_tower.vision_model.*`,
`multi_modal_projector.linear_1/2`, `image_newline`), which transformers 4.45+/5.x and vLLM all load.

Tensors are streamed shard by shard (safetensors in, safetensors out), so a 7B checkpoint never needs
twice its size in RAM. The SigLIP tower is stored already truncated (LLaVA-NeXT drops its last layer and
its head), so the HF config uses the stored layer count and the last hidden state (`vision_feature_layer
= -1`), as the upstream conversion does.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from mmssr_core.image_prep import IMAGE_SIZE

# Towers whose shape the weights cannot tell (heads); everything else is read from the tensors.
KNOWN_VISION_TOWERS = {
    "google/siglip-so400m-patch14-384": {"num_attention_heads": 16, "layer_norm_eps": 1e-6, "image_size": 384},
}
QWEN2_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "use_sliding_window",
    "sliding_window",
    "max_window_layers",
    "attention_dropout",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
)
_VISION_PREFIX = "model.vision_tower.vision_tower.vision_model."


class ConversionError(ValueError):
    """The source is not a checkpoint this converter understands (says which key or field)."""


def map_key(key: str) -> str | None:
    """Original llava_qwen name -> llava-hf LLaVA-OneVision name; None for tensors that are dropped."""
    if key.endswith(".inv_freq"):
        return None
    if key.startswith(_VISION_PREFIX):
        rest = key[len(_VISION_PREFIX) :]
        if rest.startswith("head."):
            return None  # LLaVA-NeXT replaces the SigLIP head by Identity; never used
        return "vision_tower.vision_model." + rest
    m = re.match(r"^model\.mm_projector\.(0|2)\.(weight|bias)$", key)
    if m:
        return f"multi_modal_projector.linear_{1 if m.group(1) == '0' else 2}.{m.group(2)}"
    if key == "model.image_newline":
        return "image_newline"
    if key == "lm_head.weight":
        return "language_model.lm_head.weight"
    if re.match(r"^model\.(embed_tokens|layers\.\d+|norm)\.", key):
        return "language_model." + key
    raise ConversionError(f"unexpected tensor {key!r}: not a LLaVA-OneVision (llava_qwen, mlp2x_gelu) checkpoint")


def _weight_files(src: Path) -> list[Path]:
    index = src / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [src / n for n in names]
    files = sorted(src.glob("*.safetensors"))
    if files:
        return files
    files = sorted(src.glob("pytorch_model*.bin"))
    if files:
        return files
    raise ConversionError(f"no weights (*.safetensors or pytorch_model*.bin) in {src}")


def _iter_tensors(path: Path) -> Iterator[tuple[str, object]]:
    """Tensors of one shard, one at a time (safetensors memory-maps; .bin loads with mmap)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():
                yield key, f.get_tensor(key)
    else:
        import torch

        state = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
        for key in list(state):
            yield key, state.pop(key)


def _shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Tensor shapes without loading data (safetensors headers)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                for key in f.keys():
                    shapes[key] = tuple(f.get_slice(key).get_shape())
        else:
            for key, t in _iter_tensors(path):
                shapes[key] = tuple(t.shape)
    return shapes


def _grid_pinpoints(value, patch: int) -> list[list[int]]:
    """LLaVA-NeXT accepts a list of [h, w] or a string range like "(1x1),...,(6x6)" in tile units."""
    if isinstance(value, str):
        pairs = [tuple(int(x) for x in m) for m in re.findall(r"\((\d+)x(\d+)\)", value)]
        if len(pairs) < 1:
            raise ConversionError(f"cannot read image_grid_pinpoints {value!r}")
        (a0, b0), (a1, b1) = pairs[0], pairs[-1]
        return [[i * patch, j * patch] for i in range(a0, a1 + 1) for j in range(b0, b1 + 1)]
    return [list(map(int, p)) for p in value]


def vision_config_from(src_config: dict, shapes: dict, vision_heads: int | None = None) -> dict:
    """The SigLIP config: sizes read from the tensors, heads from the known tower (or given)."""
    p = _VISION_PREFIX
    try:
        hidden, _, patch, _ = shapes[p + "embeddings.patch_embedding.weight"]
        positions = shapes[p + "embeddings.position_embedding.weight"][0]
        intermediate = shapes[p + "encoder.layers.0.mlp.fc1.weight"][0]
    except KeyError as exc:
        raise ConversionError(f"vision tower tensor missing: {exc}") from None
    layers = 1 + max(int(m.group(1)) for k in shapes if (m := re.match(re.escape(p) + r"encoder\.layers\.(\d+)\.", k)))
    side = int(round(math.sqrt(positions)))
    given = dict(src_config.get("vision_config") or {})
    known = KNOWN_VISION_TOWERS.get(src_config.get("mm_vision_tower", ""), {})
    cfg = {
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "patch_size": patch,
        "image_size": _image_size(side, patch, given, known),
        "vision_use_head": False,
    }
    heads = vision_heads or given.get("num_attention_heads") or known.get("num_attention_heads")
    if not heads:
        raise ConversionError(
            f"unknown vision tower {src_config.get('mm_vision_tower')!r}: its attention head count cannot be "
            "read from the weights; pass --vision-heads"
        )
    cfg["num_attention_heads"] = int(heads)
    cfg["layer_norm_eps"] = given.get("layer_norm_eps", known.get("layer_norm_eps", 1e-6))
    return cfg


def _image_size(side: int, patch: int, given: dict, known: dict) -> int:
    """Pixels per tile. The tensors only give the patch grid (27 x 27 at patch 14, i.e. 378 px), but the
    tower is fed 384 px (the last 6 rows and columns fall outside the grid): the processor must resize to
    384, as the reference does, or every image differs. So: the known or given size, else 384 when that
    is the scorer's tile for this grid, else grid x patch."""
    size = known.get("image_size") or given.get("image_size")
    if size:
        return int(size)
    return IMAGE_SIZE if IMAGE_SIZE // patch == side else side * patch


def _write_portable_processor_files(dst: Path) -> None:
    """Also write the classic layout (preprocessor_config.json + flat processor_config.json), which the
    llava-hf hub checkpoints use and every transformers version vLLM may pin reads; 5.x reads it too."""
    path = dst / "processor_config.json"
    if not path.is_file():
        return
    cfg = json.loads(path.read_text())
    image = cfg.pop("image_processor", None)
    video = cfg.pop("video_processor", None)
    if image is not None:
        image.setdefault("processor_class", cfg.get("processor_class", "LlavaOnevisionProcessor"))
        (dst / "preprocessor_config.json").write_text(json.dumps(image, indent=2) + "\n")
    if video is not None:
        (dst / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2) + "\n")
    path.write_text(json.dumps(cfg, indent=2) + "\n")


@dataclass
class ConversionReport:
    tensors: int = 0
    dropped: list[str] = field(default_factory=list)
    shards: int = 0
    image_token_index: int = -1
    added_tokens: list[str] = field(default_factory=list)


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    *,
    dtype: str | None = None,
    vision_heads: int | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ConversionReport:
    """Convert SRC (llava_qwen layout) into DST (HF LLaVA-OneVision layout). Returns what was done."""
    import torch
    from transformers import AutoTokenizer

    from mmssr_core.scoring.chat_template import add_image_tokens

    src, dst = Path(src), Path(dst)
    say = progress or (lambda msg: None)
    src_config = _source_config(src)
    _empty_destination(dst, force)
    files = _weight_files(src)
    shapes = _shapes(files)
    vision = vision_config_from(src_config, shapes, vision_heads)
    text_fields = _text_fields(src_config, shapes)

    tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True)
    before = set(tokenizer.get_vocab())
    add_image_tokens(tokenizer)
    added = [t for t in ("<image>", "<video>") if t not in before]
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    video_id = tokenizer.convert_tokens_to_ids("<video>")
    if max(image_id, video_id) >= text_fields["vocab_size"]:
        raise ConversionError(
            f"<image>/<video> ids {image_id}/{video_id} exceed the embedding size {text_fields['vocab_size']}"
        )
    config, pinpoints, aspect = _llava_config(src_config, text_fields, vision, image_id, video_id, dtype)

    report = ConversionReport(shards=len(files), image_token_index=image_id, added_tokens=added)
    _write_weights(files, dst, getattr(torch, dtype) if dtype else None, report, say)
    config.save_pretrained(dst)
    gen = src / "generation_config.json"
    if gen.is_file():
        shutil.copy(gen, dst / "generation_config.json")
    _save_processor(dst, tokenizer, vision, pinpoints, aspect)
    _write_portable_processor_files(dst)
    provenance = {"converted_from": str(src.resolve()), "dropped_tensors": report.dropped, "added_tokens": added}
    (dst / "mmssr_conversion.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return report


def _source_config(src: Path) -> dict:
    """SRC's config.json, checked to be the llava_qwen layout this converter knows."""
    config_path = src / "config.json"
    if not config_path.is_file():
        raise ConversionError(f"{src} has no config.json")
    src_config = json.loads(config_path.read_text())
    archs = src_config.get("architectures") or []
    if "LlavaQwenForCausalLM" not in archs:
        raise ConversionError(f"{src}: architectures {archs} is not the llava_qwen layout (LlavaQwenForCausalLM)")
    if src_config.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise ConversionError(
            f"mm_projector_type {src_config['mm_projector_type']!r} is not supported (mlp2x_gelu only)"
        )
    return src_config


def _empty_destination(dst: Path, force: bool) -> None:
    if dst.exists() and any(dst.iterdir()):
        if not force:
            raise ConversionError(f"{dst} exists and is not empty (use --force to overwrite)")
        shutil.rmtree(dst)
    dst.mkdir(parents=True, exist_ok=True)


def _text_fields(src_config: dict, shapes: dict) -> dict:
    """The Qwen2 text config: SRC's fields, the vocabulary size from the embedding, tied when no lm_head."""
    text_fields = {k: src_config[k] for k in QWEN2_FIELDS if k in src_config}
    text_fields.setdefault("vocab_size", shapes["model.embed_tokens.weight"][0])
    has_lm_head = "lm_head.weight" in shapes
    text_fields["tie_word_embeddings"] = bool(src_config.get("tie_word_embeddings", False)) or not has_lm_head
    return text_fields


def _llava_config(src_config: dict, text_fields: dict, vision: dict, image_id: int, video_id: int, dtype: str | None):
    """(LlavaOnevisionConfig, grid pinpoints, vision aspect ratio) of the converted checkpoint."""
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    patch_px = vision["image_size"]
    pinpoints = _grid_pinpoints(src_config.get("image_grid_pinpoints") or [[patch_px, patch_px]], patch_px)
    aspect = src_config.get("image_aspect_ratio") or "anyres_max_9"
    if not str(aspect).startswith("anyres_max_"):
        aspect = "anyres_max_9"
    config = LlavaOnevisionConfig(
        text_config=Qwen2Config(**text_fields).to_dict(),
        vision_config=SiglipVisionConfig(**vision).to_dict(),
        image_token_index=image_id,
        video_token_index=video_id,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=pinpoints,
        vision_aspect_ratio=aspect,
        tie_word_embeddings=text_fields["tie_word_embeddings"],
    )
    config.architectures = ["LlavaOnevisionForConditionalGeneration"]
    if dtype:
        config.dtype = dtype
    elif src_config.get("torch_dtype") or src_config.get("dtype"):
        config.dtype = src_config.get("torch_dtype") or src_config.get("dtype")
    return config, pinpoints, aspect


def _write_weights(
    files: list[Path], dst: Path, target_dtype, report: ConversionReport, say: Callable[[str], None]
) -> None:
    """Every tensor under its HF name (one output shard per input shard), the index when sharded."""
    import torch
    from safetensors.torch import save_file

    weight_map: dict[str, str] = {}
    total_bytes = 0
    for n, path in enumerate(files, 1):
        name = "model.safetensors" if len(files) == 1 else f"model-{n:05d}-of-{len(files):05d}.safetensors"
        out: dict[str, torch.Tensor] = {}
        for key, tensor in _iter_tensors(path):
            new = map_key(key)
            if new is None:
                report.dropped.append(key)
                continue
            if target_dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(target_dtype)
            out[new] = tensor.contiguous()
        save_file(out, str(dst / name), metadata={"format": "pt"})
        for key, t in out.items():
            weight_map[key] = name
            total_bytes += t.numel() * t.element_size()
        report.tensors += len(out)
        say(f"shard {n}/{len(files)}: {len(out)} tensors -> {name}")
        del out
    if len(files) > 1:
        index = {"metadata": {"total_size": total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    missing = {
        "language_model.model.embed_tokens.weight",
        "multi_modal_projector.linear_1.weight",
        "image_newline",
    } - set(weight_map)
    if missing:
        raise ConversionError(f"converted checkpoint lacks {sorted(missing)}")


def _save_processor(dst: Path, tokenizer, vision: dict, pinpoints, aspect: str) -> None:
    from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    from mmssr_core.scoring.chat_template import CHAT_TEMPLATE

    patch_px = vision["image_size"]
    image_processor = LlavaOnevisionImageProcessor(
        size={"height": patch_px, "width": patch_px},
        image_grid_pinpoints=pinpoints,
        image_mean=[0.5, 0.5, 0.5],  # SigLIP normalisation, as LLaVA-NeXT's SigLipImageProcessor
        image_std=[0.5, 0.5, 0.5],
    )
    processor = LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(),
        num_image_tokens=(patch_px // vision["patch_size"]) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio=aspect,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(dst)
