"""Tiny random LLaVA-OneVision checkpoints built from a config, for tests and the CPU benchmark.

Nothing is downloaded: the tokenizer is a byte-level BPE trained here on the prompt texts (every digit a
single token, the ChatML and image special tokens added), the image processor and processor are the real
transformers classes, the weights are random. The result is saved with `save_pretrained`, so backends load
it through exactly the path a real checkpoint takes (`from_pretrained(dir)`).
"""

from __future__ import annotations

from pathlib import Path

from mmssr_core.prompts import DIGITS, IMAGE_SIZE, SYSTEM_PROMPT, scorer_query, styler_query
from mmssr_core.scoring.chat_template import CHAT_TEMPLATE, add_image_tokens
from mmssr_core.taxonomy import DEFAULT_CAPABILITIES, DEFAULT_STYLES

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def _corpus() -> list[str]:
    """Text the tiny BPE learns merges from: the prompts themselves plus some generic VQA phrasing."""
    texts = [SYSTEM_PROMPT, styler_query(DEFAULT_STYLES), "Question: Answer: Hint: Styles: "]
    texts += [scorer_query(phrase) for _, phrase in DEFAULT_CAPABILITIES]
    texts += list(DEFAULT_STYLES)
    texts += [
        "What is shown in this image? The picture shows a table with numbers and a chart.",
        "How many objects are there? Answer with the option's letter from the given choices directly.",
        "Describe the scene in detail. Which one is larger, the left or the right? yes no",
    ]
    return texts * 4


