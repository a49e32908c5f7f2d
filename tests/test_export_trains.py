"""An export trains: LLaMA-Factory 0.9.5 fine-tunes (LoRA, two steps, CPU) a tiny random Qwen2-VL on a
moved export folder, through `llamafactory-cli train` and the committed YAML.

The checkpoint is built in the LLaMA-Factory environment (its transformers) from a config in seconds;
nothing is downloaded. Only the weights are toy: the command, the template, the image processing and
the training loop are LLaMA-Factory's own.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mmssr_core.export import export_selection
from mmssr_core.ingest import ingest_source
from mmssr_core.testing.export_pools import write_shape_source

REPO = Path(__file__).resolve().parent.parent
LF_PYTHON = Path(os.environ.get("MMSSR_LLAMAFACTORY_PYTHON") or REPO / ".venv-llamafactory" / "bin" / "python")
YAML = REPO / "examples" / "llamafactory" / "mmssr_10pct_qwen2vl_lora_sft.yaml"


def _env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(
        CUDA_VISIBLE_DEVICES="",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HOME=str(tmp / "hf"),
        DISABLE_VERSION_CHECK="1",
        TOKENIZERS_PARALLELISM="false",
        WANDB_DISABLED="true",
    )
    return env


@pytest.mark.slow
def test_llamafactory_fine_tunes_on_a_moved_export(tmp_path, store):
    if not LF_PYTHON.is_file():
        pytest.skip(f"no LLaMA-Factory environment at {LF_PYTHON} (scripts/install.sh builds it; CI has it)")
    model = tmp_path / "tiny-qwen2-vl"
    subprocess.run(
        [str(LF_PYTHON), str(REPO / "mmssr_core" / "testing" / "tiny_qwen2vl.py"), str(model)],
        check=True,
        capture_output=True,
        env=_env(tmp_path),
        timeout=300,
    )
    ingest_source(write_shape_source(tmp_path / "src", "mixed", True), "mixed", store)
    sel = store.read("raw_pool", "mixed").select("id", "source")
    export_selection(sel, store, "llava", tmp_path / "exp" / "mmssr_10pct.json", name="mmssr_10pct")
    folder = tmp_path / "training-machine" / "mmssr_10pct"
    folder.parent.mkdir()
    shutil.move(str(tmp_path / "exp"), str(folder))
    out = tmp_path / "saves"
    cli = LF_PYTHON.parent / "llamafactory-cli"
    overrides = [
        f"model_name_or_path={model}",
        f"dataset_dir={folder}",
        f"output_dir={out}",
        "bf16=false",
        "max_steps=2",
        "gradient_accumulation_steps=1",
        "preprocessing_num_workers=1",
        "dataloader_num_workers=0",
        "save_steps=1000",
        "logging_steps=1",
        "plot_loss=false",
    ]
    proc = subprocess.run(
        [str(cli), "train", str(YAML), *overrides],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "train_results.json").read_text())
    assert math.isfinite(results["train_loss"]) and results["train_loss"] > 0
    assert (out / "adapter_model.safetensors").is_file()
    log = proc.stdout + proc.stderr
    assert "num_examples = 4" in log.lower().replace(",", "") or "Num examples = 4" in log, log[-2000:]
