"""`mmssr label`: label a stratified sample of one or more sources with a teacher model (cached, resumable)."""

from __future__ import annotations

import argparse
import sys

from mmssr_core.cli import CommandError, add_store_argument, open_store, print_json_line
from mmssr_core.progress import Progress


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_store_argument(p)
    p.add_argument(
        "--source", action="append", help="source to sample from (repeatable; default: every ingested source)"
    )
    p.add_argument("--size", type=int, required=True, help="number of distinct samples to label")
    p.add_argument(
        "--base-url",
        action="append",
        dest="base_urls",
        required=True,
        metavar="URL",
        help="OpenAI-compatible server, e.g. http://host:8000/v1 (repeat for replicas)",
    )
    p.add_argument("--model", help="served model name (default: the first one the server lists)")
    p.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        help="environment variable holding the API key (default OPENAI_API_KEY; never printed)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument(
        "--structured",
        choices=("auto", "json_schema", "json_object", "none"),
        default="auto",
        help="how the JSON answer is constrained (auto: json_schema, stepping down on a 400)",
    )
    p.add_argument("--max-attempts", type=int, default=3, help="asks per sample before recording a failure (default 3)")
    p.add_argument("--concurrency", type=int, default=4, help="concurrent requests per replica (default 4)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default 120)")
    p.add_argument("--max-retries", type=int, default=5, help="transport retries per request (default 5)")
    p.add_argument("--max-tokens", type=int, default=1024, help="answer token limit (default 1024)")
    p.add_argument(
        "--image-max-side", type=int, default=1024, help="longest image side sent to the teacher (default 1024)"
    )
    p.add_argument("--chunk-size", type=int, default=32, help="answers per cache flush (default 32)")
    p.add_argument(
        "--retry-failures",
        action="store_true",
        help="ask again samples whose earlier answer was invalid (transport failures are always retried)",
    )
    p.add_argument("--taxonomy", help="taxonomy config file (JSON/TOML); default $MMSSR_TAXONOMY or the paper's")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress on stderr (default: a bar on a terminal, else a line every 2 s)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def run(args: argparse.Namespace) -> int:
    from mmssr_core.commands._common import ingested_sources, taxonomy_or_error
    from mmssr_core.store import StoreError
    from mmssr_core.teacher import TeacherClient, label_sources

    if args.size < 1:
        raise CommandError("--size must be >= 1")
    if args.chunk_size < 1 or args.max_attempts < 1 or args.concurrency < 1:
        raise CommandError("--chunk-size, --max-attempts and --concurrency must be >= 1")
    store = open_store(args)
    sources = ingested_sources(store, args.source)
    taxonomy = taxonomy_or_error(args.taxonomy)
    try:
        client = TeacherClient.from_urls(
            args.base_urls,
            taxonomy,
            model=args.model,
            api_key_env=args.api_key_env,
            concurrency=args.concurrency,
            timeout=args.timeout,
            max_retries=args.max_retries,
            structured=args.structured,
            max_attempts=args.max_attempts,
            max_tokens=args.max_tokens,
            image_max_side=args.image_max_side,
        )
    except (ValueError, TypeError) as exc:
        raise CommandError(f"cannot reach the teacher: {exc}") from None

    bar = Progress("label", enabled=not args.no_progress)

    def progress(p) -> None:
        bar.update(p.done, p.total, skipped=p.cached, note=f"{p.cached:,} cached")

    try:
        try:
            client.identity()
        except RuntimeError as exc:
            raise CommandError(str(exc)) from None
        res = label_sources(
            store,
            sources,
            args.size,
            client,
            seed=args.seed,
            chunk_size=args.chunk_size,
            retry_failures=args.retry_failures,
            progress=progress,
        )
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    finally:
        bar.close()
        client.close()
    if res.failed:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(res.failures_by_reason.items()))
        print(
            f"mmssr label: {res.failed} sample(s) without a valid label ({reasons}); see the "
            "failure column of teacher_labels",
            file=sys.stderr,
        )
    if args.json:
        print_json_line(res.to_dict())
    else:
        print(
            f"labelled {res.sampled} samples from {len(res.sources)} source(s) in {len(res.strata)} strata: "
            f"{res.labelled} new, {res.cached} cached, {res.failed} failed in {res.seconds:.1f}s ({res.teacher})"
        )
    return 0
