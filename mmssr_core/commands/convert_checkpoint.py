"""`mmssr convert-checkpoint SRC DST`: released mmSSR scorer/styler (llava_qwen) -> HF LLaVA-OneVision.

With `--relayout`, SRC is already an HF LLaVA-OneVision checkpoint saved by transformers 5 (vision tower
without its `vision_model.` level): it is rewritten in the llava-hf layout vLLM loads.
"""

from __future__ import annotations

import sys
import time


def add_arguments(parser) -> None:
    parser.add_argument("src", help="checkpoint directory in the original LLaVA-NeXT llava_qwen layout")
    parser.add_argument("dst", help="output directory (HF LLaVA-OneVision layout, loadable by transformers and vLLM)")
    parser.add_argument(
        "--dtype", choices=["bfloat16", "float16", "float32"], help="cast floating tensors (default: keep)"
    )
    parser.add_argument("--vision-heads", type=int, help="attention heads of an unknown vision tower")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty DST")
    parser.add_argument(
        "--relayout",
        action="store_true",
        help="SRC is an HF LLaVA-OneVision checkpoint saved by transformers 5: rename its vision "
        "tower to the llava-hf layout (vision_tower.vision_model.*) that vLLM loads",
    )
    parser.add_argument("--json", action="store_true", help="print a one-line JSON summary last")


def run(args) -> int:
    from mmssr_core.cli import CommandError, print_json_line
    from mmssr_core.convert_checkpoint import ConversionError, convert_checkpoint

    start = time.monotonic()
    if args.relayout:
        return _relayout(args, start)
    try:
        report = convert_checkpoint(
            args.src,
            args.dst,
            dtype=args.dtype,
            vision_heads=args.vision_heads,
            force=args.force,
            progress=lambda msg: print(msg, file=sys.stderr, flush=True),
        )
    except (ConversionError, OSError) as exc:
        raise CommandError(str(exc)) from None
    summary = {
        "dst": args.dst,
        "tensors": report.tensors,
        "shards": report.shards,
        "dropped": len(report.dropped),
        "added_tokens": report.added_tokens,
        "image_token_index": report.image_token_index,
        "seconds": round(time.monotonic() - start, 2),
    }
    if args.json:
        print_json_line(summary)
    else:
        print(f"converted {report.tensors} tensors in {report.shards} shard(s) to {args.dst}")
    return 0


def _relayout(args, start: float) -> int:
    from mmssr_core.checkpoint_layout import relayout
    from mmssr_core.cli import CommandError, print_json_line

    try:
        renamed = relayout(args.src, args.dst)
    except (OSError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    summary = {"dst": args.dst, "renamed_tensors": renamed, "seconds": round(time.monotonic() - start, 2)}
    if args.json:
        print_json_line(summary)
    else:
        print(f"renamed {renamed} vision-tower tensors; wrote {args.dst}")
    return 0
