"""Scale-out benchmark: the same scoring work through 1 and through 2 OpenAI-compatible replicas.

Each replica is a local test server (`mmssr_core.testing.testserver`) in its own process that answers at a
fixed service rate (`--rate` completions per second, FIFO, whatever the concurrency), standing in for one
vLLM data-parallel replica whose GPU is the bottleneck. The work: the capability scores (14 queries per
sample) of an N-sample source ingested from the real pools in ../shared/data, through `score_source`
with the openai backend (fresh store and cache per configuration, so nothing is reused). Prints samples/s
for 1 and 2 replicas and their ratio (goal: >= 1.8x), and the load average at start and end, for two
workloads:
- `text-only`: the samples without their images: what the replicas alone allow (the client is cheap);
- `images`: the real samples: the client also decodes, resizes and PNG-encodes one image per sample,
  which the openai backend does for a whole batch before sending its requests, so that CPU time does not
  overlap with serving and caps the speed-up on a small client machine.

    .venv/bin/python benchmarks/scaleout.py                   # N = 48, rate = 60/s per replica, both workloads
    .venv/bin/python benchmarks/scaleout.py --workload images --n 128 --rate 300 --concurrency 16
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

POOL = "tabmwp_dev1k"

SERVER = """
import signal, sys, threading
from mmssr_core.testing.testserver import TestServer
srv = TestServer(port={port}, rate={rate}).start()
print("ready", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
stop.wait()
srv.stop()
"""


def shared_data() -> Path:
    env = os.environ.get("MMSSR_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_replicas(k: int, rate: float) -> list[tuple[subprocess.Popen, str]]:
    out = []
    for _ in range(k):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER.format(port=port, rate=rate)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
        )
        line = proc.stdout.readline()
        if "ready" not in line:
            proc.kill()
            raise RuntimeError(f"test server did not start: {line}{proc.stdout.read()}")
        out.append((proc, f"http://127.0.0.1:{port}/v1"))
    return out


def stop_replicas(replicas) -> None:
    for proc, _ in replicas:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc, _ in replicas:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def build_source(work: Path, n: int):
    """An N-sample LLaVA source from the real pool (unique conversations so every sample is new)."""
    from mmssr_core.ingest import ingest_source
    from mmssr_core.store import Store

    data = shared_data() / POOL
    base = json.loads((data / "pool.llava.json").read_text())
    recs = []
    for i in range(n):
        rec = json.loads(json.dumps(base[i % len(base)]))
        rec["id"] = f"bench_{i:05d}"
        rec["conversations"][-1]["value"] += f" [{i}]"
        recs.append(rec)
    src = work / "pool.llava.json"
    src.write_text(json.dumps(recs))
    store = Store(work / "template")
    res = ingest_source(src, "bench", store, image_root=data)
    return store.read("raw_pool", "bench"), res


def run_once(work: Path, raw, urls: list[str], concurrency: int, batch: int) -> dict:
    from mmssr_core.scoring.openai_backend import OpenAIBackend
    from mmssr_core.scoring.runner import score_source
    from mmssr_core.store import Store
    from mmssr_core.taxonomy import load_taxonomy

    root = work / f"store_{len(urls)}"
    shutil.rmtree(root, ignore_errors=True)
    store = Store(root)
    store.write("raw_pool", "bench", raw)
    backend = OpenAIBackend(base_urls=urls, model="test-scorer", concurrency=concurrency, timeout=120)
    try:
        backend._resolve_model()
        backend._digit_token_ids()  # warm-up outside the timed region (one-off /tokenize look-ups)
        t0 = time.perf_counter()
        result = score_source(
            store,
            "bench",
            backend,
            taxonomy=load_taxonomy(),
            targets=("capabilities",),
            batch_size=batch,
            chunk_size=max(batch, 64),
        )
        seconds = time.perf_counter() - t0
        stats = backend.stats()
    finally:
        backend.close()
    if result.failed:
        raise RuntimeError(f"{result.failed} samples failed: {result.failures_by_reason}")
    return {
        "replicas": len(urls),
        "samples": result.total,
        "seconds": round(seconds, 3),
        "samples_per_s": round(result.total / seconds, 2),
        "requests_per_replica": [r["served"] for r in stats["replicas"]],
    }


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=48, help="samples (default 48)")
    ap.add_argument("--rate", type=float, default=60.0, help="completions/s each replica serves (default 60)")
    ap.add_argument("--workload", choices=("both", "text-only", "images"), default="both")
    ap.add_argument("--concurrency", type=int, default=8, help="in-flight requests per replica (default 8)")
    ap.add_argument("--batch", type=int, default=32, help="samples per backend call (default 32)")
    ap.add_argument("--json", action="store_true", help="print one JSON line with the figures last")
    args = ap.parse_args(argv)

    print(f"load average at start: {load()}", file=sys.stderr, flush=True)
    work = Path(tempfile.mkdtemp(prefix="mmssr-scaleout-bench-"))
    try:
        import polars as pl

        raw, _ = build_source(work, args.n)
        queries = 14
        print(
            f"{raw.height} samples x {queries} capability queries; each replica serves {args.rate:g} req/s "
            f"(ideal: {args.rate / queries:.2f} samples/s per replica); client concurrency "
            f"{args.concurrency}/replica, batch {args.batch}",
            file=sys.stderr,
        )
        workloads = ("text-only", "images") if args.workload == "both" else (args.workload,)
        summary = {}
        for workload in workloads:
            data = raw
            if workload == "text-only":
                data = raw.with_columns(pl.col("image_files").list.head(0))
            results = []
            for k in (1, 2):
                replicas = start_replicas(k, args.rate)
                try:
                    results.append(run_once(work, data, [u for _, u in replicas], args.concurrency, args.batch))
                finally:
                    stop_replicas(replicas)
                r = results[-1]
                print(
                    f"[{workload:9}] {k} replica{'s' if k > 1 else ' '}: {r['samples_per_s']:8.2f} samples/s "
                    f"({r['samples']} samples in {r['seconds']:.2f}s; requests per replica "
                    f"{r['requests_per_replica']})"
                )
            ratio = results[1]["samples_per_s"] / results[0]["samples_per_s"]
            print(f"[{workload:9}] speed-up with 2 replicas: {ratio:.2f}x (goal >= 1.8x)")
            summary[workload] = {"results": results, "ratio": round(ratio, 3)}
        print(f"load average at end: {load()}", file=sys.stderr, flush=True)
        if args.json:
            print(
                json.dumps(
                    {
                        "workloads": summary,
                        "rate": args.rate,
                        "concurrency": args.concurrency,
                        "n": args.n,
                        "load_end": os.getloadavg(),
                    }
                )
            )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
