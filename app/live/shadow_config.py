"""Who shadow sampling asks, and how often: resolved once at start-up from the upstream list.

Why a module of its own: the same list (``DARS_UPSTREAMS_FILE`` or the edge/cloud shorthand)
decides the decodes per upstream, the judge's (and rewriter's) endpoint and the model id each
grade carries, and a name in a shadow setting that the list does not have must stop start-up
with a message naming it, not fail one job at a time later.

Defaults: the cheapest upstream (input + output price; the first on ties) gets
``DARS_SHADOW_EDGE_SAMPLES`` extra decodes and every other one ``DARS_SHADOW_CLOUD_SAMPLES``;
the judge is the dearest upstream (the last on ties). With the shorthand those are ``edge`` and
``cloud`` by name, whatever their prices, as before upstream lists existed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from app.settings import Settings
from app.upstreams_file import UpstreamsConfig, UpstreamSpec

__all__ = [
    "JudgeEndpoint",
    "ShadowConfigError",
    "ShadowPlan",
    "judge_endpoint",
    "shadow_plan",
    "training_model_id",
]


class ShadowConfigError(ValueError):
    """A shadow setting names an upstream that is not configured."""


@dataclass(frozen=True)
class JudgeEndpoint:
    """The OpenAI-compatible endpoint that grades (and paraphrases) shadow answers."""

    base_url: str
    model: str
    api_key: str | None
    price_input_per_mtok: float
    price_output_per_mtok: float


@dataclass(frozen=True)
class ShadowPlan:
    """Extra decodes per upstream name, the model id of each upstream, the judge upstream."""

    samples: Mapping[str, int]
    model_ids: Mapping[str, str]
    judge: UpstreamSpec


def training_model_id(spec: UpstreamSpec) -> str:
    """The ``model`` a grade of ``spec`` carries into observations.

    Its ``router_id`` when the file sets one (a K-model router trained on the export then
    names it as the serving router files do), else its model name: what the two-model path
    has always written, and ``resolve_router_ids`` maps a model name back to its upstream.
    """
    return spec.router_id if spec.router_id != spec.name else spec.model


def _price(spec: UpstreamSpec) -> float:
    return spec.config.price_input_per_mtok + spec.config.price_output_per_mtok


def _shorthand(config: UpstreamsConfig) -> bool:
    return config.source == "env" and config.names == ("edge", "cloud")


def _named(config: UpstreamsConfig, name: str, setting: str) -> UpstreamSpec:
    for spec in config.upstreams:
        if spec.name == name:
            return spec
    raise ShadowConfigError(
        f"{setting} names upstream {name!r}, which is not configured "
        f"(configured in {config.source}: {', '.join(config.names)})"
    )


def _samples(settings: Settings, config: UpstreamsConfig) -> dict[str, int]:
    # min: the first on ties
    cheapest = "edge" if _shorthand(config) else min(config.upstreams, key=_price).name
    samples = {
        spec.name: settings.shadow_edge_samples
        if spec.name == cheapest
        else settings.shadow_cloud_samples
        for spec in config.upstreams
    }
    for name, count in settings.shadow_sample_counts.items():
        samples[_named(config, name, "DARS_SHADOW_SAMPLES").name] = count
    return samples


def _judge(settings: Settings, config: UpstreamsConfig) -> UpstreamSpec:
    if settings.shadow_judge_upstream is not None:
        return _named(config, settings.shadow_judge_upstream, "DARS_SHADOW_JUDGE_UPSTREAM")
    if _shorthand(config):
        return _named(config, "cloud", "the default judge")
    return max(reversed(config.upstreams), key=_price)  # reversed: the last on ties


def shadow_plan(settings: Settings, config: UpstreamsConfig) -> ShadowPlan:
    """The plan for ``config``; :class:`ShadowConfigError` when a setting names no upstream."""
    return ShadowPlan(
        samples=_samples(settings, config),
        model_ids={spec.name: training_model_id(spec) for spec in config.upstreams},
        judge=_judge(settings, config),
    )


def judge_endpoint(settings: Settings, judge: UpstreamSpec) -> JudgeEndpoint:
    """``DARS_SHADOW_JUDGE_*`` where set, else the judge upstream's URL, model, key, prices.

    The upstream's key goes only to the upstream's own URL: a judge URL of its own takes
    ``DARS_SHADOW_JUDGE_API_KEY`` or none.
    """
    own_url = settings.shadow_judge_base_url
    key = settings.shadow_judge_api_key or (None if own_url else judge.config.api_key)
    price_in = settings.shadow_judge_price_input_per_mtok
    price_out = settings.shadow_judge_price_output_per_mtok
    return JudgeEndpoint(
        base_url=own_url or judge.config.base_url,
        model=settings.shadow_judge_model or judge.model,
        api_key=key.get_secret_value() if key is not None else None,
        price_input_per_mtok=judge.config.price_input_per_mtok if price_in is None else price_in,
        price_output_per_mtok=judge.config.price_output_per_mtok
        if price_out is None
        else price_out,
    )
