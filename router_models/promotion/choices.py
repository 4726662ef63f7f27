"""A router's decisions over K models at every knob value: what the AIQ gate compares.

AIQ (:mod:`router_models.evaluate_multi`) scores fixed decisions ``[n_knobs, n]`` (the chosen
model column per query and knob value), so any router that picks among the gate's models can
be compared with any other on the same truth and costs:

- a K-model file (contract v2, ``quality``) or fitted quality router: ``argmax q - lambda c``
  over the knob grid, after its columns are put in the gate's model order (a file's
  ``dars.models`` says its order; a fitted estimator is in the order it was trained on);
- a two-model file (``score``, ``dars.models`` edge/cloud): every threshold of its scores
  sends the queries at or above it to the cloud model, the rest to the edge model, so a
  deployment can move from two models to K by the same gate.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from router_models.contract import (
    META_MODELS,
    QUALITY_OUTPUT_NAME,
    ContractError,
    parse_models,
    query_lengths,
)
from router_models.evaluate_multi import decisions
from router_models.export_onnx import load_router_quality, load_router_scores, router_session
from router_models.promotion.scoring import RouterLike, is_onnx_router
from router_models.registry import is_quality_router

__all__ = ["onnx_models", "route_choices", "threshold_choices"]

IntArray = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]


def _session(router: RouterLike) -> Any:
    return router if hasattr(router, "run") else router_session(router)


def onnx_models(router: RouterLike) -> tuple[tuple[str, ...], bool]:
    """(the ordered ``dars.models`` ids, whether the file has the ``quality`` output) of an
    ONNX router file, model or session."""
    session = _session(router)
    meta = dict(session.get_modelmeta().custom_metadata_map)
    try:
        ids = parse_models(meta[META_MODELS])
    except (KeyError, ContractError) as exc:
        raise ValueError(f"the router has no valid {META_MODELS}: {exc}") from exc
    return ids, QUALITY_OUTPUT_NAME in {o.name for o in session.get_outputs()}


def _columns(have: Sequence[str], want: Sequence[str], what: str) -> list[int]:
    """The index in ``have`` of each of ``want``."""
    missing = [m for m in want if m not in have]
    if missing:
        raise ValueError(f"{what} lacks the model(s) {missing} (it has {list(have)})")
    return [list(have).index(m) for m in want]


def threshold_choices(scores: FloatArray, edge: int, cloud: int) -> IntArray:
    """``[n_thresholds, n]``: at each distinct score (and above all), the queries scored at or
    above the threshold go to column ``cloud``, the others to ``edge``."""
    thresholds = np.concatenate([np.unique(scores), [np.inf]])
    out: IntArray = np.where(scores[None, :] >= thresholds[:, None], cloud, edge).astype(np.intp)
    return out


def route_choices(
    router: RouterLike,
    X: npt.ArrayLike,
    prompts: Sequence[str],
    models: Sequence[str],
    decision_cost: FloatArray,
) -> IntArray:
    """The chosen column of ``models`` per knob value and query, ``[n_knobs, n]``."""
    batch = np.asarray(X, dtype=np.float32)
    if len(batch) != len(prompts):
        raise ValueError(f"{len(batch)} embeddings for {len(prompts)} prompts")
    if is_onnx_router(router):
        session = _session(router)
        ids, has_quality = onnx_models(session)
        lengths = query_lengths(prompts)
        if has_quality:
            quality = load_router_quality(session, batch, query_length=lengths)
            return decisions(quality[:, _columns(ids, models, "the router")], decision_cost)
        edge, cloud = _columns(models, ids[:2], "the gate's model list")
        scores = load_router_scores(session, batch, query_length=lengths)
        return threshold_choices(scores, edge, cloud)
    if isinstance(router, str | Path) or not is_quality_router(router):
        raise TypeError(f"{type(router).__name__} is neither an ONNX router nor a quality router")
    quality = np.asarray(router.predict(batch), dtype=np.float64).reshape(len(batch), -1)
    if quality.shape[1] != len(models):
        raise ValueError(f"the router predicts {quality.shape[1]} models, not {len(models)}")
    return decisions(quality, decision_cost)
