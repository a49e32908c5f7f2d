"""`mmssr serve-vllm`: vLLM's OpenAI-compatible server, set up to feed the scorer an input profile's inputs.

For the `reference` and `clean` profiles the server must run mmssr's vLLM plugin (single-tile model
variant, per-piece tokenizer mode) and mmssr's chat template; this command assembles those flags, binds
to 127.0.0.1 by default (the server has no authentication of its own) and replaces itself with the
server process. `--print` only prints the command, for a launcher or a container entry point.
Everything after `--` is passed to vLLM unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint directory (see `mmssr convert-checkpoint`) or name")
    p.add_argument(
        "--profile",
        choices=("reference", "clean", "native"),
        default="reference",
        help="input profile the clients will score with (default: reference)",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; see the scale-out docs)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--served-model-name", help="model name clients send (default: vLLM's, the --model value)")
    p.add_argument("--print", action="store_true", dest="print_only", help="print the command instead of running it")
    p.add_argument("vllm_args", nargs=argparse.REMAINDER, help="-- then extra vLLM server arguments")


def server_command(args: argparse.Namespace) -> list[str]:
    from mmssr_core.profiles import get_profile
    from mmssr_core.scoring.chat_template import CHAT_TEMPLATE_FILE
    from mmssr_core.scoring.vllm_plugin import engine_options

    options = engine_options(get_profile(args.profile))
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        args.model,
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--chat-template",
        str(CHAT_TEMPLATE_FILE),
        "--enable-prefix-caching",
        "--limit-mm-per-prompt",
        json.dumps({"image": 1}),
    ]
    if "hf_overrides" in options:
        cmd += ["--hf-overrides", json.dumps(options["hf_overrides"])]
    if "tokenizer_mode" in options:
        cmd += ["--tokenizer-mode", options["tokenizer_mode"]]
    if args.served_model_name:
        cmd += ["--served-model-name", args.served_model_name]
    extra = list(args.vllm_args or [])
    return cmd + (extra[1:] if extra[:1] == ["--"] else extra)


def run(args: argparse.Namespace) -> int:
    from mmssr_core.checkpoint_layout import check_vllm_layout
    from mmssr_core.cli import CommandError

    try:
        check_vllm_layout(args.model)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    cmd = server_command(args)
    if args.print_only:
        print(shlex.join(cmd))
        return 0
    print(f"[serve-vllm] {shlex.join(cmd)}", file=sys.stderr, flush=True)
    os.execv(cmd[0], cmd)  # the server replaces this process: signals reach it directly
    return 0  # pragma: no cover
