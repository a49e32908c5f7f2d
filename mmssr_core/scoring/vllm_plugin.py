"""vLLM plugin: the reference inputs (single-tile image features, per-piece token stream) as a model variant.

vLLM loads the entry point `vllm.general_plugins: mmssr = mmssr_core.scoring.vllm_plugin:register` in every
process it starts (the offline engine's workers and the OpenAI server alike), so once mmssr is installed
beside vLLM both can serve the released scorer exactly as the reference fed it:

    LLM(model=..., hf_overrides={"architectures": [SINGLE_TILE_ARCHITECTURE]},
        tokenizer_mode=REFERENCE_TOKENIZER_MODE, chat_template=CHAT_TEMPLATE)

    python -m vllm.entrypoints.openai.api_server --model ... \\
        --hf-overrides '{"architectures": ["MmssrSingleTileLlavaOnevision"]}' \\
        --tokenizer-mode mmssr_reference --chat-template <mmssr's chat template file>

(`mmssr serve-vllm` prints and runs that command.) This module imports nothing heavy: registration
names classes by their import path; vLLM imports them when a model asks for them.
"""

from __future__ import annotations

SINGLE_TILE_ARCHITECTURE = "MmssrSingleTileLlavaOnevision"
REFERENCE_TOKENIZER_MODE = "mmssr_reference"


def register() -> None:
    """Register the model variant, the tokenizer mode and its renderer with vLLM (idempotent)."""
    from vllm import ModelRegistry

    if SINGLE_TILE_ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(
            SINGLE_TILE_ARCHITECTURE, "mmssr_core.scoring.vllm_single_tile:SingleTileLlavaOnevision"
        )
    from vllm.renderers.registry import RENDERER_REGISTRY
    from vllm.tokenizers.registry import TokenizerRegistry

    if REFERENCE_TOKENIZER_MODE not in TokenizerRegistry.tokenizers:
        TokenizerRegistry.register(REFERENCE_TOKENIZER_MODE, "vllm.tokenizers.hf", "CachedHfTokenizer")
    if REFERENCE_TOKENIZER_MODE not in RENDERER_REGISTRY.renderers:
        RENDERER_REGISTRY.register(
            REFERENCE_TOKENIZER_MODE, "mmssr_core.scoring.vllm_reference_renderer", "ReferenceStreamRenderer"
        )


def engine_options(profile) -> dict:
    """Engine keyword arguments that make vLLM feed a profile's inputs (empty for `native`)."""
    from mmssr_core.scoring.chat_template import CHAT_TEMPLATE  # noqa: F401 - the server flag names it

    options: dict = {}
    if profile.single_tile:
        options["hf_overrides"] = {"architectures": [SINGLE_TILE_ARCHITECTURE]}
    if profile.per_piece:
        options["tokenizer_mode"] = REFERENCE_TOKENIZER_MODE
    return options
