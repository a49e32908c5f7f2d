"""Does an OpenAI-compatible server feed the model the reference inputs? Ask it, once, before scoring.

The `reference` and `clean` profiles need the server to run mmssr's vLLM plugin (single-tile image
features, per-piece token stream) with mmssr's chat template: a server started otherwise scores other
inputs. The client cannot see the server's flags, but a vLLM server can show what it fed: a chat request
with `return_token_ids` returns the prompt's token ids, and `/tokenize` tokenizes any text alone. So:
- the probe's image run must have the same length for a square and a tall image (single tile: grid + 1;
  AnyRes grows with the image);
- the probe's ids, the image run collapsed, must equal the reference stream built here from the server's
  own per-piece tokenization (`reference_stream.reference_token_ids` over `/tokenize`).
A server that returns no token ids (not vLLM, or an older one) cannot be checked: the scores are recorded
as `inputs: unverified` in the scorer identity. A server that fails the check stops the run.
"""

from __future__ import annotations

import base64
import io
from typing import Callable

from mmssr_core.prompts import IMAGE_TOKEN, SYSTEM_PROMPT
from mmssr_core.scoring.base import BackendUnavailable
from mmssr_core.scoring.reference_stream import (
    IM_END,
    IM_START,
    collapse_image_runs,
    reference_token_ids,
    render_reference_chat,
)

PROBE_BEFORE, PROBE_AFTER = "Question: ", "\nWhat is shown? Answer: x\nStyles: "
SERVE_HINT = "start the server with `mmssr serve-vllm --model <checkpoint>` (or score with --profile native)"


def _png(width: int, height: int) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 200)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def probe_messages(image_url: str) -> list[dict]:
    image = {"type": "image_url", "image_url": {"url": image_url}}
    user = [{"type": "text", "text": PROBE_BEFORE}, image, {"type": "text", "text": PROBE_AFTER}]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def verify_reference_inputs(
    chat: Callable[[dict], object], tokenize: Callable[[str], list[int] | None], model: str
) -> str:
    """'verified' or 'unverified'; raises BackendUnavailable when the server feeds other inputs.

    chat(body) -> response dict (or anything else on failure); tokenize(text) -> ids or None.
    """
    prompts = []
    for width, height in ((384, 384), (384, 768)):
        body = {
            "model": model,
            "messages": probe_messages(_png(width, height)),
            "max_tokens": 1,
            "temperature": 0.0,
            "return_token_ids": True,
        }
        res = chat(body)
        ids = res.get("prompt_token_ids") if isinstance(res, dict) else None
        if not isinstance(ids, list):
            return "unverified"
        prompts.append([int(i) for i in ids])
    specials = {name: tokenize(name) for name in (IM_START, IM_END, IMAGE_TOKEN)}
    if any(not v or len(v) != 1 for v in specials.values()):
        return "unverified"
    image_id = specials[IMAGE_TOKEN][0]
    (square, square_runs), (_, tall_runs) = (collapse_image_runs(p, image_id) for p in prompts)
    if len(square_runs) != 1 or square_runs != tall_runs:
        raise BackendUnavailable(
            f"the server feeds AnyRes image features ({square_runs} vs {tall_runs} tokens for a square and a "
            f"tall image), not the reference's single tile: {SERVE_HINT}"
        )
    pieces: dict[str, list[int]] = {}

    def encode(text: str) -> list[int]:
        if text not in pieces:
            pieces[text] = tokenize(text) or []
        return pieces[text]

    expected = reference_token_ids(
        render_reference_chat(PROBE_BEFORE + IMAGE_TOKEN + PROBE_AFTER),
        encode,
        im_start=specials[IM_START][0],
        im_end=specials[IM_END][0],
        image=image_id,
    )
    if square != expected:
        at = next((k for k, (a, b) in enumerate(zip(square, expected)) if a != b), min(len(square), len(expected)))
        raise BackendUnavailable(
            f"the server's token stream differs from the reference's at position {at} "
            f"({square[at : at + 4]} vs {expected[at : at + 4]}): {SERVE_HINT}"
        )
    return "verified"
