"""`mmssr agreement`: how well a scorer's scores agree with the teacher labels (metrics, plots, JSON)."""

from __future__ import annotations

import argparse

from mmssr_core.cli import CommandError, add_store_argument, open_store, print_json_line


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_store_argument(p, "holds teacher_labels, and the scores if no --scores")
    p.add_argument(
        "--scores", help="a scores table Parquet file (default: the store's scores; columns: docs/method.md)"
    )
    p.add_argument("--out", required=True, help="output folder: agreement.json, agreement.md, PNG plots")
    p.add_argument("--source", action="append", help="only these sources' teacher labels (repeatable)")
    p.add_argument("--taxonomy", help="taxonomy config file (JSON/TOML); default $MMSSR_TAXONOMY or the paper's")
    p.add_argument("--no-plots", action="store_true", help="metrics only")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def run(args: argparse.Namespace) -> int:
    from mmssr_core.agreement import AgreementError, compute_agreement, read_teacher_labels, write_agreement
    from mmssr_core.commands._common import read_parquet_file
    from mmssr_core.store import StoreError
    from mmssr_core.taxonomy import TaxonomyError, load_taxonomy

    store = open_store(args)
    try:
        taxonomy = load_taxonomy(args.taxonomy)
        teacher = read_teacher_labels(store, args.source)
        if args.scores:
            scores = read_parquet_file(args.scores, "scores")
        else:
            from mmssr_core.scoring.runner import build_scores_table

            scores = build_scores_table(store, sorted(teacher["source"].unique().to_list()), taxonomy)
        keys = [k for k in taxonomy.keys if k in teacher.columns]
        result = compute_agreement(scores, teacher, keys)
    except (StoreError, TaxonomyError, AgreementError) as exc:
        raise CommandError(str(exc)) from None
    paths = write_agreement(result, args.out, plots=not args.no_plots)
    if args.json:
        summary = result.to_dict()
        for c in summary["capabilities"]:
            c.pop("confusion", None)
        summary["files"] = {k: str(v) for k, v in paths.items()}
        print_json_line(summary)
    else:
        print(result.markdown())
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
