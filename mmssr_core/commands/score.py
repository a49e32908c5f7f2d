"""`mmssr score`: score the ingested samples of one or all sources into the store (cached, resumable)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from mmssr_core.cli import CommandError, add_store_argument, open_store, print_json_line
from mmssr_core.progress import Progress

BACKENDS = ("rules", "transformers", "vllm", "openai")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_store_argument(p)
    p.add_argument("--source", action="append", help="source to score (repeatable; default: every ingested source)")
    p.add_argument("--backend", choices=BACKENDS, default="rules", help="scoring backend (default: rules)")
    p.add_argument("--model", help="model path (transformers, vllm) or served model name (openai)")
    p.add_argument("--revision", help="model revision recorded in the scorer identity")
    p.add_argument(
        "--base-url",
        action="append",
        dest="base_urls",
        metavar="URL",
        help="openai: base URL of an OpenAI-compatible server, e.g. http://host:8000/v1 (repeat for replicas)",
    )
    p.add_argument(
        "--api-key-env",
        default=None,
        help="openai: environment variable holding the API key "
        "(default OPENAI_API_KEY; the key itself is never printed)",
    )
    p.add_argument("--concurrency", type=int, help="openai: concurrent requests per replica (default 8)")
    p.add_argument("--timeout", type=float, help="openai: seconds per request (default 60)")
    p.add_argument("--device", help="transformers: torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--dtype", help="transformers, vllm: auto, float32, bfloat16, float16")
    p.add_argument("--tensor-parallel-size", type=int, help="vllm: tensor parallel size")
    p.add_argument("--data-parallel-size", type=int, help="vllm: data parallel size")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra backend option (value parsed as JSON when possible); repeatable",
    )
    p.add_argument(
        "--styles-backend",
        choices=BACKENDS,
        help="score the styles with this backend instead (its own cache); --backend then scores the capabilities",
    )
    p.add_argument(
        "--styles-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="option of --styles-backend (value parsed as JSON when possible); repeatable",
    )
    p.add_argument(
        "--targets",
        default="capabilities,styles",
        help="what to score: capabilities, styles or both (default: capabilities,styles)",
    )
    p.add_argument("--batch-size", type=int, help="samples per backend call (default: the backend's preference)")
    p.add_argument("--chunk-size", type=int, default=256, help="samples per cache flush (default 256)")
    p.add_argument(
        "--flush-seconds",
        type=float,
        default=None,
        help="flush results to the cache at least this often (default $MMSSR_FLUSH_SECONDS or 15)",
    )
    p.add_argument("--taxonomy", help="taxonomy config file (JSON/TOML); default $MMSSR_TAXONOMY or the paper's")
    p.add_argument(
        "--profile",
        choices=("reference", "clean", "native"),
        default=None,
        help="input profile: reference (default: the released scorer's exact inputs), clean "
        "(same, without the reference's Question: strip quirk) or native (the model's own processor)",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress on stderr (default: a bar on a terminal, else a line every 2 s)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def backend_options(args: argparse.Namespace) -> dict:
    """Map CLI flags onto get_backend(name, **options): only the flags a backend understands."""
    opts: dict = {}
    name = args.backend

    def put(key, value):
        if value is not None:
            opts[key] = value

    given = {
        "--model": args.model,
        "--base-url": args.base_urls,
        "--concurrency": args.concurrency,
        "--timeout": args.timeout,
        "--device": args.device,
        "--dtype": args.dtype,
        "--tensor-parallel-size": args.tensor_parallel_size,
        "--data-parallel-size": args.data_parallel_size,
        "--api-key-env": args.api_key_env,
        "--revision": args.revision,
    }
    allowed = {
        "rules": set(),
        "transformers": {"--model", "--device", "--dtype", "--revision"},
        "vllm": {"--model", "--tensor-parallel-size", "--data-parallel-size", "--dtype", "--revision"},
        "openai": {"--model", "--base-url", "--concurrency", "--timeout", "--api-key-env", "--revision"},
    }[name]
    stray = [flag for flag, v in given.items() if v is not None and flag not in allowed]
    if stray:
        raise CommandError(f"{', '.join(stray)} do(es) not apply to the {name} backend")
    if name == "transformers":
        if not args.model:
            raise CommandError("the transformers backend needs --model PATH (a local checkpoint directory)")
        put("model", args.model), put("device", args.device), put("dtype", args.dtype)
    elif name == "vllm":
        if not args.model:
            raise CommandError("the vllm backend needs --model PATH_OR_NAME")
        put("model", args.model)
        put("tensor_parallel_size", args.tensor_parallel_size)
        put("data_parallel_size", args.data_parallel_size)
        put("dtype", args.dtype)
    elif name == "openai":
        if not args.base_urls:
            raise CommandError("the openai backend needs --base-url URL (repeat it for several replicas)")
        opts["base_urls"] = list(args.base_urls)
        put("model", args.model), put("concurrency", args.concurrency), put("timeout", args.timeout)
        put("api_key_env", args.api_key_env)
    if name != "rules":
        put("revision", args.revision)
    opts.update(parse_options(args.option, "--option"))
    return opts


def parse_options(items: list[str], flag: str) -> dict:
    """KEY=VALUE pairs as keyword arguments (values parsed as JSON when they parse)."""
    opts: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise CommandError(f"{flag} {item!r}: expected KEY=VALUE")
        try:
            opts[key.replace("-", "_")] = json.loads(raw)
        except ValueError:
            opts[key.replace("-", "_")] = raw
    return opts


class SourceBars:
    """The `score_source` progress callback: one progress bar (or plain lines) per source and run."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar: Progress | None = None
        self.source: str | None = None

    def __call__(self, p) -> None:
        if self.bar is None or self.source != p.source or self.bar.finished and p.done < p.total:
            self.close()  # a new source, or the second backend of a split scorer
            self.bar, self.source = Progress(f"score {p.source}", p.total, enabled=self.enabled), p.source
        self.bar.update(p.done, p.total, skipped=p.cached, note=f"{p.cached:,} cached")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _check_numbers(args: argparse.Namespace) -> tuple[str, ...]:
    from mmssr_core.scoring.runner import TARGET_GROUPS

    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    if not targets or any(t not in TARGET_GROUPS for t in targets):
        raise CommandError(f"--targets must list some of {', '.join(TARGET_GROUPS)}")
    if args.batch_size is not None and args.batch_size < 1:
        raise CommandError("--batch-size must be >= 1")
    if args.chunk_size < 1:
        raise CommandError("--chunk-size must be >= 1")
    if args.flush_seconds is not None and not args.flush_seconds > 0:
        raise CommandError("--flush-seconds must be positive")
    if args.styles_option and not args.styles_backend:
        raise CommandError("--styles-option goes with --styles-backend")
    return targets


