"""``dars-router serve`` with no upstream configured: the README's first request, for real.

A fresh checkout's situation: no ``DARS_*`` variable, no ``.env``, no key, no network. The real
``dars-router`` command starts SmolLM2-135M (edge) and Qwen2.5-Coder-0.5B (cloud stand-in) as
child processes on loopback, prints what it started, routes the OpenAI SDK's requests to them,
and stops them when it exits. A few short answers: about half a minute on two cores.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest
from llm.servers import answers, dars_cache, free_port, stop, wait_until_ready

from app.local_models import LOCAL_MODELS

pytestmark = pytest.mark.llm

EDGE, CLOUD = (model.name for model in LOCAL_MODELS)
_STARTED = re.compile(r"^\s+(edge|cloud)\s+(\S+)\s+(http://127\.0\.0\.1:(\d+)/v1)\s+pid (\d+)$")


@dataclass
class Served:
    """The running ``dars-router serve`` and the children it reported."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    children: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # role: name, url, pid

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def _command() -> list[str]:
    script = Path(sys.executable).with_name("dars-router")  # the installed entry point
    return [str(script), "serve"] if script.exists() else [sys.executable, "-m", "app.cli", "serve"]


@pytest.fixture(scope="module")
def served(
    xllamacpp_installed: None,
    smollm2_file: Path,
    qwen_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("serve")  # the working directory: no .env
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DARS_")}
    env.update(
        DARS_CACHE=str(dars_cache()),
        DARS_PORT=str(port),
        DARS_ONNX_PROVIDERS="cpu",
        DARS_ONNX_THREADS="1",
        DARS_TORCH_THREADS="1",
        DARS_EMBEDDING_DEVICE="cpu",
        HF_HUB_OFFLINE="1",
    )
    log = work / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            _command(), cwd=work, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    served = Served(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_until_ready(process, f"{served.url}/readyz", log)
        for line in served.output().splitlines():
            if match := _STARTED.match(line):
                role, name, url, _, pid = match.groups()
                served.children[role] = (name, url, int(pid))
        yield served
    finally:
        stop(process)


@pytest.fixture
def client(served: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0) as sdk:
        yield sdk


def test_serve_prints_the_local_models_it_started(served: Served) -> None:
    output = served.output()
    assert "no upstream configured" in output
    assert {role: child[0] for role, child in served.children.items()} == {
        "edge": EDGE,
        "cloud": CLOUD,
    }
    for model in LOCAL_MODELS:
        assert f"model {dars_cache() / 'models' / model.file_name}" in output
    for _, url, _ in served.children.values():
        assert answers(f"{url}/models")  # the printed URL is where it serves


def test_readme_request_is_answered_for_real_and_routed(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="router", messages=[{"role": "user", "content": "2+2?"}], max_tokens=16
    )
    reply = raw.parse()

    route = raw.headers["x-dars-route"]
    assert route in ("edge", "cloud")
    assert raw.headers["x-dars-reason"] == "threshold"
    assert 0.0 <= float(raw.headers["x-dars-score"]) <= 1.0
    assert reply.model == {"edge": EDGE, "cloud": CLOUD}[route]
    assert (reply.choices[0].message.content or "").strip()
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_stream_is_routed_to_the_cloud_model_with_usage(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="router-0",  # threshold 0: the cloud stand-in
        messages=[{"role": "user", "content": "Name a primary colour."}],
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-dars-route"] == "cloud"
    chunks = list(raw.parse())

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert {c.model for c in chunks} == {CLOUD}
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens > 0


def test_the_edge_model_answers_too(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=EDGE, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
    )

    assert (raw.headers["x-dars-route"], raw.headers["x-dars-reason"]) == ("edge", "forced")
    assert raw.parse().model == EDGE


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stopping_serve_stops_the_local_models(served: Served) -> None:
    # Last in this module: the other tests have had their answers.
    pids = [pid for _, _, pid in served.children.values()]
    assert len(pids) == 2 and all(_alive(pid) for pid in pids)

    served.process.send_signal(signal.SIGINT)  # Ctrl-C
    assert served.process.wait(timeout=60) == 0

    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)
