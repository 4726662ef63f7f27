"""The confidence cascade with the real SmolLM2-135M edge (xllamacpp on loopback): a handful of
real GSM8K questions through the router with the ``openai`` SDK, non-stream and stream, with
k parallel seeded calls and with llama.cpp's ``n``. The cloud is a fake on loopback that says
"Hello from cloud.", so every answer shows which side produced it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import openai
import pytest
from integration.upstream_server import FakeUpstream, ServerThread
from llm.conftest import SERVED_NAME

from app.main import bundled_router_path, create_app
from app.settings import Settings
from router_models.answers import extract_number

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

pytestmark = pytest.mark.llm

SYSTEM = "Solve the problem briefly. End with 'The answer is N.'"
# GSM8K test questions (openai/grade-school-math, MIT) and their answers.
GSM8K = [
    ("Janet has 3 apples and buys 5 more. How many apples does she have?", "8"),
    (
        "A robe takes 2 bolts of blue fiber and half that much white fiber. "
        "How many bolts in total does it take?",
        "3",
    ),
    ("Tom reads 10 pages a day. How many pages does he read in 7 days?", "70"),
    ("A box holds 12 eggs. How many eggs are in 4 boxes?", "48"),
]


@pytest.fixture(scope="module")
def cloud() -> Iterator[FakeUpstream]:
    fake = FakeUpstream("cloud").start()
    yield fake
    fake.stop()


def _service(smollm2_url: str, cloud: FakeUpstream, encoder: Any, **overrides: Any) -> ServerThread:
    router = bundled_router_path()
    if router is None:
        pytest.skip("no bundled router (router_models/pretrained/default.onnx)")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        router_model=router,
        edge_base_url=smollm2_url,
        edge_model=SERVED_NAME,
        cloud_base_url=cloud.base_url,
        cloud_model="cloud-model",
        onnx_providers="cpu",
        onnx_threads=1,
        upstream_backoff_s=0.0,
        upstream_read_timeout_s=120.0,
        **overrides,
    )
    return ServerThread(create_app(settings, encoder=encoder), lifespan="on").start()


def _ask(client: openai.OpenAI, question: str, **extra: Any) -> Any:
    messages: Any = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    return client.chat.completions.with_raw_response.create(
        model="router-cascade-0.6", messages=messages, max_tokens=96, **extra
    )


def test_real_gsm8k_prompts_through_the_cascade(
    smollm2_url: str, cloud: FakeUpstream, encoder: SentenceTransformer
) -> None:
    server = _service(smollm2_url, cloud, encoder, cascade_k=3)
    try:
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="-", max_retries=0) as client:
            replies = [_ask(client, question) for question, _ in GSM8K]
            with client.chat.completions.with_streaming_response.create(
                model="router-cascade-0.6",
                messages=[{"role": "user", "content": GSM8K[0][0]}],
                max_tokens=64,
                stream=True,
            ) as streamed:
                stream_headers = streamed.headers
                stream_text = "".join(
                    c.choices[0].delta.content or "" for c in streamed.parse() if c.choices
                )
    finally:
        server.stop()

    for raw in replies:
        headers, answer = raw.headers, raw.parse()
        text = answer.choices[0].message.content or ""
        assert (headers["x-dars-mode"], headers["x-dars-k"]) == ("cascade", "3")
        assert 0.0 <= float(headers["x-dars-entropy"]) <= 1.0
        if headers["x-dars-decision"] == "keep":
            assert headers["x-dars-route"] == "edge" and text and text != "Hello from cloud."
            assert answer.usage is not None and answer.usage.completion_tokens > 0
            if headers["x-dars-meaning"] == "number":  # the kept answer is the majority's
                assert extract_number(text) is not None
        else:
            assert (headers["x-dars-route"], text) == ("cloud", "Hello from cloud.")
    escalated = sum(raw.headers["x-dars-decision"] == "escalate" for raw in replies)
    assert len(cloud.requests) == escalated + (stream_headers["x-dars-decision"] == "escalate")
    assert stream_text
    assert (stream_text == "Hello from cloud.") == (stream_headers["x-dars-decision"] == "escalate")


def test_llama_cpp_n_gives_k_samples_in_one_call(
    smollm2_url: str, cloud: FakeUpstream, encoder: SentenceTransformer
) -> None:
    # The fixture's server has 2 parallel slots: n = k = 2 is accepted.
    server = _service(smollm2_url, cloud, encoder, cascade_k=2, cascade_edge_n=True)
    try:
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="-", max_retries=0) as client:
            raw = _ask(client, GSM8K[2][0])
    finally:
        server.stop()
    assert (raw.headers["x-dars-k"], raw.status_code) == ("2", 200)
    assert raw.headers["x-dars-decision"] in ("keep", "escalate")
