"""The ONNX Runtime encoder against sentence-transformers, on real prompts and the bundled router.

The graph is exported once per session into a temporary cache (a few seconds on one thread).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from helpers.real_prompts import real_prompts

from app import encoders, onnx_export
from app.cache import MemoryCache
from app.embedding import BatchingEmbedder, QueryEmbedder, build_embedder
from app.errors import RouterUnavailable
from app.main import bundled_router_path
from app.metrics import Metrics
from app.onnx_encoder import OnnxEncoder
from app.onnx_export import cached_onnx_encoder, encoder_spec, fingerprint
from app.scoring import load_router_model
from app.settings import Settings
from router_models.contract import DEFAULT_EMBEDDING_MODEL_ID, EMBEDDING_DIM, default_encoder_path

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

PROMPTS = 200
BATCH = 16  # the service's micro-batches mix short and long texts like this


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("encoders")
    model_dir = default_encoder_path()
    return {
        "onnx": cached_onnx_encoder(model_dir, cache_root=root),
        "onnx-int8": cached_onnx_encoder(model_dir, int8=True, cache_root=root),
    }


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    return real_prompts(PROMPTS)


@pytest.fixture(scope="module")
def torch_vectors(encoder: SentenceTransformer, prompts: list[str]) -> np.ndarray:
    return np.asarray(encoder.encode(prompts, batch_size=BATCH, normalize_embeddings=True))


@pytest.fixture(scope="module")
def fp32_vectors(graphs: dict[str, Path], prompts: list[str]) -> np.ndarray:
    return onnx_vectors(graphs["onnx"], prompts)


def onnx_vectors(graph: Path, prompts: list[str]) -> np.ndarray:
    onnx = OnnxEncoder(graph, encoder_spec(default_encoder_path()), intra_op_threads=1)
    return np.concatenate(
        [onnx.encode(prompts[i : i + BATCH]) for i in range(0, len(prompts), BATCH)]
    )


def decisions(vectors: np.ndarray, prompts: list[str]) -> np.ndarray:
    router = bundled_router_path()
    if router is None:
        pytest.skip("no bundled router (router_models/pretrained/default.onnx)")
    model = load_router_model(
        router, expected_embedding_model=DEFAULT_EMBEDDING_MODEL_ID, expected_dim=EMBEDDING_DIM
    )
    scores = model.score(vectors, [float(len(p)) for p in prompts])
    return np.asarray(scores >= model.default_threshold)


def test_the_prompts_cover_truncation(prompts: list[str]) -> None:
    """Some real prompts exceed 256 tokens, so the truncation path is compared too."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(default_encoder_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    assert len(prompts) == PROMPTS
    assert max(len(e.ids) for e in tokenizer.encode_batch(prompts)) > 256


def test_fp32_embeddings_match_torch(fp32_vectors: np.ndarray, torch_vectors: np.ndarray) -> None:
    vectors = fp32_vectors
    assert vectors.shape == torch_vectors.shape and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(vectors * torch_vectors, axis=1)
    assert cosine.min() >= 0.9999


def test_fp32_routing_decisions_match_torch(
    fp32_vectors: np.ndarray, prompts: list[str], torch_vectors: np.ndarray
) -> None:
    onnx = decisions(fp32_vectors, prompts)
    reference = decisions(torch_vectors, prompts)
    assert 0 < reference.sum() < len(prompts)  # both outcomes occur: the check can fail
    np.testing.assert_array_equal(onnx, reference)


def test_int8_stays_close_to_torch(
    graphs: dict[str, Path], prompts: list[str], torch_vectors: np.ndarray
) -> None:
    """Int8 weights move embeddings a little; bench/RESULTS.md measures the routing effect."""
    vectors = onnx_vectors(graphs["onnx-int8"], prompts)
    cosine = np.sum(vectors * torch_vectors, axis=1)
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.98
    agreement = np.mean(decisions(vectors, prompts) == decisions(torch_vectors, prompts))
    assert agreement >= 0.95


