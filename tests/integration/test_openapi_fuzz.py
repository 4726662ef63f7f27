"""Schemathesis against the running service: the OpenAPI document must match what it answers.

The real app runs under uvicorn on loopback, with the real encoder, a real ONNX router, an admin
token, and two fake OpenAI upstreams on loopback. Schemathesis generates requests for every
operation from ``/openapi.json`` (its examples first: a valid chat request with
``model: "router"``, so the chat path is reached) and checks that the service never answers 5xx
for a request it could serve, and that every status, content type, header and body it returns
is documented. Bounded: the examples, then ``MAX_EXAMPLES`` valid and ``MAX_EXAMPLES`` invalid
cases per operation, no shrinking, no example database. (Schemathesis' pytest loader,
``schemathesis.pytest.from_fixture``, does not run under pytest 9, so the cases are drawn here.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import schemathesis
from helpers.onnx_routers import make_linear_router
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.strategies import SearchStrategy
from integration.upstream_server import FakeUpstream, router_settings, running_router
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

ADMIN_TOKEN = "admin-token-for-schemathesis"
MAX_EXAMPLES = 15
OPERATIONS_WITH_BODY = frozenset(
    {
        "POST /v1/chat/completions",
        "POST /v1/route",
        "PUT /admin/threshold",
        "POST /admin/threshold/calibrate",
        "POST /admin/router/reload",
        "POST /v1/feedback",
    }
)
HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def service_url(
    tmp_path_factory: pytest.TempPathFactory,
    encoder: SentenceTransformer,
    upstreams: tuple[FakeUpstream, FakeUpstream],
) -> Iterator[str]:
    router = make_linear_router(
        tmp_path_factory.mktemp("router") / "router.onnx", bias=0.0, default_threshold=0.7
    )
    live_db = tmp_path_factory.mktemp("live") / "live.db"
    settings_ = router_settings(
        router,
        *upstreams,
        admin_token=ADMIN_TOKEN,
        max_body_bytes=64 * 1024,
        live_store=f"sqlite:///{live_db}",
    )
    with running_router(settings_, encoder) as server:
        yield server.url


def _run(strategy: SearchStrategy[Any], examples: int, outcomes: list[str]) -> None:
    """Call and validate ``examples`` cases drawn from ``strategy``; record each outcome."""

    @given(case=strategy)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        # A failing check raises schemathesis' FailureGroup, with a curl line to reproduce it.
        response = case.call_and_validate(headers=HEADERS, checks=CHECKS, timeout=30)
        outcomes.append(f"{response.status_code} {case.method} {case.formatted_path}")

    run()


def test_the_service_matches_its_openapi_document(service_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{service_url}/openapi.json")
    outcomes: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for example in operation.get_strategies_from_examples():
            _run(example, 1, outcomes)
        _run(operation.as_strategy(), MAX_EXAMPLES, outcomes)
        if (
            f"{operation.method.upper()} {operation.path}" in OPERATIONS_WITH_BODY
        ):  # nothing to get wrong in a bare GET
            negative = operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
            _run(negative, MAX_EXAMPLES, outcomes)

    print(f"schemathesis: {len(outcomes)} cases, no failure")
    # The examples led the fuzzer into the chat path, not only to 404s for unknown models.
    assert "200 POST /v1/chat/completions" in outcomes
    assert len(outcomes) >= 10 * MAX_EXAMPLES


def test_the_documented_chat_examples_are_routed_and_answered(service_url: str) -> None:
    # What the fuzzer starts from: the request body examples of the chat operation.
    document = httpx.get(f"{service_url}/openapi.json").json()
    body = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    examples = body["content"]["application/json"]["examples"]

    answers = [
        httpx.post(f"{service_url}/v1/chat/completions", json=example["value"], timeout=30)
        for example in examples.values()
    ]

    assert len(answers) >= 2
    assert [answer.status_code for answer in answers] == [200] * len(answers)
    assert all(answer.headers["x-dars-reason"] == "threshold" for answer in answers)
