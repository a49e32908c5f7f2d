"""A vLLM renderer that tokenizes prompts as the reference inference does (imported by vLLM, not by mmssr).

vLLM's stock renderer tokenizes a rendered chat (or a text prompt) as one string, so BPE merges cross the
boundaries the reference keeps (e.g. the two newlines after the image become one token). This renderer
keeps everything else of the Hugging Face renderer (chat templates, multimodal parsing) and only replaces
the text -> token ids step with `reference_stream.reference_token_ids`, the same function the transformers
backend and the golden test use.
"""

from __future__ import annotations

from vllm.renderers.hf import HfRenderer

from mmssr_core.prompts import IMAGE_TOKEN
from mmssr_core.scoring.reference_stream import IM_END, IM_START, reference_token_ids


class ReferenceStreamRenderer(HfRenderer):
    def _tokenize_prompt(self, prompt, params):
        tokenizer = self.get_tokenizer()
        ids = reference_token_ids(
            prompt["prompt"],
            lambda text: tokenizer.encode(text, add_special_tokens=False),
            im_start=tokenizer.convert_tokens_to_ids(IM_START),
            im_end=tokenizer.convert_tokens_to_ids(IM_END),
            image=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        )
        return self._build_tokens_prompt(ids, prompt)
