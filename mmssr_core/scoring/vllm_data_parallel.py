"""Data parallelism for the vLLM backend: one engine per GPU group, each in its own process.

vLLM refuses `LLM(data_parallel_size>1)` inside one process, so each rank is a worker process that pins
its GPUs with CUDA_VISIBLE_DEVICES, builds its own single-rank VLLMBackend and answers jobs from a queue.
A batch is split round-robin across the ranks and merged back in order.
"""

from __future__ import annotations

import os
from typing import Any


def device_groups(data_parallel_size: int, tensor_parallel_size: int) -> list[str]:
    """CUDA_VISIBLE_DEVICES of each rank: consecutive groups of tensor_parallel_size devices."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    need = data_parallel_size * tensor_parallel_size
    devices = visible.split(",") if visible else [str(i) for i in range(need)]
    if len(devices) < need:
        raise RuntimeError(
            f"data_parallel_size={data_parallel_size} x tensor_parallel_size={tensor_parallel_size} "
            f"needs {need} GPUs, CUDA_VISIBLE_DEVICES lists {len(devices)}"
        )
    tp = tensor_parallel_size
    return [",".join(devices[r * tp : (r + 1) * tp]) for r in range(data_parallel_size)]


class DataParallelEngines:
    """Worker processes, one per rank, started from a parent VLLMBackend's settings."""

    def __init__(self, parent):
        import multiprocessing as mp

        ctx = mp.get_context(parent.mp_context)
        skip = ("model", "tensor_parallel_size", "dtype", "revision")
        options = dict(
            model=parent.model,
            tensor_parallel_size=parent.tensor_parallel_size,
            data_parallel_size=1,
            dtype=parent.dtype,
            revision=parent.revision,
            batch_size=parent.batch_size,
            max_style_tokens=parent.max_style_tokens,
            fallback_logprobs=parent.fallback_logprobs,
            model_name=parent.model_name,
            **{k: v for k, v in parent.engine_kwargs.items() if k not in skip},
        )
        self.workers = []
        for devices in device_groups(parent.data_parallel_size, parent.tensor_parallel_size):
            jobs, answers = ctx.Queue(), ctx.Queue()
            proc = ctx.Process(target=_worker, args=(devices, options, jobs, answers), daemon=True)
            proc.start()
            self.workers.append((proc, jobs, answers))

    def run(self, kind: str, requests, queries, prompts) -> list[Any]:
        n = len(self.workers)
        shards = [list(range(r, len(requests), n)) for r in range(n)]
        for (_, jobs, _), idx in zip(self.workers, shards):
            jobs.put((kind, [requests[i] for i in idx], queries, prompts))
        merged: list[Any] = [None] * len(requests)
        for (_, _, answers), idx in zip(self.workers, shards):
            status, payload = answers.get()
            if status != "ok":
                raise RuntimeError(f"vLLM data-parallel worker failed: {payload}")
            for i, value in zip(idx, payload):
                merged[i] = value
        return merged

    def info(self) -> list[dict]:
        for _, jobs, _ in self.workers:
            jobs.put(("info", None, None, None))
        return [answers.get()[1] for _, _, answers in self.workers]

    def close(self) -> None:
        for proc, jobs, _ in self.workers:
            jobs.put(None)
            proc.join(timeout=60)
        self.workers = []


def _worker(devices: str, options: dict, jobs, answers) -> None:
    """One data-parallel rank: its own GPUs, its own engine, jobs until None."""
    os.environ["CUDA_VISIBLE_DEVICES"] = devices
    from mmssr_core.scoring.vllm_backend import VLLMBackend

    backend = VLLMBackend(**options)
    while True:
        job = jobs.get()
        if job is None:
            break
        kind, requests, queries, prompts = job
        try:
            if kind == "digits":
                answers.put(("ok", backend.digit_distributions(requests, queries, prompts)))
            elif kind == "styles":
                answers.put(("ok", backend.styles(requests, prompts)))
            else:
                answers.put(
                    ("ok", {"devices": os.environ["CUDA_VISIBLE_DEVICES"], "engine_kwargs": backend.engine_kwargs})
                )
        except Exception as exc:  # report, never hang the parent
            answers.put(("error", f"{type(exc).__name__}: {exc}"))
    backend.close()
