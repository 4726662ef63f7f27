"""The confidence cascade service: sampling, grouping, keep/escalate, gate, budget, calibration.

The edge and cloud are ``httpx.MockTransport`` upstreams answering by seed (the system edge);
the router score is a constant (decided by the real threshold rule), the meaning grouping and
the decision are the real ones.
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import numpy as np
import pytest

from app.cascade import CascadeConfig, CascadeService
from app.cascade_meaning import MeaningGrouper, explicit_answer_kind
from app.cascade_policy import (
    SampleBudget,
    normalised_entropy,
    parse_cascade_model,
    skip_reason,
)
from app.errors import InvalidRequest, UpstreamError
from app.metrics import Metrics
from app.policy import Decision, ThresholdState, decide
from app.protocol import ChatCompletionRequest
from app.settings import Settings
from app.upstream import Upstreams

USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


class Edge:
    """A MockTransport handler answering ``answers[seed]``; records the bodies it saw."""

    def __init__(self, answers: list[str], *, status: int = 200) -> None:
        self.answers = answers
        self.status = status
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        if self.status != 200:
            return httpx.Response(self.status, json={"error": {"message": "down"}})
        seed, n = body.get("seed", 0), body.get("n", 1)
        choices = [
            {
                "index": i,
                "message": {
                    "role": "assistant",
                    "content": self.answers[(seed + i) % len(self.answers)],
                },
                "finish_reason": "stop",
            }
            for i in range(n)
        ]
        payload = {"id": f"c{seed}", "object": "chat.completion", "created": 1, "model": "e"}
        return httpx.Response(200, json={**payload, "choices": choices, "usage": USAGE})


async def _no_embedding(text: str) -> np.ndarray:
    raise AssertionError("answers with explicit final answers are not embedded")


def make(
    edge: Edge,
    *,
    score: float = 0.2,
    router_threshold: float = 0.5,
    failover: bool = True,
    budget: SampleBudget | None = None,
    **config: Any,
) -> tuple[CascadeService, Metrics]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        edge_base_url="http://edge.test/v1",
        cloud_base_url="http://cloud.test/v1",
        upstream_retries=0,
        failover_edge_to_cloud=failover,
    )
    metrics = Metrics()
    upstreams = Upstreams.from_settings(settings, metrics, transport=httpx.MockTransport(edge))

    threshold = ThresholdState(router_threshold)

    async def router_score(request: ChatCompletionRequest, cheapest: str) -> float:
        assert cheapest == "edge"  # the gate asks about the ladder's bottom rung
        return score

    async def router_decide(request: ChatCompletionRequest) -> Decision:
        decision = decide(score, threshold.get())
        threshold.record(score, decision.route)
        return decision

    service = CascadeService(
        CascadeConfig(**config),
        upstreams=upstreams,
        grouper=MeaningGrouper(_no_embedding),
        score=router_score,
        decide=router_decide,
        router_threshold=threshold,
        metrics=metrics,
        budget=budget,
    )
    return service, metrics


def request(model: str = "router-cascade", **fields: Any) -> ChatCompletionRequest:
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    return ChatCompletionRequest.model_validate({"model": model, "messages": messages, **fields})


async def run(service: CascadeService, model: str = "router-cascade", **fields: Any) -> Any:
    selection = service.selection(model)
    assert selection is not None
    return await service.run(request(model, **fields), selection)


def count(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# --- keep / escalate


async def test_agreeing_samples_keep_the_edge_answer_with_summed_usage() -> None:
    edge = Edge(["so the answer is 4.", "#### 4", "The answer is 4"])
    service, metrics = make(edge)

    outcome = await run(service)

    assert (outcome.route, outcome.reason, outcome.verdict) == ("edge", "cascade", "keep")
    assert (outcome.k, outcome.entropy, outcome.method, outcome.clusters) == (3, 0.0, "number", 1)
    assert outcome.kept.text == "so the answer is 4."
    assert (outcome.usage.prompt_tokens, outcome.usage.completion_tokens) == (30, 15)
    assert [body["seed"] for body in edge.bodies] == [0, 1, 2]
    assert all(b["temperature"] == 0.7 and b["n"] == 1 and not b.get("stream") for b in edge.bodies)
    assert count(metrics, "dars_cascade_decisions_total", decision="keep") == 1
    assert count(metrics, "dars_cascade_edge_samples_total") == 3
    assert count(metrics, "dars_tokens_total", upstream="edge", direction="output") == 15
    assert outcome.headers()["x-dars-decision"] == "keep"


async def test_disagreeing_samples_escalate_to_the_cloud() -> None:
    service, metrics = make(Edge(["The answer is 4", "The answer is 5", "The answer is 6"]))

    outcome = await run(service)

    assert (outcome.route, outcome.reason, outcome.verdict) == ("cloud", "cascade", "escalate")
    assert outcome.entropy == pytest.approx(1.0)
    assert outcome.kept is None and outcome.clusters == 3
    assert count(metrics, "dars_cascade_decisions_total", decision="escalate") == 1
    assert count(metrics, "dars_decisions_total", route="cloud", reason="cascade") == 1
    assert service.threshold.cloud_share() == 1.0


@pytest.mark.parametrize(
    ("model", "verdict"), [("router-cascade-0.6", "keep"), ("router-cascade-0.5", "escalate")]
)
async def test_a_majority_is_kept_only_under_a_high_enough_threshold(
    model: str, verdict: str
) -> None:
    # 2 of 3 agree: entropy 0.637 nats, normalised 0.579.
    service, _ = make(Edge(["The answer is 5", "The answer is 4", "answer: 4"]))

    outcome = await run(service, model)

    assert outcome.verdict == verdict
    assert outcome.entropy == pytest.approx(0.6365141 / math.log(3))
    if verdict == "keep":
        assert outcome.kept.text == "The answer is 4"  # the largest class, not sample 0


async def test_client_temperature_and_seed_are_respected_and_n_mode_sends_one_call() -> None:
    edge = Edge(["The answer is 4"])
    service, _ = make(edge, use_n=True, k=4)

    outcome = await run(service, temperature=1.2, seed=7)

    assert len(edge.bodies) == 1
    assert (edge.bodies[0]["n"], edge.bodies[0]["seed"], edge.bodies[0]["temperature"]) == (
        4,
        7,
        1.2,
    )
    assert outcome.k == 4 and outcome.verdict == "keep"


# --- what the cascade declines, the gate, the budget


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"n": 2}, "n"),
    ],
)
async def test_tools_json_mode_and_n_go_to_the_trained_router(
    fields: dict[str, Any], reason: str
) -> None:
    edge = Edge(["x"])
    service, metrics = make(edge, score=0.8, router_threshold=0.5)

    outcome = await run(service, **fields)

    assert (outcome.route, outcome.reason, outcome.skipped) == ("cloud", "threshold", reason)
    assert (outcome.score, outcome.router_threshold, outcome.k) == (0.8, 0.5, 0)
    assert edge.bodies == []
    assert count(metrics, "dars_cascade_skipped_total", reason=reason) == 1
    assert outcome.headers()["x-dars-cascade-skipped"] == reason


async def test_the_gate_sends_clearly_cloud_queries_up_without_sampling() -> None:
    edge = Edge(["The answer is 4"])
    high, _ = make(edge, score=0.9, gate=0.8)
    low, _ = make(edge, score=0.3, gate=0.8)

    up = await run(high)
    assert (up.route, up.reason, up.verdict, up.k) == ("cloud", "gate", "escalate", 0)
    assert edge.bodies == []
    kept = await run(low)
    assert (kept.verdict, kept.score, len(edge.bodies)) == ("keep", 0.3, 3)


async def test_the_budget_caps_edge_samples_per_second() -> None:
    now = [0.0]
    budget = SampleBudget(3.0, burst=3.0, clock=lambda: now[0])
    edge = Edge(["The answer is 4"])
    service, metrics = make(edge, budget=budget, score=0.1)

    first = await run(service)
    second = await run(service)
    now[0] = 1.0
    third = await run(service)

    assert (first.verdict, third.verdict) == ("keep", "keep")
    assert (second.skipped, second.reason, second.route, second.k) == (
        "budget",
        "threshold",
        "edge",
        0,
    )
    assert len(edge.bodies) == 6
    assert count(metrics, "dars_cascade_skipped_total", reason="budget") == 1


# --- edge failures


async def test_a_failed_edge_escalates_when_failover_allows_it() -> None:
    service, metrics = make(Edge(["x"], status=500))
    outcome = await run(service)
    assert (outcome.route, outcome.reason, outcome.skipped) == ("cloud", "fallback", "edge_failed")
    assert count(metrics, "dars_cascade_skipped_total", reason="edge_failed") == 1


async def test_a_failed_edge_is_the_clients_error_without_failover() -> None:
    service, _ = make(Edge(["x"], status=500), failover=False)
    with pytest.raises(UpstreamError):
        await run(service)


# --- threshold: admin and calibration


async def test_calibration_to_a_cloud_share_uses_the_live_entropies() -> None:
    service, metrics = make(Edge(["x"]))
    with pytest.raises(InvalidRequest) as refused:
        await service.calibrate(0.3)
    assert refused.value.code == "calibration_unavailable"
    rng = np.random.default_rng(0)
    entropies = rng.uniform(0.0, 1.0, size=200)
    for value in entropies:
        service.threshold.record(float(value), "cloud" if value > 0 else "edge")

    threshold = await service.calibrate(0.3)

    assert np.mean(entropies > threshold) == pytest.approx(0.3, abs=0.03)
    assert service.threshold.source == "calibrated"
    assert count(metrics, "dars_cascade_threshold") == threshold
    assert await service.set_threshold(0.25) == 0.25
    assert service.threshold.source == "operator"
    assert count(metrics, "dars_cascade_threshold") == 0.25


async def test_the_server_threshold_applies_without_a_per_request_one() -> None:
    service, _ = make(Edge(["The answer is 5", "The answer is 4", "answer: 4"]))
    assert (await run(service)).verdict == "escalate"  # default 0: any disagreement
    await service.set_threshold(0.6)
    assert (await run(service)).verdict == "keep"


# --- pure rules


def test_model_names() -> None:
    assert parse_cascade_model("router-cascade").threshold is None  # type: ignore[union-attr]
    assert parse_cascade_model("router-cascade-0.25").threshold == 0.25  # type: ignore[union-attr]
    assert parse_cascade_model("router") is None
    assert parse_cascade_model("router", default_mode="cascade") is not None
    assert parse_cascade_model("router-0.3", default_mode="cascade") is None
    for bad in ("router-cascade-1.5", "router-cascade-", "router-cascade-nan", "router-cascade--1"):
        with pytest.raises(InvalidRequest) as error:
            parse_cascade_model(bad)
        assert error.value.code == "invalid_threshold"


def test_skip_reasons() -> None:
    user = [{"role": "user", "content": "hi"}]
    assert skip_reason({"messages": user}) is None
    assert skip_reason({"messages": user, "response_format": {"type": "text"}, "n": 1}) is None
    assert skip_reason({"messages": user, "tools": []}) is None
    assert skip_reason({"messages": [*user, {"role": "tool", "content": "4"}]}) == "tools"
    assert skip_reason({"messages": user, "tool_choice": "auto"}) == "tools"
    assert skip_reason({"messages": user, "response_format": {"type": "json_schema"}}) == (
        "response_format"
    )


def test_budget_refuses_more_than_it_holds_and_refills() -> None:
    now = [0.0]
    budget = SampleBudget(2.0, burst=4.0, clock=lambda: now[0])
    assert budget.take(4) and not budget.take(1)
    now[0] = 1.0
    assert budget.take(2) and not budget.take(1)
    assert SampleBudget(None).take(1000)
    with pytest.raises(ValueError):
        SampleBudget(0.0)


def test_normalised_entropy_and_answer_kind() -> None:
    assert normalised_entropy(math.log(5), 5) == 1.0
    assert normalised_entropy(0.0, 2) == 0.0
    with pytest.raises(ValueError):
        normalised_entropy(0.0, 1)
    assert explicit_answer_kind(["#### 4", "The answer is 5", "four"]) == "number"
    assert explicit_answer_kind(["Answer: B", "(C)", "maybe"]) == "choice"
    assert explicit_answer_kind(["It was built in 1889.", "Paris, 1889.", "In 1889"]) is None


async def test_embedding_grouping_clusters_by_cosine() -> None:
    vectors = {"a": [1.0, 0.0], "a2": [0.99, 0.05], "b": [0.0, 1.0]}

    async def embed(text: str) -> np.ndarray:
        return np.asarray(vectors[text])

    meaning = await MeaningGrouper(embed).group(["a", "a2", "b"])
    assert meaning.method == "embedding"
    assert meaning.labels[0] == meaning.labels[1] != meaning.labels[2]
