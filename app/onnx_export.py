"""Export the local sentence-transformers encoder to ONNX once, and cache the file on disk.

The ONNX Runtime backend (:mod:`app.onnx_encoder`) needs a graph file; it is made from the
model directory already installed (never from a hub), on the first start or at image build
(``python -m app.onnx_export``), and kept under ``$DARS_CACHE/encoders/<fingerprint>/``. The
fingerprint hashes the model files and :data:`EXPORT_VERSION`, so a changed model or a changed
export recipe gets a new folder and an old file is never served for a new model.

The graph holds the whole sentence-transformers pipeline after tokenisation: BERT, mean
pooling over the attention mask, L2 normalisation; its output is the embedding itself.
Files are written to a temporary name and renamed, under a lock file, so replicas starting at
once export once and never read a half-written file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.local_models import cache_dir

if TYPE_CHECKING:
    import torch

__all__ = [
    "EXPORT_VERSION",
    "INPUT_NAMES",
    "OUTPUT_NAME",
    "EncoderSpec",
    "cached_onnx_encoder",
    "encoder_spec",
    "export_encoder",
    "fingerprint",
    "quantize_encoder",
]

logger = logging.getLogger(__name__)

# Bump when the graph changes (pooling, opset, inputs): cached files of older recipes are left.
EXPORT_VERSION = "2"
OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "sentence_embedding"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
_HASHED_FILES = (
    "config.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "tokenizer.json",
    "model.safetensors",
    "pytorch_model.bin",
)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class EncoderSpec:
    """What the ONNX backend must reproduce of a sentence-transformers model directory.

    ``max_seq_length``: tokens kept per text (sentence-transformers truncates there);
    ``dim``: the embedding dimension.
    """

    model_dir: Path
    max_seq_length: int
    dim: int


def encoder_spec(model_dir: Path) -> EncoderSpec:
    """Read and check the model directory: BERT-like, mean pooling, then L2 normalisation.

    Raises ``ValueError`` for a pipeline the exported graph would not reproduce (other
    pooling, no ``tokenizer.json``, extra modules), so that ``auto`` can keep torch instead.
    """
    if not (model_dir / "tokenizer.json").is_file():
        raise ValueError(f"{model_dir} has no tokenizer.json (a fast tokenizer is needed)")
    modules = [m["type"].rsplit(".", 1)[-1] for m in _read_json(model_dir / "modules.json")]
    if modules not in (["Transformer", "Pooling", "Normalize"], ["Transformer", "Pooling"]):
        raise ValueError(f"{model_dir}: modules {modules} are not Transformer, Pooling, Normalize")
    pooling = _read_json(model_dir / "1_Pooling" / "config.json")
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v)
    if modes != ["pooling_mode_mean_tokens"]:
        raise ValueError(f"{model_dir}: pooling {modes}, only mean pooling is exported")
    st_config = _read_json(model_dir / "sentence_bert_config.json")
    if st_config.get("do_lower_case"):
        raise ValueError(f"{model_dir}: do_lower_case is not reproduced by the ONNX backend")
    return EncoderSpec(
        model_dir=model_dir,
        max_seq_length=int(st_config.get("max_seq_length", 512)),
        dim=int(pooling["word_embedding_dimension"]),
    )


def fingerprint(model_dir: Path) -> str:
    """sha256 (first 16 hex digits) of the model files and the export recipe."""
    digest = hashlib.sha256(f"dars-onnx-encoder/{EXPORT_VERSION}/opset{OPSET}".encode())
    for name in _HASHED_FILES:
        path = model_dir / name
        if not path.is_file():
            continue
        digest.update(name.encode())
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def cached_onnx_encoder(
    model_dir: Path, *, int8: bool = False, cache_root: Path | None = None
) -> Path:
    """The cached ONNX file for ``model_dir`` (int8 or fp32), exported on first use.

    ``cache_root`` defaults to ``$DARS_CACHE/encoders`` (``~/.cache/dars-router/encoders``).
    """
    encoder_spec(model_dir)  # refuse a pipeline the graph would not reproduce, before torch
    root = cache_root if cache_root is not None else cache_dir() / "encoders"
    folder = root / fingerprint(model_dir)
    fp32, quantized = folder / FP32_FILE, folder / INT8_FILE
    wanted = quantized if int8 else fp32
    if wanted.is_file():
        return wanted
    with _export_lock(folder):  # replicas starting together: one exports, the others wait
        if not fp32.is_file():
            logger.info("exporting the encoder %s to ONNX (once) under %s", model_dir, folder)
            export_encoder(model_dir, fp32)
        if int8 and not quantized.is_file():
            logger.info("quantising the ONNX encoder to int8 (once)")
            quantize_encoder(fp32, quantized)
    return wanted


def export_encoder(model_dir: Path, destination: Path) -> Path:
    """Export ``model_dir`` (BERT + mean pooling + L2 norm) to ``destination``; needs torch."""
    import torch
    from transformers import AutoModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Eager attention: the SDPA path branches on shapes in Python, which tracing would freeze.
    model = AutoModel.from_pretrained(
        str(model_dir), local_files_only=True, attn_implementation="eager"
    ).eval()
    example = torch.ones((2, 8), dtype=torch.long)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    with _atomic_path(destination) as temporary, torch.inference_mode():
        # The TorchScript exporter: the dynamo one needs dynamic-shape hints per model family.
        torch.onnx.export(
            _with_pooling(model),
            (example, example, torch.zeros_like(example)),
            str(temporary),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={**dynamic, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return destination


def quantize_encoder(source: Path, destination: Path) -> Path:
    """Dynamic int8 quantisation of the weights of an exported encoder (onnxruntime's tool)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _atomic_path(destination) as temporary:
        # Per-channel MatMul weights only: per-tensor scales, or int8 embedding tables, cost
        # several points of cosine to the fp32 embeddings on real prompts (0.95 vs 0.993).
        quantize_dynamic(
            str(source),
            str(temporary),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
        )
    return destination


@contextmanager
def _export_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder/.lock`` (released when the process dies, too)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _atomic_path(destination: Path) -> Iterator[Path]:
    """A temporary file beside ``destination``, renamed onto it when the block succeeds."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=destination.parent, prefix=".export-", suffix=".onnx")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, destination)


def _read_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def _with_pooling(model: torch.nn.Module) -> torch.nn.Module:
    """BERT, then sentence-transformers' mean pooling and L2 normalisation, as one module."""
    import torch

    class PooledEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            hidden = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return PooledEncoder()


def main(argv: list[str] | None = None) -> int:
    """Export (and optionally quantise) the configured encoder now, e.g. in an image build."""
    import argparse

    from router_models.contract import default_encoder_path

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model", type=Path, help="model directory (default: the bundled one)")
    parser.add_argument("--int8", action="store_true", help="also write the int8 file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model_dir = args.model or default_encoder_path()
    print(cached_onnx_encoder(model_dir, int8=args.int8))
    return 0


if __name__ == "__main__":
    sys.exit(main())