def _start(name: str, options: dict):
    from mmssr_core.scoring.base import get_backend

    try:
        return get_backend(name, **options)
    except (ValueError, TypeError, OSError, ImportError) as exc:
        raise CommandError(f"cannot start the {name} backend: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from mmssr_core.commands._common import ingested_sources, taxonomy_or_error
    from mmssr_core.scoring.split import score_source_split
    from mmssr_core.store import StoreError

    store = open_store(args)
    targets = _check_numbers(args)
    sources = ingested_sources(store, args.source)
    taxonomy = taxonomy_or_error(args.taxonomy)
    backend = _start(args.backend, backend_options(args))
    styles_backend = None
    bars = SourceBars(enabled=not args.no_progress)
    results = []
    t0 = time.monotonic()
    try:
        if args.styles_backend:
            styles_backend = _start(args.styles_backend, parse_options(args.styles_option, "--styles-option"))
        for source in sources:
            try:
                res = score_source_split(
                    store,
                    source,
                    backend,
                    styles_backend,
                    taxonomy=taxonomy,
                    targets=targets,
                    batch_size=args.batch_size,
                    chunk_size=args.chunk_size,
                    progress=bars,
                    profile=args.profile,
                    flush_seconds=args.flush_seconds,
                )
            except StoreError as exc:
                raise CommandError(str(exc)) from None
            except RuntimeError as exc:  # a backend that cannot start (server unreachable, no model)
                raise CommandError(f"{source}: {exc}") from None
            finally:
                bars.close()
            results.append(res)
            if not args.json:
                print(
                    f"{source}: {res.total} samples, {res.scored} scored, {res.cached} cached, "
                    f"{res.failed} failed in {res.seconds:.1f}s ({res.identity})"
                )
    finally:
        for b in (backend, styles_backend):
            if b is not None:
                b.close()
    failed = sum(r.failed for r in results)
    if failed:
        reasons: dict[str, int] = {}
        for r in results:
            for k, v in r.failures_by_reason.items():
                reasons[k] = reasons.get(k, 0) + v
        print(
            f"mmssr score: {failed} sample(s) have failed targets ({', '.join(f'{k}: {v}' for k, v in sorted(reasons.items()))}); "
            "see the score_failures table; rerun to retry them",
            file=sys.stderr,
        )
    if args.json:
        print_json_line(
            {
                "scored": sum(r.scored for r in results),
                "cached": sum(r.cached for r in results),
                "failed": failed,
                "total": sum(r.total for r in results),
                "seconds": round(time.monotonic() - t0, 3),
                "scorer": results[0].identity if results else None,
                "sources": {r.source: r.to_dict() for r in results},
            }
        )
    return 0
