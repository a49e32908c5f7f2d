"""The chat template the released scorer was trained with, and the LLaVA special tokens.

Qwen2's ChatML with the default system prompt; content parts are rendered in order and an image part
becomes `<image>` plus a newline, which is exactly where the reference inference puts its image and its
extra newline token. Checkpoints written by `mmssr convert-checkpoint` carry it, and a vLLM server that
serves the released scorer for the `reference` profile is started with it (`--chat-template`), so a chat
request renders the same text the reference tokenizes.
"""

from __future__ import annotations

from mmssr_core.prompts import SYSTEM_PROMPT

IMAGE_TOKENS = ("<image>", "<video>")  # appended after the base vocabulary, as LLaVA-OneVision does

# Qwen2's chat template (ChatML with the default system prompt), as the released models use it.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\n" + SYSTEM_PROMPT + "<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<image>\\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def add_image_tokens(tokenizer) -> None:
    """Add `<image>` and `<video>` as special tokens if missing (what the HF conversion does)."""
    from tokenizers import AddedToken

    missing = [t for t in IMAGE_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
