"""The lean service's encoder computes sentence-transformers' embedding of the bundled model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from router_models.contract import default_encoder_path
from router_models.encoder import MeanPoolingEncoder

TEXTS = [
    "hi",
    "Now do it in Rust.",
    "Explain the difference between TCP and UDP, with an example of each. " * 30,  # > 256 tokens
    "",
]


def test_mean_pooling_encoder_matches_sentence_transformers() -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    path = default_encoder_path()
    reference = sentence_transformers.SentenceTransformer(
        str(path), device="cpu", local_files_only=True
    ).encode(TEXTS, batch_size=2, normalize_embeddings=True, convert_to_numpy=True)
    ours = MeanPoolingEncoder(path, "cpu").encode(TEXTS, batch_size=2, normalize_embeddings=True)
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_a_model_that_does_not_pool_by_mean_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_Pooling").mkdir()
    pooling = {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (tmp_path / "sentence_bert_config.json").write_text('{"max_seq_length": 256}')
    with pytest.raises(ValueError, match="mean"):
        MeanPoolingEncoder(tmp_path, "cpu")
