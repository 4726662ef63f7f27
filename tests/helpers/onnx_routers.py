"""Tiny but real ONNX router files that follow ``router_models.contract``, built with onnx.helper.

``make_linear_router`` writes ``score = sigmoid(embedding @ weights + bias)``. With the default
``weights=None`` (zeros) every query scores ``sigmoid(bias)``: ``bias=-10`` routes everything to
the edge, ``bias=10`` everything to the cloud. With ``length_weight``, the graph gets the
contract's optional second input ``query_length`` and adds ``length_weight * query_length`` to
the logit. Keyword arguments break the contract on purpose (other names, dimension, metadata)
so that the loader's checks can be tested.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from router_models.contract import (
    DEFAULT_EMBEDDING_MODEL_ID,
    INPUT_NAME,
    LENGTH_INPUT_NAME,
    META_CALIBRATION,
    META_DEFAULT_THRESHOLD,
    META_EMBEDDING_DIM,
    META_EMBEDDING_MODEL,
    META_LABEL_SCHEME,
    META_MODELS,
    META_ROUTER,
    OUTPUT_NAME,
    Calibration,
)

__all__ = ["linear_scores", "make_linear_router", "random_unit_vectors"]

# Opset and IR version every onnxruntime >= 1.16 reads.
_OPSET = 17
_IR_VERSION = 8


def random_unit_vectors(n: int, dim: int = 384, *, seed: int = 0) -> np.ndarray:
    """``n`` L2-normalised float32 vectors, like the encoder's output."""
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    unit: np.ndarray = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit


def linear_scores(
    embeddings: np.ndarray,
    weights: np.ndarray,
    bias: float,
    *,
    query_length: np.ndarray | None = None,
    length_weight: float = 0.0,
) -> np.ndarray:
    """The scores the linear router computes, in numpy (the expected values in tests)."""
    logits = np.asarray(embeddings, dtype=np.float64) @ np.asarray(weights, dtype=np.float64)
    if query_length is not None:
        logits = logits + length_weight * np.asarray(query_length, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-(logits + bias)))


def make_linear_router(
    path: str | Path,
    *,
    dim: int = 384,
    weights: np.ndarray | None = None,
    bias: float = 0.0,
    embedding_model: str = DEFAULT_EMBEDDING_MODEL_ID,
    edge_model: str = "edge",
    cloud_model: str = "cloud",
    default_threshold: float = 0.5,
    label_scheme: str = "dars",
    input_name: str = INPUT_NAME,
    output_name: str = OUTPUT_NAME,
    metadata: Mapping[str, str | None] | None = None,
    length_weight: float | None = None,
    length_input_name: str = LENGTH_INPUT_NAME,
) -> Path:
    """Write a linear router to ``path`` and return the path.

    ``metadata`` overrides the contract's entries: a string replaces a value, ``None`` removes
    the key. The default ``dars.calibration`` holds the router's score quantiles on 256 random
    unit vectors.
    """
    w = np.zeros(dim, dtype=np.float32) if weights is None else np.asarray(weights, np.float32)
    if w.shape != (dim,):
        raise ValueError(f"weights must have shape ({dim},)")
    nodes = [
        helper.make_node("MatMul", [input_name, "weights"], ["logit_2d"]),
        helper.make_node("Squeeze", ["logit_2d", "squeeze_axes"], ["logit"]),
        helper.make_node("Add", ["logit", "bias"], ["shifted"]),
    ]
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", dim])]
    initializers = [
        helper.make_tensor("weights", TensorProto.FLOAT, [dim, 1], w.tolist()),
        helper.make_tensor("squeeze_axes", TensorProto.INT64, [1], [1]),
        helper.make_tensor("bias", TensorProto.FLOAT, [], [float(bias)]),
    ]
    if length_weight is not None:
        nodes += [
            helper.make_node("Mul", [length_input_name, "length_weight"], ["length_logit"]),
            helper.make_node("Add", ["shifted", "length_logit"], ["with_length"]),
        ]
        inputs.append(
            helper.make_tensor_value_info(length_input_name, TensorProto.FLOAT, ["batch"])
        )
        initializers.append(
            helper.make_tensor("length_weight", TensorProto.FLOAT, [], [float(length_weight)])
        )
    nodes.append(helper.make_node("Sigmoid", [nodes[-1].output[0]], [output_name]))
    graph = helper.make_graph(
        nodes,
        "linear_router",
        inputs,
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch"])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = _IR_VERSION

    calibration = Calibration.from_scores(linear_scores(random_unit_vectors(256, dim), w, bias))
    entries: dict[str, str | None] = {
        META_EMBEDDING_MODEL: embedding_model,
        META_EMBEDDING_DIM: str(dim),
        META_LABEL_SCHEME: label_scheme,
        META_DEFAULT_THRESHOLD: repr(default_threshold),
        META_CALIBRATION: calibration.to_json(),
        META_MODELS: json.dumps({"edge": edge_model, "cloud": cloud_model}),
        META_ROUTER: "linear",
    }
    entries.update(metadata or {})
    helper.set_model_props(model, {k: v for k, v in entries.items() if v is not None})
    onnx.checker.check_model(model)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