def test_batches_do_not_change_a_text(graphs: dict[str, Path], prompts: list[str]) -> None:
    """Padding to the batch's longest text must not leak into a short text's embedding."""
    onnx = OnnxEncoder(graphs["onnx"], encoder_spec(default_encoder_path()), intra_op_threads=1)
    short, long = "How do tides work?", max(prompts, key=len)
    alone = onnx.encode([short])
    together = onnx.encode([long, short])
    np.testing.assert_allclose(together[1], alone[0], atol=1e-5)
    assert onnx.encode([]).shape == (0, EMBEDDING_DIM)


def test_the_export_is_cached(graphs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def no_export(*args: object) -> Path:
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_export, "export_encoder", no_export)
    monkeypatch.setattr(onnx_export, "quantize_encoder", no_export)
    root = graphs["onnx"].parent.parent
    assert cached_onnx_encoder(default_encoder_path(), cache_root=root) == graphs["onnx"]
    int8 = cached_onnx_encoder(default_encoder_path(), int8=True, cache_root=root)
    assert int8 == graphs["onnx-int8"]
    assert not list(graphs["onnx"].parent.glob(".export-*"))  # no temporary left behind


def small_model_dir(tmp_path: Path) -> Path:
    """The model's configuration files without its weights (enough for spec and fingerprint)."""
    source, target = default_encoder_path(), tmp_path / "model"
    for name in ("modules.json", "sentence_bert_config.json", "tokenizer.json", "config.json"):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / name, target / name)
    (target / "1_Pooling").mkdir()
    shutil.copy(source / "1_Pooling" / "config.json", target / "1_Pooling" / "config.json")
    return target


def test_fingerprint_follows_the_files(tmp_path: Path) -> None:
    model_dir = small_model_dir(tmp_path)
    before = fingerprint(model_dir)
    assert fingerprint(model_dir) == before
    (model_dir / "model.safetensors").write_bytes(b"other weights")
    assert fingerprint(model_dir) != before


def test_spec_refuses_a_pipeline_the_graph_would_not_reproduce(tmp_path: Path) -> None:
    model_dir = small_model_dir(tmp_path)
    spec = encoder_spec(model_dir)
    assert (spec.max_seq_length, spec.dim) == (256, EMBEDDING_DIM)
    pooling = model_dir / "1_Pooling" / "config.json"
    pooling.write_text(
        pooling.read_text().replace(
            '"pooling_mode_cls_token": false', '"pooling_mode_cls_token": true'
        )
    )
    with pytest.raises(ValueError, match="pooling"):
        encoder_spec(model_dir)
    with pytest.raises(ValueError, match="pooling"):
        cached_onnx_encoder(model_dir, cache_root=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("backend", "device", "expected"),
    [
        ("auto", "cpu", "onnx"),
        ("auto", "cuda", "torch"),
        ("auto", "cuda:1", "torch"),
        ("torch", "cpu", "torch"),
        ("onnx", "cuda", "onnx"),
        ("onnx-int8", "cpu", "onnx-int8"),
    ],
)
def test_resolve_backend(backend: str, device: str, expected: str) -> None:
    assert encoders.resolve_backend(backend, device) == expected


@pytest.mark.parametrize(("cpus", "threads"), [(1, 1), (2, 1), (16, 15)])
def test_the_encoder_leaves_a_core_to_the_event_loop(cpus: int, threads: int) -> None:
    assert encoders.default_threads(cpus) == threads


@pytest.mark.parametrize(("cpus", "passes", "threads"), [(2, 2, 1), (8, 2, 3), (16, 1, 15)])
def test_concurrent_passes_share_the_encoder_cores(cpus: int, passes: int, threads: int) -> None:
    assert encoders.default_threads(cpus, passes=passes) == threads


@pytest.mark.parametrize(
    ("backend", "device", "passes"),
    [("onnx", "cpu", 2), ("onnx-int8", "cpu", 2), ("onnx", "cuda", 1), ("torch", "cpu", 1)],
)
def test_two_passes_only_for_onnx_on_a_cpu(backend: str, device: str, passes: int) -> None:
    assert encoders.default_passes(backend, device) == passes


def test_resolve_backend_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="tensorrt"):
        encoders.resolve_backend("tensorrt", "cpu")


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, embedding_device="cpu", **values)  # type: ignore[call-arg]


