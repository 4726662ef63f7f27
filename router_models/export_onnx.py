"""Writing, checking and reading ONNX router files (the trainer's side of ``contract.py``).

``save_router`` only leaves a file behind that the service can load: the graph passes
``onnx.checker``, has the contract's inputs (``embedding``, optionally ``query_length``) and
output, carries complete metadata, and onnxruntime opens it and scores a dummy batch. Anything
else raises :class:`RouterExportError` and writes nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from router_models.contract import (
    DEFAULT_QUERY_MAX_CHARS,
    INPUT_NAME,
    LABEL_SCHEMES,
    LENGTH_INPUT_NAME,
    META_CALIBRATION,
    META_DEFAULT_THRESHOLD,
    META_EMBEDDING_DIM,
    META_EMBEDDING_MODEL,
    META_LABEL_SCHEME,
    META_MODELS,
    META_QUALITY_CALIBRATION,
    META_ROUTER,
    OUTPUT_NAME,
    QUALITY_CALIBRATION_MAX_ROWS,
    QUALITY_OUTPUT_NAME,
    Calibration,
    ContractError,
    RouterSignature,
    TensorSpec,
    check_dry_run,
    check_router_signature,
    models_json,
    quality_calibration_json,
)
from router_models.estimators.base import FloatArray, unit_rows
from router_models.registry import QUALITY_ROUTERS, ROUTERS

__all__ = [
    "LABEL_SCHEMES",
    "REQUIRED_METADATA",
    "RouterExportError",
    "build_metadata",
    "build_quality_metadata",
    "check_router_model",
    "load_router_quality",
    "load_router_scores",
    "quality_calibration_sample",
    "read_metadata",
    "router_input_names",
    "router_session",
    "save_router",
    "tensor_specs_from_onnx",
]

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


def quality_calibration_sample(
    quality: Any, *, max_rows: int = QUALITY_CALIBRATION_MAX_ROWS, seed: int = 0
) -> FloatArray:
    """At most ``max_rows`` rows of predicted qualities ``[n, K]``, drawn without replacement
    by a seeded generator (all rows, in order, when there are no more), clipped to [0, 1]."""
    rows = np.asarray(quality, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError("calibration qualities must be a non-empty [n, K] array")
    if not np.all(np.isfinite(rows)):
        raise ValueError("calibration qualities must be finite")
    if rows.shape[0] > max_rows:
        pick = np.random.default_rng(seed).choice(rows.shape[0], size=max_rows, replace=False)
        rows = rows[np.sort(pick)]
    out: FloatArray = np.clip(rows, 0.0, 1.0)
    return out


def build_quality_metadata(
    *,
    embedding_model_id: str,
    embedding_dim: int,
    label_scheme: str,
    models: Sequence[str],
    router: str,
    calibration_quality: Any = None,
    calibration_seed: int = 0,
) -> dict[str, str]:
    """The ``metadata_props`` of a K-model (contract v2) router file, validated, as strings.

    ``models`` is the order of the ``quality`` columns; ``router`` is a quality-router kind.
    ``calibration_quality``: the router's predictions ``[n, K]`` on queries set aside for
    calibration, held-out ones when the caller has them (else its training queries); a
    seeded sample of at most :data:`~router_models.contract.QUALITY_CALIBRATION_MAX_ROWS`
    rows becomes ``dars.quality_calibration``, on which the service calibrates a spend
    target before live traffic. ``None`` writes no calibration data.
    """
    if not embedding_model_id:
        raise ValueError("embedding_model_id must not be empty")
    if int(embedding_dim) < 1:
        raise ValueError("embedding_dim must be positive")
    if label_scheme not in LABEL_SCHEMES:
        raise ValueError(f"label_scheme must be one of {LABEL_SCHEMES}, not {label_scheme!r}")
    if router not in QUALITY_ROUTERS:
        raise ValueError(f"router must be one of {sorted(QUALITY_ROUTERS)}, not {router!r}")
    metadata = {
        META_EMBEDDING_MODEL: embedding_model_id,
        META_EMBEDDING_DIM: str(int(embedding_dim)),
        META_LABEL_SCHEME: label_scheme,
        META_MODELS: models_json(models),
        META_ROUTER: router,
    }
    if calibration_quality is not None:
        rows = quality_calibration_sample(calibration_quality, seed=calibration_seed)
        try:
            text = quality_calibration_json(rows.tolist(), len(models))
        except ContractError as exc:
            raise ValueError(str(exc)) from exc
        metadata[META_QUALITY_CALIBRATION] = text
    return metadata


def _metadata_of(model: onnx.ModelProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in model.metadata_props}


def tensor_specs_from_onnx(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of an ONNX graph, initialisers excluded, as the contract describes them."""
    constants = {t.name for t in model.graph.initializer}

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor = value.type.tensor_type
        elem = "float" if tensor.elem_type == TensorProto.FLOAT else str(tensor.elem_type)
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
        return TensorSpec(value.name, elem, dims)

    inputs = [spec(i) for i in model.graph.input if i.name not in constants]
    return inputs, [spec(o) for o in model.graph.output]


