"""Live records, feedback and shadow grades -> observations in the trainer's format.

Each grade (judge) and each feedback (client) becomes one observation of the model that gave
the graded answer. The query id is the prompt's hash, so a prompt asked again adds samples to
the same query: many observations per (query, model) pair are what DARS labels need. Only
records whose prompt text was kept (``DARS_RECORD_PROMPTS``) can be exported: the router is
trained on the text; the others are counted and left out.

Any number of upstreams: an observation's ``model`` is the id the grade (or the record, for
feedback) carries for training (``router_id`` when the upstreams file sets one), so K-model
routers train on the export as is. Grades of meaning-preserving rewrites keep their
``variant_id`` (the observation's prompt stays the original: one query id, one prompt), and
sample ids number the observations of each (query, model, variant).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from router_models.live.records import Feedback, Grade, LiveRecord
from router_models.live.store import LiveStore
from router_models.observations import Observation

__all__ = [
    "ExportStats",
    "live_observations",
    "live_pair",
    "query_id_of",
    "store_observations",
]


def query_id_of(record: LiveRecord) -> str:
    """The query id of a record: ``live-`` and the first 16 hex digits of its prompt hash."""
    return f"live-{record.prompt_sha256[:16]}"


@dataclass
class ExportStats:
    """What an export kept and left out, and why."""

    observations: int = 0
    from_feedback: int = 0
    from_judge: int = 0
    no_prompt: int = 0
    unknown_request: int = 0
    queries: set[str] = field(default_factory=set)

    def summary(self) -> str:
        return (
            f"{self.observations} observations on {len(self.queries)} queries "
            f"({self.from_judge} judge grades, {self.from_feedback} feedback); left out: "
            f"{self.no_prompt} without prompt text (DARS_RECORD_PROMPTS), "
            f"{self.unknown_request} of unknown requests"
        )


def _row(
    record: LiveRecord,
    upstream: str,
    model: str,
    score: float,
    cost: float | None,
    meta: dict[str, Any],
    variant_id: int = 0,
) -> dict[str, Any]:
    return {
        "query_id": query_id_of(record),
        "prompt": record.prompt,
        "model": model,
        "score": score,
        "cost": cost,
        "variant_id": variant_id,
        "meta": {
            "request_id": record.request_id,
            "route": record.route,
            "upstream": upstream,
            **meta,
        },
    }


def _exportable(
    by_id: dict[str, LiveRecord], request_id: str, stats: ExportStats
) -> LiveRecord | None:
    """The record a grade or feedback refers to when it can be exported (its prompt text was
    kept); else None, counted in ``stats`` as unknown or without prompt."""
    record = by_id.get(request_id)
    if record is None:
        stats.unknown_request += 1
    elif record.prompt is None:
        stats.no_prompt += 1
        return None
    return record


def live_observations(
    records: Iterable[LiveRecord],
    feedback: Iterable[Feedback],
    grades: Iterable[Grade],
    *,
    dataset: str = "live",
    split: str = "all",
    stats: ExportStats | None = None,
) -> list[Observation]:
    """Observations of every grade and feedback whose record has its prompt text.

    Sample ids number the observations of one (query, model) pair in time order, so the
    output is the same whatever order the store returns rows in.
    """
    stats = stats if stats is not None else ExportStats()
    by_id = {r.request_id: r for r in records}
    rows: list[tuple[float, str, dict[str, Any]]] = []
    for fb in feedback:
        record = _exportable(by_id, fb.request_id, stats)
        if record is not None:
            meta: dict[str, Any] = {
                "source": "feedback",
                "feedback": fb.source,
                "router": record.router_sha256,
            }
            model = record.model_id or record.model
            row = _row(record, record.route, model, fb.score, record.cost_usd, meta)
            rows.append((fb.ts, f"{fb.request_id}\0feedback", row))
            stats.from_feedback += 1
    for grade in grades:
        record = _exportable(by_id, grade.request_id, stats)
        if record is not None:
            meta = {
                "source": "judge",
                "judge": grade.judge,
                "served": grade.served,
                "seed": grade.seed,
                "router": record.router_sha256,
            }
            if grade.rewrite is not None:
                meta["rewrite"] = grade.rewrite
            # The served answer's cost is the record's (None when its usage was unknown; the
            # grade then says 0.0, which would count the answer as free).
            cost = record.cost_usd if grade.served else grade.cost_usd
            row = _row(
                record, grade.upstream, grade.model, grade.score, cost, meta, grade.variant_id
            )
            row["response"] = grade.response
            key = f"{grade.request_id}\0judge\0{grade.model}\0{grade.sample_id:06d}"
            rows.append((grade.ts, key, row))
            stats.from_judge += 1
    rows.sort(key=lambda item: (item[0], item[1]))
    counters: dict[tuple[str, str, int], int] = defaultdict(int)
    out: list[Observation] = []
    for _, _, row in rows:
        cell = (row["query_id"], row["model"], row["variant_id"])
        row.update(dataset=dataset, split=split, sample_id=counters[cell])
        counters[cell] += 1
        out.append(Observation.from_dict(row))
        stats.queries.add(row["query_id"])
    stats.observations = len(out)
    return out


def store_observations(
    store: LiveStore, *, dataset: str = "live", stats: ExportStats | None = None
) -> list[Observation]:
    """:func:`live_observations` of everything in ``store``."""
    return live_observations(
        store.records(), store.feedback(), store.grades(), dataset=dataset, stats=stats
    )


def live_pair(rows: Iterable[Observation]) -> tuple[str, str]:
    """(edge model, cloud model) as the live rows name them (``meta.upstream``).

    Two-model path only: rows of an upstreams file (other names) raise ``ValueError`` naming
    the upstreams seen, so the caller passes the pair it wants (``--weak``/``--strong``).
    """
    names: dict[str, set[str]] = defaultdict(set)
    for obs in rows:
        if obs.model is not None:
            names[str(obs.meta.get("upstream"))].add(obs.model)
    edge, cloud = names.get("edge", set()), names.get("cloud", set())
    if len(edge) != 1 or len(cloud) != 1:
        seen = {name: sorted(models) for name, models in sorted(names.items())}
        raise ValueError(
            f"cannot tell the edge and cloud model apart (edge: {sorted(edge)}, cloud: "
            f"{sorted(cloud)}; models by upstream: {seen}); pass --weak and --strong"
        )
    return edge.pop(), cloud.pop()
