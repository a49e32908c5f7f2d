"""`mmssr ingest PATH --source NAME`: one pool file or source folder into the store."""

from __future__ import annotations

from pathlib import Path

from mmssr_core.cli import CommandError, add_store_argument, open_store, print_json_line
from mmssr_core.progress import Progress
from mmssr_core.schema import QUARANTINE_TABLE, RAW_POOL_TABLE


def add_arguments(p) -> None:
    from mmssr_core.ingest.conversations import DEFAULT_MAX_TURN_CHARS
    from mmssr_core.ingest.images import DEFAULT_MAX_PIXELS

    p.add_argument("path", help="a pool file (*.json list, *.jsonl, *.parquet) or a source folder holding one")
    p.add_argument("--source", help="source (partition) name; default: the source folder's name")
    add_store_argument(p)
    p.add_argument("--image-root", help="folder image paths are relative to (default: the pool file's folder)")
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "llava", "sharegpt", "parquet"],
        help="record format; auto detects it from the content",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"reject images declaring more pixels (default {DEFAULT_MAX_PIXELS:,})",
    )
    p.add_argument(
        "--max-turn-chars",
        type=int,
        default=DEFAULT_MAX_TURN_CHARS,
        help=f"reject samples with a longer turn (default {DEFAULT_MAX_TURN_CHARS:,} characters)",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress on stderr (default, for runs over 2 s: a bar on a terminal, else a line every 2 s)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def ingest_progress(enabled: bool = True, source: str = ""):
    """The `ingest_source` progress callback: a bar (or a line every 2 s) once a run lasts over 2 s."""
    bar = Progress(f"ingest {source}".strip(), unit="records", enabled=enabled, delay=2.0)

    def update(p: dict) -> None:
        bar.update(
            p["read"], fraction=p["fraction"], note=f"{p['accepted']:,} accepted, {p['quarantined']:,} quarantined"
        )

    update.close = bar.close  # type: ignore[attr-defined]
    return update


def run(args) -> int:
    from mmssr_core.ingest import IngestError, ingest_source
    from mmssr_core.store import StoreError, check_name

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
    store = open_store(args)
    progress = ingest_progress(not args.no_progress, source)
    try:
        result = ingest_source(
            path,
            source,
            store,
            image_root=args.image_root,
            fmt=args.format,
            max_pixels=args.max_pixels,
            max_turn_chars=args.max_turn_chars,
            progress=progress,
        )
    except IngestError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot ingest {path}: {exc}") from None
    finally:
        progress.close()

    r = result
    rate = r.read / r.seconds if r.seconds > 0 else 0.0
    print(f"ingested source {r.source!r} from {r.input} ({r.format}, {r.container})")
    print(
        f"  read {r.read:,}  accepted {r.accepted:,}  quarantined {r.quarantined:,}  "
        f"text-only {r.text_only:,}  duplicate content {r.duplicate_content:,}"
    )
    if r.reasons:
        print("  quarantine reasons: " + ", ".join(f"{k} {v:,}" for k, v in r.reasons.items()))
    imgs = r.images
    if imgs.get("unique"):
        fmts = ", ".join(f"{k} {v}" for k, v in imgs.get("formats", {}).items())
        print(
            f"  images: {imgs['unique']:,} distinct checked ({fmts}); "
            f"{imgs.get('extension_mismatch', 0)} with an extension that lies about the format"
        )
    print(f"  raw_pool:   {r.paths[RAW_POOL_TABLE]}")
    print(f"  quarantine: {r.paths[QUARANTINE_TABLE]}")
    print(f"  {r.seconds:.2f} s ({rate:,.0f} samples/s)")
    if args.json:
        print_json_line(r.to_dict())
    return 0
