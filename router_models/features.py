"""Query features: L2-normalised sentence embeddings, cached on disk by text hash.

The router sees exactly what the service will feed it, so embeddings come from the same
encoder (:func:`router_models.contract.load_encoder`). Encoding tens of thousands of prompts
on a CPU takes minutes; the cache makes every later run (another label scheme, another router)
free. The cache is a directory of chunks, each a pair of ``.npy`` files: ``<chunk>.keys.npy``
(sha256 hex of ``model id + NUL + text``) and ``<chunk>.vecs.npy`` (float32 rows). Chunks are
written atomically (vectors first, keys last), so an interrupted run loses at most one chunk
and concurrent writers never corrupt each other.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from router_models.contract import DEFAULT_EMBEDDING_MODEL_ID
from router_models.query_prep import DEFAULT_QUERY_POLICY, QueryPolicy, prepare_prompt

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from router_models.encoder import MeanPoolingEncoder

__all__ = [
    "CACHE_ENV",
    "Embedder",
    "default_cache_dir",
    "embed_texts",
    "prepare_prompts",
    "text_key",
]

CACHE_ENV = "DARS_EMBEDDING_CACHE"
_KEYS = ".keys.npy"
_VECS = ".vecs.npy"


def default_cache_dir() -> Path:
    """``$DARS_EMBEDDING_CACHE`` or ``~/.cache/dars-router/embeddings``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "dars-router" / "embeddings"


def prepare_prompts(
    prompts: Sequence[str], policy: QueryPolicy = DEFAULT_QUERY_POLICY
) -> list[str]:
    """Observation prompts as the router sees them: the service's own query preparation
    (:func:`router_models.query_prep.prepare_query`) of each prompt as one user turn."""
    return [prepare_prompt(prompt, policy) for prompt in prompts]


def text_key(model_id: str, text: str) -> str:
    """Cache key of one text under one encoder: sha256 hex of ``model_id NUL text``."""
    return hashlib.sha256(f"{model_id}\0{text}".encode()).hexdigest()


class Embedder:
    """Embed texts with a cache; callable on a list of texts (usable as a label ``embed`` fn).

    The encoder loads lazily, only when some text is not cached yet. ``encoder`` may be a
    loaded ``SentenceTransformer``; else ``model_path`` (default: the packaged
    all-MiniLM-L6-v2) is loaded on ``device``. ``model_id`` names the encoder in cache keys
    and must change whenever the encoder does. ``cache_dir=False`` disables the cache.
    """

    def __init__(
        self,
        *,
        encoder: SentenceTransformer | MeanPoolingEncoder | None = None,
        model_path: str | os.PathLike[str] | None = None,
        model_id: str = DEFAULT_EMBEDDING_MODEL_ID,
        cache_dir: str | os.PathLike[str] | bool | None = None,
        batch_size: int = 64,
        chunk_size: int = 4096,
        device: str = "auto",
        progress: bool = True,
    ) -> None:
        if batch_size < 1 or chunk_size < 1:
            raise ValueError("batch_size and chunk_size must be >= 1")
        self.encoder = encoder
        self.model_path = model_path
        self.model_id = model_id
        if cache_dir is False:
            self.cache_dir: Path | None = None
        elif cache_dir is None or cache_dir is True:
            self.cache_dir = default_cache_dir()
        else:
            self.cache_dir = Path(cache_dir)
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.device = device
        self.progress = progress
        self._index: dict[str, tuple[str, int]] = {}
        self._chunks: dict[str, npt.NDArray[np.float32]] = {}

    # -- cache ------------------------------------------------------------------------------

    def _refresh_index(self) -> None:
        if self.cache_dir is None or not self.cache_dir.is_dir():
            return
        for keys_file in sorted(self.cache_dir.glob("*" + _KEYS)):
            chunk = keys_file.name[: -len(_KEYS)]
            if chunk in self._chunks:
                continue
            keys = np.load(keys_file)
            self._chunks[chunk] = np.load(self.cache_dir / (chunk + _VECS), mmap_mode="r")
            for row, key in enumerate(keys.tolist()):
                self._index.setdefault(key.decode("ascii"), (chunk, row))

    def _store(self, keys: Sequence[str], vectors: npt.NDArray[np.float32]) -> None:
        """Remember a chunk in memory and, with a cache directory, on disk."""
        chunk = uuid.uuid4().hex
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            for suffix, array in ((_VECS, vectors), (_KEYS, np.asarray(keys, dtype="S64"))):
                tmp = self.cache_dir / f".{chunk}{suffix}.tmp"
                with open(tmp, "wb") as handle:
                    np.save(handle, array)
                os.replace(tmp, self.cache_dir / (chunk + suffix))
        self._chunks[chunk] = vectors
        for row, key in enumerate(keys):
            self._index.setdefault(key, (chunk, row))

    # -- encoding ---------------------------------------------------------------------------

    def _load_encoder(self) -> SentenceTransformer | MeanPoolingEncoder:
        if self.encoder is None:
            from router_models.contract import load_encoder

            path = None if self.model_path is None else Path(self.model_path)
            self.encoder = load_encoder(path, device=self.device)
        return self.encoder

    def _encode(self, texts: Sequence[str], bar: Any) -> npt.NDArray[np.float32]:
        encoder = self._load_encoder()
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            vectors = encoder.encode(
                batch,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            out.append(np.asarray(vectors, dtype=np.float32))
            bar.update(len(batch))
        return np.concatenate(out)

    def __call__(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embeddings of ``texts``, shape ``[len(texts), dim]``, float32, unit L2 norm."""
        from tqdm.auto import tqdm

        texts = list(texts)
        if any(not isinstance(t, str) for t in texts):
            raise TypeError("texts must be strings")
        keys = [text_key(self.model_id, t) for t in texts]
        self._refresh_index()
        missing: dict[str, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in self._index:
                missing.setdefault(key, text)
        if missing:
            todo_keys, todo_texts = list(missing), list(missing.values())
            with tqdm(
                total=len(todo_texts), desc="embedding", unit="text", disable=not self.progress
            ) as bar:
                for start in range(0, len(todo_texts), self.chunk_size):
                    chunk_texts = todo_texts[start : start + self.chunk_size]
                    vectors = self._encode(chunk_texts, bar)
                    self._store(todo_keys[start : start + self.chunk_size], vectors)
        if not texts:
            return np.empty((0, 0), dtype=np.float32)
        rows = [self._index[key] for key in keys]
        return np.stack([np.asarray(self._chunks[chunk][row]) for chunk, row in rows]).astype(
            np.float32, copy=False
        )


def embed_texts(texts: Sequence[str], **options: Any) -> npt.NDArray[np.float32]:
    """One-shot :class:`Embedder` call (options as its keyword arguments)."""
    return Embedder(**options)(texts)
