"""Helpers shared by the real-vLLM tests (CPU build here, CUDA build on a GPU machine)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from mmssr_core.prompts import PromptSet
from mmssr_core.schema import argmax_column
from mmssr_core.taxonomy import Taxonomy

TOLERANCE = 1e-3


def engine_env() -> dict:
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache: plenty for a tiny model
    return env


def copy_store(store_root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(store_root, dst, symlinks=True)
    return dst


def mmssr(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mmssr_core.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=engine_env(),
    )


def last_json(out: str) -> dict:
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def transformers_reference(
    checkpoint: Path, store_root: Path, *, device: str = "cpu", source: str = "mini", limit: int | None = None
):
    """Digit distributions of the transformers backend on the same checkpoint and samples: id -> [dist]."""
    from mmssr_core.scoring.runner import _request
    from mmssr_core.scoring.transformers_backend import TransformersBackend
    from mmssr_core.store import Store

    prompts = PromptSet.from_taxonomy(Taxonomy())
    rows = Store(store_root).read("raw_pool", source).to_dicts()[:limit]
    requests = [_request(r, prompts) for r in rows]
    backend = TransformersBackend(str(checkpoint), dtype="float32", device=device)
    dists = backend.digit_distributions(requests, prompts.capability_queries, prompts)
    backend.close()
    return {r.sample_id: d for r, d in zip(requests, dists)}, prompts


def assert_same_scores(store_root: Path, reference: dict, prompts: PromptSet, *, source: str = "mini") -> int:
    """Integers equal where the top two digits differ by > 1e-3; expected scores within 1e-3 (for the rows the
    reference covers). Returns how many integers were decisive enough to compare."""
    from mmssr_core.store import Store

    caps = Store(store_root).read("capability_scores", source)
    decisive = 0
    for row in (r for r in caps.to_dicts() if r["id"] in reference):
        for key, dist in zip(prompts.capability_keys, reference[row["id"]]):
            expected = float(np.dot(np.arange(6), dist))
            assert abs(row[key] - expected) <= TOLERANCE, (row["id"], key, row[key], expected)
            top2 = np.sort(dist)[-2:]
            if top2[1] - top2[0] > TOLERANCE:
                decisive += 1
                assert row[argmax_column(key)] == int(np.argmax(dist)), (row["id"], key)
    return decisive
