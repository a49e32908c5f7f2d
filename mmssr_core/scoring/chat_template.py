"""The chat template the released scorer was trained with, and the LLaVA special tokens.

Qwen2's ChatML with the default system prompt; content parts are rendered in order and an image part
becomes `<image>` plus a newline, which is exactly where the reference inference puts its image and its
extra newline token. Checkpoints written by `mmssr convert-checkpoint` carry it, and a vLLM server that
serves the released scorer for the `reference` profile is started with it (`--chat-template`), so a chat
request renders the same text the reference tokenizes.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_TOKENS = ("<image>", "<video>")  # appended after the base vocabulary, as LLaVA-OneVision does

# Qwen2's chat template (ChatML with the default system prompt), as the released models use it. One file, so
# a vLLM server can be pointed at it (`--chat-template`) and Python code reads the same text.
CHAT_TEMPLATE_FILE = Path(__file__).with_name("qwen2_chatml.jinja")
CHAT_TEMPLATE = CHAT_TEMPLATE_FILE.read_text()


def add_image_tokens(tokenizer) -> None:
    """Add `<image>` and `<video>` as special tokens if missing (what the HF conversion does)."""
    from tokenizers import AddedToken

    missing = [t for t in IMAGE_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
