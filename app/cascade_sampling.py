"""k answers from one rung of the cascade's ladder (the edge model, or any configured upstream
below the top) for one request: k parallel calls with distinct seeds, or one call with ``n = k``.

llama.cpp's server accepts ``n`` up to its ``--parallel`` slots and then answers k different
choices in one response, but reports the usage of one choice only (measured with xllamacpp and
SmolLM2: ``completion_tokens`` 12 for three 12-token choices), so per-sample calls are the
default: every sample's usage is counted and the samples run in the server's parallel slots all
the same. Other OpenAI-compatible servers ignore ``n`` or refuse it; the setting
``DARS_CASCADE_EDGE_N`` turns it on where it is known to work.

Each call goes through the upstream client's retries; a failed sample fails the whole sampling
(``UpstreamFailed``), and the cascade then climbs to the next rung when failover allows it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.upstream import (
    UpstreamClient,
    UpstreamFailed,
    UpstreamName,
    Upstreams,
    Usage,
    classify_error,
)

__all__ = ["EdgeSample", "EdgeSampler", "EdgeSamples", "sample_bodies"]


@dataclass(frozen=True)
class EdgeSample:
    """One sampled answer: its choice object and the response it came in."""

    payload: Mapping[str, Any]
    choice: Mapping[str, Any]

    @property
    def text(self) -> str:
        """The answer's text ('' for a choice without text content)."""
        message = self.choice.get("message")
        content = message.get("content") if isinstance(message, Mapping) else None
        return content if isinstance(content, str) else ""


@dataclass(frozen=True)
class EdgeSamples:
    """The k samples of one request and the tokens they cost together."""

    samples: tuple[EdgeSample, ...]
    usage: Usage

    @property
    def texts(self) -> list[str]:
        return [sample.text for sample in self.samples]


def sample_bodies(
    body: Mapping[str, Any], k: int, *, temperature: float, use_n: bool
) -> list[dict[str, Any]]:
    """The edge request bodies for k samples of the client's ``body`` (model set per upstream).

    Not streamed. Temperature: the client's when it asked for a positive one, else
    ``temperature`` (greedy samples would always agree). Seeds: the client's ``seed`` (or 0)
    plus the sample's index, so the samples differ and a request is reproducible.
    """
    base = {key: value for key, value in body.items() if key not in ("stream", "stream_options")}
    client_temperature = body.get("temperature")
    if not (isinstance(client_temperature, int | float) and client_temperature > 0):
        base["temperature"] = temperature
    client_seed = body.get("seed")
    seed = client_seed if isinstance(client_seed, int) and not isinstance(client_seed, bool) else 0
    if use_n:
        return [{**base, "n": k, "seed": seed}]
    return [{**base, "n": 1, "seed": seed + i} for i in range(k)]


def _sum(usages: Sequence[Usage | None]) -> Usage:
    known = [usage for usage in usages if usage is not None]
    return Usage(
        prompt_tokens=sum(usage.prompt_tokens for usage in known),
        completion_tokens=sum(usage.completion_tokens for usage in known),
    )


class EdgeSampler:
    """Draws k answers from one upstream (``edge`` unless told); counts their tokens and cost
    in the metrics under that upstream's name."""

    def __init__(self, upstreams: Upstreams, *, temperature: float, use_n: bool) -> None:
        self.upstreams = upstreams
        self.temperature = temperature
        self.use_n = use_n

    @property
    def edge(self) -> UpstreamClient:
        return self.upstreams["edge"]

    async def _call(self, client: UpstreamClient, body: Mapping[str, Any]) -> dict[str, Any]:
        _, payload = await client.attempt(lambda: client.create_once(body))
        return payload

    async def sample(
        self, body: Mapping[str, Any], k: int, upstream: UpstreamName = "edge"
    ) -> EdgeSamples:
        """k samples of ``body`` from ``upstream``; raises ``UpstreamFailed`` when a call fails
        after retries, or when the upstream answered fewer than k choices."""
        client = self.upstreams[upstream]
        bodies = sample_bodies(body, k, temperature=self.temperature, use_n=self.use_n)
        results = await asyncio.gather(
            *(self._call(client, b) for b in bodies), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        payloads = [result for result in results if not isinstance(result, BaseException)]
        samples = tuple(
            EdgeSample(payload, choice)
            for payload in payloads
            for choice in payload.get("choices") or []
            if isinstance(choice, Mapping)
        )
        usages = [Usage.from_payload(payload.get("usage")) for payload in payloads]
        for usage in usages:
            self.upstreams.record_usage(upstream, usage)
        if len(samples) < k:
            failure = classify_error(
                upstream,
                ValueError(f"asked for {k} answers, got {len(samples)}"),
                base_url=client.config.base_url,
            )
            raise UpstreamFailed([failure])
        return EdgeSamples(samples[:k], _sum(usages))
