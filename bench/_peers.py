"""The peer routers/proxies the benchmark runs beside DARS Router, each in a venv of its own.

Peers are installed with pip into ``.cache/bench-venvs/<name>`` (gitignored), never into the
project's venv: their pins (litellm, openai, torch) are not ours. Each is started bound to
127.0.0.1 in front of the same fake upstream, with dummy keys, so no request leaves loopback.
A peer that fails to install or start is reported with the reason; the run goes on.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench._harness import Server, free_port, serving

__all__ = ["PEERS", "Endpoint", "Peer", "PeerUnavailable", "install", "peer_server", "version"]

VENVS = Path(".cache") / "bench-venvs"
INSTALL_TIMEOUT_S = 900
# LiteLLM fetches its model price map from the internet at import unless told otherwise.
_OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
    "OPENAI_API_KEY": "sk-dummy-loopback-only",  # RouteLLM builds an OpenAI client at import
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "NO_PROXY": "127.0.0.1,localhost",
}


class PeerUnavailable(Exception):
    """A peer could not be installed or started; the message says why."""


@dataclass(frozen=True)
class Peer:
    """A peer: its venv, what pip installs there, its distribution name and what it is."""

    name: str
    requirements: tuple[str, ...]
    distribution: str
    label: str

    @property
    def venv(self) -> Path:
        return VENVS / self.name

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


LITELLM = Peer("litellm", ("litellm[proxy]",), "litellm", "LiteLLM proxy (no routing)")
# torch first, from the CPU wheel the project pins: routellm's own pins would pull CUDA builds.
ROUTELLM = Peer(
    "routellm", ("torch==2.13.0", "routellm[serve]"), "routellm", "RouteLLM server, random router"
)
PEERS = (LITELLM, ROUTELLM)


def install(peer: Peer, python: str = sys.executable) -> None:
    """Create the peer's venv and pip-install it there (skipped when already importable)."""
    if peer.python.is_file() and _importable(peer):
        return
    try:
        subprocess.run([python, "-m", "venv", str(peer.venv)], check=True, capture_output=True)
        for requirement in peer.requirements:  # in order: torch before what needs it
            subprocess.run(
                [str(peer.python), "-m", "pip", "install", "--quiet", requirement],
                check=True,
                capture_output=True,
                timeout=INSTALL_TIMEOUT_S,
            )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        tail = detail.decode(errors="replace").strip().splitlines()[-3:]
        raise PeerUnavailable(f"install failed: {exc}; {' '.join(tail)}") from exc


def version(peer: Peer) -> str:
    """The installed version of the peer's distribution; raises ``PeerUnavailable``."""
    if not peer.python.is_file():
        raise PeerUnavailable(f"not installed ({peer.venv} missing; run with --install)")
    result = subprocess.run(
        [
            str(peer.python),
            "-c",
            f"import importlib.metadata as m; print(m.version({peer.distribution!r}))",
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise PeerUnavailable(f"not importable in {peer.venv}: {result.stderr.strip()[-300:]}")
    return result.stdout.strip()


def _importable(peer: Peer) -> bool:
    try:
        version(peer)
    except PeerUnavailable:
        return False
    return True


@dataclass(frozen=True)
class Endpoint:
    """A started peer: its server, the ``model`` to ask for and the headers to send."""

    server: Server
    model: str
    headers: dict[str, str]


@contextmanager
def peer_server(peer: Peer, upstream_url: str, workdir: Path) -> Iterator[Endpoint]:
    """Start ``peer`` in front of ``upstream_url``.

    Raises ``PeerUnavailable`` with the log's tail when it does not start.
    """
    version(peer)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DARS_", "OPENAI_"))}
    env.update(_OFFLINE_ENV)
    log = workdir / f"{peer.name}.log"
    # LiteLLM refuses to start without a master key; a fresh one per run, loopback only.
    key = f"sk-bench-{secrets.token_hex(16)}"
    env["LITELLM_MASTER_KEY"] = key
    if peer is LITELLM:
        command, ready, model = _litellm(peer, upstream_url, port, workdir)
    else:
        command, ready, model = _routellm(peer, upstream_url, port, workdir)
    try:
        with serving(command, env, ready, log=log) as process:
            server = Server(f"http://127.0.0.1:{port}", process)
            yield Endpoint(server, model, {"Authorization": f"Bearer {key}"})
    except RuntimeError as exc:
        raise PeerUnavailable(f"did not start: {exc}") from exc


def _litellm(peer: Peer, upstream: str, port: int, workdir: Path) -> tuple[list[str], str, str]:
    config = workdir / "litellm.yaml"
    config.write_text(
        textwrap.dedent(f"""\
            model_list:
              - model_name: router
                litellm_params:
                  model: openai/edge
                  api_base: {upstream}
                  api_key: sk-dummy-loopback-only
            litellm_settings:
              telemetry: false
              drop_params: true
            """)
    )
    command = [
        str(peer.venv / "bin" / "litellm"),
        "--config", str(config),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--num_workers", "1",
    ]  # fmt: skip
    return command, f"http://127.0.0.1:{port}/health/liveliness", "router"


def _routellm(peer: Peer, upstream: str, port: int, workdir: Path) -> tuple[list[str], str, str]:
    config = workdir / "routellm.yaml"
    config.write_text("random: {}\n")  # the random router needs no checkpoint
    # routellm.openai_server parses sys.argv at import and binds 0.0.0.0 in its __main__;
    # import it with our arguments and run its app on loopback instead.
    arguments = [
        "routellm.openai_server",
        "--routers", "random",
        "--config", str(config),
        "--base-url", upstream,
        "--api-key", "sk-dummy-loopback-only",
        "--strong-model", "openai/cloud",
        "--weak-model", "openai/edge",
    ]  # fmt: skip
    script = (
        "import sys, uvicorn; "
        f"sys.argv = {arguments!r}; "
        "import routellm.openai_server as server; "
        f"uvicorn.run(server.app, host='127.0.0.1', port={port}, log_level='warning')"
    )
    # GET on the POST-only route answers 405 once the app (and its router) is up.
    return (
        [str(peer.python), "-c", script],
        f"http://127.0.0.1:{port}/v1/chat/completions",
        "router-random-0.5",
    )
