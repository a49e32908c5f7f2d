"""Scoring throughput: the reference approach vs the transformers backend vs vLLM, same model, same run.

Model: a random LLaVA-OneVision-architecture checkpoint built from a config (Qwen2 text model with
--layers/--hidden, SigLIP tower on 384-px images with --patch, default 14 as the real SigLIP: 729 patches
per tile, 1485 image tokens for one 384x384 image). Data: --samples real samples from ../shared/data
(llava_bench, math_vision_testmini, tabmwp_dev1k), with their images.

Reference (the reference inference): 15 separate greedy `generate` calls per sample (14 capability queries + the
style query), batch size 1, full prompt each time. The released scorer answers a score with a bare digit
then <|im_end|> (2 tokens) and its style answer is a short label list; a random model rarely emits EOS, so
the reference's max_new_tokens=1024 would measure nonsense. We cap it at those answer lengths instead:
--ref-score-tokens (default 2, the trained model's answer length: favourable to the reference) and
--style-tokens (default 32) for the style query, the same cap our constrained style decoding gets.

Ours: TransformersBackend with the shared prefix (one prefill per sample, batched with left padding,
KV cache reused by all 15 queries), digit distributions from one forward pass, constrained styles; and
the vLLM backend (vLLM's CPU build here: prefix caching, one request per query, structured styles) on the
same checkpoint, timed after the other two (its engine keeps its own threads busy). Every approach is fed
the `reference` input profile (the released scorer's token stream, 730 image features at patch 14).

Agreement: our argmax over the digit distribution vs the reference's first generated token with the
vocabulary restricted to the digits 0..5 at that first step (a random model's unrestricted first token is
usually not a digit, so only the restricted comparison is meaningful). Must be 100%. The machine's load
average is printed at start and end.

    .venv/bin/python benchmarks/scoring.py                 # 64 samples, 4 layers, hidden 256, CPU
    .venv/bin/python benchmarks/scoring.py --device cuda --layers 8 --hidden 1024 --samples 256
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SOURCES = ("llava_bench", "math_vision_testmini", "tabmwp_dev1k")


def load_requests(data_root: Path, n: int, prompts):
    from mmssr_core.scoring.base import ScoreRequest

    pools = []
    for source in SOURCES:
        root = data_root / source
        rows = [r for r in json.loads((root / "pool.llava.json").read_text()) if r.get("image")]
        pools.append([(source, root, r) for r in rows])
    picked, i = [], 0
    while len(picked) < n and any(pools):
        pool = pools[i % len(pools)]
        if pool:
            picked.append(pool.pop(0))
        i += 1
    return [
        ScoreRequest(
            key=f"{source}/{r['id']}",
            sample_id=str(r["id"]),
            prefix=prompts.prefix(r["conversations"]),
            image_file=str(root / r["image"]),
        )
        for source, root, r in picked
    ]


def reference(backend, requests, prompts, score_tokens: int, style_tokens: int):
    """15 generate calls per sample at batch 1; returns the digit each score call produced first."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    digit_ids = backend.digit_ids

    class DigitsAtFirstStep(LogitsProcessor):
        """Restrict only the first generated token to the digits (for the agreement measurement)."""

        def __init__(self, start: int):
            self.start = start

        def __call__(self, input_ids, scores):
            if input_ids.shape[1] == self.start:
                mask = torch.full_like(scores, float("-inf"))
                mask[:, digit_ids] = 0
                scores = scores + mask
            return scores

    model, inputs = backend.model, backend._inputs(prompts.profile)
    digits = []
    for req in requests:
        (item,), _ = backend._items([req], inputs)
        row = []
        for query in list(prompts.capability_queries) + [prompts.style_query]:
            enc = inputs.full_batch([item.user], [query], [item.image], backend.device)
            start = enc["input_ids"].shape[1]
            is_score = query != prompts.style_query
            with torch.inference_mode():
                out = model.generate(
                    **enc,
                    do_sample=False,
                    max_new_tokens=score_tokens if is_score else style_tokens,
                    eos_token_id=backend.stop_ids,
                    pad_token_id=backend.pad_id,
                    logits_processor=LogitsProcessorList([DigitsAtFirstStep(start)]) if is_score else None,
                )
            if is_score:
                row.append(digit_ids.index(int(out[0, start])))
        digits.append(row)
    return digits


