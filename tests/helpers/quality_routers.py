"""Tiny contract-v2 router files (``quality`` [batch, K]) built with onnx.helper.

``make_quality_router`` writes ``quality = sigmoid(embedding @ W + b)`` with ``W = 0`` by
default, so every query gets the same predicted qualities ``qualities`` (``b = logit(q)``):
the decision then depends only on the knob and the upstreams' prices, which is what the
service tests need to pin. The file passes the trainer's own validator before it is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

from router_models.contract import (
    DEFAULT_EMBEDDING_MODEL_ID,
    INPUT_NAME,
    META_EMBEDDING_DIM,
    META_EMBEDDING_MODEL,
    META_LABEL_SCHEME,
    META_MODELS,
    META_QUALITY_CALIBRATION,
    META_ROUTER,
    QUALITY_OUTPUT_NAME,
    models_json,
    quality_calibration_json,
)
from router_models.export_onnx import save_router

__all__ = ["make_quality_router"]


def make_quality_router(
    path: str | Path,
    qualities: Sequence[float],
    models: Sequence[str],
    *,
    dim: int = 384,
    embedding_model: str = DEFAULT_EMBEDDING_MODEL_ID,
    calibration: Sequence[Sequence[float]] | None = None,
) -> Path:
    """Write a K-model router predicting ``qualities`` (in ``models`` order) for every query;
    ``calibration`` rows ``[n, K]`` become its ``dars.quality_calibration``."""
    q = np.clip(np.asarray(qualities, dtype=np.float64), 1e-6, 1 - 1e-6)
    k = len(q)
    bias = np.log(q / (1 - q)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", [INPUT_NAME, "weights"], ["logits"]),
            helper.make_node("Add", ["logits", "bias"], ["shifted"]),
            helper.make_node("Sigmoid", ["shifted"], [QUALITY_OUTPUT_NAME]),
        ],
        "constant_quality_router",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info(QUALITY_OUTPUT_NAME, TensorProto.FLOAT, ["batch", k])],
        initializer=[
            helper.make_tensor("weights", TensorProto.FLOAT, [dim, k], [0.0] * (dim * k)),
            helper.make_tensor("bias", TensorProto.FLOAT, [k], bias.tolist()),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(
        model,
        {
            META_EMBEDDING_MODEL: embedding_model,
            META_EMBEDDING_DIM: str(dim),
            META_LABEL_SCHEME: "dars",
            META_MODELS: models_json(models),
            META_ROUTER: "constant_quality",
            **(
                {}
                if calibration is None
                else {META_QUALITY_CALIBRATION: quality_calibration_json(calibration, k)}
            ),
        },
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_router(model, path)
