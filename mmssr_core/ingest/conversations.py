"""Turn one input record (LLaVA, ShareGPT / LLaMA-Factory, OpenAI content parts, Parquet row) into the
canonical sample (docs/ingestion.md), and check its conversation.

Canonical form: turns `{"from": "human"|"gpt", "value": str}` alternating from a human turn, an optional
leading system prompt kept apart, one `<image>` placeholder per image in the text, images in order.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from .errors import Rejected

PLACEHOLDER = "<image>"
DEFAULT_MAX_TURN_CHARS = 1_000_000
MAX_ID_CHARS = 1024
MAX_METADATA_BYTES = 1 << 20  # the extra fields of one record, as JSON
MAX_METADATA_DEPTH = 64
# Near misses of the placeholder ("<image >", "<IMAGE>", "< image/>"): a trainer would read them as text.
_PLACEHOLDER_VARIANT = re.compile(r"<\s*image\s*/?\s*>", re.I)
FLAVOURS = ("llava", "sharegpt", "openai")

ROLES = {
    "human": "human",
    "user": "human",
    "gpt": "gpt",
    "assistant": "gpt",
    "system": "system",
}
# Fields the canonical record represents itself; everything else goes to `metadata`.
KNOWN_FIELDS = frozenset({"id", "image", "images", "conversations", "messages", "system"})

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+(=[^;,]*)?)*),", re.I)


@dataclass
class ImageRef:
    """An image as the input gives it: a path/URI string, or embedded bytes (Parquet, data: URIs)."""

    path: str | None = None
    data: bytes | None = None
    name: str | None = None  # the embedded image's original name, if any


@dataclass
class Sample:
    raw_id: str | None
    system: str | None
    conversations: list[dict]
    images: list[ImageRef]
    flavour: str
    metadata: dict = field(default_factory=dict)


def raw_id_of(record: dict, where: str) -> str | None:
    value = record.get("id")
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Rejected("malformed_record", f"{where}: id must be a string or a number, got {type(value).__name__}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Rejected("malformed_record", f"{where}: id is {value!r}, not a finite number")
        if value.is_integer():
            value = int(value)
    if isinstance(value, int) and value.bit_length() > 4 * MAX_ID_CHARS:
        raise Rejected("id_too_long", f"{where}: a numeric id of over {MAX_ID_CHARS:,} digits")
    text = str(value)
    if len(text) > MAX_ID_CHARS:
        raise Rejected(
            "id_too_long", f"{where}: the id has {len(text):,} characters, over the limit of {MAX_ID_CHARS:,}"
        )
    return text


def is_data_url(value: str) -> bool:
    return value[:5].lower() == "data:"


def data_url_bytes(value: str, where: str) -> bytes:
    """The bytes of a `data:` URL (base64 or percent-encoded); an unreadable one is the sample's problem."""
    m = _DATA_URL.match(value)
    if m is None:
        raise Rejected("image_unresolvable", f"{where}: a data: URL image without the ',' that starts its data")
    mime = (m["mime"] or "").lower()
    if mime and not mime.startswith("image/") and mime != "application/octet-stream":
        raise Rejected("image_unresolvable", f"{where}: a data: URL of type {mime!r}, not an image")
    body = value[m.end() :]
    if ";base64" in m["params"].lower():
        text = re.sub(r"\s+", "", unquote_to_bytes(body).decode("ascii", "replace") if "%" in body else body)
        try:
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise Rejected("image_undecodable", f"{where}: a data: URL image is not valid base64") from None
    return unquote_to_bytes(body)


def metadata_json(meta: dict, where: str) -> tuple[str, int]:
    """(strict JSON of the extra fields, how many NaN/Infinity numbers were stored as null).

    JSON has no NaN or Infinity; storing them verbatim would make the column unreadable to strict parsers,
    so they become null (and are counted in the ingest stats). Too deep or too large metadata rejects the
    record: it would cost memory on every read of the pool.
    """
    if not meta:
        return "{}", 0
    _check_depth(meta, where)
    try:
        text = _META_ENCODER.encode(meta)
        non_finite = 0
    except ValueError:  # NaN or Infinity somewhere
        meta, non_finite = _finite(meta)
        text = _META_ENCODER.encode(meta)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from \ud800-style escapes: keep them escaped
        text = _META_ENCODER_ASCII.encode(meta)
    if len(text) > MAX_METADATA_BYTES:
        raise Rejected(
            "metadata_too_large",
            f"{where}: the extra fields take {len(text):,} characters as JSON, "
            f"over the limit of {MAX_METADATA_BYTES:,}",
        )
    return text, non_finite


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return f"<{len(obj)} bytes>"
    return str(obj)


_META_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=_json_default, allow_nan=False)
_META_ENCODER_ASCII = json.JSONEncoder(ensure_ascii=True, sort_keys=True, default=_json_default, allow_nan=False)


