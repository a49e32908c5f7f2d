"""`mmssr export --selection FILE --store DIR --format llava|sharegpt --out FILE`."""

from __future__ import annotations

import json
from pathlib import Path

from mmssr_core.cli import CommandError, print_json_line


def add_arguments(p) -> None:
    p.add_argument("--selection", required=True, help="a selection Parquet written by `mmssr select`")
    p.add_argument("--store", help="store root holding the ingested raw_pool (default: $MMSSR_STORE or ./store)")
    p.add_argument("--format", default="llava", choices=["llava", "sharegpt"],
                   help="llava: {id, image, conversations}; sharegpt: LLaMA-Factory {messages, images}")
    p.add_argument("--out", required=True, help="output file (.json: a JSON list; .jsonl: one record per line)")
    p.add_argument("--dataset-name", help="also add/replace this entry in dataset_info.json next to --out "
                                          "(LLaMA-Factory)")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def run(args) -> int:
    from mmssr_core.commands._common import read_parquet_file
    from mmssr_core.export import ExportError, export_selection, llamafactory_dataset_info
    from mmssr_core.store import Store, atomic_write_bytes

    selection = read_parquet_file(args.selection, "selection")
    store = Store(args.store) if args.store else Store()
    if not store.root.is_dir():
        raise CommandError(f"store {store.root} does not exist")
    try:
        summary = export_selection(selection, store, args.format, args.out)
    except ExportError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot write {args.out}: {exc}") from None
    if args.dataset_name:
        info_path = Path(summary["path"]).parent / "dataset_info.json"
        info = {}
        if info_path.exists():
            try:
                info = json.loads(info_path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise CommandError(f"{info_path} is not valid JSON: {exc}") from None
        info.update(llamafactory_dataset_info(args.dataset_name, Path(summary["path"]).name, args.format))
        atomic_write_bytes(info_path, (json.dumps(info, indent=2, ensure_ascii=False) + "\n").encode())
        summary["dataset_info"] = str(info_path)
    print(f"exported {summary['samples']:,} samples ({summary['images']:,} images) as {args.format} "
          f"to {summary['path']} in {summary['seconds']:.1f} s")
    if args.json:
        print_json_line(summary)
    return 0
