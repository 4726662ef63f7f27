"""What one turn of the live loop is told and what it reads: settings, live rows, training rows.

Shared by the two-model turn (:mod:`router_models.live.retrain`) and the K-model turn
(:mod:`router_models.live.retrain_quality`), so both read the same rows and keep every
held-out query out of training the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router_models.features import Embedder
from router_models.live.export import ExportStats, store_observations
from router_models.live.state import log_decision
from router_models.live.store import open_store
from router_models.observations import Observation, read_observations
from router_models.promotion import GatePolicy, RollbackPolicy
from router_models.query_prep import prepare_prompt

__all__ = ["LoopConfig", "load_live_rows", "loop_embedder", "training_rows"]


@dataclass
class LoopConfig:
    """Everything a turn needs; ``url``/``admin_token`` unset = decide and log, never reload.

    ``router`` is trained for two models (APGR gate), ``quality_router`` for K models (AIQ
    gate); ``params`` go to whichever is trained.
    """

    state_dir: Path
    store: str | None = None
    data: Sequence[str] = ()
    pretrained: Sequence[str] = ()
    serving: Path | None = None
    weak: str | None = None
    strong: str | None = None
    router: str = "knn"
    quality_router: str = "knn_quality"
    params: dict[str, Any] = field(default_factory=dict)
    holdout: float = 0.25
    seed: int = 0
    gate: GatePolicy = field(default_factory=GatePolicy)
    rollback: RollbackPolicy = field(default_factory=RollbackPolicy)
    cloud_share: float | None = None
    url: str | None = None
    admin_token: str | None = None


def load_live_rows(config: LoopConfig) -> list[Observation]:
    """Live observations from the store and/or exported files (``dars-train live export``)."""
    rows: list[Observation] = []
    if config.store is not None:
        store = open_store(config.store)
        stats = ExportStats()
        try:
            rows.extend(store_observations(store, stats=stats))
        finally:
            store.close()
        log_decision(config.state_dir, "export", store=store.backend, summary=stats.summary())
    if config.data:
        rows.extend(read_observations(list(config.data)))
    return rows


def training_rows(
    config: LoopConfig, train: list[Observation], held_ids: set[str], held_prompts: set[str]
) -> list[Observation]:
    """Live training rows plus the pretrained data, minus anything of a held-out query.

    A pretrained prompt is compared as the router sees it (prepared: stripped and cut to the
    query budget, as the service prepared the live prompt), so a raw benchmark text whose
    prepared form is a held-out prompt is left out too.
    """
    if not config.pretrained:
        return train
    extra = read_observations(list(config.pretrained))
    held = set(held_prompts) | {prepare_prompt(p) for p in held_prompts}
    kept = [
        o
        for o in extra
        if o.query_id not in held_ids
        and o.prompt not in held
        and prepare_prompt(o.prompt) not in held
    ]
    return train + kept


def loop_embedder(config: LoopConfig) -> Embedder:
    """The trainer's embedder with its cache under the state directory."""
    return Embedder(cache_dir=config.state_dir / "embeddings", progress=False)
