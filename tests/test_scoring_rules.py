"""The weight-free rules backend: styles from the conversation's form, capability cues, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from mmssr_core.prompts import PromptSet
from mmssr_core.scoring.base import Failure, ScoreRequest, expected_score, get_backend
from mmssr_core.scoring.rules import RulesBackend, image_features
from mmssr_core.taxonomy import Capability, Taxonomy

PROMPTS = PromptSet.from_taxonomy(Taxonomy())


def req(q: str, a: str, image: str | None = None, *more: str, key: str | None = None) -> ScoreRequest:
    convs = [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    for i in range(0, len(more), 2):
        convs += [{"from": "human", "value": more[i]}, {"from": "gpt", "value": more[i + 1]}]
    convs = tuple(convs)
    return ScoreRequest(key or f"{q}|{a}", "s", PROMPTS.prefix(convs), image, convs)


def styles_of(r: ScoreRequest) -> list[str]:
    [out] = RulesBackend().styles([r], PROMPTS)
    return out


@pytest.mark.parametrize(
    "q, a, must, must_not",
    [
        (
            "<image>\nWhat is shown?\nA. a cat\nB. a dog\nC. a bird\nAnswer with the option's letter from the given choices directly.",
            "B",
            ["multi-choice", "specified style"],
            ["word/short-phrase"],
        ),
        ("<image>\nIs the light on?", "Yes, the lamp is on.", ["yes/no"], ["multi-choice"]),
        (
            "<image>\nPlease provide the bounding box coordinate of the region: a red car.",
            "[0.12, 0.30, 0.55, 0.81]",
            ["coordinate"],
            ["yes/no"],
        ),
        ("<image>\nWhat colour is the bus?", "Red", ["word/short-phrase"], ["detailed description"]),
        (
            "<image>\nWhat is the man holding?",
            "The man is holding a large umbrella above his head.",
            ["short description"],
            ["detailed description"],
        ),
        (
            "<image>\nDescribe the image in detail.",
            " ".join(["The street is busy with people and cars."] * 8),
            ["detailed description"],
            ["word/short-phrase"],
        ),
        (
            "<image>\nWhat is the total cost?",
            "First, find the price of each item.\n3 + 4 = 7\nThen multiply by 2: 7 * 2 = 14\nTherefore, the answer is 14.",
            ["chain-of-thought (step-by-step)"],
            [],
        ),
        (
            "<image>\nWhich of the two dogs is bigger than the other, and how do they differ?",
            "The left dog is bigger than the right one.",
            ["comparison"],
            [],
        ),
        (
            "<image>\nAnswer the question using a single word or phrase. What animal is this?",
            "Giraffe",
            ["specified style", "word/short-phrase"],
            [],
        ),
    ],
)
def test_styles_from_form(q, a, must, must_not):
    got = styles_of(req(q, a))
    assert set(must) <= set(got), got
    assert not set(must_not) & set(got), got
    assert len(got) == len(set(got)) and set(got) <= set(PROMPTS.styles)


def test_primary_style_comes_first():
    got = styles_of(req("<image>\nWhich option is right?\nA. 1\nB. 2", "A"))
    assert got[0] == "multi-choice"
    multi_turn = styles_of(
        req(
            "<image>\nWhere is the cat?",
            "On the sofa next to the window.",
            None,
            "Describe the room in detail.",
            " ".join(["A cozy room with a sofa."] * 10),
        )
    )
    assert multi_turn[:2] == ["short description", "detailed description"]


def test_capability_cues_rank_sensibly():
    b = RulesBackend(jitter=0.0)
    keys = list(PROMPTS.capability_keys)
    cases = {
        "optical_character_recognition": req("<image>\nWhat text is written on the sign?", 'It says "STOP".'),
        "data_understanding": req(
            "<image>\nAccording to the table and chart, what is the trend of the data?", "It rises."
        ),
        "stem_knowledge": req(
            "What is the area of a triangle with base 4 and height 3? Solve the equation.", "Area = 1/2 * 4 * 3 = 6"
        ),
        "object_spatial_understanding": req("<image>\nWhat is to the left of the lamp, behind the table?", "A chair."),
        "activity_recognition": req(
            "<image>\nWhat is the girl doing? Is she playing or running?", "She is riding a bike."
        ),
    }
    for key, r in cases.items():
        dists = b.digit_distributions([r], PROMPTS.capability_queries, PROMPTS)[0]
        scores = {k: expected_score(d) for k, d in zip(keys, dists)}
        top = sorted(scores, key=scores.get, reverse=True)[:3]
        assert key in top, (key, top)


def test_distributions_are_valid_deterministic_and_rarely_tied(shared_data):
    import json

    recs = json.loads((shared_data / "tabmwp_dev1k/pool.llava.json").read_text())[:30]
    reqs = [
        ScoreRequest(
            r["id"],
            r["id"],
            PROMPTS.prefix(r["conversations"]),
            str(shared_data / "tabmwp_dev1k" / r["image"]),
            tuple(r["conversations"]),
        )
        for r in recs
    ]
    b = get_backend("rules")
    one = b.digit_distributions(reqs, PROMPTS.capability_queries, PROMPTS)
    two = RulesBackend().digit_distributions(reqs, PROMPTS.capability_queries, PROMPTS)
    for r1, r2 in zip(one, two):
        for d1, d2 in zip(r1, r2):
            assert d1.shape == (6,) and abs(d1.sum() - 1) < 1e-12 and (d1 >= 0).all()
            np.testing.assert_array_equal(d1, d2)
    stem = [expected_score(row[PROMPTS.capability_keys.index("stem_knowledge")]) for row in one]
    assert len(set(np.round(stem, 9))) == len(stem)  # continuous: no ties among 30 samples
    # batched equals one by one
    single = [b.digit_distributions([r], PROMPTS.capability_queries, PROMPTS)[0] for r in reqs[:5]]
    for a, s in zip(one[:5], single):
        for d1, d2 in zip(a, s):
            np.testing.assert_array_equal(d1, d2)


def test_image_features_tell_documents_from_photos(shared_data):
    table = image_features(str(shared_data / "tabmwp_dev1k/tables/33.png"))
    photo = image_features(next(iter(sorted((shared_data / "llava_bench/coco_imgs").glob("*.jpg")))).__str__())
    assert table["white"] > photo["white"] and table["saturation"] < photo["saturation"]
    assert image_features(None) is None


def test_configured_capability_uses_its_phrase():
    tax = Taxonomy(Taxonomy().capabilities + (Capability("medical_imaging", "medical imaging"),))
    prompts = PromptSet.from_taxonomy(tax)
    b = RulesBackend(jitter=0.0)
    q = prompts.capability_queries[-1]
    med = req("What does this medical imaging scan (an x-ray) show?", "A fracture in the imaging.")
    other = req("What colour is the car?", "Blue.")
    [[dm]] = b.digit_distributions([med], [q], prompts)
    [[do]] = b.digit_distributions([other], [q], prompts)
    assert expected_score(dm) > expected_score(do) + 0.5


def test_broken_image_is_a_failure_not_a_crash(tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"not a jpeg")
    [row] = RulesBackend().digit_distributions(
        [req("<image>\nWhat?", "A.", str(bad))], PROMPTS.capability_queries[:2], PROMPTS
    )
    assert all(isinstance(f, Failure) and f.reason == "image_error" for f in row)


def test_identity_and_options():
    ident = RulesBackend().identity(PROMPTS)
    assert (ident.backend, ident.model, ident.prompt_version) == ("rules", "rules-v1", PROMPTS.version)
    assert RulesBackend(sigma=0.5).identity(PROMPTS).digest != ident.digest
    with pytest.raises(TypeError):
        RulesBackend(model="x")
    with pytest.raises(ValueError):
        RulesBackend(sigma=0)
