"""Writing, checking and reading ONNX router files (the trainer's side of ``contract.py``).

``save_router`` only leaves a file behind that the service can load: the graph passes
``onnx.checker``, has the contract's inputs (``embedding``, optionally ``query_length``) and
output, carries complete metadata, and onnxruntime opens it and scores a dummy batch. Anything
else raises :class:`RouterExportError` and writes nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from router_models.contract import (
    DEFAULT_QUERY_MAX_CHARS,
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
from router_models.estimators.base import FloatArray, unit_rows
from router_models.registry import ROUTERS

__all__ = [
    "LABEL_SCHEMES",
    "REQUIRED_METADATA",
    "RouterExportError",
    "build_metadata",
    "check_router_model",
    "load_router_scores",
    "read_metadata",
    "router_input_names",
    "router_session",
    "save_router",
]

LABEL_SCHEMES = ("single-shot", "dars", "semantic-entropy")
REQUIRED_METADATA = (
    META_EMBEDDING_MODEL,
    META_EMBEDDING_DIM,
    META_LABEL_SCHEME,
    META_DEFAULT_THRESHOLD,
    META_CALIBRATION,
    META_MODELS,
    META_ROUTER,
)
_DUMMY_BATCH = 3


class RouterExportError(ValueError):
    """An ONNX router breaks the contract, fails ``onnx.checker`` or does not run."""


def build_metadata(
    *,
    embedding_model_id: str,
    embedding_dim: int,
    label_scheme: str,
    default_threshold: float,
    calibration: Calibration,
    models: Mapping[str, str],
    router: str,
) -> dict[str, str]:
    """The ``metadata_props`` of a router file, validated, as strings.

    ``models`` must name the ``edge`` and ``cloud`` models; ``router`` is a registry key.
    """
    if not embedding_model_id:
        raise ValueError("embedding_model_id must not be empty")
    if int(embedding_dim) < 1:
        raise ValueError("embedding_dim must be positive")
    if label_scheme not in LABEL_SCHEMES:
        raise ValueError(f"label_scheme must be one of {LABEL_SCHEMES}, not {label_scheme!r}")
    threshold = float(default_threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError("default_threshold must be within [0, 1]")
    if router not in ROUTERS:
        raise ValueError(f"router must be one of {sorted(ROUTERS)}, not {router!r}")
    roles = dict(models)
    if not all(isinstance(roles.get(role), str) and roles[role] for role in ("edge", "cloud")):
        raise ValueError("models must name an 'edge' and a 'cloud' model")
    return {
        META_EMBEDDING_MODEL: embedding_model_id,
        META_EMBEDDING_DIM: str(int(embedding_dim)),
        META_LABEL_SCHEME: label_scheme,
        META_DEFAULT_THRESHOLD: repr(threshold),
        META_CALIBRATION: calibration.to_json(),
        META_MODELS: json.dumps(roles, sort_keys=True),
        META_ROUTER: router,
    }


def _metadata_of(model: onnx.ModelProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in model.metadata_props}


def check_router_model(model: onnx.ModelProto, *, require_metadata: bool = True) -> None:
    """Raise :class:`RouterExportError` unless ``model`` follows the router contract."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise RouterExportError(f"ONNX checker rejected the router: {exc}") from exc
    graph = model.graph
    inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    names = [i.name for i in inputs]
    if names not in ([INPUT_NAME], [INPUT_NAME, LENGTH_INPUT_NAME]) or [
        o.name for o in graph.output
    ] != [OUTPUT_NAME]:
        raise RouterExportError(
            f"router must map the input {INPUT_NAME!r} (and optionally {LENGTH_INPUT_NAME!r}) "
            f"to one output {OUTPUT_NAME!r}, has inputs {names}"
        )
    if len(inputs) == 2:
        length_type = inputs[1].type.tensor_type
        if length_type.elem_type != TensorProto.FLOAT or len(length_type.shape.dim) != 1:
            raise RouterExportError(f"{LENGTH_INPUT_NAME!r} must be float32 [batch]")
        if length_type.shape.dim[0].HasField("dim_value"):
            raise RouterExportError(f"{LENGTH_INPUT_NAME!r} needs a dynamic batch")
    in_type, out_type = inputs[0].type.tensor_type, graph.output[0].type.tensor_type
    if in_type.elem_type != TensorProto.FLOAT or len(in_type.shape.dim) != 2:
        raise RouterExportError(f"{INPUT_NAME!r} must be float32 [batch, dim]")
    if out_type.elem_type != TensorProto.FLOAT or len(out_type.shape.dim) != 1:
        raise RouterExportError(f"{OUTPUT_NAME!r} must be float32 [batch]")
    if in_type.shape.dim[0].HasField("dim_value") or not in_type.shape.dim[1].dim_value:
        raise RouterExportError(f"{INPUT_NAME!r} needs a dynamic batch and a fixed dimension")
    if not require_metadata:
        return
    metadata = _metadata_of(model)
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise RouterExportError(f"router metadata lacks {missing}")
    if metadata[META_EMBEDDING_DIM] != str(in_type.shape.dim[1].dim_value):
        raise RouterExportError(f"{META_EMBEDDING_DIM} does not match the input dimension")
    try:
        Calibration.from_json(metadata[META_CALIBRATION])
    except (ValueError, KeyError, TypeError) as exc:
        raise RouterExportError(f"{META_CALIBRATION} is not valid: {exc}") from exc


