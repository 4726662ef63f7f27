"""Which sentence encoder serves: torch (sentence-transformers) or ONNX Runtime, on which device.

``DARS_EMBEDDING_BACKEND``:

- ``auto`` (default): ONNX Runtime on the CPU, where it measured 3-4x as fast as torch at
  batch 1 and 1.3x at batch 32 (bench/RESULTS.md); torch on CUDA, where no faster ONNX path
  was measured. If the ONNX graph cannot be made (an unusual model directory, export
  failure), ``auto`` logs why and serves with torch.
- ``torch``: sentence-transformers, as before.
- ``onnx`` / ``onnx-int8``: the exported graph (fp32, or with int8 weights; the effect of int8
  on routing is in bench/RESULTS.md); a failure to make it stops the start.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeAlias

from router_models.contract import default_encoder_path

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from app.onnx_encoder import OnnxEncoder
    from router_models.encoder import MeanPoolingEncoder

__all__ = [
    "Backend",
    "Encoder",
    "default_passes",
    "default_threads",
    "load_onnx_encoder",
    "resolve_backend",
    "resolve_device",
]

Backend: TypeAlias = Literal["torch", "onnx", "onnx-int8"]
Encoder: TypeAlias = "SentenceTransformer | MeanPoolingEncoder | OnnxEncoder"


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; other values pass through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_backend(backend: str, device: str) -> Backend:
    """The backend ``auto`` stands for on ``device``; explicit choices pass through."""
    if backend == "auto":
        return "torch" if device.startswith("cuda") else "onnx"
    if backend not in ("torch", "onnx", "onnx-int8"):
        raise ValueError(f"unknown embedding backend {backend!r}")
    return backend  # type: ignore[return-value]


def load_onnx_encoder(
    path: Path | None, *, int8: bool, device: str, intra_op_threads: int | None
) -> OnnxEncoder:
    """The ONNX encoder for the model directory ``path`` (default: the bundled one).

    Exports and caches the graph on first use (:func:`app.onnx_export.cached_onnx_encoder`).
    """
    from app.onnx_encoder import OnnxEncoder
    from app.onnx_export import cached_onnx_encoder, encoder_spec

    model_dir = Path(path) if path is not None else default_encoder_path()
    spec = encoder_spec(model_dir)
    graph = cached_onnx_encoder(model_dir, int8=int8)
    threads = intra_op_threads if intra_op_threads is not None else default_threads()
    return OnnxEncoder(graph, spec, device=device, intra_op_threads=threads)


def default_passes(backend: str, device: str) -> int:
    """Batches encoding at once when ``DARS_EMBEDDING_PASSES`` is unset: 2 for ONNX on a CPU.

    While one batch encodes, the next gathers and encodes beside it on a thread of its own, so
    the core the event loop leaves idle between requests encodes too. On the 2-core reference
    machine two one-thread passes gave 1.3-1.6x the cache-miss throughput of one at c=64, with
    the same CPU per request (bench/results/miss-path.md); two intra-op threads in one pass
    gave less (their parallel loops wait on each other when the event loop holds a core).
    torch, and any CUDA device, keep one pass: torch's thread pool is process-wide.
    """
    return 2 if backend.startswith("onnx") and not device.startswith("cuda") else 1


def default_threads(cpus: int | None = None, passes: int = 1) -> int:
    """Encoder threads per pass when ``DARS_EMBEDDING_THREADS`` is unset: every core but one,
    shared among ``passes`` concurrent passes.

    The event loop (HTTP parsing, the upstream call) needs a core of its own while a batch
    encodes; on the 2-core reference machine one encoder thread gave more cache-miss
    throughput at concurrency 64 and lower latency at 1 than two (bench/RESULTS.md).
    """
    count = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, (count - 1) // passes)
