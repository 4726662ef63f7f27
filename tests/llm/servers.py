"""Helpers of the real-model tier: model files from the setup, servers on free loopback ports.

``make llm-setup`` (``deploy/local-llms/setup.sh``) installs xllamacpp and assembles the model
files; these helpers only check and start. Missing pieces fail the tier in CI (``CI=true``)
and skip it elsewhere, with the command to run either way. Model file names and pinned sha256
are read from ``deploy/local-llms/common.sh``, their one home. Servers are started the way the
router starts them: ``python -m app.local_models_server``.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMON_SH = REPO / "deploy" / "local-llms" / "common.sh"
SETUP = "make llm-setup"
SERVED_NAME = "smollm2-135m-instruct"
READY_TIMEOUT_S = 180.0


def missing(what: str) -> None:
    """Fail in CI, skip elsewhere: the tier cannot run without the setup."""
    message = f"{what}: run `{SETUP}` first (installs xllamacpp, assembles the models)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _shell_value(name: str) -> str:
    match = re.search(rf'^{name}="([^"]+)"', COMMON_SH.read_text(encoding="utf-8"), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{name} not found in {COMMON_SH}")
    return match.group(1)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dars_cache() -> Path:
    return Path(os.environ.get("DARS_CACHE", Path.home() / ".cache" / "dars-router"))


def checked_model(prefix: str) -> Path:
    name = _shell_value(f"{prefix}_FILE").removeprefix("$MODEL_DIR/")
    path = dars_cache() / "models" / name
    if not path.is_file():
        missing(f"model file {path} is missing")
    expected = _shell_value(f"{prefix}_SHA256")
    if _sha256(path) != expected:
        missing(f"{path} does not have the pinned sha256 {expected}")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 (a GET)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_until_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Until ``url`` answers; fails with the log's tail if the process dies or time runs out."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            pytest.fail(f"{process.args!r} did not become ready:\n{tail}", pytrace=False)
        time.sleep(0.3)


def stop(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """SIGTERM, then SIGKILL if it does not exit in ``timeout_s``; returns its exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)
    return int(process.returncode)


@dataclass
class ModelServer:
    """One ``app.local_models_server`` process and where it listens."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def start_model_server(model: Path, alias: str, log: Path, *extra: str) -> ModelServer:
    """Start one model server on a free loopback port and wait until it serves."""
    port = free_port()
    # One decode thread: on 2 shared cores a second llama.cpp thread mostly waits on its busy
    # sibling (SmolLM2 measured 1.3-4.7 tokens/s with 2 threads, 27-30 with 1, at load ~9).
    command = [
        sys.executable, "-m", "app.local_models_server", "--model", str(model),
        "--alias", alias, "--port", str(port), "--threads", "1", *extra,
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)
    server = ModelServer(process, port, log)
    try:
        wait_until_ready(process, f"http://127.0.0.1:{port}/health", log)
    except BaseException:
        stop(process)
        raise
    return server