def router_session(model: onnx.ModelProto | str | Path, *, intra_op_num_threads: int = 1) -> Any:
    """An onnxruntime CPU session on a router file or in-memory model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_num_threads
    options.inter_op_num_threads = 1
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def router_input_names(session: Any) -> list[str]:
    """The input names of an onnxruntime session on a router, in graph order."""
    return [arg.name for arg in session.get_inputs()]


def load_router_scores(
    model: onnx.ModelProto | str | Path | Any,
    X: Any,
    *,
    query_length: Any = None,
    intra_op_num_threads: int = 1,
) -> FloatArray:
    """Scores of ``X`` under an ONNX router (file, ``ModelProto`` or open session).

    ``query_length`` (characters per query, see ``contract.query_lengths``) is fed when the
    graph has the ``query_length`` input, which then requires it; other routers ignore it.
    """
    session = (
        model
        if hasattr(model, "run")
        else router_session(model, intra_op_num_threads=intra_op_num_threads)
    )
    batch = np.ascontiguousarray(X, dtype=np.float32)
    feed = {INPUT_NAME: batch}
    if LENGTH_INPUT_NAME in router_input_names(session):
        if query_length is None:
            raise ValueError(f"this router needs {LENGTH_INPUT_NAME!r} as well as {INPUT_NAME!r}")
        feed[LENGTH_INPUT_NAME] = np.ascontiguousarray(query_length, dtype=np.float32)
    (scores,) = session.run([OUTPUT_NAME], feed)
    out: FloatArray = np.asarray(scores, dtype=np.float64)
    return out


def read_metadata(model: onnx.ModelProto | str | Path) -> dict[str, str]:
    """The router's ``metadata_props`` as onnxruntime (hence the service) sees them."""
    meta: dict[str, str] = router_session(model).get_modelmeta().custom_metadata_map
    return dict(meta)


def save_router(model: onnx.ModelProto, path: str | Path, *, require_metadata: bool = True) -> Path:
    """Check ``model``, write it to ``path`` atomically and prove that onnxruntime runs it.

    Raises
    ------
    RouterExportError
        The model breaks the contract, or onnxruntime cannot load or run it; ``path`` is
        then left untouched.
    """
    check_router_model(model, require_metadata=require_metadata)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    try:
        onnx.save_model(model, str(partial))
        dim = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
        batch = unit_rows(np.random.default_rng(0).standard_normal((_DUMMY_BATCH, dim)))
        lengths = np.linspace(0.0, DEFAULT_QUERY_MAX_CHARS, _DUMMY_BATCH)  # unused if no input
        try:
            scores = load_router_scores(partial, batch, query_length=lengths)
        except Exception as exc:  # onnxruntime raises its own untyped pybind errors
            raise RouterExportError(f"onnxruntime could not run the router: {exc}") from exc
        if scores.shape != (_DUMMY_BATCH,) or not np.all(np.isfinite(scores)):
            raise RouterExportError(f"router returned {scores!r} for a dummy batch")
        if np.any(scores < 0.0) or np.any(scores > 1.0):
            raise RouterExportError("router scores must lie within [0, 1]")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
