"""One turn of the live loop: retrain a candidate, gate it, promote it, watch it, roll it back.

:func:`retrain_once` labels the live observations with DARS (plus pretrained data if asked),
trains a candidate on the queries *not* held out, scores candidate and serving router on the
held-out queries with :func:`router_models.promotion.gate` (two models, APGR) or, for a K-model
serving file or live data over more than two models, :mod:`router_models.live.retrain_quality`
(AIQ) and, on ``promote``, writes the candidate's ONNX file next to the old one and
hot-reloads the service. :func:`watch_once`
compares live quality per route before and after the last promotion
(:func:`router_models.promotion.rollback_decision`) and reloads the previous file on a drop.
Every decision is a JSON line in ``decisions.jsonl`` (``router_models.live.state``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from router_models.evaluate import truth_from_observations
from router_models.export_onnx import save_router
from router_models.features import Embedder
from router_models.labels import LabelSet
from router_models.live.config import LoopConfig, load_live_rows, loop_embedder, training_rows
from router_models.live.export import live_pair
from router_models.live.quality import route_quality
from router_models.live.reload import ReloadFailed, reload_service
from router_models.live.retrain_quality import ModelsMismatch, gate_models, retrain_quality
from router_models.live.state import LoopState, log_decision
from router_models.live.store import open_store
from router_models.observations import Observation
from router_models.pipeline import build_labels, export_router, train_router
from router_models.promotion import gate, rollback_decision
from router_models.splits import split_by_query

__all__ = ["LoopConfig", "load_live_rows", "retrain_once", "watch_once"]


def _pair(config: LoopConfig, rows: Sequence[Observation]) -> tuple[str, str]:
    if config.weak is not None and config.strong is not None:
        return config.weak, config.strong
    return live_pair(rows)


def retrain_once(config: LoopConfig, *, embedder: Embedder | None = None) -> dict[str, Any]:
    """Train, gate and (on ``promote``) promote; returns the logged decision.

    Two models (APGR gate) unless the serving file is a K-model router or the live data
    covers more than two models (AIQ gate, :mod:`router_models.live.retrain_quality`).
    """
    state = LoopState.load(config.state_dir, config.serving)
    rows = load_live_rows(config)
    if not rows:
        return log_decision(config.state_dir, "skip", reason="no live observations yet")
    try:
        models = gate_models(state.serving, rows, config)
    except ModelsMismatch as exc:
        return log_decision(config.state_dir, "skip", reason="models-mismatch", detail=str(exc))
    embed = embedder if embedder is not None else loop_embedder(config)
    if models is not None:
        turn = retrain_quality(config, state.serving, rows, models, embed)
        if turn.model is None:
            return turn.decision
        model = turn.model
        return _promote(config, state, lambda path: save_router(model, path))
    return _retrain_pair(config, state, rows, embed)


def _retrain_pair(
    config: LoopConfig, state: LoopState, rows: list[Observation], embed: Embedder
) -> dict[str, Any]:
    """The two-model turn: DARS pair labels, a score router, the APGR gate."""
    try:
        weak, strong = _pair(config, rows)
    except ValueError as exc:  # rows of upstreams not named edge and cloud: say, do not crash
        return log_decision(config.state_dir, "skip", reason="no-pair", detail=str(exc))
    rows = [o for o in rows if o.model in (weak, strong)]
    train, held = split_by_query(rows, config.holdout, config.seed)
    try:
        truth = truth_from_observations(held, weak, strong)
    except ValueError:
        return log_decision(
            config.state_dir, "skip", reason="no held-out query answered by both models"
        )
    train = training_rows(config, train, set(truth.query_ids), set(truth.prompts))
    try:
        labels: LabelSet = build_labels(train, weak=weak, strong=strong, scheme="dars")
    except ValueError as exc:
        return log_decision(config.state_dir, "skip", reason=f"no training labels: {exc}")
    candidate = train_router(labels, embed, kind=config.router, params=config.params, seed=0)
    decision = gate(
        state.serving,
        candidate,
        truth,
        embed(list(truth.prompts)),
        policy=config.gate,
        trained_on=labels.query_ids,
        candidate_name=f"{config.router}/dars",
    )
    logged = log_decision(
        config.state_dir, "gate", n_train_queries=len(labels), **decision.to_dict()
    )
    if not decision.promote:
        return logged
    return _promote(
        config,
        state,
        lambda path: export_router(
            candidate,
            path,
            calibration_prompts=list(labels.prompts),
            embedder=embed,
            weak=weak,
            strong=strong,
            cloud_share=config.cloud_share,
        ),
    )


def _promote(config: LoopConfig, state: LoopState, write: Callable[[Path], Path]) -> dict[str, Any]:
    """Write the candidate's file (``write``) beside the old one, reload the service, then
    save state."""
    now = time.time()
    path = config.state_dir / "routers" / f"router-{time.strftime('%Y%m%dT%H%M%S')}.onnx"
    write(path)
    new_state = state.promoted(path.resolve(), now)
    if config.url is not None and config.admin_token is not None:
        try:
            reload_service(config.url, config.admin_token, path.resolve())
        except ReloadFailed as exc:
            return log_decision(config.state_dir, "promote-failed", path=str(path), error=str(exc))
    new_state.save(config.state_dir)
    return log_decision(
        config.state_dir,
        "promote",
        path=new_state.serving,
        sha256=new_state.serving_sha256,
        previous=new_state.previous,
        previous_sha256=new_state.previous_sha256,
        reloaded=config.url is not None and config.admin_token is not None,
    )


def watch_once(config: LoopConfig) -> dict[str, Any]:
    """After a promotion: roll back when live quality on a route dropped (logged either way)."""
    state = LoopState.load(config.state_dir, config.serving)
    if state.previous is None or state.previous_sha256 is None or config.store is None:
        return log_decision(config.state_dir, "watch-skip", reason="no promotion to watch")
    store = open_store(config.store)
    try:
        records, feedback = list(store.records()), list(store.feedback())
        grades = list(store.grades())
    finally:
        store.close()
    before = route_quality(records, feedback, grades, router_sha256=state.previous_sha256)
    after = route_quality(records, feedback, grades, router_sha256=state.serving_sha256)
    decision = rollback_decision(before, after, config.rollback)
    logged = log_decision(
        config.state_dir,
        "rollback-check",
        serving_sha256=state.serving_sha256,
        previous_sha256=state.previous_sha256,
        **decision.to_dict(),
    )
    if not decision.rollback:
        return logged
    back = state.rolled_back()
    if config.url is not None and config.admin_token is not None:
        try:
            reload_service(config.url, config.admin_token, Path(back.serving))
        except ReloadFailed as exc:
            return log_decision(config.state_dir, "rollback-failed", error=str(exc))
    back.save(config.state_dir)
    return log_decision(
        config.state_dir,
        "rollback",
        path=back.serving,
        sha256=back.serving_sha256,
        from_sha256=state.serving_sha256,
        reason=decision.reason,
    )