def _check_depth(obj: Any, where: str) -> None:
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, (list, tuple)):
            children = value
        else:
            continue
        if depth > MAX_METADATA_DEPTH:
            raise Rejected("record_too_deep", f"{where}: the extra fields nest deeper than {MAX_METADATA_DEPTH} levels")
        stack.extend((c, depth + 1) for c in children)


def _finite(value: Any) -> tuple[Any, int]:
    if isinstance(value, float) and not math.isfinite(value):
        return None, 1
    if isinstance(value, dict):
        out, n = {}, 0
        for k, v in value.items():
            out[k], m = _finite(v)
            n += m
        return out, n
    if isinstance(value, (list, tuple)):
        items = [_finite(v) for v in value]
        return [v for v, _ in items], sum(m for _, m in items)
    return value, 0


def _image_ref(value: Any, where: str) -> ImageRef | None:
    if value is None:
        return None
    if isinstance(value, str):
        if is_data_url(value):
            return ImageRef(data=data_url_bytes(value, where))
        return ImageRef(path=value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ImageRef(data=bytes(value))
    if isinstance(value, dict):
        data = value.get("bytes")
        path = value.get("path") or value.get("url")
        if data:
            return ImageRef(data=bytes(data), name=path if isinstance(path, str) else None)
        if isinstance(path, str):
            return _image_ref(path, where)
        if data is not None:  # b"": an empty embedded image
            return ImageRef(data=b"", name=path if isinstance(path, str) else None)
    raise Rejected("malformed_record", f"{where}: an image entry has an unsupported type {type(value).__name__}")


def _top_level_images(record: dict, where: str) -> list[ImageRef]:
    value = record.get("images")
    if value is None:
        value = record.get("image")
    if value is None:
        return []
    if type(value) is str and not is_data_url(value):  # the common case, fast
        return [ImageRef(path=value)]
    items = value if isinstance(value, (list, tuple)) else [value]
    refs = [_image_ref(v, where) for v in items]
    return [r for r in refs if r is not None]


def _part_text(part: Any, where: str, images: list[ImageRef]) -> str:
    """One OpenAI-style content part: text as is, an image as an `<image>` placeholder in place."""
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        raise Rejected("malformed_record", f"{where}: a content part must be an object, got {type(part).__name__}")
    kind = part.get("type")
    if kind == "text":
        text = part.get("text", part.get("value"))
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise Rejected("malformed_record", f"{where}: a text part's text is {type(text).__name__}, not a string")
        return text
    if kind in ("image_url", "image", "input_image"):
        value = part.get(kind) if kind != "input_image" else part.get("image_url")
        if isinstance(value, dict):
            value = value.get("url", value.get("path", value.get("bytes")))
        if value is None:
            value = part.get("value", part.get("url", part.get("path")))
        ref = _image_ref(value, where)
        if ref is None:
            raise Rejected("image_unresolvable", f"{where}: an image part has no url or path")
        images.append(ref)
        return PLACEHOLDER
    raise Rejected("malformed_record", f"{where}: unsupported content part type {kind!r}")


_UNSET = object()


def normalise(
    record: Any, where: str, fmt: str = "auto", max_turn_chars: int = DEFAULT_MAX_TURN_CHARS, raw_id: Any = _UNSET
) -> Sample:
    """Canonicalise and check one record; raise `Rejected` with the first problem found."""
    if not isinstance(record, dict):
        raise Rejected("malformed_record", f"{where}: a sample must be a JSON object, got {type(record).__name__}")
    if raw_id is _UNSET:
        raw_id = raw_id_of(record, where)
    label = f"{where} (id {raw_id!r})" if raw_id is not None else where
    key, turns = _turns_of(record, fmt, label)
    part_images: list[ImageRef] = []
    canon, system, inline = _canonical_turns(turns, label, part_images)
    flavour = "openai" if inline else ("llava" if key == "conversations" else "sharegpt")
    placeholders = _check_turns(canon, label, max_turn_chars)
    if system is None:
        system = _top_level_system(record, label)
    images = _images(record, label, part_images, canon, placeholders)
    metadata = {k: v for k, v in record.items() if k not in KNOWN_FIELDS}
    return Sample(raw_id, system, canon, images, flavour, metadata)


def _turns_of(record: dict, fmt: str, label: str) -> tuple[str, list | tuple]:
    """(field name, turns) of a record: `conversations` (LLaVA) or `messages` (ShareGPT / OpenAI)."""
    if fmt == "llava":
        key = "conversations"
    elif fmt == "sharegpt":
        key = "messages" if "messages" in record else "conversations"
    else:
        key = "conversations" if record.get("conversations") is not None else "messages"
    turns = record.get(key)
    if turns is None or (isinstance(turns, (list, tuple)) and len(turns) == 0):
        raise Rejected("missing_conversations", f"{label}: no conversation turns ({key!r} missing or empty)")
    if isinstance(turns, str):
        try:
            turns = json.loads(turns)  # some Parquet dumps store the conversation as a JSON string
        except json.JSONDecodeError:
            raise Rejected("malformed_record", f"{label}: {key!r} is a string that is not JSON") from None
    if not isinstance(turns, (list, tuple)):
        raise Rejected("malformed_record", f"{label}: {key!r} must be a list, got {type(turns).__name__}")
    return key, turns


def _canonical_turns(turns, label: str, part_images: list[ImageRef]) -> tuple[list[dict], str | None, bool]:
    """(human/gpt turns, leading system prompt, whether any content came as parts); images found in
    content parts are appended to `part_images`."""
    system: str | None = None
    canon: list[dict] = []
    inline = False
    for n, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise Rejected("malformed_record", f"{label}: turn {n} must be an object, got {type(turn).__name__}")
        role = _role(turn, label, n)
        content = turn.get("value")
        if content is None:
            content = turn.get("content")
        if type(content) is str:
            text = content
        elif isinstance(content, (list, tuple)):
            inline = True
            text = "".join(_part_text(p, f"{label} turn {n}", part_images) for p in content)
        elif content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        else:
            raise Rejected("malformed_record", f"{label}: turn {n} text is {type(content).__name__}, not a string")
        if role == "system":
            if n != 0:
                raise Rejected(
                    "bad_turn_order", f"{label}: a system turn at position {n}; only a leading one is allowed"
                )
            system = text
            continue
        canon.append({"from": role, "value": text})
    if not canon:
        raise Rejected("missing_conversations", f"{label}: only a system prompt, no conversation turns")
    return canon, system, inline


def _role(turn: dict, label: str, n: int) -> str:
    """The canonical role (human, gpt, system) of a turn's `from` or `role`."""
    role = turn.get("from")
    if role is None:
        role = turn.get("role")
    canon_role = ROLES.get(role) if type(role) is str else None
    if canon_role is None:
        if not isinstance(role, str) or role.strip().lower() not in ROLES:
            raise Rejected("unknown_role", f"{label}: turn {n} has role {role!r}; expected human/gpt or user/assistant")
        canon_role = ROLES[role.strip().lower()]
    return canon_role


def _check_turns(canon: list[dict], label: str, max_turn_chars: int) -> int:
    """Check order, text and placeholders of the turns; the number of image placeholders."""
    placeholders = 0
    want = "human"
    for n, turn in enumerate(canon):
        if turn["from"] != want:
            raise Rejected(
                "bad_turn_order",
                f"{label}: turn {n} is {turn['from']!r} but {want!r} was expected "
                "(turns must alternate human, gpt, starting with human)",
            )
        want = "gpt" if want == "human" else "human"
        value = turn["value"]
        if not value or value.isspace():
            raise Rejected("empty_turn", f"{label}: turn {n} ({turn['from']}) has no text")
        if len(value) > max_turn_chars:
            raise Rejected(
                "turn_too_long",
                f"{label}: turn {n} has {len(value):,} characters, over the limit of {max_turn_chars:,}",
            )
        count = value.count(PLACEHOLDER)
        if "<" in value and len(_PLACEHOLDER_VARIANT.findall(value)) != count:
            variant = next(v for v in _PLACEHOLDER_VARIANT.findall(value) if v != PLACEHOLDER)
            raise Rejected(
                "image_placeholder_variant",
                f"{label}: turn {n} holds {variant!r}, a misspelt {PLACEHOLDER} placeholder; "
                f"write it exactly as {PLACEHOLDER} (or remove it if it is meant as text)",
            )
        placeholders += count
    if want != "human":
        raise Rejected("bad_turn_order", f"{label}: the conversation ends with a human turn that has no answer")
    return placeholders


def _top_level_system(record: dict, label: str) -> str | None:
    top = record.get("system")
    if isinstance(top, str) and top:
        return top
    if top is not None and not isinstance(top, str):
        raise Rejected("malformed_record", f"{label}: system must be a string, got {type(top).__name__}")
    return None


def _images(record: dict, label: str, part_images: list[ImageRef], canon: list[dict], placeholders: int) -> list:
    """The sample's images (the `images` field or content parts, not both), matched to the placeholders;
    a text without any placeholder gets them prepended to its first turn."""
    images = _top_level_images(record, label)
    if part_images:
        if images:
            raise Rejected(
                "image_placeholder_mismatch",
                f"{label}: images given both inline as content parts ({len(part_images)}) "
                f"and in the images field ({len(images)})",
            )
        images = part_images
    if images and placeholders == 0:
        canon[0] = {"from": "human", "value": (PLACEHOLDER + "\n") * len(images) + canon[0]["value"]}
    elif placeholders != len(images):
        raise Rejected(
            "image_placeholder_mismatch",
            f"{label}: {placeholders} {PLACEHOLDER} placeholder(s) for {len(images)} image(s)",
        )
    return images