def check_router_model(model: onnx.ModelProto, *, require_metadata: bool = True) -> RouterSignature:
    """Raise :class:`RouterExportError` unless ``model`` follows the router contract (v1 or v2).

    The checks after ``onnx.checker`` are the contract's own (:func:`check_router_signature`).
    """
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise RouterExportError(f"ONNX checker rejected the router: {exc}") from exc
    inputs, outputs = tensor_specs_from_onnx(model)
    try:
        return check_router_signature(
            inputs, outputs, _metadata_of(model) if require_metadata else None
        )
    except ContractError as exc:
        raise RouterExportError(str(exc)) from exc


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


def _run_router(
    model: onnx.ModelProto | str | Path | Any,
    X: Any,
    outputs: Sequence[str],
    *,
    query_length: Any,
    intra_op_num_threads: int,
) -> list[Any]:
    """Named outputs of a router (file, ``ModelProto`` or open session) on ``X``."""
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
    result: list[Any] = session.run(list(outputs), feed)
    return result


def _load_output(
    name: str,
    model: onnx.ModelProto | str | Path | Any,
    X: Any,
    query_length: Any,
    intra_op_num_threads: int,
) -> FloatArray:
    (values,) = _run_router(
        model, X, [name], query_length=query_length, intra_op_num_threads=intra_op_num_threads
    )
    out: FloatArray = np.asarray(values, dtype=np.float64)
    return out


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
    return _load_output(OUTPUT_NAME, model, X, query_length, intra_op_num_threads)


def load_router_quality(
    model: onnx.ModelProto | str | Path | Any,
    X: Any,
    *,
    query_length: Any = None,
    intra_op_num_threads: int = 1,
) -> FloatArray:
    """Predicted per-model qualities ``[n, K]`` of ``X`` under a contract-v2 router."""
    return _load_output(QUALITY_OUTPUT_NAME, model, X, query_length, intra_op_num_threads)


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
    signature = check_router_model(model, require_metadata=require_metadata)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    try:
        onnx.save_model(model, str(partial))
        dim = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
        batch = unit_rows(np.random.default_rng(0).standard_normal((_DUMMY_BATCH, dim)))
        lengths = np.linspace(0.0, DEFAULT_QUERY_MAX_CHARS, _DUMMY_BATCH)  # unused if no input
        try:
            values = _run_router(
                partial,
                batch,
                signature.outputs,
                query_length=lengths,
                intra_op_num_threads=1,
            )
        except Exception as exc:  # onnxruntime raises its own untyped pybind errors
            raise RouterExportError(f"onnxruntime could not run the router: {exc}") from exc
        try:
            check_dry_run(
                dict(zip(signature.outputs, values, strict=True)), _DUMMY_BATCH, signature
            )
        except ContractError as exc:
            raise RouterExportError(str(exc)) from exc
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
