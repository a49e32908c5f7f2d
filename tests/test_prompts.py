import pytest

from mmssr_core.prompts import (
    PromptSet,
    chatml,
    load_scorer_image,
    parse_styles,
    scorer_query,
    serialise_conversation,
    styler_query,
)
from mmssr_core.taxonomy import Taxonomy, taxonomy_from_dict

CONV = [
    {"from": "human", "value": "<image>\nWhat is in the picture"},
    {"from": "gpt", "value": "A cat."},
    {"from": "human", "value": "Hint: look left.\nWhich side?"},
    {"from": "gpt", "value": "Left."},
]


def test_serialisation_matches_the_trained_format():
    text = serialise_conversation(CONV)
    assert text == (
        "Question: <image>\nWhat is in the picture Answer: A cat.\nHint: look left.\nWhich side? Answer: Left."
    )


def test_hint_after_image_keeps_no_question_prefix():
    assert serialise_conversation([{"from": "human", "value": "<image>\nHint: x"}, {"from": "gpt", "value": "y"}]) == (
        "<image>\nHint: x Answer: y"
    )


def test_reference_quirk_only_behind_the_flag():
    # The reference's character-set strip eats trailing letters of "picture" -> "pictur".
    quirky = serialise_conversation(CONV, reference_quirk=True)
    assert "What is in the pictur Answer" in quirky
    assert "What is in the picture Answer" in serialise_conversation(CONV)


def test_only_the_first_image_placeholder_is_kept():
    conv = [{"from": "human", "value": "<image>A<image>B"}, {"from": "gpt", "value": "C"}]
    assert serialise_conversation(conv) == "Question: <image>AB Answer: C"


def test_queries_are_verbatim():
    assert scorer_query("stem knowledge") == (
        "On a scale of 0 to 5, how do you rate the helpfulness of the VQA instance in training a "
        "Multimodal Large Language Model for stem knowledge?"
    )
    q = styler_query(Taxonomy().styles)
    assert q.startswith("Interaction style candidates: [multi-choice, coordinate, yes/no, ")
    assert q.endswith("chain-of-thought (step-by-step), specified style]\nStyles: ")


def test_prompt_version_changes_with_any_prompt_text():
    base = PromptSet.from_taxonomy(Taxonomy())
    extended = PromptSet.from_taxonomy(taxonomy_from_dict({"capabilities": [{"key": "x", "phrase": "x"}]}))
    clean = PromptSet.from_taxonomy(Taxonomy(), profile="clean")
    native = PromptSet.from_taxonomy(Taxonomy(), profile="native")
    assert len({base.version, extended.version, clean.version, native.version}) == 4
    assert base.profile.name == "reference" and base.reference_quirk  # the released scorer's inputs by default
    assert base.version.startswith("p2-reference-") and clean.version.startswith("p2-clean-")
    assert base.version == PromptSet.from_taxonomy(Taxonomy()).version


def test_user_turn_is_prefix_then_query():
    ps = PromptSet.from_taxonomy(Taxonomy())
    user = ps.prefix(CONV) + ps.capability_queries[0]
    assert user.endswith(
        "Left.\nOn a scale of 0 to 5, how do you rate the helpfulness of the VQA instance in training a Multimodal Large Language Model for object spatial understanding?"
    )
    rendered = chatml(user)
    assert rendered.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert rendered.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_parse_styles_keeps_order_and_known_labels_only():
    styles = Taxonomy().styles
    assert parse_styles("yes/no, short description", styles) == ["yes/no", "short description"]
    assert parse_styles("chain-of-thought (step-by-step), multi-choice, multi-choice", styles) == [
        "chain-of-thought (step-by-step)",
        "multi-choice",
    ]
    # "short description" must not also match inside "detailed description"
    assert parse_styles("detailed description", styles) == ["detailed description"]
    with pytest.raises(ValueError):
        parse_styles("banana", styles)


def test_scorer_image_is_rgb_384(shared_data):
    # wild_imgs/014.jpg is an RGBA PNG behind a .jpg name
    im = load_scorer_image(str(shared_data / "llava_bench/wild_imgs/014.jpg"))
    assert im.mode == "RGB" and im.size == (384, 384)
    assert load_scorer_image(None) is None