def test_build_embedder_serves_the_onnx_backend(
    graphs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_export, "cached_onnx_encoder", lambda path, int8: graphs["onnx"])
    embedder = build_embedder(settings(embedding_backend="onnx", embedding_threads=1), Metrics())
    assert (embedder.backend, embedder.device, embedder.dim) == ("onnx", "cpu", EMBEDDING_DIM)
    assert embedder.max_passes == 2  # the default for ONNX on a CPU


def test_auto_falls_back_to_torch_and_says_why(
    encoder: SentenceTransformer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> OnnxEncoder:
        raise ValueError("pooling ['pooling_mode_cls_token'], only mean pooling is exported")

    monkeypatch.setattr("app.embedding.load_onnx_encoder", broken)
    monkeypatch.setattr("app.embedding.load_encoder", lambda path, device: encoder)
    embedder = build_embedder(settings(), Metrics())
    assert embedder.backend == "torch"
    assert embedder.max_passes == 1  # torch's thread pool is process-wide: one pass at a time
    assert "only mean pooling" in caplog.text
    with pytest.raises(RouterUnavailable, match="onnx encoder backend failed"):
        build_embedder(settings(embedding_backend="onnx"), Metrics())


async def test_the_service_path_embeds_with_onnx(
    graphs: dict[str, Path], encoder: SentenceTransformer
) -> None:
    onnx = OnnxEncoder(graphs["onnx"], encoder_spec(default_encoder_path()), intra_op_threads=1)
    embedder = BatchingEmbedder(onnx, model_id=DEFAULT_EMBEDDING_MODEL_ID, max_wait_ms=5.0)
    await embedder.start()
    try:
        query = QueryEmbedder(embedder, MemoryCache(max_entries=10))
        texts = ["How do tides work?", "Prove that sqrt(2) is irrational.", "Hi"]
        results = [await query.embed(text) for text in texts]
        again, hit = await query.embed(texts[0])
    finally:
        await embedder.aclose()
    reference = encoder.encode(texts, normalize_embeddings=True)
    for (vector, cache_hit), expected in zip(results, reference, strict=True):
        assert not cache_hit and float(vector @ expected) >= 0.9999
    assert hit and np.array_equal(again, results[0][0])


@pytest.mark.gpu
def test_onnx_on_cuda_matches_torch(graphs: dict[str, Path], prompts: list[str]) -> None:
    import onnxruntime as ort
    import torch

    if (
        not torch.cuda.is_available()
        or "CUDAExecutionProvider" not in ort.get_available_providers()
    ):
        pytest.skip("needs a CUDA GPU with onnxruntime's CUDA provider")
    from router_models.contract import load_encoder

    reference = load_encoder(device="cuda").encode(prompts, normalize_embeddings=True)
    onnx = OnnxEncoder(graphs["onnx"], encoder_spec(default_encoder_path()), device="cuda")
    vectors = np.concatenate([onnx.encode(prompts[i : i + 64]) for i in range(0, PROMPTS, 64)])
    assert np.sum(vectors * np.asarray(reference), axis=1).min() >= 0.9999


def test_replicas_starting_together_export_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    model_dir = small_model_dir(tmp_path)
    entered, release, exports = threading.Event(), threading.Event(), []

    def slow_export(source: Path, destination: Path) -> Path:
        exports.append(destination)
        entered.set()
        release.wait(timeout=30)
        destination.write_bytes(b"graph")
        return destination

    monkeypatch.setattr(onnx_export, "export_encoder", slow_export)
    results: list[Path] = []
    first = threading.Thread(
        target=lambda: results.append(cached_onnx_encoder(model_dir, cache_root=tmp_path / "c"))
    )
    first.start()
    assert entered.wait(timeout=30)
    second = threading.Thread(
        target=lambda: results.append(cached_onnx_encoder(model_dir, cache_root=tmp_path / "c"))
    )
    second.start()
    release.set()
    first.join(timeout=30)
    second.join(timeout=30)
    assert len(exports) == 1 and len(results) == 2 and results[0] == results[1]
