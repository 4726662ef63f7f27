"""The K-model turn of the live loop: DARS quality cells -> quality router -> AIQ gate -> v2 file.

Taken when the serving file is a K-model (contract v2) router, or when the live observations
cover more than two models (and no ``--weak``/``--strong`` pins a pair). The candidate's
columns are the serving file's ``dars.models``, in its order (a two-model serving file: its
edge and cloud model first, then the other live models, sorted), so the gate compares like with
like and the promoted file names the same upstream model ids the live export wrote. A serving
file whose models are not all in the live data is refused with the missing ids logged.

The steps are ``dars-train run``'s with a ``models:`` list (:mod:`router_models.pipeline_quality`,
whose functions fit and export): held-out cells of the queries every model answered, DARS
training cells of the other queries, a ``*_quality`` router, AIQ of both routers
(:func:`router_models.promotion.gate_quality`) and, on ``promote``, a checked v2 model whose
calibration rows are the candidate's predictions on the held-out queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from router_models.features import Embedder, prepare_prompts
from router_models.labels import quality_labels
from router_models.live.config import LoopConfig, training_rows
from router_models.live.costs import cell_costs, model_costs
from router_models.live.state import log_decision
from router_models.observations import Observation
from router_models.pipeline_quality import fit_quality_router, quality_router_onnx
from router_models.promotion import QualitySlice, gate_quality, onnx_models
from router_models.query_prep import DEFAULT_QUERY_POLICY
from router_models.splits import split_by_query

__all__ = ["ModelsMismatch", "QualityTurn", "gate_models", "retrain_quality"]


class ModelsMismatch(ValueError):
    """The serving file routes to models the live data has not observed: no fair gate."""


def gate_models(
    serving: Path | str, rows: Sequence[Observation], config: LoopConfig
) -> tuple[str, ...] | None:
    """The K models of the AIQ gate in column order, or None for the two-model APGR gate
    (a pinned ``--weak``/``--strong`` pair chooses it only for a two-model serving file)."""
    ids, has_quality = onnx_models(serving)
    if not has_quality and config.weak is not None and config.strong is not None:
        return None
    live = sorted({o.model for o in rows if o.model is not None})
    if not has_quality and len(live) <= 2:
        return None
    missing = [m for m in ids if m not in live]
    if missing:
        raise ModelsMismatch(
            f"the serving router's models {list(ids)} are not all in the live data: "
            f"{missing} never observed (live models: {live})"
        )
    return ids if has_quality else (*ids, *(m for m in live if m not in ids))


@dataclass(frozen=True)
class QualityTurn:
    """The logged decision of a K-model turn and, on ``promote``, the model to write."""

    decision: dict[str, Any]
    model: onnx.ModelProto | None


def _skip(config: LoopConfig, reason: str) -> QualityTurn:
    return QualityTurn(log_decision(config.state_dir, "skip", reason=reason), None)


def retrain_quality(
    config: LoopConfig,
    serving: Path | str,
    rows: Sequence[Observation],
    models: tuple[str, ...],
    embed: Embedder,
) -> QualityTurn:
    """Label, train, gate by AIQ; the v2 model is built only when the gate promotes."""
    rows = [o for o in rows if o.model in models]
    train_rows, held_rows = split_by_query(rows, config.holdout, config.seed)
    try:
        held_all = quality_labels(held_rows, models)
    except ValueError:
        return _skip(config, "no held-out query answered by any of the models")
    held = held_all.take(np.flatnonzero(held_all.complete()))
    if not len(held):
        return _skip(config, f"no held-out query answered by every one of {list(models)}")
    train_rows = training_rows(config, train_rows, set(held_all.query_ids), set(held_all.prompts))
    try:
        train = quality_labels(train_rows, models, scheme="dars")
    except ValueError as exc:
        return _skip(config, f"no training labels: {exc}")
    unseen = [m for m, n in zip(models, train.count.sum(axis=0), strict=True) if n == 0]
    if unseen:
        return _skip(config, f"no training observation of {unseen}")
    try:
        by_model = model_costs(rows)
        heldout = QualitySlice(
            held,
            cell_costs(held_rows, held, by_model),
            cell_costs(train_rows, train, by_model).mean(axis=0),
        )
    except ValueError as exc:
        return _skip(config, f"no costs for the AIQ gate: {exc}")
    X_train = embed(prepare_prompts(list(train.prompts), DEFAULT_QUERY_POLICY))
    X_held = embed(prepare_prompts(list(held.prompts), DEFAULT_QUERY_POLICY))
    kind = config.quality_router
    candidate = fit_quality_router(kind, config.params, 0, X_train, train)
    decision = gate_quality(
        serving,
        candidate,
        heldout,
        X_held,
        policy=config.gate,
        trained_on=train.query_ids,
        candidate_name=f"{kind}/dars",
    )
    logged = log_decision(
        config.state_dir,
        "gate",
        n_train_queries=len(train),
        decision_cost_usd=dict(zip(models, heldout.decision_cost.tolist(), strict=True)),
        **decision.to_dict(),
    )
    if not decision.promote:
        return QualityTurn(logged, None)
    q_hat = np.asarray(candidate.predict(X_held), dtype=np.float64).reshape(len(held), -1)
    model = quality_router_onnx(
        candidate,
        embedding_model_id=embed.model_id,
        label_scheme="dars",
        models=models,
        router_kind=kind,
        calibration_quality=q_hat,
        seed=config.seed,
    )
    return QualityTurn(logged, model)
