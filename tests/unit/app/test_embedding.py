"""Micro-batching embedder and the cached query embedder, on the real all-MiniLM-L6-v2."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from app.cache import MemoryCache, cache_key
from app.embedding import BatchingEmbedder, QueryEmbedder, build_embedder
from app.errors import RouterUnavailable
from app.metrics import Metrics
from app.settings import Settings
from router_models.contract import DEFAULT_EMBEDDING_MODEL_ID, EMBEDDING_DIM, default_encoder_path

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# Batched and one-by-one forward passes differ only by float32 rounding (~1e-7).
ATOL = 1e-6
TEXTS = [f"Question {i}: why is the sky blue?" + " Explain it simply." * (i % 4) for i in range(20)]


class WrappedEncoder:
    """The real encoder behind a hook, to make one batch fail or to hold a pass in flight."""

    def __init__(self, encoder: SentenceTransformer) -> None:
        self._encoder = encoder
        self.device = encoder.device
        self.poison: str | None = None
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def get_embedding_dimension(self) -> int:
        return EMBEDDING_DIM

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        if self.gate is not None:
            self.entered.set()
            self.gate.wait(timeout=30)
        if self.poison is not None and self.poison in texts:
            raise RuntimeError("the encoder choked on this batch")
        return self._encoder.encode(texts, **kwargs)  # type: ignore[no-any-return]


def pass_counts(metrics: Metrics) -> tuple[float, float]:
    """(forward passes, texts encoded) as seen by ``dars_embedding_batch_size``."""
    registry = metrics.registry
    count = registry.get_sample_value("dars_embedding_batch_size_count") or 0.0
    total = registry.get_sample_value("dars_embedding_batch_size_sum") or 0.0
    return count, total


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def embedder(
    encoder: SentenceTransformer, metrics: Metrics
) -> AsyncIterator[BatchingEmbedder]:
    embedder = BatchingEmbedder(
        encoder, model_id="test-model", max_batch_size=8, max_wait_ms=20.0, metrics=metrics
    )
    await embedder.start()
    yield embedder
    await embedder.aclose()


@pytest.fixture
def wrapped(encoder: SentenceTransformer) -> Iterator[WrappedEncoder]:
    wrapped = WrappedEncoder(encoder)
    yield wrapped
    if wrapped.gate is not None:
        wrapped.gate.set()  # never leave the worker thread blocked


def test_attributes(embedder: BatchingEmbedder) -> None:
    assert embedder.model_id == "test-model"
    assert embedder.dim == EMBEDDING_DIM
    assert embedder.device == "cpu"
    assert embedder.running


async def test_one_embedding_is_normalised_float32(
    embedder: BatchingEmbedder, encoder: SentenceTransformer, metrics: Metrics
) -> None:
    vector = await embedder.embed("How many legs does a spider have?")

    assert vector.dtype == np.float32
    assert vector.shape == (EMBEDDING_DIM,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    expected = encoder.encode(["How many legs does a spider have?"], normalize_embeddings=True)[0]
    np.testing.assert_allclose(vector, expected, atol=ATOL)
    latency = metrics.registry.get_sample_value(
        "dars_latency_seconds_count", {"stage": "embedding"}
    )
    assert latency == 1
    assert pass_counts(metrics) == (1, 1)


async def test_concurrent_calls_share_forward_passes_and_match_one_by_one(
    embedder: BatchingEmbedder, encoder: SentenceTransformer, metrics: Metrics
) -> None:
    vectors = await asyncio.gather(*(embedder.embed(text) for text in TEXTS))

    passes, texts = pass_counts(metrics)
    assert texts == len(TEXTS)
    # 20 texts queued at once with at most 8 per pass: 3 passes instead of 20.
    assert passes == 3
    for text, vector in zip(TEXTS, vectors, strict=True):
        expected = encoder.encode([text], normalize_embeddings=True)[0]
        np.testing.assert_allclose(vector, expected, atol=ATOL)


async def test_zero_wait_still_batches_what_is_queued(
    encoder: SentenceTransformer, metrics: Metrics
) -> None:
    embedder = BatchingEmbedder(
        encoder, model_id="m", max_batch_size=32, max_wait_ms=0.0, metrics=metrics
    )
    await embedder.start()
    try:
        vectors = await asyncio.gather(*(embedder.embed(text) for text in TEXTS[:6]))
    finally:
        await embedder.aclose()

    assert pass_counts(metrics) == (1, 6)
    assert len({v.tobytes() for v in vectors}) == 6


async def test_a_failing_batch_fails_only_its_own_callers(
    wrapped: WrappedEncoder, metrics: Metrics
) -> None:
    embedder = BatchingEmbedder(
        wrapped,  # type: ignore[arg-type]
        model_id="m",
        max_batch_size=2,
        max_wait_ms=20.0,
        metrics=metrics,
    )
    await embedder.start()
    wrapped.poison = "boom"
    try:
        results = await asyncio.gather(
            *(embedder.embed(t) for t in ["boom", "a", "b", "c"]), return_exceptions=True
        )
        after = await embedder.embed("still alive")
    finally:
        await embedder.aclose()

    assert all(isinstance(r, RouterUnavailable) for r in results[:2])  # batch 1: boom, a
    assert isinstance(results[0], RouterUnavailable)
    assert isinstance(results[0].__cause__, RuntimeError)
    assert all(isinstance(r, np.ndarray) for r in results[2:])  # batch 2: b, c
    assert after.shape == (EMBEDDING_DIM,)


async def test_aclose_fails_in_flight_and_queued_callers(wrapped: WrappedEncoder) -> None:
    embedder = BatchingEmbedder(wrapped, model_id="m", max_batch_size=1, max_wait_ms=0.0)  # type: ignore[arg-type]
    await embedder.start()
    wrapped.gate = threading.Event()
    tasks = [asyncio.create_task(embedder.embed(t)) for t in ["in flight", "queued 1", "queued 2"]]
    assert await asyncio.to_thread(wrapped.entered.wait, 30)

    await embedder.aclose()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert [type(r) for r in results] == [RouterUnavailable] * 3
    assert not embedder.running
    with pytest.raises(RouterUnavailable):
        await embedder.embed("after close")


class PairedEncoder:
    """The real encoder, but each call waits until a second call is inside it too (or fails).

    Two passes can only meet here if they run at the same time, on two threads.
    """

    def __init__(self, encoder: SentenceTransformer) -> None:
        self._encoder = encoder
        self.device = encoder.device
        self.barrier: threading.Barrier | None = None

    def get_embedding_dimension(self) -> int:
        return EMBEDDING_DIM

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        if self.barrier is not None:
            self.barrier.wait(timeout=30)
        return self._encoder.encode(texts, **kwargs)  # type: ignore[no-any-return]


async def test_two_passes_encode_at_once_and_match_one_by_one(
    encoder: SentenceTransformer, metrics: Metrics
) -> None:
    paired = PairedEncoder(encoder)
    embedder = BatchingEmbedder(
        paired,  # type: ignore[arg-type]
        model_id="m",
        max_batch_size=2,
        max_wait_ms=0.0,
        max_passes=2,
        metrics=metrics,
    )
    await embedder.start()
    paired.barrier = threading.Barrier(2)  # every pass from here on needs a partner
    try:
        vectors = await asyncio.gather(*(embedder.embed(text) for text in TEXTS[:4]))
    finally:
        await embedder.aclose()

    assert pass_counts(metrics) == (2, 4)
    expected = encoder.encode(TEXTS[:4], normalize_embeddings=True)
    np.testing.assert_allclose(np.stack(vectors), expected, atol=ATOL)


async def test_aclose_fails_the_callers_of_every_pass_in_flight(wrapped: WrappedEncoder) -> None:
    embedder = BatchingEmbedder(
        wrapped,  # type: ignore[arg-type]
        model_id="m",
        max_batch_size=1,
        max_wait_ms=0.0,
        max_passes=2,
    )
    await embedder.start()
    wrapped.gate = threading.Event()
    texts = ["pass 1", "pass 2", "queued"]
    tasks = [asyncio.create_task(embedder.embed(t)) for t in texts]
    assert await asyncio.to_thread(wrapped.entered.wait, 30)

    await embedder.aclose()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert [type(r) for r in results] == [RouterUnavailable] * 3
    assert not embedder._passes


async def test_a_cancelled_caller_does_not_disturb_the_others(
    embedder: BatchingEmbedder, encoder: SentenceTransformer
) -> None:
    cancelled = asyncio.create_task(embedder.embed("never mind"))
    others = [asyncio.create_task(embedder.embed(t)) for t in TEXTS[:3]]
    await asyncio.sleep(0)
    cancelled.cancel()

    vectors = await asyncio.gather(*others)

    assert cancelled.cancelled()
    expected = encoder.encode(TEXTS[:3], normalize_embeddings=True)
    np.testing.assert_allclose(np.stack(vectors), expected, atol=ATOL)


async def test_embed_before_start_is_unavailable(encoder: SentenceTransformer) -> None:
    embedder = BatchingEmbedder(encoder, model_id="m")

    assert not embedder.running
    with pytest.raises(RouterUnavailable):
        await embedder.embed("hello")


@pytest.mark.parametrize(("size", "wait", "passes"), [(0, 1.0, 1), (4, -1.0, 1), (4, 1.0, 0)])
def test_bad_batching_options(
    encoder: SentenceTransformer, size: int, wait: float, passes: int
) -> None:
    with pytest.raises(ValueError):
        BatchingEmbedder(
            encoder, model_id="m", max_batch_size=size, max_wait_ms=wait, max_passes=passes
        )


# --- QueryEmbedder


async def test_query_embedder_misses_then_hits(embedder: BatchingEmbedder) -> None:
    cache_metrics = Metrics()
    query = QueryEmbedder(embedder, MemoryCache(100, metrics=cache_metrics))

    first, first_hit = await query.embed("What is the capital of France?")
    second, second_hit = await query.embed("What is the capital of France?")

    assert (first_hit, second_hit) == (False, True)
    np.testing.assert_array_equal(first, second)
    registry = cache_metrics.registry
    assert (
        registry.get_sample_value(
            "dars_cache_requests_total", {"backend": "memory", "result": "hit"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "dars_cache_requests_total", {"backend": "memory", "result": "miss"}
        )
        == 1
    )


async def test_query_embedder_keys_by_model_and_ignores_wrong_shapes(
    embedder: BatchingEmbedder,
) -> None:
    cache = MemoryCache(100)
    await cache.set(cache_key(embedder.model_id, "hello"), np.ones(7, dtype=np.float32))
    query = QueryEmbedder(embedder, cache)

    vector, hit = await query.embed("hello")

    assert not hit
    assert vector.shape == (EMBEDDING_DIM,)
    stored = await cache.get(cache_key(embedder.model_id, "hello"))
    assert stored is not None
    np.testing.assert_array_equal(stored, vector)
    assert await cache.get(cache_key("another-model", "hello")) is None


# --- build_embedder


def test_build_embedder_with_the_packaged_model() -> None:
    import torch

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, embedding_device="cpu", torch_threads=2, batch_max_size=5
    )
    try:
        embedder = build_embedder(settings, Metrics())
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)

    assert embedder.model_id == DEFAULT_EMBEDDING_MODEL_ID
    assert embedder.dim == EMBEDDING_DIM
    assert embedder.device == "cpu"
    assert embedder.max_batch_size == 5


def test_build_embedder_names_other_directories_by_their_name(tmp_path: Path) -> None:
    model_dir = tmp_path / "my-encoder"
    model_dir.mkdir()
    for entry in default_encoder_path().iterdir():
        (model_dir / entry.name).symlink_to(entry)
    settings = Settings(_env_file=None, embedding_model_path=model_dir, embedding_device="cpu")  # type: ignore[call-arg]

    embedder = build_embedder(settings, Metrics())

    assert embedder.model_id == "my-encoder"


def test_build_embedder_maps_a_missing_model_to_router_unavailable(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, embedding_model_path=tmp_path / "absent", embedding_device="cpu"
    )

    with pytest.raises(RouterUnavailable, match="embedding model"):
        build_embedder(settings, Metrics())


async def test_a_lone_caller_does_not_wait_for_company(
    encoder: SentenceTransformer, metrics: Metrics
) -> None:
    """With a minute's wait configured, one-at-a-time calls still finish: no pass had company."""
    embedder = BatchingEmbedder(
        encoder, model_id="m", max_batch_size=8, max_wait_ms=60_000.0, metrics=metrics
    )
    await embedder.start()
    try:
        for text in TEXTS[:3]:
            await asyncio.wait_for(embedder.embed(text), timeout=30)
    finally:
        await embedder.aclose()
    assert pass_counts(metrics) == (3, 3)


async def test_after_a_shared_pass_the_next_text_waits_for_company(
    encoder: SentenceTransformer, metrics: Metrics
) -> None:
    embedder = BatchingEmbedder(
        encoder, model_id="m", max_batch_size=2, max_wait_ms=60_000.0, metrics=metrics
    )
    await embedder.start()
    try:
        await asyncio.gather(*(embedder.embed(text) for text in TEXTS[:2]))  # one pass of two
        first = asyncio.create_task(embedder.embed(TEXTS[2]))
        await asyncio.sleep(0.05)  # the batcher holds it, waiting for a second text
        assert not first.done()
        second = await asyncio.wait_for(embedder.embed(TEXTS[3]), timeout=30)
        await first
    finally:
        await embedder.aclose()
    assert second.shape == (EMBEDDING_DIM,)
    assert pass_counts(metrics) == (2, 4)
