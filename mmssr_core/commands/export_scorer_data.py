"""`mmssr export-scorer-data`: teacher labels -> scorer/styler training conversations (LLaVA JSON)."""

from __future__ import annotations

import argparse

from mmssr_core.cli import CommandError, add_store_argument, open_store, print_json_line


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_store_argument(p, "holds teacher_labels and raw_pool")
    p.add_argument("--out", required=True, help="output JSON file (image paths are written relative to its folder)")
    p.add_argument("--source", action="append", help="only these sources (repeatable; default: every labelled one)")
    p.add_argument(
        "--capability",
        action="append",
        dest="capabilities",
        help="only these capability keys (repeatable; default: all labelled ones)",
    )
    p.add_argument("--no-styles", action="store_true", help="leave out the style conversations")
    p.add_argument("--taxonomy", help="taxonomy config file (JSON/TOML); default $MMSSR_TAXONOMY or the paper's")
    p.add_argument(
        "--profile",
        choices=("reference", "clean", "native"),
        default=None,
        help="input profile: reference (default: the released scorer's exact inputs), clean "
        "(same, without the reference's Question: strip quirk) or native (the model's own processor)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def run(args: argparse.Namespace) -> int:
    from mmssr_core.scorer_data import export_scorer_data
    from mmssr_core.store import StoreError
    from mmssr_core.taxonomy import TaxonomyError, load_taxonomy

    try:
        taxonomy = load_taxonomy(args.taxonomy)
        res = export_scorer_data(
            open_store(args),
            args.out,
            sources=args.source,
            taxonomy=taxonomy,
            capabilities=args.capabilities,
            styles=not args.no_styles,
            profile=args.profile,
        )
    except (StoreError, TaxonomyError) as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        print_json_line(res.to_dict())
    else:
        print(
            f"wrote {res.conversations} conversations from {res.samples} labelled samples to {res.path} "
            f"(LLaMA-Factory entry in {res.dataset_info})"
        )
        if res.skipped_unlabelled_capabilities:
            print(f"not labelled, so not exported: {', '.join(res.skipped_unlabelled_capabilities)}")
    return 0
