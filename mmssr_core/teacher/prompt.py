"""What the teacher is asked and how its answer is read back: the prompts, the answer's JSON schema, the
prompt version (part of the teacher's identity, so a changed instruction never reuses old answers)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from mmssr_core.prompts import IMAGE_TOKEN, PromptSet, serialise_conversation
from mmssr_core.taxonomy import Taxonomy

TEACHER_SYSTEM_PROMPT = (
    "You are an expert annotator of training data for multimodal large language models. You answer with JSON only."
)
TEACHER_TEMPLATE = """You are given one visual question answering (VQA) instance used to train a Multimodal Large Language Model (MLLM){image_note}.

Rate, for each capability below, on a scale of 0 to 5 (integers only), how helpful the instance is in training an MLLM for that capability (0: useless for it, 5: very helpful).
Capabilities (key: capability):
{capabilities}

Then name the instance's interaction styles, the form of its questions and answers. Choose only from these labels, list every one that applies, the most prominent first:
[{styles}]

Answer with one JSON object and nothing else, in exactly this form:
{template}

The instance:
{conversation}"""

REASK_TEMPLATE = (
    "Your answer cannot be used: {detail}. Answer again with one JSON object only: every capability key "
    'with an integer from 0 to 5 under "scores", and "styles" as a non-empty list of labels taken '
    "from the list above."
)


def teacher_prompt_version(taxonomy: Taxonomy) -> str:
    """Changes whenever the teacher's instruction, system prompt, capabilities or labels change."""
    blob = json.dumps(
        {
            "system": TEACHER_SYSTEM_PROMPT,
            "template": TEACHER_TEMPLATE,
            "reask": REASK_TEMPLATE,
            "taxonomy": taxonomy.to_dict(),
            "serialisation": PromptSet.from_taxonomy(taxonomy).version,
        },
        sort_keys=True,
    )
    return "t1-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class TeacherIdentity:
    """Who labelled: the served model, the server's host (not its port or replica), the prompt version."""

    model: str
    host: str
    prompt_version: str
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def label(self) -> str:
        """Stored in the `teacher` column."""
        return f"{self.model}@{self.host}/{self.prompt_version}"


def answer_schema(taxonomy: Taxonomy) -> dict:
    """The JSON schema of a teacher answer (sent as response_format json_schema)."""
    keys = taxonomy.keys
    return {
        "type": "object",
        "properties": {
            "scores": {
                "type": "object",
                "properties": {k: {"type": "integer", "minimum": 0, "maximum": 5} for k in keys},
                "required": list(keys),
                "additionalProperties": False,
            },
            "styles": {
                "type": "array",
                "items": {"type": "string", "enum": list(taxonomy.styles)},
                "minItems": 1,
            },
        },
        "required": ["scores", "styles"],
        "additionalProperties": False,
    }


def teacher_instruction(taxonomy: Taxonomy, conversations: Sequence[dict], has_image: bool) -> str:
    """The user text of a teacher request (the image, if any, is sent as a separate part before it)."""
    caps = "\n".join(f"- {c.key}: {c.phrase}" for c in taxonomy.capabilities)
    template = json.dumps({"scores": {k: "<0-5>" for k in taxonomy.keys}, "styles": ["<label>", "..."]})
    convo = serialise_conversation(conversations, max_images=0 if not has_image else 1)
    convo = convo.replace(f"{IMAGE_TOKEN}\n", "").replace(IMAGE_TOKEN, "")
    return TEACHER_TEMPLATE.format(
        image_note=" with the image shown above" if has_image else " (text only, no image)",
        capabilities=caps,
        styles=", ".join(taxonomy.styles),
        template=template,
        conversation=convo,
    )
