"""The confidence cascade with real models on loopback: SmolLM2-135M as the edge and
Qwen2.5-Coder-0.5B as the cloud (both ``python -m app.local_models_server``), real GSM8K test
questions through the router with the ``openai`` SDK, non-stream and stream, k=2 (parallel
seeded calls, and once one call with llama.cpp's ``n``).

The two llama.cpp servers report their alias as the answer's ``model``, so every answer shows
which side produced it: ``x-dars-decision: keep`` must come with SmolLM2's answer and route
``edge``, ``escalate`` with Qwen's and route ``cloud``. ``router-cascade-1`` never escalates;
``router-cascade-0`` escalates on any disagreement, and at temperature 1.5 two samples of
SmolLM2 disagree. The servers run with one decoding thread each: on a shared 2-core machine a
second llama.cpp thread waits on its busy sibling and decoding drops from ~30 to ~1-5 tokens/s.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai
import pytest
from integration.upstream_server import ServerThread
from llm.servers import SERVED_NAME, start_model_server, stop

from app.main import bundled_router_path, create_app
from app.settings import Settings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

pytestmark = pytest.mark.llm

CLOUD_NAME = "qwen2.5-coder-0.5b-instruct"
K = 2
SYSTEM = "Solve the problem briefly. End with 'The answer is N.'"
# GSM8K test questions (openai/grade-school-math, MIT; ../shared/data/prompts-gsm8k.jsonl.gz).
JANET = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
    "muffins for her friends every day with four. She sells the remainder at the farmers' "
    "market daily for $2 per fresh duck egg. How much in dollars does she make every day at "
    "the farmers' market?"
)
ROBE = "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it take?"  # noqa: E501
MAX_TOKENS = 48
HOT = 1.5  # sampling temperature at which SmolLM2's two samples disagree


@dataclass
class Service:
    client: openai.OpenAI


@dataclass
class Models:
    edge_url: str
    cloud_url: str
    router: Path


@pytest.fixture(scope="module")
def models(
    xllamacpp_installed: None,
    smollm2_file: Path,
    qwen_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Models]:
    """SmolLM2 (2 parallel slots: k=2) and Qwen on free loopback ports, one thread each."""
    router = bundled_router_path()
    if router is None:
        pytest.skip("no bundled router (router_models/pretrained/default.onnx)")
    logs = tmp_path_factory.mktemp("cascade-llms")
    one_thread = ("--threads", "1")  # the last --threads wins; see the module docstring
    edge = start_model_server(smollm2_file, SERVED_NAME, logs / "edge.log", *one_thread)
    try:
        cloud = start_model_server(
            qwen_file, CLOUD_NAME, logs / "cloud.log", *one_thread, "--parallel", "1"
        )
        try:
            yield Models(edge.url, cloud.url, router)
        finally:
            stop(cloud.process)
    finally:
        stop(edge.process)


@contextmanager
def _router(models: Models, encoder: SentenceTransformer, **overrides: Any) -> Iterator[Service]:
    """The router in cascade mode (k=2) between the two model servers, and an SDK client."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        router_model=models.router,
        edge_base_url=models.edge_url,
        edge_model=SERVED_NAME,
        cloud_base_url=models.cloud_url,
        cloud_model=CLOUD_NAME,
        cascade_k=K,
        onnx_providers="cpu",
        onnx_threads=1,
        upstream_backoff_s=0.0,
        upstream_read_timeout_s=300.0,
        **overrides,
    )
    server = ServerThread(create_app(settings, encoder=encoder), lifespan="on").start()
    try:
        with openai.OpenAI(
            base_url=f"{server.url}/v1", api_key="-", max_retries=0, timeout=300.0
        ) as client:
            yield Service(client)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def service(models: Models, encoder: SentenceTransformer) -> Iterator[Service]:
    with _router(models, encoder) as service:
        yield service


def _messages(question: str) -> Any:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def _check_headers(headers: Any, decision: str) -> float:
    """The cascade headers of one answer with ``decision``; returns the entropy."""
    assert (headers["x-dars-mode"], headers["x-dars-k"]) == ("cascade", str(K))
    assert headers["x-dars-decision"] == decision
    assert headers["x-dars-reason"] == "cascade"
    assert headers["x-dars-route"] == ("edge" if decision == "keep" else "cloud")
    assert headers["x-dars-meaning"] in ("number", "choice", "embedding")
    assert 1 <= int(headers["x-dars-clusters"]) <= K
    entropy = float(headers["x-dars-entropy"])
    assert 0.0 <= entropy <= 1.0
    # One meaning class: entropy 0; two classes of one sample each (k=2): entropy 1.
    assert entropy == (0.0 if headers["x-dars-clusters"] == "1" else 1.0)
    assert int(headers["x-dars-edge-tokens"]) > 0  # the k samples' tokens
    return entropy


def test_kept_answer_is_the_edge_models_and_counts_k_samples(service: Service) -> None:
    raw = service.client.chat.completions.with_raw_response.create(
        model="router-cascade-1", messages=_messages(ROBE), max_tokens=MAX_TOKENS
    )
    answer = raw.parse()
    _check_headers(raw.headers, "keep")  # threshold 1 never escalates
    assert answer.model == SERVED_NAME
    assert answer.choices[0].message.content
    assert answer.usage is not None
    # usage is the sum over the k samples: at least k prompts' worth of tokens, as the header.
    assert answer.usage.total_tokens == int(raw.headers["x-dars-edge-tokens"])
    assert answer.usage.prompt_tokens >= K * 10


def test_disagreeing_samples_escalate_to_the_cloud_model(service: Service) -> None:
    raw = service.client.chat.completions.with_raw_response.create(
        model="router-cascade-0", messages=_messages(JANET), max_tokens=MAX_TOKENS, temperature=HOT
    )
    answer = raw.parse()
    assert _check_headers(raw.headers, "escalate") == 1.0
    assert answer.model == CLOUD_NAME  # Qwen answered, not a kept edge sample
    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.completion_tokens > 0


@pytest.mark.parametrize(
    ("model", "temperature", "decision", "answered_by"),
    [
        ("router-cascade-1", 0.7, "keep", SERVED_NAME),
        ("router-cascade-0", HOT, "escalate", CLOUD_NAME),
    ],
    ids=["keep", "escalate"],
)
def test_stream_after_the_decision(
    service: Service, model: str, temperature: float, decision: str, answered_by: str
) -> None:
    with service.client.chat.completions.with_streaming_response.create(
        model=model,
        messages=_messages(JANET),
        max_tokens=MAX_TOKENS,
        temperature=temperature,
        stream=True,
        stream_options={"include_usage": True},
    ) as streamed:
        _check_headers(streamed.headers, decision)  # decided before the first byte
        chunks = list(streamed.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert {c.model for c in chunks} == {answered_by}
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0
    if decision == "keep":
        assert usage.total_tokens == int(streamed.headers["x-dars-edge-tokens"])


def test_llama_cpp_n_gives_the_k_samples_in_one_call(
    models: Models, encoder: SentenceTransformer
) -> None:
    # DARS_CASCADE_EDGE_N: one edge call with n = k = 2, within the server's 2 parallel slots.
    with _router(models, encoder, cascade_edge_n=True) as service:
        raw = service.client.chat.completions.with_raw_response.create(
            model="router-cascade-1", messages=_messages(ROBE), max_tokens=16
        )
    _check_headers(raw.headers, "keep")
    assert raw.parse().model == SERVED_NAME
