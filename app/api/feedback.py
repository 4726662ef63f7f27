"""``POST /v1/feedback``: a client's verdict on an answered request, for the live loop.

Authenticated like the chat API (``DARS_API_KEYS``). The body names the request by the
``x-request-id`` its answer carried and gives either a ``score`` in [0, 1] or ``thumbs``
(``up`` = 1, ``down`` = 0). One verdict per request: a second post replaces the first
(``replaced: true``), so retrying a post is harmless and a client may change its mind.
Unknown request ids answer 404; without a live store the endpoint answers 503.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field

from app.deps import ClientAuth, ServicesDep
from app.openapi import error_responses
from app.protocol import ErrorResponse

__all__ = ["FeedbackResponse", "FeedbackScore", "FeedbackThumbs", "router"]

router = APIRouter(dependencies=[ClientAuth], tags=["feedback"])

RequestId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9._:/+=@-]{1,128}$",
        description="The x-request-id of the answer being judged",
    ),
]


class FeedbackScore(BaseModel):
    """Feedback as a score: 1 = fully satisfied, 0 = useless."""

    model_config = ConfigDict(extra="forbid")
    request_id: RequestId
    score: float = Field(ge=0.0, le=1.0)


class FeedbackThumbs(BaseModel):
    """Feedback as thumbs up (1) or down (0)."""

    model_config = ConfigDict(extra="forbid")
    request_id: RequestId
    thumbs: Literal["up", "down"]


class FeedbackResponse(BaseModel):
    """The stored verdict; ``replaced`` when it replaced an earlier one for the request."""

    request_id: str
    score: float
    source: Literal["score", "thumbs"]
    replaced: bool


_EXAMPLES: dict[str, Any] = {
    "score": {"summary": "A score in [0, 1]", "value": {"request_id": "abc123", "score": 0.8}},
    "thumbs": {"summary": "Thumbs up or down", "value": {"request_id": "abc123", "thumbs": "up"}},
}
FEEDBACK_RESPONSES: dict[int | str, dict[str, Any]] = {
    **error_responses(400, 401, 413),
    404: {"model": ErrorResponse, "description": "No recorded request has this id"},
    503: {
        "model": ErrorResponse,
        "description": "No live store (DARS_LIVE_STORE unset), or it did not answer",
    },
}


@router.post("/v1/feedback", responses=FEEDBACK_RESPONSES)
async def post_feedback(
    body: Annotated[FeedbackScore | FeedbackThumbs, Body(openapi_examples=_EXAMPLES)],
    services: ServicesDep,
) -> FeedbackResponse:
    """Store a client's verdict on an answered request (the last post per request wins)."""
    if isinstance(body, FeedbackThumbs):
        score, source = (1.0 if body.thumbs == "up" else 0.0), "thumbs"
    else:
        score, source = body.score, "score"
    replaced = await services.live.feedback(body.request_id, score, source)  # type: ignore[arg-type]
    return FeedbackResponse(
        request_id=body.request_id,
        score=score,
        source=source,  # type: ignore[arg-type]
        replaced=replaced,
    )
