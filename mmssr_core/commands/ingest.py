"""`mmssr ingest PATH --source NAME`: one pool file or source folder into the store."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mmssr_core.cli import CommandError, print_json_line
from mmssr_core.schema import QUARANTINE_TABLE, RAW_POOL_TABLE


def add_arguments(p) -> None:
    from mmssr_core.ingest.conversations import DEFAULT_MAX_TURN_CHARS
    from mmssr_core.ingest.images import DEFAULT_MAX_PIXELS

    p.add_argument("path", help="a pool file (*.json list, *.jsonl, *.parquet) or a source folder holding one")
    p.add_argument("--source", help="source (partition) name; default: the source folder's name")
    p.add_argument("--store", help="store root (default: $MMSSR_STORE or ./store)")
    p.add_argument("--image-root", help="folder image paths are relative to (default: the pool file's folder)")
    p.add_argument("--format", default="auto", choices=["auto", "llava", "sharegpt", "parquet"],
                   help="record format; auto detects it from the content")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"reject images declaring more pixels (default {DEFAULT_MAX_PIXELS:,})")
    p.add_argument("--max-turn-chars", type=int, default=DEFAULT_MAX_TURN_CHARS,
                   help=f"reject samples with a longer turn (default {DEFAULT_MAX_TURN_CHARS:,} characters)")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


class _Progress:
    """Progress to stderr, at most every 2 s, only for runs long enough to need it."""

    def __init__(self, every: float = 2.0):
        self.every = every
        self.start = self.last = time.monotonic()

    def __call__(self, p: dict) -> None:
        now = time.monotonic()
        if p.get("done") or now - self.last < self.every:
            return
        self.last = now
        rate = p["read"] / max(1e-9, now - self.start)
        print(f"  ... {p['read']:,} read ({100 * p['fraction']:.0f}%), {p['accepted']:,} accepted, "
              f"{p['quarantined']:,} quarantined, {rate:,.0f}/s", file=sys.stderr, flush=True)


def run(args) -> int:
    from mmssr_core.ingest import IngestError, ingest_source
    from mmssr_core.store import Store, StoreError, check_name

    path = Path(args.path)
    if not path.exists():
        raise CommandError(f"{path} does not exist")
    source = args.source
    if source is None:
        if not path.is_dir():
            raise CommandError("--source NAME is required when PATH is a file")
        source = path.resolve().name
    try:
        check_name(source, "source")
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    if args.image_root is not None and not Path(args.image_root).is_dir():
        raise CommandError(f"--image-root {args.image_root} is not a folder")
    if args.max_pixels < 1 or args.max_turn_chars < 1:
        raise CommandError("--max-pixels and --max-turn-chars must be positive")
    store = Store(args.store) if args.store else Store()
    try:
        result = ingest_source(path, source, store, image_root=args.image_root, fmt=args.format,
                               max_pixels=args.max_pixels, max_turn_chars=args.max_turn_chars,
                               progress=_Progress())
    except IngestError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot ingest {path}: {exc}") from None

    r = result
    rate = r.read / r.seconds if r.seconds > 0 else 0.0
    print(f"ingested source {r.source!r} from {r.input} ({r.format}, {r.container})")
    print(f"  read {r.read:,}  accepted {r.accepted:,}  quarantined {r.quarantined:,}  "
          f"text-only {r.text_only:,}  duplicate content {r.duplicate_content:,}")
    if r.reasons:
        print("  quarantine reasons: " + ", ".join(f"{k} {v:,}" for k, v in r.reasons.items()))
    imgs = r.images
    if imgs.get("unique"):
        fmts = ", ".join(f"{k} {v}" for k, v in imgs.get("formats", {}).items())
        print(f"  images: {imgs['unique']:,} distinct checked ({fmts}); "
              f"{imgs.get('extension_mismatch', 0)} with an extension that lies about the format")
    print(f"  raw_pool:   {r.paths[RAW_POOL_TABLE]}")
    print(f"  quarantine: {r.paths[QUARANTINE_TABLE]}")
    print(f"  {r.seconds:.2f} s ({rate:,.0f} samples/s)")
    if args.json:
        print_json_line(r.to_dict())
    return 0
