"""Wire schemas, one per direction: what clients send, what the service answers.

The chat request accepts every field the OpenAI API has or will have (``tools``,
``response_format``, ``n``, ``seed``...) and forwards them untouched: the service validates only
what it reads (``model``, ``messages``, ``stream``, ``stream_options``). Admin bodies, which the
service owns, refuse unknown fields instead.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

__all__ = [
    "CHAT_EXAMPLES",
    "CalibrateRequest",
    "CascadeThresholdResponse",
    "ChatCompletionRequest",
    "ChatMessage",
    "ContentPart",
    "ErrorBody",
    "ErrorResponse",
    "ModelCard",
    "ModelList",
    "OpenAIBaseModel",
    "ReadyResponse",
    "ReloadRequest",
    "ReloadResponse",
    "RouteResponse",
    "RouterCalibrateRequest",
    "RouterStatus",
    "StreamOptions",
    "ThresholdResponse",
    "ThresholdUpdate",
    "UtilityThresholdResponse",
]


class OpenAIBaseModel(BaseModel):
    """Base of the OpenAI-shaped schemas: unknown fields are kept so they can be forwarded."""

    model_config = ConfigDict(extra="allow")


class ContentPart(OpenAIBaseModel):
    """One part of a multi-part message (``text``, ``image_url``, ``input_audio``...)."""

    type: str
    text: str | None = None


class ChatMessage(OpenAIBaseModel):
    """One message; ``content`` is a string, a list of parts, or absent (tool calls)."""

    role: str = Field(min_length=1)
    content: str | list[ContentPart] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _content_shape(cls, value: object) -> object:
        # One clear error instead of one per member of the union.
        if value is not None and not isinstance(value, str | list):
            raise ValueError("content must be a string, a list of content parts, or null")
        return value


class StreamOptions(OpenAIBaseModel):
    include_usage: bool | None = None


class ChatCompletionRequest(OpenAIBaseModel):
    """``POST /v1/chat/completions``; ``model``: ``router``, ``router-<t>`` or an upstream's."""

    model: str = Field(
        min_length=1,
        description="'router', 'router-<threshold>' (e.g. router-0.35), 'router-cascade', "
        "'router-cascade-<entropy threshold>' (the confidence cascade, e.g. router-cascade-0.5) "
        "or an upstream's model (forced to that upstream).",
        examples=["router"],
    )
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None

    @property
    def wants_usage(self) -> bool:
        """Whether the client itself asked for the final usage chunk of a stream."""
        return bool(self.stream_options and self.stream_options.include_usage)

    def upstream_body(self, *, include_usage: bool) -> dict[str, Any]:
        """The body to forward: every field as the client sent it (``model`` is set per upstream).

        ``include_usage`` asks a streaming upstream for the usage chunk even when the client did
        not, so that tokens and cost can be counted; the stream relay strips it again.
        """
        body = self.model_dump(mode="json", exclude_unset=True)
        if self.stream and include_usage:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return body


CHAT_EXAMPLES: dict[str, dict[str, Any]] = {
    "router": {
        "summary": "The router decides, with the server's threshold",
        "value": {"model": "router", "messages": [{"role": "user", "content": "What is 2+2?"}]},
    },
    "per-request-threshold": {
        "summary": "A per-request threshold, streamed",
        "value": {
            "model": "router-0.35",
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "Prove that sqrt(2) is irrational."},
            ],
            "stream": True,
        },
    },
}


# --- errors


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str = Field(description="Machine-readable cause, e.g. invalid_json, model_not_found.")


class ErrorResponse(BaseModel):
    """Every error the service answers, OpenAI-shaped."""

    error: ErrorBody


# --- GET /v1/models


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- POST /v1/route


class RouteResponse(BaseModel):
    """The decision the service would take for a chat request, without forwarding it."""

    route: str = Field(description="The upstream: edge or cloud, or its configured name.")
    reason: Literal["threshold", "forced", "fallback", "cascade", "gate", "utility"]
    model: str = Field(description="The upstream model the request would be sent to.")
    score: float | None = Field(
        description="Router score; null when the model was forced or a K-model router chose."
    )
    threshold: float | None = Field(
        description="Threshold, or a K-model router's trade-off knob; null when forced."
    )
    cache_hit: bool | None = Field(description="Embedding cache hit; null when not scored.")
    quality: float | None = Field(
        default=None, description="K-model router: predicted quality of the chosen model."
    )
    runner_up: str | None = Field(
        default=None, description="K-model router: the upstream with the next best utility."
    )


# --- health


