"""Throughput of the bare sentence encoder, outside the service: the ceiling for cache misses.

Each backend (torch via sentence-transformers, ONNX Runtime fp32 and int8, see
:mod:`app.encoders`) embeds batches of 1, 32 and 256 queries of the kind the load generator
sends, with one thread and with all cores. Passes repeat until ``min_time_s`` has passed (at
least ``min_passes``).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from bench._harness import unique_query

__all__ = ["BATCHES", "EncoderRun", "measure_encoders"]

BATCHES = (1, 32, 256)


@dataclass(frozen=True)
class EncoderRun:
    """One backend at one batch size: milliseconds per forward pass and texts per second."""

    backend: str
    threads: int
    batch: int
    ms_per_pass: float
    texts_per_s: float


def measure_encoders(
    backends: tuple[str, ...],
    thread_counts: tuple[int, ...],
    *,
    min_time_s: float = 1.5,
    min_passes: int = 2,
) -> tuple[list[EncoderRun], dict[str, str]]:
    """Runs per backend, thread count and batch; failures map a backend to its reason."""
    runs: list[EncoderRun] = []
    failures: dict[str, str] = {}
    for backend in backends:
        for threads in thread_counts:
            try:
                encoder = _load(backend, threads)
            except Exception as exc:  # report, do not abort the whole benchmark
                failures[backend] = f"{type(exc).__name__}: {exc}"
                break
            runs.extend(_time_batches(encoder, backend, threads, min_time_s, min_passes))
    return runs, failures


def _time_batches(
    encoder: Any, backend: str, threads: int, min_time_s: float, min_passes: int
) -> list[EncoderRun]:
    runs = []
    for batch in BATCHES:
        run_id = uuid.uuid4().hex[:8]  # the load generator's id shape: the same token count
        encoder.encode([unique_query(run_id, i) for i in range(batch)])  # a new shape allocates
        passes, started = 0, time.perf_counter()
        while passes < min_passes or time.perf_counter() - started < min_time_s:
            encoder.encode([unique_query(run_id, passes * batch + i) for i in range(batch)])
            passes += 1
        elapsed = time.perf_counter() - started
        per_pass = 1000 * elapsed / passes
        runs.append(EncoderRun(backend, threads, batch, per_pass, passes * batch / elapsed))
    return runs


def _load(backend: str, threads: int) -> Any:
    if backend == "torch":
        import torch

        from router_models.contract import load_encoder

        torch.set_num_threads(threads)
        return load_encoder(device="cpu")
    from app.encoders import load_onnx_encoder

    return load_onnx_encoder(
        None, int8=backend == "onnx-int8", device="cpu", intra_op_threads=threads
    )
