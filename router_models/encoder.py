"""The sentence encoder on transformers alone, for a service installed without the trainer.

sentence-transformers depends on scikit-learn and scipy, which the service never uses, so the
lean install (``pip install dars-router``) leaves it out. For an all-MiniLM-style model
directory (BERT, mean pooling, then L2 normalisation) this class computes the same embedding
as ``SentenceTransformer.encode`` (tests/unit/router_models/test_encoder.py checks it to 1e-5):
same tokenizer, truncation at the directory's ``max_seq_length``, mean over the attention mask.
:func:`router_models.contract.load_encoder` returns it when sentence-transformers is missing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["MeanPoolingEncoder"]


def _pipeline_max_length(model_dir: Path) -> int:
    """``max_seq_length`` after checking the directory pools by mean (what this class does)."""
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    if not pooling.get("pooling_mode_mean_tokens") or any(
        value
        for key, value in pooling.items()
        if key.startswith("pooling_mode_") and key != ("pooling_mode_mean_tokens")
    ):
        raise ValueError(f"{model_dir} does not pool by mean alone; install sentence-transformers")
    config = json.loads((model_dir / "sentence_bert_config.json").read_text(encoding="utf-8"))
    return int(config.get("max_seq_length", 512))


class MeanPoolingEncoder:
    """``encode(texts)`` like ``SentenceTransformer.encode`` for a mean-pooling model directory.

    Parameters
    ----------
    model_dir : Path
        A sentence-transformers model directory (``1_Pooling/config.json`` must say mean).
    device : str
        ``cpu`` or ``cuda``.
    """

    def __init__(self, model_dir: Path, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.max_seq_length = _pipeline_max_length(model_dir)
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
        self.model.to(self.device).eval()

    def encode(
        self,
        sentences: Sequence[str],
        *,
        batch_size: int = 32,
        normalize_embeddings: bool = False,
        convert_to_numpy: bool = True,
        show_progress_bar: bool = False,
    ) -> npt.NDArray[np.float32]:
        """Float32 ``[len(sentences), dim]``; unit norm with ``normalize_embeddings``.

        ``convert_to_numpy`` and ``show_progress_bar`` exist for call compatibility: the
        result is always a numpy array and no bar is shown.
        """
        import torch

        del convert_to_numpy, show_progress_bar
        out: list[Any] = []
        for start in range(0, len(sentences), max(1, batch_size)):
            batch = self.tokenizer(
                list(sentences[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_seq_length,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if normalize_embeddings:
                    pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
            out.append(pooled.float().cpu().numpy())
        if not out:
            return np.empty((0, int(self.model.config.hidden_size)), dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)