class RouterStatus(BaseModel):
    """The loaded router and the threshold it serves with."""

    path: str
    provider: str
    embedding_model: str
    label_scheme: str
    router: str = Field(description="Estimator kind (dars.router).")
    default_threshold: float = Field(description="The router file's dars.default_threshold.")
    threshold: float = Field(description="The threshold in use.")
    threshold_source: Literal["default", "operator", "calibrated"]


class ReadyResponse(BaseModel):
    status: Literal["ready"] = "ready"
    router: RouterStatus
    encoder: dict[str, Any]
    cache_backend: str


# --- admin (service-owned bodies: unknown fields are an error)


class _AdminModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _in_unit_interval(code: str, name: str) -> AfterValidator:
    """A check with the same wording as ``router-<t>`` and ``DARS_THRESHOLD`` (NaN included)."""

    def check(value: float) -> float:
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise PydanticCustomError(
                code,
                "{name} must be a number in [0, 1], got {value}",
                {"name": name, "value": value},
            )
        return value

    return AfterValidator(check)


_UNIT: JsonDict = {"minimum": 0.0, "maximum": 1.0}  # documented; checked above


class ThresholdUpdate(_AdminModel):
    value: Annotated[float, _in_unit_interval("invalid_threshold", "threshold")] = Field(
        json_schema_extra=_UNIT, examples=[0.4]
    )


class CalibrateRequest(_AdminModel):
    cloud_share: Annotated[float, _in_unit_interval("invalid_cloud_share", "cloud_share")] = Field(
        json_schema_extra=_UNIT, examples=[0.3]
    )


class RouterCalibrateRequest(_AdminModel):
    """Exactly one target: a cloud share (two-model routers) or a spend (any router)."""

    cloud_share: (
        Annotated[float, _in_unit_interval("invalid_cloud_share", "cloud_share")] | None
    ) = Field(default=None, json_schema_extra=_UNIT, examples=[0.3])
    usd_per_1k_requests: float | None = Field(
        default=None,
        ge=0.0,
        allow_inf_nan=False,
        description="Target spend: expected USD per 1000 requests at each upstream's prices "
        "and running token averages.",
        examples=[2.0],
    )

    @model_validator(mode="after")
    def _one_target(self) -> RouterCalibrateRequest:
        if (self.cloud_share is None) == (self.usd_per_1k_requests is None):
            raise PydanticCustomError(
                "invalid_calibration_target",
                "give exactly one of cloud_share, usd_per_1k_requests",
            )
        return self


class ReloadRequest(_AdminModel):
    path: str | None = Field(default=None, description="ONNX file; default: the current one.")


class ThresholdResponse(BaseModel):
    value: float
    default: float | None = Field(description="The loaded router's recommended threshold.")
    source: Literal["default", "operator", "calibrated"] = Field(
        description="default: follows the router file (also after a reload); operator: set by "
        "PUT or DARS_THRESHOLD, kept across reloads; calibrated: recalibrated to the same cloud "
        "share on reload."
    )
    cloud_share: float | None = Field(description="Cloud share over the rolling window.")


class UtilityThresholdResponse(ThresholdResponse):
    """The same for a K-model router: ``value`` is the trade-off knob ``t`` (app.utility)."""

    mode: Literal["utility"] = Field(
        default="utility", description="A K-model router: value is the knob t, lambda = t/(1-t)."
    )
    tradeoff_lambda: float | None = Field(
        description="lambda of the knob; null for t = 1 (always the cheapest)."
    )
    usd_per_1k_requests: float | None = Field(
        description="Expected USD per 1000 requests at this knob over the live window (over "
        "the router file's calibration data while the window holds under 50 requests); null "
        "before there is traffic for a file without calibration data."
    )
    upstream_costs_usd: dict[str, float] = Field(
        description="Expected USD per request of each model the router knows, by upstream "
        "(prices times running token averages)."
    )


class CascadeThresholdResponse(BaseModel):
    """The confidence cascade's entropy threshold (``/admin/cascade/threshold``)."""

    value: float = Field(
        description="Normalised semantic entropy (entropy / log k) above which the cloud answers."
    )
    default: float = Field(description="DARS_CASCADE_THRESHOLD.")
    source: Literal["default", "operator", "calibrated"]
    k: int = Field(description="Edge answers sampled per request (DARS_CASCADE_K).")
    cloud_share: float = Field(
        description="Share of the recent sampled requests that were escalated."
    )
    live_entropies: int = Field(description="Sampled requests in the rolling window.")


class ReloadResponse(BaseModel):
    path: str
    provider: str
    default_threshold: float | None
    embedding_model: str
