"""One ingested sample as a training record: LLaVA or ShareGPT (LLaMA-Factory).

LLaVA: `image` is a string for one image (what LLaVA-1.5 opens) and a list for several (what LLaVA-NeXT
also accepts); text-only samples have no `image` key. ShareGPT: `images` is always a list, so a typed
reader (Arrow, through `datasets`) sees one type in every row.
"""

from __future__ import annotations

PLACEHOLDER = "<image>"
_ROLES = {"human": "user", "gpt": "assistant"}


def with_placeholders(conv: list[dict], n_images: int) -> list[dict]:
    """Ingestion guarantees one <image> per image; keep that true for data that bypassed it."""
    if n_images and not any(PLACEHOLDER in (t.get("value") or "") for t in conv):
        conv = [dict(t) for t in conv]
        conv[0]["value"] = (PLACEHOLDER + "\n") * n_images + conv[0]["value"]
    return conv


def to_llava(row: dict, images: list[str]) -> dict:
    rec: dict = {"id": row["id"]}
    if images:
        rec["image"] = images[0] if len(images) == 1 else images
    turns = with_placeholders(row["conversations"], len(images))
    rec["conversations"] = [{"from": t["from"], "value": t["value"]} for t in turns]
    if row.get("system"):
        rec["system"] = row["system"]  # not read by LLaVA's trainers; kept so nothing is lost
    return rec


def to_sharegpt(row: dict, images: list[str]) -> dict:
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    for t in with_placeholders(row["conversations"], len(images)):
        messages.append({"role": _ROLES.get(t["from"], t["from"]), "content": t["value"]})
    return {"id": row["id"], "messages": messages, "images": images}


CONVERTERS = {"llava": to_llava, "sharegpt": to_sharegpt}
FORMATS = tuple(CONVERTERS)
