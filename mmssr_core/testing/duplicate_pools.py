"""Hand-made duplicates on real images: re-encoded, resized, reworded in case and spacing.

`write_duplicate_sources(root, photo)` writes two source folders (LLaVA JSON + images) whose samples
have known duplicate relations; `EXPECTED_NEAR` and `EXPECTED_EXACT` name the groups a correct
deduplication finds.
"""

from __future__ import annotations

import json
from pathlib import Path

QUESTION = "What is drawn in the figure? Answer with the name of the shape and its colour."
ANSWER = "It is a triangle inscribed in a circle, drawn with thin black lines on a white page."

# (source, id) sets that must form one group each
EXPECTED_NEAR = [
    {("alpha", "orig"), ("alpha", "reencoded"), ("alpha", "resized"), ("alpha", "respaced"), ("beta", "copy")},
    {("alpha", "primes"), ("beta", "primes_caps")},
]
EXPECTED_EXACT = [{("alpha", "orig"), ("beta", "copy")}]
# samples that must stay alone: another image with the same text; another text on the same image
SINGLES = {("alpha", "other_image"), ("alpha", "other_text"), ("beta", "unrelated")}


def _turns(q: str, a: str, n_images: int = 1) -> list[dict]:
    return [{"from": "human", "value": "<image>\n" * n_images + q}, {"from": "gpt", "value": a}]


def write_duplicate_sources(root: Path, photo: Path, other_photo: Path) -> dict[str, Path]:
    """Two sources under `root` (alpha, beta) built from two real pictures; returns {source: folder}."""
    from PIL import Image

    alpha, beta = root / "alpha", root / "beta"
    for d in (alpha / "img", beta / "img"):
        d.mkdir(parents=True, exist_ok=True)
    with Image.open(photo) as im:
        rgb = im.convert("RGB")
        rgb.save(alpha / "img" / "orig.png")
        rgb.save(alpha / "img" / "reencoded.jpg", "JPEG", quality=35)  # other bytes, same picture
        rgb.resize((rgb.width // 2, rgb.height // 2)).save(alpha / "img" / "resized.png")
    (beta / "img" / "copy.png").write_bytes((alpha / "img" / "orig.png").read_bytes())
    with Image.open(other_photo) as im:
        im.convert("RGB").save(alpha / "img" / "other.png")
    respaced_q = "  what IS drawn in the figure?answer with the NAME of the shape and its colour "
    alpha_rows = [
        {"id": "orig", "image": "img/orig.png", "conversations": _turns(QUESTION, ANSWER)},
        {"id": "reencoded", "image": "img/reencoded.jpg", "conversations": _turns(QUESTION, ANSWER)},
        {"id": "resized", "image": "img/resized.png", "conversations": _turns(QUESTION, ANSWER)},
        {"id": "respaced", "image": "img/orig.png", "conversations": _turns(respaced_q, ANSWER.upper())},
        {"id": "other_image", "image": "img/other.png", "conversations": _turns(QUESTION, ANSWER)},
        {
            "id": "other_text",
            "image": "img/orig.png",
            "conversations": _turns("How many lines touch the circle?", "Three lines touch the circle."),
        },
        {
            "id": "primes",
            "conversations": [
                {"from": "human", "value": "Name the first three prime numbers."},
                {"from": "gpt", "value": "The first three primes are 2, 3 and 5."},
            ],
        },
    ]
    beta_rows = [
        {"id": "copy", "image": "img/copy.png", "conversations": _turns(QUESTION, ANSWER)},
        {
            "id": "primes_caps",
            "conversations": [
                {"from": "human", "value": "NAME the first three   prime numbers"},
                {"from": "gpt", "value": "the first three primes are 2, 3, and 5!"},
            ],
        },
        {
            "id": "unrelated",
            "conversations": [
                {"from": "human", "value": "What is the capital of France?"},
                {"from": "gpt", "value": "Paris is the capital of France."},
            ],
        },
    ]
    (alpha / "pool.llava.json").write_text(json.dumps(alpha_rows))
    (beta / "pool.llava.json").write_text(json.dumps(beta_rows))
    return {"alpha": alpha, "beta": beta}
