"""The real-model tier: SmolLM2-135M served by llama-cpp-python's OpenAI server on loopback.

``deploy/local-llms/setup.sh`` installs the server (from the cached wheel) and assembles the
model; these fixtures only check and start. Missing pieces fail the tier in CI (``CI=true``)
and skip it elsewhere, with the command to run either way. Model file name and pinned sha256
are read from ``deploy/local-llms/common.sh``, their one home.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMON_SH = REPO / "deploy" / "local-llms" / "common.sh"
SETUP = "deploy/local-llms/setup.sh"
SERVED_NAME = "smollm2-135m-instruct"
_READY_TIMEOUT_S = 180.0


def _missing(what: str) -> None:
    message = f"{what}: run {SETUP} first (installs the llama-cpp-python server, assembles models)"
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


@pytest.fixture(scope="session")
def smollm2_file() -> Path:
    """The assembled, hash-checked SmolLM2-135M-Instruct GGUF in the dars cache."""
    cache = Path(os.environ.get("DARS_CACHE", Path.home() / ".cache" / "dars-router"))
    name = Path(_shell_value("EDGE_FILE").replace("$MODEL_DIR/", "")).name
    path = cache / "models" / name
    if not path.is_file():
        _missing(f"model file {path} is missing")
    expected = _shell_value("EDGE_SHA256")
    if _sha256(path) != expected:
        _missing(f"{path} does not have the pinned sha256 {expected}")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="session")
def smollm2_url(smollm2_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (``.../v1``) of a llama_cpp.server running SmolLM2 on a free loopback port."""
    if importlib.util.find_spec("llama_cpp") is None:
        _missing("llama-cpp-python is not installed")
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_file),
        "--model_alias", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "2048", "--n_threads", "2",
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while not _ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                pytest.fail(f"llama_cpp.server did not start:\n{tail}", pytrace=False)
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
