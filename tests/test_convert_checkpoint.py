"""`mmssr convert-checkpoint` on a tiny checkpoint fabricated in the original llava_qwen layout.

Round trip: tiny HF LLaVA-OneVision -> original LLaVA-NeXT names/config/tokenizer (2 shards) -> converter
-> loads with from_pretrained (no missing/unexpected keys) and gives the source model's logits.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from mmssr_core.cli import main  # noqa: E402
from mmssr_core.convert_checkpoint import ConversionError, convert_checkpoint, map_key  # noqa: E402
from mmssr_core.prompts import PromptSet, chatml, load_scorer_image  # noqa: E402
from mmssr_core.taxonomy import Taxonomy  # noqa: E402
from mmssr_core.testing.tiny_models import build_tiny_llava_onevision, write_llava_qwen_checkpoint  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("conv")
    hf = build_tiny_llava_onevision(base / "hf", seed=3)
    orig = write_llava_qwen_checkpoint(hf, base / "orig", shards=2)
    return hf, orig, base


def test_fabricated_checkpoint_has_the_original_layout(dirs):
    _, orig, _ = dirs
    cfg = json.loads((orig / "config.json").read_text())
    assert cfg["architectures"] == ["LlavaQwenForCausalLM"] and cfg["mm_projector_type"] == "mlp2x_gelu"
    keys = json.loads((orig / "model.safetensors.index.json").read_text())["weight_map"]
    assert "model.mm_projector.0.weight" in keys and "model.mm_projector.2.bias" in keys
    assert "model.image_newline" in keys and "lm_head.weight" in keys and "model.embed_tokens.weight" in keys
    assert any(k.startswith("model.vision_tower.vision_tower.vision_model.encoder.layers.0.") for k in keys)
    assert len(set(keys.values())) == 2
    assert "<image>" not in (orig / "tokenizer.json").read_text()


def test_convert_round_trip_same_logits(dirs, shared_data):
    from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

    hf, orig, base = dirs
    dst = base / "converted"
    messages = []
    report = convert_checkpoint(orig, dst, progress=messages.append)
    assert report.shards == 2 and len(messages) == 2  # streamed shard by shard
    assert report.added_tokens == ["<image>", "<video>"]
    assert (dst / "model.safetensors.index.json").is_file()
    keys = json.loads((dst / "model.safetensors.index.json").read_text())["weight_map"]
    assert "multi_modal_projector.linear_1.weight" in keys and "language_model.lm_head.weight" in keys
    assert any(k.startswith("vision_tower.vision_model.") for k in keys)
    # classic processor layout (what llava-hf checkpoints ship and older transformers/vLLM read)
    pre = json.loads((dst / "preprocessor_config.json").read_text())
    assert pre["image_grid_pinpoints"] == [[384, 384]] and pre["size"] == {"height": 384, "width": 384}
    assert "image_processor" not in json.loads((dst / "processor_config.json").read_text())

    src_model = LlavaOnevisionForConditionalGeneration.from_pretrained(hf, local_files_only=True).eval()
    new_model, info = LlavaOnevisionForConditionalGeneration.from_pretrained(
        dst, local_files_only=True, output_loading_info=True
    )
    new_model.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert new_model.config.image_token_id == src_model.config.image_token_id
    for name, tensor in src_model.state_dict().items():
        assert torch.equal(tensor, new_model.state_dict()[name]), name

    proc_src = AutoProcessor.from_pretrained(hf, local_files_only=True)
    proc_new = AutoProcessor.from_pretrained(dst, local_files_only=True)
    pool = json.loads((shared_data / "tabmwp_dev1k" / "pool.llava.json").read_text())[:1]
    prompts = PromptSet.from_taxonomy(Taxonomy())
    text = chatml(prompts.prefix(pool[0]["conversations"]) + prompts.capability_queries[0])
    image = load_scorer_image(str(shared_data / "tabmwp_dev1k" / pool[0]["image"]))
    a = proc_src(text=[text], images=[image], return_tensors="pt")
    b = proc_new(text=[text], images=[image], return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    with torch.inference_mode():
        la = src_model(**a).logits
        lb = new_model(**b).logits
    assert torch.equal(la, lb)


def test_cli_json_summary_and_refuses_to_overwrite(dirs, capsys):
    _, orig, base = dirs
    dst = base / "cli-out"
    assert main(["convert-checkpoint", str(orig), str(dst), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["tensors"] > 0 and summary["shards"] == 2 and summary["image_token_index"] >= 0
    assert main(["convert-checkpoint", str(orig), str(dst)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["convert-checkpoint", str(orig), str(dst), "--force", "--dtype", "bfloat16"]) == 0
    cfg = json.loads((dst / "config.json").read_text())
    assert cfg["architectures"] == ["LlavaOnevisionForConditionalGeneration"]


def test_rejects_other_layouts(dirs, tmp_path):
    hf, _, _ = dirs
    with pytest.raises(ConversionError, match="LlavaQwenForCausalLM"):
        convert_checkpoint(hf, tmp_path / "x")
    with pytest.raises(ConversionError, match="unexpected tensor"):
        map_key("model.vision_resampler.weight")
    assert map_key("model.layers.3.self_attn.q_proj.weight") == "language_model.model.layers.3.self_attn.q_proj.weight"
    assert map_key("model.vision_tower.vision_tower.vision_model.head.mlp.fc1.weight") is None
