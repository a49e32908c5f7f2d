"""Golden token ids of the reference inference, and the same real samples built by the project's code."""

from __future__ import annotations

import json
from pathlib import Path

from mmssr_core.scoring.reference_stream import collapse_image_runs  # noqa: F401 - re-exported for the tests

GOLDEN = Path(__file__).parent / "golden" / "reference_ids.json"
QWEN_IMAGE_ID = 151646  # <image> in llava-hf LLaVA-OneVision's Qwen2 vocabulary


def load_golden_requests(shared_data: Path, store_dir: Path):
    """(golden document, reference PromptSet, [(golden row, ScoreRequest)]) with the requests made by the
    project's own ingest and runner code from the same real samples."""
    from mmssr_core.ingest import ingest_source
    from mmssr_core.prompts import PromptSet
    from mmssr_core.scoring.runner import _request
    from mmssr_core.store import Store
    from mmssr_core.taxonomy import Taxonomy

    store = Store(store_dir)
    demo = shared_data / "llamafactory_mllm_demo" / "data"
    ingest_source(shared_data / "math_vision_testmini", "mathv", store)
    ingest_source(demo / "mllm_demo.json", "mllm-demo", store, image_root=demo)
    mathv = {r["id"]: r for r in store.read("raw_pool", "mathv").to_dicts()}
    mllm = {r["position"]: r for r in store.read("raw_pool", "mllm-demo").to_dicts()}
    prompts = PromptSet.from_taxonomy(Taxonomy(), profile="reference")
    doc = json.loads(GOLDEN.read_text())
    pairs = []
    for row in doc["samples"]:
        raw = mathv[row["key"]] if row["source"] == "math_vision_testmini" else mllm[row["key"]]
        pairs.append((row, _request(raw, prompts)))
    return doc, prompts, pairs


def golden_ids(row: dict, keyword: str) -> list[int]:
    return row["prefix"] + row["tails"][keyword]
