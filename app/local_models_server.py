"""Serve one GGUF chat model on loopback with llama.cpp's OpenAI-compatible HTTP server.

xllamacpp (PyPI, prebuilt wheels) embeds llama.cpp's server but ships no command line; this
module is that command line, so the router, the demo scripts and the ``llm`` test tier start a
model the same way::

    python -m app.local_models_server --model FILE.gguf --port 8101 --alias smollm2-135m-instruct

The alias is the name ``/v1/models`` lists and answers carry in ``model`` (without it they
carry the GGUF path). ``n_ctx`` is the whole context: llama.cpp splits it over the
``--parallel`` slots.

Shutdown on SIGTERM/SIGINT (or when the parent process goes away, ``--exit-with-parent``):
wait until no slot is busy, at most ``--drain-s`` seconds, then leave with ``os._exit``.
xllamacpp's ``Server`` destructor is never run: with a request in flight it waits until that
request's client gives up (measured: 60 s, the client's timeout), and the request is not
finished meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "ServerOptions", "build_params", "main", "parse_args"]

EXIT_FAILED = 1
EXIT_USAGE = 2
SETUP_HINT = "run `make llm-setup` (deploy/local-llms/setup.sh)"
_POLL_S = 0.2
_SETTLE_S = 0.5
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


@dataclass(frozen=True, kw_only=True)
class ServerOptions:
    """What one model server needs; ``threads`` and ``parallel`` share the machine's cores."""

    model: Path
    port: int
    alias: str
    host: str = "127.0.0.1"
    n_ctx: int = 4096
    threads: int = 1
    parallel: int = 2
    drain_s: float = 10.0
    exit_with_parent: bool = False


def parse_args(argv: Sequence[str] | None = None) -> ServerOptions:
    """The command line as options; argparse exits 2 on a bad one."""
    parser = argparse.ArgumentParser(
        prog="python -m app.local_models_server",
        description="Serve one GGUF chat model (llama.cpp server, via xllamacpp) on loopback.",
    )
    parser.add_argument("--model", type=Path, required=True, help="GGUF model file")
    parser.add_argument("--port", type=int, required=True, help="TCP port (1-65535)")
    parser.add_argument("--alias", required=True, help="model name in /v1/models and answers")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--ctx", type=int, default=4096, help="context tokens, all slots")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for decoding")
    parser.add_argument("--parallel", type=int, default=2, help="requests decoded at once")
    parser.add_argument("--drain-s", type=float, default=10.0, help="shutdown grace (seconds)")
    parser.add_argument(
        "--exit-with-parent", action="store_true", help="stop when the parent process exits"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"--port must be in 1..65535, got {args.port}")
    for name in ("ctx", "threads", "parallel"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    return ServerOptions(
        model=args.model,
        port=args.port,
        alias=args.alias,
        host=args.host,
        n_ctx=args.ctx,
        threads=args.threads,
        parallel=args.parallel,
        drain_s=args.drain_s,
        exit_with_parent=args.exit_with_parent,
    )


def build_params(options: ServerOptions, xllamacpp: Any) -> Any:
    """xllamacpp ``CommonParams`` for ``options`` (the module is passed in: imported lazily)."""
    params = xllamacpp.CommonParams()
    params.model.path = str(options.model)
    params.model_alias = {options.alias}
    params.n_ctx = options.n_ctx
    params.cpuparams.n_threads = options.threads
    params.cpuparams_batch.n_threads = options.threads
    params.port = options.port
    params.hostnames = [options.host]
    params.n_parallel = options.parallel
    return params


def _busy_slots(options: ServerOptions) -> int | None:
    """Slots decoding a request now (llama.cpp's ``/slots``); ``None`` if it did not answer."""
    url = f"http://{options.host}:{options.port}/slots"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            slots = json.loads(response.read())
    except (OSError, ValueError):
        return None
    return sum(1 for slot in slots if isinstance(slot, dict) and slot.get("is_processing"))


def _drain(options: ServerOptions) -> None:
    """Let in-flight requests finish, for at most ``options.drain_s`` seconds.

    A server too busy to answer ``/slots`` counts as busy: that is when draining matters. A
    slot is released just before its HTTP thread writes the answer, so after the last busy
    slot the HTTP threads get ``_SETTLE_S`` to write (measured: without it, the client of the
    last request sometimes got no answer on a loaded machine).
    """
    deadline = time.monotonic() + options.drain_s
    busy = _busy_slots(options)
    if busy == 0:
        return
    _log(f"draining: {'unknown' if busy is None else busy} busy slot(s)")
    while busy != 0 and time.monotonic() < deadline:
        time.sleep(_POLL_S)
        busy = _busy_slots(options)
    if busy != 0:
        _log(f"drain timed out after {options.drain_s:g} s")
    time.sleep(_SETTLE_S)


def _watch_parent(stop: threading.Event) -> None:
    """Set ``stop`` once this process is re-parented: whoever started it is gone."""
    parent = os.getppid()
    while not stop.wait(1.0):
        if os.getppid() != parent:
            stop.set()


def _log(message: str) -> None:
    print(f"[local_models_server] {message}", file=sys.stderr, flush=True)


def serve(options: ServerOptions) -> int:
    """Serve until SIGTERM/SIGINT (or the parent's exit); returns the exit code on errors."""
    if not options.model.is_file():
        _log(f"model file not found: {options.model}; {SETUP_HINT}")
        return EXIT_USAGE
    try:
        import xllamacpp
    except ImportError:
        _log(f"xllamacpp is not installed in {sys.executable}; {SETUP_HINT}")
        return EXIT_USAGE

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in _STOP_SIGNALS:
        signal.signal(signum, on_signal)
    if options.exit_with_parent:
        threading.Thread(target=_watch_parent, args=(stop,), daemon=True).start()
    # llama.cpp's threads (HTTP, decoding) inherit a mask that blocks the stop signals, so the
    # kernel delivers them to this thread, where Python handles them anyway, and never
    # interrupts a system call of theirs (Python's handlers do not restart them: EINTR).
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        server = xllamacpp.Server(build_params(options, xllamacpp))  # returns once it listens
    except RuntimeError as exc:  # llama.cpp logged why above: not a GGUF file, port taken, ...
        _log(f"llama.cpp could not serve {options.model} on port {options.port}: {exc}")
        return EXIT_FAILED
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    _log(f"serving {options.alias} ({options.model}) on {server.listening_address}")
    while not stop.wait(1.0):
        pass
    _drain(options)
    _log("stopped")
    sys.stdout.flush()
    os._exit(0)  # never run ~Server: see the module docstring


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m app.local_models_server``."""
    return serve(parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
