"""The trainer/service contract: calibration maths, encoder loading, and the GPU path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from router_models.contract import (
    CALIBRATION_PROBS,
    DEFAULT_QUERY_MAX_CHARS,
    EMBEDDING_DIM,
    Calibration,
    load_encoder,
    query_lengths,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


def test_calibration_threshold_sends_the_asked_share_to_the_cloud() -> None:
    scores = np.random.default_rng(0).uniform(size=10_000)
    calibration = Calibration.from_scores(scores)
    for share in (0.1, 0.3, 0.5, 0.9):
        threshold = calibration.threshold_for_cloud_share(share)
        assert np.mean(scores >= threshold) == pytest.approx(share, abs=0.01)


def test_calibration_round_trips_through_json() -> None:
    calibration = Calibration.from_scores([0.1, 0.2, 0.7, 0.9])
    again = Calibration.from_json(calibration.to_json())
    assert again == calibration
    assert len(again.probs) == len(CALIBRATION_PROBS)


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"probs": [0.0, 1.0], "quantiles": [0.1]}),
        json.dumps({"probs": [1.0, 0.0], "quantiles": [0.1, 0.2]}),
        json.dumps({"probs": [0.5], "quantiles": [0.1]}),
        json.dumps({"quantiles": [0.1, 0.2]}),
        '{"probs": [0, 1], "quantiles": [0.1, NaN]}',
        '{"probs": [0, Infinity], "quantiles": [0.1, 0.2]}',
        "not json",
    ],
)
def test_bad_calibration_json_is_refused(text: str) -> None:
    with pytest.raises((ValueError, KeyError)):
        Calibration.from_json(text)


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_cloud_share_outside_unit_interval_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="cloud_share"):
        Calibration.from_scores([0.2, 0.8]).threshold_for_cloud_share(share)


def test_query_lengths_count_characters_after_truncation() -> None:
    long_text = "x" * (DEFAULT_QUERY_MAX_CHARS + 50)
    lengths = query_lengths(["abc", long_text], DEFAULT_QUERY_MAX_CHARS)
    assert list(lengths) == [3, DEFAULT_QUERY_MAX_CHARS]


def test_encoder_from_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="embedding model directory not found"):
        load_encoder(tmp_path / "nowhere", device="cpu")


def test_encoder_gives_unit_vectors_of_the_contract_dim(encoder: SentenceTransformer) -> None:
    vectors = encoder.encode(["hello", "what is 7 * 6?"], normalize_embeddings=True)
    assert vectors.shape == (2, EMBEDDING_DIM)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.gpu
def test_encoder_auto_device_uses_cuda_and_matches_the_cpu(encoder: SentenceTransformer) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible to torch")
    gpu_encoder = load_encoder(device="auto")
    assert gpu_encoder.device.type == "cuda"
    texts = ["hello", "Natalia sold clips to 48 of her friends in April."]
    on_gpu = gpu_encoder.encode(texts, normalize_embeddings=True)
    on_cpu = encoder.encode(texts, normalize_embeddings=True)
    assert np.allclose(on_gpu, on_cpu, atol=1e-4)
