"""The sentence encoder on ONNX Runtime: a fast tokenizer and one exported graph.

A drop-in for the ``SentenceTransformer.encode`` call that :class:`app.embedding.BatchingEmbedder`
makes: same tokenisation (the model's ``tokenizer.json``, truncation at ``max_seq_length``,
padding to the longest text of the batch), same pooling and normalisation (inside the graph,
see :mod:`app.onnx_export`). On this project's CPU it is 3-4x as fast as torch at batch 1
(bench/RESULTS.md) and needs no torch at run time once the graph is cached.

Threads: the session's intra-op pool does not spin while idle (``allow_spinning=0``), so the
event loop, which shares the cores, does not lose CPU to busy-waiting encoder threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from app.onnx_export import INPUT_NAMES, OUTPUT_NAME, EncoderSpec

__all__ = ["OnnxEncoder"]

_PAD_TOKEN = "[PAD]"


class OnnxEncoder:
    """Embed texts with an exported encoder graph; L2-normalised float32 ``[n, dim]``.

    Parameters
    ----------
    graph : Path
        The ``.onnx`` file (fp32 or int8) from :func:`app.onnx_export.cached_onnx_encoder`.
    spec : EncoderSpec
        The model directory (for ``tokenizer.json``), ``max_seq_length`` and ``dim``.
    device : str
        ``cpu`` or ``cuda`` (the CUDA execution provider).
    intra_op_threads : int, optional
        Threads of one forward pass; ``None`` lets onnxruntime use every core.

    Attributes
    ----------
    device, backend : str
        Where it runs, and ``onnx`` or ``onnx-int8``, for logs and health.
    """

    def __init__(
        self,
        graph: Path,
        spec: EncoderSpec,
        *,
        device: str = "cpu",
        intra_op_threads: int | None = None,
    ) -> None:
        self.device = device
        self.backend = "onnx-int8" if graph.name.endswith(".int8.onnx") else "onnx"
        self._dim = spec.dim
        self._tokenizer = Tokenizer.from_file(str(spec.model_dir / "tokenizer.json"))
        # tokenizer.json ships its own settings (here: pad to a fixed 128); sentence-transformers
        # overrides them per call with these two, and so do we.
        self._tokenizer.enable_truncation(max_length=spec.max_seq_length)
        pad_id = self._tokenizer.token_to_id(_PAD_TOKEN)
        self._tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token=_PAD_TOKEN)
        options = _session_options(intra_op_threads)
        self._session = ort.InferenceSession(
            str(graph), sess_options=options, providers=_providers(device)
        )
        names = {i.name for i in self._session.get_inputs()}
        self._inputs = [name for name in INPUT_NAMES if name in names]

    def get_embedding_dimension(self) -> int:
        return self._dim

    def encode(self, sentences: list[str], **_options: Any) -> np.ndarray:
        """Embeddings of ``sentences``; sentence-transformers' keyword options are accepted.

        They are ignored on purpose: output is always normalised float32 numpy, one pass.
        """
        if not sentences:
            return np.zeros((0, self._dim), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(sentences))
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        feed = {name: np.asarray(columns[name], dtype=np.int64) for name in self._inputs}
        (vectors,) = self._session.run([OUTPUT_NAME], feed)
        return np.asarray(vectors, dtype=np.float32).reshape(len(sentences), self._dim)


def _session_options(intra_op_threads: int | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    # Idle pool threads sleep instead of spinning: the event loop shares these cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _providers(device: str) -> list[str]:
    if device.startswith("cuda"):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
