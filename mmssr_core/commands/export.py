"""`mmssr export --selection FILE (--to DIR | --out FILE) [--format llava|sharegpt] [--images MODE]`."""

from __future__ import annotations

from pathlib import Path

from mmssr_core.cli import CommandError, add_store_argument, open_store, print_json_line

MODES = ("copy", "hardlink", "symlink", "absolute", "prefix")


def add_arguments(p) -> None:
    p.add_argument(
        "--selection",
        required=True,
        help="a selection Parquet (`mmssr select`, or the store's selections/<recipe>.parquet)",
    )
    add_store_argument(p, "holds the ingested raw_pool")
    p.add_argument(
        "--format",
        default="llava",
        choices=["llava", "sharegpt"],
        help="llava: {id, image, conversations} (+ a ShareGPT copy for LLaMA-Factory); "
        "sharegpt: LLaMA-Factory {messages, images}",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--to",
        metavar="DIR",
        help="export folder: DIR/<name>.json, DIR/images/, DIR/dataset_info.json; sync or move it as a whole",
    )
    where.add_argument(
        "--out",
        metavar="FILE",
        help="the training file (.json: a JSON list; .jsonl: one record "
        "per line); images and dataset_info.json go beside it",
    )
    p.add_argument("--name", help="with --to: the file and dataset name (default: the selection file's stem)")
    p.add_argument("--jsonl", action="store_true", help="with --to: write JSON Lines")
    p.add_argument(
        "--images",
        choices=MODES,
        default=None,
        help="copy (default): images into the folder, once per content; hardlink: the same, as hard "
        "links where possible; symlink: links (this machine only); absolute: the ingested "
        "paths; prefix: --image-prefix + the path under the image root's parent folder",
    )
    p.add_argument("--image-prefix", help="with --images prefix: where the training machine holds the sources")
    p.add_argument("--dataset-name", help="the dataset's name in dataset_info.json (default: the file's stem)")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def _out_path(args) -> Path:
    if args.out:
        if args.name or args.jsonl:
            raise CommandError("--name and --jsonl go with --to (with --out, the file name says both)")
        return Path(args.out)
    from mmssr_core.export import ExportError, dataset_name

    try:
        stem = dataset_name(args.name or Path(args.selection).stem)
    except ExportError as exc:
        raise CommandError(str(exc)) from None
    return Path(args.to) / f"{stem}{'.jsonl' if args.jsonl else '.json'}"


def run(args) -> int:
    from mmssr_core.commands._common import read_parquet_file
    from mmssr_core.export import ExportError, export_selection

    selection = read_parquet_file(args.selection, "selection")
    store = open_store(args)
    if not store.root.is_dir():
        raise CommandError(f"store {store.root} does not exist")
    mode = args.images or ("prefix" if args.image_prefix else "copy")
    out = _out_path(args)
    try:
        summary = export_selection(
            selection, store, args.format, out, images=mode, image_prefix=args.image_prefix, name=args.dataset_name
        )
    except ExportError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot write {out}: {exc}") from None
    print(
        f"exported {summary['samples']:,} samples ({summary['images']:,} image references, "
        f"{summary['image_files']:,} image files {mode}) as {args.format} to {summary['path']} "
        f"in {summary['seconds']:.1f} s"
    )
    if summary["repeats_dropped"]:
        print(f"left out {summary['repeats_dropped']:,} repeated samples (same content as an earlier one)")
    print(
        f"LLaMA-Factory: dataset {summary['dataset_name']!r} in {summary['dataset_info']} "
        f"(dataset_dir: {Path(summary['dataset_info']).parent})"
    )
    if args.json:
        print_json_line(summary)
    return 0
