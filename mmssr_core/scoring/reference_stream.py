"""The reference inference's token stream, rebuilt from the rendered ChatML text.

The reference tokenizes every piece of the chat on its own: `system`, the newline, the system message, each
role word, and each text segment around `<image>`; after the image it inserts one newline token. Byte-level
BPE merges therefore never cross those boundaries (a whole-string tokenization of the same text merges, for
example, the two newlines after the image into one token). The released scorer's numbers were measured on
this stream, so the `reference` and `clean` profiles feed exactly it.

The rendered text this module reads is plain ChatML in which every `<image>` is followed by the extra
newline the reference inserts (`render_reference_chat` writes it that way; a chat template that renders an
image part as `<image>\\n` produces it too). The rule, per text piece between special tokens:
- after `<|im_start|>`: the role word, the newline, then the message body, each tokenized alone;
- after `<image>`: the newline on its own, then the rest of the piece;
- anywhere else: the piece alone.

Pure Python over any `encode(text) -> ids` callable, so the transformers backend, the vLLM renderer
plugin and the golden test share one implementation.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

from mmssr_core.prompts import IMAGE_TOKEN, SYSTEM_PROMPT, chatml

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
_SPECIALS = re.compile("(" + "|".join(re.escape(t) for t in (IM_START, IM_END, IMAGE_TOKEN)) + ")")


def render_reference_chat(user_text: str, system: str = SYSTEM_PROMPT, *, end: bool = True) -> str:
    """ChatML for one user turn with the reference's extra newline after each `<image>`.

    `end=False` stops inside the user turn (the shared prefix of several queries).
    """
    user = user_text.replace(IMAGE_TOKEN, IMAGE_TOKEN + "\n")
    text = chatml(user, system)
    if end:
        return text
    return text[: text.rindex(IM_END)]


def reference_token_ids(
    text: str,
    encode: Callable[[str], Sequence[int]],
    *,
    im_start: int,
    im_end: int,
    image: int,
) -> list[int]:
    """Token ids of rendered ChatML `text` as the reference's `preprocess_qwen` builds them.

    Each `<image>` yields one `image` id (callers expand it to the image's feature count).
    """
    ids: list[int] = []
    after = None  # the special token this piece follows
    for part in _SPECIALS.split(text):
        if part == IM_START:
            ids.append(im_start)
        elif part == IM_END:
            ids.append(im_end)
        elif part == IMAGE_TOKEN:
            ids.append(image)
        elif part:
            ids.extend(_piece_ids(part, after, encode))
            after = None
            continue
        else:
            continue
        after = part
    return ids


def _piece_ids(part: str, after: str | None, encode: Callable[[str], Sequence[int]]) -> list[int]:
    if after == IM_START:  # "role\nbody": role, newline and body each alone
        role, newline, body = part.partition("\n")
        out = list(encode(role))
        if newline:
            out += encode("\n")
        if body:
            out += encode(body)
        return out
    if after == IMAGE_TOKEN and part.startswith("\n"):  # the extra newline token, then the rest
        return list(encode("\n")) + (list(encode(part[1:])) if len(part) > 1 else [])
    return list(encode(part))


def expand_images(ids: Sequence[int], image: int, features: int) -> list[int]:
    """Replace each single image id by `features` copies (the placeholder run the model fills)."""
    out: list[int] = []
    for i in ids:
        if i == image:
            out.extend([image] * features)
        else:
            out.append(i)
    return out


def collapse_image_runs(ids: Sequence[int], image: int, placeholder: int | None = None) -> tuple[list[int], list[int]]:
    """The inverse of `expand_images`: each run of image ids -> one id (`placeholder`, default the image id),
    and the run lengths (the feature count each image was given)."""
    out: list[int] = []
    runs: list[int] = []
    in_run = False
    for i in ids:
        if i == image and in_run:
            runs[-1] += 1
        elif i == image:
            out.append(image if placeholder is None else placeholder)
            runs.append(1)
        else:
            out.append(i)
        in_run = i == image
    return out, runs


def single_tile_features(image_size: int, patch_size: int) -> int:
    """Features of one tile in the reference: the patch grid plus one image_newline (27*27 + 1 = 730)."""
    side = image_size // patch_size
    return side * side + 1