def build_tokenizer(vocab_size: int = 600, *, image_tokens: bool = True):
    """A chat-ready fast tokenizer: byte-level BPE, digits split one per token, ChatML specials.

    Like Qwen2 + LLaVA-OneVision, `<image>`/`<video>` are added after the trained vocabulary; with
    `image_tokens=False` they are left out, as in the original LLaVA-NeXT checkpoints (deterministic
    training makes both variants share every other id).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=32768,
    )
    if image_tokens:
        add_image_tokens(fast)
    for d in DIGITS:
        ids = fast.encode(d, add_special_tokens=False)
        assert len(ids) == 1, f"digit {d} is not a single token: {ids}"
    return fast


def tiny_llava_onevision_config(
    tokenizer,
    *,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    vision_layers: int = 1,
    vision_hidden: int = 32,
    patch_size: int = 48,
    image_size: int = IMAGE_SIZE,
):
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    vocab = len(tokenizer)
    padded_vocab = (vocab + 63) // 64 * 64  # like Qwen: room beyond the tokenizer's ids
    text = Qwen2Config(
        vocab_size=padded_vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    vision = SiglipVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=vision_hidden * 2,
        num_hidden_layers=vision_layers,
        num_attention_heads=max(1, vision_hidden // 16),
        image_size=image_size,
        patch_size=patch_size,
        vision_use_head=False,
    )
    return LlavaOnevisionConfig(
        text_config=text.to_dict(),
        vision_config=vision.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=[[image_size, image_size]],
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=False,
    )


def build_processor(tokenizer, config):
    from transformers import (
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    size = config.vision_config.image_size
    image_processor = LlavaOnevisionImageProcessor(
        size={"height": size, "width": size},
        image_grid_pinpoints=config.image_grid_pinpoints,
        image_mean=[0.5, 0.5, 0.5],  # SigLIP's normalisation
        image_std=[0.5, 0.5, 0.5],
    )
    num_image_tokens = (size // config.vision_config.patch_size) ** 2
    return LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(),
        num_image_tokens=num_image_tokens,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        vision_aspect_ratio=config.vision_aspect_ratio,
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_llava_onevision(
    directory: str | Path,
    *,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    vision_layers: int = 1,
    vision_hidden: int = 32,
    patch_size: int = 48,
    digits_dominate: bool = False,
    seed: int = 0,
    qwen2_vocab: bool = False,
) -> Path:
    """Write a random LLaVA-OneVision checkpoint (model, tokenizer, processor) to `directory`.

    `digits_dominate=True` makes every non-digit row of the lm_head zero and the digit rows +-v1, +-v2, +-v3:
    one of each pair has a positive logit, so the unconstrained greedy answer is always a digit (as with
    the trained scorer) while which digit still depends on the input.
    """
    import torch
    from transformers import LlavaOnevisionForConditionalGeneration

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if qwen2_vocab:  # the released scorer's real vocabulary (151k tokens): exact token streams
        from mmssr_core.testing.qwen2_tokenizer import build_qwen2_tokenizer

        tokenizer = build_qwen2_tokenizer(chat_template=CHAT_TEMPLATE)
    else:
        tokenizer = build_tokenizer()
    config = tiny_llava_onevision_config(
        tokenizer,
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        vision_layers=vision_layers,
        vision_hidden=vision_hidden,
        patch_size=patch_size,
    )
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    with torch.no_grad():
        # Random init uses std 0.02: logits would be nearly flat. Widen the head so argmaxes are decisive.
        model.lm_head.weight.mul_(20.0)
        if digits_dominate:
            ids = [tokenizer.convert_tokens_to_ids(d) for d in DIGITS]
            rows = model.lm_head.weight.clone()
            model.lm_head.weight.zero_()
            for pair in range(len(ids) // 2):
                v = rows[ids[2 * pair]]
                model.lm_head.weight[ids[2 * pair]] = v
                model.lm_head.weight[ids[2 * pair + 1]] = -v
    save_llava_hf_layout(model, directory)
    processor = build_processor(tokenizer, config)
    processor.save_pretrained(directory)
    return directory


def save_llava_hf_layout(model, directory: str | Path) -> None:
    """`save_pretrained`, then name the SigLIP weights as llava-hf checkpoints do (`vision_tower.vision_model.*`),
    so the same tiny checkpoint loads in transformers and in vLLM (see `mmssr_core.checkpoint_layout`)."""
    from mmssr_core.checkpoint_layout import relayout

    model.save_pretrained(directory)
    relayout(directory)


def _to_llava_qwen_key(key: str) -> str:
    """In-memory HF LLaVA-OneVision parameter name -> the original LLaVA-NeXT llava_qwen name."""
    rules = (
        (r"^model\.language_model\.", "model."),
        (r"^model\.vision_tower\.(vision_model\.)?", "model.vision_tower.vision_tower.vision_model."),
        (r"^model\.multi_modal_projector\.linear_1\.", "model.mm_projector.0."),
        (r"^model\.multi_modal_projector\.linear_2\.", "model.mm_projector.2."),
        (r"^model\.image_newline$", "model.image_newline"),
        (r"^lm_head\.", "lm_head."),
    )
    import re

    for pattern, repl in rules:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key, count=1)
    raise ValueError(f"no llava_qwen name for {key!r}")


def write_llava_qwen_checkpoint(
    hf_dir: str | Path, out_dir: str | Path, *, shards: int = 2, qwen2_vocab: bool = False
) -> Path:
    """Fabricate a checkpoint in the released mmSSR (LLaVA-NeXT "llava_qwen") layout from an HF one.

    Same weights under the original names, split over `shards` safetensors files with an index, a
    `LlavaQwenForCausalLM` config with the `mm_*` fields, and the base tokenizer without `<image>`
    (LLaVA-NeXT inserts an image index in code). Used to test `mmssr convert-checkpoint` end to end.
    """
    import json

    from safetensors.torch import save_file
    from transformers import LlavaOnevisionForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(hf_dir, local_files_only=True)
    state = {_to_llava_qwen_key(k): v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    keys = sorted(state)
    per = -(-len(keys) // shards)
    weight_map = {}
    for n in range(shards):
        part = keys[n * per : (n + 1) * per]
        name = f"model-{n + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: state[k] for k in part}, str(out / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))

    cfg = model.config
    text = cfg.text_config
    vision = cfg.vision_config
    config = {
        "architectures": ["LlavaQwenForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": text.vocab_size,
        "hidden_size": text.hidden_size,
        "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads,
        "hidden_act": text.hidden_act,
        "max_position_embeddings": text.max_position_embeddings,
        "rms_norm_eps": text.rms_norm_eps,
        "rope_theta": getattr(text, "rope_theta", None) or (text.rope_parameters or {}).get("rope_theta", 10000.0),
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "bos_token_id": text.bos_token_id,
        "eos_token_id": text.eos_token_id,
        "torch_dtype": "float32",
        "mm_vision_tower": "tiny-random-siglip",  # not a known tower: heads come from vision_config
        "vision_config": {"num_attention_heads": vision.num_attention_heads, "layer_norm_eps": vision.layer_norm_eps},
        "mm_hidden_size": vision.hidden_size,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_patch_merge_type": "spatial_unpad",
        "mm_newline_position": "grid",
        "image_aspect_ratio": cfg.vision_aspect_ratio,
        "image_grid_pinpoints": cfg.image_grid_pinpoints,
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "use_mm_proj": True,
        "tokenizer_model_max_length": 32768,
        "tokenizer_padding_side": "right",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if qwen2_vocab:
        from mmssr_core.testing.qwen2_tokenizer import build_qwen2_tokenizer

        build_qwen2_tokenizer(llava_tokens=False).save_pretrained(out)
    else:
        build_tokenizer(image_tokens=False).save_pretrained(out)
    return out
