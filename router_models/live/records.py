"""What the live loop stores: one record per routed request, client feedback, shadow grades.

Plain frozen dataclasses with ``to_dict``/``from_dict`` (JSON-safe), shared by the service that
writes them (``app.live``) and the trainer that reads them (``router_models.live.export``).
The prompt text is kept only when ``DARS_RECORD_PROMPTS`` allows it; its sha256 always is, so
the same query seen twice groups into one query id without the text.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, TypeVar

__all__ = ["Feedback", "FeedbackSource", "Grade", "LiveRecord", "prompt_sha256"]

FeedbackSource = Literal["score", "thumbs"]
T = TypeVar("T")


def prompt_sha256(text: str) -> str:
    """The prompt's hash: names the query in records and observations without its text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build ``cls`` from a stored dict, ignoring fields a newer writer may have added."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class LiveRecord:
    """One routed chat request: where it went, why, what it cost and how long it took.

    ``route`` is the upstream that answered (edge/cloud or a name from the upstreams file),
    ``model`` its model name, ``model_id`` its id for training (its ``router_id`` when the file
    sets one, else the model name; None in records written before it existed),
    ``router``/``router_sha256`` the router file that decided (None for forced models:
    ``score``/``threshold`` are None then too). ``prompt`` is None unless recording prompts
    is allowed. ``latency_ms`` spans the whole request, ``decision_ms`` the routing decision.
    """

    request_id: str
    ts: float
    route: str
    reason: str
    model: str
    status: str
    prompt_sha256: str
    router: str | None = None
    router_sha256: str | None = None
    score: float | None = None
    threshold: float | None = None
    prompt: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    decision_ms: float | None = None
    stream: bool = False
    model_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LiveRecord:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class Feedback:
    """A client's verdict on one answered request: ``score`` in [0, 1] (thumbs: 1 up, 0 down).

    One per request id: a second post replaces the first (the client changed its mind).
    """

    request_id: str
    score: float
    source: FeedbackSource
    ts: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"feedback score must be within [0, 1], got {self.score}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Feedback:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class Grade:
    """A judge's grade in [0, 1] of one answer to a recorded request.

    ``upstream`` (its configured name) and ``model`` (its id for training: ``router_id`` when
    set, else the model name) name who answered; ``sample_id`` numbers the answers of one
    model to one request across all variants, so ``(request_id, model, sample_id)`` stays the
    store's key (0 = the served answer when ``served``, else a shadow decode, ``seed`` its
    sampling seed); ``variant_id`` is the prompt variant it answered (0 = the original,
    1..k = meaning-preserving rewrites, ``rewrite`` their text when prompts are kept; rows
    written before variants existed read as 0); ``judge`` names the grader; ``cost_usd`` is the
    answer's cost (the judge's and rewriter's cost count in the shadow spend only).
    """

    request_id: str
    upstream: str
    model: str
    sample_id: int
    score: float
    judge: str
    ts: float
    served: bool = False
    seed: int | None = None
    cost_usd: float = 0.0
    response: str | None = None
    variant_id: int = 0
    rewrite: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"grade must be within [0, 1], got {self.score}")
        if self.variant_id < 0:
            raise ValueError(f"variant_id must be >= 0, got {self.variant_id}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grade:
        return _from_dict(cls, data)
