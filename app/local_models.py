"""Real local models for ``dars-router serve`` when the user configured no upstream.

A fresh clone has no key and maybe no network, and no default may send a prompt to a third
party, so with neither ``DARS_EDGE_BASE_URL`` nor ``DARS_CLOUD_BASE_URL`` set (environment or
``.env``) ``serve`` starts two small chat models on loopback as child processes (one
``python -m app.local_models_server`` each) and points edge and cloud at them:

- edge: SmolLM2-135M-Instruct (Q4_1), cloud stand-in: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M);
  files assembled and sha256-checked by ``deploy/local-llms/install_models.sh`` into
  ``$DARS_CACHE/models`` (``make llm-setup``; ``make serve`` runs it first);
- model names and prices the user did set are kept; the rest come from the table below;
- the children stop when ``serve`` exits (and by themselves if it is killed).

Both URLs set: nothing local starts. One set: refused, since half local, half remote is more
likely a typo than a wish. ``DARS_LOCAL_MODELS=off``: refused instead of starting anything.
``python -m app.local_models`` exits 0 when ``serve`` would start them (``make serve`` asks it
before running the setup), 1 when upstreams are configured, 2 on a configuration error.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.settings import Settings

__all__ = [
    "LOCAL_MODELS",
    "LocalModel",
    "LocalModelsError",
    "RunningModel",
    "cache_dir",
    "describe",
    "model_files",
    "server_command",
    "settings_for",
    "start_local_models",
    "wants_local_models",
]

SETUP_HINT = "run `make llm-setup` (deploy/local-llms/setup.sh)"
_UPSTREAM_SETTINGS = "DARS_EDGE_BASE_URL and DARS_CLOUD_BASE_URL"

Role = Literal["edge", "cloud"]


class LocalModelsError(Exception):
    """The local models cannot be used or started; the message says what to do."""


@dataclass(frozen=True)
class LocalModel:
    """One model ``serve`` can start: its role, default name, GGUF file and stand-in prices.

    Names, files and prices are those of ``deploy/local-llms/common.sh`` (a test keeps them
    equal); prices are USD per million input / output tokens, a small-model and a
    gpt-4o-mini-like one, so that routing still has a price gap to save.
    """

    role: Role
    name: str
    file_name: str
    price_in: float
    price_out: float


LOCAL_MODELS: tuple[LocalModel, LocalModel] = (
    LocalModel("edge", "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf", 0.02, 0.04),
    LocalModel(
        "cloud",
        "qwen2.5-coder-0.5b-instruct",
        "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        0.15,
        0.60,
    ),
)


@dataclass(frozen=True)
class RunningModel:
    """A started model server: what it serves, where, and its process."""

    role: Role
    name: str
    file: Path
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def wants_local_models(settings: Settings) -> bool:
    """Whether ``serve`` must start the local models: no upstream URL set and not turned off.

    Raises ``LocalModelsError`` when only one URL is set, or none with ``DARS_LOCAL_MODELS=off``.
    """
    if settings.upstreams_file is not None:  # DARS_UPSTREAMS_FILE configures every upstream
        return False
    edge, cloud = settings.edge_base_url is not None, settings.cloud_base_url is not None
    if edge and cloud:
        return False
    if edge or cloud:
        present, absent = ("EDGE", "CLOUD") if edge else ("CLOUD", "EDGE")
        raise LocalModelsError(
            f"DARS_{present}_BASE_URL is set but DARS_{absent}_BASE_URL is not: set both to use "
            "your own upstreams, or neither to serve with the local models"
        )
    if settings.local_models == "off":
        raise LocalModelsError(
            f"no upstream configured and DARS_LOCAL_MODELS=off: set {_UPSTREAM_SETTINGS} "
            "(environment or .env), or unset DARS_LOCAL_MODELS to serve with the local models"
        )
    return True


def cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$DARS_CACHE``, else ``~/.cache/dars-router``: where the setup scripts put models."""
    configured = environ.get("DARS_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "dars-router"


def model_files(model_dir: Path) -> dict[Role, Path]:
    """Each local model's GGUF file by role, after checking that setup has run.

    The setup script checks the sha256 when it assembles a file; here only presence is
    checked, so that start-up does not hash 600 MB. A missing xllamacpp is the server's to
    report (it runs in ``python``, maybe not this interpreter): its log tail is in the error.
    """
    files = {model.role: model_dir / model.file_name for model in LOCAL_MODELS}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise LocalModelsError(
            f"local model file not found: {', '.join(missing)}; {SETUP_HINT} to assemble and "
            f"check the models, or set {_UPSTREAM_SETTINGS} to use your own upstreams"
        )
    return files


def server_command(
    file: Path, port: int, alias: str, *, threads: int, python: str = sys.executable
) -> list[str]:
    """The command line of one model server (``app.local_models_server``)."""
    return [
        python, "-m", "app.local_models_server", "--model", str(file), "--port", str(port),
        "--alias", alias, "--threads", str(threads), "--exit-with-parent",
    ]  # fmt: skip


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return ""


def _wait_ready(model: RunningModel, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not _healthy(model.port):
        if model.process.poll() is not None or time.monotonic() > deadline:
            state = (
                f"exited with {model.process.returncode}"
                if model.process.poll() is not None
                else f"not ready after {timeout_s:.0f} s"
            )
            raise LocalModelsError(
                f"local {model.role} model {model.name} {state}; log {model.log}:\n"
                f"{_tail(model.log)}"
            )
        time.sleep(0.2)


def _stop(running: Sequence[RunningModel], timeout_s: float = 15.0) -> None:
    """SIGTERM to all (each drains its slots), then SIGKILL whatever is left after the wait."""
    for model in running:
        if model.process.poll() is None:
            model.process.terminate()
    deadline = time.monotonic() + timeout_s
    for model in running:
        try:
            model.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            model.process.kill()
            model.process.wait(timeout=timeout_s)


@contextmanager
def start_local_models(
    settings: Settings,
    model_dir: Path,
    log_dir: Path,
    *,
    ready_timeout_s: float = 180.0,
    python: str = sys.executable,
) -> Iterator[list[RunningModel]]:
    """Start both local models on free loopback ports; stop them when the block exits.

    Served names are the settings' model names when the user set them, else the table's.
    """
    names = [_served_name(settings, model) for model in LOCAL_MODELS]
    if len(set(names)) != len(names):
        raise LocalModelsError(f"DARS_EDGE_MODEL and DARS_CLOUD_MODEL must differ, got {names}")
    files = model_files(model_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 2) // 2)  # two servers share the cores
    running: list[RunningModel] = []
    try:
        for model, name in zip(LOCAL_MODELS, names, strict=True):
            port = _free_port()
            log = log_dir / f"serve-{model.role}-{port}.log"
            with log.open("wb") as sink:
                process = subprocess.Popen(
                    server_command(files[model.role], port, name, threads=threads, python=python),
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches serve, which then stops them
                )
            running.append(RunningModel(model.role, name, files[model.role], port, log, process))
        for started in running:
            _wait_ready(started, ready_timeout_s)
        yield running
    finally:
        _stop(running)


def _served_name(settings: Settings, model: LocalModel) -> str:
    field = f"{model.role}_model"
    return str(getattr(settings, field)) if field in settings.model_fields_set else model.name


def settings_for(settings: Settings, running: Sequence[RunningModel]) -> Settings:
    """``settings`` pointed at the running local models; what the user set is kept."""
    update: dict[str, object] = {}
    for started in running:
        spec = next(model for model in LOCAL_MODELS if model.role == started.role)
        update[f"{started.role}_base_url"] = started.base_url
        update[f"{started.role}_model"] = started.name
        for field, value in (
            (f"{started.role}_price_input_per_mtok", spec.price_in),
            (f"{started.role}_price_output_per_mtok", spec.price_out),
        ):
            if field not in settings.model_fields_set:
                update[field] = value
    return settings.model_copy(update=update)


def describe(running: Sequence[RunningModel]) -> str:
    """What ``serve`` started, for the terminal: role, name, URL, model file and log."""
    lines = [
        f"dars-router: no upstream configured ({_UPSTREAM_SETTINGS} unset): "
        "started the local models:"
    ]
    for started in running:
        lines.append(
            f"  {started.role:<5}  {started.name:<28} {started.base_url}  pid {started.process.pid}"
        )
        lines.append(f"         model {started.file}")
        lines.append(f"         log   {started.log}")
    lines.append(
        f"Set {_UPSTREAM_SETTINGS} to use your own upstreams; they stop when the router stops."
    )
    return "\n".join(lines)


def main() -> int:
    """``python -m app.local_models``: 0 = serve would start them, 1 = upstreams set, 2 = error."""
    try:
        return 0 if wants_local_models(Settings()) else 1
    except LocalModelsError as exc:
        print(f"dars-router: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # invalid DARS_* settings: serve reports them itself
        print(f"dars-router: invalid settings: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
