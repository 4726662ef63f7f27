"""Scores of any router the loop handles: ONNX file / model / session, or a fitted estimator.

The gate compares a serving router (usually the ONNX file the service loaded) with a fresh
candidate (usually a fitted estimator), so both must be scored the same way: on the same
embeddings, with the contract's ``query_length`` input derived from the same prompts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import onnx

from router_models.contract import query_lengths
from router_models.export_onnx import load_router_scores
from router_models.registry import accepts_query_length

__all__ = ["RouterLike", "describe_router", "is_onnx_router", "router_scores"]

# A path or ModelProto of an ONNX router, an onnxruntime session on one, a ``TrainedRouter``
# (``predict_prompts``) or a fitted registry estimator (``predict``).
RouterLike: TypeAlias = str | Path | onnx.ModelProto | Any

FloatArray = npt.NDArray[np.float64]


def is_onnx_router(router: RouterLike) -> bool:
    """A path, ``ModelProto`` or onnxruntime session (not a fitted estimator)."""
    return isinstance(router, str | Path | onnx.ModelProto) or hasattr(router, "run")


def router_scores(router: RouterLike, X: npt.ArrayLike, prompts: Sequence[str]) -> FloatArray:
    """Scores of the queries whose embeddings are ``X`` and texts are ``prompts``.

    ONNX routers go through ``export_onnx.load_router_scores`` (the trainer's check of what
    the service computes); estimators get ``query_length`` only when they take it.
    """
    batch = np.asarray(X, dtype=np.float32)
    if len(batch) != len(prompts):
        raise ValueError(f"{len(batch)} embeddings for {len(prompts)} prompts")
    if is_onnx_router(router):
        return load_router_scores(router, batch, query_length=query_lengths(prompts))
    if hasattr(router, "predict_prompts"):
        return np.asarray(router.predict_prompts(prompts, batch), dtype=np.float64)
    if not hasattr(router, "predict"):
        raise TypeError(f"{type(router).__name__} is neither an ONNX router nor an estimator")
    extra = {"query_length": query_lengths(prompts)} if accepts_query_length(router) else {}
    return np.asarray(router.predict(batch, **extra), dtype=np.float64)


def describe_router(router: RouterLike, name: str | None = None) -> tuple[str, str | None]:
    """(name, sha256) for the decision record: a file is named by its path and content hash,
    anything else by ``name`` or its type (no stable hash)."""
    if isinstance(router, str | Path):
        with open(router, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        return name or str(router), digest
    if isinstance(router, onnx.ModelProto):
        return name or "onnx-model", hashlib.sha256(router.SerializeToString()).hexdigest()
    return name or type(getattr(router, "estimator", router)).__name__, None
