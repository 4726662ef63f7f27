"""Query embeddings: the service's encoder, unit norm, cached on disk by text hash."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from router_models.contract import DEFAULT_EMBEDDING_MODEL_ID, EMBEDDING_DIM
from router_models.features import CACHE_ENV, Embedder, default_cache_dir, embed_texts, text_key

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

TEXTS = ["What is 2 + 2?", "Name the capital of France.", "What is 2 + 2?"]


def test_embeddings_match_the_encoder_and_are_unit_norm(
    encoder: SentenceTransformer, tmp_path: Path
) -> None:
    vectors = Embedder(encoder=encoder, cache_dir=tmp_path, progress=False)(TEXTS)
    assert vectors.shape == (3, EMBEDDING_DIM) and vectors.dtype == np.float32
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(1.0, abs=1e-5)
    direct = encoder.encode(TEXTS[:2], normalize_embeddings=True, convert_to_numpy=True)
    assert vectors[:2] == pytest.approx(direct, abs=1e-5)
    assert np.array_equal(vectors[0], vectors[2])


def test_cache_hit_needs_no_encoder(encoder: SentenceTransformer, tmp_path: Path) -> None:
    first = Embedder(encoder=encoder, cache_dir=tmp_path, batch_size=1, progress=False)(TEXTS)
    assert len(list(tmp_path.glob("*.keys.npy"))) == 1
    # A missing encoder directory: loading it would raise, so this proves the cache served it.
    cached = Embedder(model_path=tmp_path / "no-model", cache_dir=tmp_path, progress=False)
    assert np.array_equal(cached(list(reversed(TEXTS))), first[::-1])
    with pytest.raises(FileNotFoundError):
        cached(["a text that was never embedded"])


def test_new_texts_add_a_chunk_and_keys_separate_models(
    encoder: SentenceTransformer, tmp_path: Path
) -> None:
    Embedder(encoder=encoder, cache_dir=tmp_path, progress=False)(TEXTS[:1])
    Embedder(encoder=encoder, cache_dir=tmp_path, progress=False)(TEXTS[:2])
    assert len(list(tmp_path.glob("*.keys.npy"))) == 2
    other = Embedder(model_path=tmp_path / "no-model", model_id="other/model", cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError):
        other(TEXTS[:1])  # same text, other encoder id: not a cache hit
    assert not list(tmp_path.glob(".*.tmp"))


def test_chunks_and_no_cache(encoder: SentenceTransformer, tmp_path: Path) -> None:
    texts = [f"question number {i}" for i in range(5)]
    chunked = Embedder(encoder=encoder, cache_dir=tmp_path, chunk_size=2, progress=False)(texts)
    assert len(list(tmp_path.glob("*.vecs.npy"))) == 3
    memory = embed_texts(texts, encoder=encoder, cache_dir=False, progress=False)
    assert memory == pytest.approx(chunked, abs=1e-5)


def test_text_key_and_default_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = text_key(DEFAULT_EMBEDDING_MODEL_ID, "hello")
    assert len(key) == 64 and key != text_key("other", "hello")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv(CACHE_ENV)
    assert default_cache_dir() == Path.home() / ".cache" / "dars-router" / "embeddings"


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        Embedder(batch_size=0)
    with pytest.raises(TypeError, match="strings"):
        Embedder(cache_dir=False)([1])  # type: ignore[list-item]
