"""Load export folders with LLaMA-Factory's own data code; run with the Python of a LLaMA-Factory venv.

    <llamafactory venv>/bin/python llamafactory_probe.py answer.json < request.json

request: [{"dataset_dir": ..., "dataset": name}, ...] (or {"train_yaml": path, "overrides": {...}}).
For each, the steps LLaMA-Factory's loader takes for a local file: `parser.get_dataset_list` reads
dataset_info.json, `loader._load_single_dataset` loads the file with `datasets` and aligns it with
`converter.align_dataset`. The answer lists, per dataset, the
aligned rows with their images (resolved paths, whether each exists) and `<image>` placeholder counts,
or the error it raised. Imports nothing of mmssr: it runs in another environment.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from types import SimpleNamespace


def _probe(dataset_dir: str, name: str) -> dict:
    from llamafactory.data.loader import _load_single_dataset
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.hparams import DataArguments

    data_args = DataArguments(dataset_dir=dataset_dir, dataset=name)
    model_args = SimpleNamespace(cache_dir=None, hf_hub_token=None, ms_hub_token=None, om_hub_token=None)
    training_args = SimpleNamespace(local_process_index=0, seed=42, dataloader_num_workers=0)
    [attr] = get_dataset_list([name], dataset_dir)
    aligned = _load_single_dataset(attr, model_args, data_args, training_args)
    rows = []
    for ex in aligned:
        turns = ex["_prompt"] + ex["_response"]
        images = ex["_images"] or []
        rows.append(
            {
                "roles": [t["role"] for t in turns],
                "placeholders": sum(t["content"].count("<image>") for t in turns),
                "images": images,
                "images_exist": [os.path.isfile(p) for p in images],
                "system": ex["_system"],
            }
        )
    return {"rows": rows}


def _probe_yaml(path: str, overrides: dict) -> dict:
    """A training YAML read as `llamafactory-cli train FILE key=value` reads it, parsed by its argument
    classes (unknown keys fail), then its dataset loaded."""
    from llamafactory.hparams.parser import _parse_train_args
    from omegaconf import OmegaConf

    config = OmegaConf.merge(OmegaConf.load(path), OmegaConf.create(overrides))
    model_args, data_args, training_args, finetuning_args, _ = _parse_train_args(OmegaConf.to_container(config))
    loaded = _probe(data_args.dataset_dir, ",".join(data_args.dataset))
    return {
        **loaded,
        "template": data_args.template,
        "model": model_args.model_name_or_path,
        "stage": finetuning_args.stage,
        "dataset_dir": data_args.dataset_dir,
    }


def main() -> None:
    out = []
    for req in json.load(sys.stdin):
        try:
            if "train_yaml" in req:
                out.append({**req, **_probe_yaml(req["train_yaml"], req.get("overrides", {}))})
            else:
                out.append({**req, **_probe(req["dataset_dir"], req["dataset"])})
        except Exception as exc:  # noqa: BLE001 - reported to the caller, which fails the test
            out.append({**req, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]})
    with open(sys.argv[1], "w") as fh:  # not stdout: the libraries print there
        json.dump(out, fh)


if __name__ == "__main__":
    main()


def run_probe(python: str, requests: list[dict], workdir: str, timeout: float = 600) -> list[dict]:
    """Run this file with `python` (a LLaMA-Factory venv) on `requests`, offline, from `workdir`."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_DATASETS_CACHE=os.path.join(workdir, ".hf-datasets"),
        HF_HOME=os.path.join(workdir, ".hf"),
        DISABLE_VERSION_CHECK="1",
        TOKENIZERS_PARALLELISM="false",
    )
    answer = os.path.join(workdir, "probe-answer.json")
    proc = subprocess.run(
        [os.path.abspath(python), os.path.abspath(__file__), answer],
        input=json.dumps(requests),
        capture_output=True,
        text=True,
        cwd=workdir,
        env=env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"LLaMA-Factory probe failed ({proc.returncode}): {proc.stderr[-3000:]}")
    with open(answer) as fh:
        return json.load(fh)