def run_vllm(model_dir: Path, requests, prompts, args):
    """(samples/s, distributions) of the vLLM backend on all requests, after a one-sample warm-up."""
    from mmssr_core.scoring.vllm_backend import VLLMBackend

    backend = VLLMBackend(
        str(model_dir),
        dtype="float32" if args.dtype == "auto" else args.dtype,
        enforce_eager=True,
        max_model_len=8192,
        max_style_tokens=args.style_tokens,
    )
    try:
        backend.digit_distributions(requests[:1], prompts.capability_queries, prompts)
        backend.styles(requests[:1], prompts)
        t0 = time.perf_counter()
        dists = []
        for start in range(0, len(requests), args.batch_size):
            chunk = requests[start : start + args.batch_size]
            dists += backend.digit_distributions(chunk, prompts.capability_queries, prompts)
            backend.styles(chunk, prompts)
        seconds = time.perf_counter() - t0
    finally:
        backend.close()
    return len(requests) / seconds, dists


def agreement(a, b, margin: float = 1e-3) -> float:
    """Share of (sample, query) whose argmax agrees, among those whose top two digits differ by > margin."""
    import numpy as np

    pairs = [
        (x, y)
        for ra, rb in zip(a, b)
        for x, y in zip(ra, rb)
        if hasattr(x, "shape") and hasattr(y, "shape") and np.diff(np.sort(x)[-2:])[0] > margin
    ]
    return sum(int(np.argmax(x) == np.argmax(y)) for x, y in pairs) / max(len(pairs), 1)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vision-layers", type=int, default=2)
    ap.add_argument("--vision-hidden", type=int, default=128)
    ap.add_argument("--patch", type=int, default=14, help="SigLIP patch size (14: 729 patches per 384-px tile)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--ref-score-tokens", type=int, default=2)
    ap.add_argument("--style-tokens", type=int, default=32)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--no-vllm", action="store_true", help="skip the vLLM backend")
    ap.add_argument("--json", action="store_true", help="print a one-line JSON summary last")
    args = ap.parse_args(argv)
    print(f"load average at start: {load()}", flush=True)

    import numpy as np
    import torch

    from mmssr_core.prompts import PromptSet
    from mmssr_core.scoring.transformers_backend import TransformersBackend
    from mmssr_core.taxonomy import Taxonomy
    from mmssr_core.testing.tiny_models import build_tiny_llava_onevision

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    prompts = PromptSet.from_taxonomy(Taxonomy())
    requests = load_requests(Path(args.data), args.samples, prompts)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_llava_onevision(
            Path(tmp) / "bench-llava-ov",
            layers=args.layers,
            hidden=args.hidden,
            heads=args.heads,
            kv_heads=max(1, args.heads // 2),
            vision_layers=args.vision_layers,
            vision_hidden=args.vision_hidden,
            patch_size=args.patch,
            seed=0,
        )
        backend = TransformersBackend(
            str(model_dir),
            device=args.device,
            dtype=args.dtype,
            batch_size=args.batch_size,
            max_style_tokens=args.style_tokens,
        )
        backend._inputs(prompts.profile)
        backend._load()
        n_params = sum(p.numel() for p in backend.model.parameters())
        print(
            f"model: {args.layers} layers, hidden {args.hidden}, vision patch {args.patch} "
            f"({(384 // args.patch) ** 2} patches/tile), {n_params / 1e6:.1f}M params, device {args.device}; "
            f"{len(requests)} samples",
            file=sys.stderr,
        )
        # warm-up both paths on one sample (allocator, kernels), not timed
        backend.digit_distributions(requests[:1], prompts.capability_queries, prompts)
        backend.styles(requests[:1], prompts)
        reference(backend, requests[:1], prompts, args.ref_score_tokens, 2)
        backend._prefix_lru.clear()  # the timed run must prefill everything itself

        sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
        # Interleave the two approaches chunk by chunk, so both see the same machine load (the CPU
        # here is shared); each chunk is one backend call for ours and 15 x chunk generate calls.
        dists, styles, ref_digits = [], [], []
        ours_s = ours_scores_s = ref_s = 0.0
        for start in range(0, len(requests), args.batch_size):
            chunk = requests[start : start + args.batch_size]
            backend._prefix_lru.clear()
            sync()
            t0 = time.perf_counter()
            dists += backend.digit_distributions(chunk, prompts.capability_queries, prompts)
            t1 = time.perf_counter()
            styles += backend.styles(chunk, prompts)
            sync()
            t2 = time.perf_counter()
            ref_digits += reference(backend, chunk, prompts, args.ref_score_tokens, args.style_tokens)
            sync()
            t3 = time.perf_counter()
            ours_s += t2 - t0
            ours_scores_s += t1 - t0
            ref_s += t3 - t2
            print(
                f"{start + len(chunk)}/{len(requests)}: ours {ours_s:.1f}s (scores {ours_scores_s:.1f}s), "
                f"reference {ref_s:.1f}s",
                file=sys.stderr,
                flush=True,
            )
        backend.close()
        vllm_rate, vllm_dists = (None, None) if args.no_vllm else run_vllm(model_dir, requests, prompts, args)

    failures = sum(1 for row in dists for d in row if not isinstance(d, np.ndarray))
    style_failures = sum(1 for s in styles if not isinstance(s, list))
    pairs = [(int(np.argmax(d)), r) for row, rrow in zip(dists, ref_digits) for d, r in zip(row, rrow)]
    agree = sum(a == b for a, b in pairs) / len(pairs)
    ours_rate = len(requests) / ours_s
    ref_rate = len(requests) / ref_s
    summary = {
        "samples": len(requests),
        "layers": args.layers,
        "hidden": args.hidden,
        "patch": args.patch,
        "device": args.device,
        "reference_samples_per_s": round(ref_rate, 4),
        "ours_samples_per_s": round(ours_rate, 4),
        "speedup": round(ours_rate / ref_rate, 2),
        "argmax_agreement": agree,
        "failures": failures,
        "style_failures": style_failures,
        "ours_scores_seconds": round(ours_scores_s, 2),
        "ref_score_tokens": args.ref_score_tokens,
        "style_tokens": args.style_tokens,
    }
    if vllm_rate is not None:
        summary.update(
            vllm_samples_per_s=round(vllm_rate, 4),
            vllm_speedup=round(vllm_rate / ref_rate, 2),
            vllm_vs_transformers=round(vllm_rate / ours_rate, 2),
            vllm_argmax_agreement=agreement(vllm_dists, dists),
        )
    print(f"reference (15 generate calls/sample, batch 1): {ref_rate:.3f} samples/s")
    print(f"ours (prefix prefilled once, packed queries, 1 forward/score): {ours_rate:.3f} samples/s")
    print(f"speedup: {ours_rate / ref_rate:.1f}x")
    if vllm_rate is not None:
        print(
            f"vLLM backend (prefix caching, structured styles): {vllm_rate:.3f} samples/s = "
            f"{vllm_rate / ref_rate:.1f}x the reference, {vllm_rate / ours_rate:.2f}x the transformers backend; "
            f"integer agreement with transformers: {100 * summary['vllm_argmax_agreement']:.1f}%"
        )
    print(
        f"integer score agreement (argmax vs digit-restricted greedy first token): {100 * agree:.1f}% of {len(pairs)}"
    )
    print(
        f"styles: {len(styles) - style_failures}/{len(styles)} parsed (a random model may not finish a label "
        f"within {args.style_tokens} tokens); score failures: {failures}"
    )
    print(f"load average at end: {load()}", flush=True)
    summary["load_end"] = list(os.getloadavg())
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    ok = agree == 1.0 and failures == 0 and (vllm_rate is None or summary["vllm_argmax_agreement"] == 1.0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
